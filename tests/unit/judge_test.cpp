#include "agent/live/judge.hpp"

#include <cerrno>

#include <gtest/gtest.h>

#include "agent/render/explain.hpp"
#include "agent/render/report.hpp"

namespace portlens {
namespace {

Endpoint ep(const std::string& addr, std::uint16_t port) { return {*IpAddress::parse(addr), port}; }

Event failed_call(EventType type, int err) {
  Event e;
  e.type = type;
  e.result = -err;
  e.netns = 7;
  e.sock_id = 0xffff888000000010;
  e.uid = 1000;
  e.sock_uid = 33;
  e.opts = SocketOptions{};
  e.opts->reuseaddr = true;
  return e;
}

TEST(CallFromEventTest, FailedBindUsesTheRequestedAddress) {
  Event e = failed_call(EventType::kBind, EADDRINUSE);
  e.requested = ep("127.0.0.1", 8080);
  e.local = ep("0.0.0.0", 0);  // what a failed bind leaves on the socket
  const auto call = call_from_event(e);
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->syscall, Syscall::kBind);
  EXPECT_EQ(call->local, ep("127.0.0.1", 8080));
  EXPECT_EQ(call->uid, 33U);  // the socket's uid, which SO_REUSEPORT compares
  EXPECT_TRUE(call->options.reuseaddr);
  EXPECT_EQ(call->sock_id, e.sock_id);
  EXPECT_EQ(call->result, -EADDRINUSE);
  EXPECT_EQ(call->netns, 7U);
}

TEST(CallFromEventTest, FailedListenUsesTheBoundAddress) {
  Event e = failed_call(EventType::kListen, EADDRINUSE);
  e.local = ep("127.0.0.1", 6000);
  const auto call = call_from_event(e);
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->syscall, Syscall::kListen);
  EXPECT_EQ(call->local, ep("127.0.0.1", 6000));
}

TEST(CallFromEventTest, ConnectKeepsTheBoundAddressAndTheEntryPort) {
  Event e = failed_call(EventType::kConnect, EADDRNOTAVAIL);
  e.requested = ep("10.0.0.7", 5432);
  e.local = ep("127.0.0.1", 0);
  e.enter_port = 40000;
  const auto call = call_from_event(e);
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->remote, ep("10.0.0.7", 5432));
  EXPECT_EQ(call->local, ep("127.0.0.1", 40000));
}

TEST(CallFromEventTest, OnlyFailuresPortlensExplains) {
  Event ok = failed_call(EventType::kBind, 0);
  ok.requested = ep("127.0.0.1", 1);
  EXPECT_FALSE(call_from_event(ok).has_value());
  Event refused = failed_call(EventType::kConnect, ECONNREFUSED);
  refused.requested = ep("127.0.0.1", 1);
  EXPECT_FALSE(call_from_event(refused).has_value());
  Event in_progress = failed_call(EventType::kConnect, EINPROGRESS);
  in_progress.requested = ep("127.0.0.1", 1);
  EXPECT_FALSE(call_from_event(in_progress).has_value());
  Event unreadable = failed_call(EventType::kBind, EADDRINUSE);  // no requested address
  EXPECT_FALSE(call_from_event(unreadable).has_value());
  Event eacces = failed_call(EventType::kBind, EACCES);
  eacces.requested = ep("0.0.0.0", 80);
  EXPECT_TRUE(call_from_event(eacces).has_value());
  Event udp_eagain = failed_call(EventType::kConnect, EAGAIN);
  udp_eagain.proto = Proto::kUdp;
  udp_eagain.requested = ep("127.0.0.1", 53);
  EXPECT_TRUE(call_from_event(udp_eagain).has_value());
}

SocketEntry sock(std::uint64_t id, Proto proto, std::optional<TcpState> state, const Endpoint& l) {
  SocketEntry s;
  s.proto = proto;
  s.state = state;
  s.local = l;
  s.sock_id = id;
  s.netns = 7;
  return s;
}

