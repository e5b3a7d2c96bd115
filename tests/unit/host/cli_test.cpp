#include "agent/cmd/cli.hpp"

#include <net/if.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/kernel/netns.hpp"
#include "agent/kernel/preflight.hpp"
#include "agent/model/error.hpp"

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
           {"check"},  // ("check tcp" parses: run_check refuses 'tcp' as ADDR:PORT, exit 2)
           {"check", "sctp", "127.0.0.1:80"},
           {"check", "tcp", "127.0.0.1:80", "--snapshot", "magic"},
           {"check", "tcp", "127.0.0.1:80", "--uid", "-1"},
           {"check", "tcp", "127.0.0.1:80", "extra"},
           {"check", "mptcp", "127.0.0.1:80"},
       }) {
    const ParseOutcome out = parse_args(args);
    EXPECT_FALSE(out.command_line.has_value()) << args.size();
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_TRUE(out.stderr_text.starts_with("portlens: ")) << out.stderr_text;
    EXPECT_EQ(std::count(out.stderr_text.begin(), out.stderr_text.end(), '\n'), 2)
        << out.stderr_text;  // the error, then the pointer to --help
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
  for (const char* cmd : {"agent", "trace", "check", "why", "top", "explain"}) {
    EXPECT_NE(out.stdout_text.find(cmd), std::string::npos) << cmd;
  }
}

// `portlens --help` lists each command in one line; its paragraphs are in the command's own help.
TEST(ParseCommandLineTest, TopLevelHelpIsOneLinePerCommand) {
  const std::string top = parse_args({"--help"}).stdout_text;
  const std::string commands = top.substr(top.find("Subcommands:"));
  std::istringstream lines(commands);
  std::string line;
  std::getline(lines, line);
  int listed = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) {
      continue;
    }
    ++listed;
    EXPECT_THAT(line, StartsWith("  ")) << line;
    EXPECT_NE(line[2], ' ') << "a continuation line: " << line;
    EXPECT_LE(line.size(), 120U) << line;
  }
  EXPECT_EQ(listed, 6);
  for (const char* cmd : {"agent", "trace", "check", "why", "top", "explain"}) {
    const std::string own = parse_args({cmd, "--help"}).stdout_text;
    const std::string summary = own.substr(0, own.find('\n'));
    EXPECT_THAT(top, HasSubstr(summary)) << cmd;  // the same first line
    EXPECT_GT(own.find("\n\n"), summary.size() - 1) << cmd;
    EXPECT_GT(own.size(), summary.size() + 80) << cmd << ": the paragraphs are missing";
  }
}

TEST(ParseCheckTest, ConnectTakesADestination) {
  const ParseOutcome out = parse_args({"check", "connect", "10.0.0.5:6379", "--json"});
  ASSERT_TRUE(out.command_line.has_value()) << out.stderr_text;
  EXPECT_TRUE(out.command_line->check.connect);
  EXPECT_EQ(out.command_line->check.proto, Proto::kTcp);
  EXPECT_EQ(out.command_line->check.address, "10.0.0.5:6379");
  EXPECT_FALSE(parse_args({"check", "127.0.0.1:80"}).command_line->check.connect);
  const ParseOutcome alone = parse_args({"check", "connect"});
  // "connect" alone is taken as the address, which run_check refuses (exit 2).
  ASSERT_TRUE(alone.command_line.has_value());
  EXPECT_EQ(alone.command_line->check.address, "connect");
}

TEST(ParseCommandLineTest, ColorIsAutoAlwaysOrNever) {
  EXPECT_EQ(parse_args({"check", "127.0.0.1:80"}).command_line->color, "auto");
  EXPECT_EQ(parse_args({"--color", "never", "check", "127.0.0.1:80"}).command_line->color, "never");
  EXPECT_EQ(parse_args({"why", "80", "--color=always"}).command_line->color, "always");
  const ParseOutcome bad = parse_args({"--color", "sometimes", "why", "80"});
  EXPECT_FALSE(bad.command_line.has_value());
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.stderr_text, HasSubstr("--color"));
}

