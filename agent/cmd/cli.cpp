#include "agent/cmd/cli.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/kernel/logging.hpp"
#include "agent/kernel/preflight.hpp"
#include "agent/model/error.hpp"
#include "agent/render/explain.hpp"
#include "agent/render/format.hpp"
#include "portlens_version.hpp"

namespace portlens {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_reopen{false};

void on_stop_signal(int /*signo*/) { g_stop.store(true); }
void on_hangup_signal(int /*signo*/) { g_reopen.store(true); }

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the ring-buffer wait returns at once on a signal
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = on_hangup_signal;  // the agent reopens its event log
  sigaction(SIGHUP, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout shows up as a failed write instead
}

// text as a number, whole: std::stod would take "1x" as 1 and "nan" or "inf" as numbers.
std::optional<double> finite_number(const std::string& text) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text.front())) != 0) {
    return std::nullopt;
  }
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

// A number of seconds from min to max. CLI::Range lets NaN through (every comparison with it is
// false) and infinity reads as a number: `--reconcile-interval nan` reconciled without pause.
CLI::Validator seconds_between(double min, double max) {
  return {[min, max](const std::string& text) -> std::string {
            const auto v = finite_number(text);
            if (!v || *v < min || *v > max) {
              return fmt::format("'{}' is not a number of seconds from {} to {}", text, min, max);
            }
            return "";
          },
          "S", "seconds"};
}

// A number of seconds above zero, finite. (CLI11 2.1's PositiveNumber prints DBL_MAX in its
// message, and lets "inf" through: `trace --duration inf` never stopped.)
CLI::Validator positive_seconds() {
  return {[](const std::string& text) -> std::string {
            const auto v = finite_number(text);
            return v && *v > 0 ? "" : "'" + text + "' is not a positive number of seconds";
          },
          "S", "positive"};
}

// Digits only: CLI11 would say "Value nan not in range 1 to 10000" or "Could not convert".
CLI::Validator whole_number() {
  return {[](const std::string& text) -> std::string {
            const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
              return std::isdigit(static_cast<unsigned char>(c)) != 0;
            });
            return digits ? "" : "'" + text + "' is not a whole number (digits only)";
          },
          "", "whole number"};
}

// A size as CLI::AsSizeValue reads it: digits, then a unit or none ("4096", "64K", "8 MiB").
// Checked before it, which would call "nan" or "inf" a unit it does not know.
CLI::Validator size_text() {
  return {[](const std::string& text) -> std::string {
            const auto is = [&](std::size_t i, int (*klass)(int)) {
              return i < text.size() && klass(static_cast<unsigned char>(text[i])) != 0;
            };
            std::size_t i = 0;
            while (is(i, isdigit)) {
              ++i;
            }
            const bool number = i > 0;
            while (is(i, isblank)) {
              ++i;
            }
            while (is(i, isalpha)) {
              ++i;
            }
            return number && i == text.size()
                       ? ""
                       : "'" + text + "' is not a size: bytes, or with a unit as in 64K or 8MiB";
          },
          "", "size"};
}

// --snapshot as a word: a CheckedTransformer over the enum printed its one-byte values raw into
// --help (NUL, \x01, \x02).
SnapshotMode snapshot_mode_named(const std::string& name) {
  if (name == "bpf") {
    return SnapshotMode::kBpfIterator;
  }
  return name == "sock_diag" ? SnapshotMode::kSockDiag : SnapshotMode::kAuto;
}

// Help as a person reads it. The command list shows each subcommand's first line only (the
// paragraphs stay in its own --help), and an option shows the name of its value and its default,
// not CLI11's type and validator strings ("UINT:UINT in [1 - 10000]", "BYTES:SIZE [b, kb(=1024b),
// ...]"): what a value may be is said in the option's own help, and a bad one is refused in words.
class PlainFormatter : public CLI::Formatter {
 public:
  std::string make_subcommand(const CLI::App* sub) const override {
    const std::string& text = sub->get_description();
    std::stringstream out;
    CLI::detail::format_help(out, sub->get_display_name(true), text.substr(0, text.find('\n')),
                             get_column_width());
    return out.str();
  }

  // A positional that reads more than one word names them itself ("[tcp|udp] ADDR:PORT").
  std::string make_option_usage(const CLI::Option* opt) const override {
    return opt->get_option_text().empty() ? CLI::Formatter::make_option_usage(opt)
                                          : opt->get_option_text();
  }

