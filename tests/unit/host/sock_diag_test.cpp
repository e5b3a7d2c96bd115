// Unit tests of the snapshot's pure parts: sock_diag messages, iterator records, HZ, and the
// netns config parsers. No privileges, no kernel.
#include "agent/kernel/sock_diag.hpp"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "agent/kernel/netns_config.hpp"
#include "agent/kernel/snapshot.hpp"

namespace portlens {
namespace {

using std::chrono::milliseconds;

Endpoint ep(const std::string& addr, std::uint16_t port) { return {*IpAddress::parse(addr), port}; }

// An inet_diag_msg as the kernel sends it, with an optional INET_DIAG_SKV6ONLY attribute.
std::vector<std::byte> diag_message(const inet_diag_msg& msg, std::optional<bool> v6only = {}) {
  std::vector<std::byte> out(NLMSG_ALIGN(sizeof msg));
  std::memcpy(out.data(), &msg, sizeof msg);
  if (v6only) {
    nlattr attr{};
    attr.nla_len = NLA_HDRLEN + 1;
    attr.nla_type = INET_DIAG_SKV6ONLY;
    const std::size_t at = out.size();
    out.resize(at + NLA_ALIGN(attr.nla_len));
    std::memcpy(out.data() + at, &attr, sizeof attr);
    out[at + NLA_HDRLEN] = std::byte{static_cast<std::uint8_t>(*v6only ? 1 : 0)};
  }
  return out;
}

inet_diag_msg v4_msg(std::uint8_t state, const char* src, std::uint16_t sport, const char* dst,
                     std::uint16_t dport) {
  inet_diag_msg m{};
  m.idiag_family = AF_INET;
  m.idiag_state = state;
  m.id.idiag_sport = htons(sport);
  m.id.idiag_dport = htons(dport);
  inet_pton(AF_INET, src, &m.id.idiag_src[0]);
  inet_pton(AF_INET, dst, &m.id.idiag_dst[0]);
  return m;
}

TEST(SockDiagDecode, FullTcpSocketKeepsWhatSockDiagKnowsAndNoReuseFlags) {
  inet_diag_msg m = v4_msg(1 /* ESTABLISHED */, "127.0.0.1", 40000, "127.0.0.1", 8080);
  m.idiag_uid = 1000;
  m.idiag_inode = 4242;
  m.id.idiag_if = 1;
  m.idiag_timer = 2;  // keepalive
  const auto e = decode_inet_diag(diag_message(m), Proto::kTcp, 77);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->state, TcpState::kEstablished);
  EXPECT_EQ(e->local, ep("127.0.0.1", 40000));
  EXPECT_EQ(e->remote, ep("127.0.0.1", 8080));
  EXPECT_EQ(e->uid, 1000U);
  EXPECT_EQ(e->inode, 4242U);
  EXPECT_EQ(e->bound_dev_if, 1);
  EXPECT_EQ(e->netns, 77U);
  EXPECT_EQ(e->v6only, false);  // an IPv4 socket
  EXPECT_FALSE(e->reuseaddr.has_value());
  EXPECT_FALSE(e->reuseport.has_value());
  EXPECT_FALSE(e->time_wait_remaining.has_value());
}

// tcp_diag_get_info(): for a listener, idiag_rqueue is sk_ack_backlog and idiag_wqueue
// sk_max_ack_backlog; for any other socket they are queued bytes, not a queue.
TEST(SockDiagDecode, ListenerQueueFromRqueueAndWqueueOnly) {
  inet_diag_msg m = v4_msg(10 /* LISTEN */, "127.0.0.1", 8080, "0.0.0.0", 0);
  m.idiag_inode = 99;
  m.idiag_rqueue = 3;
  m.idiag_wqueue = 128;
  const auto q = decode_inet_diag_listen_queue(diag_message(m), 77);
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->length, 3U);
  EXPECT_EQ(q->limit, 128U);
  EXPECT_EQ(q->inode, 99U);
  EXPECT_EQ(q->netns, 77U);
  EXPECT_EQ(q->local, ep("127.0.0.1", 8080));
  EXPECT_FALSE(q->syn_queue.has_value());
  inet_diag_msg est = v4_msg(1 /* ESTABLISHED */, "127.0.0.1", 8080, "127.0.0.1", 40000);
  est.idiag_rqueue = 3;
  EXPECT_FALSE(decode_inet_diag_listen_queue(diag_message(est), 77).has_value());
  const auto whole = diag_message(m);
  EXPECT_FALSE(
      decode_inet_diag_listen_queue(std::span(whole.data(), sizeof(inet_diag_msg) - 1), 77));
}

