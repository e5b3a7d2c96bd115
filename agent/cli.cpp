#include "agent/cli.hpp"

#include <csignal>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "agent/error.hpp"
#include "agent/logging.hpp"
#include "portlens_version.hpp"

namespace portlens {
namespace {

std::atomic<bool> g_stop{false};

void on_stop_signal(int /*signo*/) { g_stop.store(true); }

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the ring-buffer wait returns at once on a signal
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout shows up as a failed write instead
}

const char* const kTraceDescription =
    "Stream bind(), listen() and connect() calls as they happen, with the address asked for, "
    "the socket's options and the result.\n\n"
    "OPTS letters: R SO_REUSEADDR, P SO_REUSEPORT, 6 IPV6_V6ONLY, F IP_FREEBIND, "
    "T IP_TRANSPARENT, N IP_BIND_ADDRESS_NO_PORT, @N bound to interface index N (SO_BINDTODEVICE)."
    "\nNS: an `ip netns` name, a path such as /proc/PID/ns/net or /run/netns/NAME, or pid:PID.";

void build_app(CLI::App& app, CommandLine& cl) {
  app.description(
      "portlens: why did bind()/listen()/connect() fail, who holds the port, and how close is "
      "this host to running out of ports.");
  app.set_version_flag("--version", std::string("portlens ") + kPortlensVersion);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_flag("-v,--verbose", cl.verbosity,
               "more detail on stderr (-v debug, including libbpf's messages; -vv trace)");

  CLI::App* trace = app.add_subcommand("trace", "stream bind/listen/connect calls live");
  trace->description(kTraceDescription);
  trace->callback([&cl] { cl.command = Command::kTrace; });
  TraceOptions& t = cl.trace;
  trace->add_flag("--json", t.json, "JSON Lines, one object per event (the stable form)");
  trace->add_flag("--failures", t.failures, "only calls that failed");
  trace->add_flag("--states", t.states, "also TCP state changes (sock:inet_sock_set_state)");
  trace->add_option("--pid", t.pid, "only this process (its tgid)")
      ->check(CLI::Range(1, 0x3fffffff))
      ->type_name("P");
  trace->add_option("--port", t.port, "only events where this port is local or remote")
      ->check(CLI::Range(0, 65535))
      ->type_name("N");
  trace->add_option("--netns", t.netns, "only this network namespace")->type_name("NS");
  trace->add_option("--duration", t.duration_s, "stop after S seconds (fractions allowed)")
      ->check(CLI::Validator(
          [](const std::string& text) -> std::string {
            // CLI11 2.1's PositiveNumber prints DBL_MAX in its message; say it plainly.
            std::string problem = "'" + text + "' is not a positive number of seconds";
            try {
              std::size_t used = 0;
              const double v = std::stod(text, &used);
              return used == text.size() && v > 0 ? "" : problem;
            } catch (const std::exception&) {
              return problem;
            }
          },
          "S", "positive"))
      ->type_name("S");
  trace
      ->add_option("--ring-buffer-size", t.ring_bytes,
                   "kernel-to-user ring buffer size; rounded up to a power of two (default 8MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 30))
      ->type_name("BYTES");
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
      message = "unknown command '" + app.remaining().front() + "' (commands: trace)";
    }
    outcome.stderr_text = std::string("portlens: ") + message +
                          "\nRun 'portlens --help' or 'portlens COMMAND --help' for usage.\n";
    return outcome;
  }
  outcome.command_line = cl;
  return outcome;
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
  setup_logging(cl.verbosity);
  install_stop_handlers();
  try {
    switch (cl.command) {
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
        std::cerr << '\n';
        return 0;
      }
    }
  } catch (const Error& e) {
    std::cerr << "portlens: " << e.what() << '\n';
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "portlens: internal error: " << e.what() << '\n';
    return 1;
  }
  return 1;
}

}  // namespace portlens