  std::string make_option_opts(const CLI::Option* opt) const override {
    std::string out;
    if (!opt->get_option_text().empty()) {
      out += " " + opt->get_option_text();
    } else if (opt->get_type_size() != 0) {
      // A set of words shows as its words ("{tcp,udp}"); shell completion reads them here.
      const std::string type = opt->get_type_name();
      const auto open = type.find('{');
      const std::string name = open == std::string::npos
                                   ? type.substr(0, type.find(':'))
                                   : type.substr(open, type.find('}', open) + 1 - open);
      if (!name.empty()) {
        out += " " + name;
      }
      if (!opt->get_default_str().empty()) {
        out += " (default " + opt->get_default_str() + ")";
      }
      if (opt->get_expected_max() == CLI::detail::expected_max_vector_size) {
        out += " ...";
      }
      if (opt->get_required()) {
        out += " (required)";
      }
    }
    return out;
  }
};

const char* const kTraceDescription =
    "Stream bind(), listen() and connect() calls live: address, socket options, result.\n\n"
    "Each call is printed as it returns, with the address asked for, the socket's options and "
    "the result.\n\n"
    "OPTS letters: R SO_REUSEADDR, P SO_REUSEPORT, 6 IPV6_V6ONLY, F IP_FREEBIND, "
    "T IP_TRANSPARENT, N IP_BIND_ADDRESS_NO_PORT, @N bound to interface index N (SO_BINDTODEVICE)."
    "\nNS: an `ip netns` name, a path such as /proc/PID/ns/net or /run/netns/NAME, or pid:PID.";

