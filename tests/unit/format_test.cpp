#include "agent/render/format.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <ctime>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "agent/diagnose/diagnoser.hpp"
#include "agent/render/report.hpp"
#include "tests/unit/builders.hpp"

namespace portlens {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

constexpr std::int64_t kNsPerSec = 1'000'000'000;

// Every byte of s that a terminal would act on: C0 controls and DEL. What escape_for_terminal
// returns must have none.
bool has_control_bytes(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
  });
}

TEST(EscapeForTerminalTest, PlainTextIsKept) {
  EXPECT_EQ(escape_for_terminal(""), "");
  EXPECT_EQ(escape_for_terminal("nginx"), "nginx");
  EXPECT_EQ(escape_for_terminal("kworker/0:1H-events"), "kworker/0:1H-events");
  EXPECT_EQ(escape_for_terminal("a b ~"), "a b ~");
}

TEST(EscapeForTerminalTest, EscIsBackslashE) {
  EXPECT_EQ(escape_for_terminal("\x1b[2J"), "\\e[2J");
  EXPECT_EQ(escape_for_terminal("\x1b]0;title\x07"), "\\e]0;title\\x07");
}

TEST(EscapeForTerminalTest, OtherControlBytesAreHex) {
  EXPECT_EQ(escape_for_terminal("a\nb"), "a\\x0ab");
  EXPECT_EQ(escape_for_terminal("a\rb"), "a\\x0db");
  EXPECT_EQ(escape_for_terminal("a\tb"), "a\\x09b");
  EXPECT_EQ(escape_for_terminal(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(escape_for_terminal("\x7f"), "\\x7f");
  EXPECT_EQ(escape_for_terminal("\x01\x1f"), "\\x01\\x1f");
  // Every C0 byte and DEL, each alone: escaped, and nothing raw left.
  for (int byte = 0; byte < 0x80; ++byte) {
    const std::string escaped = escape_for_terminal(std::string(1, static_cast<char>(byte)));
    EXPECT_FALSE(has_control_bytes(escaped)) << byte;
    if (byte < 0x20 || byte == 0x7f) {
      EXPECT_EQ(escaped.front(), '\\') << byte;
    } else if (byte != '\\') {
      EXPECT_EQ(escaped, std::string(1, static_cast<char>(byte)));
    }
  }
}

TEST(EscapeForTerminalTest, BackslashIsDoubledSoEscapesCannotBeForged) {
  EXPECT_EQ(escape_for_terminal("\\"), "\\\\");
  // A comm that spells "\e" itself does not look like one that holds ESC.
  EXPECT_NE(escape_for_terminal("\\e"), escape_for_terminal("\x1b"));
  EXPECT_EQ(escape_for_terminal("\\x0a"), "\\\\x0a");
}

TEST(EscapeForTerminalTest, ValidUtf8IsKept) {
  EXPECT_EQ(escape_for_terminal("caf\xc3\xa9"), "caf\xc3\xa9");            // é
  EXPECT_EQ(escape_for_terminal("\xe2\x82\xac"), "\xe2\x82\xac");          // €
  EXPECT_EQ(escape_for_terminal("\xf0\x9f\x90\xb3"), "\xf0\x9f\x90\xb3");  // U+1F433
  EXPECT_EQ(escape_for_terminal("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf");  // U+10FFFF
  EXPECT_EQ(escape_for_terminal("\xc2\xa0"), "\xc2\xa0");                  // U+00A0
}

TEST(EscapeForTerminalTest, InvalidUtf8BytesAreHex) {
  EXPECT_EQ(escape_for_terminal("\xff"), "\\xff");
  EXPECT_EQ(escape_for_terminal("a\x80"
                                "b"),
            "a\\x80b");                                      // a lone continuation byte
  EXPECT_EQ(escape_for_terminal("\xc3"), "\\xc3");           // cut short (comm is 15 bytes)
  EXPECT_EQ(escape_for_terminal("\xe2\x82"), "\\xe2\\x82");  // cut short
  EXPECT_EQ(escape_for_terminal("\xc0\xaf"), "\\xc0\\xaf");  // overlong '/'
  EXPECT_EQ(escape_for_terminal("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");
  EXPECT_EQ(escape_for_terminal("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a UTF-16 surrogate
  EXPECT_EQ(escape_for_terminal("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // > U+10FFFF
  // A valid character right after a bad byte survives.
  EXPECT_EQ(escape_for_terminal("\xff\xc3\xa9"), "\\xff\xc3\xa9");
  // An overlong ESC (0xc0 0x9b) is not ESC and not kept either.
  EXPECT_EQ(escape_for_terminal("\xc0\x9b"), "\\xc0\\x9b");
}

TEST(EscapeForTerminalTest, C1ControlsAreHex) {
  // U+009B is CSI to terminals that take 8-bit controls: as dangerous as ESC [.
  EXPECT_EQ(escape_for_terminal("\xc2\x9b"
                                "2J"),
            "\\xc2\\x9b"
            "2J");
  EXPECT_EQ(escape_for_terminal("\xc2\x80"), "\\xc2\\x80");
}

TEST(EscapeForTerminalTest, EveryByteStringComesOutPrintableAndOneLine) {
  // Every pair of bytes: whatever a comm holds, the escaped form has no control byte.
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const std::string in{static_cast<char>(a), static_cast<char>(b)};
      const std::string out = escape_for_terminal(in);
      ASSERT_FALSE(has_control_bytes(out)) << a << " " << b;
    }
  }
}

TEST(ErrnoNameTest, NamesErrnoValuesEitherSign) {
  EXPECT_EQ(errno_name(98), "EADDRINUSE");
  EXPECT_EQ(errno_name(-98), "EADDRINUSE");
  EXPECT_EQ(errno_name(-EADDRNOTAVAIL), "EADDRNOTAVAIL");
  EXPECT_EQ(errno_name(-EACCES), "EACCES");
  EXPECT_EQ(errno_name(-EINPROGRESS), "EINPROGRESS");
  EXPECT_EQ(errno_name(-ECONNREFUSED), "ECONNREFUSED");
  EXPECT_EQ(errno_name(-EAGAIN), "EAGAIN");
}

TEST(ErrnoNameTest, ZeroIsOk) { EXPECT_EQ(errno_name(0), "OK"); }

TEST(ErrnoNameTest, UnknownNumbers) {
  EXPECT_EQ(errno_name(4095), "E?4095");
  EXPECT_EQ(errno_name(-4095), "E?4095");
  EXPECT_EQ(errno_name(100000), "E?100000");
}

TEST(OptionLettersTest, NoneIsDash) { EXPECT_EQ(format_option_letters(SocketOptions{}), "-"); }

TEST(OptionLettersTest, EachOptionAlone) {
  EXPECT_EQ(format_option_letters({.reuseaddr = true}), "R");
  EXPECT_EQ(format_option_letters({.reuseport = true}), "P");
  EXPECT_EQ(format_option_letters({.v6only = true}), "6");
  EXPECT_EQ(format_option_letters({.freebind = true}), "F");
  EXPECT_EQ(format_option_letters({.transparent = true}), "T");
  EXPECT_EQ(format_option_letters({.bind_address_no_port = true}), "N");
  EXPECT_EQ(format_option_letters({.bound_dev_if = 3}), "@3");
}

TEST(OptionLettersTest, Combinations) {
  EXPECT_EQ(format_option_letters({.reuseaddr = true, .reuseport = true}), "RP");
  EXPECT_EQ(format_option_letters({.reuseaddr = true, .v6only = true, .bound_dev_if = 12}),
            "R6@12");
  EXPECT_EQ(format_option_letters({.freebind = true, .bind_address_no_port = true}), "FN");
  EXPECT_EQ(format_option_letters(SocketOptions{true, true, true, true, true, true, 2}),
            "RP6FTN@2");
}

TEST(Rfc3339Test, KnownInstants) {
  EXPECT_EQ(format_rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(format_rfc3339_us(1'700'000'000 * kNsPerSec + 123'456'789),
            "2023-11-14T22:13:20.123456Z");
  // docs/architecture.md's example instant.
  EXPECT_EQ(format_rfc3339_us(1'795'256'103 * kNsPerSec + 123'456'000),
            "2026-11-21T10:15:03.123456Z");
  // Leap day, last microsecond of the day.
  EXPECT_EQ(format_rfc3339_us(951'868'799 * kNsPerSec + 999'999'999),
            "2000-02-29T23:59:59.999999Z");
}

TEST(Rfc3339Test, TruncatesNanosecondsToMicroseconds) {
  EXPECT_EQ(format_rfc3339_us(999), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(format_rfc3339_us(1'000), "1970-01-01T00:00:00.000001Z");
  EXPECT_EQ(format_rfc3339_us(kNsPerSec + 500'000), "1970-01-01T00:00:01.000500Z");
}

TEST(WallClockTest, AddsTheOffset) {
  const WallClock clock(1'000 * kNsPerSec);
  EXPECT_EQ(clock.to_realtime_ns(0), 1'000 * kNsPerSec);
  EXPECT_EQ(clock.to_realtime_ns(5 * kNsPerSec + 7), 1'005 * kNsPerSec + 7);
  const WallClock behind(-2 * kNsPerSec);
  EXPECT_EQ(behind.to_realtime_ns(10 * kNsPerSec), 8 * kNsPerSec);
  EXPECT_EQ(WallClock(0).to_realtime_ns(42), 42);
}

TEST(WallClockTest, DefaultMapsMonotonicNowToRealtimeNow) {
  const WallClock clock;
  timespec mono{};
  timespec real{};
  clock_gettime(CLOCK_MONOTONIC, &mono);
  clock_gettime(CLOCK_REALTIME, &real);
  const auto mono_ns = static_cast<std::uint64_t>(mono.tv_sec) * kNsPerSec +
                       static_cast<std::uint64_t>(mono.tv_nsec);
  const std::int64_t real_ns = static_cast<std::int64_t>(real.tv_sec) * kNsPerSec + real.tv_nsec;
  const std::int64_t diff = clock.to_realtime_ns(mono_ns) - real_ns;
  EXPECT_LT(diff < 0 ? -diff : diff, kNsPerSec / 10);
}

// Times in the tests: monotonic 5s + 123456us, wall clock offset puts that at
// docs/architecture.md's example instant.
constexpr std::uint64_t kMonoNs = 5 * kNsPerSec + 123'456'000;
constexpr std::int64_t kOffsetNs = 1'795'256'098 * kNsPerSec;

Event failed_bind_v4() {
  Event e;
  e.type = EventType::kBind;
  e.ts_ns = kMonoNs;
  e.pid = 1234;
  e.tid = 1235;
  e.uid = 0;
  e.sock_uid = 0;
  e.netns = 4026531840U;
  e.family = Family::kIpv4;
  e.proto = Proto::kTcp;
  e.opts = SocketOptions{};
  e.requested = *Endpoint::parse("0.0.0.0:8080");
  e.local = *Endpoint::parse("0.0.0.0:0");
  e.result = -98;
  e.comm = "nginx";
  return e;
}

TEST(TableTest, HeaderNamesEveryColumn) {
  const std::string header = format_table_header();
  for (const char* column :
       {"TIME", "COMM", "PID", "CALL", "PROTO", "LOCAL", "REMOTE", "OPTS", "RESULT"}) {
    EXPECT_THAT(header, HasSubstr(column));
  }
  EXPECT_EQ(header.find('\n'), std::string::npos);
}

TEST(TableTest, FailedBindRow) {
  Event e = failed_bind_v4();
  e.opts = SocketOptions{.reuseaddr = true};
  const std::string row = format_table_row(e, WallClock(kOffsetNs));
  EXPECT_THAT(row, HasSubstr("nginx"));
  EXPECT_THAT(row, HasSubstr("1234"));
  EXPECT_THAT(row, HasSubstr("bind"));
  EXPECT_THAT(row, HasSubstr("tcp"));
  EXPECT_THAT(row, HasSubstr("0.0.0.0:8080"));  // the requested address, not the local one
  EXPECT_THAT(row, Not(HasSubstr("0.0.0.0:0 ")));
  EXPECT_THAT(row, HasSubstr(" R "));
  EXPECT_THAT(row, HasSubstr("EADDRINUSE"));
  EXPECT_THAT(row, Not(HasSubstr("(got")));
  EXPECT_EQ(row.find('\n'), std::string::npos);
  // The time column is local wall-clock time, in milliseconds; --wide shows microseconds.
  EXPECT_THAT(row, HasSubstr(".123 "));
  EXPECT_THAT(format_table_row(e, WallClock(kOffsetNs), true), HasSubstr(".123456 "));
}

// The table fits 120 columns by default, whatever the addresses; --wide keeps them whole.
TEST(TableTest, FitsInOneHundredTwentyColumnsUnlessWide) {
  Event e = failed_bind_v4();
  e.type = EventType::kConnect;
  e.comm = "systemd-resolve";  // 15 bytes, the most a comm holds
  e.pid = 4194304;
  e.result = -EADDRNOTAVAIL;
  e.requested = *Endpoint::parse("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535");
  e.local = *Endpoint::parse("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:65535");
  e.family = Family::kIpv6;
  e.opts = SocketOptions{.reuseaddr = true, .reuseport = true, .v6only = true};
  const std::string row = format_table_row(e, WallClock(kOffsetNs));
  EXPECT_LE(row.size(), 120U) << row;
  EXPECT_LE(format_table_header().size(), 120U);
  EXPECT_THAT(row, HasSubstr("..]:65535"));  // shortened in the middle, the port kept
  const std::string wide = format_table_row(e, WallClock(kOffsetNs), true);
  EXPECT_THAT(wide, HasSubstr("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535"));
  EXPECT_THAT(wide, HasSubstr("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:65535"));
  // The longest state change still fits.
  Event st;
  st.type = EventType::kState;
  st.old_state = static_cast<int>(TcpState::kEstablished);
  st.new_state = static_cast<int>(TcpState::kCloseWait);
  st.local = *Endpoint::parse("255.255.255.255:65535");
  st.remote = *Endpoint::parse("255.255.255.255:65535");
  EXPECT_LE(format_table_row(st, WallClock(kOffsetNs)).size(), 120U);
}

TEST(TableTest, ElidedEndpointsKeepTheirPort) {
  EXPECT_EQ(elide_endpoint("127.0.0.1:8080", 19), "127.0.0.1:8080");
  EXPECT_EQ(elide_endpoint("192.168.100.200:65535", 19), "192.168.100..:65535");
  EXPECT_EQ(elide_endpoint("[2001:db8::1234:5678]:443", 19), "[2001:db8::1..]:443");
  EXPECT_EQ(elide_endpoint("[2001:db8::1234:5678]:443", 19).size(), 19U);
}

TEST(TableTest, CommIsEscaped) {
  Event e = failed_bind_v4();
  e.comm = "\x1b[2Jevil\nX";
  const std::string row = format_table_row(e, WallClock(kOffsetNs));
  EXPECT_THAT(row, HasSubstr("\\e[2Jevil\\x0aX"));
  EXPECT_FALSE(has_control_bytes(row)) << row;
  // JSON keeps the comm as it is: its own escaping makes it safe.
  EXPECT_EQ(event_to_json(e, WallClock(kOffsetNs))["comm"], e.comm);
}

TEST(TableTest, ColumnsLineUpWithTheHeader) {
  const std::string header = format_table_header();
  const std::string row = format_table_row(failed_bind_v4(), WallClock(kOffsetNs));
  EXPECT_EQ(row.find("nginx"), header.find("COMM"));
  EXPECT_EQ(row.find("bind"), header.find("CALL"));
  EXPECT_EQ(row.find("0.0.0.0:8080"), header.find("LOCAL"));
  EXPECT_EQ(row.find("EADDRINUSE"), header.find("RESULT"));
}

TEST(TableTest, SuccessfulBindToPortZeroShowsThePortGot) {
  Event e = failed_bind_v4();
  e.result = 0;
  e.requested = *Endpoint::parse("127.0.0.1:0");
  e.local = *Endpoint::parse("127.0.0.1:41234");
  const std::string row = format_table_row(e, WallClock(kOffsetNs));
  EXPECT_THAT(row, HasSubstr("127.0.0.1:0 (got 41234)"));
  EXPECT_THAT(row, HasSubstr("OK"));
}

TEST(TableTest, FailedBindToPortZeroShowsNoPortGot) {
  Event e = failed_bind_v4();
  e.requested = *Endpoint::parse("127.0.0.1:0");
  e.local = *Endpoint::parse("127.0.0.1:41234");
  EXPECT_THAT(format_table_row(e, WallClock(kOffsetNs)), Not(HasSubstr("(got")));
}

TEST(TableTest, StateRow) {
  Event e;
  e.type = EventType::kState;
  e.ts_ns = kMonoNs;
  e.comm = "swapper/0";
  e.old_state = 5;
  e.new_state = 7;
  e.local = *Endpoint::parse("10.0.0.1:8080");
  e.remote = *Endpoint::parse("10.0.0.2:40112");
  const std::string row = format_table_row(e, WallClock(kOffsetNs));
  EXPECT_THAT(row, HasSubstr("FIN_WAIT2->CLOSE"));
  EXPECT_THAT(row, HasSubstr("state"));
  EXPECT_THAT(row, HasSubstr("10.0.0.1:8080"));
  EXPECT_THAT(row, HasSubstr("10.0.0.2:40112"));
  EXPECT_THAT(row, Not(HasSubstr("OK")));
  EXPECT_THAT(row, HasSubstr(" ? "));  // options not read
  // The task a softirq interrupted is not the socket's: COMM and PID read "-".
  EXPECT_THAT(row, Not(HasSubstr("swapper")));
  EXPECT_EQ(row.find('-'), format_table_header().find("COMM")) << row;
}

TEST(TableTest, ResetRowSaysItWasReceived) {
  Event e;
  e.type = EventType::kReset;
  e.ts_ns = kMonoNs;
  e.old_state = static_cast<int>(TcpState::kEstablished);
  e.local = *Endpoint::parse("127.0.0.1:8080");
  e.remote = *Endpoint::parse("127.0.0.1:40112");
  const std::string row = format_table_row(e, WallClock(kOffsetNs));
  EXPECT_THAT(row, HasSubstr("received in ESTABLISHED"));
  EXPECT_THAT(row, HasSubstr("reset"));
}

// A reset this side sent says so, in the CALL column's width like a received one.
TEST(TableTest, ResetSentRowSaysItWasSentAndKeepsTheColumns) {
  Event e;
  e.type = EventType::kResetSent;
  e.ts_ns = kMonoNs;
  e.old_state = static_cast<int>(TcpState::kClose);
  e.comm = "swapper/1";  // the interrupted task: never shown
  e.local = *Endpoint::parse("127.0.0.1:40112");
  e.remote = *Endpoint::parse("127.0.0.1:8080");
  const std::string row = format_table_row(e, WallClock(kOffsetNs));
  EXPECT_THAT(row, HasSubstr("sent in CLOSE"));
  EXPECT_THAT(row, Not(HasSubstr("reset_sent")));
  EXPECT_THAT(row, Not(HasSubstr("swapper")));
  EXPECT_EQ(row.find(" reset "), format_table_header().find(" CALL ")) << row;
}

TEST(TableTest, ConnectRowShowsTheDestinationAsRemote) {
  Event e = failed_bind_v4();
  e.type = EventType::kConnect;
  e.result = -EINPROGRESS;
  e.requested = *Endpoint::parse("[2001:db8::1]:443");
  e.local = *Endpoint::parse("[2001:db8::2]:50000");
  e.family = Family::kIpv6;
  const std::string row = format_table_row(e, WallClock(kOffsetNs));
  EXPECT_THAT(row, HasSubstr("connect"));
  EXPECT_THAT(row, HasSubstr("[2001:db8::2]:50000"));
  EXPECT_THAT(row, HasSubstr("[2001:db8::1]:443"));
  EXPECT_LT(row.find("[2001:db8::2]:50000"), row.find("[2001:db8::1]:443"));
  EXPECT_THAT(row, HasSubstr("EINPROGRESS"));
}

// A connect() that got its destination's own port on the same address: simultaneous open
// connected the socket to itself. Flagged in the table and in JSON; no other call is.
TEST(TableTest, SelfConnectIsFlagged) {
  Event e = failed_bind_v4();
  e.type = EventType::kConnect;
  e.result = 0;
  e.requested = *Endpoint::parse("127.0.0.1:40001");
  e.local = *Endpoint::parse("127.0.0.1:40001");
  EXPECT_TRUE(e.self_connect());
  EXPECT_THAT(format_table_row(e, WallClock(kOffsetNs)), HasSubstr("OK self-connect"));
  EXPECT_EQ(event_to_json(e, WallClock(kOffsetNs))["self_connect"], true);
  e.result = -EINPROGRESS;  // non-blocking: the same socket, connected in the next instant
  EXPECT_TRUE(e.self_connect());
  Event other = e;
  other.local = *Endpoint::parse("127.0.0.2:40001");  // another address: two sockets
  EXPECT_FALSE(other.self_connect());
  other = e;
  other.local = *Endpoint::parse("127.0.0.1:40002");
  EXPECT_FALSE(other.self_connect());
  other = e;
  other.result = -ECONNREFUSED;
  EXPECT_FALSE(other.self_connect());
  other = e;
  other.proto = Proto::kUdp;  // a UDP socket "connected" to its own port exchanges nothing
  EXPECT_FALSE(other.self_connect());
  other = e;
  other.type = EventType::kBind;
  EXPECT_FALSE(other.self_connect());
  EXPECT_FALSE(event_to_json(other, WallClock(kOffsetNs)).contains("self_connect"));
}

// Colour is off by default; when on, a failed call's result is painted and nothing else is
// (the comm stays escaped, and a successful row carries no escape byte).
TEST(TableTest, ColourPaintsOnlyTheFailedResultWhenEnabled) {
  const Event failed = failed_bind_v4();
  EXPECT_FALSE(color_enabled());
  EXPECT_FALSE(has_control_bytes(format_table_row(failed, WallClock(kOffsetNs))));
  enable_color(true);
  const std::string row = format_table_row(failed, WallClock(kOffsetNs));
  Event ok = failed_bind_v4();
  ok.result = 0;
  const std::string ok_row = format_table_row(ok, WallClock(kOffsetNs));
  enable_color(false);
  EXPECT_THAT(row, HasSubstr("\x1b[1;31mEADDRINUSE\x1b[0m"));
  EXPECT_FALSE(has_control_bytes(ok_row)) << ok_row;
  EXPECT_EQ(paint("x", Paint::kOk), "x");
}

TEST(TableTest, UnreadableSockaddr) {
  Event e = failed_bind_v4();
  e.requested.reset();
  e.requested_fault = true;
  e.result = -EFAULT;
  const std::string row = format_table_row(e, WallClock(kOffsetNs));
  EXPECT_THAT(row, HasSubstr("<unreadable sockaddr>"));
  EXPECT_THAT(row, HasSubstr("EFAULT"));
}

TEST(JsonTest, FailedIpv4BindMatchesArchitectureForm) {
  const json j = event_to_json(failed_bind_v4(), WallClock(kOffsetNs));
  EXPECT_EQ(j.at("time"), "2026-11-21T10:15:03.123456Z");
  EXPECT_EQ(j.at("event"), "bind");
  EXPECT_EQ(j.at("pid"), 1234);
  EXPECT_EQ(j.at("tid"), 1235);
  EXPECT_EQ(j.at("uid"), 0);
  EXPECT_EQ(j.at("comm"), "nginx");
  EXPECT_EQ(j.at("netns"), 4026531840U);
  EXPECT_EQ(j.at("proto"), "tcp");
  EXPECT_EQ(j.at("family"), "ipv4");
  EXPECT_EQ(j.at("local"), json::parse(R"({"addr":"0.0.0.0","port":8080})"));
  ASSERT_TRUE(j.contains("remote"));
  EXPECT_TRUE(j.at("remote").is_null());
  EXPECT_EQ(j.at("opts"), json::parse(R"({"reuseaddr":false,"reuseport":false,"v6only":false,
      "freebind":false,"transparent":false,"bind_address_no_port":false,"bound_dev_if":0})"));
  EXPECT_EQ(j.at("result"), -98);
  EXPECT_EQ(j.at("errno"), "EADDRINUSE");
  EXPECT_FALSE(j.contains("diagnosis"));
  EXPECT_FALSE(j.contains("old_state"));
  EXPECT_FALSE(j.contains("backlog"));
  EXPECT_FALSE(j.contains("sockaddr_fault"));
  // A failed bind left nothing bound.
  EXPECT_TRUE(j.at("bound").is_null());
}

TEST(JsonTest, FieldTypesAreStable) {
  const json j = event_to_json(failed_bind_v4(), WallClock(kOffsetNs));
  EXPECT_TRUE(j.at("pid").is_number_unsigned());
  EXPECT_TRUE(j.at("netns").is_number_unsigned());
  EXPECT_TRUE(j.at("result").is_number_integer());
  EXPECT_TRUE(j.at("local").at("port").is_number_unsigned());
  EXPECT_TRUE(j.at("opts").at("bound_dev_if").is_number_integer());
  // One line of JSON Lines.
  EXPECT_EQ(j.dump().find('\n'), std::string::npos);
}

TEST(JsonTest, EveryOptionIsReported) {
  Event e = failed_bind_v4();
  e.opts = SocketOptions{true, true, true, true, true, true, 7};
  const json j = event_to_json(e, WallClock(kOffsetNs));
  EXPECT_EQ(j.at("opts"), json::parse(R"({"reuseaddr":true,"reuseport":true,"v6only":true,
      "freebind":true,"transparent":true,"bind_address_no_port":true,"bound_dev_if":7})"));
  e.opts.reset();
  EXPECT_TRUE(event_to_json(e, WallClock(kOffsetNs)).at("opts").is_null());
}

TEST(JsonTest, SuccessfulBindHasNullErrnoAndReportsWhatWasBound) {
  Event e = failed_bind_v4();
  e.result = 0;
  e.requested = *Endpoint::parse("127.0.0.1:0");
  e.local = *Endpoint::parse("127.0.0.1:41234");
  const json j = event_to_json(e, WallClock(kOffsetNs));
  EXPECT_EQ(j.at("result"), 0);
  EXPECT_TRUE(j.at("errno").is_null());
  EXPECT_EQ(j.at("local"), json::parse(R"({"addr":"127.0.0.1","port":0})"));
  EXPECT_EQ(j.at("bound"), json::parse(R"({"addr":"127.0.0.1","port":41234})"));
}

TEST(JsonTest, ConnectRemoteIsTheDestinationAndBoundTheChosenLocal) {
  Event e = failed_bind_v4();
  e.type = EventType::kConnect;
  e.result = -EINPROGRESS;
  e.requested = *Endpoint::parse("93.184.216.34:443");
  e.local = *Endpoint::parse("10.0.0.5:51000");
  const json j = event_to_json(e, WallClock(kOffsetNs));
  EXPECT_EQ(j.at("event"), "connect");
  EXPECT_EQ(j.at("remote"), json::parse(R"({"addr":"93.184.216.34","port":443})"));
  EXPECT_EQ(j.at("local"), json::parse(R"({"addr":"10.0.0.5","port":51000})"));
  EXPECT_EQ(j.at("bound"), json::parse(R"({"addr":"10.0.0.5","port":51000})"));
  EXPECT_EQ(j.at("result"), -115);
  EXPECT_EQ(j.at("errno"), "EINPROGRESS");
  EXPECT_FALSE(j.contains("diagnosis"));
  EXPECT_FALSE(j.contains("backlog"));
}

TEST(JsonTest, ListenReportsBacklog) {
  Event e = failed_bind_v4();
  e.type = EventType::kListen;
  e.result = 0;
  e.backlog = 511;
  e.requested.reset();
  e.local = *Endpoint::parse("0.0.0.0:8080");
  const json j = event_to_json(e, WallClock(kOffsetNs));
  EXPECT_EQ(j.at("event"), "listen");
  EXPECT_EQ(j.at("backlog"), 511);
  EXPECT_EQ(j.at("local"), json::parse(R"({"addr":"0.0.0.0","port":8080})"));
  EXPECT_TRUE(j.at("remote").is_null());
  EXPECT_EQ(j.at("result"), 0);
  EXPECT_TRUE(j.at("errno").is_null());
}

TEST(JsonTest, StateEventHasStatesAndNoResult) {
  Event e;
  e.type = EventType::kState;
  e.ts_ns = kMonoNs;
  e.pid = 0;
  e.comm = "swapper/1";
  e.netns = 4026531840U;
  e.old_state = 1;
  e.new_state = 4;
  e.local = *Endpoint::parse("10.0.0.1:8080");
  e.remote = *Endpoint::parse("10.0.0.2:40112");
  const json j = event_to_json(e, WallClock(kOffsetNs));
  EXPECT_EQ(j.at("event"), "state");
  EXPECT_EQ(j.at("old_state"), "ESTABLISHED");
  EXPECT_EQ(j.at("new_state"), "FIN_WAIT1");
  EXPECT_EQ(j.at("local"), json::parse(R"({"addr":"10.0.0.1","port":8080})"));
  EXPECT_EQ(j.at("remote"), json::parse(R"({"addr":"10.0.0.2","port":40112})"));
  EXPECT_FALSE(j.contains("result"));
  EXPECT_FALSE(j.contains("errno"));
  EXPECT_FALSE(j.contains("bound"));
  EXPECT_FALSE(j.contains("backlog"));
  EXPECT_FALSE(j.contains("diagnosis"));
}

TEST(JsonTest, Ipv6AddressesHaveNoBrackets) {
  Event e = failed_bind_v4();
  e.family = Family::kIpv6;
  e.requested = *Endpoint::parse("[::]:8080");
  const json bind = event_to_json(e, WallClock(kOffsetNs));
  EXPECT_EQ(bind.at("family"), "ipv6");
  EXPECT_EQ(bind.at("local"), json::parse(R"({"addr":"::","port":8080})"));

  e.type = EventType::kConnect;
  e.requested = *Endpoint::parse("[2001:db8::1]:443");
  e.local = *Endpoint::parse("[::ffff:10.0.0.1]:50000");
  const json connect = event_to_json(e, WallClock(kOffsetNs));
  EXPECT_EQ(connect.at("remote").at("addr"), "2001:db8::1");
  EXPECT_EQ(connect.at("local").at("addr"), "::ffff:10.0.0.1");
  EXPECT_THAT(connect.dump(), Not(HasSubstr("[")));
}

TEST(JsonTest, UnreadableSockaddrIsFlagged) {
  Event e = failed_bind_v4();
  e.requested.reset();
  e.requested_fault = true;
  e.result = -EFAULT;
  const json j = event_to_json(e, WallClock(kOffsetNs));
  EXPECT_EQ(j.at("sockaddr_fault"), true);
  EXPECT_TRUE(j.at("local").is_null());
  EXPECT_EQ(j.at("errno"), "EFAULT");
}

TEST(JsonTest, EndpointToJson) {
  EXPECT_EQ(endpoint_to_json(*Endpoint::parse("[fe80::1]:22")),
            json::parse(R"({"addr":"fe80::1","port":22})"));
  EXPECT_EQ(endpoint_to_json(*Endpoint::parse("1.2.3.4:65535")),
            json::parse(R"({"addr":"1.2.3.4","port":65535})"));
}

// Diagnoses: "fixes" carries exactly the keys that apply; people see the others as "or:" lines.
TEST(DiagnosisJsonTest, FixesCarryOnlyTheirKeys) {
  Diagnosis d;
  d.cause = Cause::kTimeWait;
  Fix wait;
  wait.kind = Fix::Kind::kWait;
  wait.seconds = 41.3;
  wait.text = "wait 41.3 s for the TIME_WAIT sockets to expire";
  Fix both;
  both.kind = Fix::Kind::kSetOption;
  both.option = "SO_REUSEADDR";
  both.on = Fix::On::kBlocker;
  both.pids = {812};
  both.text = "set SO_REUSEADDR on PID 812 (nginx)'s socket too";
  Fix addr;
  addr.kind = Fix::Kind::kBindAddress;
  addr.addr = IpAddress::parse("127.0.0.2");
  addr.text = "bind 127.0.0.2 instead of 127.0.0.1";
  Fix sysctl;
  sysctl.kind = Fix::Kind::kSysctl;
  sysctl.name = "net.ipv4.tcp_tw_reuse";
  sysctl.value = "1";
  Fix stop;
  stop.kind = Fix::Kind::kStop;
  stop.pids = {812, 900};
  d.fixes = {wait, both, addr, sysctl, stop};
  d.hint = wait.text;
  const json j = diagnosis_to_json(d);
  EXPECT_EQ(j["fixes"], json::parse(R"([
      {"kind":"wait","seconds":41.3},
      {"kind":"set_option","option":"SO_REUSEADDR","on":"blocker","pid":812},
      {"kind":"bind_address","addr":"127.0.0.2"},
      {"kind":"sysctl","name":"net.ipv4.tcp_tw_reuse","value":"1"},
      {"kind":"stop","pids":[812,900]}])"));
  EXPECT_EQ(j["hint"], wait.text);
  EXPECT_EQ(diagnosis_to_json(Diagnosis{})["fixes"], json::array());

  const std::string text = format_diagnosis(d, "  ");
  EXPECT_THAT(text, HasSubstr("  fix:   wait 41.3 s for the TIME_WAIT sockets to expire\n"));
  EXPECT_THAT(text, HasSubstr("  or:    set SO_REUSEADDR on PID 812 (nginx)'s socket too\n"));
  EXPECT_THAT(text, HasSubstr("  or:    bind 127.0.0.2 instead of 127.0.0.1\n"));
  EXPECT_THAT(text, Not(HasSubstr("or:    wait")));
}

// A socket's owner and the diagnosis that names it, for a comm set with prctl(PR_SET_NAME) to
// forge a line: the human lines hold it escaped, the JSON as it is.
TEST(ReportTest, OwnerCommIsEscapedInEveryHumanLine) {
  const std::string comm = "\x1b[2J\nfix: ok";
  SocketEntry holder = unit::listener("0.0.0.0:8080");
  holder.owner = SocketOwner{812, comm};
  holder.uid = 0;
  holder.reuseaddr = holder.reuseport = false;
  holder.bound_dev_if = 0;
  const std::string line = format_socket(holder);
  EXPECT_THAT(line, HasSubstr("pid 812 (\\e[2J\\x0afix: ok)"));
  EXPECT_FALSE(has_control_bytes(line)) << line;
  EXPECT_EQ(socket_to_json(holder)["comm"], comm);

  SocketTable table;
  table.sockets.push_back(holder);
  Call call;
  call.syscall = Syscall::kBind;
  call.proto = Proto::kTcp;
  call.family = Family::kIpv4;
  call.netns = holder.netns;
  call.local = unit::ep("0.0.0.0:8080");
  call.uid = 0;
  const Prediction p = predict(call, /*then_listen=*/true, table);
  ASSERT_TRUE(p.diagnosis.has_value());
  const Diagnosis& d = *p.diagnosis;
  // The diagnoser names the process in its fix texts; people see them escaped.
  const bool named = d.hint.find(comm) != std::string::npos ||
                     std::any_of(d.fixes.begin(), d.fixes.end(), [&](const Fix& f) {
                       return f.text.find(comm) != std::string::npos;
                     });
  EXPECT_TRUE(named) << d.hint;
  const std::string text = format_diagnosis(d, "  ");
  // Each line ends with the newline format_diagnosis puts there, and holds no other control.
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t end = text.find('\n', at);
    ASSERT_NE(end, std::string::npos) << text;
    EXPECT_FALSE(has_control_bytes(text.substr(at, end - at))) << text;
    EXPECT_TRUE(text.substr(at, end - at).starts_with("  ")) << text;
    at = end + 1;
  }
  EXPECT_THAT(text, HasSubstr("\\e[2J\\x0afix: ok"));
  EXPECT_EQ(diagnosis_to_json(d)["hint"], d.hint);
}

}  // namespace
}  // namespace portlens