TEST(SockDiagDecode, TimeWaitIsRecognisedByItsTimerAndKeepsItsSubstate) {
  // inet_twsk_diag_fill() puts tw_substate in idiag_state: FIN_WAIT2 here.
  inet_diag_msg m = v4_msg(5 /* FIN_WAIT2 */, "127.0.0.1", 40000, "127.0.0.1", 8080);
  m.idiag_timer = 3;
  m.idiag_expires = 41250;
  const auto e = decode_inet_diag(diag_message(m), Proto::kTcp, 1);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->state, TcpState::kTimeWait);
  EXPECT_EQ(e->time_wait_substate, TcpState::kFinWait2);
  EXPECT_EQ(e->time_wait_remaining, milliseconds(41250));
  EXPECT_FALSE(e->uid.has_value());
  EXPECT_EQ(e->inode, 0U);
  EXPECT_FALSE(e->timestamps.has_value());
}

TEST(SockDiagDecode, Ipv6ListenerReadsV6onlyAttribute) {
  inet_diag_msg m{};
  m.idiag_family = AF_INET6;
  m.idiag_state = 10;  // LISTEN
  m.id.idiag_sport = htons(8082);
  for (const bool v6only : {true, false}) {
    const auto e = decode_inet_diag(diag_message(m, v6only), Proto::kTcp, 1);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->local, ep("::", 8082));
    EXPECT_FALSE(e->remote.has_value());
    EXPECT_EQ(e->v6only, v6only);
  }
  // Without the attribute, v6only of an IPv6 socket is unknown.
  EXPECT_FALSE(decode_inet_diag(diag_message(m), Proto::kTcp, 1)->v6only.has_value());
}

TEST(SockDiagDecode, BoundInactiveIsAClosedBoundSocket) {
  const inet_diag_msg m = v4_msg(13 /* TCP_BOUND_INACTIVE */, "127.0.0.1", 8081, "0.0.0.0", 0);
  const auto e = decode_inet_diag(diag_message(m), Proto::kTcp, 1);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->state, TcpState::kClose);
  EXPECT_FALSE(e->remote.has_value());
}

TEST(SockDiagDecode, UdpHasNoState) {
  const inet_diag_msg m = v4_msg(7, "127.0.0.1", 5353, "0.0.0.0", 0);
  const auto e = decode_inet_diag(diag_message(m), Proto::kUdp, 1);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->proto, Proto::kUdp);
  EXPECT_FALSE(e->state.has_value());
}

TEST(SockDiagDecode, RejectsRequestSocketsOddFamiliesAndShortMessages) {
  EXPECT_FALSE(
      decode_inet_diag(diag_message(v4_msg(3, "127.0.0.1", 1, "127.0.0.1", 2)), Proto::kTcp, 1));
  EXPECT_FALSE(
      decode_inet_diag(diag_message(v4_msg(12, "127.0.0.1", 1, "127.0.0.1", 2)), Proto::kTcp, 1));
  EXPECT_FALSE(
      decode_inet_diag(diag_message(v4_msg(99, "127.0.0.1", 1, "127.0.0.1", 2)), Proto::kTcp, 1));
  inet_diag_msg unix_msg{};
  unix_msg.idiag_family = AF_UNIX;
  EXPECT_FALSE(decode_inet_diag(diag_message(unix_msg), Proto::kTcp, 1));
  const auto full = diag_message(v4_msg(1, "127.0.0.1", 1, "127.0.0.1", 2));
  EXPECT_FALSE(decode_inet_diag(std::span(full).first(10), Proto::kTcp, 1));
}

