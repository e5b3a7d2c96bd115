// SocketTracker (compact TIME_WAIT table, one record per socket) against the tracker it replaced
// (tests/unit/reference_tracker.hpp), on random event streams with snapshots: every table,
// table_at() at past moments and single ports, first_seen() and owner_of() of every socket, and
// every counter must agree. Also the TIME_WAIT table at a size the streams do not reach.
#include <algorithm>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/tracker/tracker.hpp"
#include "tests/unit/random_tracker.hpp"
#include "tests/unit/reference_tracker.hpp"

namespace portlens {
namespace {

using reference::ReferenceTracker;

template <typename T>
void put(std::ostringstream& out, const std::optional<T>& v) {
  if (v) {
    out << *v << ',';
  } else {
    out << "-,";
  }
}

std::string endpoint_text(const Endpoint& e) {
  return e.to_string() + (e.addr.is_v4() ? "/4" : "/6");
}

// Every field, so that two tables compare as sorted lists of these.
std::string canonical(const SocketEntry& e) {
  std::ostringstream out;
  out << static_cast<int>(e.proto) << ',';
  put(out, e.state ? std::optional<int>(static_cast<int>(*e.state)) : std::nullopt);
  put(out, e.time_wait_substate ? std::optional<int>(static_cast<int>(*e.time_wait_substate))
                                : std::nullopt);
  out << endpoint_text(e.local) << ',';
  put(out, e.remote ? std::optional<std::string>(endpoint_text(*e.remote)) : std::nullopt);
  out << e.netns << ',';
  put(out, e.reuseaddr);
  put(out, e.reuseport);
  put(out, e.v6only);
  put(out, e.bound_dev_if);
  put(out, e.uid);
  out << e.explicit_port << ',' << e.inode << ',' << e.sock_id << ',';
  put(out, e.owner ? std::optional<std::string>(std::to_string(e.owner->pid) + "/" + e.owner->comm)
                   : std::nullopt);
  put(out, e.time_wait_remaining ? std::optional<std::int64_t>(e.time_wait_remaining->count())
                                 : std::nullopt);
  put(out, e.timestamps);
  out << e.bind_bucket.has_value() << ',';
  put(out, e.v4_rcv_saddr ? std::optional<std::string>(e.v4_rcv_saddr->to_string()) : std::nullopt);
  put(out, e.udp_chain_position);
  put(out, e.udp_slot_count);
  return out.str();
}

std::vector<std::string> canonical(const SocketTable& table) {
  std::vector<std::string> out;
  out.reserve(table.sockets.size());
  for (const SocketEntry& e : table.sockets) {
    out.push_back(canonical(e));
  }
  std::sort(out.begin(), out.end());
  return out;
}

void expect_same_counters(const TrackerCounters& a, const TrackerCounters& b) {
  EXPECT_EQ(a.sockets_dropped, b.sockets_dropped);
  EXPECT_EQ(a.time_wait_dropped, b.time_wait_dropped);
  EXPECT_EQ(a.time_wait_inferred, b.time_wait_inferred);
  EXPECT_EQ(a.time_wait_expired, b.time_wait_expired);
  EXPECT_EQ(a.time_wait_reused, b.time_wait_reused);
  EXPECT_EQ(a.resets_seen, b.resets_seen);
  EXPECT_EQ(a.corrections, b.corrections);
}

class TrackerDifferentialTest : public ::testing::TestWithParam<std::uint32_t> {};

TEST_P(TrackerDifferentialTest, AgreesWithTheTrackerItReplaced) {
  const std::uint32_t seed = GetParam();
  TrackerLimits limits;
  // Small caps: drops. Not of tombstones: which tombstone a full deque evicts depends on the
  // order TIME_WAITs that expire at the same nanosecond are buried in, which neither tracker
  // defines (the old one's priority_queue breaks ties as its heap happens to be laid out).
  if (seed % 3 == 0) {
    limits.max_sockets = 40;
    limits.max_time_wait = 25;
    limits.max_resets = 4;
  }
  RandomTracker random(seed, limits);
  ReferenceTracker ref(limits);
  random.mirror(RandomTracker::Mirror{
      [&ref](const Event& e) { ref.apply(e); }, [&ref](std::uint64_t now) { ref.expire(now); },
      [&ref](std::uint64_t netns, const SocketTable& snap, std::uint64_t ts, bool bootstrap) {
        if (bootstrap) {
          ref.bootstrap(netns, snap, ts);
        } else {
          ref.reconcile(netns, snap, ts);
        }
      }});
  SocketTracker& t = random.tracker();
  std::mt19937 rng(seed);
  for (int round = 0; round < 20; ++round) {
    random.run(200);
    const std::uint64_t now = random.now();
    SCOPED_TRACE("seed " + std::to_string(seed) + " round " + std::to_string(round));
    ASSERT_EQ(t.socket_count(), ref.socket_count());
    ASSERT_EQ(t.time_wait_count(), ref.time_wait_count());
    expect_same_counters(t.counters(), ref.counters());
    ASSERT_EQ(canonical(t.table(std::nullopt, now)), canonical(ref.table(std::nullopt, now)));
    for (const std::uint64_t netns : {RandomTracker::kNetnsA, RandomTracker::kNetnsB}) {
      ASSERT_EQ(canonical(t.table(netns, now)), canonical(ref.table(netns, now)));
      for (int i = 0; i < 4; ++i) {
        const std::uint64_t at = now - (rng() % 12) * RandomTracker::kSec / 2;
        const SocketTable expected = ref.table_at(netns, at, now);
        ASSERT_EQ(canonical(t.table_at(netns, at, now)), canonical(expected));
        const auto port = static_cast<std::uint16_t>(32760 + rng() % 48);
        ASSERT_EQ(canonical(t.table_at(netns, at, now, port)),
                  canonical(ref.table_at(netns, at, now, port)));
        for (SocketEntry e : expected.sockets) {
          EXPECT_EQ(t.first_seen(e), ref.first_seen(e)) << canonical(e);
          EXPECT_EQ(t.owner_of(e).has_value(), ref.owner_of(e).has_value()) << canonical(e);
          if (t.owner_of(e) && ref.owner_of(e)) {
            EXPECT_EQ(t.owner_of(e)->pid, ref.owner_of(e)->pid);
            EXPECT_EQ(t.owner_of(e)->comm, ref.owner_of(e)->comm);
          }
          e.owner.reset();
          SocketTable one;
          one.sockets.push_back(e);
          SocketTable other = one;
          t.attribute(one);
          ref.attribute(other);
          EXPECT_EQ(canonical(one), canonical(other));
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, TrackerDifferentialTest, ::testing::Range(1U, 61U));

// ---------------------------------------------------------------------------------------------
// The TIME_WAIT table at sizes that grow its index several times, with erasures in between
// (backward-shift deletion must keep every other entry findable).

constexpr std::uint64_t kNetns = 4026531840;
constexpr std::uint64_t kSec = 1'000'000'000ULL;

Endpoint ep(const std::string& addr, std::uint16_t port) { return {*IpAddress::parse(addr), port}; }

// 127.0.0.1:(1024 + i % 60000) -> 10.(i / 60000).x.y:80, distinct for each i.
std::pair<Endpoint, Endpoint> tuple_for(std::uint32_t i) {
  const Endpoint local = ep("127.0.0.1", static_cast<std::uint16_t>(1024 + i % 60000));
  const std::string remote = "10." + std::to_string(i / 60000) + "." +
                             std::to_string((i / 250) % 240) + "." + std::to_string(1 + i % 250);
  return {local, ep(remote, 80)};
}

Event fin_wait2_close(std::uint32_t i, std::uint64_t ts) {
  const auto [local, remote] = tuple_for(i);
  Event e;
  e.type = EventType::kState;
  e.sock_id = 0xffff'8880'0000'0000ULL + i * 64ULL;
  e.ts_ns = ts;
  e.netns = kNetns;
  e.old_state = static_cast<int>(TcpState::kFinWait2);
  e.new_state = static_cast<int>(TcpState::kClose);
  e.local = local;
  e.remote = remote;
  e.timestamps = i % 2 == 0;
  return e;
}

SocketEntry time_wait_entry(std::uint32_t i) {
  SocketEntry e;
  e.netns = kNetns;
  e.state = TcpState::kTimeWait;
  std::tie(e.local, e.remote) = tuple_for(i);
  return e;
}

TEST(TimeWaitTableTest, FindsEveryEntryThroughGrowthAndErasures) {
  constexpr std::uint32_t kCount = 50'000;
  SocketTracker t;
  for (std::uint32_t i = 0; i < kCount; ++i) {
    t.apply(fin_wait2_close(i, kSec + i));
  }
  ASSERT_EQ(t.time_wait_count(), kCount);
  // Every third one taken over by a new connection on its 4-tuple.
  for (std::uint32_t i = 0; i < kCount; i += 3) {
    const auto [local, remote] = tuple_for(i);
    Event c;
    c.type = EventType::kConnect;
    c.sock_id = 0xffff'9990'0000'0000ULL + i * 64ULL;
    c.ts_ns = 2 * kSec;
    c.netns = kNetns;
    c.local = local;
    c.requested = remote;
    t.apply(c);
  }
  const std::uint32_t taken = (kCount + 2) / 3;
  EXPECT_EQ(t.counters().time_wait_reused, taken);
  ASSERT_EQ(t.time_wait_count(), kCount - taken);
  for (std::uint32_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(t.first_seen(time_wait_entry(i)).has_value(), true) << i;  // live or tombstoned
    EXPECT_EQ(*t.first_seen(time_wait_entry(i)), kSec + i);
  }
  std::size_t live = 0;
  for (const SocketEntry& e : t.table(kNetns, 2 * kSec).sockets) {
    live += e.state == TcpState::kTimeWait ? 1 : 0;
  }
  EXPECT_EQ(live, kCount - taken);
  // Reinserted into freed slots: found again, and the table stays consistent.
  for (std::uint32_t i = 0; i < kCount; i += 3) {
    t.apply(fin_wait2_close(i, 3 * kSec));
  }
  EXPECT_EQ(t.time_wait_count(), kCount);
}

TEST(TimeWaitTableTest, ExpiresInOrderOfExpiryWhateverTheOrderOfArrival) {
  SocketTracker t;
  SocketTable snap;
  std::mt19937 rng(3);
  std::vector<std::uint64_t> remaining_ms;
  for (std::uint32_t i = 0; i < 5000; ++i) {
    SocketEntry e = time_wait_entry(i);
    e.time_wait_remaining = std::chrono::milliseconds(rng() % 60000);
    remaining_ms.push_back(e.time_wait_remaining->count());
    snap.sockets.push_back(e);
  }
  t.bootstrap(kNetns, snap, 100 * kSec);
  std::sort(remaining_ms.begin(), remaining_ms.end());
  for (const std::uint64_t at_ms : {0ULL, 1000ULL, 17'500ULL, 30'000ULL, 59'999ULL, 60'000ULL}) {
    t.expire(100 * kSec + at_ms * 1'000'000ULL);
    const auto due = static_cast<std::size_t>(
        std::upper_bound(remaining_ms.begin(), remaining_ms.end(), at_ms) - remaining_ms.begin());
    EXPECT_EQ(t.counters().time_wait_expired, due) << at_ms;
    EXPECT_EQ(t.time_wait_count(), remaining_ms.size() - due);
  }
}

TEST(TimeWaitTableTest, ReArmedByReconcileExpiresAtTheNewTimeOnly) {
  SocketTracker t;
  t.apply(fin_wait2_close(7, kSec));  // expires at 61 s
  SocketTable snap;
  SocketEntry e = time_wait_entry(7);
  e.time_wait_remaining = std::chrono::milliseconds(5000);
  snap.sockets.push_back(e);
  t.reconcile(kNetns, snap, 2 * kSec);  // now expires at 7 s
  t.expire(6 * kSec);
  EXPECT_EQ(t.time_wait_count(), 1U);
  t.expire(7 * kSec);
  EXPECT_EQ(t.time_wait_count(), 0U);
  EXPECT_EQ(t.counters().time_wait_expired, 1U);
  t.expire(61 * kSec);  // the stale item of the first arming expires nothing
  EXPECT_EQ(t.counters().time_wait_expired, 1U);
}

TEST(TimeWaitTableTest, CapIsCountedAsDropsAndFreedRoomIsReused) {
  TrackerLimits limits;
  limits.max_time_wait = 100;
  SocketTracker t(limits);
  for (std::uint32_t i = 0; i < 150; ++i) {
    t.apply(fin_wait2_close(i, kSec));
  }
  EXPECT_EQ(t.time_wait_count(), 100U);
  EXPECT_EQ(t.counters().time_wait_dropped, 50U);
  EXPECT_FALSE(t.owner_of(time_wait_entry(120)).has_value());
  t.expire(61 * kSec);
  EXPECT_EQ(t.time_wait_count(), 0U);
  for (std::uint32_t i = 100; i < 150; ++i) {
    t.apply(fin_wait2_close(i, 62 * kSec));
  }
  EXPECT_EQ(t.time_wait_count(), 50U);
  EXPECT_EQ(t.counters().time_wait_dropped, 50U);
}

TEST(TimeWaitTableTest, MappedAddressesComeBackAsTheyWereGiven) {
  SocketTracker t;
  SocketTable snap;
  SocketEntry e = time_wait_entry(1);
  e.local = ep("::ffff:127.0.0.1", 40000);
  e.remote = ep("10.0.0.9", 80);
  e.time_wait_remaining = std::chrono::milliseconds(30000);
  snap.sockets.push_back(e);
  t.bootstrap(kNetns, snap, kSec);
  const SocketTable table = t.table(kNetns, kSec);
  ASSERT_EQ(table.sockets.size(), 1U);
  EXPECT_EQ(table.sockets[0].local, e.local);
  EXPECT_EQ(table.sockets[0].remote, e.remote);
  // The same 4-tuple, spelled unmapped, is the same TIME_WAIT.
  SocketEntry plain = e;
  plain.local = ep("127.0.0.1", 40000);
  EXPECT_EQ(t.first_seen(plain), kSec);
}

}  // namespace
}  // namespace portlens
