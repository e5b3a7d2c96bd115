// The tracker and net.ipv4.tcp_max_tw_buckets (docs/kernel-rules.md 5.3): a namespace that holds
// its limit gets no TIME_WAIT from a close, and the snapshots' TCPTimeWaitOverflow readings tell
// reconcile how many of the inferred ones the kernel never made.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "agent/tracker/tracker.hpp"

namespace portlens {
namespace {

constexpr std::uint64_t kNetns = 4026531840;
constexpr std::uint64_t kOtherNetns = 4026532001;
constexpr std::uint64_t kSec = 1'000'000'000ULL;

Endpoint ep(const std::string& addr, std::uint16_t port) { return {*IpAddress::parse(addr), port}; }

Event state(std::uint64_t sk, TcpState from, TcpState to, std::uint16_t port, std::uint64_t ts,
            std::uint64_t netns = kNetns) {
  Event e;
  e.type = EventType::kState;
  e.sock_id = sk;
  e.ts_ns = ts;
  e.netns = netns;
  e.old_state = static_cast<int>(from);
  e.new_state = static_cast<int>(to);
  e.local = ep("127.0.0.1", port);
  e.remote = ep("127.0.0.1", 80);
  e.opts = SocketOptions{};
  e.timestamps = true;
  return e;
}

// The client of 127.0.0.1:port -> 127.0.0.1:80 receives the server's FIN in FIN_WAIT2: the
// kernel makes a TIME_WAIT, unless the namespace is at its limit.
void close_client_first(SocketTracker& t, std::uint64_t sk, std::uint16_t port, std::uint64_t ts,
                        std::uint64_t netns = kNetns) {
  t.apply(state(sk, TcpState::kFinWait2, TcpState::kClose, port, ts, netns));
}

SocketEntry time_wait_entry(std::uint16_t port, std::uint64_t netns = kNetns) {
  SocketEntry e;
  e.netns = netns;
  e.state = TcpState::kTimeWait;
  e.time_wait_substate = TcpState::kTimeWait;
  e.local = ep("127.0.0.1", port);
  e.remote = ep("127.0.0.1", 80);
  e.time_wait_remaining = std::chrono::milliseconds(50'000);
  return e;
}

// A snapshot of kNetns holding TIME_WAITs on these ports, with the namespace's limit and
// overflow reading.
SocketTable snapshot(std::initializer_list<std::uint16_t> ports,
                     std::optional<std::uint32_t> max_tw_buckets,
                     std::optional<std::uint64_t> overflow = std::nullopt) {
  SocketTable table;
  for (const std::uint16_t port : ports) {
    table.sockets.push_back(time_wait_entry(port));
  }
  NetnsPortConfig& config = table.netns_config[kNetns];
  config.tcp_max_tw_buckets = max_tw_buckets;
  config.tcp_time_wait_overflow = overflow;
  return table;
}

std::uint64_t corrections(const SocketTracker& t, const char* kind) {
  const auto it = t.counters().corrections.find(kind);
  return it == t.counters().corrections.end() ? 0 : it->second;
}

bool has_time_wait(const SocketTracker& t, std::uint16_t port) {
  const SocketTable table = t.table(kNetns, 0);
  return std::any_of(table.sockets.begin(), table.sockets.end(), [port](const SocketEntry& e) {
    return e.state == TcpState::kTimeWait && e.local.port == port;
  });
}

TEST(TimeWaitLimitTest, WithoutAKnownLimitEveryCloseInfersOne) {
  SocketTracker t;
  for (std::uint16_t i = 0; i < 50; ++i) {
    close_client_first(t, 0x100 + i, 40000 + i, kSec);
  }
  EXPECT_EQ(t.time_wait_count(kNetns), 50U);
  EXPECT_EQ(t.counters().time_wait_refused, 0U);
  EXPECT_FALSE(t.time_wait_limit(kNetns).has_value());
}

TEST(TimeWaitLimitTest, ANamespaceAtItsLimitGetsNoTimeWaitAndTheRefusalIsCounted) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({}, 3), kSec);
  EXPECT_EQ(t.time_wait_limit(kNetns), 3U);
  for (std::uint16_t i = 0; i < 5; ++i) {
    close_client_first(t, 0x100 + i, 40000 + i, 2 * kSec + i);
  }
  EXPECT_EQ(t.time_wait_count(), 3U);
  EXPECT_EQ(t.time_wait_count(kNetns), 3U);
  EXPECT_EQ(t.counters().time_wait_inferred, 3U);
  EXPECT_EQ(t.counters().time_wait_refused, 2U);
  // The first three got one, as in the kernel: the later closes found the namespace full.
  const SocketTable table = t.table(kNetns, 3 * kSec);
  ASSERT_EQ(table.sockets.size(), 3U);
  for (const SocketEntry& e : table.sockets) {
    EXPECT_LT(e.local.port, 40003);
  }
}

TEST(TimeWaitLimitTest, TheSnapshotsTimeWaitsCountTowardTheLimit) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({30000, 30001}, 3), kSec);
  close_client_first(t, 0x100, 40000, 2 * kSec);
  close_client_first(t, 0x101, 40001, 2 * kSec);
  EXPECT_EQ(t.time_wait_count(kNetns), 3U);
  EXPECT_EQ(t.counters().time_wait_refused, 1U);
  EXPECT_FALSE(has_time_wait(t, 40001));
}