pl_sock_record tcp_record(std::uint8_t state) {
  pl_sock_record r{};
  r.sk = 0xffff888012345678;
  r.protocol = IPPROTO_TCP;
  r.family = AF_INET;
  r.state = state;
  r.netns = 4026531840;
  r.local.family = PL_AF_INET;
  r.remote.family = PL_AF_INET;
  const std::array<std::uint8_t, 4> lo{127, 0, 0, 1};
  std::memcpy(r.local.addr, lo.data(), lo.size());
  r.local.port = 8080;
  return r;
}

TEST(SockRecordDecode, FullSocketCarriesEveryField) {
  pl_sock_record r = tcp_record(10 /* LISTEN */);
  r.reuse = 1;
  r.flags = PL_SR_F_FULL | PL_SR_F_REUSEPORT | PL_SR_F_BINDPORT_LOCK;
  r.uid = 1000;
  r.ino = 555;
  r.bound_dev_if = 3;
  const auto e = decode_sock_record(r, 250);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->proto, Proto::kTcp);
  EXPECT_EQ(e->state, TcpState::kListen);
  EXPECT_EQ(e->local, ep("127.0.0.1", 8080));
  EXPECT_FALSE(e->remote.has_value());
  EXPECT_EQ(e->reuseaddr, true);
  EXPECT_EQ(e->reuseport, true);
  EXPECT_EQ(e->v6only, false);
  EXPECT_EQ(e->bound_dev_if, 3);
  EXPECT_EQ(e->uid, 1000U);
  EXPECT_EQ(e->inode, 555U);
  EXPECT_TRUE(e->explicit_port);
  EXPECT_EQ(e->sock_id, 0xffff888012345678U);
  EXPECT_EQ(e->netns, 4026531840U);
}

TEST(SockRecordDecode, ListenQueueOnlyWithItsFlag) {
  pl_sock_record r = tcp_record(10 /* LISTEN */);
  r.flags = PL_SR_F_FULL;
  r.ack_backlog = 2;
  EXPECT_FALSE(decode_listen_queue(r).has_value());  // without the flag, not read
  r.flags |= PL_SR_F_LISTEN_QUEUE;
  r.max_ack_backlog = 1;
  r.syn_qlen = 4;
  r.ino = 555;
  const auto q = decode_listen_queue(r);
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->length, 2U);
  EXPECT_EQ(q->limit, 1U);
  EXPECT_EQ(q->syn_queue, 4U);
  EXPECT_EQ(q->inode, 555U);
  EXPECT_EQ(q->sock_id, r.sk);
  EXPECT_EQ(q->local, ep("127.0.0.1", 8080));
  r.protocol = IPPROTO_UDP;
  EXPECT_FALSE(decode_listen_queue(r).has_value());
}

TEST(SockRecordDecode, TheBindBucketDecidesExplicitPortForTcp) {
  // An accepted child: sk_clone_lock() cleared SOCK_BINDPORT_LOCK, the listener's bucket stays.
  pl_sock_record r = tcp_record(1);
  r.remote.port = 40000;
  r.flags = PL_SR_F_FULL | PL_SR_F_BUCKET_READ | PL_SR_F_BUCKET_BOUND;
  EXPECT_TRUE(decode_sock_record(r, 250)->explicit_port);
  // connect() made the bucket (fastreuse -1).
  r.flags = PL_SR_F_FULL | PL_SR_F_BUCKET_READ;
  EXPECT_FALSE(decode_sock_record(r, 250)->explicit_port);
}

