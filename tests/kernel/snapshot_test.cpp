// Kernel tests of the socket snapshot: real sockets in a private network namespace, compared
// with what the BPF iterators and the sock_diag fallback report, and with ss(8).
#include "agent/kernel/snapshot.hpp"

#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>

#include "agent/kernel/skeleton.hpp"
#include "agent/model/error.hpp"
#include "snapshot.skel.h"
#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"

namespace portlens::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::uint32_t kOtherUid = 4242;

Endpoint ep(const std::string& addr, std::uint16_t port) { return {*IpAddress::parse(addr), port}; }

std::uint64_t inode_of(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    throw std::runtime_error("fstat");
  }
  return st.st_ino;
}

std::unique_ptr<SocketSnapshotter> try_snapshotter(SnapshotMode mode, std::string* why) {
  try {
    return std::make_unique<SocketSnapshotter>(SnapshotOptions{mode});
  } catch (const Error& e) {
    *why = e.what();
    return nullptr;
  }
}

// NOLINTBEGIN(bugprone-macro-parentheses): var names a variable being declared.
#define PORTLENS_START_SNAPSHOTTER(var, mode)                                            \
  std::string var##_why;                                                                 \
  auto var = try_snapshotter((mode), &var##_why);                                        \
  if (!var) {                                                                            \
    if (::portlens::testing::bpf_required()) {                                           \
      FAIL() << "PORTLENS_REQUIRE_BPF=1 but the snapshot could not load: " << var##_why; \
    }                                                                                    \
    GTEST_SKIP() << "BPF iterators unavailable (" << var##_why << ")";                   \
  }
// NOLINTEND(bugprone-macro-parentheses)

// Runs fn with the calling thread's effective uid switched. The raw syscall changes only this
// thread; glibc's setresuid() would change every thread of the process.
template <class F>
auto as_uid(std::uint32_t uid, F&& fn) {
  if (syscall(SYS_setresuid, -1, uid, -1) != 0) {
    throw std::runtime_error("setresuid");
  }
  auto result = fn();
  if (syscall(SYS_setresuid, -1, 0, -1) != 0) {
    throw std::runtime_error("setresuid back");
  }
  return result;
}

// Waits until fd reads end-of-file (the peer's FIN), bounded.
void wait_eof(int fd) {
  pollfd p{fd, POLLIN, 0};
  char byte = 0;
  if (poll(&p, 1, 2000) != 1 || ::read(fd, &byte, 1) != 0) {
    throw std::runtime_error("no FIN from the peer");
  }
}

const SocketEntry* find(const std::vector<SocketEntry>& sockets, Proto proto, const Endpoint& local,
                        std::optional<Endpoint> remote = std::nullopt) {
  const auto it = std::find_if(sockets.begin(), sockets.end(), [&](const SocketEntry& e) {
    return e.proto == proto && e.local == local && e.remote == remote;
  });
  return it == sockets.end() ? nullptr : &*it;
}

// Every kind of port owner the diagnoser reasons about, made for real.
struct Population {
  std::unique_ptr<TestSocket> listener;   // 127.0.0.1:8080 LISTEN, SO_REUSEADDR
  std::unique_ptr<TestSocket> bound;      // 127.0.0.1:8081 bound only, SO_REUSEPORT
  std::unique_ptr<TestSocket> client;     // connected to the listener, port from connect()
  int accepted = -1;                      // the listener's child
  std::unique_ptr<TestSocket> udp;        // UDP 127.0.0.1:5353, SO_REUSEADDR
  std::unique_ptr<TestSocket> v6;         // [::]:8082 LISTEN, IPV6_V6ONLY
  std::unique_ptr<TestSocket> device;     // 0.0.0.0:8083 LISTEN, SO_BINDTODEVICE lo
  std::unique_ptr<TestSocket> other_uid;  // 127.0.0.1:8084 LISTEN, made by uid kOtherUid

  Population() = default;
  ~Population() {
    if (accepted >= 0) {
      ::close(accepted);
    }
  }
  Population(const Population&) = delete;
  Population& operator=(const Population&) = delete;
  Population(Population&&) = delete;
  Population& operator=(Population&&) = delete;
};

void check(int rc, const char* what) {
  if (rc != 0) {
    throw std::runtime_error(std::string(what) + ": " + errno_text(rc));
  }
}

std::unique_ptr<Population> populate(NetnsSandbox& ns) {
  return ns.run([] {
    auto p = std::make_unique<Population>();
    p->listener = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    check(p->listener->reuseaddr().bind("127.0.0.1", 8080), "bind listener");
    check(p->listener->listen(), "listen");
    p->bound = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    check(p->bound->reuseport().bind("127.0.0.1", 8081), "bind bound-only");
    p->client = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    check(p->client->connect("127.0.0.1", 8080), "connect");
    p->accepted = p->listener->accept_one();
    if (p->accepted < 0) {
      throw std::runtime_error("accept");
    }
    p->udp = std::make_unique<TestSocket>(AF_INET, SOCK_DGRAM);
    check(p->udp->reuseaddr().bind("127.0.0.1", 5353), "bind udp");
    p->v6 = std::make_unique<TestSocket>(AF_INET6, SOCK_STREAM);
    check(p->v6->v6only().bind("::", 8082), "bind v6");
    check(p->v6->listen(), "listen v6");
    p->device = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    const char lo[] = "lo";
    check(setsockopt(p->device->fd(), SOL_SOCKET, SO_BINDTODEVICE, lo, sizeof lo) != 0 ? errno : 0,
          "SO_BINDTODEVICE");
    check(p->device->bind("0.0.0.0", 8083), "bind device");
    check(p->device->listen(), "listen device");
    p->other_uid =
        as_uid(kOtherUid, [] { return std::make_unique<TestSocket>(AF_INET, SOCK_STREAM); });
    check(p->other_uid->bind("127.0.0.1", 8084), "bind other uid");
    check(p->other_uid->listen(), "listen other uid");
    return p;
  });
}

using SnapshotKernelTest = KernelTest;

TEST_F(SnapshotKernelTest, ContainsExactlyTheSocketsMadeInTheNamespaceWithTheirFlags) {
  PORTLENS_START_SNAPSHOTTER(snapshotter, SnapshotMode::kBpfIterator);
  ASSERT_EQ(snapshotter->source(), SnapshotSource::kBpfIterator);
  EXPECT_GT(snapshotter->kernel_hz(), 0U);
  const auto p = populate(ns());
  const Snapshot snap = snapshotter->take({ns().path(), ns().inode()});
  EXPECT_EQ(snap.source, SnapshotSource::kBpfIterator);
  EXPECT_EQ(snap.netns, ns().inode());
  EXPECT_EQ(snap.truncated, 0U);
  const auto& sockets = snap.table.sockets;
  EXPECT_EQ(sockets.size(), 8U);
  for (const auto& e : sockets) {
    EXPECT_EQ(e.netns, ns().inode());
    EXPECT_NE(e.sock_id, 0U);
    EXPECT_FALSE(e.time_wait_remaining.has_value());
  }

  const SocketEntry* listener = find(sockets, Proto::kTcp, ep("127.0.0.1", 8080));
  ASSERT_NE(listener, nullptr);
  EXPECT_EQ(listener->state, TcpState::kListen);
  EXPECT_EQ(listener->reuseaddr, true);
  EXPECT_EQ(listener->reuseport, false);
  EXPECT_EQ(listener->v6only, false);
  EXPECT_EQ(listener->bound_dev_if, 0);
  EXPECT_EQ(listener->uid, 0U);
  EXPECT_EQ(listener->inode, inode_of(p->listener->fd()));
  EXPECT_TRUE(listener->explicit_port);

  const SocketEntry* bound = find(sockets, Proto::kTcp, ep("127.0.0.1", 8081));
  ASSERT_NE(bound, nullptr);
  EXPECT_EQ(bound->state, TcpState::kClose);
  EXPECT_EQ(bound->reuseaddr, false);
  EXPECT_EQ(bound->reuseport, true);
  EXPECT_EQ(bound->inode, inode_of(p->bound->fd()));
  EXPECT_TRUE(bound->explicit_port);

  const Endpoint client_ep = ep("127.0.0.1", p->client->local_port());
  const SocketEntry* client = find(sockets, Proto::kTcp, client_ep, ep("127.0.0.1", 8080));
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->state, TcpState::kEstablished);
  EXPECT_EQ(client->inode, inode_of(p->client->fd()));
  EXPECT_FALSE(client->explicit_port);  // connect() chose the port
  EXPECT_EQ(client->reuseaddr, false);

  const SocketEntry* accepted = find(sockets, Proto::kTcp, ep("127.0.0.1", 8080), client_ep);
  ASSERT_NE(accepted, nullptr);
  EXPECT_EQ(accepted->state, TcpState::kEstablished);
  EXPECT_EQ(accepted->inode, inode_of(p->accepted));
  EXPECT_EQ(accepted->reuseaddr, true);  // inherited from the listener (sk_clone_lock)
  EXPECT_TRUE(accepted->explicit_port);

  const SocketEntry* udp = find(sockets, Proto::kUdp, ep("127.0.0.1", 5353));
  ASSERT_NE(udp, nullptr);
  EXPECT_FALSE(udp->state.has_value());
  EXPECT_EQ(udp->reuseaddr, true);
  EXPECT_EQ(udp->reuseport, false);
  EXPECT_EQ(udp->uid, 0U);
  EXPECT_EQ(udp->inode, inode_of(p->udp->fd()));
  EXPECT_TRUE(udp->explicit_port);

  const SocketEntry* v6 = find(sockets, Proto::kTcp, ep("::", 8082));
  ASSERT_NE(v6, nullptr);
  EXPECT_EQ(v6->state, TcpState::kListen);
  EXPECT_EQ(v6->v6only, true);
  EXPECT_EQ(v6->inode, inode_of(p->v6->fd()));

  const SocketEntry* device = find(sockets, Proto::kTcp, ep("0.0.0.0", 8083));
  ASSERT_NE(device, nullptr);
  EXPECT_EQ(device->bound_dev_if, static_cast<int>(if_nametoindex("lo")));
  EXPECT_EQ(device->bound_dev_if, 1);  // lo in a fresh namespace

  const SocketEntry* other = find(sockets, Proto::kTcp, ep("127.0.0.1", 8084));
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->uid, kOtherUid);
  EXPECT_EQ(other->inode, inode_of(p->other_uid->fd()));

  // The namespace's config travels with its sockets.
  EXPECT_TRUE(snap.table.netns_config.contains(ns().inode()));
}

