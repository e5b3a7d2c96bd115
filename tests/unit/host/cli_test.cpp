#include "agent/cmd/cli.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace portlens {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

ParseOutcome parse(std::vector<std::string> args) {
  args.insert(args.begin(), "portlens");
  return parse_command_line(args);
}

// Parses a command line that must succeed and returns what it parsed to.
CommandLine parse_ok(std::vector<std::string> args) {
  const ParseOutcome out = parse(std::move(args));
  EXPECT_EQ(out.exit_code, 0);
  EXPECT_EQ(out.stderr_text, "");
  EXPECT_EQ(out.stdout_text, "");
  if (!out.command_line) {
    ADD_FAILURE() << "no command line; stderr: " << out.stderr_text;
    return {};
  }
  return *out.command_line;
}

TEST(ParseCommandLineTest, TraceDefaults) {
  const CommandLine cl = parse_ok({"trace"});
  EXPECT_EQ(cl.command, Command::kTrace);
  EXPECT_EQ(cl.verbosity, 0);
  EXPECT_FALSE(cl.trace.json);
  EXPECT_FALSE(cl.trace.failures);
  EXPECT_FALSE(cl.trace.states);
  EXPECT_FALSE(cl.trace.pid.has_value());
  EXPECT_FALSE(cl.trace.port.has_value());
  EXPECT_FALSE(cl.trace.netns.has_value());
  EXPECT_FALSE(cl.trace.duration_s.has_value());
  EXPECT_EQ(cl.trace.ring_bytes, std::size_t{8} << 20);
}

TEST(ParseCommandLineTest, EveryTraceFlag) {
  const CommandLine cl =
      parse_ok({"trace", "--json", "--failures", "--states", "--pid", "4242", "--port", "8080",
                "--netns", "blue", "--duration", "2.5", "--ring-buffer-size", "65536"});
  EXPECT_EQ(cl.command, Command::kTrace);
  EXPECT_TRUE(cl.trace.json);
  EXPECT_TRUE(cl.trace.failures);
  EXPECT_TRUE(cl.trace.states);
  EXPECT_EQ(cl.trace.pid, std::optional<std::uint32_t>(4242));
  EXPECT_EQ(cl.trace.port, std::optional<std::uint16_t>(8080));
  EXPECT_EQ(cl.trace.netns, std::optional<std::string>("blue"));
  ASSERT_TRUE(cl.trace.duration_s.has_value());
  EXPECT_DOUBLE_EQ(*cl.trace.duration_s, 2.5);
  EXPECT_EQ(cl.trace.ring_bytes, 65536U);
}

TEST(ParseCommandLineTest, EqualsFormAndPathsForNetns) {
  const CommandLine cl =
      parse_ok({"trace", "--netns=/proc/42/ns/net", "--port=0", "--pid=1", "--duration=1"});
  EXPECT_EQ(cl.trace.netns, std::optional<std::string>("/proc/42/ns/net"));
  EXPECT_EQ(cl.trace.port, std::optional<std::uint16_t>(0));
  EXPECT_EQ(cl.trace.pid, std::optional<std::uint32_t>(1));
  EXPECT_EQ(cl.trace.duration_s, std::optional<double>(1.0));
  EXPECT_EQ(parse_ok({"trace", "--netns", "pid:42"}).trace.netns,
            std::optional<std::string>("pid:42"));
  EXPECT_EQ(parse_ok({"trace", "--port", "65535"}).trace.port, std::optional<std::uint16_t>(65535));
}

TEST(ParseCommandLineTest, RingBufferSizeSuffixes) {
  const std::pair<const char*, std::size_t> cases[] = {
      {"4096", 4096},      {"64K", 64 * 1024},        {"64k", 64 * 1024},
      {"1M", 1024 * 1024}, {"16M", 16 * 1024 * 1024}, {"1G", std::size_t{1} << 30},
      {"64KB", 64 * 1024}, {"8MiB", 8 * 1024 * 1024},
  };
  for (const auto& [text, bytes] : cases) {
    const ParseOutcome out = parse({"trace", "--ring-buffer-size", text});
    ASSERT_TRUE(out.command_line.has_value()) << text << ": " << out.stderr_text;
    EXPECT_EQ(out.command_line->trace.ring_bytes, bytes) << text;
  }
}

TEST(ParseCommandLineTest, Verbosity) {
  EXPECT_EQ(parse_ok({"-v", "trace"}).verbosity, 1);
  EXPECT_EQ(parse_ok({"-vv", "trace"}).verbosity, 2);
  EXPECT_EQ(parse_ok({"-v", "-v", "trace"}).verbosity, 2);
  EXPECT_EQ(parse_ok({"--verbose", "trace"}).verbosity, 1);
  // After the subcommand too: the flag falls through to the top level.
  EXPECT_EQ(parse_ok({"trace", "-v"}).verbosity, 1);
  EXPECT_EQ(parse_ok({"trace", "--json", "-vv"}).verbosity, 2);
}