TEST(TimeWaitLimitTest, TheLimitIsPerNamespace) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({}, 1), kSec);
  for (std::uint16_t i = 0; i < 3; ++i) {
    close_client_first(t, 0x100 + i, 40000 + i, 2 * kSec);
    close_client_first(t, 0x200 + i, 40000 + i, 2 * kSec, kOtherNetns);
  }
  EXPECT_EQ(t.time_wait_count(kNetns), 1U);
  EXPECT_EQ(t.time_wait_count(kOtherNetns), 3U);
  EXPECT_EQ(t.counters().time_wait_refused, 2U);
}

TEST(TimeWaitLimitTest, ZeroRefusesEveryTimeWait) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({}, 0), kSec);
  close_client_first(t, 0x100, 40000, 2 * kSec);
  EXPECT_EQ(t.time_wait_count(), 0U);
  EXPECT_EQ(t.counters().time_wait_refused, 1U);
}

TEST(TimeWaitLimitTest, TimeWaitsWhoseSixtySecondsEndedMakeRoomAtTheClosesMoment) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({}, 2), 0);
  close_client_first(t, 0x100, 40000, kSec);
  close_client_first(t, 0x101, 40001, kSec);
  // No expire() call in between: the close itself finds that the kernel's have ended.
  close_client_first(t, 0x102, 40002, kSec + kTimeWaitLenNs);
  EXPECT_EQ(t.counters().time_wait_refused, 0U);
  EXPECT_EQ(t.counters().time_wait_expired, 2U);
  EXPECT_EQ(t.time_wait_count(kNetns), 1U);
  EXPECT_TRUE(has_time_wait(t, 40002));
}

TEST(TimeWaitLimitTest, ATakenOverTimeWaitMakesRoom) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({}, 2), 0);
  close_client_first(t, 0x100, 40000, kSec);
  close_client_first(t, 0x101, 40001, kSec);
  // A new connection on 40000's 4-tuple took its TIME_WAIT over (inet_twsk_deschedule_put()).
  t.apply(state(0x200, TcpState::kSynSent, TcpState::kEstablished, 40000, 2 * kSec));
  close_client_first(t, 0x102, 40002, 3 * kSec);
  EXPECT_EQ(t.counters().time_wait_reused, 1U);
  EXPECT_EQ(t.counters().time_wait_refused, 0U);
  EXPECT_EQ(t.time_wait_count(kNetns), 2U);
}

TEST(TimeWaitLimitTest, ACloseOnTheFourTupleOfATimeWaitOnTheBooksDoesNotCountThatOne) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({40000, 40001}, 2), kSec);
  // The takeover of 40000's TIME_WAIT was not seen; the connection that took it closes now. In
  // the kernel that TIME_WAIT is gone, so the namespace holds one: the new one is made.
  close_client_first(t, 0x100, 40000, 20 * kSec);
  EXPECT_EQ(t.counters().time_wait_refused, 0U);
  EXPECT_EQ(t.time_wait_count(kNetns), 2U);
  EXPECT_EQ(t.table(kNetns, 20 * kSec).sockets.size(), 2U);
}

TEST(TimeWaitLimitTest, ARefusedCloseOnTheFourTupleOfATimeWaitOnTheBooksRemovesThatOne) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({40000, 40001}, 1), kSec);
  // Held without 40000's own: one, the limit. The kernel refused the new one, and the old one
  // was taken over by the connection that closes: none is left on 40000's 4-tuple.
  close_client_first(t, 0x100, 40000, 20 * kSec);
  EXPECT_EQ(t.counters().time_wait_refused, 1U);
  EXPECT_EQ(t.counters().time_wait_reused, 1U);
  EXPECT_EQ(t.time_wait_count(kNetns), 1U);
  EXPECT_TRUE(has_time_wait(t, 40001));
}