TEST(MergeForEventTest, KeepsWhatTheEventsSawAndAddsWhatOnlyTheSnapshotHas) {
  SocketTable tracked;
  // A listener closed right after the failure: gone from the snapshot, kept from the tracker.
  SocketEntry gone = sock(1, Proto::kTcp, TcpState::kListen, ep("0.0.0.0", 80));
  gone.owner = SocketOwner{812, "nginx"};
  tracked.sockets.push_back(gone);
  // In both: the tracker's state (as of the event), the snapshot's inode and flags.
  tracked.sockets.push_back(sock(2, Proto::kTcp, TcpState::kListen, ep("127.0.0.1", 81)));
  // A UDP socket only the tracker knows: UDP closes are invisible, so it is dropped.
  tracked.sockets.push_back(sock(3, Proto::kUdp, std::nullopt, ep("0.0.0.0", 53)));

  SocketTable snapshot;
  SocketEntry both = sock(2, Proto::kTcp, TcpState::kClose, ep("127.0.0.1", 81));
  both.inode = 4242;
  both.reuseaddr = true;
  snapshot.sockets.push_back(both);
  snapshot.sockets.push_back(sock(4, Proto::kTcp, TcpState::kEstablished, ep("127.0.0.1", 82)));
  snapshot.default_config.port_range_lo = 40000;

  const SocketTable merged = merge_for_event(snapshot, tracked, nullptr);
  ASSERT_EQ(merged.sockets.size(), 3U);
  EXPECT_EQ(merged.default_config.port_range_lo, 40000);
  EXPECT_EQ(merged.sockets[0].sock_id, 1U);
  EXPECT_EQ(merged.sockets[0].owner->comm, "nginx");
  EXPECT_EQ(merged.sockets[1].sock_id, 2U);
  EXPECT_EQ(merged.sockets[1].state, TcpState::kListen);
  EXPECT_EQ(merged.sockets[1].inode, 4242U);
  EXPECT_EQ(merged.sockets[1].reuseaddr, true);
  EXPECT_EQ(merged.sockets[2].sock_id, 4U);
}

