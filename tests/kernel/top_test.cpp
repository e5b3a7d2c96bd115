// Kernel tests of `portlens top`: the real binary runs on a terminal (a private tmux server) or
// into a pipe, while the test makes TIME_WAIT sockets, a listener with a queue and a failed bind in
// a private network namespace; what top shows is compared with what `ss` reads from the kernel.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  std::string w;
  while (in >> w) {
    out.push_back(w);
  }
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    out.push_back(line);
  }
  return out;
}

// The cell under `column` in the row of the table titled `title` whose first cell is `key`
// (columns are single words, and so are the cells before the last column).
std::optional<std::string> cell(const std::string& screen, const std::string& title,
                                const std::string& key, const std::string& column) {
  const std::vector<std::string> lines = lines_of(screen);
  std::size_t i = 0;
  while (i < lines.size() && lines[i].find(title) == std::string::npos) {
    ++i;
  }
  if (i + 1 >= lines.size()) {
    return std::nullopt;
  }
  const std::vector<std::string> header = words(lines[i + 1]);
  std::size_t at = 0;
  while (at < header.size() && header[at] != column) {
    ++at;
  }
  // The table's rows run until the next title, which has no leading digit or address.
  for (std::size_t r = i + 2; r < lines.size() && at < header.size(); ++r) {
    const std::vector<std::string> row = words(lines[r]);
    if (row.size() <= at || row.size() < header.size() - 1) {
      break;
    }
    if (row[0] == key || (row.size() > 1 && row[1] == key)) {
      return row[at];
    }
  }
  return std::nullopt;
}

// `ip netns exec NS ss -Hltn sport = :PORT`: Recv-Q and Send-Q of the listener, as ss shows them.
std::pair<std::string, std::string> ss_listen_queue(const NetnsSandbox& ns, std::uint16_t port) {
  const std::vector<std::string> w =
      words(run_command("ip netns exec " + ns.name() + " ss -Hltn sport = :" + std::to_string(port))
                .output);
  return w.size() >= 3 ? std::pair{w[1], w[2]} : std::pair{std::string(), std::string()};
}

// An API socket path no agent serves, so that `--source auto` runs a tracer of its own even when
// a portlens agent runs on this host.
std::string no_agent_socket() {
  return (std::filesystem::temp_directory_path() /
          ("portlens-top-no-agent-" + std::to_string(getpid())) / "api.sock")
      .string();
}

bool have_tmux() { return run_command("command -v tmux >/dev/null 2>&1").status == 0; }

// A tmux server of the test's own (-L: its own socket), killed when the test ends.
class Tmux {
 public:
  Tmux() : socket_("portlens-top-" + std::to_string(getpid()) + "-" + std::to_string(counter++)) {}
  ~Tmux() { run_command("tmux -L " + socket_ + " kill-server >/dev/null 2>&1"); }
  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;
  Tmux(Tmux&&) = delete;
  Tmux& operator=(Tmux&&) = delete;

  // A detached session of width x height running command (a shell line built by the test).
  bool start(const std::string& command, int width, int height) const {
    return run_command("tmux -L " + socket_ + " new-session -d -x " + std::to_string(width) +
                       " -y " + std::to_string(height) + " '" + command + "'")
               .status == 0;
  }
  void keys(const std::string& keys) const {
    run_command("tmux -L " + socket_ + " send-keys " + keys);
  }
  [[nodiscard]] std::string screen() const {
    return run_command("tmux -L " + socket_ + " capture-pane -p").output;
  }
  // Captures until ok(screen) holds or timeout passes; returns the last screen.
  std::string screen_until(const std::function<bool(const std::string&)>& ok,
                           std::chrono::milliseconds timeout) const {
    std::string s = screen();
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!ok(s) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(200ms);
      s = screen();
    }
    return s;
  }

 private:
  static inline int counter = 0;
  std::string socket_;
};

#define PORTLENS_REQUIRE_TMUX()                                                         \
  if (!have_tmux()) {                                                                   \
    if (bpf_required()) FAIL() << "tmux is not installed: run scripts/install-deps.sh"; \
    GTEST_SKIP() << "tmux is not installed";                                            \
  }

using TopTest = KernelTest;

constexpr std::uint16_t kTimeWaitPort = 7400;
constexpr std::uint16_t kListenPort = 7401;
constexpr std::uint16_t kBindPort = 7402;
constexpr int kTimeWaits = 12;

// A listener with listen(4) that never accepts, and two clients whose handshakes it completed:
// its accept queue holds 2 of 4.
struct QueuedListener {
  std::unique_ptr<TestSocket> listener;
  std::vector<std::unique_ptr<TestSocket>> clients;
};

QueuedListener queued_listener(const NetnsSandbox& ns) {
  return ns.run([] {
    QueuedListener q;
    q.listener = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    if (q.listener->bind("127.0.0.1", kListenPort) != 0 || q.listener->listen(4) != 0) {
      throw std::runtime_error("cannot listen on 127.0.0.1:7401");
    }
    for (int i = 0; i < 2; ++i) {
      q.clients.push_back(std::make_unique<TestSocket>(AF_INET, SOCK_STREAM));
      if (q.clients.back()->connect("127.0.0.1", kListenPort) != 0) {
        throw std::runtime_error("cannot connect to 127.0.0.1:7401");
      }
    }
    return q;
  });
}

