// The agent's health as a supervisor sees it: it tells systemd READY=1 only once its first look
// at every namespace is merged, feeds the watchdog from its event loop, and /healthz turns 503
// when that loop stops turning while the HTTP threads still answer. The loop is stopped for real:
// the test seizes the agent's main thread (the event loop) with ptrace and interrupts it, which
// stops that one thread and leaves the others running. And a bad --web.config.file is one line
// and exit 2.
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A socket in systemd's place: $NOTIFY_SOCKET points at it, and each sd_notify() is a datagram.
class NotifySocket {
 public:
  explicit NotifySocket(const std::filesystem::path& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
    std::filesystem::remove(path);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) {
      throw std::runtime_error("cannot bind " + path.string() + ": " + std::strerror(errno));
    }
  }
  ~NotifySocket() {
    close(fd_);
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;
  NotifySocket(NotifySocket&&) = delete;
  NotifySocket& operator=(NotifySocket&&) = delete;

  // The next datagram, or nullopt after timeout.
  std::optional<std::string> next(std::chrono::milliseconds timeout) const {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string buf(4096, '\0');
    const ssize_t n = recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0) {
      return std::nullopt;
    }
    buf.resize(static_cast<std::size_t>(n));
    return buf;
  }
  // Every datagram until one contains needle (bounded by timeout); nullopt if none did.
  std::optional<std::string> until(const std::string& needle,
                                   std::chrono::milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      auto msg = next(std::max(left, 1ms));
      if (msg && msg->find(needle) != std::string::npos) {
        return msg;
      }
    }
    return std::nullopt;
  }
  // How many datagrams containing needle arrive within window.
  int count(const std::string& needle, std::chrono::milliseconds window) const {
    int n = 0;
    const auto deadline = Clock::now() + window;
    while (Clock::now() < deadline) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      const auto msg = next(std::max(left, 1ms));
      if (msg && msg->find(needle) != std::string::npos) {
        ++n;
      }
    }
    return n;
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Sets an environment variable for the children started while it lives.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ScopedEnv(ScopedEnv&&) = delete;
  ScopedEnv& operator=(ScopedEnv&&) = delete;

 private:
  const char* name_;
};

std::string http_status(std::uint16_t port, const std::string& path) {
  return run_command("curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:" +
                     std::to_string(port) + path)
      .output;
}

using HealthTest = KernelTest;

TEST_F(HealthTest, ReadyAfterBootstrapWatchdogFromTheLoopAndHealthzFollowsIt) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("portlens-health-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const NotifySocket notify(dir / "notify");
  // WatchdogSec=400ms: systemd would expect a WATCHDOG=1 at least every 400 ms, and the agent
  // sends one every 200 ms. WATCHDOG_PID is left unset, so the agent takes it as its own.
  const ScopedEnv socket_env("NOTIFY_SOCKET", (dir / "notify").string());
  const ScopedEnv watchdog_env("WATCHDOG_USEC", "400000");
  PORTLENS_START_AGENT(agent);

  // READY=1 comes after the bootstrap is merged (the log line says so first), and by then
  // /ready answers 200.
  const auto ready = notify.until("READY=1", 30s);
  ASSERT_TRUE(ready.has_value()) << agent.process().err();
  EXPECT_NE(ready->find("STATUS=tracing"), std::string::npos) << *ready;
  ASSERT_TRUE(agent.process().wait_for_stderr("bootstrapped", 5s)) << agent.process().err();
  EXPECT_EQ(http_status(agent.port(), "/ready"), "200");
  EXPECT_EQ(http_status(agent.port(), "/healthz"), "200");

  // The loop turns at least every 100 ms, so over 2 s about 10 pings arrive.
  const int pings = notify.count("WATCHDOG=1", 2s);
  std::cout << "watchdog pings in 2 s while the loop runs: " << pings << "\n";
  EXPECT_GE(pings, 5);

  // Stop the event loop alone: seize the main thread and interrupt it.
  const pid_t pid = agent.process().pid();
  ASSERT_EQ(ptrace(PTRACE_SEIZE, pid, nullptr, nullptr), 0) << std::strerror(errno);
  ASSERT_EQ(ptrace(PTRACE_INTERRUPT, pid, nullptr, nullptr), 0) << std::strerror(errno);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, __WALL), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << status;
  const auto stopped_at = Clock::now();
  // No ping while it stands (one already in flight may still land in the first moment).
  static_cast<void>(notify.count("WATCHDOG=1", 300ms));
  EXPECT_EQ(notify.count("WATCHDOG=1", 1500ms), 0);
  // The HTTP threads still answer: /healthz says 200 until the stall passes its limit (10 s),
  // then 503 with how long the loop has stood.
  std::string health = http_status(agent.port(), "/healthz");
  EXPECT_EQ(health, "200") << "1.8 s into the stall";
  const bool turned_503 = eventually(
      [&] {
        health = http_status(agent.port(), "/healthz");
        return health == "503";
      },
      15s);
  const double after_s = std::chrono::duration<double>(Clock::now() - stopped_at).count();
  std::cout << "/healthz turned " << health << " " << after_s << " s after the loop stopped\n";
  EXPECT_TRUE(turned_503);
  EXPECT_GE(after_s, 9.5);
  const std::string body =
      run_command("curl -s --max-time 5 http://127.0.0.1:" + std::to_string(agent.port()) +
                  "/healthz")
          .output;
  EXPECT_NE(body.find("the event loop has not turned for"), std::string::npos) << body;
  // Readiness is about the bootstrap, not the loop: still 200.
  EXPECT_EQ(http_status(agent.port(), "/ready"), "200");

  // Let it go: the loop turns again, /healthz is 200 and the pings resume.
  ASSERT_EQ(ptrace(PTRACE_DETACH, pid, nullptr, nullptr), 0) << std::strerror(errno);
  EXPECT_TRUE(eventually([&] { return http_status(agent.port(), "/healthz") == "200"; }, 5s));
  EXPECT_GE(notify.count("WATCHDOG=1", 1s), 2);

  agent.process().signal(SIGTERM);
  EXPECT_TRUE(notify.until("STOPPING=1", 10s).has_value());
  EXPECT_EQ(agent.stop(), 0);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

TEST(AgentCliTest, BadWebConfigFileIsOneLineAndExitTwo) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("portlens-webcfg-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto write = [&dir](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {(dir / "missing.yml").string(), "missing.yml"},
      {write("not-yaml.yml", "tls_server_config: [unclosed\n"), "not-yaml.yml"},
      {write("unknown.yml", "tls_server_confg:\n  cert_file: x\n"), "tls_server_confg"},
      {write("missing-cert.yml",
             "tls_server_config:\n  cert_file: " + (dir / "none.pem").string() + "\n"),
       "none.pem"},
      {write("bad-hash.yml", "basic_auth_users:\n  alice: plaintext\n"), "alice"},
      {dir.string(), dir.filename().string()},  // a directory
  };
  for (const auto& [path, named] : cases) {
    Process p({PORTLENS_BINARY, "agent", "--web.listen-address", "127.0.0.1:1", "--web.config.file",
               path});
    EXPECT_EQ(p.wait(20s), 2) << path << ": " << p.err();
    EXPECT_EQ(std::count(p.err().begin(), p.err().end(), '\n'), 1) << p.err();
    EXPECT_NE(p.err().find("--web.config.file"), std::string::npos) << p.err();
    EXPECT_NE(p.err().find(named), std::string::npos) << "should name " << named << ": " << p.err();
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

}  // namespace
}  // namespace portlens::testing
