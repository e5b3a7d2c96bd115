// FailureCoalescer: when an identical failure may reuse a judged one's diagnosis, and when it
// must be judged again because what the first was judged against may have changed.
#include "agent/live/coalesce.hpp"

#include <cerrno>
#include <chrono>

#include <gtest/gtest.h>

#include "tests/unit/builders.hpp"

namespace portlens::unit {
namespace {

constexpr std::uint64_t kMs = 1'000'000;
constexpr std::uint32_t kNs = 4026532300U;

Event failed_bind(std::uint64_t ts_ms, std::string_view address, bool reuseaddr = false) {
  Event e;
  e.type = EventType::kBind;
  e.ts_ns = ts_ms * kMs;
  e.netns = kNs;
  e.result = -EADDRINUSE;
  e.requested = ep(address);
  SocketOptions o;
  o.reuseaddr = reuseaddr;
  e.opts = o;
  e.comm = "server";
  return e;
}

Event failed_connect(std::uint64_t ts_ms, std::string_view destination) {
  Event e;
  e.type = EventType::kConnect;
  e.ts_ns = ts_ms * kMs;
  e.netns = kNs;
  e.result = -EADDRNOTAVAIL;
  e.requested = ep(destination);
  e.opts = SocketOptions{};
  return e;
}

Diagnosis in_use() {
  Diagnosis d;
  d.cause = Cause::kPortInUse;
  d.hint = "held";
  return d;
}

FailureCoalescer coalescer() { return FailureCoalescer({1000 * kMs, 16}); }

TEST(FailureCoalescerTest, IdenticalFailuresInTheWindowShareTheFirstDiagnosis) {
  FailureCoalescer c = coalescer();
  const Event first = failed_bind(100, "0.0.0.0:8080");
  c.watch(first);
  EXPECT_EQ(c.repeat(first), nullptr) << "nothing judged yet";
  c.judged(first, in_use(), first.ts_ns);
  for (std::uint64_t t = 101; t < 600; t += 100) {
    const Event again = failed_bind(t, "0.0.0.0:8080");
    c.watch(again);
    const Diagnosis* d = c.repeat(again);
    ASSERT_NE(d, nullptr) << t;
    EXPECT_EQ(d->cause, Cause::kPortInUse);
  }
  // Another address, other options: not identical.
  EXPECT_EQ(c.repeat(failed_bind(200, "0.0.0.0:8081")), nullptr);
  EXPECT_EQ(c.repeat(failed_bind(200, "0.0.0.0:8080", true)), nullptr);
  // Past the window: judged again, and the window closes with its five repeats.
  EXPECT_EQ(c.repeat(failed_bind(1101, "0.0.0.0:8080")), nullptr);
  const auto closed = c.take_closed(1101 * kMs);
  ASSERT_EQ(closed.size(), 1U);
  EXPECT_EQ(closed[0].repeats, 5U);
  EXPECT_EQ(closed[0].first.ts_ns, first.ts_ns);
  EXPECT_EQ(closed[0].last_ts_ns, 501 * kMs);
  EXPECT_EQ(c.open_windows(), 0U);
}

TEST(FailureCoalescerTest, AFailureJudgedWithoutALookIsNotSharedWithTheNextOne) {
  // The namespace could not be read (its only process exited mid-walk): that says nothing of
  // the next identical call, which is judged again rather than given `unknown`.
  FailureCoalescer c = coalescer();
  const Event first = failed_bind(100, "0.0.0.0:8080");
  c.watch(first);
  Diagnosis blind;
  blind.inspected = false;
  blind.hint = "cannot inspect the namespace";
  c.judged(first, blind, first.ts_ns);
  const Event again = failed_bind(101, "0.0.0.0:8080");
  c.watch(again);
  EXPECT_EQ(c.repeat(again), nullptr);
  EXPECT_EQ(c.open_windows(), 0U);
  // Once judged with a look, its window opens as usual.
  c.judged(again, in_use(), again.ts_ns);
  const Event third = failed_bind(102, "0.0.0.0:8080");
  c.watch(third);
  ASSERT_NE(c.repeat(third), nullptr);
  EXPECT_EQ(c.repeat(third)->cause, Cause::kPortInUse);
}

TEST(FailureCoalescerTest, AnEventOnThePortAfterTheJudgedFailureEndsTheWindow) {
  FailureCoalescer c = coalescer();
  const Event first = failed_bind(100, "0.0.0.0:8080");
  c.watch(first);
  c.judged(first, in_use(), first.ts_ns);
  // A state change on another port changes nothing.
  Event other;
  other.type = EventType::kState;
  other.ts_ns = 150 * kMs;
  other.netns = kNs;
  other.local = ep("127.0.0.1:9000");
  other.remote = ep("127.0.0.1:40000");
  c.note_change(other);
  EXPECT_NE(c.repeat(failed_bind(160, "0.0.0.0:8080")), nullptr);
  // The holder closes (any address on the port): the next failure is judged again.
  Event closed = other;
  closed.type = EventType::kDestroy;
  closed.ts_ns = 200 * kMs;
  closed.local = ep("127.0.0.1:8080");
  c.note_change(closed);
  EXPECT_EQ(c.repeat(failed_bind(210, "0.0.0.0:8080")), nullptr);
  // The same in another namespace would not have mattered; and the window is closed now.
  const auto ended = c.take_closed(220 * kMs);
  ASSERT_EQ(ended.size(), 1U);
  EXPECT_EQ(ended[0].repeats, 1U);
}

TEST(FailureCoalescerTest, AChangeBetweenTheFailureAndItsJudgmentIsSeen) {
  // The batch holds the failure, then the holder's close, then a repeat: all applied before the
  // first is judged. The repeat must be judged on its own.
  FailureCoalescer c = coalescer();
  const Event first = failed_bind(100, "0.0.0.0:8080");
  c.watch(first);
  Event close;
  close.type = EventType::kDestroy;
  close.ts_ns = 101 * kMs;
  close.netns = kNs;
  close.local = ep("0.0.0.0:8080");
  c.note_change(close);
  const Event again = failed_bind(102, "0.0.0.0:8080");
  c.watch(again);
  c.judged(first, in_use(), 103 * kMs);
  EXPECT_EQ(c.repeat(again), nullptr);
}

TEST(FailureCoalescerTest, ATimeWaitBlockerBoundsTheWindowByItsExpiry) {
  FailureCoalescer c = coalescer();
  const Event first = failed_bind(100, "127.0.0.1:9090");
  c.watch(first);
  Diagnosis d;
  d.cause = Cause::kTimeWait;
  Blocker b;
  b.socket = time_wait("127.0.0.1:9090", "127.0.0.1:40000", kNs);
  b.socket.time_wait_remaining = std::chrono::milliseconds(300);
  d.blockers.push_back(b);
  c.judged(first, d, 100 * kMs);
  EXPECT_NE(c.repeat(failed_bind(399, "127.0.0.1:9090")), nullptr);
  EXPECT_EQ(c.repeat(failed_bind(401, "127.0.0.1:9090")), nullptr) << "the TIME_WAIT is gone";
}

TEST(FailureCoalescerTest, AutobindIsNeverCoalesced) {
  FailureCoalescer c = coalescer();
  const Event first = failed_bind(100, "0.0.0.0:0");
  EXPECT_FALSE(failure_key(first).has_value());
  c.watch(first);
  c.judged(first, in_use(), first.ts_ns);
  EXPECT_EQ(c.repeat(failed_bind(101, "0.0.0.0:0")), nullptr);
  EXPECT_FALSE(c.watching());
}

TEST(FailureCoalescerTest, ConnectWindowsEndOnTrafficTowardTheDestinationOrABind) {
  FailureCoalescer c = coalescer();
  const Event first = failed_connect(100, "10.0.0.5:6379");
  c.watch(first);
  c.judged(first, in_use(), first.ts_ns);
  EXPECT_NE(c.repeat(failed_connect(110, "10.0.0.5:6379")), nullptr);
  EXPECT_EQ(c.repeat(failed_connect(110, "10.0.0.5:6380")), nullptr);
  // A connection toward it closes: ports may be free again.
  Event gone;
  gone.type = EventType::kState;
  gone.ts_ns = 120 * kMs;
  gone.netns = kNs;
  gone.local = ep("10.0.0.1:40000");
  gone.remote = ep("10.0.0.5:6379");
  c.note_change(gone);
  EXPECT_EQ(c.repeat(failed_connect(130, "10.0.0.5:6379")), nullptr);

  // A successful explicit bind in the namespace may take a port the first counted as free.
  const Event second = failed_connect(200, "10.0.0.5:6379");
  c.watch(second);
  c.judged(second, in_use(), second.ts_ns);
  EXPECT_NE(c.repeat(failed_connect(210, "10.0.0.5:6379")), nullptr);
  Event bound;
  bound.type = EventType::kBind;
  bound.ts_ns = 220 * kMs;
  bound.netns = kNs;
  bound.requested = ep("0.0.0.0:41000");
  bound.local = bound.requested;
  c.note_change(bound);
  EXPECT_EQ(c.repeat(failed_connect(230, "10.0.0.5:6379")), nullptr);
}

TEST(FailureCoalescerTest, WindowsAreBounded) {
  FailureCoalescer c({1000 * kMs, 2});
  for (std::uint16_t port = 8000; port < 8004; ++port) {
    const Event e = failed_bind(100, "0.0.0.0:" + std::to_string(port));
    c.watch(e);
    c.judged(e, in_use(), e.ts_ns);
  }
  EXPECT_EQ(c.open_windows(), 2U);
  EXPECT_NE(c.repeat(failed_bind(101, "0.0.0.0:8000")), nullptr);
  EXPECT_EQ(c.repeat(failed_bind(101, "0.0.0.0:8003")), nullptr) << "no room was left for it";
}

}  // namespace
}  // namespace portlens::unit