TEST(SockRecordDecode, TimeWaitRemainingIsConvertedWithHz) {
  pl_sock_record r = tcp_record(6 /* TIME_WAIT */);
  r.remote.port = 9000;
  r.flags = PL_SR_F_TIMEWAIT | PL_SR_F_TW_TIMER | PL_SR_F_TW_TIMESTAMPS;
  r.tw_substate = 6;
  r.now_jiffies = 4'295'000'000;
  r.tw_expires = r.now_jiffies + 14'976;  // 59.904 s at HZ=250
  auto e = decode_sock_record(r, 250);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->state, TcpState::kTimeWait);
  EXPECT_EQ(e->time_wait_substate, TcpState::kTimeWait);
  EXPECT_EQ(e->time_wait_remaining, milliseconds(59'904));
  EXPECT_EQ(e->timestamps, true);
  EXPECT_FALSE(e->uid.has_value());
  EXPECT_EQ(e->inode, 0U);
  // jiffies_to_msecs() rounds up where a jiffy is not a whole number of milliseconds.
  r.tw_expires = r.now_jiffies + 1;
  EXPECT_EQ(decode_sock_record(r, 300)->time_wait_remaining, milliseconds(4));
  // Past but not yet run: nothing left, never negative.
  r.tw_expires = r.now_jiffies - 5;
  EXPECT_EQ(decode_sock_record(r, 250)->time_wait_remaining, milliseconds(0));
  // Unknown HZ: unknown remaining time, not a guess.
  EXPECT_FALSE(decode_sock_record(r, 0)->time_wait_remaining.has_value());
}

TEST(SockRecordDecode, UdpAndIpv6) {
  pl_sock_record r{};
  r.protocol = IPPROTO_UDP;
  r.family = AF_INET6;
  r.state = 7;
  r.local.family = PL_AF_INET6;
  r.remote.family = PL_AF_INET6;
  r.local.port = 5353;
  r.flags = PL_SR_F_FULL | PL_SR_F_V6ONLY;
  const auto e = decode_sock_record(r, 250);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->proto, Proto::kUdp);
  EXPECT_FALSE(e->state.has_value());
  EXPECT_EQ(e->local, ep("::", 5353));
  EXPECT_EQ(e->v6only, true);
}

