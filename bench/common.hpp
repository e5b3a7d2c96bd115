// Shared pieces of portlens_bench: options, the figures table, timing, the machine's context,
// private network namespaces, the real agent as a child process and a tiny HTTP client.
// Benchmarks print figures; nothing here asserts performance.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "tests/support/loopback_http.hpp"
#include "tests/support/netns_sandbox.hpp"

namespace portlens::bench {

using Clock = std::chrono::steady_clock;

struct Options {
  bool smoke = false;        // every section at a tiny size: proves the benchmark runs
  std::string agent_binary;  // the portlens binary the kernel sections start
  // pipeline
  std::size_t events = 1'000'000;
  int runs = 5;
  std::size_t failure_every = 10'000;  // one failed call per this many events
  // churn
  int rounds = 3;
  double churn_seconds = 5.0;
  std::uint64_t churn_max_connections = 2'000'000;
  int clients = 2;
  // memory and scrape: the TIME_WAIT population
  std::size_t time_waits = 200'000;
  std::size_t destinations = 10'000;
  std::size_t tracker_sockets = 200'000;
  int scrapes = 10;
  // soak
  double soak_seconds = 300;
};

// A section that cannot run at all (the agent does not start, a namespace cannot be made).
class BenchError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The final table: one row per figure.
enum class Met : std::uint8_t { kYes, kNo, kNoAim, kSkipped };

struct Row {
  std::string figure;
  std::string measured;
  std::string aim;
  Met met = Met::kNoAim;
};

class Report {
 public:
  void add(Row row) { rows_.push_back(std::move(row)); }
  void skip(const std::string& figure, const std::string& why);
  // The summary as a markdown table.
  [[nodiscard]] std::string markdown() const;

 private:
  std::vector<Row> rows_;
};

double median(std::vector<double> values);
double min_of(const std::vector<double>& values);
double max_of(const std::vector<double>& values);
double seconds_since(Clock::time_point start);
// "1.23 M" style numbers and fixed decimals, for the printed lines.
std::string fixed(double value, int decimals);
std::string with_commas(std::uint64_t value);

// nproc, uname -r, the load average: the context every figure depends on.
std::string machine_context();
std::string load_average();

bool is_root();
// PORTLENS_REQUIRE_BPF=1: kernel sections fail instead of skipping when they cannot run.
bool kernel_required();

// A private network namespace (tests/support), named portlens-bench-PID-N.
class Netns : public testing::NetnsSandbox {
 public:
  Netns() : NetnsSandbox("portlens-bench") {}
};

// The real `portlens agent`, on a free loopback port, its API socket in a private temp dir.
// Its stderr is read by a thread for its whole life, so the agent never blocks on the pipe.
class AgentProcess {
 public:
  AgentProcess(const std::string& binary, const std::vector<std::string>& extra_args = {});
  ~AgentProcess();
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;
  AgentProcess(AgentProcess&&) = delete;
  AgentProcess& operator=(AgentProcess&&) = delete;

  // Waits for "serving" on stderr; returns the seconds from the start, or throws BenchError
  // with the agent's stderr when it exits or the timeout passes.
  double wait_serving(std::chrono::seconds timeout = std::chrono::seconds(60));
  // SIGTERM, then waits (SIGKILL after timeout); returns the exit status.
  int stop(std::chrono::seconds timeout = std::chrono::seconds(10));

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string stderr_text() const;
  [[nodiscard]] std::string scrape() const;
  // utime + stime so far, in seconds (/proc/PID/stat).
  [[nodiscard]] double cpu_seconds() const;
  // A /proc/PID/status field in kB (VmRSS, VmHWM).
  [[nodiscard]] std::uint64_t status_kb(const std::string& field) const;
  // Waits until the agent's CPU time stops growing (it has drained the events), bounded.
  void wait_idle(std::chrono::milliseconds quiet = std::chrono::milliseconds(300),
                 std::chrono::seconds timeout = std::chrono::seconds(20)) const;

 private:
  void reap(int* status);

  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool exited_ = false;
  Clock::time_point started_;
  int err_fd_ = -1;
  mutable std::mutex mu_;
  std::string err_;
  std::thread reader_;
};

using testing::free_port;
using testing::http_get;
using testing::metric_sum;

}  // namespace portlens::bench
