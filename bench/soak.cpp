// Section 6: memory under churn (issue 14). The real agent watches loopback churn for
// options.soak_seconds; its RSS is sampled throughout and printed over time, then once more after
// the churn's TIME_WAITs have expired and the agent has forgotten them. What a user can hold the
// agent to: a peak under the unit's budget, and memory handed back after the burst.
#include <algorithm>
#include <atomic>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

#include "bench/sections.hpp"

namespace portlens::bench {
namespace {

constexpr std::uint64_t kPeakAimKb = 128ULL * 1024;
// After the burst, RSS back within this fraction of what it was before.
constexpr double kReturnAim = 0.20;

std::string mib(std::uint64_t kb) { return fixed(static_cast<double>(kb) / 1024, 1) + " MiB"; }

// RSS by kind: the heap and stacks (anonymous), mapped files and BPF maps (the ring's pages are
// mapped from the map's file, resident once the programs have written them), shared memory.
std::string rss_parts(const AgentProcess& agent) {
  return "anon " + mib(agent.status_kb("RssAnon")) + ", file " + mib(agent.status_kb("RssFile")) +
         ", shmem " + mib(agent.status_kb("RssShmem"));
}

}  // namespace

void soak_section(const Options& options, Report& report) {
  const double seconds = options.smoke ? 2 : options.soak_seconds;
  // TIME_WAIT lasts 60 s; the agent drops an expired one by the next reconcile (default 30 s).
  const double settle = options.smoke ? 2 : 100;
  std::cout << "\n## 6. soak: agent RSS under " << fixed(seconds, 0) << " s of loopback churn\n";
  const Netns ns;
  prepare_churn_netns(ns, 1);
  // As a production host has it: the kernel's own TIME_WAIT limit (the host's), not the churn
  // sections' 2,000,000, so the agent tracks what such a host would make it track.
  std::string host_limit = "131072";
  if (std::ifstream in("/proc/sys/net/ipv4/tcp_max_tw_buckets"); !(in >> host_limit)) {
    host_limit = "131072";
  }
  ns.sysctl("net.ipv4.tcp_max_tw_buckets", host_limit);
  ChurnConfig config;
  config.listen_ports = {7001, 7002, 7003, 7004, 7005, 7006, 7007, 7008};
  for (const std::uint16_t p : config.listen_ports) {
    config.destinations.push_back(Destination{0x7f000001U, p});
  }
  config.clients = options.clients;
  config.max_connections = 1'000'000'000;
  config.max_seconds = seconds;
  std::cout << config.clients << " client threads to " << config.destinations.size()
            << " destinations, tcp_tw_reuse 1, tcp_max_tw_buckets " << host_limit
            << "; RSS sampled every second, printed every " << (options.smoke ? 1 : 30) << " s\n";

  AgentProcess agent(options.agent_binary);
  agent.wait_serving();
  agent.wait_idle(std::chrono::milliseconds(300), std::chrono::seconds(10));
  const std::uint64_t before_kb = agent.status_kb("VmRSS");
  const std::string before = agent.scrape();
  std::cout << "  before: RSS " << mib(before_kb) << " (" << rss_parts(agent) << ")\n";

  std::atomic<bool> done{false};
  ChurnResult churn;
  std::thread generator([&] {
    churn = run_churn(ns, config);
    done = true;
  });
  std::uint64_t max_sampled_kb = before_kb;
  const auto start = Clock::now();
  const int print_every = options.smoke ? 1 : 30;
  for (int tick = 1; !done.load(); ++tick) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const std::uint64_t rss = agent.status_kb("VmRSS");
    max_sampled_kb = std::max(max_sampled_kb, rss);
    if (tick % print_every == 0) {
      std::cout << "  t=" << fixed(seconds_since(start), 0) << " s: RSS " << mib(rss) << "; load "
                << load_average() << "\n";
    }
  }
  generator.join();
  agent.wait_idle();
  const std::string after_churn = agent.scrape();
  const std::uint64_t end_kb = agent.status_kb("VmRSS");
  const double lost = metric_sum(after_churn, "portlens_events_lost_total").value_or(-1) -
                      metric_sum(before, "portlens_events_lost_total").value_or(0);
  const double events = metric_sum(after_churn, "portlens_events_total").value_or(0) -
                        metric_sum(before, "portlens_events_total").value_or(0);
  std::cout << "  churn: " << with_commas(churn.connections) << " connections in "
            << fixed(churn.seconds, 1) << " s = " << with_commas(std::uint64_t(churn.rate()))
            << "/s (" << churn.failures << " failed" << (churn.first_error.empty() ? "" : ": ")
            << churn.first_error << "); events " << with_commas(std::uint64_t(events)) << ", lost "
            << with_commas(std::uint64_t(std::max(0.0, lost))) << "; RSS at the end " << mib(end_kb)
            << " (" << rss_parts(agent) << ")\n";

  // The TIME_WAITs expire; the agent forgets them and should hand their memory back.
  const auto settle_start = Clock::now();
  while (seconds_since(settle_start) < settle) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  const std::uint64_t after_kb = agent.status_kb("VmRSS");
  const std::uint64_t peak_kb = agent.status_kb("VmHWM");
  const std::string settled = agent.scrape();
  const double tw_left = metric_sum(settled, "portlens_time_wait_sockets").value_or(0);
  std::cout << "  " << fixed(settle, 0) << " s after the churn: RSS " << mib(after_kb) << " ("
            << rss_parts(agent) << "; TIME_WAIT tracked " << tw_left << "); peak (VmHWM) "
            << mib(peak_kb) << ", highest sampled " << mib(max_sampled_kb) << "\n";
  agent.stop();

  const double returned = before_kb > 0 ? static_cast<double>(after_kb) / before_kb - 1 : 0;
  report.add(Row{"soak: conn/s the agent watched (" + fixed(seconds, 0) + " s)",
                 with_commas(std::uint64_t(churn.rate())), "40,000",
                 churn.rate() >= 40'000 ? Met::kYes : Met::kNo});
  report.add(Row{"soak: agent peak RSS (VmHWM)", mib(peak_kb), "<= 128 MiB",
                 peak_kb <= kPeakAimKb ? Met::kYes : Met::kNo});
  report.add(Row{"soak: RSS after the TIME_WAITs expired, against before",
                 mib(after_kb) + " vs " + mib(before_kb) + " (" + fixed(returned * 100, 0) + "%)",
                 "within 20%", returned <= kReturnAim ? Met::kYes : Met::kNo});
  report.add(Row{
      "soak: events lost",
      with_commas(std::uint64_t(std::max(0.0, lost))) + " of " + with_commas(std::uint64_t(events)),
      "0", lost == 0 ? Met::kYes : Met::kNo});
}

}  // namespace portlens::bench
