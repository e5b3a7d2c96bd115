// The scrape aggregates straight from the tracker (SocketTracker::rows, then the collector over
// SocketRow) against the computation they replace: a copy of the tracker's SocketTable per
// namespace, counted entry by entry and accounted with account_by_destination(). Trackers are fed
// random event streams and snapshots; every per-namespace series must be equal.
#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <gtest/gtest.h>
#include <prometheus/metric_family.h>

#include "agent/diagnose/ephemeral.hpp"
#include "agent/tracker/tracker.hpp"
#include "exporters/collector.hpp"
#include "tests/unit/random_tracker.hpp"

namespace portlens {
namespace {

using prometheus::MetricFamily;
using LabelMap = std::map<std::string, std::string>;
using Series = std::map<LabelMap, double>;
using AllSeries = std::map<std::string, Series>;

// ---------------------------------------------------------------------------------------------
// The reference: the collector's per-namespace families as computed before SocketRow, from a
// SocketTable.

TcpState reference_state(const SocketEntry& e) {
  if (!e.state) {
    return TcpState::kClose;
  }
  switch (*e.state) {
    case TcpState::kTimeWait:
      return e.time_wait_substate == TcpState::kFinWait2 ? TcpState::kFinWait2
                                                         : TcpState::kTimeWait;
    case TcpState::kBoundInactive:
      return TcpState::kClose;
    case TcpState::kNewSynRecv:
      return TcpState::kSynRecv;
    default:
      return *e.state;
  }
}

// Top k by count (ties by key), the rest summed into one `other` series.
template <typename Key, typename Better, typename Labels>
void top_k_with_other(std::vector<std::pair<Key, double>> items, std::size_t k, Better better,
                      Labels labels, const LabelMap& other, Series& out) {
  std::sort(items.begin(), items.end(), better);
  double rest = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i < k) {
      out[labels(items[i].first)] = items[i].second;
    } else {
      rest += items[i].second;
    }
  }
  if (items.size() > k) {
    out[other] = rest;
  }
}

void reference_families(std::uint64_t inode, const NetnsPortConfig& config, SocketTable table,
                        std::size_t k, AllSeries& out) {
  const std::string netns = std::to_string(inode);
  table.default_config = config;
  std::map<TcpState, double> states;
  std::map<std::uint16_t, double> by_port;
  std::map<Endpoint, double> by_remote;
  for (const SocketEntry& e : table.sockets) {
    if (e.proto != Proto::kTcp) {
      continue;
    }
    const TcpState s = reference_state(e);
    states[s] += 1;
    if (s == TcpState::kTimeWait) {
      by_port[e.local.port] += 1;
      if (e.remote) {
        by_remote[Endpoint{e.remote->addr.unmapped(), e.remote->port}] += 1;
      }
    }
  }
  for (const TcpState s :
       {TcpState::kEstablished, TcpState::kSynSent, TcpState::kSynRecv, TcpState::kFinWait1,
        TcpState::kFinWait2, TcpState::kTimeWait, TcpState::kClose, TcpState::kCloseWait,
        TcpState::kLastAck, TcpState::kListen, TcpState::kClosing}) {
    out["portlens_tcp_sockets"][{{"netns", netns}, {"state", state_name(static_cast<int>(s))}}] =
        states[s];
  }
  const auto by_count = [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  };
  const auto remote_labels = [&](const Endpoint& r) {
    return LabelMap{{"netns", netns},
                    {"remote_addr", r.addr.to_string()},
                    {"remote_port", std::to_string(r.port)}};
  };
  const LabelMap other_remote{{"netns", netns}, {"remote_addr", "other"}, {"remote_port", "other"}};
  top_k_with_other(
      std::vector<std::pair<std::uint16_t, double>>(by_port.begin(), by_port.end()), k, by_count,
      [&](std::uint16_t p) {
        return LabelMap{{"netns", netns}, {"local_port", std::to_string(p)}};
      },
      LabelMap{{"netns", netns}, {"local_port", "other"}}, out["portlens_time_wait_sockets"]);
  top_k_with_other(std::vector<std::pair<Endpoint, double>>(by_remote.begin(), by_remote.end()), k,
                   by_count, remote_labels, other_remote,
                   out["portlens_time_wait_sockets_by_remote"]);

  struct Remote {
    double in_use = 0;
    double capacity = 0;
    double reusable = 0;
    double utilization = 0;
  };
  std::map<Endpoint, Remote> remotes;
  double max_utilization = 0;
  for (const EphemeralAccount& a : account_by_destination(table)) {
    Remote& r = remotes[a.destination->remote];
    r.in_use += a.in_use;
    r.capacity += a.capacity;
    r.reusable += a.time_wait_reusable;
    r.utilization = std::max(r.utilization, std::clamp(a.utilization, 0.0, 1.0));
    max_utilization = std::max(max_utilization, r.utilization);
  }
  const std::uint32_t lo = config.port_range_lo;
  const std::uint32_t hi = config.port_range_hi;
  out["portlens_ephemeral_port_range_size"][{{"netns", netns}}] = hi >= lo ? hi - lo + 1 : 0;
  out["portlens_ephemeral_port_utilization_max_ratio"][{{"netns", netns}}] = max_utilization;
  // No burst seen between scrapes here: the peak is the maximum.
  out["portlens_ephemeral_port_utilization_peak_ratio"][{{"netns", netns}}] = max_utilization;
  std::vector<std::pair<Endpoint, Remote>> ranked(remotes.begin(), remotes.end());
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    if (a.second.utilization != b.second.utilization) {
      return a.second.utilization > b.second.utilization;
    }
    if (a.second.in_use != b.second.in_use) {
      return a.second.in_use > b.second.in_use;
    }
    return a.first < b.first;
  });
  double rest_in_use = 0;
  double rest_reusable = 0;
  for (std::size_t i = 0; i < ranked.size(); ++i) {
    const Remote& r = ranked[i].second;
    if (i >= k) {
      rest_in_use += r.in_use;
      rest_reusable += r.reusable;
      continue;
    }
    const LabelMap labels = remote_labels(ranked[i].first);
    out["portlens_ephemeral_ports_in_use"][labels] = r.in_use;
    out["portlens_ephemeral_port_utilization_ratio"][labels] = r.utilization;
    out["portlens_ephemeral_ports_capacity"][labels] = r.capacity;
    out["portlens_ephemeral_ports_time_wait_reusable"][labels] = r.reusable;
  }
  if (ranked.size() > k) {
    out["portlens_ephemeral_ports_in_use"][other_remote] = rest_in_use;
    out["portlens_ephemeral_ports_time_wait_reusable"][other_remote] = rest_reusable;
  }
}