// check takes [PROTO] ADDR:PORT: tcp when the protocol is left out, as everywhere else.
TEST(ParseCheckTest, ProtocolDefaultsToTcp) {
  const ParseOutcome out = parse_args({"check", "127.0.0.1:8080", "--listen"});
  ASSERT_TRUE(out.command_line.has_value()) << out.stderr_text;
  EXPECT_EQ(out.command_line->check.proto, Proto::kTcp);
  EXPECT_EQ(out.command_line->check.address, "127.0.0.1:8080");
  EXPECT_TRUE(out.command_line->check.listen);
  const ParseOutcome udp = parse_args({"check", "--reuseaddr", "udp", "[::]:53"});
  ASSERT_TRUE(udp.command_line.has_value()) << udp.stderr_text;
  EXPECT_EQ(udp.command_line->check.proto, Proto::kUdp);
  EXPECT_EQ(udp.command_line->check.address, "[::]:53");
}

}  // namespace
}  // namespace portlens

namespace portlens {
namespace {

// The first line of what parsing printed on stderr.
std::string first_line_of(const ParseOutcome& out) {
  return out.stderr_text.substr(0, out.stderr_text.find('\n'));
}

// Regression: CLI::Range lets NaN through (every comparison with it is false), and "inf" reads as
// a number: `--reconcile-interval nan` reconciled without pause and `trace --duration inf` never
// stopped. Every option that takes a number refuses both, in one line naming the option.
TEST(ParseNumbersTest, NanAndInfinityAreRefusedEverywhere) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> options = {
      {{"agent", "--reconcile-interval"}, "--reconcile-interval"},
      {{"agent", "--web.max-requests"}, "--web.max-requests"},
      {{"agent", "--top-k"}, "--top-k"},
      {{"agent", "--event-log.max-size"}, "--event-log.max-size"},
      {{"agent", "--event-log.keep"}, "--event-log.keep"},
      {{"agent", "--ring-buffer-size"}, "--ring-buffer-size"},
      {{"trace", "--duration"}, "--duration"},
      {{"trace", "--pid"}, "--pid"},
      {{"trace", "--port"}, "--port"},
      {{"trace", "--ring-buffer-size"}, "--ring-buffer-size"},
      {{"check", "tcp", "127.0.0.1:80", "--uid"}, "--uid"},
      {{"why"}, "port"},
  };
  for (const auto& [prefix, name] : options) {
    for (const std::string value : {"nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999"}) {
      if (value.starts_with("-") && prefix.size() == 1) {
        continue;  // a positional: "-inf" reads as a flag, and is refused as one
      }
      std::vector<std::string> args = prefix;
      args.push_back(value);
      const ParseOutcome out = parse(args);
      SCOPED_TRACE(name + " " + value);
      EXPECT_FALSE(out.command_line.has_value());
      EXPECT_EQ(out.exit_code, 2);
      EXPECT_THAT(first_line_of(out), StartsWith("portlens: "));
      EXPECT_THAT(first_line_of(out), HasSubstr(name));
      EXPECT_THAT(first_line_of(out), HasSubstr(value));
    }
  }
}

TEST(ParseNumbersTest, SecondsStillTakeFractionsAndBounds) {
  EXPECT_DOUBLE_EQ(parse_ok({"agent", "--reconcile-interval", "0.1"}).agent.reconcile_interval_s,
                   0.1);
  EXPECT_DOUBLE_EQ(parse_ok({"agent", "--reconcile-interval", "86400"}).agent.reconcile_interval_s,
                   86400.0);
  EXPECT_DOUBLE_EQ(parse_ok({"agent", "--reconcile-interval", "2.5"}).agent.reconcile_interval_s,
                   2.5);
  for (const std::string value : {"0.05", "86401", "-1", "", "1s", " 1", "0x"}) {
    const ParseOutcome out = parse({"agent", "--reconcile-interval", value});
    EXPECT_EQ(out.exit_code, 2) << value;
    EXPECT_THAT(first_line_of(out), HasSubstr("--reconcile-interval")) << value;
    EXPECT_THAT(first_line_of(out), HasSubstr("from 0.1 to 86400")) << value;
  }
  EXPECT_EQ(parse_ok({"trace", "--duration", "1e-3"}).trace.duration_s, 1e-3);
  for (const std::string value : {"1e999", "inf", "2x", ""}) {
    const ParseOutcome out = parse({"trace", "--duration", value});
    EXPECT_EQ(out.exit_code, 2) << value;
    EXPECT_THAT(first_line_of(out), HasSubstr("not a positive number of seconds")) << value;
  }
}

// Regression: `why --help` and `check --help` printed the --snapshot choices' one-byte enum values
// raw (NUL, \x01, \x02). No help may hold a control byte other than the newline.
TEST(ParseHelpTest, EveryHelpIsPrintableText) {
  const std::vector<std::vector<std::string>> helps = {
      {"--help"},        {"agent", "--help"}, {"trace", "--help"},   {"check", "--help"},
      {"why", "--help"}, {"top", "--help"},   {"explain", "--help"}, {"-h"},
      {"check", "-h"},   {"why", "-h"},
  };
  for (const auto& args : helps) {
    const ParseOutcome out = parse(args);
    SCOPED_TRACE(args.front() + (args.size() > 1 ? " " + args[1] : ""));
    ASSERT_FALSE(out.stdout_text.empty()) << out.stderr_text;
    EXPECT_EQ(out.exit_code, 0);
    for (const char c : out.stdout_text) {
      const auto byte = static_cast<unsigned char>(c);
      EXPECT_TRUE(c == '\n' || (byte >= 0x20 && byte != 0x7f))
          << "byte " << static_cast<int>(byte) << " in:\n"
          << out.stdout_text;
    }
  }
  // No CLI11 type or validator strings: a value is named, its bounds are said in words.
  for (const auto& args : helps) {
    const std::string help = parse(args).stdout_text;
    for (const char* noise :
         {"UINT", ":INT", "TEXT:", " in [", "SIZE [", "(=1024b)", "REQUIRED", "(1x)"}) {
      EXPECT_THAT(help, ::testing::Not(HasSubstr(noise))) << args.front() << " " << noise;
    }
  }
  // The --snapshot choices read as words.
  for (const char* cmd : {"check", "why"}) {
    const std::string help = parse({cmd, "--help"}).stdout_text;
    EXPECT_THAT(help, HasSubstr("--snapshot")) << cmd;
    EXPECT_THAT(help, HasSubstr("sock_diag")) << cmd;
  }
}

// Sizes say what a size is, not that "nan" is a unit they do not know.
TEST(ParseNumbersTest, SizesThatAreNotNumbersSaySo) {
  for (const std::string value : {"nan", "inf", "-1", "K", "1e9", "1.5M", "0x10"}) {
    const ParseOutcome out = parse({"trace", "--ring-buffer-size", value});
    EXPECT_EQ(out.exit_code, 2) << value;
    EXPECT_THAT(first_line_of(out), HasSubstr("'" + value + "' is not a size")) << value;
    EXPECT_THAT(first_line_of(out), ::testing::Not(HasSubstr("unit not recognized"))) << value;
  }
  EXPECT_EQ(parse_ok({"trace", "--ring-buffer-size", "64 K"}).trace.ring_bytes, 64U * 1024);
  EXPECT_EQ(parse_ok({"agent", "--event-log.max-size", "1MiB"}).agent.event_log_max_bytes,
            std::uint64_t{1} << 20);
}

TEST(ParseCheckTest, SnapshotModesByName) {
  EXPECT_EQ(parse_ok({"why", "80", "--snapshot", "bpf"}).why.snapshot_mode,
            SnapshotMode::kBpfIterator);
  EXPECT_EQ(parse_ok({"why", "80", "--snapshot", "sock_diag"}).why.snapshot_mode,
            SnapshotMode::kSockDiag);
  EXPECT_EQ(parse_ok({"why", "80", "--snapshot", "auto"}).why.snapshot_mode, SnapshotMode::kAuto);
  EXPECT_EQ(parse_ok({"why", "80"}).why.snapshot_mode, SnapshotMode::kAuto);
  EXPECT_EQ(parse_ok({"check", "tcp", "*:80", "--snapshot", "bpf"}).check.snapshot_mode,
            SnapshotMode::kBpfIterator);
  EXPECT_EQ(parse({"why", "80", "--snapshot", "magic"}).exit_code, 2);
}

// What run_main prints for an error: one line, escaped, since messages carry names and paths
// that came from the kernel or the file system.
TEST(ErrorLinesTest, MessagesAreEscapedForTheTerminal) {
  const std::string text =
      error_lines(Error("cannot enter network namespace /run/netns/\x1b[2Jx\nportlens: ok"), 0);
  EXPECT_EQ(text, "portlens: cannot enter network namespace /run/netns/\\e[2Jx\\x0aportlens: ok\n");
  EXPECT_EQ(error_lines(std::runtime_error("bad\tthing"), 0),
            "portlens: internal error: bad\\x09thing\n");
}

TEST(ErrorLinesTest, VerboseListsEveryPreflightProblem) {
  const PreflightError error({{"first problem"}, {"second \x1b problem"}, {"third problem"}});
  const std::string quiet = error_lines(error, 0);
  EXPECT_EQ(std::count(quiet.begin(), quiet.end(), '\n'), 1) << quiet;
  EXPECT_THAT(quiet, HasSubstr("first problem"));
  EXPECT_THAT(quiet, HasSubstr("(and 2 more problems; run with -v to see them)"));
  EXPECT_THAT(quiet, ::testing::Not(HasSubstr("second")));

  const std::string verbose = error_lines(error, 1);
  EXPECT_EQ(verbose,
            "portlens: 3 problems:\n"
            "  - first problem\n"
            "  - second \\e problem\n"
            "  - third problem\n");
  EXPECT_THAT(verbose, ::testing::Not(HasSubstr("more problem")));
  // With one problem, -v has nothing more to show.
  EXPECT_EQ(error_lines(PreflightError({{"only problem"}}), 1), "portlens: only problem\n");
}

// --web.telemetry-path: a '?' or '#' starts the query or fragment, so no scrape could reach it.
TEST(AgentOptionsTest, TelemetryPathWithQueryOrFragmentIsRefused) {
  const auto refusal = [](const std::string& path) -> std::string {
    try {
      check_telemetry_path(path);
    } catch (const UsageError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(refusal("/metrics"), "");
  EXPECT_EQ(refusal("/a/b-c_d.e~f"), "");
  EXPECT_THAT(refusal("/metrics?x"), HasSubstr("'?' starts the query"));
  EXPECT_THAT(refusal("/metrics?x"), HasSubstr("as in /metrics"));
  EXPECT_THAT(refusal("/metrics#top"), HasSubstr("'#' starts the fragment"));
  EXPECT_THAT(refusal("/?"), HasSubstr("'?'"));
  EXPECT_THAT(refusal("/me trics"), HasSubstr("white space"));
  EXPECT_THAT(refusal("/m\x1b"), HasSubstr("control"));
  EXPECT_THAT(refusal("metrics"), HasSubstr("must start with /"));
  EXPECT_THAT(refusal("/"), HasSubstr("landing page"));
  EXPECT_THAT(refusal(""), HasSubstr("must start with /"));
  for (const std::string path : {"/metrics?x", "/metrics#top", "/"}) {
    EXPECT_THAT(refusal(path), StartsWith("--web.telemetry-path " + path + ": "));
  }
}

TEST(AgentOptionsTest, EmptyEventLogPathSaysItIsEmpty) {
  EXPECT_NO_THROW(check_event_log_path(std::nullopt));
  EXPECT_NO_THROW(check_event_log_path(std::string("/var/log/portlens.jsonl")));
  try {
    check_event_log_path(std::string());
    ADD_FAILURE() << "an empty --event-log was accepted";
  } catch (const UsageError& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("--event-log: the path is empty"));
    EXPECT_THAT(std::string(e.what()), ::testing::Not(HasSubstr("directory")));
  }
}

TEST(AgentOptionsTest, ListenAddressListSaysOneAddressPerFlag) {
  try {
    checked_listen_addresses({"a:1,b:2"});
    ADD_FAILURE() << "a list was accepted";
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_THAT(msg, StartsWith("--web.listen-address "));
    EXPECT_THAT(msg, HasSubstr("one address per flag"));
    EXPECT_THAT(msg, ::testing::Not(HasSubstr("IPv6")));
  }
}

// --device N: the index must name an interface in the namespace (loopback is 1 in every one).
TEST(CheckDeviceTest, IndexesAndNamesMustExistInTheNamespace) {
  const NetnsRef here = current_netns();
  EXPECT_EQ(resolve_device("1", here), 1);
  EXPECT_EQ(resolve_device("lo", here), 1);
  const auto refusal = [&](const std::string& device) -> std::string {
    try {
      resolve_device(device, here);
    } catch (const UsageError& e) {
      return e.what();
    }
    return "";
  };
  // An index no interface has: find one above every index in use.
  unsigned unused = 99999;
  std::array<char, IF_NAMESIZE> name{};
  while (if_indextoname(unused, name.data()) != nullptr) {
    ++unused;
  }
  const std::string missing = std::to_string(unused);
  EXPECT_THAT(refusal(missing), HasSubstr("--device " + missing + ": no interface has index"));
  EXPECT_THAT(refusal("0"), HasSubstr("start at 1"));
  EXPECT_THAT(refusal("-3"), HasSubstr("start at 1"));
  EXPECT_THAT(refusal("portlens-none0"), HasSubstr("no such interface"));
}

}  // namespace
}  // namespace portlens
