// Sinks that cannot stall the agent (issue 14): the event log is written by a thread of its own
// through a bounded queue. A FIFO whose reader stalls, a FIFO no one reads and /dev/full each get
// what the user can act on: the agent keeps serving and stops promptly, drops and failures are
// exported and said once, and a start that could never write is refused in one line.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::uint16_t kPort = 7330;

// count binds to distinct loopback addresses on kPort, each failing with EADDRINUSE against a
// wildcard listener without SO_REUSEADDR: distinct failures, each judged and logged. Returns how
// many failed so (the kernel's count).
int distinct_failures(const NetnsSandbox& ns, int count) {
  return ns.run([count] {
    TestSocket listener(AF_INET, SOCK_STREAM);
    if (listener.bind("0.0.0.0", kPort) != 0 || listener.listen() != 0) {
      return -1;
    }
    int failed = 0;
    for (int i = 0; i < count; ++i) {
      TestSocket s(AF_INET, SOCK_STREAM);
      const std::string addr =
          "127.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
      failed += s.bind(addr, kPort) == EADDRINUSE ? 1 : 0;
    }
    return failed;
  });
}

using SinkTest = KernelTest;

TEST_F(SinkTest, AStalledFifoReaderCostsLogLinesNeverTheAgent) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("portlens-sink-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string fifo = (dir / "events.fifo").string();
  std::filesystem::remove(fifo);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // A reader that opens and never reads: the pipe (64 KiB) and then the queue (4 MiB) fill.
  const int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  PORTLENS_START_AGENT(agent, std::vector<std::string>{"--event-log", fifo});

  constexpr int kFailures = 8000;  // about 1 KiB of JSON each: twice what pipe and queue hold
  const int failed = distinct_failures(ns(), kFailures);
  ASSERT_EQ(failed, kFailures);
  double slowest_ms = 0;
  const Labels mine{{"comm", own_comm()}};
  const std::string caught_up = agent.scrape_until(
      [&](const std::string& t) {
        const auto counted = metric_sum(t, "portlens_bind_failures_total", mine);
        const auto lost = metric(t, "portlens_events_lost_total");
        return counted && lost && *counted + *lost >= kFailures &&
               metric(t, "portlens_diagnosis_queue_length") == 0;
      },
      120s);
  // Scrapes answer promptly while the writer sits on the full FIFO.
  for (int i = 0; i < 10; ++i) {
    const auto start = Clock::now();
    EXPECT_FALSE(http_get(agent.port(), "/metrics").empty());
    slowest_ms = std::max(slowest_ms,
                          std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  const double counted = metric_sum(caught_up, "portlens_bind_failures_total", mine).value_or(0);
  const double lost = metric(caught_up, "portlens_events_lost_total").value_or(-1);
  const double dropped = metric(caught_up, "portlens_event_log_lines_dropped_total").value_or(-1);
  std::printf(
      "stalled FIFO: %d failed binds, agent counted %.0f (lost %.0f), %.0f log lines "
      "dropped, slowest scrape after %.1f ms\n",
      failed, counted, lost, dropped, slowest_ms);
  EXPECT_GE(counted + lost, kFailures);
  EXPECT_GT(dropped, 0) << caught_up;
  EXPECT_LT(slowest_ms, 1000.0);
  EXPECT_TRUE(agent.process().wait_for_stderr("is not read fast enough", 10s))
      << agent.process().err();

  const auto stop_start = Clock::now();
  EXPECT_EQ(agent.stop(), 0) << agent.process().err();
  const double stop_s = std::chrono::duration<double>(Clock::now() - stop_start).count();
  std::printf("stopped with the FIFO full in %.2f s\n", stop_s);
  EXPECT_LT(stop_s, 2.0);

  // What did reach the reader is whole JSON lines.
  std::string got;
  std::vector<char> buf(std::size_t{64} << 10);
  for (int i = 0; i < 1000; ++i) {
    const ssize_t n = read(reader, buf.data(), buf.size());
    if (n <= 0) {
      break;
    }
    got.append(buf.data(), static_cast<std::size_t>(n));
  }
  close(reader);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), '\n');
  std::istringstream lines(got);
  int parsed = 0;
  for (std::string line; std::getline(lines, line);) {
    EXPECT_FALSE(nlohmann::json::parse(line, nullptr, false).is_discarded()) << line;
    ++parsed;
  }
  EXPECT_GT(parsed, 0);
  std::filesystem::remove_all(dir);
}

TEST(SinkCliTest, AFifoThatNoOneReadsIsRefusedInOneLineNotAHang) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("portlens-sink-cli-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string fifo = (dir / "events.fifo").string();
  std::filesystem::remove(fifo);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  Process p({PORTLENS_BINARY, "agent", "--web.listen-address", "127.0.0.1:10139", "--api.socket",
             (dir / "api.sock").string(), "--event-log", fifo});
  const int rc = p.wait(60s);
  EXPECT_NE(rc, 0) << p.err();
  EXPECT_LT(rc, 128) << "it had to be killed: " << p.err();
  EXPECT_NE(p.err().find("no process has open for reading"), std::string::npos) << p.err();
  EXPECT_EQ(std::count(p.err().begin(), p.err().end(), '\n'), 1) << p.err();
  std::filesystem::remove_all(dir);
}

TEST_F(SinkTest, AFullDiskIsSaidOnceAndCounted) {
  PORTLENS_START_AGENT(agent, std::vector<std::string>{"--event-log", "/dev/full"});
  ASSERT_EQ(distinct_failures(ns(), 3), 3);
  const std::string text = agent.scrape_until([](const std::string& t) {
    return metric(t, "portlens_event_log_write_failures_total") >= 3;
  });
  // At least ours: another process on the host may fail a call meanwhile.
  EXPECT_GE(metric(text, "portlens_event_log_write_failures_total"), 3) << text;
  EXPECT_EQ(metric_sum(text, "portlens_bind_failures_total", {{"comm", own_comm()}}), 3)
      << "a failure the log could not take is still counted";
  ASSERT_TRUE(agent.process().wait_for_stderr("cannot write the event log /dev/full", 10s))
      << agent.process().err();
  EXPECT_EQ(agent.stop(), 0);
  const std::string err = agent.process().err();
  std::size_t said = 0;
  for (std::size_t at = err.find("cannot write the event log"); at != std::string::npos;
       at = err.find("cannot write the event log", at + 1)) {
    ++said;
  }
  EXPECT_EQ(said, 1U) << err;
  EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
}

}  // namespace
}  // namespace portlens::testing