// The per-namespace families of a build(), as series.
AllSeries per_netns_series(const std::vector<MetricFamily>& families) {
  AllSeries out;
  for (const MetricFamily& f : families) {
    for (const auto& m : f.metric) {
      LabelMap labels;
      for (const auto& l : m.label) {
        labels[l.name] = l.value;
      }
      if (!labels.contains("netns")) {
        continue;
      }
      out[f.name][labels] =
          f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  return out;
}

class ScrapeDifferentialTest : public ::testing::TestWithParam<std::uint32_t> {};

TEST_P(ScrapeDifferentialTest, RowsFromTheTrackerEqualTheCopiedTable) {
  RandomTracker random(GetParam());
  for (int round = 0; round < 4; ++round) {
    random.run(1500);
    const std::uint64_t now = random.now();
    for (const std::size_t k : {std::size_t{0}, std::size_t{3}, kDefaultTopK}) {
      ScrapeInput input;
      AllSeries expected;
      auto rows = random.tracker().rows(now);
      for (const auto& [inode, config] : random.configs()) {
        reference_families(inode, config, random.tracker().table(inode, now), k, expected);
        input.namespaces.emplace_back(inode, config, std::move(rows[inode]));
      }
      std::erase_if(expected, [](const auto& family) { return family.second.empty(); });
      const AllSeries actual = per_netns_series(PortlensCollector::build(input, k));
      ASSERT_EQ(actual.size(), expected.size());
      // The stream makes something to compare: TIME_WAITs and destinations.
      ASSERT_TRUE(expected.contains("portlens_time_wait_sockets"));
      ASSERT_TRUE(expected.contains("portlens_ephemeral_ports_in_use"));
      for (const auto& [name, series] : expected) {
        ASSERT_TRUE(actual.contains(name)) << name;
        EXPECT_EQ(actual.at(name), series)
            << name << " seed " << GetParam() << " round " << round << " top-k " << k;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, ScrapeDifferentialTest, ::testing::Range(1U, 41U));

}  // namespace
}  // namespace portlens
