#include "agent/model/event.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace portlens {
namespace {

template <class Record>
DecodeResult decode(const Record& raw) {
  return decode_event(std::as_bytes(std::span<const Record, 1>(&raw, 1)));
}

pl_endpoint v4_endpoint(std::array<std::uint8_t, 4> addr, std::uint16_t port) {
  pl_endpoint ep{};
  std::memcpy(ep.addr, addr.data(), addr.size());
  ep.port = port;
  ep.family = PL_AF_INET;
  return ep;
}

pl_endpoint v6_endpoint(std::array<std::uint8_t, 16> addr, std::uint16_t port) {
  pl_endpoint ep{};
  std::memcpy(ep.addr, addr.data(), addr.size());
  ep.port = port;
  ep.family = PL_AF_INET6;
  return ep;
}

void set_comm(pl_event& raw, const char* comm) {
  std::memset(raw.comm, 0, sizeof raw.comm);
  std::memcpy(raw.comm, comm, std::min(std::strlen(comm), sizeof raw.comm));
}

// A well-formed TCP/IPv4 bind() record; tests change what they look at.
pl_event bind_record() {
  pl_event raw{};
  raw.ts_ns = 123'456'789'000ULL;
  raw.cgroup_id = 0x1234'5678'9abcULL;
  raw.sk = 0xffff'8880'0102'0304ULL;
  raw.pid = 4242;
  raw.tid = 4243;
  raw.uid = 1000;
  raw.sock_uid = 1001;
  raw.netns = 4026531840U;
  raw.ret = -EADDRINUSE;
  raw.fd = 7;
  raw.backlog = 0;
  raw.type = PL_EV_BIND;
  raw.sock_family = AF_INET;
  raw.sock_type = SOCK_STREAM;
  raw.protocol = IPPROTO_TCP;
  raw.flags = PL_F_REQ_VALID | PL_F_OPTS_VALID;
  raw.req = v4_endpoint({10, 1, 2, 3}, 8080);
  set_comm(raw, "nginx");
  return raw;
}

// A well-formed TCP/IPv4 state change, FIN_WAIT2 -> CLOSE, 127.0.0.1:8080 -> 127.0.0.1:40112.
pl_sock_event state_record() {
  pl_sock_event raw{};
  raw.ts_ns = 123'456'789'000ULL;
  raw.sk = 0xffff'8880'0102'0304ULL;
  raw.netns = 4026531840U;
  raw.type = PL_EV_STATE;
  raw.sock_family = AF_INET;
  raw.old_state = 5;
  raw.new_state = 7;
  raw.sport = 8080;
  raw.dport = 40112;
  const std::array<std::uint8_t, 4> loopback = {127, 0, 0, 1};
  std::memcpy(raw.saddr, loopback.data(), loopback.size());
  std::memcpy(raw.daddr, loopback.data(), loopback.size());
  return raw;
}

template <class Record>
Event decode_ok(const Record& raw) {
  const DecodeResult r = decode(raw);
  EXPECT_FALSE(r.error.has_value()) << (r.error ? to_string(*r.error) : "");
  if (!r.event) {
    ADD_FAILURE() << "no event decoded";
    return {};
  }
  return *r.event;
}

TEST(DecodeEventTest, Ipv4BindCopiesEveryField) {
  pl_event raw = bind_record();
  raw.enter_port = 5;
  raw.backlog = 11;
  raw.local = v4_endpoint({10, 1, 2, 3}, 0);
  const Event e = decode_ok(raw);
  EXPECT_EQ(e.type, EventType::kBind);
  EXPECT_EQ(e.ts_ns, 123'456'789'000ULL);
  EXPECT_EQ(e.cgroup_id, 0x1234'5678'9abcULL);
  EXPECT_EQ(e.sock_id, 0xffff'8880'0102'0304ULL);
  EXPECT_EQ(e.pid, 4242U);
  EXPECT_EQ(e.tid, 4243U);
  EXPECT_EQ(e.uid, 1000U);
  EXPECT_EQ(e.sock_uid, std::optional<std::uint32_t>(1001));
  EXPECT_EQ(e.netns, 4026531840U);
  EXPECT_EQ(e.result, -EADDRINUSE);
  EXPECT_EQ(e.fd, 7);
  EXPECT_EQ(e.backlog, 11);
  EXPECT_EQ(e.family, Family::kIpv4);
  EXPECT_EQ(e.sock_type, SOCK_STREAM);
  EXPECT_EQ(e.proto, Proto::kTcp);
  EXPECT_EQ(e.enter_port, 5);
  EXPECT_EQ(e.old_state, 0);
  EXPECT_EQ(e.new_state, 0);
  EXPECT_EQ(e.comm, "nginx");
  ASSERT_TRUE(e.requested.has_value());
  EXPECT_EQ(e.requested->addr, *IpAddress::parse("10.1.2.3"));
  EXPECT_EQ(e.requested->port, 8080);
  EXPECT_FALSE(e.requested_fault);
  ASSERT_TRUE(e.local.has_value());
  EXPECT_EQ(e.local->to_string(), "10.1.2.3:0");
  EXPECT_FALSE(e.remote.has_value());
}

TEST(DecodeEventTest, Ipv4EndpointIgnoresBytesPastTheFourth) {
  pl_event raw = bind_record();
  std::memset(raw.req.addr + 4, 0xaa, sizeof raw.req.addr - 4);
  const Event e = decode_ok(raw);
  ASSERT_TRUE(e.requested.has_value());
  // Equality compares all 16 stored bytes: stray bytes would make these differ.
  EXPECT_EQ(e.requested->addr, *IpAddress::parse("10.1.2.3"));
}

TEST(DecodeEventTest, Ipv6Requested) {
  pl_event raw = bind_record();
  raw.sock_family = AF_INET6;
  raw.req = v6_endpoint({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 443);
  const Event e = decode_ok(raw);
  EXPECT_EQ(e.family, Family::kIpv6);
  ASSERT_TRUE(e.requested.has_value());
  EXPECT_TRUE(e.requested->addr.is_v6());
  EXPECT_EQ(e.requested->addr.to_string(), "2001:db8::1");
  EXPECT_EQ(e.requested->port, 443);
  EXPECT_EQ(e.requested->to_string(), "[2001:db8::1]:443");
}

TEST(DecodeEventTest, V4MappedRequestedOnIpv6Socket) {
  pl_event raw = bind_record();
  raw.sock_family = AF_INET6;
  raw.req = v6_endpoint({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1}, 80);
  const Event e = decode_ok(raw);
  EXPECT_EQ(e.family, Family::kIpv6);
  ASSERT_TRUE(e.requested.has_value());
  EXPECT_TRUE(e.requested->addr.is_v6());
  EXPECT_TRUE(e.requested->addr.is_v4_mapped());
  EXPECT_EQ(e.requested->addr.to_string(), "::ffff:10.0.0.1");
  EXPECT_EQ(e.requested->addr.unmapped(), *IpAddress::parse("10.0.0.1"));
}

struct OptionCase {
  const char* name;
  void (*set)(pl_sock_opts&);
  SocketOptions expected;
};

class DecodeOptionBitTest : public ::testing::TestWithParam<OptionCase> {};

TEST_P(DecodeOptionBitTest, EachOptionDecodesAlone) {
  pl_event raw = bind_record();
  GetParam().set(raw.opts);
  const Event e = decode_ok(raw);
  ASSERT_TRUE(e.opts.has_value());
  EXPECT_EQ(*e.opts, GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(
    Options, DecodeOptionBitTest,
    ::testing::Values(
        OptionCase{"none", [](pl_sock_opts&) {}, SocketOptions{}},
        OptionCase{"reuseaddr", [](pl_sock_opts& o) { o.reuseaddr = 1; },
                   SocketOptions{.reuseaddr = true}},
        // SK_FORCE_REUSE is 2: any non-zero sk_reuse means SO_REUSEADDR.
        OptionCase{"reuseaddr_force", [](pl_sock_opts& o) { o.reuseaddr = 2; },
                   SocketOptions{.reuseaddr = true}},
        OptionCase{"reuseport", [](pl_sock_opts& o) { o.reuseport = 1; },
                   SocketOptions{.reuseport = true}},
        OptionCase{"v6only", [](pl_sock_opts& o) { o.v6only = 1; }, SocketOptions{.v6only = true}},
        OptionCase{"freebind", [](pl_sock_opts& o) { o.freebind = 1; },
                   SocketOptions{.freebind = true}},
        OptionCase{"transparent", [](pl_sock_opts& o) { o.transparent = 1; },
                   SocketOptions{.transparent = true}},
        OptionCase{"bind_address_no_port", [](pl_sock_opts& o) { o.bind_address_no_port = 1; },
                   SocketOptions{.bind_address_no_port = true}},
        OptionCase{"bound_dev_if", [](pl_sock_opts& o) { o.bound_dev_if = 3; },
                   SocketOptions{.bound_dev_if = 3}},
        OptionCase{"all",
                   [](pl_sock_opts& o) {
                     o.reuseaddr = o.reuseport = o.v6only = o.freebind = o.transparent =
                         o.bind_address_no_port = 1;
                     o.bound_dev_if = 42;
                   },
                   SocketOptions{true, true, true, true, true, true, 42}}),
    [](const ::testing::TestParamInfo<OptionCase>& param) { return param.param.name; });

TEST(DecodeEventTest, WithoutOptsValidThereAreNoOptionsAndNoSocketUid) {
  pl_event raw = bind_record();
  raw.flags = PL_F_REQ_VALID;
  raw.opts.reuseaddr = 1;
  raw.opts.reuseport = 1;
  raw.opts.bound_dev_if = 9;
  const Event e = decode_ok(raw);
  EXPECT_FALSE(e.opts.has_value());
  EXPECT_FALSE(e.sock_uid.has_value());
}

TEST(DecodeEventTest, ResetEventsNeverTrustTheSocketUid) {
  pl_sock_event raw = state_record();
  raw.type = PL_EV_RESET;
  raw.flags = PL_F_OPTS_VALID;
  raw.sock_uid = 0;
  const Event e = decode_ok(raw);
  EXPECT_EQ(e.type, EventType::kReset);
  EXPECT_TRUE(e.opts.has_value());
  EXPECT_FALSE(e.sock_uid.has_value());
}

TEST(DecodeEventTest, StateEventOptionsAndSocketUidOnlyWithOptsValid) {
  pl_sock_event raw = state_record();
  raw.sock_uid = 1001;
  raw.opts.reuseaddr = 1;
  raw.opts.bound_dev_if = 9;
  Event e = decode_ok(raw);
  EXPECT_FALSE(e.opts.has_value());
  EXPECT_FALSE(e.sock_uid.has_value());
  raw.flags = PL_F_OPTS_VALID;
  e = decode_ok(raw);
  ASSERT_TRUE(e.opts.has_value());
  EXPECT_EQ(*e.opts, (SocketOptions{.reuseaddr = true, .bound_dev_if = 9}));
  EXPECT_EQ(e.sock_uid, std::optional<std::uint32_t>(1001));
}

// Socket events run in softirq context: no task is recorded, and none is made up.
TEST(DecodeEventTest, SocketEventsCarryNoTask) {
  for (const std::uint16_t type : {PL_EV_STATE, PL_EV_RESET, PL_EV_DESTROY}) {
    pl_sock_event raw = state_record();
    raw.type = type;
    const Event e = decode_ok(raw);
    EXPECT_EQ(e.pid, 0U) << type;
    EXPECT_EQ(e.tid, 0U) << type;
    EXPECT_EQ(e.uid, 0U) << type;
    EXPECT_EQ(e.cgroup_id, 0U) << type;
    EXPECT_EQ(e.comm, "") << type;
    EXPECT_EQ(e.fd, -1) << type;
    EXPECT_EQ(e.result, 0) << type;
    EXPECT_EQ(e.proto, Proto::kTcp) << type;
    EXPECT_EQ(e.sock_type, SOCK_STREAM) << type;
    EXPECT_EQ(e.ts_ns, 123'456'789'000ULL) << type;
    EXPECT_EQ(e.sock_id, 0xffff'8880'0102'0304ULL) << type;
    EXPECT_EQ(e.netns, 4026531840U) << type;
  }
}

TEST(DecodeEventTest, Ipv6StateEventEndpoints) {
  pl_sock_event raw = state_record();
  raw.sock_family = AF_INET6;
  const std::array<std::uint8_t, 16> mapped = {0, 0, 0,    0,    0,  0, 0, 0,
                                               0, 0, 0xff, 0xff, 10, 0, 0, 1};
  const std::array<std::uint8_t, 16> global = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                               0,    0,    0,    0,    0, 0, 0, 2};
  std::memcpy(raw.saddr, mapped.data(), mapped.size());
  std::memcpy(raw.daddr, global.data(), global.size());
  const Event e = decode_ok(raw);
  EXPECT_EQ(e.family, Family::kIpv6);
  ASSERT_TRUE(e.local && e.remote);
  EXPECT_EQ(e.local->to_string(), "[::ffff:10.0.0.1]:8080");
  EXPECT_EQ(e.remote->to_string(), "[2001:db8::2]:40112");
}

}  // namespace

TEST(DecodeEventTest, RequestedNeedsReqValid) {
  pl_event raw = bind_record();
  raw.flags = PL_F_OPTS_VALID;  // req holds an address but the flag says it is not valid
  const Event e = decode_ok(raw);
  EXPECT_FALSE(e.requested.has_value());
  EXPECT_FALSE(e.requested_fault);
}

TEST(DecodeEventTest, ReqFaultIsReported) {
  pl_event raw = bind_record();
  raw.flags = PL_F_REQ_FAULT | PL_F_OPTS_VALID;
  raw.ret = -EFAULT;
  const Event e = decode_ok(raw);
  EXPECT_TRUE(e.requested_fault);
  EXPECT_FALSE(e.requested.has_value());
}

TEST(DecodeEventTest, UnspecRequestedFamilyMeansNoAddress) {
  pl_event raw = bind_record();
  raw.type = PL_EV_CONNECT;
  raw.req = pl_endpoint{};
  raw.req.family = PL_AF_NONE;
  raw.req.port = 0;
  const Event e = decode_ok(raw);
  EXPECT_FALSE(e.requested.has_value());
  EXPECT_FALSE(e.requested_fault);
}

TEST(DecodeEventTest, UnknownEndpointFamilyMeansNoAddress) {
  pl_event raw = bind_record();
  raw.req.family = AF_UNIX;
  raw.local = v4_endpoint({1, 2, 3, 4}, 5);
  raw.local.family = 17;
  const Event e = decode_ok(raw);
  EXPECT_FALSE(e.requested.has_value());
  EXPECT_FALSE(e.local.has_value());
}

TEST(DecodeEventTest, CommWithoutNulIsSixteenCharsAndNoMore) {
  pl_event raw = bind_record();
  std::memcpy(raw.comm, "abcdefghijklmnop", sizeof raw.comm);  // no terminator
  raw._reserved = 0x41414141;                                  // 'AAAA' right after comm
  const Event e = decode_ok(raw);
  EXPECT_EQ(e.comm, "abcdefghijklmnop");
  EXPECT_EQ(e.comm.size(), 16U);
}

TEST(DecodeEventTest, CommStopsAtTheFirstNul) {
  pl_event raw = bind_record();
  std::memcpy(raw.comm, "sshd\0garbage!!!", sizeof raw.comm);
  EXPECT_EQ(decode_ok(raw).comm, "sshd");
  std::memset(raw.comm, 0, sizeof raw.comm);
  EXPECT_EQ(decode_ok(raw).comm, "");
}

TEST(DecodeEventTest, DecodesFromAnUnalignedBuffer) {
  const pl_event raw = bind_record();
  std::vector<std::byte> buf(sizeof raw + 1);
  std::memcpy(buf.data() + 1, &raw, sizeof raw);
  const DecodeResult r = decode_event(std::span<const std::byte>(buf).subspan(1));
  ASSERT_TRUE(r.event.has_value());
  EXPECT_EQ(r.event->pid, 4242U);
  EXPECT_EQ(r.event->comm, "nginx");
}

TEST(DecodeEventTest, ProtocolsAndEventTypes) {
  const std::pair<int, Proto> protos[] = {{IPPROTO_TCP, Proto::kTcp},
                                          {IPPROTO_UDP, Proto::kUdp},
                                          {IPPROTO_UDPLITE, Proto::kUdpLite},
                                          {IPPROTO_MPTCP, Proto::kMptcp},
                                          {IPPROTO_SCTP, Proto::kSctp}};
  for (const auto& [ipproto, proto] : protos) {
    pl_event raw = bind_record();
    raw.protocol = static_cast<std::uint16_t>(ipproto);
    EXPECT_EQ(decode_ok(raw).proto, proto) << ipproto;
  }
  const std::pair<std::uint16_t, EventType> calls[] = {{PL_EV_BIND, EventType::kBind},
                                                       {PL_EV_LISTEN, EventType::kListen},
                                                       {PL_EV_CONNECT, EventType::kConnect}};
  for (const auto& [raw_type, type] : calls) {
    pl_event raw = bind_record();
    raw.type = raw_type;
    EXPECT_EQ(decode_ok(raw).type, type) << raw_type;
  }
  const std::pair<std::uint16_t, EventType> socket_events[] = {
      {PL_EV_STATE, EventType::kState},
      {PL_EV_RESET, EventType::kReset},
      {PL_EV_DESTROY, EventType::kDestroy},
      {PL_EV_RESET_SENT, EventType::kResetSent}};
  for (const auto& [raw_type, type] : socket_events) {
    pl_sock_event raw = state_record();
    raw.type = raw_type;
    EXPECT_EQ(decode_ok(raw).type, type) << raw_type;
  }
}

template <class Record>
void expect_error(const Record& raw, DecodeError expected) {
  const DecodeResult r = decode(raw);
  EXPECT_FALSE(r.event.has_value());
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(*r.error, expected);
  EXPECT_FALSE(to_string(*r.error).empty());
  EXPECT_NE(to_string(*r.error), "?");
}

TEST(DecodeEventTest, TooShortRecords) {
  const pl_event raw = bind_record();
  const auto bytes = std::as_bytes(std::span<const pl_event, 1>(&raw, 1));
  for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{84},
                                 sizeof(pl_event) - 4, sizeof(pl_event) - 1}) {
    const DecodeResult r = decode_event(bytes.first(size));
    EXPECT_FALSE(r.event.has_value()) << size;
    ASSERT_TRUE(r.error.has_value()) << size;
    EXPECT_EQ(*r.error, DecodeError::kTooShort) << size;
  }
  EXPECT_EQ(decode_event({}).error, DecodeError::kTooShort);
}

TEST(DecodeEventTest, TooShortSocketEvents) {
  const pl_sock_event raw = state_record();
  const auto bytes = std::as_bytes(std::span<const pl_sock_event, 1>(&raw, 1));
  for (const std::size_t size : {std::size_t{23}, std::size_t{24}, sizeof(pl_sock_event) - 1}) {
    EXPECT_EQ(decode_event(bytes.first(size)).error, DecodeError::kTooShort) << size;
  }
}

TEST(DecodeEventTest, TimestampsFlagOnlyWhenSet) {
  pl_sock_event raw = state_record();
  EXPECT_FALSE(decode_ok(raw).timestamps);
  raw.flags |= PL_F_TS_RECENT;
  EXPECT_TRUE(decode_ok(raw).timestamps);
}

TEST(DecodeEventTest, UnknownEventTypes) {
  for (const int type : {0, 8, 100, 0xffff}) {
    pl_event raw = bind_record();
    raw.type = static_cast<std::uint16_t>(type);
    expect_error(raw, DecodeError::kBadType);
  }
}

TEST(DecodeEventTest, BadSocketFamilies) {
  for (const int family : {AF_UNSPEC, AF_UNIX, AF_NETLINK, AF_PACKET, 0xffff}) {
    pl_event raw = bind_record();
    raw.sock_family = static_cast<std::uint16_t>(family);
    expect_error(raw, DecodeError::kBadFamily);
  }
}

TEST(DecodeEventTest, UnknownProtocols) {
  for (const int protocol : {0, int{IPPROTO_ICMP}, int{IPPROTO_ICMPV6}, int{IPPROTO_RAW}, 0xffff}) {
    pl_event raw = bind_record();
    raw.protocol = static_cast<std::uint16_t>(protocol);
    expect_error(raw, DecodeError::kBadProtocol);
  }
}

struct FailedCase {
  EventType type;
  int result;
  bool failed;
};

TEST(EventTest, FailedSemantics) {
  const FailedCase cases[] = {
      {EventType::kBind, 0, false},
      {EventType::kBind, -EADDRINUSE, true},
      {EventType::kBind, -EACCES, true},
      {EventType::kBind, -EADDRNOTAVAIL, true},
      {EventType::kListen, 0, false},
      {EventType::kListen, -EADDRINUSE, true},
      {EventType::kConnect, 0, false},
      {EventType::kConnect, -EINPROGRESS, false},  // non-blocking connect in progress
      {EventType::kConnect, -ECONNREFUSED, true},
      {EventType::kConnect, -EADDRNOTAVAIL, true},
      {EventType::kConnect, -EADDRINUSE, true},
      {EventType::kState, 0, false},
      {EventType::kState, -EADDRINUSE, false},  // state events are never failures
      {EventType::kReset, 0, false},
      {EventType::kReset, -ECONNRESET, false},
  };
  for (const auto& c : cases) {
    Event e;
    e.type = c.type;
    e.result = c.result;
    EXPECT_EQ(e.failed(), c.failed) << to_string(c.type) << " " << c.result;
  }
}

TEST(EventTest, IsCall) {
  Event e;
  for (const auto& [type, call] :
       std::array<std::pair<EventType, bool>, 5>{{{EventType::kBind, true},
                                                  {EventType::kListen, true},
                                                  {EventType::kConnect, true},
                                                  {EventType::kState, false},
                                                  {EventType::kReset, false}}}) {
    e.type = type;
    EXPECT_EQ(e.is_call(), call) << to_string(type);
  }
}

TEST(EventTest, ShownEndpointsPerEventType) {
  const Endpoint requested = *Endpoint::parse("10.0.0.1:80");
  const Endpoint local = *Endpoint::parse("10.0.0.2:40000");
  const Endpoint remote = *Endpoint::parse("10.0.0.3:443");
  Event e;
  e.requested = requested;
  e.local = local;
  e.remote = remote;

  e.type = EventType::kBind;  // bind: the address asked for
  EXPECT_EQ(e.shown_local(), requested);
  EXPECT_EQ(e.shown_remote(), remote);

  e.type = EventType::kConnect;  // connect: the destination is the remote end
  EXPECT_EQ(e.shown_local(), local);
  EXPECT_EQ(e.shown_remote(), requested);

  for (const EventType t : {EventType::kListen, EventType::kState, EventType::kReset}) {
    e.type = t;
    EXPECT_EQ(e.shown_local(), local) << to_string(t);
    EXPECT_EQ(e.shown_remote(), remote) << to_string(t);
  }
}

TEST(EventTest, BindWithUnreadableAddressShowsNothingLocal) {
  Event e;
  e.type = EventType::kBind;
  e.local = *Endpoint::parse("10.0.0.2:40000");
  e.requested_fault = true;
  EXPECT_FALSE(e.shown_local().has_value());
}

TEST(EventTest, EventTypeNames) {
  EXPECT_EQ(to_string(EventType::kBind), "bind");
  EXPECT_EQ(to_string(EventType::kListen), "listen");
  EXPECT_EQ(to_string(EventType::kConnect), "connect");
  EXPECT_EQ(to_string(EventType::kState), "state");
  EXPECT_EQ(to_string(EventType::kReset), "reset");
  EXPECT_EQ(to_string(EventType::kResetSent), "reset_sent");
}

TEST(DecodeEventTest, StateEventEndpoints) {
  pl_sock_event raw = state_record();
  std::memset(raw.saddr + 4, 0xaa, sizeof raw.saddr - 4);  // IPv4: bytes past the 4th ignored
  const Event e = decode_ok(raw);
  EXPECT_EQ(e.type, EventType::kState);
  EXPECT_FALSE(e.failed());
  EXPECT_FALSE(e.requested.has_value());
  EXPECT_EQ(e.old_state, 5);
  EXPECT_EQ(e.new_state, 7);
  ASSERT_TRUE(e.shown_local().has_value());
  ASSERT_TRUE(e.shown_remote().has_value());
  EXPECT_EQ(e.shown_local()->to_string(), "127.0.0.1:8080");
  EXPECT_EQ(e.shown_remote()->to_string(), "127.0.0.1:40112");
}

// A state event in a call's record (the layout before PL_ABI_VERSION 2) is refused, not misread.
TEST(DecodeEventTest, SocketEventsInACallsRecordAreRefused) {
  for (const std::uint16_t type : {PL_EV_STATE, PL_EV_RESET, PL_EV_DESTROY, PL_EV_RESET_SENT}) {
    pl_event raw = bind_record();
    raw.type = type;
    expect_error(raw, DecodeError::kBadLength);
  }

}  // namespace
}  // namespace portlens