TEST_F(TopTest, ScreenShowsTheTimeWaitSsCountsAndTheQueueAndQuitsOnQ) {
  PORTLENS_REQUIRE_TMUX();
  make_time_waits(ns(), kTimeWaitPort, kTimeWaits);
  const QueuedListener queued = queued_listener(ns());
  const std::string netns = std::to_string(ns().inode());
  const std::string ss_before = ss_count_time_wait(ns());
  ASSERT_EQ(ss_before, std::to_string(kTimeWaits));

  Tmux tmux;
  ASSERT_TRUE(tmux.start(std::string(PORTLENS_BINARY) + " top --netns " + ns().name() +
                             " --api.socket " + no_agent_socket() +
                             "; echo top-exited=$?; sleep 60",
                         160, 48));
  const auto shows_namespace = [&](const std::string& s) {
    return cell(s, "NAMESPACES", netns, "TIME_WAIT").has_value();
  };
  std::string screen = tmux.screen_until(shows_namespace, 30s);
  ASSERT_TRUE(shows_namespace(screen)) << screen;
  const std::string ss_after = ss_count_time_wait(ns());
  ASSERT_EQ(ss_before, ss_after) << "a TIME_WAIT came or went while top was read";
  EXPECT_EQ(cell(screen, "NAMESPACES", netns, "TIME_WAIT"), ss_after) << screen;

  // The listener's accept queue, as `ss -ltn` shows it (Recv-Q: the queue, Send-Q: its limit).
  const auto [recv_q, send_q] = ss_listen_queue(ns(), kListenPort);
  ASSERT_EQ(recv_q, "2");
  ASSERT_EQ(send_q, "4");
  const std::string local = "127.0.0.1:" + std::to_string(kListenPort);
  EXPECT_EQ(cell(screen, "LISTENERS", local, "QUEUE"), recv_q) << screen;
  EXPECT_EQ(cell(screen, "LISTENERS", local, "LIMIT"), send_q) << screen;

  // A failed bind() the kernel refuses (EADDRINUSE), counted in the failures table.
  const auto [first, second] = ns().run([] {
    TestSocket a(AF_INET, SOCK_STREAM);
    TestSocket b(AF_INET, SOCK_STREAM);
    const int r1 = a.bind("127.0.0.1", kBindPort);
    return std::pair{r1, b.bind("127.0.0.1", kBindPort)};
  });
  ASSERT_EQ(first, 0);
  ASSERT_EQ(second, EADDRINUSE);
  const auto shows_failure = [](const std::string& s) {
    return cell(s, "FAILURES", "bind", "TOTAL") == std::optional<std::string>("1");
  };
  screen = tmux.screen_until(shows_failure, 15s);
  EXPECT_TRUE(shows_failure(screen)) << screen;
  EXPECT_EQ(cell(screen, "FAILURES", "bind", "CAUSE"), "missing_reuseaddr") << screen;

  // Sort keys change the title's sort column; the TIME_WAIT count stays.
  tmux.keys("s");
  screen = tmux.screen_until(
      [](const std::string& s) { return s.find("NAMESPACES (1), by TCP") != std::string::npos; },
      5s);
  EXPECT_NE(screen.find("NAMESPACES (1), by TCP"), std::string::npos) << screen;

  tmux.keys("q");
  screen = tmux.screen_until(
      [](const std::string& s) { return s.find("top-exited=") != std::string::npos; }, 10s);
  EXPECT_NE(screen.find("top-exited=0"), std::string::npos) << screen;
}

TEST_F(TopTest, SmallTerminalStillShowsEveryTable) {
  PORTLENS_REQUIRE_TMUX();
  make_time_waits(ns(), kTimeWaitPort, 3);
  const std::string netns = std::to_string(ns().inode());
  Tmux tmux;
  ASSERT_TRUE(tmux.start(std::string(PORTLENS_BINARY) + " top --netns " + ns().name() +
                             " --source tracer; echo top-exited=$?; sleep 60",
                         80, 24));
  const auto shows_namespace = [&](const std::string& s) {
    return cell(s, "NAMESPACES", netns, "TIME_WAIT").has_value();
  };
  std::string screen = tmux.screen_until(shows_namespace, 30s);
  ASSERT_TRUE(shows_namespace(screen)) << screen;
  EXPECT_EQ(cell(screen, "NAMESPACES", netns, "TIME_WAIT"), ss_count_time_wait(ns())) << screen;
  for (const char* title : {"NAMESPACES", "LISTENERS", "TIME_WAIT BY LOCAL PORT",
                            "EPHEMERAL PORTS BY DESTINATION", "FAILURES"}) {
    EXPECT_NE(screen.find(title), std::string::npos) << title << "\n" << screen;
  }
  for (const std::string& line : lines_of(screen)) {
    EXPECT_LE(line.size(), 80U) << line;
  }
  tmux.keys("q");
  screen = tmux.screen_until(
      [](const std::string& s) { return s.find("top-exited=") != std::string::npos; }, 10s);
  EXPECT_NE(screen.find("top-exited=0"), std::string::npos) << screen;
}