TEST(SockRecordDecode, TheBindBucketsFastPathState) {
  pl_sock_record r = tcp_record(7 /* CLOSE: bound only */);
  r.flags = PL_SR_F_FULL | PL_SR_F_BUCKET_READ | PL_SR_F_BUCKET_BOUND;
  r.fastreuse = 0;
  r.fastreuseport = 2;  // FASTREUSEPORT_STRICT
  r.fastuid = 1000;
  r.fast_sk_family = AF_INET6;
  r.fast_ipv6_only = 1;
  const std::array<std::uint8_t, 16> lo6{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  std::memcpy(r.fast_v6_rcv_saddr, lo6.data(), lo6.size());
  const std::array<std::uint8_t, 4> lo4_ipv6{127, 0, 0, 6};
  std::memcpy(r.fast_rcv_saddr, lo4_ipv6.data(), lo4_ipv6.size());
  r.bucket_l3mdev = 0;
  const auto e = decode_sock_record(r, 250);
  ASSERT_TRUE(e.has_value());
  ASSERT_TRUE(e->bind_bucket.has_value());
  EXPECT_EQ(e->bind_bucket->fastreuse, 0);
  EXPECT_EQ(e->bind_bucket->fastreuseport, TcpBindBucket::kFastreuseportStrict);
  EXPECT_EQ(e->bind_bucket->fastuid, 1000U);
  EXPECT_EQ(e->bind_bucket->fast_family, Family::kIpv6);
  EXPECT_EQ(e->bind_bucket->fast_v6_rcv_saddr, *IpAddress::parse("::1"));
  EXPECT_EQ(e->bind_bucket->fast_rcv_saddr, *IpAddress::parse("127.0.0.6"));
  EXPECT_TRUE(e->bind_bucket->fast_ipv6_only);
  EXPECT_EQ(e->bind_bucket->l3mdev, 0);
  EXPECT_TRUE(e->explicit_port);
  // A connect()-made bucket: both fast fields -1.
  r.fastreuse = -1;
  r.fastreuseport = -1;
  r.flags = PL_SR_F_FULL | PL_SR_F_BUCKET_READ;
  EXPECT_EQ(decode_sock_record(r, 250)->bind_bucket->fastreuse, -1);
  EXPECT_EQ(decode_sock_record(r, 250)->bind_bucket->fastreuseport, -1);
  // Not read: unknown, not zero.
  r.flags = PL_SR_F_FULL;
  EXPECT_FALSE(decode_sock_record(r, 250)->bind_bucket.has_value());
  EXPECT_FALSE(decode_sock_record(r, 250)->v4_rcv_saddr.has_value());
  EXPECT_FALSE(decode_sock_record(r, 250)->udp_chain_position.has_value());
}

TEST(SockRecordDecode, UdpChainPositionAndIpv4ReceiveAddressOfAnIpv6Socket) {
  pl_sock_record r{};
  r.protocol = IPPROTO_UDP;
  r.family = AF_INET6;
  r.state = 1;
  r.local.family = PL_AF_INET6;
  r.remote.family = PL_AF_INET6;
  const std::array<std::uint8_t, 16> lo6{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  std::memcpy(r.local.addr, lo6.data(), lo6.size());
  std::memcpy(r.remote.addr, lo6.data(), lo6.size());
  r.local.port = 5353;
  r.remote.port = 9000;
  const std::array<std::uint8_t, 4> lo4_ipv6{127, 0, 0, 6};
  std::memcpy(r.v4_rcv_saddr, lo4_ipv6.data(), lo4_ipv6.size());
  r.udp_chain_pos = 3;
  r.udp_slot_count = 5;
  r.flags = PL_SR_F_FULL | PL_SR_F_V4_RCV_SADDR | PL_SR_F_UDP_CHAIN;
  const auto e = decode_sock_record(r, 250);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->local, ep("::1", 5353));
  EXPECT_EQ(e->v6only, false);
  EXPECT_EQ(e->v4_rcv_saddr, *IpAddress::parse("127.0.0.6"));
  EXPECT_EQ(e->udp_chain_position, 3U);
  EXPECT_EQ(e->udp_slot_count, 5U);
  EXPECT_FALSE(e->bind_bucket.has_value());
  // Without the flags the fields stay unknown.
  r.flags = PL_SR_F_FULL;
  EXPECT_FALSE(decode_sock_record(r, 250)->v4_rcv_saddr.has_value());
  EXPECT_FALSE(decode_sock_record(r, 250)->udp_chain_position.has_value());
  EXPECT_FALSE(decode_sock_record(r, 250)->udp_slot_count.has_value());
}

TEST(SockRecordDecode, RejectsOddRecords) {
  pl_sock_record r = tcp_record(1);
  r.protocol = 132;  // SCTP: not from these iterators
  EXPECT_FALSE(decode_sock_record(r, 250));
  r = tcp_record(12);  // request minisocket
  EXPECT_FALSE(decode_sock_record(r, 250));
  r = tcp_record(0);  // no such state
  EXPECT_FALSE(decode_sock_record(r, 250));
  r = tcp_record(1);
  r.local.family = 1;
  EXPECT_FALSE(decode_sock_record(r, 250));
}

TEST(KernelHz, FromAJiffiesSysctlExactlyOrNotAtAll) {
  EXPECT_EQ(hz_from_sysctl(15'000, 60), 250U);
  EXPECT_EQ(hz_from_sysctl(7'200'000, 7200), 1000U);
  EXPECT_EQ(hz_from_sysctl(18'000, 60), 300U);
  EXPECT_FALSE(hz_from_sysctl(0, 0));
  EXPECT_FALSE(hz_from_sysctl(15001, 60));  // not a multiple: changed between the two reads
  EXPECT_FALSE(hz_from_sysctl(60, 60));     // 1 Hz: not a kernel
}

TEST(KernelHz, FromATimedMeasurementSnapsToAConfigChoice) {
  EXPECT_EQ(hz_from_measurement(125, 0.5), 250U);
  EXPECT_EQ(hz_from_measurement(124, 0.5), 250U);  // one edge late
  EXPECT_EQ(hz_from_measurement(500, 0.5), 1000U);
  EXPECT_EQ(hz_from_measurement(50, 0.5), 100U);
  EXPECT_EQ(hz_from_measurement(350, 0.5), 700U);  // no choice near: the measurement itself
  EXPECT_EQ(hz_from_measurement(10, 0), 0U);
}

TEST(NetnsConfigParse, PortRange) {
  EXPECT_EQ(parse_port_range("32768\t60999\n"),
            (std::pair<std::uint16_t, std::uint16_t>{32768, 60999}));
  EXPECT_EQ(parse_port_range(" 1024 1024 "), (std::pair<std::uint16_t, std::uint16_t>{1024, 1024}));
  EXPECT_FALSE(parse_port_range(""));
  EXPECT_FALSE(parse_port_range("   \n"));
  EXPECT_FALSE(parse_port_range("32768"));
  EXPECT_FALSE(parse_port_range("60999 32768"));
  EXPECT_FALSE(parse_port_range("0 100"));
  EXPECT_FALSE(parse_port_range("1 65536"));
  EXPECT_FALSE(parse_port_range("a b"));
  EXPECT_FALSE(parse_port_range("1 2 3"));
}

TEST(NetnsConfigParse, ReservedPortList) {
  const auto ports = parse_port_list("8080,9000-9002\n");
  ASSERT_TRUE(ports.has_value());
  EXPECT_EQ(ports->count(), 4U);
  EXPECT_TRUE(ports->test(8080));
  EXPECT_TRUE(ports->test(9000));
  EXPECT_TRUE(ports->test(9002));
  EXPECT_EQ(parse_port_list("\n")->count(), 0U);
  EXPECT_EQ(parse_port_list("")->count(), 0U);
  EXPECT_EQ(parse_port_list("0-65535")->count(), 65536U);
  EXPECT_FALSE(parse_port_list("8080,"));
  EXPECT_FALSE(parse_port_list("9002-9000"));
  EXPECT_FALSE(parse_port_list("70000"));
  EXPECT_FALSE(parse_port_list("80;81"));
  EXPECT_FALSE(parse_port_list("-5"));
}

TEST(NetnsConfigParse, Integers) {
  EXPECT_EQ(parse_sysctl_int("2\n", 0, 2), 2);
  EXPECT_EQ(parse_sysctl_int(" 0 ", 0, 2), 0);
  EXPECT_FALSE(parse_sysctl_int("3", 0, 2));
  EXPECT_FALSE(parse_sysctl_int("-1", 0, 2));
  EXPECT_FALSE(parse_sysctl_int("1x", 0, 2));
  EXPECT_FALSE(parse_sysctl_int("", 0, 2));
  EXPECT_FALSE(parse_sysctl_int("99999999999999999999", 0, 2));
}

TEST(NetnsConfigParse, SysctlsIntoConfigKeepDefaultsForOddValuesAndReportThem) {
  std::map<std::string, std::string> texts{
      {"net.ipv4.ip_local_port_range", "40000\t40100\n"},
      {"net.ipv4.ip_local_reserved_ports", "40010\n"},
      {"net.ipv4.tcp_tw_reuse", "7\n"},  // out of range
      {"net.ipv4.ip_unprivileged_port_start", "junk"},
      {"net.ipv4.ip_autobind_reuse", "1\n"},
      {"net.ipv4.ip_nonlocal_bind", "1\n"},
      {"net.ipv6.ip_nonlocal_bind", "0\n"},
      {"net.ipv4.tcp_max_tw_buckets", "1000\n"},
      {"net.core.somaxconn", "4096\n"},
  };
  std::vector<std::string> problems;
  const NetnsPortConfig c = port_config_from_sysctls(texts, &problems);
  EXPECT_EQ(c.port_range_lo, 40000);
  EXPECT_EQ(c.port_range_hi, 40100);
  EXPECT_TRUE(c.reserved_ports.test(40010));
  EXPECT_EQ(c.tcp_tw_reuse, 2);                         // default kept
  EXPECT_EQ(c.ip_unprivileged_port_start, 1024);        // default kept
  EXPECT_EQ(c.tcp_tw_reuse_delay, milliseconds(1000));  // absent before 6.14: silently default
  EXPECT_TRUE(c.ip_autobind_reuse);
  EXPECT_TRUE(c.ip_nonlocal_bind);
  EXPECT_FALSE(c.ip6_nonlocal_bind);
  EXPECT_EQ(c.tcp_max_tw_buckets, 1000U);
  EXPECT_EQ(c.somaxconn, 4096U);
  ASSERT_EQ(problems.size(), 2U);
  EXPECT_NE(problems[0].find("tcp_tw_reuse"), std::string::npos);
  EXPECT_NE(problems[1].find("ip_unprivileged_port_start"), std::string::npos);

  problems.clear();
  texts["net.ipv4.tcp_tw_reuse_delay"] = "250\n";
  texts.erase("net.ipv4.ip_local_port_range");
  const NetnsPortConfig d = port_config_from_sysctls(texts, &problems);
  EXPECT_EQ(d.tcp_tw_reuse_delay, milliseconds(250));
  EXPECT_EQ(d.port_range_lo, 32768);
  EXPECT_EQ(problems.size(), 3U);  // the two odd values and the missing range

  // tcp_max_tw_buckets: 0 to INT_MAX; odd or missing, no limit is assumed (its default depends
  // on the hash table's size), and said so.
  problems.clear();
  texts["net.ipv4.tcp_max_tw_buckets"] = "-1\n";
  EXPECT_FALSE(port_config_from_sysctls(texts, &problems).tcp_max_tw_buckets.has_value());
  ASSERT_EQ(problems.size(), 4U);
  EXPECT_NE(problems[3].find("tcp_max_tw_buckets"), std::string::npos);
  EXPECT_NE(problems[3].find("without a limit"), std::string::npos);
  texts["net.ipv4.tcp_max_tw_buckets"] = "2147483647";
  EXPECT_EQ(port_config_from_sysctls(texts, &problems).tcp_max_tw_buckets, 2147483647U);
  texts["net.ipv4.tcp_max_tw_buckets"] = "0";
  EXPECT_EQ(port_config_from_sysctls(texts, &problems).tcp_max_tw_buckets, 0U);
  texts.erase("net.ipv4.tcp_max_tw_buckets");
  problems.clear();
  EXPECT_FALSE(port_config_from_sysctls(texts, &problems).tcp_max_tw_buckets.has_value());
  EXPECT_EQ(problems.size(), 4U);
}

TEST(NetnsConfigParse, NetstatCounter) {
  // The shape of /proc/net/netstat: a line of names, then a line of values, per group.
  const std::string text =
      "TcpExt: SyncookiesSent TW TCPTimeWaitOverflow TCPReqQFullDrop\n"
      "TcpExt: 0 4210 2876 0\n"
      "IpExt: InNoRoutes TCPTimeWaitOverflow\n"
      "IpExt: 0 99\n";
  EXPECT_EQ(parse_netstat_counter(text, "TcpExt", "TCPTimeWaitOverflow"), 2876U);
  EXPECT_EQ(parse_netstat_counter(text, "TcpExt", "TW"), 4210U);
  EXPECT_EQ(parse_netstat_counter(text, "IpExt", "TCPTimeWaitOverflow"), 99U);
  EXPECT_FALSE(parse_netstat_counter(text, "TcpExt", "Nope"));
  EXPECT_FALSE(parse_netstat_counter(text, "MPTcpExt", "TW"));
  EXPECT_FALSE(parse_netstat_counter("", "TcpExt", "TW"));
  // A values line that does not match its names line is not read.
  EXPECT_FALSE(parse_netstat_counter("TcpExt: A B\nTcpExt: 1\n", "TcpExt", "B"));
  EXPECT_FALSE(parse_netstat_counter("TcpExt: A B\nTcpExt: 1 x\n", "TcpExt", "B"));
  EXPECT_FALSE(parse_netstat_counter("TcpExt: A B\n", "TcpExt", "B"));
  EXPECT_EQ(parse_netstat_counter("TcpExt: A B\nTcpExt: 1 18446744073709551615", "TcpExt", "B"),
            18446744073709551615ULL);
}

TEST(NetnsConfigParse, PrefixLength) {
  const std::array<std::uint8_t, 4> slash8{255, 0, 0, 0};
  const std::array<std::uint8_t, 4> slash20{255, 255, 240, 0};
  const std::array<std::uint8_t, 4> holes{255, 0, 255, 0};
  const std::array<std::uint8_t, 4> inside{255, 0b1010'0000, 0, 0};
  std::array<std::uint8_t, 16> slash128{};
  slash128.fill(255);
  EXPECT_EQ(prefix_length(slash8), 8);
  EXPECT_EQ(prefix_length(slash20), 20);
  EXPECT_EQ(prefix_length(slash128), 128);
  EXPECT_FALSE(prefix_length(holes));
  EXPECT_FALSE(prefix_length(inside));
}

}  // namespace
}  // namespace portlens