// What inet_csk_get_port()'s fast paths, udp_lib_lport_inuse()'s chain walk and
// ipv4_rcv_saddr_equal() read, as the iterators report it for real sockets.
struct OrderSensitive {
  std::vector<TestSocket> sockets;
  int accepted = -1;
  std::uint16_t client_port = 0;

  OrderSensitive() = default;
  ~OrderSensitive() {
    if (accepted >= 0) {
      ::close(accepted);
    }
  }
  OrderSensitive(const OrderSensitive&) = delete;
  OrderSensitive& operator=(const OrderSensitive&) = delete;
  OrderSensitive(OrderSensitive&&) = delete;
  OrderSensitive& operator=(OrderSensitive&&) = delete;
};

std::unique_ptr<OrderSensitive> make_order_sensitive(NetnsSandbox& ns) {
  return ns.run([] {
    auto o = std::make_unique<OrderSensitive>();
    auto& s = o->sockets;
    s.reserve(16);  // references below must survive every emplace_back
    // TCP 7000: SO_REUSEADDR on 127.0.0.2, then SO_REUSEADDR+SO_REUSEPORT on 0.0.0.0:
    // fastreuseport becomes STRICT with 0.0.0.0 and uid 0.
    check(s.emplace_back(AF_INET, SOCK_STREAM).reuseaddr().bind("127.0.0.2", 7000), "bind 7000");
    check(s.emplace_back(AF_INET, SOCK_STREAM).reuseaddr().reuseport().bind("0.0.0.0", 7000),
          "bind 7000 wildcard");
    // TCP 7001: one SO_REUSEPORT listener of another uid: STRICT with its uid and address.
    s.push_back(as_uid(kOtherUid, [] { return TestSocket(AF_INET, SOCK_STREAM); }));
    check(s.back().reuseaddr().reuseport().bind("127.0.0.1", 7001), "bind 7001");
    check(s.back().listen(), "listen 7001");
    // A client of a [::] dual-stack listener on 7002, connected over IPv6 from [::]: its
    // address becomes ::1, its IPv4 receive address LOOPBACK4_IPV6, v6only stays 0.
    TestSocket& server = s.emplace_back(AF_INET6, SOCK_STREAM);
    check(server.bind("::", 7002), "bind 7002");
    check(server.listen(), "listen 7002");
    TestSocket& client = s.emplace_back(AF_INET6, SOCK_STREAM);
    check(client.bind("::", 7003), "bind 7003");
    check(client.connect("::1", 7002), "connect 7002");
    o->accepted = server.accept_one();
    if (o->accepted < 0) {
      throw std::runtime_error("accept");
    }
    // A connect()-picked port: the bucket comes from __inet_hash_connect (both fast* -1).
    TestSocket& picked = s.emplace_back(AF_INET, SOCK_STREAM);
    check(picked.connect("127.0.0.1", 7001), "connect 7001");
    o->client_port = picked.local_port();
    // UDP 7100, in creation order: 0.0.0.0 SO_REUSEADDR, 0.0.0.0 SO_REUSEADDR+SO_REUSEPORT,
    // [::] SO_REUSEADDR+SO_REUSEPORT. udp_lib_get_port() puts the first two at the head of the
    // chain and the IPv6 SO_REUSEPORT one at the tail.
    check(s.emplace_back(AF_INET, SOCK_DGRAM).reuseaddr().bind("0.0.0.0", 7100), "udp 1");
    check(s.emplace_back(AF_INET, SOCK_DGRAM).reuseaddr().reuseport().bind("0.0.0.0", 7100),
          "udp 2");
    check(s.emplace_back(AF_INET6, SOCK_DGRAM).reuseaddr().reuseport().bind("::", 7100), "udp 3");
    // UDP [::] dual-stack connected over IPv6, and UDP bound to ::1.
    TestSocket& udp_dual = s.emplace_back(AF_INET6, SOCK_DGRAM);
    check(udp_dual.bind("::", 7101), "udp dual");
    check(udp_dual.connect("::1", 7002), "udp dual connect");
    check(s.emplace_back(AF_INET6, SOCK_DGRAM).bind("::1", 7102), "udp ::1");
    return o;
  });
}

