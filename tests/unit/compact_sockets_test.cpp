#include "agent/model/compact_sockets.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/model/snapshot.hpp"
#include "tests/unit/builders.hpp"

namespace portlens {
namespace {

using unit::connection;
using unit::ep;
using unit::ip;
using unit::kTestNetns;
using unit::listener;
using unit::time_wait;

// Every field compared, owner included (SocketEntry has no operator==).
void expect_same(const SocketEntry& a, const SocketEntry& b) {
  EXPECT_EQ(a.proto, b.proto);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.time_wait_substate, b.time_wait_substate);
  EXPECT_EQ(a.local, b.local);
  EXPECT_EQ(a.remote, b.remote);
  EXPECT_EQ(a.netns, b.netns);
  EXPECT_EQ(a.reuseaddr, b.reuseaddr);
  EXPECT_EQ(a.reuseport, b.reuseport);
  EXPECT_EQ(a.v6only, b.v6only);
  EXPECT_EQ(a.bound_dev_if, b.bound_dev_if);
  EXPECT_EQ(a.uid, b.uid);
  EXPECT_EQ(a.explicit_port, b.explicit_port);
  EXPECT_EQ(a.inode, b.inode);
  EXPECT_EQ(a.sock_id, b.sock_id);
  ASSERT_EQ(a.owner.has_value(), b.owner.has_value());
  if (a.owner) {
    EXPECT_EQ(a.owner->pid, b.owner->pid);
    EXPECT_EQ(a.owner->comm, b.owner->comm);
  }
  EXPECT_EQ(a.time_wait_remaining, b.time_wait_remaining);
  EXPECT_EQ(a.timestamps, b.timestamps);
  EXPECT_EQ(a.bind_bucket, b.bind_bucket);
  EXPECT_EQ(a.v4_rcv_saddr, b.v4_rcv_saddr);
  EXPECT_EQ(a.udp_chain_position, b.udp_chain_position);
  EXPECT_EQ(a.udp_slot_count, b.udp_slot_count);
}

// Every optional field set, to values at the edges of their types.
SocketEntry everything_set() {
  SocketEntry e = connection("[::ffff:10.0.0.1]:65535", "[2001:db8::1]:1", TcpState::kFinWait2);
  e.proto = Proto::kMptcp;
  e.time_wait_substate = TcpState::kFinWait2;
  e.netns = ~std::uint64_t{0};
  e.reuseaddr = true;
  e.reuseport = false;
  e.v6only = true;
  e.bound_dev_if = -7;
  e.uid = 0xffff'fffeU;
  e.explicit_port = true;
  e.inode = 0x1234'5678'9abc'def0ULL;
  e.sock_id = 0xffff'8880'0000'1000ULL;
  e.owner = SocketOwner{99, "a-long-comm-name"};
  e.time_wait_remaining = std::chrono::milliseconds(-1);
  e.timestamps = false;
  TcpBindBucket b;
  b.fastreuse = -1;
  b.fastreuseport = TcpBindBucket::kFastreuseportStrict;
  b.fastuid = 1000;
  b.fast_family = Family::kIpv6;
  b.fast_rcv_saddr = ip("10.0.0.1");
  b.fast_v6_rcv_saddr = ip("2001:db8::2");
  b.fast_ipv6_only = true;
  b.l3mdev = 12;
  e.bind_bucket = b;
  e.v4_rcv_saddr = ip("127.0.0.6");
  e.udp_chain_position = 0;
  e.udp_slot_count = 0xffff'ffffU;
  return e;
}

TEST(CompactSocketsTest, GivesBackEveryFieldAsItWasGiven) {
  std::vector<SocketEntry> given;
  given.push_back(SocketEntry{});  // nothing known
  given.push_back(everything_set());
  given.push_back(listener("0.0.0.0:8080"));
  given.push_back(time_wait("127.0.0.1:9090", "127.0.0.1:40000"));
  SocketEntry udp;
  udp.proto = Proto::kUdp;
  udp.local = ep("[::]:53");
  udp.udp_chain_position = 3;
  given.push_back(udp);
  CompactSockets compact;
  for (const SocketEntry& e : given) {
    compact.push_back(e);
  }
  ASSERT_EQ(compact.size(), given.size());
  for (std::size_t i = 0; i < given.size(); ++i) {
    SCOPED_TRACE("entry " + std::to_string(i));
    expect_same(compact.at(i), given[i]);
  }
  compact.seal();  // the index goes, the entries stay
  for (std::size_t i = 0; i < given.size(); ++i) {
    SCOPED_TRACE("sealed, entry " + std::to_string(i));
    expect_same(compact.at(i), given[i]);
  }
}

// Rows go to chunks of kChunkRows; the sockets of a port share one copy of its bind bucket.
TEST(CompactSocketsTest, SpansChunksAndKeepsASharedBucketOnce) {
  const std::size_t n = 2 * CompactSockets::kChunkRows + 5;
  CompactSockets compact;
  EXPECT_TRUE(compact.empty());
  for (std::size_t i = 0; i < n; ++i) {
    SocketEntry e = everything_set();
    e.owner.reset();
    e.sock_id = i;
    e.local.port = static_cast<std::uint16_t>(i % 4);
    e.bind_bucket->fastuid = static_cast<std::uint32_t>(i % 4);  // four ports, four buckets
    compact.push_back(e);
  }
  compact.seal();
  ASSERT_EQ(compact.size(), n);
  for (const std::size_t i :
       {std::size_t{0}, CompactSockets::kChunkRows - 1, CompactSockets::kChunkRows, n - 1}) {
    const SocketEntry e = compact.at(i);
    EXPECT_EQ(e.sock_id, i);
    EXPECT_EQ(e.local.port, i % 4);
    ASSERT_TRUE(e.bind_bucket.has_value());
    EXPECT_EQ(e.bind_bucket->fastuid, i % 4);
  }
  // Under half of what the same entries take as SocketEntry values in a vector.
  EXPECT_LT(compact.memory_bytes(), n * sizeof(SocketEntry) / 2);
  EXPECT_GE(compact.memory_bytes(), n * 120);
}

TEST(CompactSocketsTest, MakeCompactMovesASnapshotsSockets) {
  Snapshot snapshot;
  snapshot.table.sockets = {listener("0.0.0.0:8080"), everything_set()};
  snapshot.table.netns_config[kTestNetns] = NetnsPortConfig{};
  make_compact(snapshot);
  EXPECT_TRUE(snapshot.is_compact);
  EXPECT_TRUE(snapshot.table.sockets.empty());
  EXPECT_EQ(snapshot.table.sockets.capacity(), 0U);
  EXPECT_EQ(snapshot.table.netns_config.size(), 1U);  // the config stays in the table
  ASSERT_EQ(snapshot.compact.size(), 2U);
  expect_same(snapshot.compact.at(0), listener("0.0.0.0:8080"));
  expect_same(snapshot.compact.at(1), everything_set());
  make_compact(snapshot);  // already compact: nothing changes
  EXPECT_EQ(snapshot.compact.size(), 2U);
}

}  // namespace
}  // namespace portlens
