// Kernel test of net.ipv4.tcp_max_tw_buckets (docs/kernel-rules.md 5.3): in a namespace whose
// limit is 1,000, 200 connections a second for 20 s, each closed by its client first. The kernel
// keeps 1,000 TIME_WAITs and refuses the rest (TCPTimeWaitOverflow), with the same FIN_WAIT2 ->
// CLOSE events as the ones it keeps; the agent's TIME_WAIT gauge must say what `ss` says.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "agent/kernel/netns_config.hpp"
#include "agent/kernel/snapshot.hpp"
#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// TcpExtTCPTimeWaitOverflow of ns, as the kernel counts it.
std::optional<std::uint64_t> time_wait_overflow(const NetnsSandbox& ns) {
  return ns.run([]() -> std::optional<std::uint64_t> {
    std::ifstream f("/proc/thread-self/net/netstat");
    std::ostringstream text;
    text << f.rdbuf();
    return parse_netstat_counter(text.str(), "TcpExt", "TCPTimeWaitOverflow");
  });
}

struct Load {
  int connections = 0;  // made and closed by the client
  int accepted = 0;
};

// `count` loopback connections to 127.0.0.1:port in ns, one every `every` on a fixed schedule
// (late ones go at once, so a busy host slows the pace but not the count). The client closes
// first; the server closes once it has read the client's FIN, so every TIME_WAIT (kept or
// refused) is the client's. Bounded by `budget` whatever the host does.
Load connect_and_close(const NetnsSandbox& ns, std::uint16_t port, int count,
                       std::chrono::microseconds every, std::chrono::seconds budget) {
  return ns.run([&] {
    TestSocket server(AF_INET, SOCK_STREAM);
    server.reuseaddr();
    if (server.bind("127.0.0.1", port) != 0 || server.listen(1024) != 0) {
      throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(port));
    }
    const auto deadline = Clock::now() + budget;
    std::atomic<int> accepted{0};
    std::atomic<bool> client_done{false};
    std::thread acceptor([&] {
      // Already in ns: a thread inherits its creator's namespace.
      while (accepted.load() < count && Clock::now() < deadline) {
        pollfd p{server.fd(), POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) {
          if (client_done.load() && ::poll(&p, 1, 1000) <= 0) {
            return;  // nothing more is coming
          }
          continue;
        }
        const int fd = server.accept_one();
        if (fd < 0) {
          continue;
        }
        // Wait (bounded) for the client's FIN: read() returns 0.
        char buf[64];
        pollfd c{fd, POLLIN, 0};
        while (::poll(&c, 1, 2000) > 0 && ::read(fd, buf, sizeof buf) > 0) {
        }
        ::close(fd);
        accepted.fetch_add(1);
      }
    });
    Load load;
    const auto start = Clock::now();
    for (int i = 0; i < count && Clock::now() < deadline; ++i) {
      std::this_thread::sleep_until(start + i * every);
      TestSocket client(AF_INET, SOCK_STREAM);
      if (client.connect("127.0.0.1", port) == 0) {
        ++load.connections;
      }
      client.close();
    }
    client_done = true;
    acceptor.join();
    load.accepted = accepted.load();
    return load;
  });
}

using TimeWaitLimitTest = KernelTest;

// The snapshot's config of a namespace carries its tcp_max_tw_buckets and its own
// TCPTimeWaitOverflow (read from the reading thread's namespace, not the process's).
TEST_F(TimeWaitLimitTest, NamespaceConfigReadsItsLimitAndItsOverflowCount) {
  ns().sysctl("net.ipv4.tcp_max_tw_buckets", "2");
  make_time_waits(ns(), 7810, 5);
  ASSERT_EQ(ss_count_time_wait(ns()), "2");
  // What a process wholly inside the namespace reads.
  const CommandResult netstat =
      run_command("ip netns exec " + ns().name() + " cat /proc/net/netstat");
  const auto kernel = parse_netstat_counter(netstat.output, "TcpExt", "TCPTimeWaitOverflow");
  ASSERT_TRUE(kernel.has_value()) << netstat.output;
  ASSERT_GT(*kernel, 0U);
  // Needs no BPF: the config is read the same way for either source.
  const SocketSnapshotter diag(SnapshotOptions{SnapshotMode::kSockDiag});
  const Snapshot snap = diag.take({ns().path(), ns().inode()});
  EXPECT_TRUE(snap.problems.empty()) << snap.problems.front();
  const NetnsPortConfig& c = snap.table.config_for(ns().inode());
  EXPECT_EQ(c.tcp_max_tw_buckets, 2U);
  EXPECT_EQ(c.tcp_time_wait_overflow, kernel);
}

