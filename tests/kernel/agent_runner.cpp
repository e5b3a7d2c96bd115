#include "tests/kernel/agent_runner.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <thread>

#include "tests/kernel/harness.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {

using namespace std::chrono_literals;

namespace {
int agent_counter = 0;  // tests run on one thread; makes each agent's directory unique
}  // namespace

Agent::Agent(std::vector<std::string> extra, std::vector<std::string> launcher)
    : dir_(std::filesystem::temp_directory_path() /
           ("portlens-agent-" + std::to_string(getpid()) + "-" + std::to_string(agent_counter++))),
      port_(free_port()) {
  std::filesystem::create_directories(dir_);
  std::vector<std::string> argv = std::move(launcher);
  const std::vector<std::string> defaults = {
      PORTLENS_BINARY,        "agent",
      "--web.listen-address", "127.0.0.1:" + std::to_string(port_),
      "--api.socket",         (dir_ / "api.sock").string(),
      "--event-log",          (dir_ / "events.log").string(),
      "--reconcile-interval", "1",
      "--log.level",          "debug"};
  // After the binary and its command, flag and value pairs. A flag that takes one value and that
  // extra gives too is extra's to set; --web.listen-address adds up.
  for (std::size_t i = 0; i + 1 < defaults.size(); i += 2) {
    if (i < 2 || defaults[i] == "--web.listen-address" ||
        std::find(extra.begin(), extra.end(), defaults[i]) == extra.end()) {
      argv.insert(argv.end(), {defaults[i], defaults[i + 1]});
    }
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  process_ = std::make_unique<Process>(argv);
}

Agent::~Agent() {
  process_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

bool Agent::ready() { return process_->wait_for_stderr("serving", 30s); }

std::string Agent::scrape() const { return http_get(port_, "/metrics"); }

std::string Agent::scrape_until(const std::function<bool(const std::string&)>& ok,
                                std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string text = scrape();
  while (!ok(text) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
    text = scrape();
  }
  return text;
}

int Agent::stop() {
  process_->signal(SIGTERM);
  return process_->wait(10s);
}

::testing::AssertionResult passes_promtool(const std::filesystem::path& dir,
                                           const std::string& exposition) {
  const auto file = dir / "scrape.txt";
  std::ofstream(file) << exposition;
  const CommandResult promtool = run_command("promtool check metrics < " + file.string() + " 2>&1");
  if (promtool.status == 127) {
    return ::testing::AssertionFailure() << "promtool missing: run scripts/install-deps.sh";
  }
  if (promtool.status != 0 || !promtool.output.empty()) {
    return ::testing::AssertionFailure()
           << "promtool exited " << promtool.status << ": " << promtool.output;
  }
  return ::testing::AssertionSuccess();
}

std::string ss_count_time_wait(const NetnsSandbox& ns, const std::string& filter) {
  std::string out =
      run_command("ip netns exec " + ns.name() + " ss -Htan state time-wait " + filter + " | wc -l")
          .output;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
    out.pop_back();
  }
  return out;
}

void make_time_waits(const NetnsSandbox& ns, std::uint16_t port, int count) {
  ns.run([port, count] {
    TestSocket server(AF_INET, SOCK_STREAM);
    server.reuseaddr();
    server.bind("127.0.0.1", port);
    server.listen(128);
    for (int i = 0; i < count; ++i) {
      TestSocket client(AF_INET, SOCK_STREAM);
      client.connect("127.0.0.1", port);
      const int accepted = server.accept_one();
      client.close();
      if (accepted >= 0) {
        ::close(accepted);
      }
    }
  });
}

bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return cond();
    }
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

}  // namespace portlens::testing