TEST(TimeWaitLimitTest, EachSnapshotGivesTheLimitAndForgettingTheNamespaceDropsIt) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({}, 1), kSec);
  close_client_first(t, 0x100, 40000, 2 * kSec);
  close_client_first(t, 0x101, 40001, 2 * kSec);
  EXPECT_EQ(t.counters().time_wait_refused, 1U);
  // The sysctl was raised: the next snapshot says so.
  t.reconcile(kNetns, snapshot({40000}, 3), 3 * kSec);
  EXPECT_EQ(t.time_wait_limit(kNetns), 3U);
  close_client_first(t, 0x102, 40002, 4 * kSec);
  close_client_first(t, 0x103, 40003, 4 * kSec);
  close_client_first(t, 0x104, 40004, 4 * kSec);
  EXPECT_EQ(t.time_wait_count(kNetns), 3U);
  EXPECT_EQ(t.counters().time_wait_refused, 2U);
  // A snapshot that could not read it: no limit is assumed.
  t.reconcile(kNetns, snapshot({40000, 40002, 40003}, std::nullopt), 5 * kSec);
  EXPECT_FALSE(t.time_wait_limit(kNetns).has_value());
  t.reconcile(kNetns, snapshot({40000}, 1), 6 * kSec);
  t.forget_namespace(kNetns, 7 * kSec);
  EXPECT_FALSE(t.time_wait_limit(kNetns).has_value());
  EXPECT_EQ(t.time_wait_count(kNetns), 0U);
}

TEST(TimeWaitLimitTest, ReconcileCountsWhatTheKernelRefusedBeyondTheTrackerAsOverflow) {
  SocketTracker t;
  // The limit is not known (its sysctl was unreadable), the overflow counter is.
  t.bootstrap(kNetns, snapshot({}, std::nullopt, 100), kSec);
  for (std::uint16_t i = 0; i < 5; ++i) {
    close_client_first(t, 0x100 + i, 40000 + i, 2 * kSec);
  }
  ASSERT_EQ(t.time_wait_count(kNetns), 5U);
  // The kernel made two of them and refused three; one more inferred TIME_WAIT is gone for
  // another reason (killed by an RST the events did not show, say).
  t.apply(state(0x200, TcpState::kFinWait2, TcpState::kClose, 40009, 2 * kSec));
  t.reconcile(kNetns, snapshot({40000, 40001}, std::nullopt, 103), 3 * kSec);
  EXPECT_EQ(t.time_wait_count(kNetns), 2U);
  EXPECT_EQ(corrections(t, "time_wait_overflow"), 3U);
  EXPECT_EQ(corrections(t, "time_wait_stale"), 1U);
  EXPECT_EQ(t.counters().time_wait_refused, 3U);
  // The same reading again: nothing new.
  t.reconcile(kNetns, snapshot({40000, 40001}, std::nullopt, 103), 4 * kSec);
  EXPECT_EQ(corrections(t, "time_wait_overflow"), 3U);
  EXPECT_EQ(t.counters().time_wait_refused, 3U);
}

TEST(TimeWaitLimitTest, RefusalsTheTrackerCountedAreNotCountedAgainFromTheReading) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({}, 2, 7), kSec);
  for (std::uint16_t i = 0; i < 6; ++i) {
    close_client_first(t, 0x100 + i, 40000 + i, 2 * kSec);
  }
  EXPECT_EQ(t.counters().time_wait_refused, 4U);
  // The reading was taken before the last refusal was applied: the kernel shows three so far.
  t.reconcile(kNetns, snapshot({40000, 40001}, 2, 10), 3 * kSec);
  EXPECT_EQ(t.counters().time_wait_refused, 4U);
  EXPECT_TRUE(t.counters().corrections.empty());
  // Then one the tracker did not see coming (it had one more room than the kernel).
  t.reconcile(kNetns, snapshot({40000, 40001}, 2, 12), 4 * kSec);
  EXPECT_EQ(t.counters().time_wait_refused, 5U);
  EXPECT_EQ(corrections(t, "time_wait_overflow"), 0U) << "no stale TIME_WAIT to account for";
}

TEST(TimeWaitLimitTest, AReadingBelowTheLastOneStartsAfresh) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({}, std::nullopt, 500), kSec);
  // The inode now names a new namespace whose counter starts at zero.
  t.reconcile(kNetns, snapshot({}, std::nullopt, 2), 2 * kSec);
  EXPECT_EQ(t.counters().time_wait_refused, 0U);
  t.reconcile(kNetns, snapshot({}, std::nullopt, 6), 3 * kSec);
  EXPECT_EQ(t.counters().time_wait_refused, 4U);
}

TEST(TimeWaitLimitTest, ABootstrapOnlyTakesTheReadingAsItsBase) {
  SocketTracker t;
  t.bootstrap(kNetns, snapshot({}, std::nullopt, 40), kSec);
  t.bootstrap(kNetns, snapshot({}, std::nullopt, 90), 2 * kSec);
  EXPECT_EQ(t.counters().time_wait_refused, 0U);
  t.reconcile(kNetns, snapshot({}, std::nullopt, 91), 3 * kSec);
  EXPECT_EQ(t.counters().time_wait_refused, 1U);
}

}  // namespace
}  // namespace portlens
