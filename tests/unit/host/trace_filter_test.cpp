#include <cerrno>
#include <cstdint>
#include <optional>

#include <gtest/gtest.h>

#include "agent/cmd/trace.hpp"
#include "agent/model/event.hpp"

namespace portlens {
namespace {

constexpr std::uint32_t kNetns = 4026531840U;
constexpr std::uint32_t kOtherNetns = 4026532500U;

Event call(EventType type, std::uint32_t pid, std::uint64_t sock, int result) {
  Event e;
  e.type = type;
  e.pid = pid;
  e.tid = pid;
  e.sock_id = sock;
  e.netns = kNetns;
  e.result = result;
  e.requested = *Endpoint::parse("10.0.0.1:8080");
  e.local = *Endpoint::parse("10.0.0.1:8080");
  return e;
}

Event bind_ok(std::uint32_t pid = 100, std::uint64_t sock = 0xa000) {
  return call(EventType::kBind, pid, sock, 0);
}
Event bind_failed(std::uint32_t pid = 100, std::uint64_t sock = 0xa000) {
  return call(EventType::kBind, pid, sock, -EADDRINUSE);
}

// State events run in softirq context: their pid is whoever was on the CPU.
Event state(std::uint64_t sock, std::uint32_t pid = 0) {
  Event e;
  e.type = EventType::kState;
  e.pid = pid;
  e.sock_id = sock;
  e.netns = kNetns;
  e.old_state = 1;
  e.new_state = 4;
  e.local = *Endpoint::parse("10.0.0.1:8080");
  e.remote = *Endpoint::parse("10.0.0.2:40112");
  return e;
}

Event reset(std::uint64_t sock, std::uint32_t pid = 100) {
  Event e = state(sock, pid);
  e.type = EventType::kReset;
  return e;
}

TEST(EventFilterTest, NoOptionsShowsEveryCallButNoStateOrReset) {
  EventFilter filter(TraceOptions{}, std::nullopt);
  EXPECT_TRUE(filter.accepts(bind_ok()));
  EXPECT_TRUE(filter.accepts(bind_failed()));
  EXPECT_TRUE(filter.accepts(call(EventType::kListen, 1, 2, 0)));
  EXPECT_TRUE(filter.accepts(call(EventType::kConnect, 1, 2, -EINPROGRESS)));
  EXPECT_FALSE(filter.accepts(state(0xa000)));
  EXPECT_FALSE(filter.accepts(reset(0xa000)));
}

// --states shows resets received beside the state changes (an RST close leaves no TIME_WAIT,
// which is what a reader of the states wants to tell apart); destroys stay the tracker's.
TEST(EventFilterTest, StatesShowsStateEventsAndResetsButNotDestroys) {
  TraceOptions o;
  o.states = true;
  EventFilter filter(o, std::nullopt);
  EXPECT_TRUE(filter.accepts(state(0xa000)));
  EXPECT_TRUE(filter.accepts(bind_ok()));
  EXPECT_TRUE(filter.accepts(reset(0xa000)));
  Event destroy = state(0xa000);
  destroy.type = EventType::kDestroy;
  EXPECT_FALSE(filter.accepts(destroy));
}

TEST(EventFilterTest, FailuresHidesSuccessesAndStateEvents) {
  TraceOptions o;
  o.failures = true;
  o.states = true;
  EventFilter filter(o, std::nullopt);
  EXPECT_TRUE(filter.accepts(bind_failed()));
  EXPECT_TRUE(filter.accepts(call(EventType::kListen, 1, 2, -EADDRINUSE)));
  EXPECT_TRUE(filter.accepts(call(EventType::kConnect, 1, 2, -ECONNREFUSED)));
  EXPECT_FALSE(filter.accepts(bind_ok()));
  EXPECT_FALSE(filter.accepts(call(EventType::kListen, 1, 2, 0)));
  EXPECT_FALSE(filter.accepts(call(EventType::kConnect, 1, 2, -EINPROGRESS)));
  EXPECT_FALSE(filter.accepts(state(0xa000)));
  EXPECT_FALSE(filter.accepts(reset(0xa000)));
}

TEST(EventFilterTest, PortMatchesRequestedLocalOrRemote) {
  TraceOptions o;
  o.port = 443;
  o.states = true;
  EventFilter filter(o, std::nullopt);

  Event e = bind_ok();
  EXPECT_FALSE(filter.accepts(e)) << "8080 everywhere";

  e.requested = *Endpoint::parse("10.0.0.1:443");
  EXPECT_TRUE(filter.accepts(e)) << "requested";

  e = call(EventType::kConnect, 100, 1, 0);
  e.requested = *Endpoint::parse("10.0.0.9:80");
  e.local = *Endpoint::parse("10.0.0.1:443");
  EXPECT_TRUE(filter.accepts(e)) << "local";

  Event s = state(1);
  EXPECT_FALSE(filter.accepts(s));
  s.remote = *Endpoint::parse("10.0.0.2:443");
  EXPECT_TRUE(filter.accepts(s)) << "remote";

  Event none = bind_ok();
  none.requested.reset();
  none.local.reset();
  EXPECT_FALSE(filter.accepts(none)) << "no endpoints at all";
}

TEST(EventFilterTest, PortZeroMatchesOnlyPortZero) {
  TraceOptions o;
  o.port = 0;
  EventFilter filter(o, std::nullopt);
  EXPECT_FALSE(filter.accepts(bind_ok()));
  Event e = bind_ok();
  e.requested = *Endpoint::parse("10.0.0.1:0");
  EXPECT_TRUE(filter.accepts(e));
}

TEST(EventFilterTest, NetnsInode) {
  TraceOptions o;
  o.states = true;
  EventFilter filter(o, kNetns);
  EXPECT_TRUE(filter.accepts(bind_ok()));
  EXPECT_TRUE(filter.accepts(state(1)));
  Event other = bind_ok();
  other.netns = kOtherNetns;
  EXPECT_FALSE(filter.accepts(other));
  Event other_state = state(1);
  other_state.netns = kOtherNetns;
  EXPECT_FALSE(filter.accepts(other_state));

  // The inode comes from the constructor, not from TraceOptions::netns (a spec string).
  EventFilter other_filter(o, kOtherNetns);
  EXPECT_FALSE(other_filter.accepts(bind_ok()));
  EXPECT_TRUE(other_filter.accepts(other));
}

TEST(EventFilterTest, PidKeepsOnlyThatProcessesCalls) {
  TraceOptions o;
  o.pid = 100;
  EventFilter filter(o, std::nullopt);
  EXPECT_TRUE(filter.accepts(bind_ok(100)));
  EXPECT_TRUE(filter.accepts(bind_failed(100)));
  EXPECT_FALSE(filter.accepts(bind_ok(101)));
  EXPECT_FALSE(filter.accepts(bind_failed(101)));
}

TEST(EventFilterTest, PidWithStatesFollowsTheSocketsThatPidUsed) {
  TraceOptions o;
  o.pid = 100;
  o.states = true;
  EventFilter filter(o, std::nullopt);

  EXPECT_FALSE(filter.accepts(state(0xa000))) << "no call on that socket yet";

  EXPECT_TRUE(filter.accepts(call(EventType::kConnect, 100, 0xa000, -EINPROGRESS)));
  EXPECT_FALSE(filter.accepts(call(EventType::kConnect, 200, 0xb000, 0)));

  // Softirq context: pid 0 or an unrelated pid, yet the socket is pid 100's.
  EXPECT_TRUE(filter.accepts(state(0xa000, 0)));
  EXPECT_TRUE(filter.accepts(state(0xa000, 999)));
  // The other process's socket is not followed, even when the state event carries pid 100.
  EXPECT_FALSE(filter.accepts(state(0xb000, 0)));
  EXPECT_FALSE(filter.accepts(state(0xb000, 100)));
  EXPECT_FALSE(filter.accepts(state(0xc000, 100)));
  // Resets follow the same sockets as the state changes.
  EXPECT_TRUE(filter.accepts(reset(0xa000, 0)));
  EXPECT_FALSE(filter.accepts(reset(0xb000, 100)));
}

TEST(EventFilterTest, PidRemembersSocketsEvenFromCallsItDoesNotShow) {
  // A successful connect is hidden by --failures (and by --port), but its socket is still pid
  // 100's; its state events are still hidden because --failures hides every state event.
  TraceOptions o;
  o.pid = 100;
  o.states = true;
  o.port = 443;
  EventFilter filter(o, std::nullopt);
  Event c = call(EventType::kConnect, 100, 0xa000, 0);  // port 8080: not shown
  EXPECT_FALSE(filter.accepts(c));
  Event s = state(0xa000);
  s.remote = *Endpoint::parse("10.0.0.2:443");
  EXPECT_TRUE(filter.accepts(s));
}

TEST(EventFilterTest, PidWithoutStatesShowsNoStateEvents) {
  TraceOptions o;
  o.pid = 100;
  EventFilter filter(o, std::nullopt);
  EXPECT_TRUE(filter.accepts(call(EventType::kConnect, 100, 0xa000, 0)));
  EXPECT_FALSE(filter.accepts(state(0xa000, 100)));
}

TEST(EventFilterTest, FiltersCombine) {
  TraceOptions o;
  o.pid = 100;
  o.failures = true;
  o.port = 8080;
  EventFilter filter(o, kNetns);
  EXPECT_TRUE(filter.accepts(bind_failed(100)));
  EXPECT_FALSE(filter.accepts(bind_ok(100)));
  EXPECT_FALSE(filter.accepts(bind_failed(101)));
  Event wrong_port = bind_failed(100);
  wrong_port.requested = *Endpoint::parse("10.0.0.1:9090");
  wrong_port.local.reset();
  EXPECT_FALSE(filter.accepts(wrong_port));
  Event wrong_netns = bind_failed(100);
  wrong_netns.netns = kOtherNetns;
  EXPECT_FALSE(filter.accepts(wrong_netns));
}

}  // namespace
}  // namespace portlens
