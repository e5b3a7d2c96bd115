#include "agent/model/inet.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include <gtest/gtest.h>

namespace portlens {
namespace {

struct AddressCase {
  const char* text;
  Family family;
  const char* printed;  // canonical form
  bool any;
  bool loopback;
  bool v4_mapped;
};

class IpAddressParseTest : public ::testing::TestWithParam<AddressCase> {};

TEST_P(IpAddressParseTest, ParsesPrintsAndClassifies) {
  const AddressCase& c = GetParam();
  const std::optional<IpAddress> a = IpAddress::parse(c.text);
  ASSERT_TRUE(a.has_value()) << c.text;
  EXPECT_EQ(a->family(), c.family);
  EXPECT_EQ(a->is_v4(), c.family == Family::kIpv4);
  EXPECT_EQ(a->is_v6(), c.family == Family::kIpv6);
  EXPECT_EQ(a->to_string(), c.printed);
  EXPECT_EQ(a->is_any(), c.any);
  EXPECT_EQ(a->is_loopback(), c.loopback);
  EXPECT_EQ(a->is_v4_mapped(), c.v4_mapped);
  // Printing and parsing again gives the same address.
  EXPECT_EQ(IpAddress::parse(a->to_string()), a);
}

INSTANTIATE_TEST_SUITE_P(
    Addresses, IpAddressParseTest,
    ::testing::Values(
        AddressCase{"127.0.0.1", Family::kIpv4, "127.0.0.1", false, true, false},
        AddressCase{"127.255.0.9", Family::kIpv4, "127.255.0.9", false, true, false},
        AddressCase{"0.0.0.0", Family::kIpv4, "0.0.0.0", true, false, false},
        AddressCase{"10.1.2.3", Family::kIpv4, "10.1.2.3", false, false, false},
        AddressCase{"128.0.0.1", Family::kIpv4, "128.0.0.1", false, false, false},
        AddressCase{"::", Family::kIpv6, "::", true, false, false},
        AddressCase{"::1", Family::kIpv6, "::1", false, true, false},
        AddressCase{"::2", Family::kIpv6, "::2", false, false, false},
        AddressCase{"fe80::1", Family::kIpv6, "fe80::1", false, false, false},
        AddressCase{"2001:DB8:0:0:0:0:0:1", Family::kIpv6, "2001:db8::1", false, false, false},
        AddressCase{"::ffff:10.0.0.1", Family::kIpv6, "::ffff:10.0.0.1", false, false, true},
        AddressCase{"::ffff:127.0.0.1", Family::kIpv6, "::ffff:127.0.0.1", false, true, true},
        // Mapped 0.0.0.0 is not "::" and not 0.0.0.0 as an IPv6 address.
        AddressCase{"::ffff:0.0.0.0", Family::kIpv6, "::ffff:0.0.0.0", false, false, true},
        // ::ffff:0:a.b.c.d (SIIT) and ::a.b.c.d (deprecated compatible) are not v4-mapped.
        AddressCase{"::ffff:0:10.0.0.1", Family::kIpv6, "::ffff:0:a00:1", false, false, false},
        AddressCase{"::1.2.3.4", Family::kIpv6, "::1.2.3.4", false, false, false}));

TEST(IpAddressTest, ParseStoresIpv4InNetworkOrderInFirstFourBytes) {
  const auto a = IpAddress::parse("192.168.1.20");
  ASSERT_TRUE(a.has_value());
  const std::array<std::uint8_t, 16> expected = {192, 168, 1, 20};
  EXPECT_EQ(a->bytes(), expected);
}

TEST(IpAddressTest, ParseStoresIpv6BytesInNetworkOrder) {
  const auto a = IpAddress::parse("2001:db8::ff01");
  ASSERT_TRUE(a.has_value());
  const std::array<std::uint8_t, 16> expected = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0,    0,
                                                 0,    0,    0,    0,    0, 0, 0xff, 0x01};
  EXPECT_EQ(a->bytes(), expected);
}

TEST(IpAddressTest, RejectsInvalidText) {
  for (const char* bad :
       {"", " ", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4 ", " 1.2.3.4", "01.2.3.4x", "abc",
        "localhost", ":::", "1::2::3", "[::1]", "::1%lo", "fe80::1%eth0", "12345::1", "1.2.3.4:80",
        "gggg::1", "::ffff:256.0.0.1",
        // Longer than any address (INET6_ADDRSTRLEN) even though made of valid characters.
        "0000:0000:0000:0000:0000:0000:0000:0000:0000"}) {
    EXPECT_FALSE(IpAddress::parse(bad).has_value()) << '"' << bad << '"';
  }
}

TEST(IpAddressTest, V4FromNetworkOrderWord) {
  // 10.0.0.1 as it sits in memory in network order.
  const std::array<std::uint8_t, 4> bytes = {10, 0, 0, 1};
  std::uint32_t word = 0;
  static_assert(sizeof word == bytes.size());
  std::memcpy(&word, bytes.data(), sizeof word);
  EXPECT_EQ(IpAddress::v4(word).to_string(), "10.0.0.1");
  EXPECT_EQ(IpAddress::v4(word), IpAddress::v4(bytes));
}

TEST(IpAddressTest, AnyConstructors) {
  EXPECT_EQ(IpAddress::any_v4().to_string(), "0.0.0.0");
  EXPECT_TRUE(IpAddress::any_v4().is_v4());
  EXPECT_TRUE(IpAddress::any_v4().is_any());
  EXPECT_EQ(IpAddress::any_v6().to_string(), "::");
  EXPECT_TRUE(IpAddress::any_v6().is_v6());
  EXPECT_TRUE(IpAddress::any_v6().is_any());
  // Same bytes, different families: not equal.
  EXPECT_NE(IpAddress::any_v4(), IpAddress::any_v6());
}

TEST(IpAddressTest, UnmappedReturnsTheMappedIpv4Address) {
  const auto mapped = IpAddress::parse("::ffff:192.0.2.7");
  ASSERT_TRUE(mapped.has_value());
  const IpAddress u = mapped->unmapped();
  EXPECT_TRUE(u.is_v4());
  EXPECT_EQ(u.to_string(), "192.0.2.7");
  EXPECT_EQ(u, *IpAddress::parse("192.0.2.7"));
  EXPECT_FALSE(u.is_v4_mapped());
}

TEST(IpAddressTest, UnmappedLeavesOtherAddressesAlone) {
  for (const char* text : {"192.0.2.7", "::1", "2001:db8::1", "::", "::ffff:0:10.0.0.1"}) {
    const auto a = IpAddress::parse(text);
    ASSERT_TRUE(a.has_value()) << text;
    EXPECT_EQ(a->unmapped(), *a) << text;
  }
}

TEST(IpAddressTest, Ipv4IsNeverV4Mapped) {
  // The last bytes of a v4 address's storage are zero; they must not be read as a v6 address.
  EXPECT_FALSE(IpAddress::parse("255.255.255.255")->is_v4_mapped());
}

TEST(IpAddressTest, OrderingIsByFamilyThenBytes) {
  const auto a = *IpAddress::parse("10.0.0.1");
  const auto b = *IpAddress::parse("10.0.0.2");
  const auto c = *IpAddress::parse("::1");
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(a, *IpAddress::parse("10.0.0.1"));
}

struct EndpointCase {
  const char* text;
  const char* addr;
  std::uint16_t port;
  const char* printed;
};

class EndpointParseTest : public ::testing::TestWithParam<EndpointCase> {};

TEST_P(EndpointParseTest, Parses) {
  const EndpointCase& c = GetParam();
  const auto ep = Endpoint::parse(c.text);
  ASSERT_TRUE(ep.has_value()) << c.text;
  EXPECT_EQ(ep->addr, *IpAddress::parse(c.addr));
  EXPECT_EQ(ep->port, c.port);
  EXPECT_EQ(ep->to_string(), c.printed);
}

INSTANTIATE_TEST_SUITE_P(
    Endpoints, EndpointParseTest,
    ::testing::Values(
        EndpointCase{"127.0.0.1:80", "127.0.0.1", 80, "127.0.0.1:80"},
        EndpointCase{"[::1]:80", "::1", 80, "[::1]:80"}, EndpointCase{"[::]:0", "::", 0, "[::]:0"},
        EndpointCase{"*:80", "0.0.0.0", 80, "0.0.0.0:80"},
        EndpointCase{":80", "0.0.0.0", 80, "0.0.0.0:80"},
        EndpointCase{"0.0.0.0:65535", "0.0.0.0", 65535, "0.0.0.0:65535"},
        EndpointCase{"[::ffff:10.0.0.1]:443", "::ffff:10.0.0.1", 443, "[::ffff:10.0.0.1]:443"},
        EndpointCase{"[2001:db8::1]:8080", "2001:db8::1", 8080, "[2001:db8::1]:8080"}));

TEST(EndpointTest, StarAndEmptyHostAreIpv4Any) {
  for (const char* text : {"*:80", ":80"}) {
    const auto ep = Endpoint::parse(text);
    ASSERT_TRUE(ep.has_value()) << text;
    EXPECT_TRUE(ep->addr.is_v4()) << text;
    EXPECT_TRUE(ep->addr.is_any()) << text;
  }
}

TEST(EndpointTest, RejectsBadForms) {
  for (const char* bad : {"",
                          "80",
                          "127.0.0.1",
                          "127.0.0.1:",
                          "127.0.0.1:65536",
                          "127.0.0.1:99999999999",
                          "127.0.0.1:-1",
                          "127.0.0.1:+80",
                          "127.0.0.1:80x",
                          "127.0.0.1: 80",
                          "::1:80",
                          "::1",
                          "[::1]",
                          "[::1]:",
                          "[::1:80",
                          "::1]:80",
                          "[]:80",
                          "[:80",
                          "abc:1",
                          "localhost:80",
                          "[1.2.3.4]:5",
                          "**:80",
                          "1.2.3.4.5:80"}) {
    EXPECT_FALSE(Endpoint::parse(bad).has_value()) << '"' << bad << '"';
  }
}

TEST(ProtoTest, ParseProtoKnowsEveryName) {
  EXPECT_EQ(parse_proto("tcp"), Proto::kTcp);
  EXPECT_EQ(parse_proto("udp"), Proto::kUdp);
  EXPECT_EQ(parse_proto("udplite"), Proto::kUdpLite);
  EXPECT_EQ(parse_proto("mptcp"), Proto::kMptcp);
  EXPECT_EQ(parse_proto("sctp"), Proto::kSctp);
}

TEST(ProtoTest, ParseProtoRejectsOtherText) {
  for (const char* bad : {"", "TCP", "Udp", "tcp ", "icmp", "tcp6", "raw"}) {
    EXPECT_FALSE(parse_proto(bad).has_value()) << '"' << bad << '"';
  }
}

TEST(ProtoTest, NamesRoundTrip) {
  for (const Proto p : {Proto::kTcp, Proto::kUdp, Proto::kUdpLite, Proto::kMptcp, Proto::kSctp}) {
    EXPECT_EQ(parse_proto(to_string(p)), p);
  }
}

TEST(ProtoTest, FromIpproto) {
  EXPECT_EQ(proto_from_ipproto(6), Proto::kTcp);
  EXPECT_EQ(proto_from_ipproto(17), Proto::kUdp);
  EXPECT_EQ(proto_from_ipproto(136), Proto::kUdpLite);
  EXPECT_EQ(proto_from_ipproto(262), Proto::kMptcp);
  EXPECT_EQ(proto_from_ipproto(132), Proto::kSctp);
  EXPECT_FALSE(proto_from_ipproto(0).has_value());
  EXPECT_FALSE(proto_from_ipproto(1).has_value());    // ICMP
  EXPECT_FALSE(proto_from_ipproto(255).has_value());  // RAW
  EXPECT_FALSE(proto_from_ipproto(-1).has_value());
}

TEST(TcpStateTest, StateNamesMatchTheKernelNumbering) {
  const std::pair<int, const char*> cases[] = {
      {1, "ESTABLISHED"},     {2, "SYN_SENT"},  {3, "SYN_RECV"}, {4, "FIN_WAIT1"},
      {5, "FIN_WAIT2"},       {6, "TIME_WAIT"}, {7, "CLOSE"},    {8, "CLOSE_WAIT"},
      {9, "LAST_ACK"},        {10, "LISTEN"},   {11, "CLOSING"}, {12, "NEW_SYN_RECV"},
      {13, "BOUND_INACTIVE"},
  };
  for (const auto& [n, name] : cases) {
    EXPECT_EQ(state_name(n), name) << n;
    ASSERT_TRUE(tcp_state_from_int(n).has_value()) << n;
    EXPECT_EQ(static_cast<int>(*tcp_state_from_int(n)), n);
  }
}

TEST(TcpStateTest, UnknownStatesAreNamedWithTheirNumber) {
  EXPECT_EQ(state_name(0), "UNKNOWN(0)");
  EXPECT_EQ(state_name(14), "UNKNOWN(14)");
  EXPECT_EQ(state_name(255), "UNKNOWN(255)");
  EXPECT_EQ(state_name(-1), "UNKNOWN(-1)");
  EXPECT_FALSE(tcp_state_from_int(0).has_value());
  EXPECT_FALSE(tcp_state_from_int(14).has_value());
  EXPECT_FALSE(tcp_state_from_int(-3).has_value());
}

}  // namespace
}  // namespace portlens