void build_app(CLI::App& app, CommandLine& cl) {
  app.description(
      "portlens: why did bind()/listen()/connect() fail, who holds the port, and how close is "
      "this host to running out of ports.");
  app.formatter(std::make_shared<PlainFormatter>());
  app.set_version_flag("--version", std::string("portlens ") + kPortlensVersion);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_flag("-v,--verbose", cl.verbosity,
               "more detail on stderr (-v debug, including libbpf's messages; -vv trace)");
  app.add_option("--color", cl.color,
                 "colour the verdicts on a terminal: auto (when stdout is one, NO_COLOR unset), "
                 "always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str()
      ->type_name("WHEN");

  CLI::App* agent = app.add_subcommand("agent", "the daemon: trace, diagnose, export metrics");
  agent->description(
      "The daemon: trace, diagnose every failure, serve Prometheus metrics and the local API.\n\n"
      "Follow every bind/listen/connect and TCP state change on the host, keep the socket table "
      "of every network namespace, diagnose every failure, and serve Prometheus metrics, a JSON "
      "event log and a local API for `portlens why`. Runs until SIGTERM or SIGINT; SIGHUP "
      "reopens the event log. Needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for setns).");
  agent->callback([&cl] { cl.command = Command::kAgent; });
  AgentOptions& a = cl.agent;
  agent
      ->add_option("--web.listen-address", a.listen_addresses,
                   "where to serve HTTP: :PORT (every address, IPv4 and IPv6), IPv4:PORT or "
                   "[IPv6]:PORT; repeatable")
      ->capture_default_str()
      ->type_name("ADDR");
  agent->add_option("--web.telemetry-path", a.telemetry_path, "URL path of the metrics")
      ->capture_default_str()
      ->type_name("URL_PATH");
  agent
      ->add_option("--web.max-requests", a.max_requests,
                   "requests served in parallel; beyond it 503 (0: no limit)")
      ->check(whole_number())
      ->capture_default_str()
      ->type_name("N");
  agent
      ->add_option("--web.config.file", a.web_config_file,
                   "TLS and basic auth, in the exporter-toolkit web configuration format")
      ->type_name("PATH");
  agent
      ->add_option(
          "--top-k", a.top_k,
          "series kept per port, destination and comm label, 1 to 10000; the rest sum into other")
      ->check(whole_number())
      ->check(CLI::Range(std::size_t{1}, std::size_t{10'000}))
      ->capture_default_str()
      ->type_name("N");
  agent
      ->add_option(
          "--web.max-namespaces", a.max_namespaces,
          "network namespaces with series of their own (1 to 100000), the most TCP sockets "
          "first; the rest sum into netns=\"other\" (any user can create namespaces)")
      ->check(whole_number())
      ->check(CLI::Range(std::size_t{1}, std::size_t{100'000}))
      ->capture_default_str()
      ->type_name("N");
  agent
      ->add_option("--event-log", a.event_log,
                   "append every diagnosed failure as JSON Lines (never waited for: a reader that "
                   "falls behind costs lines, counted)")
      ->type_name("PATH");
  agent
      ->add_option("--event-log.max-size", a.event_log_max_bytes,
                   "rotate the event log at this size, 4KiB to 1TiB (default 64MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->transform(size_text())  // runs first: a transform goes to the front
      ->check(CLI::Range(std::uint64_t{4096}, std::uint64_t{1} << 40))
      ->type_name("BYTES");
  agent->add_option("--event-log.keep", a.event_log_keep, "rotated event logs kept, 1 to 100")
      ->check(whole_number())
      ->check(CLI::Range(std::size_t{1}, std::size_t{100}))
      ->capture_default_str()
      ->type_name("N");
  agent->add_option("--api.socket", a.api_socket, "the local API's Unix socket (root only)")
      ->capture_default_str()
      ->type_name("PATH");
  agent->add_option("--log.level", a.log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str()
      ->type_name("LEVEL");
  agent->add_option("--log.format", a.log_format, "logfmt or json")
      ->check(CLI::IsMember({"logfmt", "json"}))
      ->capture_default_str()
      ->type_name("FORMAT");
  agent
      ->add_option("--reconcile-interval", a.reconcile_interval_s,
                   "seconds between snapshots that correct the socket table, 0.1 to 86400")
      ->check(seconds_between(0.1, 86400.0))
      ->capture_default_str()
      ->type_name("S");
  agent
      ->add_option("--ring-buffer-size", a.ring_bytes,
                   "kernel-to-user ring buffer size, 4KiB to 1GiB, rounded up to a power of two "
                   "(default 8MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->transform(size_text())  // runs first: a transform goes to the front
      ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 30))
      ->type_name("BYTES");
  agent->add_flag_callback(
      "--no-bpf-stats", [&a] { a.bpf_stats = false; },
      "leave the kernel's BPF program statistics off: portlens_bpf_program_run_seconds_total "
      "then counts only if kernel.bpf_stats_enabled=1 (they cost every BPF program on the host "
      "two clock reads per run)");

  CLI::App* trace = app.add_subcommand("trace", "stream bind/listen/connect calls live");
  trace->description(kTraceDescription);
  trace->callback([&cl] { cl.command = Command::kTrace; });
  TraceOptions& t = cl.trace;
  trace->add_flag("--json", t.json, "JSON Lines, one object per event (the stable form)");
  trace->add_flag("--failures", t.failures, "only calls that failed");
  trace->add_flag("--states", t.states,
                  "also TCP state changes (sock:inet_sock_set_state) and resets received, with "
                  "the TIME_WAIT a close leaves");
  trace->add_flag("--wide", t.wide, "addresses whole: the table is wider than 120 columns");
  trace->add_option("--pid", t.pid, "only this process (its tgid)")
      ->check(whole_number())
      ->check(CLI::Range(1, 0x3fffffff))
      ->type_name("P");
  trace->add_option("--port", t.port, "only events where this port is local or remote")
      ->check(whole_number())
      ->check(CLI::Range(0, 65535))
      ->type_name("N");
  trace->add_option("--netns", t.netns, "only this network namespace")->type_name("NS");
  trace->add_option("--duration", t.duration_s, "stop after S seconds (fractions allowed)")
      ->check(positive_seconds())
      ->type_name("S");
  trace
      ->add_option("--ring-buffer-size", t.ring_bytes,
                   "kernel-to-user ring buffer size, 4KiB to 1GiB, rounded up to a power of two "
                   "(default 8MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->transform(size_text())  // runs first: a transform goes to the front
      ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 30))
      ->type_name("BYTES");

  const auto snapshot_option = [](CLI::App* cmd, SnapshotMode& target) {
    return cmd
        ->add_option_function<std::string>(
            "--snapshot", [&target](const std::string& v) { target = snapshot_mode_named(v); },
            "where socket state comes from: auto (BPF iterators, else sock_diag), bpf, sock_diag "
            "(sees no SO_REUSEADDR/SO_REUSEPORT flags); default auto")
        ->check(CLI::IsMember({"auto", "bpf", "sock_diag"}))
        ->type_name("MODE");
  };
  // Protocols parse as words: CLI11 2.1 cannot bind an enum that has an ADL to_string().
  const auto proto_option = [](CLI::App* cmd, const std::string& name, Proto& target,
                               const std::string& help) {
    return cmd
        ->add_option_function<std::string>(
            name, [&target](const std::string& v) { target = *parse_proto(v); }, help)
        ->check(CLI::IsMember({"tcp", "udp"}, CLI::ignore_case))
        ->transform([](std::string v) {
          std::transform(v.begin(), v.end(), v.begin(),
                         [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
          return v;
        });
  };

  CLI::App* check =
      app.add_subcommand("check", "predict whether a bind (and listen) would succeed");
  check->description(
      "Would bind() to ADDR:PORT (or a connect() toward it) succeed now? Exit 0 yes, 1 no.\n\n"
      "Predicts from a fresh look at the kernel's sockets whether bind() to ADDR:PORT (and, with "
      "--listen, the listen() after it) would succeed now. Nothing is bound. Exit 0: it would "
      "succeed; 1: it would fail (cause, blockers and fix are printed) or cannot be told; 2: bad "
      "input.\n\n`check connect ADDR:PORT` predicts instead whether a connect() toward ADDR:PORT "
      "from an unbound TCP socket would find a local port: the ports usable toward it, those "
      "in use, the TIME_WAITs it could take over now, and when the next one frees.\n\nADDR:PORT: "
      "127.0.0.1:8080, 0.0.0.0:80, *:80, [::]:443, [::1]:53.");
  check->callback([&cl] {
    if (cl.check.address.empty()) {
      throw CLI::ValidationError("check",
                                 "needs ADDR:PORT, as in 127.0.0.1:8080 (tcp) or udp [::]:53");
    }
    cl.command = Command::kCheck;
  });
  CheckOptions& c = cl.check;
  // [tcp|udp] ADDR:PORT: two positionals, the first optional, which CLI11 2.1 cannot say; both are
  // taken as words and sorted out here.
  check
      ->add_option_function<std::vector<std::string>>(
          "target",
          [&c](const std::vector<std::string>& words) {
            if (words.size() > 2) {
              throw CLI::ValidationError("check",
                                         "takes [tcp|udp] ADDR:PORT or connect ADDR:PORT, not " +
                                             std::to_string(words.size()) + " words");
            }
            if (words.size() == 2 && words[0] == "connect") {
              c.connect = true;
              c.proto = Proto::kTcp;
            } else if (words.size() == 2) {
              std::string word = words[0];
              std::transform(word.begin(), word.end(), word.begin(),
                             [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
              const auto proto = parse_proto(word);
              if (!proto || (*proto != Proto::kTcp && *proto != Proto::kUdp)) {
                throw CLI::ValidationError("check", "'" + words[0] +
                                                        "' is not a protocol (tcp or udp) nor "
                                                        "connect, before ADDR:PORT");
              }
              c.proto = *proto;
            }
            c.address = words.back();
          },
          "the address to bind, after its protocol (tcp when none is given); or connect and "
          "the destination")
      ->expected(1, CLI::detail::expected_max_vector_size)  // more than 2: refused in words
      ->option_text("[tcp|udp|connect] ADDR:PORT");
  check->add_flag("--reuseaddr", c.reuseaddr, "with SO_REUSEADDR");
  check->add_flag("--reuseport", c.reuseport, "with SO_REUSEPORT");
  check->add_flag("--v6only", c.v6only, "with IPV6_V6ONLY (IPv6 addresses)");
  check->add_option("--device", c.device, "bound to this interface (SO_BINDTODEVICE)")
      ->type_name("IF");
  check->add_option("--uid", c.uid, "as this user (default: yours); SO_REUSEPORT compares uids")
      ->check(whole_number())
      ->type_name("U");
  check->add_flag("--listen", c.listen, "then listen() (tcp)");
  check->add_option("--netns", c.netns, "in this network namespace")->type_name("NS");
  check->add_flag("--json", c.json, "one JSON object");
  snapshot_option(check, c.snapshot_mode);

  CLI::App* why = app.add_subcommand("why", "who holds a port now, and what a new bind would meet");
  why->description(
      "Who holds PORT now, and what a new bind() to it would meet.\n\n"
      "Everything that holds PORT now: listeners with their owners and options, bound sockets, "
      "connections, TIME_WAIT sockets with their expiry; and what `check` predicts for bind() to "
      "0.0.0.0:PORT (then listen(), for tcp) with and without SO_REUSEADDR.");
  why->callback([&cl] { cl.command = Command::kWhy; });
  WhyOptions& w = cl.why;
  why->add_option("port", w.port, "the port")
      ->required()
      ->check(whole_number())
      ->check(CLI::Range(1, 65535))
      ->type_name("PORT");
  proto_option(why, "--proto", w.proto, "tcp (default) or udp")->type_name("PROTO");
  why->add_option("--netns", w.netns, "in this network namespace")->type_name("NS");
  why->add_option("--api.socket", w.api_socket,
                  "where a running agent answers (for the recent failures)")
      ->capture_default_str()
      ->type_name("PATH");
  why->add_flag("--json", w.json, "one JSON object");
  snapshot_option(why, w.snapshot_mode);

  CLI::App* top = app.add_subcommand("top", "a live view of TIME_WAIT, queues, ports and failures");
  top->description(
      "A live view of TIME_WAIT, accept queues, ports in use and failures, refreshed each second."
      "\n\n"
      "Per network namespace its TCP sockets by state and TIME_WAIT; each TCP listener with its "
      "accept queue (length and limit); TIME_WAIT by local port; ephemeral ports in use per "
      "destination against what connect() may use; and the failures portlens diagnoses, per "
      "second and by cause. Reads from the agent's local API when an agent answers, else loads "
      "the BPF programs itself (root).\n\n"
      "Keys: q quit, Tab next table, s next sort column, t TIME_WAIT, l accept queues, p ports, "
      "u utilization, f failures. When stdout is not a terminal, prints one plain frame as --once "
      "does.\nNS: an `ip netns` name, a path such as /proc/PID/ns/net or /run/netns/NAME, or "
      "pid:PID.");
  top->callback([&cl] { cl.command = Command::kTop; });
  TopOptions& tp = cl.top;
  top->add_option("--netns", tp.netns, "only this network namespace")->type_name("NS");
  top->add_option("--interval", tp.interval_s, "seconds between refreshes, 0.1 to 3600")
      ->check(seconds_between(0.1, 3600.0))
      ->capture_default_str()
      ->type_name("S");
  top->add_flag("--once", tp.once,
                "print one plain-text frame, taken one interval after the first, and exit");
  top->add_option("--source", tp.source,
                  "auto (the agent when it answers, else a tracer of its own), agent or tracer")
      ->check(CLI::IsMember({"auto", "agent", "tracer"}))
      ->capture_default_str()
      ->type_name("SOURCE");
  top->add_option("--api.socket", tp.api_socket, "where a running agent answers")
      ->capture_default_str()
      ->type_name("PATH");

  CLI::App* explain = app.add_subcommand("explain", "the long explanation of a cause");
  explain->description(
      "The long explanation of a failure cause: the kernel's rule, an example, the fixes.\n\n"
      "What the kernel does, a minimal example, and the fixes with their trade-offs, for one "
      "cause of the vocabulary. Without CAUSE, lists them.");
  explain->callback([&cl] { cl.command = Command::kExplain; });
  explain->add_option("cause", cl.explain_cause, "e.g. time_wait, port_in_use")->type_name("CAUSE");
}

}  // namespace

ParseOutcome parse_command_line(const std::vector<std::string>& args) {
  CommandLine cl;
  CLI::App app;
  build_app(app, cl);
  std::vector<const char*> argv;
  argv.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.c_str());
  }
  ParseOutcome outcome;
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp&) {
    outcome.stdout_text = app.help();
    return outcome;
  } catch (const CLI::CallForAllHelp&) {
    outcome.stdout_text = app.help("", CLI::AppFormatMode::All);
    return outcome;
  } catch (const CLI::CallForVersion&) {
    outcome.stdout_text = std::string("portlens ") + kPortlensVersion + "\n";
    return outcome;
  } catch (const CLI::ParseError& e) {
    outcome.exit_code = 2;
    std::string message = e.what();
    // "A subcommand is required" hides a mistyped or not-yet-built command: name it.
    if (app.get_subcommands().empty() && !app.remaining().empty()) {
      message = "unknown command '" + app.remaining().front() +
                "' (commands: agent, trace, check, why, top, explain)";
    }
    outcome.stderr_text = std::string("portlens: ") + escape_for_terminal(message) +
                          "\nRun 'portlens --help' or 'portlens COMMAND --help' for usage.\n";
    return outcome;
  }
  outcome.command_line = cl;
  return outcome;
}

std::string error_lines(const std::exception& error, int verbosity) {
  const auto* preflight = dynamic_cast<const PreflightError*>(&error);
  if (preflight != nullptr && verbosity > 0 && preflight->problems().size() > 1) {
    std::string out = fmt::format("portlens: {} problems:\n", preflight->problems().size());
    for (const PreflightProblem& p : preflight->problems()) {
      out += "  - " + escape_for_terminal(p.what) + "\n";
    }
    return out;
  }
  const bool ours = dynamic_cast<const Error*>(&error) != nullptr;
  return std::string("portlens: ") + (ours ? "" : "internal error: ") +
         escape_for_terminal(error.what()) + "\n";
}

int run_main(int argc, char** argv) {
  const std::vector<std::string> args(argv, argv + argc);
  const ParseOutcome parsed = parse_command_line(args);
  if (!parsed.command_line) {
    std::cout << parsed.stdout_text;
    std::cerr << parsed.stderr_text;
    return parsed.exit_code;
  }
  const CommandLine& cl = *parsed.command_line;
  if (cl.command == Command::kExplain) {
    if (!cl.explain_cause) {
      std::cout << list_causes();
      return 0;
    }
    const auto cause = parse_cause(*cl.explain_cause);
    if (!cause) {
      std::cerr << "portlens: explain: unknown cause '" << escape_for_terminal(*cl.explain_cause)
                << "'\n"
                << list_causes();
      return 2;
    }
    std::cout << explain(*cause);
    return 0;
  }
  enable_color(cl.color == "always" || (cl.color == "auto" && color_wanted_on_stdout()));
  install_stop_handlers();
  try {
    if (cl.command == Command::kAgent) {
      setup_logging(cl.agent.log_level, cl.agent.log_format);
    } else {
      setup_logging(cl.verbosity);
    }
    switch (cl.command) {
      case Command::kAgent:
        return run_agent(cl.agent, g_stop, g_reopen);
      case Command::kTrace: {
        const TraceSummary s = run_trace(cl.trace, std::cout, std::cerr, g_stop);
        std::cerr << "portlens: " << s.shown << " events shown, " << s.seen << " seen, "
                  << s.lost.total() << " lost";
        if (s.lost.total() > 0) {
          std::cerr << " (" << s.lost.ringbuf_full << " with the ring buffer full, "
                    << s.lost.inflight_full
                    << " with too many calls in flight; try a larger --ring-buffer-size)";
        }
        if (s.malformed > 0) {
          std::cerr << ", " << s.malformed << " malformed";
        }
        if (s.self_connects > 0) {
          std::cerr << ", " << s.self_connects
                    << " self-connects (a connect() that got its destination's port)";
        }
        if (!s.diagnosis_latency_ns.empty()) {
          std::vector<std::uint64_t> lat = s.diagnosis_latency_ns;
          std::sort(lat.begin(), lat.end());
          std::cerr << ", " << s.diagnosed << " diagnosed (call to diagnosis: median "
                    << lat[lat.size() / 2] / 1000 << " us, max " << lat.back() / 1000 << " us)";
        }
        std::cerr << '\n';
        return 0;
      }
      case Command::kCheck:
        return run_check(cl.check, std::cout);
      case Command::kWhy:
        return run_why(cl.why, std::cout);
      case Command::kTop:
        return run_top(cl.top, std::cout, g_stop);
      case Command::kExplain:
        break;  // answered above, before any setup
    }
  } catch (const Error& e) {
    std::cerr << error_lines(e, cl.verbosity);
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << error_lines(e, cl.verbosity);
    return 1;
  }
  return 1;
}

}  // namespace portlens
