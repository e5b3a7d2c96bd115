#include "exporters/http/listen_address.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include <gtest/gtest.h>

namespace portlens::http {
namespace {

using Family = ListenAddress::Family;

TEST(ListenAddress, AcceptsTheForms) {
  const auto any = parse_listen_address(":10130");
  EXPECT_EQ(any.family, Family::kDualStack);
  EXPECT_EQ(any.port, 10130);
  EXPECT_EQ(any.to_string(), ":10130");

  const auto v4 = parse_listen_address("127.0.0.1:0");
  EXPECT_EQ(v4.family, Family::kIpv4);
  EXPECT_EQ(v4.host, "127.0.0.1");
  EXPECT_EQ(v4.port, 0);
  EXPECT_EQ(parse_listen_address("0.0.0.0:65535").port, 65535);

  const auto v6 = parse_listen_address("[::1]:9100");
  EXPECT_EQ(v6.family, Family::kIpv6);
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.to_string(), "[::1]:9100");
  EXPECT_EQ(parse_listen_address("[::]:80").host, "::");

  const auto link_local = parse_listen_address("[fe80::1%eth0]:10130");
  EXPECT_EQ(link_local.host, "fe80::1");
  EXPECT_EQ(link_local.zone, "eth0");
  EXPECT_EQ(link_local.to_string(), "[fe80::1%eth0]:10130");
}

// Each refusal is one line that quotes the input, says what is wrong, and lists the forms.
void expect_refused(const std::string& text, const std::string& problem) {
  try {
    parse_listen_address(text);
    ADD_FAILURE() << text << " was accepted";
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("\"" + text + "\""), std::string::npos) << message;
    EXPECT_NE(message.find(problem), std::string::npos) << message;
    EXPECT_NE(message.find(R"(":PORT")"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(ListenAddress, RefusesWithOneClearLine) {
  expect_refused("", "empty");
  expect_refused("localhost:10130", "host names are not accepted");
  expect_refused("example.com:80", "host names are not accepted");
  expect_refused("10130", "\":PORT\" is missing");
  expect_refused("127.0.0.1", "\":PORT\" is missing");
  expect_refused("127.0.0.1:", "port after ':' is missing");
  expect_refused(":65536", "not a port");
  expect_refused(":-1", "not a port");
  expect_refused(":80x", "not a port");
  expect_refused(":000080", "not a port");
  expect_refused("1.2.3:80", "not an IP address");
  expect_refused("::1:10130", "needs brackets");
  expect_refused("[::1]", "\":PORT\" after ']' is missing");
  expect_refused("[::1:80", "without a closing ']'");
  expect_refused("[127.0.0.1]:80", "not an IPv6 address");
  expect_refused("[fe80::1%]:80", "interface after '%' is missing");
  expect_refused(" :80", "white space");
}

// Found by tests/fuzz/fuzz_addresses: a newline in the flag's value (pasted into a unit file)
// made the refusal two lines, the second of them forged by whoever wrote the value.
TEST(ListenAddress, ControlBytesInTheValueStayInOneLine) {
  for (const std::string& text : {std::string("tcp\n[::1]:8080"), std::string(":80\r\nX"),
                                  std::string("a:1,\x1b[2J:2"), std::string("\0:80", 4)}) {
    try {
      parse_listen_address(text);
      ADD_FAILURE() << "accepted";
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_TRUE(std::none_of(message.begin(), message.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
      })) << message;
    }
  }
  try {
    parse_listen_address("tcp\n[::1]:8080");
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("\"tcp\\x0a[::1]:8080\""), std::string::npos) << e.what();
  }
}

// Regression: "a:1,b:2" was answered with the accepted forms, whose "[IPv6]:PORT" read as if the
// addresses were taken for IPv6. A list gets its own line: one address per flag, spelled out.
TEST(ListenAddress, AListSaysOneAddressPerFlag) {
  for (const auto& [text, flags] : {
           std::pair<std::string, std::string>{"a:1,b:2",
                                               "--web.listen-address a:1 --web.listen-address b:2"},
           {"127.0.0.1:1,[::1]:2", "--web.listen-address 127.0.0.1:1 --web.listen-address [::1]:2"},
           {":1,", "--web.listen-address :1"},
       }) {
    try {
      parse_listen_address(text);
      ADD_FAILURE() << text << " was accepted";
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("\"" + text + "\""), std::string::npos) << message;
      EXPECT_NE(message.find("one address per flag"), std::string::npos) << message;
      EXPECT_NE(message.find(flags), std::string::npos) << message;
      EXPECT_EQ(message.find("IPv6"), std::string::npos) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
  }
}

TEST(ListenSocket, NamesTheAddressWhenTheBindFails) {
  const ListenSocket first(parse_listen_address("127.0.0.1:0"));
  const auto& taken = first.bound();
  try {
    const ListenSocket second(parse_listen_address(taken));
    ADD_FAILURE() << "bound " << taken << " twice";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot listen on " + taken + ": Address already in use");
  }
}

TEST(ListenSocket, RefusesAnInterfaceThatIsNotThere) {
  try {
    const ListenSocket socket(parse_listen_address("[fe80::1%nosuchif0]:0"));
    ADD_FAILURE() << "bound on a missing interface";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot listen on [fe80::1%nosuchif0]:0: no interface named nosuchif0");
  }
}

}  // namespace
}  // namespace portlens::http