TEST_F(TimeWaitLimitTest, GaugeEqualsSsWhenTheNamespaceRefusesTimeWaits) {
  constexpr int kLimit = 1000;
  constexpr int kRate = 200;  // connections a second
  constexpr int kSeconds = 20;
  ns().sysctl("net.ipv4.tcp_max_tw_buckets", std::to_string(kLimit));
  // A reconcile would set the gauge right from a snapshot: with one an hour, what it shows comes
  // from the events and the namespace's limit only. The namespace exists before the agent
  // starts, so its bootstrap snapshot reads the limit.
  PORTLENS_START_AGENT(agent, {"--reconcile-interval", "3600"});
  const std::string netns = std::to_string(ns().inode());
  const Labels time_wait = {{"netns", netns}, {"state", "TIME_WAIT"}};
  const auto overflow_before = time_wait_overflow(ns());
  ASSERT_TRUE(overflow_before.has_value());

  const Load load = connect_and_close(ns(), 7800, kRate * kSeconds,
                                      std::chrono::microseconds(1'000'000 / kRate), 60s);
  ASSERT_EQ(load.connections, kRate * kSeconds);
  ASSERT_EQ(load.accepted, load.connections);

  // The kernel's side: TIME_WAITs live 60 s, so none of them has ended yet.
  const auto overflow_after = time_wait_overflow(ns());
  ASSERT_TRUE(overflow_after.has_value());
  const std::uint64_t refused = *overflow_after - *overflow_before;
  const int held = std::stoi(ss_count_time_wait(ns()));
  ASSERT_GT(refused, 0U) << "the namespace never reached tcp_max_tw_buckets (ss: " << held << ")";
  ASSERT_LE(held, kLimit);

  // Within 1% of ss, once the agent has applied the events (bounded).
  const auto close_enough = [held](std::optional<double> gauge) {
    return gauge && std::abs(*gauge - held) <= 0.01 * held;
  };
  const std::string text = agent.scrape_until(
      [&](const std::string& t) {
        return close_enough(metric(t, "portlens_tcp_sockets", time_wait));
      },
      10s);
  const std::optional<double> gauge = metric(text, "portlens_tcp_sockets", time_wait);
  const int held_after = std::stoi(ss_count_time_wait(ns()));
  EXPECT_TRUE(close_enough(gauge))
      << "portlens " << gauge.value_or(-1) << ", ss " << held << " (" << held_after
      << " after the scrape), kernel refused " << refused << ", events lost "
      << metric(text, "portlens_events_lost_total").value_or(-1) << "\nagent stderr:\n"
      << agent.process().err();
  EXPECT_EQ(held_after, held) << "a TIME_WAIT ended while the test compared";
  // The per-port series add up to the same count.
  EXPECT_EQ(metric_sum(text, "portlens_time_wait_sockets", {{"netns", netns}}), gauge);
  RecordProperty("ss_time_wait", held);
  RecordProperty("portlens_time_wait", static_cast<int>(gauge.value_or(-1)));
  RecordProperty("kernel_refused", static_cast<int>(refused));
  std::cerr << "ss " << held << ", portlens " << gauge.value_or(-1) << ", kernel refused "
            << refused << " of " << load.connections << "\n";
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace portlens::testing
