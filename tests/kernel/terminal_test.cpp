// Output that cannot be forged: a process names itself with prctl(PR_SET_NAME) to an escape
// sequence and a newline, holds a port and fails a bind of it. `trace`, `why` and `check` print
// its comm escaped in their human forms; their JSON forms still parse and carry it as it is.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;

// ESC [ 2 J clears the screen; the newline would start a line that says "fake". 12 bytes: a comm
// holds 15.
const std::string kForgedComm = "\x1b[2Jpwn\nfake";
// What people must see instead: ESC as \e, the newline as \x0a.
const std::string kEscapedComm = "\\e[2Jpwn\\x0afake";

// A child process in the namespace, named kForgedComm, listening on 127.0.0.1:port, that has
// tried to bind the same address again (EADDRINUSE). It holds the port until destroyed.
class Forger {
 public:
  Forger(const NetnsSandbox& ns, std::uint16_t port) {
    std::array<int, 2> ready{};
    std::array<int, 2> hold{};
    if (pipe2(ready.data(), O_CLOEXEC) != 0 || pipe2(hold.data(), O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    const std::string path = ns.path();
    pid_ = fork();
    if (pid_ < 0) {
      throw std::runtime_error("fork failed");
    }
    if (pid_ == 0) {
      // Only system calls from here: the parent may have had other threads.
      close(ready[0]);
      close(hold[1]);
      const int nsfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0 ||
          prctl(PR_SET_NAME, kForgedComm.c_str(), 0, 0, 0) != 0) {
        _exit(10);
      }
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(port);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      const auto* sa = reinterpret_cast<const sockaddr*>(&addr);
      const int holder = socket(AF_INET, SOCK_STREAM, 0);
      if (holder < 0 || bind(holder, sa, sizeof addr) != 0 || listen(holder, 16) != 0) {
        _exit(11);
      }
      const int second = socket(AF_INET, SOCK_STREAM, 0);
      const int result = bind(second, sa, sizeof addr) == 0 ? 0 : errno;
      if (write(ready[1], &result, sizeof result) != sizeof result) {
        _exit(12);
      }
      char c = 0;
      while (read(hold[0], &c, 1) > 0) {
      }
      _exit(0);
    }
    close(ready[1]);
    close(hold[0]);
    hold_fd_ = hold[1];
    pollfd pfd{ready[0], POLLIN, 0};
    if (poll(&pfd, 1, 10'000) == 1 &&
        read(ready[0], &bind_errno_, sizeof bind_errno_) != sizeof bind_errno_) {
      bind_errno_ = -1;
    }
    close(ready[0]);
  }
  ~Forger() {
    close(hold_fd_);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  Forger(const Forger&) = delete;
  Forger& operator=(const Forger&) = delete;
  Forger(Forger&&) = delete;
  Forger& operator=(Forger&&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] int bind_errno() const { return bind_errno_; }

 private:
  pid_t pid_ = -1;
  int hold_fd_ = -1;
  int bind_errno_ = -1;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

// Human output that a comm could not forge: no ESC or other control byte anywhere but the line
// ends, and no line of its own for what came after the comm's newline.
void expect_unforged(const std::string& text) {
  const bool controls = std::any_of(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return c != '\n' && (byte < 0x20 || byte == 0x7f);
  });
  EXPECT_FALSE(controls) << text;
  for (const std::string& line : lines_of(text)) {
    EXPECT_FALSE(line.starts_with("fake")) << text;
  }
}

using TerminalOutputTest = KernelTest;

TEST_F(TerminalOutputTest, TraceTableEscapesTheCommAndJsonCarriesIt) {
  constexpr std::uint16_t kPort = 7350;
  Process table({PORTLENS_BINARY, "trace", "--netns", ns().name(), "--port", std::to_string(kPort),
                 "--duration", "60"});
  Process json({PORTLENS_BINARY, "trace", "--json", "--netns", ns().name(), "--port",
                std::to_string(kPort), "--duration", "60"});
  ASSERT_TRUE(table.wait_for_stderr("Tracing", 20s)) << table.err();
  ASSERT_TRUE(json.wait_for_stderr("Tracing", 20s)) << json.err();
  const Forger forger(ns(), kPort);
  ASSERT_EQ(forger.bind_errno(), EADDRINUSE);
  // The failed row, then its diagnosis (the blocker line names the listener's owner).
  const std::string blocker = "pid " + std::to_string(forger.pid()) + " (" + kEscapedComm + ")";
  EXPECT_TRUE(table.wait_until([&] { return table.out().find(blocker) != std::string::npos; }, 10s))
      << table.out();
  EXPECT_TRUE(json.wait_until(
      [&] {
        const auto lines = json_lines(json.out());
        return std::any_of(lines.begin(), lines.end(),
                           [](const nlohmann::json& j) { return j.contains("diagnosis"); });
      },
      10s))
      << json.out();
  table.signal(SIGINT);
  json.signal(SIGINT);
  ASSERT_EQ(table.wait(10s), 0) << table.err();
  ASSERT_EQ(json.wait(10s), 0) << json.err();

  expect_unforged(table.out());
  const auto lines = lines_of(table.out());
  const auto failed = std::find_if(lines.begin(), lines.end(), [](const std::string& l) {
    return l.find("EADDRINUSE") != std::string::npos && !l.starts_with(" ");
  });
  ASSERT_NE(failed, lines.end()) << table.out();
  EXPECT_NE(failed->find(kEscapedComm), std::string::npos) << *failed;
  EXPECT_NE(failed->find(std::to_string(forger.pid())), std::string::npos) << *failed;
  EXPECT_NE(table.out().find(blocker), std::string::npos) << table.out();

  // JSON: every line parses, and the comm is the one prctl set, byte for byte.
  const auto records = json_lines(json.out());
  ASSERT_FALSE(records.empty()) << json.out();
  bool saw_failure = false;
  for (const auto& r : records) {
    ASSERT_FALSE(r.is_discarded()) << json.out();
    if (r.value("pid", 0) != forger.pid()) {
      continue;
    }
    EXPECT_EQ(r["comm"], kForgedComm) << r.dump();
    if (r.value("errno", nlohmann::json()) == "EADDRINUSE") {
      saw_failure = true;
      ASSERT_TRUE(r.contains("diagnosis")) << r.dump();
      ASSERT_FALSE(r["diagnosis"]["blockers"].empty()) << r.dump();
      EXPECT_EQ(r["diagnosis"]["blockers"][0]["comm"], kForgedComm) << r.dump();
    }
  }
  EXPECT_TRUE(saw_failure) << json.out();
}

TEST_F(TerminalOutputTest, WhyAndCheckEscapeTheOwnersComm) {
  constexpr std::uint16_t kPort = 7351;
  const Forger forger(ns(), kPort);
  ASSERT_EQ(forger.bind_errno(), EADDRINUSE);
  const std::string owner = "pid " + std::to_string(forger.pid()) + " (" + kEscapedComm + ")";
  const std::string no_agent = "/run/portlens-test-no-agent.sock";

  Process why({PORTLENS_BINARY, "why", std::to_string(kPort), "--netns", ns().name(),
               "--api.socket", no_agent});
  ASSERT_EQ(why.wait(30s), 0) << why.err();
  expect_unforged(why.out());
  const auto lines = lines_of(why.out());
  // The listener's line names its owner, escaped, on that one line.
  const auto listener = std::find_if(lines.begin(), lines.end(), [&](const std::string& l) {
    return l.find("LISTEN") != std::string::npos;
  });
  ASSERT_NE(listener, lines.end()) << why.out();
  EXPECT_NE(listener->find(owner), std::string::npos) << why.out();
  // The predictions' fixes name the process too ("stop PID N (comm)").
  EXPECT_NE(why.out().find("would FAIL"), std::string::npos) << why.out();

  Process why_json({PORTLENS_BINARY, "why", std::to_string(kPort), "--netns", ns().name(),
                    "--api.socket", no_agent, "--json"});
  ASSERT_EQ(why_json.wait(30s), 0) << why_json.err();
  const auto j = nlohmann::json::parse(why_json.out());
  ASSERT_EQ(j["listeners"].size(), 1U) << j.dump();
  EXPECT_EQ(j["listeners"][0]["comm"], kForgedComm);
  EXPECT_EQ(j["listeners"][0]["pid"], forger.pid());

  Process check({PORTLENS_BINARY, "check", "tcp", "127.0.0.1:" + std::to_string(kPort), "--netns",
                 ns().name()});
  ASSERT_EQ(check.wait(30s), 1) << check.err();
  expect_unforged(check.out());
  EXPECT_NE(check.out().find(owner), std::string::npos) << check.out();
}

// The agent's machine-read outputs keep the comm as the kernel has it and stay valid: the scrape
// carries it as a label in the text format's own escaping (the newline as \n) and passes promtool;
// the event log's line parses and holds it byte for byte.
TEST_F(TerminalOutputTest, ScrapeAndEventLogCarryTheCommAndStayValid) {
  PORTLENS_START_AGENT(agent);
  constexpr std::uint16_t kPort = 7353;
  const Forger forger(ns(), kPort);
  ASSERT_EQ(forger.bind_errno(), EADDRINUSE);
  // In the exposition: ESC is a plain UTF-8 byte there, the newline is written as backslash-n.
  const Labels labels = {{"syscall", "bind"}, {"comm", "\x1b[2Jpwn\\nfake"}};
  const std::string text = agent.scrape_until([&](const std::string& t) {
    return metric(t, "portlens_bind_failures_total", labels).has_value();
  });
  ASSERT_EQ(metric(text, "portlens_bind_failures_total", labels), 1) << text;
  EXPECT_TRUE(passes_promtool(agent.dir(), text));

  // The event log: every line is one JSON object, and the forger's has its comm unchanged.
  std::vector<nlohmann::json> records;
  const bool logged = eventually([&] {
    std::ifstream in(agent.dir() / "events.log");
    std::stringstream log;
    log << in.rdbuf();
    records = json_lines(log.str());
    return std::any_of(records.begin(), records.end(),
                       [&](const nlohmann::json& r) { return r.value("pid", 0) == forger.pid(); });
  });
  ASSERT_TRUE(logged) << records.size() << " lines";
  for (const auto& r : records) {
    ASSERT_FALSE(r.is_discarded());
    if (r.value("pid", 0) == forger.pid()) {
      EXPECT_EQ(r["comm"], kForgedComm) << r.dump();
      EXPECT_EQ(r["diagnosis"]["blockers"][0]["comm"], kForgedComm) << r.dump();
    }
  }
  EXPECT_EQ(agent.stop(), 0);
}

// check --device N: the index must name an interface in the target namespace (a fresh one has
// only lo, index 1).
TEST_F(TerminalOutputTest, CheckRefusesAnInterfaceIndexTheNamespaceLacks) {
  Process missing({PORTLENS_BINARY, "check", "tcp", "127.0.0.1:7352", "--device", "99999",
                   "--netns", ns().name()});
  EXPECT_EQ(missing.wait(30s), 2) << missing.err();
  EXPECT_NE(missing.err().find("--device 99999: no interface has index 99999"), std::string::npos)
      << missing.err();
  EXPECT_EQ(std::count(missing.err().begin(), missing.err().end(), '\n'), 1) << missing.err();

  Process lo({PORTLENS_BINARY, "check", "tcp", "127.0.0.1:7352", "--device", "1", "--netns",
              ns().name(), "--json"});
  EXPECT_EQ(lo.wait(30s), 0) << lo.err();
  const auto j = nlohmann::json::parse(lo.out());
  EXPECT_EQ(j["request"]["bound_dev_if"], 1);
  EXPECT_EQ(j["prediction"], "succeeds");
}

}  // namespace
}  // namespace portlens::testing