TEST(MergeForEventTest, TimeWaitMatchedByFourTupleTakesTheKernelsTimer) {
  SocketTable tracked;
  SocketEntry tw = sock(0, Proto::kTcp, TcpState::kTimeWait, ep("127.0.0.1", 8080));
  tw.remote = ep("127.0.0.1", 40000);
  tw.owner = SocketOwner{812, "nginx"};
  tw.time_wait_remaining = std::chrono::milliseconds(59'000);
  tracked.sockets.push_back(tw);
  SocketTable snapshot;
  SocketEntry kernel_tw = tw;
  kernel_tw.owner.reset();
  kernel_tw.local = ep("::ffff:127.0.0.1", 8080);  // same 4-tuple, mapped form
  kernel_tw.remote = ep("::ffff:127.0.0.1", 40000);
  kernel_tw.time_wait_remaining = std::chrono::milliseconds(41'000);
  kernel_tw.timestamps = true;
  snapshot.sockets.push_back(kernel_tw);
  const SocketTable merged = merge_for_event(snapshot, tracked, nullptr);
  ASSERT_EQ(merged.sockets.size(), 1U);
  EXPECT_EQ(merged.sockets[0].time_wait_remaining, std::chrono::milliseconds(41'000));
  EXPECT_EQ(merged.sockets[0].timestamps, true);
  EXPECT_EQ(merged.sockets[0].owner->pid, 812U);
}

TEST(MergeForEventTest, LeavesOutWhatWasBornAfterTheCall) {
  SocketTable tracked;
  SocketEntry conn = sock(5, Proto::kTcp, TcpState::kEstablished, ep("127.0.0.1", 8080));
  conn.remote = ep("127.0.0.1", 40000);
  tracked.sockets.push_back(conn);
  SocketTable snapshot;
  // Created after the failed call (the tracker saw it later): not a blocker of that call.
  snapshot.sockets.push_back(sock(6, Proto::kTcp, TcpState::kListen, ep("127.0.0.1", 8080)));
  // The live connection became TIME_WAIT after the call: at the call it was ESTABLISHED.
  SocketEntry later_tw = sock(0, Proto::kTcp, TcpState::kTimeWait, ep("127.0.0.1", 8080));
  later_tw.remote = ep("127.0.0.1", 40000);
  snapshot.sockets.push_back(later_tw);
  // Older than the trace: the tracker never saw it, so it stays.
  snapshot.sockets.push_back(sock(7, Proto::kTcp, TcpState::kListen, ep("0.0.0.0", 9090)));
  const auto born_after = [](const SocketEntry& s) { return s.sock_id == 6; };
  const SocketTable merged = merge_for_event(snapshot, tracked, born_after);
  ASSERT_EQ(merged.sockets.size(), 2U);
  EXPECT_EQ(merged.sockets[0].state, TcpState::kEstablished);
  EXPECT_EQ(merged.sockets[1].sock_id, 7U);
}

TEST(ReportTest, DiagnosisJsonHasTheArchitecturesFields) {
  Diagnosis d;
  d.cause = Cause::kTimeWait;
  d.hint = "set SO_REUSEADDR before bind()";
  SocketEntry tw = sock(0, Proto::kTcp, TcpState::kTimeWait, ep("127.0.0.1", 8080));
  tw.remote = ep("127.0.0.1", 40112);
  tw.time_wait_remaining = std::chrono::milliseconds(41'250);
  d.blockers.push_back(Blocker{tw, Cause::kTimeWait, "TIME_WAIT, expires in 41 s", true});
  const auto j = diagnosis_to_json(d);
  EXPECT_EQ(j["cause"], "time_wait");
  EXPECT_EQ(j["hint"], "set SO_REUSEADDR before bind()");
  ASSERT_EQ(j["blockers"].size(), 1U);
  const auto& b = j["blockers"][0];
  EXPECT_EQ(b["proto"], "tcp");
  EXPECT_EQ(b["state"], "TIME_WAIT");
  EXPECT_EQ(b["local"]["addr"], "127.0.0.1");
  EXPECT_EQ(b["local"]["port"], 8080);
  EXPECT_EQ(b["remote"]["port"], 40112);
  EXPECT_TRUE(b["pid"].is_null());
  EXPECT_TRUE(b["comm"].is_null());
  EXPECT_EQ(b["expires_in_ms"], 41250);
  EXPECT_TRUE(b["reuseaddr"].is_null());  // unknown stays unknown
  EXPECT_EQ(b["why"], "TIME_WAIT, expires in 41 s");
  EXPECT_FALSE(j.contains("ephemeral"));
}

TEST(ReportTest, UdpStatesReadLikeSs) {
  SocketEntry u = sock(1, Proto::kUdp, std::nullopt, ep("0.0.0.0", 53));
  EXPECT_EQ(socket_state_name(u), "UNCONN");
  u.remote = ep("127.0.0.1", 5353);
  EXPECT_EQ(socket_state_name(u), "ESTAB");
  EXPECT_EQ(socket_state_name(sock(2, Proto::kTcp, TcpState::kClose, ep("0.0.0.0", 1))), "CLOSE");
}

TEST(ReportTest, PeopleSeeOwnersUnknownFlagsAndExpiry) {
  SocketEntry s = sock(1, Proto::kTcp, TcpState::kListen, ep("0.0.0.0", 80));
  s.owner = SocketOwner{812, "nginx"};
  s.reuseaddr = true;
  s.reuseport = std::nullopt;
  EXPECT_EQ(format_socket(s), "tcp LISTEN      0.0.0.0:80  pid 812 (nginx)  opts R?");
  SocketEntry tw = sock(0, Proto::kTcp, TcpState::kTimeWait, ep("127.0.0.1", 80));
  tw.remote = ep("127.0.0.1", 40000);
  tw.reuseaddr = false;
  tw.reuseport = false;
  tw.time_wait_remaining = std::chrono::milliseconds(12'340);
  EXPECT_EQ(format_socket(tw),
            "tcp TIME_WAIT   127.0.0.1:80 -> 127.0.0.1:40000  (no owner: TIME_WAIT)  opts -, "
            "expires in 12.3 s");
}

TEST(ExplainTest, EveryCauseHasASummaryAndALongText) {
  EXPECT_EQ(all_causes().size(), 10U);
  for (const Cause c : all_causes()) {
    const std::string text = explain(c);
    EXPECT_TRUE(text.starts_with(std::string(to_string(c)) + ": ")) << text.substr(0, 40);
    EXPECT_FALSE(cause_summary(c).empty());
    EXPECT_GT(text.size(), 400U) << to_string(c);
    if (c != Cause::kUnknown) {
      EXPECT_NE(text.find("Fix"), std::string::npos) << to_string(c);
    }
    EXPECT_NE(list_causes().find(std::string(to_string(c))), std::string::npos);
  }
}

}  // namespace
}  // namespace portlens