TEST_F(SnapshotKernelTest, IteratorsReadBindBucketsUdpChainsAndIpv4ReceiveAddresses) {
  PORTLENS_START_SNAPSHOTTER(snapshotter, SnapshotMode::kBpfIterator);
  const auto o = make_order_sensitive(ns());
  const Snapshot snap = snapshotter->take({ns().path(), ns().inode()});
  const auto& sockets = snap.table.sockets;

  const SocketEntry* specific = find(sockets, Proto::kTcp, ep("127.0.0.2", 7000));
  const SocketEntry* wildcard = find(sockets, Proto::kTcp, ep("0.0.0.0", 7000));
  ASSERT_NE(specific, nullptr);
  ASSERT_NE(wildcard, nullptr);
  ASSERT_TRUE(specific->bind_bucket.has_value());
  EXPECT_EQ(specific->bind_bucket, wildcard->bind_bucket);  // one bucket per port
  const TcpBindBucket& strict = *specific->bind_bucket;
  // On this kernel inet_csk_get_port() links the new bind2 bucket into tb->bhash2 before
  // inet_csk_update_fastreuse() tests hlist_empty(&tb->bhash2), so even the first owner takes
  // the "bucket has owners" branch: fastreuse keeps inet_bind_bucket_create()'s 0, and the
  // first SO_REUSEPORT socket sets STRICT, never ANY.
  EXPECT_EQ(strict.fastreuse, 0);
  EXPECT_EQ(strict.fastreuseport, TcpBindBucket::kFastreuseportStrict);
  EXPECT_EQ(strict.fastuid, 0U);
  EXPECT_EQ(strict.fast_family, Family::kIpv4);
  EXPECT_EQ(strict.fast_rcv_saddr, *IpAddress::parse("0.0.0.0"));
  EXPECT_EQ(strict.l3mdev, 0);
  EXPECT_FALSE(specific->v4_rcv_saddr.has_value());  // AF_INET: local is the IPv4 address

  const SocketEntry* other = find(sockets, Proto::kTcp, ep("127.0.0.1", 7001));
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->bind_bucket.has_value());
  EXPECT_EQ(other->bind_bucket->fastreuse, 0);
  EXPECT_EQ(other->bind_bucket->fastreuseport, TcpBindBucket::kFastreuseportStrict);
  EXPECT_EQ(other->bind_bucket->fastuid, kOtherUid);
  EXPECT_EQ(other->bind_bucket->fast_rcv_saddr, *IpAddress::parse("127.0.0.1"));

  const SocketEntry* picked =
      find(sockets, Proto::kTcp, ep("127.0.0.1", o->client_port), ep("127.0.0.1", 7001));
  ASSERT_NE(picked, nullptr);
  ASSERT_TRUE(picked->bind_bucket.has_value());
  EXPECT_EQ(picked->bind_bucket->fastreuse, -1);
  EXPECT_EQ(picked->bind_bucket->fastreuseport, -1);

  const SocketEntry* dual = find(sockets, Proto::kTcp, ep("::1", 7003), ep("::1", 7002));
  ASSERT_NE(dual, nullptr);
  EXPECT_EQ(dual->v6only, false);
  EXPECT_EQ(dual->v4_rcv_saddr, *IpAddress::parse("127.0.0.6"));
  const SocketEntry* dual_listener = find(sockets, Proto::kTcp, ep("::", 7002));
  ASSERT_NE(dual_listener, nullptr);
  EXPECT_EQ(dual_listener->v4_rcv_saddr, *IpAddress::parse("0.0.0.0"));
  ASSERT_TRUE(dual_listener->bind_bucket.has_value());
  EXPECT_EQ(dual_listener->bind_bucket->fastreuseport, 0);

  const SocketEntry* udp_dual = find(sockets, Proto::kUdp, ep("::1", 7101), ep("::1", 7002));
  ASSERT_NE(udp_dual, nullptr);
  EXPECT_EQ(udp_dual->v6only, false);
  EXPECT_EQ(udp_dual->v4_rcv_saddr, *IpAddress::parse("127.0.0.6"));
  EXPECT_FALSE(udp_dual->bind_bucket.has_value());
  const SocketEntry* udp_lo6 = find(sockets, Proto::kUdp, ep("::1", 7102));
  ASSERT_NE(udp_lo6, nullptr);
  EXPECT_EQ(udp_lo6->v6only, true);  // __inet6_bind() sets it for a specific address
  EXPECT_EQ(udp_lo6->v4_rcv_saddr, *IpAddress::parse("127.0.0.6"));

  // UDP 7100: chain positions give the walk order udp_lib_lport_inuse() follows.
  std::vector<const SocketEntry*> udp;
  for (const SocketEntry& e : sockets) {
    if (e.proto == Proto::kUdp && e.local.port == 7100) {
      udp.push_back(&e);
    }
  }
  ASSERT_EQ(udp.size(), 3U);
  for (const SocketEntry* e : udp) {
    ASSERT_TRUE(e->udp_chain_position.has_value());
    ASSERT_TRUE(e->udp_slot_count.has_value());
    EXPECT_GE(*e->udp_slot_count, 3U);
    EXPECT_EQ(e->udp_slot_count, udp.front()->udp_slot_count);
  }
  const auto position = [&](const std::string& addr, bool reuseport) {
    const auto it = std::find_if(udp.begin(), udp.end(), [&](const SocketEntry* e) {
      return e->local.addr == *IpAddress::parse(addr) && e->reuseport == reuseport;
    });
    return it == udp.end() ? ~0U : *(*it)->udp_chain_position;
  };
  const std::uint32_t first = position("0.0.0.0", false);
  const std::uint32_t second = position("0.0.0.0", true);
  const std::uint32_t v6 = position("::", true);
  EXPECT_LT(second, first);  // added at the head
  EXPECT_LT(first, v6);      // IPv6 SO_REUSEPORT: added at the tail
}

