// Sections 3b and 4: a namespace holding options.time_waits TIME_WAIT sockets over
// options.destinations destinations, made for real (client-first close) while the agent runs.
// Measured on it: the agent's RSS, /metrics scrape time over HTTP, SocketSnapshotter::take(), the
// start-to-"serving" time of a second agent that bootstraps them, and PortlensCollector::build()
// alone on the same table. TIME_WAIT lasts 60 s (TCP_TIMEWAIT_LEN), so the measurements follow
// the creation at once and each says how many TIME_WAITs it saw.
#include <iostream>
#include <memory>

#include "agent/kernel/inspector.hpp"
#include "agent/kernel/netns.hpp"
#include "agent/kernel/snapshot.hpp"
#include "agent/model/clock.hpp"
#include "agent/tracker/tracker.hpp"
#include "bench/sections.hpp"
#include "exporters/collector.hpp"

namespace portlens::bench {
namespace {

constexpr std::size_t kPortsPerAddress = 10;
constexpr std::uint16_t kFirstPort = 7101;
constexpr std::uint64_t kRssAimKb = 128ULL * 1024;

ChurnConfig population_config(const Options& options, std::size_t time_waits,
                              std::size_t destinations) {
  ChurnConfig config;
  for (std::size_t p = 0; p < kPortsPerAddress; ++p) {
    config.listen_ports.push_back(static_cast<std::uint16_t>(kFirstPort + p));
  }
  // 127.1.0.1, 127.1.0.2, ...: every 127/8 address is local on lo, so one listener per port
  // serves them all; each (address, port) is one destination.
  const std::size_t addresses = (destinations + kPortsPerAddress - 1) / kPortsPerAddress;
  for (std::size_t a = 0; a < addresses; ++a) {
    for (std::size_t p = 0; p < kPortsPerAddress; ++p) {
      config.destinations.push_back(Destination{0x7f010001U + static_cast<std::uint32_t>(a),
                                                static_cast<std::uint16_t>(kFirstPort + p)});
    }
  }
  config.clients = options.clients;
  config.max_connections = time_waits;
  config.max_seconds = options.smoke ? 20 : 55;
  return config;
}

double time_wait_in(const std::string& exposition, std::uint32_t inode) {
  return metric_sum(exposition, "portlens_tcp_sockets",
                    {{"netns", std::to_string(inode)}, {"state", "TIME_WAIT"}})
      .value_or(-1);
}

struct ScrapeTimes {
  std::vector<double> ms;
  std::size_t bytes = 0;
  double time_wait = -1;
  double self_reported_ms = -1;  // portlens_scrape_duration_seconds of the last scrape
  double lost = -1;              // portlens_events_lost_total
  double tracked = -1;           // portlens_tracked_sockets
};

ScrapeTimes time_scrapes(const AgentProcess& agent, int count, std::uint32_t inode) {
  ScrapeTimes out;
  for (int i = 0; i < count; ++i) {
    const auto start = Clock::now();
    const std::string body = agent.scrape();
    out.ms.push_back(seconds_since(start) * 1000);
    if (body.empty()) {
      throw BenchError("empty scrape from the agent:\n" + agent.stderr_text());
    }
    out.bytes = body.size();
    out.time_wait = time_wait_in(body, inode);
    out.lost = metric_sum(body, "portlens_events_lost_total").value_or(-1);
    out.tracked = metric_sum(body, "portlens_tracked_sockets").value_or(-1);
    out.self_reported_ms =
        metric_sum(body, "portlens_scrape_duration_seconds").value_or(-0.001) * 1000;
  }
  return out;
}

std::string mib(std::uint64_t kb) { return fixed(static_cast<double>(kb) / 1024, 1) + " MiB"; }

}  // namespace

void population_section(const Options& options, Report& report) {
  const std::size_t time_waits = options.smoke ? 2'000 : options.time_waits;
  const std::size_t destinations = options.smoke ? 100 : options.destinations;
  std::cout << "\n## 3b/4. agent RSS, scrape and bootstrap with " << with_commas(time_waits)
            << " TIME_WAIT over " << with_commas(destinations) << " destinations\n";
  const Netns ns;
  prepare_churn_netns(ns, 0);  // no reuse: every connection leaves its own TIME_WAIT
  const ChurnConfig config = population_config(options, time_waits, destinations);

  auto agent = std::make_unique<AgentProcess>(options.agent_binary);
  const double first_start = agent->wait_serving();
  agent->wait_idle(std::chrono::milliseconds(200), std::chrono::seconds(10));
  const std::uint64_t idle_rss = agent->status_kb("VmRSS");
  std::cout << "agent started in " << fixed(first_start, 2) << " s with an empty namespace, RSS "
            << mib(idle_rss) << "\n";

  const ChurnResult made = run_churn(ns, config);
  const auto made_at = Clock::now();
  std::cout << "made " << with_commas(made.connections) << " connections in "
            << fixed(made.seconds, 1) << " s (" << with_commas(std::uint64_t(made.rate()))
            << "/s) with the agent running";
  if (made.failures > 0) {
    std::cout << "; " << made.failures << " failed (first: " << made.first_error << ")";
  }
  std::cout << "\n";
  agent->wait_idle();
  const std::uint64_t rss = agent->status_kb("VmRSS");
  const std::uint64_t hwm = agent->status_kb("VmHWM");

  // 4. Scrape time, client side (connect to the last byte), at this size.
  const ScrapeTimes scrapes = time_scrapes(*agent, options.smoke ? 2 : options.scrapes, ns.inode());
  std::cout << "agent RSS " << mib(rss) << " (peak " << mib(hwm) << ", " << mib(rss - idle_rss)
            << " over idle) tracking " << with_commas(std::uint64_t(scrapes.time_wait))
            << " TIME_WAIT in the namespace (" << with_commas(std::uint64_t(scrapes.tracked))
            << " sockets tracked in all; events lost " << scrapes.lost << ")\n";
  std::cout << "scrape /metrics: median " << fixed(median(scrapes.ms), 1) << " ms (min "
            << fixed(min_of(scrapes.ms), 1) << ", max " << fixed(max_of(scrapes.ms), 1) << ") of "
            << scrapes.ms.size() << ", " << with_commas(scrapes.bytes)
            << " bytes; agent's own portlens_scrape_duration_seconds "
            << fixed(scrapes.self_reported_ms, 1) << " ms\n";

  // Bootstrap: the snapshot alone, in this process.
  std::vector<double> snap_ms;
  std::size_t snap_tw = 0;
  Snapshot snapshot;
  {
    const SocketSnapshotter snapshotter;
    const NetnsRef ref = resolve_netns(ns.path());
    for (int i = 0; i < (options.smoke ? 1 : 3); ++i) {
      const auto start = Clock::now();
      snapshot = snapshotter.take(ref);
      snap_ms.push_back(seconds_since(start) * 1000);
    }
    for (const auto& s : snapshot.table.sockets) {
      snap_tw += s.state == TcpState::kTimeWait ? 1 : 0;
    }
    std::cout << "SocketSnapshotter::take (" << to_string(snapshotter.source()) << "): median "
              << fixed(median(snap_ms), 0) << " ms of " << snap_ms.size() << ", "
              << with_commas(snapshot.table.sockets.size()) << " sockets (" << with_commas(snap_tw)
              << " TIME_WAIT)\n";
  }

  // Bootstrap: a second agent's start to "serving", snapshotting every namespace.
  agent->stop();
  agent = std::make_unique<AgentProcess>(options.agent_binary);
  const double boot_s = agent->wait_serving();
  agent->wait_idle(std::chrono::milliseconds(200), std::chrono::seconds(10));
  const std::uint64_t boot_rss = agent->status_kb("VmRSS");
  const ScrapeTimes boot_scrapes = time_scrapes(*agent, options.smoke ? 1 : 3, ns.inode());
  std::cout << "agent restarted: start to \"serving\" " << fixed(boot_s, 2) << " s, RSS "
            << mib(boot_rss) << " tracking " << with_commas(std::uint64_t(boot_scrapes.time_wait))
            << " TIME_WAIT (bootstrapped); scrape median " << fixed(median(boot_scrapes.ms), 1)
            << " ms\n";
  agent->stop();
  agent.reset();
  std::cout << "TIME_WAITs made " << fixed(seconds_since(made_at), 1)
            << " s ago (they last 60 s)\n";

  // SocketTracker::rows() and PortlensCollector::build() alone, on the table the agent would
  // hand it.
  SocketTracker tracker;
  const std::uint64_t now = monotonic_ns();
  tracker.bootstrap(ns.inode(), snapshot.table, now);
  std::vector<double> rows_ms;
  std::vector<double> build_ms;
  std::vector<double> render_ms;
  std::size_t families = 0;
  for (int i = 0; i < (options.smoke ? 1 : 5); ++i) {
    ScrapeInput input;
    const auto rows_start = Clock::now();
    auto rows = tracker.rows(now);
    rows_ms.push_back(seconds_since(rows_start) * 1000);
    input.namespaces.emplace_back(ns.inode(), snapshot.table.config_for(ns.inode()),
                                  std::move(rows[ns.inode()]));
    input.tracked_sockets = tracker.socket_count() + tracker.time_wait_count();
    const auto start = Clock::now();
    const auto built = PortlensCollector::build(input, kDefaultTopK);
    build_ms.push_back(seconds_since(start) * 1000);
    const auto render_start = Clock::now();
    const std::string text = render_text(built);
    render_ms.push_back(seconds_since(render_start) * 1000);
    families = built.size();
  }
  std::cout << "SocketTracker::rows() (what a scrape does under the agent's lock): median "
            << fixed(median(rows_ms), 1) << " ms\n";
  std::cout << "PortlensCollector::build() alone: median " << fixed(median(build_ms), 1)
            << " ms, render_text " << fixed(median(render_ms), 1) << " ms (" << families
            << " families, " << with_commas(tracker.time_wait_count()) << " TIME_WAIT)\n";

  const auto tw_note = [](double n) { return with_commas(std::uint64_t(std::max(0.0, n))); };
  report.add(Row{"agent RSS with " + tw_note(scrapes.time_wait) + " TIME_WAIT (from events)",
                 mib(rss) + " (idle " + mib(idle_rss) + ")", "< 128 MiB",
                 rss < kRssAimKb ? Met::kYes : Met::kNo});
  report.add(Row{"events lost making " + with_commas(made.connections) + " connections at " +
                     with_commas(std::uint64_t(made.rate())) + "/s",
                 with_commas(std::uint64_t(std::max(0.0, scrapes.lost))), "0",
                 scrapes.lost == 0 ? Met::kYes : Met::kNo});
  report.add(Row{"agent RSS after bootstrapping " + tw_note(boot_scrapes.time_wait) + " TIME_WAIT",
                 mib(boot_rss), "< 128 MiB", boot_rss < kRssAimKb ? Met::kYes : Met::kNo});
  report.add(Row{"/metrics scrape, " + tw_note(scrapes.time_wait) + " TIME_WAIT over " +
                     with_commas(destinations) + " destinations (median of " +
                     std::to_string(scrapes.ms.size()) + ")",
                 fixed(median(scrapes.ms), 1) + " ms", "< 50 ms",
                 median(scrapes.ms) < 50 ? Met::kYes : Met::kNo});
  report.add(Row{"SocketTracker::rows() alone (under the agent's lock), same table",
                 fixed(median(rows_ms), 1) + " ms", "", Met::kNoAim});
  report.add(Row{"PortlensCollector::build() alone, same table", fixed(median(build_ms), 1) + " ms",
                 "", Met::kNoAim});
  report.add(
      Row{"render_text() alone, same table", fixed(median(render_ms), 1) + " ms", "", Met::kNoAim});
  report.add(Row{"bootstrap snapshot (SocketSnapshotter::take, " + with_commas(snap_tw) + " TW)",
                 fixed(median(snap_ms), 0) + " ms", "< 2 s",
                 median(snap_ms) < 2000 ? Met::kYes : Met::kNo});
  report.add(Row{"agent start to \"serving\" with " + tw_note(boot_scrapes.time_wait) + " TW",
                 fixed(boot_s, 2) + " s", "< 2 s", boot_s < 2 ? Met::kYes : Met::kNo});
}

}  // namespace portlens::bench