TEST_F(TopTest, OnceAndAPipePrintOnePlainFrameThatAgreesWithSs) {
  make_time_waits(ns(), kTimeWaitPort, kTimeWaits);
  const QueuedListener queued = queued_listener(ns());
  const std::string netns = std::to_string(ns().inode());
  const std::string ss_before = ss_count_time_wait(ns());
  ASSERT_EQ(ss_before, std::to_string(kTimeWaits));
  // --once, and a pipe without it: stdout is no terminal, so one frame either way.
  for (const bool once : {true, false}) {
    SCOPED_TRACE(once ? "--once" : "a pipe");
    std::vector<std::string> argv = {PORTLENS_BINARY, "top", "--netns",      ns().name(),
                                     "--interval",    "0.2", "--api.socket", no_agent_socket()};
    if (once) {
      argv.emplace_back("--once");
    }
    Process top(argv);
    ASSERT_EQ(top.wait(30s), 0) << top.err();
    EXPECT_EQ(top.err(), "");
    const std::string& out = top.out();
    EXPECT_EQ(out.find('\x1b'), std::string::npos) << "no terminal control in a plain frame";
    EXPECT_NE(out.find("source: own tracer"), std::string::npos) << out;
    EXPECT_EQ(cell(out, "NAMESPACES", netns, "TIME_WAIT"), ss_count_time_wait(ns())) << out;
    const auto [recv_q, send_q] = ss_listen_queue(ns(), kListenPort);
    const std::string local = "127.0.0.1:" + std::to_string(kListenPort);
    EXPECT_EQ(cell(out, "LISTENERS", local, "QUEUE"), recv_q) << out;
    EXPECT_EQ(cell(out, "LISTENERS", local, "LIMIT"), send_q) << out;
    // The TIME_WAITs sit on the clients' ephemeral ports, toward 127.0.0.1:7400.
    EXPECT_EQ(cell(out, "EPHEMERAL PORTS BY DESTINATION", "127.0.0.1:7400", "TIME_WAIT"),
              ss_count_time_wait(ns(), "dport = :7400"))
        << out;
  }
}

TEST(TopCliTest, BadInputIsOneLineAndExitTwo) {
  const std::vector<std::vector<std::string>> cases = {
      {"--interval", "0"},    {"--interval", "nan"},
      {"--interval", "inf"},  {"--interval", "1x"},
      {"--source", "kernel"}, {"--netns", "portlens-no-such-netns"},
      {"--no-such-flag"},     {"--netns"},
  };
  for (const auto& args : cases) {
    std::vector<std::string> argv = {PORTLENS_BINARY, "top", "--once"};
    argv.insert(argv.end(), args.begin(), args.end());
    SCOPED_TRACE(args.front() + (args.size() > 1 ? " " + args[1] : ""));
    Process top(argv);
    EXPECT_EQ(top.wait(20s), 2) << top.err();
    EXPECT_EQ(top.out(), "");
    const std::vector<std::string> err = lines_of(top.err());
    ASSERT_FALSE(err.empty());
    EXPECT_EQ(err[0].rfind("portlens: ", 0), 0U) << top.err();
    // The error is one line; the only other line is the pointer to --help.
    ASSERT_LE(err.size(), 2U) << top.err();
    if (err.size() == 2) {
      EXPECT_NE(err[1].find("--help"), std::string::npos) << top.err();
    }
  }
}

TEST_F(TopTest, AgentModeShowsWhatSsCounts) {
  PORTLENS_START_AGENT(agent);
  make_time_waits(ns(), kTimeWaitPort, kTimeWaits);
  const std::string netns = std::to_string(ns().inode());
  ASSERT_EQ(ss_count_time_wait(ns()), std::to_string(kTimeWaits));
  const std::string socket = (agent.dir() / "api.sock").string();
  std::string out;
  std::string err;
  bool agreed = false;
  // The agent finds the new namespace at its next round of snapshots (--reconcile-interval 1).
  eventually(
      [&] {
        Process top({PORTLENS_BINARY, "top", "--once", "--source", "agent", "--netns", ns().name(),
                     "--api.socket", socket, "--interval", "0.2"});
        const int status = top.wait(20s);
        out = top.out();
        err = top.err();
        agreed = status == 0 && cell(out, "NAMESPACES", netns, "TIME_WAIT") ==
                                    std::optional<std::string>(ss_count_time_wait(ns()));
        return agreed || err.find("unknown op") != std::string::npos;
      },
      20s);
  if (!agreed && err.find("unknown op") != std::string::npos) {
    GTEST_SKIP() << "the agent's local API refuses op \"top\" (exporters/local_api.cpp, "
                    "check_api_request): "
                 << err;
  }
  EXPECT_TRUE(agreed) << out << err;
  EXPECT_NE(out.find("source: agent " + socket), std::string::npos) << out;
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace portlens::testing