TEST(ParseCommandLineTest, TopLevelHelp) {
  for (const char* flag : {"--help", "-h"}) {
    const ParseOutcome out = parse({flag});
    EXPECT_FALSE(out.command_line.has_value());
    EXPECT_EQ(out.exit_code, 0);
    EXPECT_EQ(out.stderr_text, "");
    EXPECT_THAT(out.stdout_text, HasSubstr("trace"));
    EXPECT_THAT(out.stdout_text, HasSubstr("--verbose"));
    EXPECT_THAT(out.stdout_text, HasSubstr("--version"));
  }
}

TEST(ParseCommandLineTest, TraceHelpMentionsEveryFlag) {
  const ParseOutcome out = parse({"trace", "--help"});
  EXPECT_FALSE(out.command_line.has_value());
  EXPECT_EQ(out.exit_code, 0);
  EXPECT_EQ(out.stderr_text, "");
  for (const char* flag : {"--json", "--failures", "--states", "--pid", "--port", "--netns",
                           "--duration", "--ring-buffer-size"}) {
    EXPECT_THAT(out.stdout_text, HasSubstr(flag));
  }
  EXPECT_THAT(out.stdout_text, HasSubstr("OPTS letters"));
}

TEST(ParseCommandLineTest, Version) {
  const ParseOutcome out = parse({"--version"});
  EXPECT_FALSE(out.command_line.has_value());
  EXPECT_EQ(out.exit_code, 0);
  EXPECT_EQ(out.stdout_text, "portlens 0.1.0\n");
  EXPECT_EQ(out.stderr_text, "");
}

struct UsageErrorCase {
  std::vector<std::string> args;
  const char* mentions;  // something the message must say
};

class ParseUsageErrorTest : public ::testing::TestWithParam<UsageErrorCase> {};

TEST_P(ParseUsageErrorTest, ExitsTwoWithAMessageOnStderr) {
  const ParseOutcome out = parse(GetParam().args);
  EXPECT_FALSE(out.command_line.has_value());
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_EQ(out.stdout_text, "");
  ASSERT_FALSE(out.stderr_text.empty());
  EXPECT_THAT(out.stderr_text, StartsWith("portlens: "));
  EXPECT_EQ(out.stderr_text.back(), '\n');
  // The error itself is one line; the only other line points at --help.
  const std::string first_line = out.stderr_text.substr(0, out.stderr_text.find('\n'));
  EXPECT_THAT(first_line, HasSubstr(GetParam().mentions));
  const std::string rest = out.stderr_text.substr(first_line.size() + 1);
  EXPECT_THAT(rest, HasSubstr("--help"));
  EXPECT_EQ(rest.find('\n'), rest.size() - 1) << "more than one line after the error";
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ParseUsageErrorTest,
    ::testing::Values(UsageErrorCase{{"trace", "--bogus"}, "--bogus"},
                      UsageErrorCase{{"--bogus", "trace"}, "--bogus"},
                      UsageErrorCase{{}, "subcommand"},
                      UsageErrorCase{{"trace", "--port", "70000"}, "70000"},
                      UsageErrorCase{{"trace", "--port", "65536"}, "65536"},
                      UsageErrorCase{{"trace", "--port", "abc"}, "abc"},
                      UsageErrorCase{{"trace", "--port", "-1"}, "port"},
                      UsageErrorCase{{"trace", "--port"}, "port"},
                      UsageErrorCase{{"trace", "--pid", "0"}, "0"},
                      UsageErrorCase{{"trace", "--pid", "abc"}, "abc"},
                      UsageErrorCase{{"trace", "--duration", "0"}, "0"},
                      UsageErrorCase{{"trace", "--duration", "-1"}, "duration"},
                      UsageErrorCase{{"trace", "--duration", "soon"}, "soon"},
                      UsageErrorCase{{"trace", "--ring-buffer-size", "1"}, "1"},
                      UsageErrorCase{{"trace", "--ring-buffer-size", "2G"}, "ring-buffer-size"},
                      UsageErrorCase{{"trace", "--ring-buffer-size", "lots"}, "lots"}));

// Regression: CLI::PositiveNumber in CLI11 2.1 is a Range from DBL_MIN to
// DBL_MAX, so `--duration 0` says "Value 0 not in range 0.000000 to 1797693134862315708...",
// a 300-character line that contradicts itself; --duration has its own check.
TEST(ParseCommandLineTest, DurationErrorIsReadable) {
  for (const char* value : {"0", "-1"}) {
    const ParseOutcome out = parse({"trace", "--duration", value});
    EXPECT_EQ(out.exit_code, 2);
    const std::string first_line = out.stderr_text.substr(0, out.stderr_text.find('\n'));
    EXPECT_THAT(first_line, HasSubstr("--duration"));
    EXPECT_THAT(first_line, ::testing::Not(HasSubstr("179769313486231570")));
    EXPECT_LE(first_line.size(), 100U) << first_line;
  }
}

