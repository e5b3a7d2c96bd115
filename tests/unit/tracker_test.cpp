#include "agent/tracker/tracker.hpp"

#include <cerrno>
#include <string>

#include <gtest/gtest.h>

namespace portlens {
namespace {

constexpr std::uint64_t kNetns = 4026531840;
constexpr std::uint64_t kSec = 1'000'000'000ULL;

Endpoint ep(const std::string& addr, std::uint16_t port) { return {*IpAddress::parse(addr), port}; }

// Builds events the way the BPF side reports them.
struct Ev {
  static Event call(EventType type, std::uint64_t sk, std::uint64_t ts, int result = 0) {
    Event e;
    e.type = type;
    e.sock_id = sk;
    e.ts_ns = ts;
    e.netns = kNetns;
    e.pid = 812;
    e.comm = "nginx";
    e.result = result;
    e.opts = SocketOptions{};
    e.sock_uid = 33;
    return e;
  }
  static Event bind(std::uint64_t sk, const Endpoint& local, std::uint64_t ts, int result = 0) {
    Event e = call(EventType::kBind, sk, ts, result);
    e.requested = local;
    e.local = result == 0 ? local : ep("0.0.0.0", 0);
    return e;
  }
  static Event connect(std::uint64_t sk, const Endpoint& local, const Endpoint& remote,
                       std::uint64_t ts, std::uint16_t enter_port = 0) {
    Event e = call(EventType::kConnect, sk, ts);
    e.pid = 4242;
    e.comm = "curl";
    e.local = local;
    e.requested = remote;
    e.enter_port = enter_port;
    return e;
  }
  static Event state(std::uint64_t sk, TcpState from, TcpState to, const Endpoint& local,
                     const Endpoint& remote, std::uint64_t ts) {
    Event e;
    e.type = EventType::kState;
    e.sock_id = sk;
    e.ts_ns = ts;
    e.netns = kNetns;
    e.pid = 1;  // softirq: whoever ran, never the owner
    e.comm = "ksoftirqd/0";
    e.old_state = static_cast<int>(from);
    e.new_state = static_cast<int>(to);
    e.local = local;
    e.remote = remote;
    e.opts = SocketOptions{};
    e.timestamps = true;
    return e;
  }
  static Event sk_event(EventType type, std::uint64_t sk, std::uint64_t ts) {
    Event e;
    e.type = type;
    e.sock_id = sk;
    e.ts_ns = ts;
    e.netns = kNetns;
    return e;
  }
};

const SocketEntry* find_state(const SocketTable& t, TcpState state) {
  for (const auto& s : t.sockets) {
    if (s.state == state) {
      return &s;
    }
  }
  return nullptr;
}

// A client connection from 127.0.0.1:40000 to 127.0.0.1:80, closed by the client first.
void active_close(SocketTracker& t, std::uint64_t sk, std::uint64_t ts, bool reset = false) {
  const Endpoint l = ep("127.0.0.1", 40000);
  const Endpoint r = ep("127.0.0.1", 80);
  t.apply(Ev::state(sk, TcpState::kClose, TcpState::kSynSent, ep("127.0.0.1", 0), r, ts));
  t.apply(Ev::state(sk, TcpState::kSynSent, TcpState::kEstablished, l, r, ts));
  t.apply(Ev::connect(sk, l, r, ts));
  t.apply(Ev::state(sk, TcpState::kEstablished, TcpState::kFinWait1, l, r, ts + 1));
  t.apply(Ev::state(sk, TcpState::kFinWait1, TcpState::kFinWait2, l, r, ts + 2));
  if (reset) {
    t.apply(Ev::sk_event(EventType::kReset, sk, ts + 3));
  }
  t.apply(Ev::state(sk, TcpState::kFinWait2, TcpState::kClose, l, r, ts + 4));
}

TEST(SocketTrackerTest, SuccessfulBindIsABoundOwnerWithItsCaller) {
  SocketTracker t;
  Event b = Ev::bind(0x10, ep("0.0.0.0", 8080), kSec);
  b.opts->reuseaddr = true;
  t.apply(b);
  const SocketTable table = t.table(kNetns, kSec);
  ASSERT_EQ(table.sockets.size(), 1U);
  const SocketEntry& s = table.sockets[0];
  EXPECT_EQ(s.state, TcpState::kClose);
  EXPECT_TRUE(s.explicit_port);
  EXPECT_EQ(s.local, ep("0.0.0.0", 8080));
  EXPECT_EQ(s.reuseaddr, true);
  EXPECT_EQ(s.uid, 33U);
  ASSERT_TRUE(s.owner.has_value());
  EXPECT_EQ(s.owner->pid, 812U);
  EXPECT_EQ(s.owner->comm, "nginx");
}

// The kernel hands a freed socket's address to the next socket at once. A socket the tracker
// still holds (its destroy predates the trace, or it came from a snapshot) and a new one at the
// same address are two sockets: a call from another namespace, or a second successful bind(),
// starts a new one, and the new one's history begins with that call.
TEST(SocketTrackerTest, ARecycledSocketAddressIsANewSocket) {
  SocketTracker t;
  constexpr std::uint64_t kOtherNetns = kNetns + 1;
  SocketTable snapshot;
  SocketEntry stale;
  stale.proto = Proto::kTcp;
  stale.state = TcpState::kListen;
  stale.local = ep("127.0.0.1", 9000);
  stale.netns = kOtherNetns;
  stale.sock_id = 0x10;
  snapshot.sockets.push_back(stale);
  t.bootstrap(kOtherNetns, snapshot, kSec);
  // A new socket at that address binds in kNetns, then fails a neighbour's bind and closes.
  t.apply(Ev::bind(0x10, ep("127.0.0.1", 7250), 2 * kSec));
  t.apply(Ev::sk_event(EventType::kDestroy, 0x10, 2 * kSec + 20));
  const SocketTable at_failure = t.table_at(kNetns, 2 * kSec + 10, 3 * kSec, 7250);
  ASSERT_EQ(at_failure.sockets.size(), 1U);
  EXPECT_EQ(at_failure.sockets[0].netns, kNetns);
  EXPECT_EQ(at_failure.sockets[0].local, ep("127.0.0.1", 7250));
  EXPECT_TRUE(t.table(kOtherNetns, 3 * kSec).sockets.empty()) << "the old one is gone";
  // The old one still counts for a moment before the new one took its address.
  EXPECT_EQ(t.table_at(kOtherNetns, kSec + 1, 3 * kSec, 9000).sockets.size(), 1U);

  // A second successful bind() on an address already bound is another socket too.
  t.apply(Ev::bind(0x20, ep("0.0.0.0", 8080), 4 * kSec));
  t.apply(Ev::bind(0x20, ep("0.0.0.0", 8081), 5 * kSec));
  EXPECT_TRUE(t.table_at(kNetns, 4 * kSec + 1, 6 * kSec, 8081).sockets.empty())
      << "the socket on 8081 did not exist yet";
  EXPECT_EQ(t.table_at(kNetns, 4 * kSec + 1, 6 * kSec, 8080).sockets.size(), 1U);
  EXPECT_EQ(t.table(kNetns, 6 * kSec).sockets.size(), 1U);
}

TEST(SocketTrackerTest, FailedCallsChangeNothing) {
  SocketTracker t;
  t.apply(Ev::bind(0x10, ep("0.0.0.0", 8080), kSec, -EADDRINUSE));
  Event c = Ev::connect(0x11, ep("0.0.0.0", 0), ep("10.0.0.1", 80), kSec);
  c.result = -EADDRNOTAVAIL;
  t.apply(c);
  EXPECT_EQ(t.socket_count(), 0U);
}

TEST(SocketTrackerTest, UdpBindHasNoTcpState) {
  SocketTracker t;
  Event b = Ev::bind(0x10, ep("0.0.0.0", 53), kSec);
  b.proto = Proto::kUdp;
  t.apply(b);
  EXPECT_FALSE(t.table(kNetns, kSec).sockets.at(0).state.has_value());
}

TEST(SocketTrackerTest, ActiveCloseInfersTimeWaitWithOwnerAndSixtySeconds) {
  SocketTracker t;
  active_close(t, 0x20, 10 * kSec);
  EXPECT_EQ(t.socket_count(), 0U);  // the full socket is gone; its port was connect()'s
  ASSERT_EQ(t.time_wait_count(), 1U);
  const SocketTable table = t.table(kNetns, 10 * kSec + 4 + 15 * kSec);
  const SocketEntry* tw = find_state(table, TcpState::kTimeWait);
  ASSERT_NE(tw, nullptr);
  EXPECT_EQ(tw->local, ep("127.0.0.1", 40000));
  EXPECT_EQ(tw->remote, ep("127.0.0.1", 80));
  EXPECT_EQ(tw->time_wait_substate, TcpState::kTimeWait);
  EXPECT_EQ(tw->timestamps, true);
  EXPECT_EQ(tw->inode, 0U);
  EXPECT_EQ(tw->time_wait_remaining, std::chrono::milliseconds(45'000));
  ASSERT_TRUE(tw->owner.has_value());
  EXPECT_EQ(tw->owner->comm, "curl");  // from connect(), not from the softirq state events
  EXPECT_EQ(t.counters().time_wait_inferred, 1U);
}

TEST(SocketTrackerTest, ClosingToCloseAlsoMakesTimeWait) {
  SocketTracker t;
  const Endpoint l = ep("127.0.0.1", 40001);
  const Endpoint r = ep("127.0.0.1", 80);
  t.apply(Ev::connect(0x21, l, r, kSec));
  t.apply(Ev::state(0x21, TcpState::kClosing, TcpState::kClose, l, r, 2 * kSec));
  EXPECT_EQ(t.time_wait_count(), 1U);
}

TEST(SocketTrackerTest, ResetBeforeCloseMeansNoTimeWait) {
  SocketTracker t;
  active_close(t, 0x22, kSec, /*reset=*/true);
  EXPECT_EQ(t.time_wait_count(), 0U);
  EXPECT_EQ(t.counters().resets_seen, 1U);
}

TEST(SocketTrackerTest, TimeWaitExpiresAfterSixtySecondsNotBefore) {
  SocketTracker t;
  active_close(t, 0x23, kSec);
  t.expire(kSec + 59 * kSec);
  EXPECT_EQ(t.time_wait_count(), 1U);
  t.expire(kSec + 4 + 60 * kSec);
  EXPECT_EQ(t.time_wait_count(), 0U);
  EXPECT_EQ(t.counters().time_wait_expired, 1U);
}

TEST(SocketTrackerTest, NewConnectionOnTheSameFourTupleTakesOverTheTimeWait) {
  SocketTracker t;
  active_close(t, 0x24, kSec);
  ASSERT_EQ(t.time_wait_count(), 1U);
  const Endpoint l = ep("127.0.0.1", 40000);
  const Endpoint r = ep("127.0.0.1", 80);
  t.apply(Ev::state(0x25, TcpState::kSynSent, TcpState::kEstablished, l, r, 3 * kSec));
  EXPECT_EQ(t.time_wait_count(), 0U);
  EXPECT_EQ(t.counters().time_wait_reused, 1U);
}

TEST(SocketTrackerTest, AcceptedChildrenInheritTheListenersOwnerIntoTimeWait) {
  SocketTracker t;
  Event b = Ev::bind(0x30, ep("0.0.0.0", 80), kSec);
  t.apply(b);
  t.apply(Ev::state(0x30, TcpState::kClose, TcpState::kListen, ep("0.0.0.0", 80), ep("0.0.0.0", 0),
                    kSec));
  Event l = Ev::call(EventType::kListen, 0x30, kSec);
  l.local = ep("0.0.0.0", 80);
  t.apply(l);
  const Endpoint local = ep("127.0.0.1", 80);
  const Endpoint peer = ep("127.0.0.1", 51000);
  // The child: LISTEN->SYN_RECV on its own address, then the server closes first.
  t.apply(Ev::state(0x31, TcpState::kListen, TcpState::kSynRecv, local, peer, 2 * kSec));
  t.apply(Ev::state(0x31, TcpState::kSynRecv, TcpState::kEstablished, local, peer, 2 * kSec));
  t.apply(Ev::state(0x31, TcpState::kEstablished, TcpState::kFinWait1, local, peer, 3 * kSec));
  t.apply(Ev::state(0x31, TcpState::kFinWait1, TcpState::kFinWait2, local, peer, 3 * kSec));
  t.apply(Ev::state(0x31, TcpState::kFinWait2, TcpState::kClose, local, peer, 3 * kSec));
  const SocketTable table = t.table(kNetns, 4 * kSec);
  const SocketEntry* tw = find_state(table, TcpState::kTimeWait);
  ASSERT_NE(tw, nullptr);
  ASSERT_TRUE(tw->owner.has_value());
  EXPECT_EQ(tw->owner->pid, 812U);
  EXPECT_EQ(tw->owner->comm, "nginx");
  // The listener itself is untouched by its child's transitions.
  const SocketEntry* listener = find_state(table, TcpState::kListen);
  ASSERT_NE(listener, nullptr);
  EXPECT_EQ(listener->local, ep("0.0.0.0", 80));
}

TEST(SocketTrackerTest, ExplicitlyBoundSocketKeepsItsPortAfterCloseUntilDestroyed) {
  SocketTracker t;
  const Endpoint l = ep("127.0.0.1", 7000);
  const Endpoint r = ep("127.0.0.1", 80);
  t.apply(Ev::bind(0x40, l, kSec));
  t.apply(Ev::connect(0x40, l, r, kSec, /*enter_port=*/7000));
  t.apply(Ev::state(0x40, TcpState::kEstablished, TcpState::kClose, l, r, 2 * kSec));
  ASSERT_EQ(t.socket_count(), 1U);  // tcp_set_state(CLOSE) keeps a SOCK_BINDPORT_LOCK port
  EXPECT_EQ(t.table(kNetns, 2 * kSec).sockets[0].state, TcpState::kClose);
  t.apply(Ev::sk_event(EventType::kDestroy, 0x40, 3 * kSec));
  EXPECT_EQ(t.socket_count(), 0U);
}

TEST(SocketTrackerTest, FailedListenLeavesTheSocketBound) {
  SocketTracker t;
  const Endpoint l = ep("127.0.0.1", 6000);
  t.apply(Ev::bind(0x41, l, kSec));
  // inet_csk_listen_start(): CLOSE->LISTEN, get_port fails, LISTEN->CLOSE, then -EADDRINUSE.
  t.apply(Ev::state(0x41, TcpState::kClose, TcpState::kListen, l, ep("0.0.0.0", 0), kSec));
  t.apply(Ev::state(0x41, TcpState::kListen, TcpState::kClose, l, ep("0.0.0.0", 0), kSec));
  Event failed = Ev::call(EventType::kListen, 0x41, kSec, -EADDRINUSE);
  t.apply(failed);
  const SocketTable table = t.table(kNetns, kSec);
  ASSERT_EQ(table.sockets.size(), 1U);
  EXPECT_EQ(table.sockets[0].state, TcpState::kClose);
  EXPECT_EQ(table.sockets[0].local, l);
}

TEST(SocketTrackerTest, DestroyForgetsABoundOnlySocket) {
  SocketTracker t;
  t.apply(Ev::bind(0x42, ep("127.0.0.1", 4100), kSec));
  t.apply(Ev::sk_event(EventType::kDestroy, 0x42, 2 * kSec));
  EXPECT_EQ(t.socket_count(), 0U);
}

TEST(SocketTrackerTest, TablesAreCappedAndDropsCounted) {
  TrackerLimits limits;
  limits.max_sockets = 2;
  limits.max_time_wait = 1;
  SocketTracker t(limits);
  for (std::uint64_t sk = 1; sk <= 3; ++sk) {
    t.apply(Ev::bind(sk, ep("127.0.0.1", static_cast<std::uint16_t>(1000 + sk)), kSec));
  }
  EXPECT_EQ(t.socket_count(), 2U);
  EXPECT_EQ(t.counters().sockets_dropped, 1U);
  for (std::uint64_t sk = 1; sk <= 3; ++sk) {
    t.apply(Ev::sk_event(EventType::kDestroy, sk, kSec));
  }
  const Endpoint r = ep("127.0.0.1", 80);
  for (std::uint16_t port = 40000; port < 40003; ++port) {
    t.apply(Ev::state(port, TcpState::kFinWait2, TcpState::kClose, ep("127.0.0.1", port), r, kSec));
  }
  EXPECT_EQ(t.time_wait_count(), 1U);
  EXPECT_EQ(t.counters().time_wait_dropped, 2U);
}

SocketEntry snapshot_socket(std::uint64_t sk, TcpState state, const Endpoint& local) {
  SocketEntry s;
  s.proto = Proto::kTcp;
  s.state = state;
  s.local = local;
  s.netns = kNetns;
  s.sock_id = sk;
  s.inode = sk + 1000;
  s.reuseaddr = false;
  s.reuseport = false;
  return s;
}

TEST(SocketTrackerTest, ReconcileCountsEachKindOfCorrection) {
  SocketTracker t;
  t.apply(Ev::bind(0x50, ep("127.0.0.1", 5000), kSec));  // still there, but now LISTEN
  t.apply(Ev::bind(0x51, ep("127.0.0.1", 5001), kSec));  // closed without an event we saw
  active_close(t, 0x52, kSec);                           // TIME_WAIT the kernel killed early
  SocketTable snap;
  snap.sockets.push_back(snapshot_socket(0x50, TcpState::kListen, ep("127.0.0.1", 5000)));
  snap.sockets.push_back(snapshot_socket(0x53, TcpState::kListen, ep("127.0.0.1", 5003)));
  SocketEntry tw = snapshot_socket(0, TcpState::kTimeWait, ep("127.0.0.1", 41000));
  tw.inode = 0;
  tw.remote = ep("127.0.0.1", 80);
  tw.time_wait_remaining = std::chrono::milliseconds(30'000);
  snap.sockets.push_back(tw);

  t.reconcile(kNetns, snap, 5 * kSec);
  const auto& c = t.counters().corrections;
  EXPECT_EQ(c.at("socket_state"), 1U);
  EXPECT_EQ(c.at("socket_stale"), 1U);
  EXPECT_EQ(c.at("socket_missing"), 1U);
  EXPECT_EQ(c.at("time_wait_stale"), 1U);
  EXPECT_EQ(c.at("time_wait_missing"), 1U);
  EXPECT_EQ(t.socket_count(), 2U);
  EXPECT_EQ(t.time_wait_count(), 1U);
  // The snapshot's timer wins: 30 s left at 5 s means expiry at 35 s.
  const SocketTable table = t.table(kNetns, 20 * kSec);
  EXPECT_EQ(find_state(table, TcpState::kTimeWait)->time_wait_remaining,
            std::chrono::milliseconds(15'000));
  // The owner the events named survives the merge (the snapshot had none).
  for (const auto& s : table.sockets) {
    if (s.sock_id == 0x50) {
      ASSERT_TRUE(s.owner.has_value());
      EXPECT_EQ(s.owner->comm, "nginx");
    }
  }
}

TEST(SocketTrackerTest, BootstrapFillsTheTableWithoutCountingCorrections) {
  SocketTracker t;
  SocketTable snap;
  snap.sockets.push_back(snapshot_socket(0xa0, TcpState::kListen, ep("0.0.0.0", 80)));
  SocketEntry tw = snapshot_socket(0, TcpState::kTimeWait, ep("127.0.0.1", 80));
  tw.remote = ep("127.0.0.1", 41000);
  snap.sockets.push_back(tw);
  t.bootstrap(kNetns, snap, kSec);
  EXPECT_EQ(t.socket_count(), 1U);
  EXPECT_EQ(t.time_wait_count(), 1U);
  EXPECT_TRUE(t.counters().corrections.empty());
  t.reconcile(kNetns, SocketTable{}, 2 * kSec);  // later looks do count
  EXPECT_EQ(t.counters().corrections.at("socket_stale"), 1U);
  EXPECT_EQ(t.counters().corrections.at("time_wait_stale"), 1U);
}

TEST(SocketTrackerTest, ReconcileLeavesWhatHappenedAfterTheSnapshot) {
  SocketTracker t;
  t.apply(Ev::bind(0x60, ep("127.0.0.1", 6000), 10 * kSec));
  t.reconcile(kNetns, SocketTable{}, 9 * kSec);  // the snapshot predates the bind
  EXPECT_EQ(t.socket_count(), 1U);
  EXPECT_TRUE(t.counters().corrections.empty());
}

// The agent applies the events that arrived during a snapshot before merging it: what they
// removed in the meantime is still in the snapshot, and must not come back.
TEST(SocketTrackerTest, ReconcileDoesNotReviveSocketsClosedWhileTheSnapshotRan) {
  SocketTracker t;
  t.apply(Ev::bind(0x90, ep("127.0.0.1", 9000), kSec));
  SocketTable snap;  // taken from 5 s, while the socket still existed
  snap.sockets.push_back(snapshot_socket(0x90, TcpState::kClose, ep("127.0.0.1", 9000)));
  t.apply(Ev::sk_event(EventType::kDestroy, 0x90, 6 * kSec));
  t.reconcile(kNetns, snap, 5 * kSec);
  EXPECT_EQ(t.socket_count(), 0U);
  EXPECT_TRUE(t.counters().corrections.empty());
  // A socket closed before the snapshot began is a different matter: the snapshot is right.
  t.apply(Ev::bind(0x91, ep("127.0.0.1", 9001), 7 * kSec));
  t.apply(Ev::sk_event(EventType::kDestroy, 0x91, 8 * kSec));
  SocketTable later;
  later.sockets.push_back(snapshot_socket(0x91, TcpState::kClose, ep("127.0.0.1", 9001)));
  t.reconcile(kNetns, later, 9 * kSec);
  EXPECT_EQ(t.socket_count(), 1U);
  EXPECT_EQ(t.counters().corrections.at("socket_missing"), 1U);
}

TEST(SocketTrackerTest, ReconcileDoesNotReviveTimeWaitsExpiredWhileTheSnapshotRan) {
  SocketTracker t;
  active_close(t, 0x92, kSec);  // TIME_WAIT until about 61 s
  ASSERT_EQ(t.time_wait_count(), 1U);
  SocketTable snap;  // taken from 60.5 s, with half a second left on the timer
  SocketEntry tw = snapshot_socket(0, TcpState::kTimeWait, ep("127.0.0.1", 40000));
  tw.inode = 0;
  tw.remote = ep("127.0.0.1", 80);
  tw.time_wait_remaining = std::chrono::milliseconds(500);
  snap.sockets.push_back(tw);
  t.expire(62 * kSec);
  ASSERT_EQ(t.time_wait_count(), 0U);
  t.reconcile(kNetns, snap, 60 * kSec + kSec / 2);
  EXPECT_EQ(t.time_wait_count(), 0U);
  EXPECT_TRUE(t.counters().corrections.empty());
}

// The agent merges a big snapshot a slice at a time, applying events in between.
SocketTable mixed_snapshot() {
  SocketTable snap;
  snap.sockets.push_back(snapshot_socket(0xb0, TcpState::kListen, ep("127.0.0.1", 5100)));
  snap.sockets.push_back(snapshot_socket(0xb3, TcpState::kListen, ep("127.0.0.1", 5103)));
  for (std::uint16_t port = 41000; port < 41003; ++port) {
    SocketEntry tw = snapshot_socket(0, TcpState::kTimeWait, ep("127.0.0.1", port));
    tw.inode = 0;
    tw.remote = ep("127.0.0.1", 80);
    tw.time_wait_remaining = std::chrono::milliseconds(30'000);
    snap.sockets.push_back(tw);
  }
  return snap;
}

void mixed_events(SocketTracker& t) {
  t.apply(Ev::bind(0xb0, ep("127.0.0.1", 5100), kSec));  // LISTEN in the snapshot
  t.apply(Ev::bind(0xb1, ep("127.0.0.1", 5101), kSec));  // gone from the snapshot
  active_close(t, 0xb2, kSec);                           // a TIME_WAIT the snapshot lacks
}

TEST(SocketTrackerTest, MergingInSlicesEndsAsMergingAtOnce) {
  const SocketTable snap = mixed_snapshot();
  SocketTracker whole;
  mixed_events(whole);
  whole.reconcile(kNetns, snap, 5 * kSec);
  SocketTracker sliced;
  mixed_events(sliced);
  sliced.begin_merge(kNetns, snap, 5 * kSec);
  std::size_t calls = 1;
  while (!sliced.merge_some(1)) {
    ++calls;
  }
  EXPECT_EQ(calls, snap.sockets.size());
  EXPECT_EQ(sliced.counters().corrections, whole.counters().corrections);
  EXPECT_EQ(sliced.socket_count(), whole.socket_count());
  EXPECT_EQ(sliced.time_wait_count(), whole.time_wait_count());
  EXPECT_EQ(sliced.table(kNetns, 20 * kSec).sockets.size(),
            whole.table(kNetns, 20 * kSec).sockets.size());
  EXPECT_TRUE(sliced.merge_some(1));  // nothing under way: done at once
}

TEST(SocketTrackerTest, EventsBetweenSlicesAreNotUndoneByTheRestOfTheMerge) {
  const SocketTable snap = mixed_snapshot();  // 0xb0 first, then 0xb3, then TIME_WAITs
  SocketTracker t;
  t.apply(Ev::bind(0xb0, ep("127.0.0.1", 5100), kSec));
  t.apply(Ev::bind(0xb3, ep("127.0.0.1", 5103), kSec));
  t.begin_merge(kNetns, snap, 5 * kSec);
  ASSERT_FALSE(t.merge_some(1));                               // 0xb0 merged
  t.apply(Ev::sk_event(EventType::kDestroy, 0xb3, 6 * kSec));  // closed since the snapshot
  t.apply(Ev::bind(0xb4, ep("127.0.0.1", 5104), 6 * kSec));    // made since the snapshot
  while (!t.merge_some(1)) {
  }
  const SocketTable table = t.table(kNetns, 7 * kSec);
  const auto has = [&](std::uint64_t sk) {
    return std::any_of(table.sockets.begin(), table.sockets.end(),
                       [sk](const SocketEntry& e) { return e.sock_id == sk; });
  };
  EXPECT_TRUE(has(0xb0));
  EXPECT_FALSE(has(0xb3)) << "revived by a later slice";
  EXPECT_TRUE(has(0xb4)) << "removed as stale though newer than the snapshot";
  EXPECT_EQ(t.time_wait_count(), 3U);
  const auto corrections = [&t](const char* kind) {
    const auto it = t.counters().corrections.find(kind);
    return it == t.counters().corrections.end() ? 0U : it->second;
  };
  EXPECT_EQ(corrections("time_wait_missing"), 3U);
  EXPECT_EQ(corrections("socket_missing"), 0U);
  EXPECT_EQ(corrections("socket_stale"), 0U);
}

TEST(SocketTrackerTest, ReconcileOnlyTouchesItsNamespace) {
  SocketTracker t;
  Event other = Ev::bind(0x70, ep("127.0.0.1", 7000), kSec);
  other.netns = kNetns + 1;
  t.apply(other);
  t.reconcile(kNetns, SocketTable{}, 5 * kSec);
  EXPECT_EQ(t.socket_count(), 1U);
}

TEST(SocketTrackerTest, AttributeFillsOwnersOfAFreshSnapshot) {
  SocketTracker t;
  active_close(t, 0x80, kSec);
  t.apply(Ev::bind(0x81, ep("127.0.0.1", 8100), kSec));
  SocketTable snap;
  SocketEntry tw = snapshot_socket(0, TcpState::kTimeWait, ep("127.0.0.1", 40000));
  tw.remote = ep("127.0.0.1", 80);
  snap.sockets.push_back(tw);
  snap.sockets.push_back(snapshot_socket(0x81, TcpState::kClose, ep("127.0.0.1", 8100)));
  t.attribute(snap);
  ASSERT_TRUE(snap.sockets[0].owner.has_value());
  EXPECT_EQ(snap.sockets[0].owner->comm, "curl");
  ASSERT_TRUE(snap.sockets[1].owner.has_value());
  EXPECT_EQ(snap.sockets[1].owner->comm, "nginx");
}

TEST(SocketTrackerTest, TableAtSeesTheSocketsOfThatMomentIncludingOnesRemovedSince) {
  SocketTracker t;
  t.apply(Ev::bind(0xb0, ep("0.0.0.0", 80), 1 * kSec));        // before the call
  t.apply(Ev::sk_event(EventType::kDestroy, 0xb0, 5 * kSec));  // gone after it
  t.apply(Ev::bind(0xb1, ep("127.0.0.1", 80), 4 * kSec));      // born after the call
  active_close(t, 0xb2, 1 * kSec);                             // TIME_WAIT from ~1 s
  const SocketTable at_call = t.table_at(kNetns, 3 * kSec, 6 * kSec);
  ASSERT_EQ(at_call.sockets.size(), 2U);
  EXPECT_EQ(at_call.sockets[0].state == TcpState::kTimeWait ? at_call.sockets[1].sock_id
                                                            : at_call.sockets[0].sock_id,
            0xb0U);
  EXPECT_EQ(t.table_at(kNetns, 6 * kSec, 6 * kSec).sockets.size(), 2U);  // 0xb1 and the TW
  EXPECT_EQ(t.first_seen(t.table(kNetns, 6 * kSec).sockets[0]).has_value(), true);
}

TEST(SocketTrackerTest, TableAtTellsTheStateASocketHadThen) {
  SocketTracker t;
  const Endpoint l = ep("127.0.0.1", 80);
  const Endpoint r = ep("127.0.0.1", 51000);
  t.apply(Ev::state(0xd0, TcpState::kListen, TcpState::kSynRecv, l, r, 1 * kSec));
  t.apply(Ev::state(0xd0, TcpState::kSynRecv, TcpState::kEstablished, l, r, 1 * kSec));
  // After the call at 3 s the server closes first: FIN_WAIT1, FIN_WAIT2, then CLOSE.
  t.apply(Ev::state(0xd0, TcpState::kEstablished, TcpState::kFinWait1, l, r, 4 * kSec));
  t.apply(Ev::state(0xd0, TcpState::kFinWait1, TcpState::kFinWait2, l, r, 4 * kSec));
  const SocketTable live = t.table_at(kNetns, 3 * kSec, 5 * kSec);
  ASSERT_EQ(live.sockets.size(), 1U);
  EXPECT_EQ(live.sockets[0].state, TcpState::kEstablished);
  t.apply(Ev::state(0xd0, TcpState::kFinWait2, TcpState::kClose, l, r, 5 * kSec));
  const SocketTable gone = t.table_at(kNetns, 3 * kSec, 6 * kSec);
  ASSERT_EQ(gone.sockets.size(), 1U);  // the tombstone, not the later TIME_WAIT
  EXPECT_EQ(gone.sockets[0].state, TcpState::kEstablished);
  EXPECT_EQ(t.table_at(kNetns, 4 * kSec + 1, 6 * kSec).sockets[0].state, TcpState::kFinWait2);
}

TEST(SocketTrackerTest, TableAtCanKeepJustOnePort) {
  SocketTracker t;
  t.apply(Ev::bind(0xe0, ep("0.0.0.0", 80), kSec));
  t.apply(Ev::bind(0xe1, ep("0.0.0.0", 81), kSec));
  t.apply(Ev::bind(0xe2, ep("127.0.0.1", 80), kSec));
  t.apply(Ev::sk_event(EventType::kDestroy, 0xe2, 3 * kSec));  // a tombstone on port 80
  const SocketTable port80 = t.table_at(kNetns, 2 * kSec, 4 * kSec, 80);
  ASSERT_EQ(port80.sockets.size(), 2U);
  for (const auto& s : port80.sockets) {
    EXPECT_EQ(s.local.port, 80);
  }
  EXPECT_EQ(t.table_at(kNetns, 2 * kSec, 4 * kSec).sockets.size(), 3U);
}

TEST(SocketTrackerTest, FirstSeenTellsWhatCameAfterACall) {
  SocketTracker t;
  t.apply(Ev::bind(0xc0, ep("127.0.0.1", 80), 7 * kSec));
  SocketEntry snap = snapshot_socket(0xc0, TcpState::kClose, ep("127.0.0.1", 80));
  EXPECT_EQ(t.first_seen(snap), 7 * kSec);
  EXPECT_FALSE(t.first_seen(snapshot_socket(0xc1, TcpState::kClose, ep("127.0.0.1", 81))));
  // A TIME_WAIT is known by its 4-tuple, from the moment the close made it.
  active_close(t, 0xc2, 8 * kSec);
  SocketEntry tw = snapshot_socket(0, TcpState::kTimeWait, ep("127.0.0.1", 40000));
  tw.remote = ep("127.0.0.1", 80);
  EXPECT_EQ(t.first_seen(tw), 8 * kSec + 4);
}

TEST(SocketTrackerTest, TombstonesAreBoundedAndExpire) {
  TrackerLimits limits;
  limits.max_tombstones = 3;
  SocketTracker t(limits);
  for (std::uint64_t sk = 1; sk <= 5; ++sk) {
    t.apply(Ev::bind(sk, ep("127.0.0.1", static_cast<std::uint16_t>(2000 + sk)), kSec));
    t.apply(Ev::sk_event(EventType::kDestroy, sk, 2 * kSec));
  }
  EXPECT_EQ(t.table_at(kNetns, kSec + 1, 2 * kSec).sockets.size(), 3U);  // the cap
  t.apply(Ev::bind(9, ep("127.0.0.1", 3000), 20 * kSec));  // 18 s later: all forgotten
  t.apply(Ev::sk_event(EventType::kDestroy, 9, 20 * kSec));
  EXPECT_EQ(t.table_at(kNetns, kSec + 1, 20 * kSec).sockets.size(), 0U);
}

// After the last erase, time alone ends the tombstones: a burst's last ones do not stay.
TEST(SocketTrackerTest, TombstonesEndWithTimeWithoutAnotherErase) {
  SocketTracker t;
  for (std::uint64_t sk = 1; sk <= 5; ++sk) {
    t.apply(Ev::bind(sk, ep("127.0.0.1", static_cast<std::uint16_t>(2000 + sk)), kSec));
    t.apply(Ev::sk_event(EventType::kDestroy, sk, 2 * kSec));
  }
  t.expire(5 * kSec);
  EXPECT_EQ(t.table_at(kNetns, kSec + 1, 5 * kSec).sockets.size(), 5U);  // within 10 s: kept
  t.expire(13 * kSec);
  EXPECT_EQ(t.table_at(kNetns, kSec + 1, 13 * kSec).sockets.size(), 0U);
}

// A TIME_WAIT on 127.0.(i/250).(i%250+1):(10000+i%50000) -> 127.0.0.1:80, made at ts.
void time_wait_number(SocketTracker& t, std::uint64_t i, std::uint64_t ts) {
  const std::string local =
      "127.0." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250 + 1);
  t.apply(Ev::state(0x100000 + i, TcpState::kFinWait2, TcpState::kClose,
                    ep(local, static_cast<std::uint16_t>(10000 + i % 50000)), ep("127.0.0.1", 80),
                    ts));
}

// After a burst the tables give their capacity back, and what they still hold is the same:
// found, listed and expired on time.
TEST(SocketTrackerTest, ReleaseMemoryAfterABurstKeepsWhatRemains) {
  SocketTracker t;
  constexpr std::uint64_t kBurst = 40'000;
  constexpr std::uint64_t kKept = 1'000;
  for (std::uint64_t i = 0; i < kBurst; ++i) {
    time_wait_number(t, i, i < kBurst - kKept ? kSec : 30 * kSec);
  }
  for (std::uint64_t sk = 1; sk <= 20'000; ++sk) {  // full sockets that come and go
    t.apply(Ev::bind(sk, ep("127.0.0.1", static_cast<std::uint16_t>(20000 + sk)), 2 * kSec));
  }
  ASSERT_EQ(t.time_wait_count(), kBurst);
  EXPECT_EQ(t.release_memory(), 0U);  // full: nothing to give back
  for (std::uint64_t sk = 1; sk <= 20'000; ++sk) {
    t.apply(Ev::sk_event(EventType::kDestroy, sk, 3 * kSec));
  }
  t.expire(62 * kSec);
  ASSERT_EQ(t.time_wait_count(), kKept);
  const std::uint64_t released = t.release_memory();
  // The TIME_WAIT slots alone held ~40k records of tens of bytes each.
  EXPECT_GT(released, 1'000'000U);
  EXPECT_EQ(t.release_memory(), 0U);  // nothing more to give

  const SocketTable after = t.table(kNetns, 62 * kSec);
  ASSERT_EQ(after.sockets.size(), kKept);
  for (const auto& s : after.sockets) {
    EXPECT_EQ(s.state, TcpState::kTimeWait);
    EXPECT_EQ(t.first_seen(s), 30 * kSec);
  }
  // A TIME_WAIT still held is found again on its 4-tuple (re-armed, not a second one).
  time_wait_number(t, kBurst - 1, 62 * kSec);
  EXPECT_EQ(t.time_wait_count(), kKept);
  time_wait_number(t, kBurst, 62 * kSec);  // a new one
  EXPECT_EQ(t.time_wait_count(), kKept + 1);
  t.expire(91 * kSec);  // the kept ones end at 90 s, the re-armed and the new one at 122 s
  EXPECT_EQ(t.time_wait_count(), 2U);
  t.expire(123 * kSec);
  EXPECT_EQ(t.time_wait_count(), 0U);
}

TEST(SocketTrackerTest, MappedAndPlainIpv4AreOneFourTuple) {
  SocketTracker t;
  t.apply(Ev::state(0x90, TcpState::kFinWait2, TcpState::kClose, ep("::ffff:127.0.0.1", 40000),
                    ep("::ffff:127.0.0.1", 80), kSec));
  ASSERT_EQ(t.time_wait_count(), 1U);
  t.apply(Ev::state(0x91, TcpState::kSynSent, TcpState::kEstablished, ep("127.0.0.1", 40000),
                    ep("127.0.0.1", 80), 2 * kSec));
  EXPECT_EQ(t.time_wait_count(), 0U);
}

}  // namespace
}  // namespace portlens

namespace portlens {
namespace {

// How connections end, as portlens_tcp_closes_total counts them (CloseKind).
CloseCounts closes_of(const SocketTracker& t) {
  const auto it = t.counters().closes.find(kNetns);
  return it == t.counters().closes.end() ? CloseCounts{} : it->second;
}
std::uint64_t count_of(const SocketTracker& t, CloseKind kind) {
  return closes_of(t)[static_cast<std::size_t>(kind)];
}

TEST(SocketTrackerCloseTest, EachWayAConnectionEndsHasItsKind) {
  SocketTracker t;
  const Endpoint l = ep("127.0.0.1", 40000);
  const Endpoint r = ep("127.0.0.1", 80);
  active_close(t, 0x1, kSec);  // FIN_WAIT2 -> CLOSE: a TIME_WAIT
  EXPECT_EQ(count_of(t, CloseKind::kFinTimeWait), 1U);
  active_close(t, 0x2, 2 * kSec, /*reset=*/true);  // an RST received in FIN_WAIT2: none
  EXPECT_EQ(count_of(t, CloseKind::kRstReceived), 1U);
  EXPECT_EQ(count_of(t, CloseKind::kFinTimeWait), 1U);
  // The passive side: CLOSE_WAIT -> LAST_ACK -> CLOSE.
  t.apply(Ev::state(0x3, TcpState::kEstablished, TcpState::kCloseWait, r, l, 3 * kSec));
  t.apply(Ev::state(0x3, TcpState::kCloseWait, TcpState::kLastAck, r, l, 3 * kSec));
  t.apply(Ev::state(0x3, TcpState::kLastAck, TcpState::kClose, r, l, 3 * kSec));
  EXPECT_EQ(count_of(t, CloseKind::kFinNoTimeWait), 1U);
  // SO_LINGER 0: tcp_disconnect() sets CLOSE, then sends the RST.
  t.apply(Ev::state(0x4, TcpState::kEstablished, TcpState::kClose, l, r, 4 * kSec));
  EXPECT_EQ(count_of(t, CloseKind::kRstSent), 0U) << "not before its RST is seen";
  t.apply(Ev::sk_event(EventType::kResetSent, 0x4, 4 * kSec));
  t.apply(Ev::sk_event(EventType::kDestroy, 0x4, 4 * kSec));
  EXPECT_EQ(count_of(t, CloseKind::kRstSent), 1U);
  EXPECT_EQ(count_of(t, CloseKind::kOther), 0U);
  // tcp_abort(): the RST first, its close after.
  t.apply(Ev::sk_event(EventType::kResetSent, 0x5, 5 * kSec));
  t.apply(Ev::state(0x5, TcpState::kEstablished, TcpState::kClose, l, r, 5 * kSec));
  EXPECT_EQ(count_of(t, CloseKind::kRstSent), 2U);
  // Closed open with no RST at all (a retransmission timeout): other, at its destroy.
  t.apply(Ev::state(0x6, TcpState::kEstablished, TcpState::kClose, l, r, 6 * kSec));
  t.apply(Ev::sk_event(EventType::kDestroy, 0x6, 6 * kSec));
  EXPECT_EQ(count_of(t, CloseKind::kOther), 1U);
  // Not closes of a connection: a refused connect() (RST in SYN_SENT), a listener closing.
  t.apply(Ev::state(0x7, TcpState::kClose, TcpState::kSynSent, ep("127.0.0.1", 0), r, 7 * kSec));
  t.apply(Ev::sk_event(EventType::kReset, 0x7, 7 * kSec));
  Event refused = Ev::state(0x7, TcpState::kSynSent, TcpState::kClose, l, r, 7 * kSec);
  t.apply(refused);
  t.apply(Ev::state(0x8, TcpState::kListen, TcpState::kClose, ep("0.0.0.0", 80), ep("0.0.0.0", 0),
                    8 * kSec));
  const CloseCounts all = closes_of(t);
  EXPECT_EQ(all, (CloseCounts{1, 1, 2, 1, 1}));
  // A namespace forgotten takes its counts with it.
  t.forget_namespace(kNetns, 9 * kSec);
  EXPECT_FALSE(t.counters().closes.contains(kNetns));
}

}  // namespace
}  // namespace portlens
