// The real `portlens agent` binary as kernel tests run it: on a free loopback port, with its API
// socket and event log in a private directory, stopped with SIGTERM. Plus the loopback activity
// that most agent tests make and poll for.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/kernel/process.hpp"
#include "tests/support/netns_sandbox.hpp"

namespace portlens::testing {

class Agent {
 public:
  // extra: arguments after the defaults; a one-value default flag that extra also gives (e.g.
  // --reconcile-interval) is left out. launcher: a command the agent runs under (e.g. setpriv
  // with a capability set), empty for none.
  explicit Agent(std::vector<std::string> extra = {}, std::vector<std::string> launcher = {});
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;
  Agent(Agent&&) = delete;
  Agent& operator=(Agent&&) = delete;

  // Waits (bounded) until the agent says it is serving.
  bool ready();
  [[nodiscard]] std::string scrape() const;
  // Scrapes until ok(exposition) holds (bounded); returns the last scrape.
  [[nodiscard]] std::string scrape_until(
      const std::function<bool(const std::string&)>& ok,
      std::chrono::milliseconds timeout = std::chrono::seconds(15)) const;
  // SIGTERM, then the exit code (128+signal if it had to be killed).
  int stop();
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }
  Process& process() { return *process_; }

 private:
  std::filesystem::path dir_;
  std::uint16_t port_;
  std::unique_ptr<Process> process_;
};

// `ss -Htan state time-wait FILTER | wc -l` inside ns, as the text ss prints ("12").
std::string ss_count_time_wait(const NetnsSandbox& ns, const std::string& filter = "");

// Makes `count` loopback connections to 127.0.0.1:port in ns that the client closes first: each
// leaves a TIME_WAIT on the client side, toward port.
void make_time_waits(const NetnsSandbox& ns, std::uint16_t port, int count);

// Whether `promtool check metrics` accepts a scrape without a word (written to a file in dir);
// the failure says what promtool said, or that it is missing.
::testing::AssertionResult passes_promtool(const std::filesystem::path& dir,
                                           const std::string& exposition);

// Polls cond every 100 ms until it holds or timeout passes; returns its last answer.
bool eventually(const std::function<bool()>& cond,
                std::chrono::milliseconds timeout = std::chrono::seconds(15));

}  // namespace portlens::testing

// Starts an Agent into `var` and fails the test, with the agent's stderr, if it does not serve.
#define PORTLENS_START_AGENT(var, ...)         \
  ::portlens::testing::Agent var{__VA_ARGS__}; \
  ASSERT_TRUE(var.ready()) << var.process().err();