// Closes n connections actively (client first, then the server after the FIN), so each client
// side goes FIN_WAIT2 -> TIME_WAIT with substate TIME_WAIT. Client i gets options[i % 3].
std::vector<std::uint16_t> make_time_waits(NetnsSandbox& ns, int n) {
  return ns.run([n] {
    TestSocket listener(AF_INET, SOCK_STREAM);
    check(listener.reuseaddr().bind("127.0.0.1", 9000), "bind");
    check(listener.listen(64), "listen");
    std::vector<std::uint16_t> ports;
    for (int i = 0; i < n; ++i) {
      TestSocket client(AF_INET, SOCK_STREAM);
      if (i % 3 == 0) {
        client.reuseaddr();
      } else if (i % 3 == 1) {
        client.reuseport();
      }
      check(client.connect("127.0.0.1", 9000), "connect");
      const int child = listener.accept_one();
      if (child < 0) {
        throw std::runtime_error("accept");
      }
      ports.push_back(client.local_port());
      client.close();
      wait_eof(child);
      ::close(child);
    }
    return ports;
  });
}

// Waits (bounded) until the snapshot shows n TIME_WAIT entries toward port 9000.
Snapshot wait_for_time_waits(const SocketSnapshotter& s, const NetnsSandbox& ns, std::size_t n) {
  Snapshot snap;
  for (int i = 0; i < 40; ++i) {
    snap = s.take({ns.path(), ns.inode()});
    const auto count = std::count_if(
        snap.table.sockets.begin(), snap.table.sockets.end(), [](const SocketEntry& e) {
          return e.state == TcpState::kTimeWait && e.remote && e.remote->port == 9000;
        });
    if (static_cast<std::size_t>(count) >= n) {
      break;
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
  return snap;
}

TEST_F(SnapshotKernelTest, TimeWaitMinisocketsCarryTimerTimestampsAndReuseFlags) {
  PORTLENS_START_SNAPSHOTTER(snapshotter, SnapshotMode::kBpfIterator);
  const auto ports = make_time_waits(ns(), 3);
  const Snapshot snap = wait_for_time_waits(*snapshotter, ns(), ports.size());
  std::size_t time_waits = 0;
  for (std::size_t i = 0; i < ports.size(); ++i) {
    const SocketEntry* tw =
        find(snap.table.sockets, Proto::kTcp, ep("127.0.0.1", ports[i]), ep("127.0.0.1", 9000));
    ASSERT_NE(tw, nullptr) << "no TIME_WAIT for port " << ports[i];
    ++time_waits;
    EXPECT_EQ(tw->state, TcpState::kTimeWait);
    EXPECT_EQ(tw->time_wait_substate, TcpState::kTimeWait);
    ASSERT_TRUE(tw->time_wait_remaining.has_value());
    EXPECT_GE(*tw->time_wait_remaining, milliseconds(55'000));
    EXPECT_LE(*tw->time_wait_remaining, milliseconds(60'000));
    EXPECT_EQ(tw->timestamps, true);
    // inet_twsk_alloc() copies sk_reuse and sk_reuseport into the minisocket.
    EXPECT_EQ(tw->reuseaddr, i % 3 == 0);
    EXPECT_EQ(tw->reuseport, i % 3 == 1);
    EXPECT_EQ(tw->inode, 0U);
    EXPECT_FALSE(tw->uid.has_value());
    EXPECT_NE(tw->sock_id, 0U);
  }
  const auto all_tw =
      std::count_if(snap.table.sockets.begin(), snap.table.sockets.end(), [](const SocketEntry& e) {
        return e.state == TcpState::kTimeWait && e.time_wait_substate == TcpState::kTimeWait;
      });
  EXPECT_EQ(std::stol(ss_count_time_wait(ns())), all_tw);
  EXPECT_EQ(static_cast<std::size_t>(all_tw), time_waits);
}

TEST_F(SnapshotKernelTest, SockDiagFallbackSeesTheSameSocketsWithReuseFlagsUnknown) {
  PORTLENS_START_SNAPSHOTTER(iterators, SnapshotMode::kBpfIterator);
  const SocketSnapshotter diag(SnapshotOptions{SnapshotMode::kSockDiag});
  EXPECT_EQ(diag.source(), SnapshotSource::kSockDiag);
  const auto p = populate(ns());
  const auto ports = make_time_waits(ns(), 2);
  const Snapshot a = wait_for_time_waits(*iterators, ns(), ports.size());
  const Snapshot b = diag.take({ns().path(), ns().inode()});
  EXPECT_EQ(b.source, SnapshotSource::kSockDiag);
  EXPECT_EQ(b.netns, ns().inode());
  // The listener on 9000 is gone; 8 sockets of the population and the TIME_WAITs remain.
  ASSERT_EQ(a.table.sockets.size(), 8U + ports.size());
  ASSERT_EQ(b.table.sockets.size(), a.table.sockets.size());
  for (const SocketEntry& x : a.table.sockets) {
    SCOPED_TRACE(std::string(to_string(x.proto)) + " " + x.local.to_string());
    const SocketEntry* y = find(b.table.sockets, x.proto, x.local, x.remote);
    ASSERT_NE(y, nullptr);
    EXPECT_EQ(y->state, x.state);
    EXPECT_EQ(y->time_wait_substate, x.time_wait_substate);
    EXPECT_EQ(y->uid, x.uid);
    EXPECT_EQ(y->inode, x.inode);
    EXPECT_EQ(y->bound_dev_if, x.bound_dev_if);
    EXPECT_EQ(y->netns, x.netns);
    if (y->v6only) {
      EXPECT_EQ(y->v6only, x.v6only);
    }
    EXPECT_FALSE(y->reuseaddr.has_value());
    EXPECT_FALSE(y->reuseport.has_value());
    if (x.state == TcpState::kTimeWait) {
      ASSERT_TRUE(y->time_wait_remaining.has_value());
      const auto diff = *y->time_wait_remaining - *x.time_wait_remaining;
      EXPECT_LE(std::abs(diff.count()), 1000)
          << "iterator " << x.time_wait_remaining->count() << " ms, sock_diag "
          << y->time_wait_remaining->count() << " ms";
    }
  }
  // v6only is reported for every full IPv6 socket.
  const SocketEntry* v6 = find(b.table.sockets, Proto::kTcp, ep("::", 8082));
  ASSERT_NE(v6, nullptr);
  EXPECT_EQ(v6->v6only, true);
}

using NetnsConfigKernelTest = KernelTest;

TEST_F(NetnsConfigKernelTest, ReadsTheNamespacesSysctlsAndAddresses) {
  ns().sysctl("net.ipv4.ip_local_port_range", "40000 40100");
  ns().sysctl("net.ipv4.ip_local_reserved_ports", "40010,40020-40022");
  ns().sysctl("net.ipv4.tcp_tw_reuse", "0");
  ns().sysctl("net.ipv4.ip_unprivileged_port_start", "80");
  // Needs no BPF: the config is read the same way for either source.
  const SocketSnapshotter diag(SnapshotOptions{SnapshotMode::kSockDiag});
  const Snapshot snap = diag.take({ns().path(), ns().inode()});
  EXPECT_TRUE(snap.problems.empty()) << snap.problems.front();
  ASSERT_TRUE(snap.table.netns_config.contains(ns().inode()));
  const NetnsPortConfig& c = snap.table.config_for(ns().inode());
  EXPECT_EQ(c.port_range_lo, 40000);
  EXPECT_EQ(c.port_range_hi, 40100);
  EXPECT_EQ(c.reserved_ports.count(), 4U);
  EXPECT_TRUE(c.reserved_ports.test(40010));
  EXPECT_TRUE(c.reserved_ports.test(40020));
  EXPECT_TRUE(c.reserved_ports.test(40022));
  EXPECT_EQ(c.tcp_tw_reuse, 0);
  EXPECT_EQ(c.ip_unprivileged_port_start, 80);
  EXPECT_EQ(c.tcp_tw_reuse_delay, milliseconds(1000));
  EXPECT_FALSE(c.ip_autobind_reuse);
  EXPECT_FALSE(c.ip_nonlocal_bind);
  EXPECT_FALSE(c.ip6_nonlocal_bind);
  ASSERT_TRUE(c.local_addresses.has_value());
  const auto has = [&](const std::string& addr, int prefix) {
    return std::any_of(c.local_addresses->begin(), c.local_addresses->end(),
                       [&](const LocalAddress& a) {
                         return a.address == *IpAddress::parse(addr) && a.prefix_len == prefix &&
                                a.on_loopback_device;
                       });
  };
  EXPECT_TRUE(has("127.0.0.1", 8));
  EXPECT_TRUE(has("::1", 128));
  EXPECT_EQ(c.local_addresses->size(), 2U);
  // The host's own namespace is untouched.
  EXPECT_TRUE(snap.table.sockets.empty());
}

// Not a timed pass/fail: N sockets (PORTLENS_SNAPSHOT_SCALE, default 20000) must all be in the
// snapshot; the elapsed times are printed. Sockets held by descriptors (TCP listeners and UDP,
// half of N or what RLIMIT_NOFILE allows) and TIME_WAIT minisockets for the rest.
TEST_F(SnapshotKernelTest, ScaleSnapshotCountsEverySocket) {
  PORTLENS_START_SNAPSHOTTER(iterators, SnapshotMode::kBpfIterator);
  const char* env = std::getenv("PORTLENS_SNAPSHOT_SCALE");  // NOLINT(concurrency-mt-unsafe)
  const int n = env != nullptr ? std::stoi(env) : 20000;
  rlimit lim{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &lim), 0);
  const int held = std::min(n / 2, static_cast<int>(lim.rlim_cur) - 256);
  const int time_waits = n - held;
  // No connect() may take over a TIME_WAIT, and the namespace must keep them all.
  ns().sysctl("net.ipv4.tcp_tw_reuse", "0");
  ns().sysctl("net.ipv4.ip_local_port_range", "1024 65535");
  ns().sysctl("net.ipv4.tcp_max_tw_buckets", std::to_string(2 * n));
  constexpr int kDestinations = 10;  // 127.0.0.1:9000.. spread the 4-tuples
  const auto made = Clock::now();
  const auto sockets = ns().run([held, time_waits] {
    std::vector<TestSocket> listeners;
    for (int d = 0; d < kDestinations; ++d) {
      listeners.emplace_back(AF_INET, SOCK_STREAM);
      check(listeners.back().bind("127.0.0.1", static_cast<std::uint16_t>(9000 + d)), "bind");
      check(listeners.back().listen(16), "listen");
    }
    for (int i = 0; i < time_waits; ++i) {
      TestSocket client(AF_INET, SOCK_STREAM);
      const TestSocket& listener = listeners[static_cast<std::size_t>(i % kDestinations)];
      check(client.connect("127.0.0.1", static_cast<std::uint16_t>(9000 + i % kDestinations)),
            "connect");
      const int child = listener.accept_one();
      if (child < 0) {
        throw std::runtime_error("accept");
      }
      client.close();
      wait_eof(child);
      ::close(child);
    }
    std::vector<TestSocket> out;
    out.reserve(static_cast<std::size_t>(held));
    for (int i = 0; i < held; ++i) {
      const bool tcp = i % 2 == 0;
      const int k = i / 2;
      const std::string addr = "127.0.0." + std::to_string(2 + k / 60000);
      const auto port = static_cast<std::uint16_t>(2000 + k % 60000);
      out.emplace_back(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM);
      check(out.back().bind(addr, port), "bind");
      if (tcp) {
        check(out.back().listen(1), "listen");
      }
    }
    return out;
  });
  std::printf("[ snapshot ] made %d sockets (%d TIME_WAIT) in %.1f s\n", n, time_waits,
              std::chrono::duration<double>(Clock::now() - made).count());
  const SocketSnapshotter diag(SnapshotOptions{SnapshotMode::kSockDiag});
  const Snapshot a = iterators->take({ns().path(), ns().inode()});
  const Snapshot b = diag.take({ns().path(), ns().inode()});
  EXPECT_EQ(a.table.sockets.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(b.table.sockets.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(a.truncated, 0U);
  const auto tw =
      std::count_if(a.table.sockets.begin(), a.table.sockets.end(),
                    [](const SocketEntry& e) { return e.state == TcpState::kTimeWait; });
  EXPECT_EQ(tw, time_waits);
  std::printf("[ snapshot ] %d sockets: bpf iterators %.3f s, sock_diag %.3f s\n", n,
              std::chrono::duration<double>(a.elapsed).count(),
              std::chrono::duration<double>(b.elapsed).count());
}

TEST_F(SnapshotKernelTest, EntriesBeyondTheCapAreCountedNotStored) {
  PORTLENS_START_SNAPSHOTTER(unused, SnapshotMode::kBpfIterator);
  const SocketSnapshotter capped(SnapshotOptions{SnapshotMode::kBpfIterator, 3});
  const auto p = populate(ns());
  const Snapshot snap = capped.take({ns().path(), ns().inode()});
  EXPECT_EQ(snap.table.sockets.size(), 3U);
  EXPECT_EQ(snap.truncated, 5U);
}

// Every field of an entry but the TIME_WAIT timer, which moves between two takes.
std::string describe(const SocketEntry& e) {
  const auto opt = [](const auto& v) { return v ? std::to_string(*v) : std::string("-"); };
  const auto state = [](const std::optional<TcpState>& v) {
    return v ? std::to_string(static_cast<int>(*v)) : std::string("-");
  };
  std::string out = std::to_string(static_cast<int>(e.proto)) + " " + state(e.state) + " " +
                    state(e.time_wait_substate) + " " + e.local.to_string() + " " +
                    (e.remote ? e.remote->to_string() : "-") + " " + std::to_string(e.netns) + " " +
                    opt(e.reuseaddr) + opt(e.reuseport) + opt(e.v6only) + " " +
                    opt(e.bound_dev_if) + " " + opt(e.uid) + " " +
                    std::to_string(static_cast<int>(e.explicit_port)) + " " +
                    std::to_string(e.inode) + " " + std::to_string(e.sock_id) + " " +
                    (e.owner ? e.owner->comm : "-") + " " + opt(e.timestamps) + " " +
                    (e.v4_rcv_saddr ? e.v4_rcv_saddr->to_string() : "-") + " " +
                    opt(e.udp_chain_position) + " " + opt(e.udp_slot_count);
  if (e.bind_bucket) {
    const TcpBindBucket& b = *e.bind_bucket;
    out += " bucket " + std::to_string(b.fastreuse) + " " + std::to_string(b.fastreuseport) + " " +
           std::to_string(b.fastuid) + " " + b.fast_rcv_saddr.to_string() + " " +
           b.fast_v6_rcv_saddr.to_string() + " " + std::to_string(b.l3mdev);
  }
  return out;
}

// The reconcile's walk takes the compact form: the same sockets, field for field, and the same
// cap.
TEST_F(SnapshotKernelTest, TheCompactFormHoldsTheSameSockets) {
  PORTLENS_START_SNAPSHOTTER(snapshotter, SnapshotMode::kBpfIterator);
  const auto p = populate(ns());
  const Snapshot table = snapshotter->take({ns().path(), ns().inode()});
  const Snapshot compact = snapshotter->take({ns().path(), ns().inode()}, true);
  EXPECT_FALSE(table.is_compact);
  ASSERT_TRUE(compact.is_compact);
  EXPECT_TRUE(compact.table.sockets.empty());
  EXPECT_EQ(compact.table.netns_config.count(ns().inode()), 1U);
  ASSERT_EQ(compact.compact.size(), table.table.sockets.size());
  for (std::size_t i = 0; i < table.table.sockets.size(); ++i) {
    EXPECT_EQ(describe(compact.compact.at(i)), describe(table.table.sockets[i]));
  }
  const SocketSnapshotter capped(SnapshotOptions{SnapshotMode::kBpfIterator, 3});
  const Snapshot few = capped.take({ns().path(), ns().inode()}, true);
  EXPECT_EQ(few.compact.size(), 3U);
  EXPECT_EQ(few.truncated, 5U);
}

std::size_t open_fds() {
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    static_cast<void>(entry);
    ++n;
  }
  return n;
}

// read_iterator() closes the iterator's fd on every path: a sink that throws (a decoding error,
// a full table) once leaked one fd per snapshot.
TEST_F(SnapshotKernelTest, IteratorReadClosesItsFdWhenTheSinkThrows) {
  auto skel = adopt_skeleton(snapshot_bpf__open_and_load(), &snapshot_bpf__destroy);
  if (!skel) {
    if (bpf_required()) {
      FAIL() << "PORTLENS_REQUIRE_BPF=1 but the snapshot programs could not load";
    }
    GTEST_SKIP() << "BPF unavailable";
  }
  const LinkPtr link(bpf_program__attach_iter(skel->progs.snapshot_tcp, nullptr));
  ASSERT_TRUE(link) << "cannot attach iter/tcp";
  // At least one record to throw on: a listener in the test's namespace (the iterator sees only
  // the calling thread's namespace).
  run_in_netns(NetnsRef{ns().path(), 0}, [&](std::uint64_t /*inode*/) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin), 0);
    ASSERT_EQ(listen(fd, 1), 0);
    const std::size_t before = open_fds();
    int records = 0;
    for (int round = 0; round < 50; ++round) {
      EXPECT_THROW(read_iterator(link.get(), "iter/tcp",
                                 [&](const pl_sock_record& /*record*/) {
                                   ++records;
                                   throw std::runtime_error("sink failed");
                                 }),
                   std::runtime_error);
    }
    EXPECT_EQ(records, 50);
    EXPECT_EQ(open_fds(), before) << "read_iterator leaked the iterator's fd";
    close(fd);
  });
}

}  // namespace
}  // namespace portlens::testing