// Regression: a mistyped or not yet built command was reported as "A subcommand is required",
// without naming what was typed.
TEST(ParseCommandLineTest, UnknownSubcommandIsNamed) {
  const ParseOutcome out = parse({"frobnicate"});
  EXPECT_FALSE(out.command_line.has_value());
  EXPECT_EQ(out.exit_code, 2);
  const std::string first_line = out.stderr_text.substr(0, out.stderr_text.find('\n'));
  EXPECT_THAT(first_line, HasSubstr("frobnicate"));
}

}  // namespace
}  // namespace portlens

namespace portlens {
namespace {

ParseOutcome parse_args(std::vector<std::string> args) {
  args.insert(args.begin(), "portlens");
  return parse_command_line(args);
}

TEST(ParseCheckTest, EveryFlag) {
  const ParseOutcome out =
      parse_args({"check", "UDP", "[::1]:53", "--reuseaddr", "--reuseport", "--v6only", "--device",
                  "lo", "--uid", "1000", "--netns", "blue", "--json", "--snapshot", "sock_diag"});
  ASSERT_TRUE(out.command_line.has_value()) << out.stderr_text;
  const CheckOptions& c = out.command_line->check;
  EXPECT_EQ(out.command_line->command, Command::kCheck);
  EXPECT_EQ(c.proto, Proto::kUdp);
  EXPECT_EQ(c.address, "[::1]:53");
  EXPECT_TRUE(c.reuseaddr);
  EXPECT_TRUE(c.reuseport);
  EXPECT_TRUE(c.v6only);
  EXPECT_EQ(c.device, "lo");
  EXPECT_EQ(c.uid, 1000U);
  EXPECT_EQ(c.netns, "blue");
  EXPECT_TRUE(c.json);
  EXPECT_FALSE(c.listen);
  EXPECT_EQ(c.snapshot_mode, SnapshotMode::kSockDiag);
}

TEST(ParseCheckTest, DefaultsAndListen) {
  const ParseOutcome out = parse_args({"check", "tcp", "*:80", "--listen"});
  ASSERT_TRUE(out.command_line.has_value()) << out.stderr_text;
  const CheckOptions& c = out.command_line->check;
  EXPECT_EQ(c.proto, Proto::kTcp);
  EXPECT_TRUE(c.listen);
  EXPECT_FALSE(c.uid.has_value());
  EXPECT_EQ(c.snapshot_mode, SnapshotMode::kAuto);
}

TEST(ParseCheckTest, UsageErrorsExitTwo) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"check"},
           {"check", "tcp"},
           {"check", "sctp", "127.0.0.1:80"},
           {"check", "tcp", "127.0.0.1:80", "--snapshot", "magic"},
           {"check", "tcp", "127.0.0.1:80", "--uid", "-1"},
       }) {
    const ParseOutcome out = parse_args(args);
    EXPECT_FALSE(out.command_line.has_value()) << args.size();
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_TRUE(out.stderr_text.starts_with("portlens: ")) << out.stderr_text;
  }
}

TEST(ParseWhyTest, PortProtoNetnsJson) {
  const ParseOutcome out =
      parse_args({"why", "8080", "--proto", "udp", "--netns", "pid:1", "--json"});
  ASSERT_TRUE(out.command_line.has_value()) << out.stderr_text;
  const WhyOptions& w = out.command_line->why;
  EXPECT_EQ(out.command_line->command, Command::kWhy);
  EXPECT_EQ(w.port, 8080);
  EXPECT_EQ(w.proto, Proto::kUdp);
  EXPECT_EQ(w.netns, "pid:1");
  EXPECT_TRUE(w.json);
  const ParseOutcome tcp = parse_args({"why", "443"});
  ASSERT_TRUE(tcp.command_line.has_value());
  EXPECT_EQ(tcp.command_line->why.proto, Proto::kTcp);
}

TEST(ParseWhyTest, BadPortsExitTwo) {
  for (const std::string port : {"0", "65536", "http", "-5"}) {
    const ParseOutcome out = parse_args({"why", port});
    EXPECT_EQ(out.exit_code, 2) << port;
    EXPECT_FALSE(out.command_line.has_value()) << port;
  }
}

TEST(ParseExplainTest, CauseIsOptional) {
  const ParseOutcome with = parse_args({"explain", "time_wait"});
  ASSERT_TRUE(with.command_line.has_value());
  EXPECT_EQ(with.command_line->command, Command::kExplain);
  EXPECT_EQ(with.command_line->explain_cause, "time_wait");
  const ParseOutcome without = parse_args({"explain"});
  ASSERT_TRUE(without.command_line.has_value());
  EXPECT_FALSE(without.command_line->explain_cause.has_value());
}

TEST(ParseCommandLineTest, HelpListsEveryCommand) {
  const ParseOutcome out = parse_args({"--help"});
  for (const char* cmd : {"trace", "check", "why", "explain"}) {
    EXPECT_NE(out.stdout_text.find(cmd), std::string::npos) << cmd;
  }
}

}  // namespace
}  // namespace portlens
