// The Prometheus collector: every family of docs/architecture.md with exact series for hand-built
// inputs, the top-K cut and its `other` bucket, ephemeral accounting per destination, promtool's
// verdict on the exposition, and the Collect() time at 200,000 TIME_WAIT sockets.
#include "exporters/collector.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <prometheus/metric_family.h>

#include "agent/diagnose/ephemeral.hpp"
#include "tests/unit/builders.hpp"

namespace portlens {
namespace {

using unit::connection;
using unit::listener;
using unit::time_wait;

using prometheus::MetricFamily;
using prometheus::MetricType;
using std::chrono::milliseconds;
using LabelMap = std::map<std::string, std::string>;
using Series = std::map<LabelMap, double>;

constexpr std::uint64_t kNetns = unit::kTestNetns;  // the builders' default
constexpr std::uint64_t kOtherNetns = 4026532999;
const std::string kNetnsLabel = "4026531840";
const std::string kOtherNetnsLabel = "4026532999";

NetnsScrape netns_scrape(std::uint64_t inode, const std::vector<SocketEntry>& sockets,
                         NetnsPortConfig config = {}) {
  NetnsScrape ns;
  ns.inode = inode;
  ns.config = std::move(config);
  ns.sockets = rows_of(sockets);
  return ns;
}

// Through Collect(), as the exposer calls it.
std::vector<MetricFamily> collect(const ScrapeInput& input, std::size_t top_k = kDefaultTopK) {
  const PortlensCollector collector([input] { return input; }, top_k);
  return collector.Collect();
}

const MetricFamily* find_family(const std::vector<MetricFamily>& families,
                                const std::string& name) {
  const auto it = std::find_if(families.begin(), families.end(),
                               [&](const MetricFamily& f) { return f.name == name; });
  return it == families.end() ? nullptr : &*it;
}

Series series(const std::vector<MetricFamily>& families, const std::string& name) {
  Series out;
  const MetricFamily* family = find_family(families, name);
  EXPECT_NE(family, nullptr) << name;
  if (family == nullptr) {
    return out;
  }
  for (const auto& metric : family->metric) {
    LabelMap labels;
    for (const auto& label : metric.label) {
      labels[label.name] = label.value;
    }
    const double value =
        family->type == MetricType::Counter ? metric.counter.value : metric.gauge.value;
    EXPECT_TRUE(out.emplace(labels, value).second) << name << ": duplicate series";
  }
  return out;
}

double sum(const Series& s) {
  return std::accumulate(s.begin(), s.end(), 0.0,
                         [](double acc, const auto& kv) { return acc + kv.second; });
}

LabelMap remote(const std::string& netns, const std::string& addr, const std::string& port) {
  return {{"netns", netns}, {"remote_addr", addr}, {"remote_port", port}};
}

Series states(const std::string& netns, const std::map<std::string, double>& nonzero) {
  Series out;
  for (const char* state : {"ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
                            "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"}) {
    const auto it = nonzero.find(state);
    out[{{"netns", netns}, {"state", state}}] = it == nonzero.end() ? 0 : it->second;
  }
  return out;
}

// `promtool check metrics` on text: its exit status and whatever it printed.
struct PromtoolResult {
  int status = -1;
  std::string output;
};

PromtoolResult promtool_check(const std::string& text) {
  PromtoolResult result;
  std::string path = (std::filesystem::temp_directory_path() / "portlens-metrics-XXXXXX").string();
  const int fd = mkstemp(path.data());
  if (fd < 0) {
    ADD_FAILURE() << "mkstemp failed";
    return result;
  }
  close(fd);
  std::ofstream(path) << text;
  const std::string command = "promtool check metrics < " + path + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen failed";
    std::filesystem::remove(path);
    return result;
  }
  std::array<char, 512> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) {
    result.output += buffer.data();
  }
  const int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::filesystem::remove(path);
  return result;
}

bool promtool_installed() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

// A busy host: two namespaces, listeners, clients toward a few databases, TIME_WAIT, counters.
ScrapeInput realistic_input() {
  ScrapeInput input;
  std::vector<SocketEntry> sockets = {listener("0.0.0.0:8080"), listener("[::]:443")};
  for (int i = 0; i < 300; ++i) {
    const std::string local = "10.0.0.1:" + std::to_string(33000 + i);
    const std::string remote = "10.0.1." + std::to_string(1 + i % 30) + ":5432";
    sockets.push_back(
        connection(local, remote, i % 3 == 0 ? TcpState::kEstablished : TcpState::kTimeWait));
    sockets.push_back(time_wait(
        "10.0.0.1:8080", "192.168.7." + std::to_string(i % 250) + ":" + std::to_string(50000 + i)));
  }
  sockets.push_back(connection("[2001:db8::2]:40000", "[2001:db8::1]:443"));
  input.namespaces.push_back(netns_scrape(kNetns, sockets));
  NetnsPortConfig narrow;
  narrow.port_range_lo = 40000;
  narrow.port_range_hi = 40009;
  narrow.tcp_tw_reuse = 0;
  input.namespaces.push_back(netns_scrape(
      kOtherNetns,
      {connection("127.0.0.1:40000", "127.0.0.1:6379", TcpState::kEstablished, kOtherNetns),
       time_wait("127.0.0.1:40001", "127.0.0.1:6379", kOtherNetns)},
      narrow));
  AgentCounters& c = input.counters;
  c.bind_failures[{"tcp", "bind", "time_wait", "nginx"}] = 3;
  c.bind_failures[{"tcp", "listen", "port_in_use", "other"}] = 1;
  c.connect_failures[{"tcp", "EADDRNOTAVAIL", "ephemeral_exhausted", "java"}] = 12;
  c.state_transitions[{"ESTABLISHED", "FIN_WAIT1"}] = 500;
  c.state_transitions[{"FIN_WAIT2", "CLOSE"}] = 480;
  c.events_by_type["bind"] = 10;
  c.events_by_type["state"] = 2000;
  c.events_lost = 2;
  c.reconcile_corrections["time_wait_stale"] = 4;
  c.evictions["time_wait"] = 1;
  input.tracked_sockets = 605;
  input.last_scrape_duration_seconds = 0.0042;
  input.version = "0.1.0";
  input.revision = "8a9324f5169e";
  input.compiler = "GNU 12.2.0";
  input.kernel = "6.1.0-18-amd64";
  input.process = ProcessStats{.cpu_seconds = 12.5,
                               .resident_bytes = 30e6,
                               .virtual_bytes = 290e6,
                               .virtual_max_bytes = 1.8446744073709552e19,
                               .open_fds = 55,
                               .max_fds = 1024,
                               .start_time_seconds = 1.7964e9};
  input.bpf_programs = {{"sys_exit_bind", 1'500'000'000, 3'000'000},
                        {"inet_sock_set_state", 250, 2}};
  input.bpf_stats_counting = true;
  return input;
}

// ---------------------------------------------------------------------------------------------

TEST(CollectorTest, EveryFamilyOfTheDesignWithItsType) {
  const auto families = collect(ScrapeInput{});
  const std::vector<std::pair<std::string, MetricType>> expected = {
      {"portlens_bind_failures_total", MetricType::Counter},
      {"portlens_connect_failures_total", MetricType::Counter},
      {"portlens_tcp_sockets", MetricType::Gauge},
      {"portlens_time_wait_sockets", MetricType::Gauge},
      {"portlens_time_wait_sockets_by_remote", MetricType::Gauge},
      {"portlens_ephemeral_port_range_size", MetricType::Gauge},
      {"portlens_ephemeral_ports_in_use", MetricType::Gauge},
      {"portlens_ephemeral_port_utilization_ratio", MetricType::Gauge},
      {"portlens_ephemeral_port_utilization_max_ratio", MetricType::Gauge},
      {"portlens_ephemeral_port_utilization_peak_ratio", MetricType::Gauge},
      {"portlens_ephemeral_ports_capacity", MetricType::Gauge},
      {"portlens_ephemeral_ports_time_wait_reusable", MetricType::Gauge},
      {"portlens_tcp_state_transitions_total", MetricType::Counter},
      {"portlens_events_total", MetricType::Counter},
      {"portlens_events_lost_total", MetricType::Counter},
      {"portlens_events_malformed_total", MetricType::Counter},
      {"portlens_event_log_write_failures_total", MetricType::Counter},
      {"portlens_event_log_lines_dropped_total", MetricType::Counter},
      {"portlens_owner_map_drops_total", MetricType::Counter},
      {"portlens_diagnoses_total", MetricType::Counter},
      {"portlens_diagnosis_queue_length", MetricType::Gauge},
      {"portlens_reconcile_corrections_total", MetricType::Counter},
      {"portlens_evictions_total", MetricType::Counter},
      {"portlens_time_wait_refused_total", MetricType::Counter},
      {"portlens_network_namespaces_folded", MetricType::Gauge},
      {"portlens_tracked_sockets", MetricType::Gauge},
      {"portlens_scrape_duration_seconds", MetricType::Gauge},
      {"portlens_tcp_closes_total", MetricType::Counter},
      {"portlens_tcp_self_connects_total", MetricType::Counter},
      {"portlens_close_wait_sockets", MetricType::Gauge},
      {"portlens_close_wait_oldest_seconds", MetricType::Gauge},
      {"portlens_listen_queue_length", MetricType::Gauge},
      {"portlens_listen_queue_limit", MetricType::Gauge},
      {"portlens_listen_overflows_total", MetricType::Counter},
      {"portlens_build_info", MetricType::Gauge},
      {"portlens_kernel_info", MetricType::Gauge},
      {"portlens_bpf_stats_enabled", MetricType::Gauge},
  };
  ASSERT_EQ(families.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(families[i].name, expected[i].first);
    EXPECT_EQ(families[i].type, expected[i].second) << expected[i].first;
    EXPECT_FALSE(families[i].help.empty()) << expected[i].first;
    const bool total = families[i].name.ends_with("_total");
    EXPECT_EQ(total, families[i].type == MetricType::Counter) << families[i].name;
  }
}

TEST(CollectorTest, EmptyInputHasZerosWhereTheyMeanSomething) {
  const auto families = collect(ScrapeInput{});
  EXPECT_TRUE(series(families, "portlens_tcp_sockets").empty());
  EXPECT_TRUE(series(families, "portlens_bind_failures_total").empty());
  EXPECT_TRUE(series(families, "portlens_ephemeral_port_utilization_max_ratio").empty());
  EXPECT_EQ(series(families, "portlens_events_lost_total"), (Series{{{}, 0}}));
  EXPECT_EQ(series(families, "portlens_tracked_sockets"), (Series{{{}, 0}}));
  EXPECT_EQ(series(families, "portlens_scrape_duration_seconds"), (Series{{{}, 0}}));
  EXPECT_EQ(series(families, "portlens_build_info"),
            (Series{{{{"version", ""}, {"revision", ""}, {"compiler", ""}}, 1}}));
  EXPECT_EQ(series(families, "portlens_kernel_info"), (Series{{{{"release", ""}}, 1}}));
  EXPECT_EQ(series(families, "portlens_bpf_stats_enabled"), (Series{{{}, 0}}));
  // The documented kinds and tables have a 0 series before their first increment.
  EXPECT_EQ(series(families, "portlens_evictions_total"),
            (Series{{{{"table", "sockets"}}, 0}, {{{"table", "time_wait"}}, 0}}));
  EXPECT_EQ(series(families, "portlens_reconcile_corrections_total"),
            (Series{{{{"kind", "socket_missing"}}, 0},
                    {{{"kind", "socket_stale"}}, 0},
                    {{{"kind", "socket_state"}}, 0},
                    {{{"kind", "time_wait_missing"}}, 0},
                    {{{"kind", "time_wait_stale"}}, 0}}));
}

TEST(CollectorTest, EmptyNamespaceHasZeroGaugesAndNoPerPortSeries) {
  ScrapeInput input;
  input.namespaces.push_back(netns_scrape(kNetns, {}));
  const auto families = collect(input);
  EXPECT_EQ(series(families, "portlens_tcp_sockets"), states(kNetnsLabel, {}));
  EXPECT_EQ(series(families, "portlens_ephemeral_port_range_size"),
            (Series{{{{"netns", kNetnsLabel}}, 28232}}));
  EXPECT_EQ(series(families, "portlens_ephemeral_port_utilization_max_ratio"),
            (Series{{{{"netns", kNetnsLabel}}, 0}}));
  for (const char* name :
       {"portlens_time_wait_sockets", "portlens_time_wait_sockets_by_remote",
        "portlens_ephemeral_ports_in_use", "portlens_ephemeral_port_utilization_ratio",
        "portlens_ephemeral_ports_capacity", "portlens_ephemeral_ports_time_wait_reusable"}) {
    EXPECT_TRUE(series(families, name).empty()) << name;
  }
}

TEST(CollectorTest, TcpSocketsByStateAsSsShowsThem) {
  SocketEntry bound_only = listener("0.0.0.0:9000");
  bound_only.state = TcpState::kClose;
  SocketEntry bound_inactive = listener("0.0.0.0:9001");
  bound_inactive.state = TcpState::kBoundInactive;
  SocketEntry bound_no_state = listener("0.0.0.0:9002");  // the tracker before any state change
  bound_no_state.state.reset();
  SocketEntry fin_wait2_minisocket = time_wait("10.0.0.1:40001", "10.0.0.9:80");
  fin_wait2_minisocket.time_wait_substate = TcpState::kFinWait2;
  SocketEntry request = connection("10.0.0.1:8080", "10.0.0.7:51000", TcpState::kNewSynRecv);
  SocketEntry udp = listener("0.0.0.0:53");
  udp.proto = Proto::kUdp;
  udp.state.reset();
  SocketEntry mptcp = listener("0.0.0.0:7000");
  mptcp.proto = Proto::kMptcp;

  ScrapeInput input;
  input.namespaces.push_back(netns_scrape(
      kNetns,
      {listener("0.0.0.0:8080"), listener("[::]:8080"), bound_only, bound_inactive, bound_no_state,
       connection("10.0.0.1:40000", "10.0.0.9:80"),
       connection("10.0.0.1:8080", "10.0.0.7:50000", TcpState::kCloseWait),
       time_wait("10.0.0.1:40002", "10.0.0.9:80"), fin_wait2_minisocket, request, udp, mptcp}));
  input.namespaces.push_back(
      netns_scrape(kOtherNetns, {time_wait("127.0.0.1:40000", "127.0.0.1:80", kOtherNetns)}));
  const auto families = collect(input);

  Series expected = states(kNetnsLabel, {{"LISTEN", 2},
                                         {"CLOSE", 3},
                                         {"ESTABLISHED", 1},
                                         {"CLOSE_WAIT", 1},
                                         {"TIME_WAIT", 1},
                                         {"FIN_WAIT2", 1},
                                         {"SYN_RECV", 1}});
  expected.merge(states(kOtherNetnsLabel, {{"TIME_WAIT", 1}}));
  EXPECT_EQ(series(families, "portlens_tcp_sockets"), expected);
  // The FIN_WAIT2 minisocket is not TIME_WAIT for `ss state time-wait`, so not here either.
  EXPECT_EQ(series(families, "portlens_time_wait_sockets"),
            (Series{{{{"netns", kNetnsLabel}, {"local_port", "40002"}}, 1},
                    {{{"netns", kOtherNetnsLabel}, {"local_port", "40000"}}, 1}}));
}

// TIME_WAIT by local port and by remote: counts 5, 3, 3, 1 on ports, 4, 3, 3, 1, 1 on remotes.
ScrapeInput time_wait_input() {
  std::vector<SocketEntry> sockets;
  const std::vector<std::string> remotes = {"10.0.0.10:80", "10.0.0.2:80", "[::ffff:10.0.0.3]:80",
                                            "10.0.0.4:80", "[2001:db8::5]:80"};
  const auto add = [&](const std::string& local_port, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const bool v6 = remotes[i].starts_with("[2001");
      const std::string local = v6 ? "[2001:db8::1]:" : "10.0.0.1:";
      sockets.push_back(time_wait(local + local_port, remotes[i]));
    }
  };
  add("40000", 5);
  add("40001", 3);
  add("39999", 3);
  add("40002", 1);
  sockets.push_back(connection("10.0.0.1:40100", "10.0.0.10:80"));  // not TIME_WAIT
  ScrapeInput input;
  input.namespaces.push_back(netns_scrape(kNetns, sockets));
  return input;
}

TEST(CollectorTest, TimeWaitTopKWithOtherAndTiesByLabel) {
  const auto families = collect(time_wait_input(), 2);
  const auto port = [](const std::string& p) {
    return LabelMap{{"netns", kNetnsLabel}, {"local_port", p}};
  };
  // 40001 and 39999 tie at 3: the lower port stays.
  const Series by_port = series(families, "portlens_time_wait_sockets");
  EXPECT_EQ(by_port, (Series{{port("40000"), 5}, {port("39999"), 3}, {port("other"), 4}}));
  // 10.0.0.2 and the v4-mapped 10.0.0.3 tie at 3: the lower address stays; labels unmapped.
  const Series by_remote = series(families, "portlens_time_wait_sockets_by_remote");
  EXPECT_EQ(by_remote, (Series{{remote(kNetnsLabel, "10.0.0.10", "80"), 4},
                               {remote(kNetnsLabel, "10.0.0.2", "80"), 3},
                               {remote(kNetnsLabel, "other", "other"), 5}}));
  const double total =
      series(families, "portlens_tcp_sockets").at({{"netns", kNetnsLabel}, {"state", "TIME_WAIT"}});
  EXPECT_EQ(total, 12);
  EXPECT_EQ(sum(by_port), total);
  EXPECT_EQ(sum(by_remote), total);
}

TEST(CollectorTest, TimeWaitWithoutCutHasNoOther) {
  const auto families = collect(time_wait_input(), 5);
  const Series by_remote = series(families, "portlens_time_wait_sockets_by_remote");
  EXPECT_EQ(by_remote, (Series{{remote(kNetnsLabel, "10.0.0.10", "80"), 4},
                               {remote(kNetnsLabel, "10.0.0.2", "80"), 3},
                               {remote(kNetnsLabel, "10.0.0.3", "80"), 3},
                               {remote(kNetnsLabel, "10.0.0.4", "80"), 1},
                               {remote(kNetnsLabel, "2001:db8::5", "80"), 1}}));
  EXPECT_EQ(series(families, "portlens_time_wait_sockets").size(), 4U);
}

// A narrowed range 40000..40009 with 40008 reserved and 40009 listened on: capacity 8.
// Toward 10.0.0.9:5432 all 8 ports; toward 10.0.0.8:80 five (two of them TIME_WAIT, one through
// a v4-mapped IPv6 socket); toward [2001:db8::1]:443 one. tcp_tw_reuse=0: nothing reusable.
ScrapeInput ephemeral_input() {
  std::vector<SocketEntry> sockets = {listener("0.0.0.0:40009"), listener("0.0.0.0:8080")};
  for (int port = 40000; port < 40008; ++port) {
    sockets.push_back(connection("10.0.0.1:" + std::to_string(port), "10.0.0.9:5432"));
  }
  sockets.push_back(connection("10.0.0.1:40000", "10.0.0.8:80"));
  sockets.push_back(connection("10.0.0.1:40001", "10.0.0.8:80"));
  sockets.push_back(time_wait("10.0.0.1:40002", "10.0.0.8:80"));
  sockets.push_back(time_wait("10.0.0.1:40003", "10.0.0.8:80"));
  sockets.push_back(connection("[::ffff:10.0.0.1]:40004", "[::ffff:10.0.0.8]:80"));
  sockets.push_back(connection("[2001:db8::2]:40000", "[2001:db8::1]:443"));
  // Accepted by the listener on 8080: not drawn from the range, not a destination.
  sockets.push_back(connection("10.0.0.1:8080", "10.0.0.50:43210"));
  NetnsPortConfig config;
  config.port_range_lo = 40000;
  config.port_range_hi = 40009;
  config.reserved_ports.set(40008);
  config.tcp_tw_reuse = 0;
  ScrapeInput input;
  input.namespaces.push_back(netns_scrape(kNetns, sockets, config));
  return input;
}

TEST(CollectorTest, EphemeralAccountingPerDestinationUsesTheNamespaceConfig) {
  const auto families = collect(ephemeral_input());
  const LabelMap db = remote(kNetnsLabel, "10.0.0.9", "5432");
  const LabelMap web = remote(kNetnsLabel, "10.0.0.8", "80");
  const LabelMap v6 = remote(kNetnsLabel, "2001:db8::1", "443");
  EXPECT_EQ(series(families, "portlens_ephemeral_port_range_size"),
            (Series{{{{"netns", kNetnsLabel}}, 10}}));
  EXPECT_EQ(series(families, "portlens_ephemeral_ports_in_use"),
            (Series{{db, 8}, {web, 5}, {v6, 1}}));
  EXPECT_EQ(series(families, "portlens_ephemeral_ports_capacity"),
            (Series{{db, 8}, {web, 8}, {v6, 8}}));
  EXPECT_EQ(series(families, "portlens_ephemeral_ports_time_wait_reusable"),
            (Series{{db, 0}, {web, 0}, {v6, 0}}));
  EXPECT_EQ(series(families, "portlens_ephemeral_port_utilization_ratio"),
            (Series{{db, 1.0}, {web, 0.625}, {v6, 0.125}}));
  EXPECT_EQ(series(families, "portlens_ephemeral_port_utilization_max_ratio"),
            (Series{{{{"netns", kNetnsLabel}}, 1.0}}));
}

TEST(CollectorTest, EphemeralTopKCutsEveryPerDestinationFamilyAlike) {
  const auto families = collect(ephemeral_input(), 1);
  const LabelMap db = remote(kNetnsLabel, "10.0.0.9", "5432");
  const LabelMap other = remote(kNetnsLabel, "other", "other");
  EXPECT_EQ(series(families, "portlens_ephemeral_ports_in_use"), (Series{{db, 8}, {other, 6}}));
  EXPECT_EQ(series(families, "portlens_ephemeral_ports_time_wait_reusable"),
            (Series{{db, 0}, {other, 0}}));
  // Neither a ratio nor a capacity adds up across destinations: no `other` for them.
  EXPECT_EQ(series(families, "portlens_ephemeral_port_utilization_ratio"), (Series{{db, 1.0}}));
  EXPECT_EQ(series(families, "portlens_ephemeral_ports_capacity"), (Series{{db, 8}}));
}

TEST(CollectorTest, MaxRatioCoversDestinationsOutsideTheTopK) {
  // top_k 0: every destination is cut, the max still sees the exhausted one.
  const auto families = collect(ephemeral_input(), 0);
  EXPECT_EQ(series(families, "portlens_ephemeral_ports_in_use"),
            (Series{{remote(kNetnsLabel, "other", "other"), 14}}));
  EXPECT_TRUE(series(families, "portlens_ephemeral_port_utilization_ratio").empty());
  EXPECT_EQ(series(families, "portlens_ephemeral_port_utilization_max_ratio"),
            (Series{{{{"netns", kNetnsLabel}}, 1.0}}));
}

TEST(CollectorTest, SeveralSourceAddressesTowardOneDestination) {
  // tcp_tw_reuse=1 on a 4-port range: from 10.0.0.1 one connection and two reusable
  // TIME_WAIT (utilization 1 - 3/4), from 10.0.0.2 all four ports (utilization 1).
  NetnsPortConfig config;
  config.port_range_lo = 50000;
  config.port_range_hi = 50003;
  config.tcp_tw_reuse = 1;
  std::vector<SocketEntry> sockets = {
      connection("10.0.0.1:50000", "10.0.0.7:6379"),
      time_wait("10.0.0.1:50001", "10.0.0.7:6379"),
      time_wait("10.0.0.1:50002", "10.0.0.7:6379"),
  };
  for (int port = 50000; port < 50004; ++port) {
    sockets.push_back(connection("10.0.0.2:" + std::to_string(port), "10.0.0.7:6379"));
  }
  ScrapeInput one_source;
  one_source.namespaces.push_back(
      netns_scrape(kNetns, {sockets.begin(), sockets.begin() + 3}, config));
  const LabelMap redis = remote(kNetnsLabel, "10.0.0.7", "6379");
  const auto first = collect(one_source);
  EXPECT_EQ(series(first, "portlens_ephemeral_ports_in_use"), (Series{{redis, 3}}));
  EXPECT_EQ(series(first, "portlens_ephemeral_ports_capacity"), (Series{{redis, 4}}));
  EXPECT_EQ(series(first, "portlens_ephemeral_ports_time_wait_reusable"), (Series{{redis, 2}}));
  EXPECT_EQ(series(first, "portlens_ephemeral_port_utilization_ratio"), (Series{{redis, 0.25}}));

  ScrapeInput two_sources;
  two_sources.namespaces.push_back(netns_scrape(kNetns, sockets, config));
  const auto both = collect(two_sources);
  // One series per remote endpoint: counts add up, the ratio is the worst source's.
  EXPECT_EQ(series(both, "portlens_ephemeral_ports_in_use"), (Series{{redis, 7}}));
  EXPECT_EQ(series(both, "portlens_ephemeral_ports_capacity"), (Series{{redis, 8}}));
  EXPECT_EQ(series(both, "portlens_ephemeral_ports_time_wait_reusable"), (Series{{redis, 2}}));
  EXPECT_EQ(series(both, "portlens_ephemeral_port_utilization_ratio"), (Series{{redis, 1.0}}));
  EXPECT_EQ(series(both, "portlens_ephemeral_port_utilization_max_ratio"),
            (Series{{{{"netns", kNetnsLabel}}, 1.0}}));
}

TEST(CollectorTest, CountersPassThroughWithTheirLabels) {
  const ScrapeInput input = realistic_input();
  const auto families = collect(input);
  EXPECT_EQ(
      series(families, "portlens_bind_failures_total"),
      (Series{
          {{{"proto", "tcp"}, {"syscall", "bind"}, {"cause", "time_wait"}, {"comm", "nginx"}}, 3},
          {{{"proto", "tcp"}, {"syscall", "listen"}, {"cause", "port_in_use"}, {"comm", "other"}},
           1}}));
  EXPECT_EQ(series(families, "portlens_connect_failures_total"),
            (Series{{{{"proto", "tcp"},
                      {"errno", "EADDRNOTAVAIL"},
                      {"cause", "ephemeral_exhausted"},
                      {"comm", "java"}},
                     12}}));
  EXPECT_EQ(series(families, "portlens_tcp_state_transitions_total"),
            (Series{{{{"from", "ESTABLISHED"}, {"to", "FIN_WAIT1"}}, 500},
                    {{{"from", "FIN_WAIT2"}, {"to", "CLOSE"}}, 480}}));
  EXPECT_EQ(series(families, "portlens_events_total"),
            (Series{{{{"type", "bind"}}, 10}, {{{"type", "state"}}, 2000}}));
  EXPECT_EQ(series(families, "portlens_events_lost_total"), (Series{{{}, 2}}));
  EXPECT_EQ(
      series(families, "portlens_reconcile_corrections_total").at({{"kind", "time_wait_stale"}}),
      4);
  EXPECT_EQ(series(families, "portlens_evictions_total"),
            (Series{{{{"table", "sockets"}}, 0}, {{{"table", "time_wait"}}, 1}}));
  EXPECT_EQ(series(families, "portlens_tracked_sockets"), (Series{{{}, 605}}));
  EXPECT_EQ(series(families, "portlens_scrape_duration_seconds"), (Series{{{}, 0.0042}}));
  EXPECT_EQ(
      series(families, "portlens_build_info"),
      (Series{
          {{{"version", "0.1.0"}, {"revision", "8a9324f5169e"}, {"compiler", "GNU 12.2.0"}}, 1}}));
  EXPECT_EQ(series(families, "portlens_kernel_info"),
            (Series{{{{"release", "6.1.0-18-amd64"}}, 1}}));
}

// Accept queues by listening address: SO_REUSEPORT listeners of one address are one series (their
// queues and limits summed), the fullest top_k keep their own, the rest sum under "other"; the
// namespace's overflow counter is passed through.
TEST(CollectorTest, ListenQueuesByAddressFullestFirstWithOther) {
  NetnsScrape ns = netns_scrape(kNetns, {});
  const auto queue = [](const std::string& local, std::uint32_t length, std::uint32_t limit) {
    ListenQueue q;
    q.netns = kNetns;
    q.local = *Endpoint::parse(local);
    q.length = length;
    q.limit = limit;
    return q;
  };
  ns.listen_queues = {queue("0.0.0.0:80", 3, 128), queue("0.0.0.0:80", 5, 128),  // reuseport
                      queue("127.0.0.1:6379", 9, 10), queue("[::]:443", 0, 4096),
                      queue("10.0.0.1:8080", 1, 2)};
  ns.listen_overflows = 42;
  ScrapeInput input;
  input.namespaces.push_back(ns);
  const auto families = collect(input, 2);
  const std::string netns = std::to_string(kNetns);
  const auto labels = [&](const std::string& addr, const std::string& port) {
    return LabelMap{{"netns", netns}, {"local_addr", addr}, {"local_port", port}};
  };
  // 9/10 and 1/2 are the fullest; 8/256 (the summed reuseport pair) and 0/4096 go to other.
  EXPECT_EQ(series(families, "portlens_listen_queue_length"),
            (Series{{labels("127.0.0.1", "6379"), 9},
                    {labels("10.0.0.1", "8080"), 1},
                    {labels("other", "other"), 8}}));
  EXPECT_EQ(series(families, "portlens_listen_queue_limit"),
            (Series{{labels("127.0.0.1", "6379"), 10},
                    {labels("10.0.0.1", "8080"), 2},
                    {labels("other", "other"), 128 + 128 + 4096}}));
  EXPECT_EQ(series(families, "portlens_listen_overflows_total"),
            (Series{{{{"netns", netns}}, 42}}));
  // With room for all, the reuseport pair is one series of 8 of 256.
  const auto all = collect(input, 20);
  EXPECT_EQ(series(all, "portlens_listen_queue_length").at(labels("0.0.0.0", "80")), 8);
  EXPECT_EQ(series(all, "portlens_listen_queue_limit").at(labels("0.0.0.0", "80")), 256);
  EXPECT_EQ(series(all, "portlens_listen_queue_length").size(), 4U);
}

// The peak is the current maximum, or what the agent saw in between when that was higher (a
// connect() that found no port), per namespace and for the folded ones under "other".
TEST(CollectorTest, UtilizationPeakIsAtLeastTheMaximumAndKeepsABurst) {
  ScrapeInput input;
  NetnsScrape quiet = netns_scrape(kNetns, {});
  quiet.utilization_peak_seen = 1.0;  // exhausted and gone before the scrape
  input.namespaces.push_back(quiet);
  NetnsPortConfig narrow;
  narrow.port_range_lo = 40000;
  narrow.port_range_hi = 40003;
  NetnsScrape busy = netns_scrape(kNetns + 1, {time_wait("10.0.0.1:40000", "10.0.0.9:80")}, narrow);
  busy.utilization_peak_seen = 0.1;  // lower than now: now wins
  input.namespaces.push_back(busy);
  const auto families = collect(input);
  const auto peak = series(families, "portlens_ephemeral_port_utilization_peak_ratio");
  const auto max = series(families, "portlens_ephemeral_port_utilization_max_ratio");
  const LabelMap quiet_ns = {{"netns", std::to_string(kNetns)}};
  const LabelMap busy_ns = {{"netns", std::to_string(kNetns + 1)}};
  EXPECT_EQ(max.at(quiet_ns), 0);
  EXPECT_EQ(peak.at(quiet_ns), 1.0);
  EXPECT_GT(max.at(busy_ns), 0.1);
  EXPECT_EQ(peak.at(busy_ns), max.at(busy_ns));
  // Folded: the highest of the folded namespaces' peaks.
  const auto folded = PortlensCollector::build(input, kDefaultTopK, 1);
  EXPECT_EQ(
      series(folded, "portlens_ephemeral_port_utilization_peak_ratio").at({{"netns", "other"}}),
      1.0);
}

// Closes by kind: every kind has a series once the namespace has ended a connection.
TEST(CollectorTest, ClosesByKindPerNamespace) {
  ScrapeInput input;
  NetnsScrape ns = netns_scrape(kNetns, {});
  ns.closes = CloseCounts{5, 4, 3, 2, 1};
  input.namespaces.push_back(ns);
  input.namespaces.push_back(netns_scrape(kNetns + 1, {}));  // none ended: no series
  const auto closes = series(collect(input), "portlens_tcp_closes_total");
  const std::string netns = std::to_string(kNetns);
  EXPECT_EQ(closes, (Series{{{{"netns", netns}, {"kind", "fin_time_wait"}}, 5},
                            {{{"netns", netns}, {"kind", "fin_no_time_wait"}}, 4},
                            {{{"netns", netns}, {"kind", "rst_sent"}}, 3},
                            {{{"netns", netns}, {"kind", "rst_received"}}, 2},
                            {{{"netns", netns}, {"kind", "other"}}, 1}}));
}

// CLOSE_WAIT by owner and port: the largest groups keep their series, the rest sum (and keep the
// oldest age) under "other"; an owner not known is "unknown".
TEST(CollectorTest, CloseWaitByOwnerAndPortWithOther) {
  ScrapeInput input;
  NetnsScrape ns = netns_scrape(kNetns, {});
  constexpr std::uint64_t kNow = 100 * 1'000'000'000ULL;
  ns.now_ns = kNow;
  ns.close_wait = {{"java", 8080, 20, kNow - 30'000'000'000ULL},
                   {"", 9000, 5, kNow - 1'000'000'000ULL},
                   {"redis", 6379, 1, kNow - 90'000'000'000ULL}};
  input.namespaces.push_back(ns);
  const auto families = collect(input, 2);
  const std::string netns = std::to_string(kNetns);
  const auto at = [&](const std::string& comm, const std::string& port) {
    return LabelMap{{"netns", netns}, {"comm", comm}, {"local_port", port}};
  };
  EXPECT_EQ(
      series(families, "portlens_close_wait_sockets"),
      (Series{{at("java", "8080"), 20}, {at("unknown", "9000"), 5}, {at("other", "other"), 1}}));
  EXPECT_EQ(
      series(families, "portlens_close_wait_oldest_seconds"),
      (Series{{at("java", "8080"), 30}, {at("unknown", "9000"), 1}, {at("other", "other"), 90}}));
}

TEST(CollectorTest, SelfMetricsInPrometheusStandardNamesAndUnits) {
  const auto families = collect(realistic_input());
  const auto find = [&families](const std::string& name) -> const MetricFamily* {
    for (const auto& f : families) {
      if (f.name == name) {
        return &f;
      }
    }
    return nullptr;
  };
  for (const auto& [name, type] : std::vector<std::pair<std::string, MetricType>>{
           {"process_cpu_seconds_total", MetricType::Counter},
           {"process_open_fds", MetricType::Gauge},
           {"process_max_fds", MetricType::Gauge},
           {"process_virtual_memory_bytes", MetricType::Gauge},
           {"process_virtual_memory_max_bytes", MetricType::Gauge},
           {"process_resident_memory_bytes", MetricType::Gauge},
           {"process_start_time_seconds", MetricType::Gauge},
           {"portlens_bpf_program_run_seconds_total", MetricType::Counter},
           {"portlens_bpf_program_run_count_total", MetricType::Counter}}) {
    const MetricFamily* f = find(name);
    ASSERT_NE(f, nullptr) << name;
    EXPECT_EQ(f->type, type) << name;
  }
  EXPECT_EQ(series(families, "process_cpu_seconds_total"), (Series{{{}, 12.5}}));
  EXPECT_EQ(series(families, "process_resident_memory_bytes"), (Series{{{}, 30e6}}));
  EXPECT_EQ(series(families, "process_open_fds"), (Series{{{}, 55}}));
  EXPECT_EQ(series(families, "process_max_fds"), (Series{{{}, 1024}}));
  EXPECT_EQ(series(families, "process_start_time_seconds"), (Series{{{}, 1.7964e9}}));
  // Nanoseconds become seconds; counts stay counts.
  EXPECT_EQ(series(families, "portlens_bpf_program_run_seconds_total"),
            (Series{{{{"program", "sys_exit_bind"}}, 1.5},
                    {{{"program", "inet_sock_set_state"}}, 250e-9}}));
  EXPECT_EQ(
      series(families, "portlens_bpf_program_run_count_total"),
      (Series{{{{"program", "sys_exit_bind"}}, 3e6}, {{{"program", "inet_sock_set_state"}}, 2}}));
  EXPECT_EQ(series(families, "portlens_bpf_stats_enabled"), (Series{{{}, 1}}));
  // Without /proc or programs the families are absent, not zero.
  const auto bare = collect(ScrapeInput{});
  for (const auto& f : bare) {
    EXPECT_FALSE(f.name.starts_with("process_")) << f.name;
    EXPECT_FALSE(f.name.starts_with("portlens_bpf_program_")) << f.name;
  }
}

TEST(CollectorTest, CommsThatAreNotUtf8StayDistinctSeriesOrMerge) {
  ScrapeInput input;
  input.counters.bind_failures[{"tcp", "bind", "time_wait", "caf\xC3\xA9"}] = 1;  // UTF-8
  input.counters.bind_failures[{"tcp", "bind", "time_wait", "a\xFF"}] = 2;
  input.counters.bind_failures[{"tcp", "bind", "time_wait", "a\xFE"}] = 3;  // same label value
  const Series got = series(collect(input), "portlens_bind_failures_total");
  const auto key = [](const std::string& comm) {
    return LabelMap{{"proto", "tcp"}, {"syscall", "bind"}, {"cause", "time_wait"}, {"comm", comm}};
  };
  EXPECT_EQ(got, (Series{{key("caf\xC3\xA9"), 1}, {key("a\xEF\xBF\xBD"), 5}}));
}

TEST(CollectorTest, CollectCallsTheSourceOncePerScrape) {
  int calls = 0;
  const PortlensCollector collector([&calls] {
    ++calls;
    return ScrapeInput{};
  });
  (void)collector.Collect();
  (void)collector.Collect();
  EXPECT_EQ(calls, 2);
}

// Many ports and destinations, cut at k: every per-port and per-destination family sums to the
// uncut total, and the output does not depend on the order of the sockets.
TEST(CollectorTest, SumsAddUpAndOutputIsDeterministic) {
  std::mt19937 rng(7);
  std::vector<SocketEntry> sockets;
  for (int i = 0; i < 2000; ++i) {
    const std::string local =
        "10.0.0." + std::to_string(1 + rng() % 2) + ":" + std::to_string(32768 + rng() % 28232);
    const std::string remote_ep = "10.9." + std::to_string(rng() % 4) + "." +
                                  std::to_string(rng() % 40) + ":" +
                                  std::to_string(rng() % 2 == 0 ? 443 : 80);
    sockets.push_back(rng() % 4 == 0 ? connection(local, remote_ep) : time_wait(local, remote_ep));
  }
  ScrapeInput input;
  input.namespaces.push_back(netns_scrape(kNetns, sockets));
  const auto families = collect(input, 5);

  const double time_wait_total =
      series(families, "portlens_tcp_sockets").at({{"netns", kNetnsLabel}, {"state", "TIME_WAIT"}});
  const Series by_port = series(families, "portlens_time_wait_sockets");
  const Series by_remote = series(families, "portlens_time_wait_sockets_by_remote");
  EXPECT_EQ(by_port.size(), 6U);
  EXPECT_EQ(by_remote.size(), 6U);
  EXPECT_EQ(sum(by_port), time_wait_total);
  EXPECT_EQ(sum(by_remote), time_wait_total);

  SocketTable table;
  table.sockets = sockets;
  const auto accounts = account_by_destination(table);
  double in_use_total = 0;
  double reusable_total = 0;
  double max_ratio = 0;
  for (const EphemeralAccount& a : accounts) {
    in_use_total += a.in_use;
    reusable_total += a.time_wait_reusable;
    max_ratio = std::max(max_ratio, a.utilization);
  }
  ASSERT_GT(accounts.size(), 5U);
  const Series in_use = series(families, "portlens_ephemeral_ports_in_use");
  EXPECT_EQ(in_use.size(), 6U);
  EXPECT_EQ(sum(in_use), in_use_total);
  EXPECT_EQ(sum(series(families, "portlens_ephemeral_ports_time_wait_reusable")), reusable_total);
  EXPECT_EQ(series(families, "portlens_ephemeral_port_utilization_ratio").size(), 5U);
  EXPECT_EQ(series(families, "portlens_ephemeral_port_utilization_max_ratio")
                .at({{"netns", kNetnsLabel}}),
            max_ratio);

  std::shuffle(input.namespaces[0].sockets.begin(), input.namespaces[0].sockets.end(), rng);
  EXPECT_EQ(render_text(collect(input, 5)), render_text(families));
}

// The agent once counted every event straight into these string-keyed maps; EventTally counts
// by number and names at scrape time. The same maps, odd states included.
TEST(EventTallyTest, NamesWhatThePerEventMapsCounted) {
  std::mt19937 rng(11);
  AgentCounters expected;
  EventTally tally;
  for (int i = 0; i < 20000; ++i) {
    Event e;
    e.type = static_cast<EventType>(1 + rng() % 6);
    e.old_state = rng() % 50 == 0 ? static_cast<int>(rng() % 256) : static_cast<int>(rng() % 14);
    e.new_state = rng() % 50 == 0 ? static_cast<int>(rng() % 256) : static_cast<int>(rng() % 14);
    ++expected.events_by_type[std::string(to_string(e.type))];
    if (e.type == EventType::kState) {
      ++expected.state_transitions[{state_name(e.old_state), state_name(e.new_state)}];
    }
    tally.count(e);
  }
  AgentCounters named;
  named.events_lost = 3;
  tally.name_into(named);
  EXPECT_EQ(named.events_by_type, expected.events_by_type);
  EXPECT_EQ(named.state_transitions, expected.state_transitions);
  EXPECT_EQ(named.events_lost, 3U);
  AgentCounters empty;
  EventTally{}.name_into(empty);
  EXPECT_TRUE(empty.events_by_type.empty());
  EXPECT_TRUE(empty.state_transitions.empty());
}

// Namespaces beyond the budget are summed under netns="other": however many a user creates,
// the series stay bounded, and what adds up still adds up to what the kernel holds.
TEST(CollectorTest, NamespacesBeyondTheBudgetAreFoldedIntoOtherWithExactSums) {
  ScrapeInput input;
  std::uint64_t all_time_wait = 0;
  std::uint64_t all_sockets = 0;
  for (std::uint64_t n = 0; n < 200; ++n) {
    const std::uint64_t inode = 4026540000 + n;
    std::vector<SocketEntry> sockets = {listener("0.0.0.0:80", inode)};
    // Namespace n holds n % 7 TIME_WAITs toward its own destination.
    for (std::uint64_t i = 0; i < n % 7; ++i) {
      sockets.push_back(time_wait("10.0.0.1:" + std::to_string(40000 + i),
                                  "10.1.0." + std::to_string(1 + n % 200) + ":5432", inode));
    }
    all_time_wait += n % 7;
    all_sockets += sockets.size();
    input.namespaces.push_back(netns_scrape(inode, sockets));
  }
  const auto families = PortlensCollector::build(input, 5, 3);
  const Series sockets = series(families, "portlens_tcp_sockets");
  std::set<std::string> namespaces;
  for (const auto& [labels, value] : sockets) {
    namespaces.insert(labels.at("netns"));
  }
  // The three with the most sockets (6 TIME_WAITs: n = 6, 13, 20 by inode), and other.
  EXPECT_EQ(namespaces, (std::set<std::string>{"4026540006", "4026540013", "4026540020", "other"}));
  EXPECT_EQ(series(families, "portlens_network_namespaces_folded").begin()->second, 197);
  EXPECT_EQ(sum(sockets), static_cast<double>(all_sockets));
  EXPECT_EQ(sum(series(families, "portlens_time_wait_sockets")),
            static_cast<double>(all_time_wait));
  EXPECT_EQ(sum(series(families, "portlens_time_wait_sockets_by_remote")),
            static_cast<double>(all_time_wait));
  EXPECT_EQ(sum(series(families, "portlens_ephemeral_ports_in_use")),
            static_cast<double>(all_time_wait));
  EXPECT_EQ(sockets.at({{"netns", "other"}, {"state", "LISTEN"}}), 197);
  // Every family together stays far below what 200 namespaces would have had.
  std::size_t total = 0;
  for (const auto& f : families) {
    total += f.metric.size();
  }
  EXPECT_LT(total, 200U);
  // Without a budget problem nothing is folded.
  const auto few = PortlensCollector::build(input, 5, 1000);
  EXPECT_EQ(series(few, "portlens_network_namespaces_folded").begin()->second, 0);
  EXPECT_EQ(sum(series(few, "portlens_tcp_sockets")), static_cast<double>(all_sockets));
}

TEST(CollectorTest, RenderTextIsTheTextExposition) {
  ScrapeInput input;
  input.namespaces.push_back(netns_scrape(kNetns, {time_wait("10.0.0.1:40000", "10.0.0.9:80")}));
  input.version = "0.1.0";
  input.revision = "abc";
  input.compiler = "GNU 12.2.0";
  input.kernel = "6.1.0";
  const std::string text = render_text(collect(input));
  EXPECT_NE(text.find("# TYPE portlens_time_wait_sockets gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("portlens_time_wait_sockets{netns=\"4026531840\",local_port=\"40000\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE portlens_events_lost_total counter\n"), std::string::npos);
  EXPECT_NE(
      text.find(
          "portlens_build_info{version=\"0.1.0\",revision=\"abc\",compiler=\"GNU 12.2.0\"} 1\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("portlens_kernel_info{release=\"6.1.0\"} 1\n"), std::string::npos);
}

TEST(CollectorPromtoolTest, PromtoolAcceptsTheExposition) {
  ASSERT_TRUE(promtool_installed())
      << "promtool not found: it is a project dependency (Debian's prometheus package); run "
         "scripts/install-deps.sh";
  ScrapeInput odd = realistic_input();
  odd.counters.bind_failures[{"tcp", "bind", "time_wait", "we\"ird\\na\nme\xFF"}] = 1;
  for (const auto& [name, input] : std::vector<std::pair<std::string, ScrapeInput>>{
           {"realistic", realistic_input()}, {"empty", ScrapeInput{}}, {"odd comm", odd}}) {
    const std::string text = render_text(collect(input, 5));
    const PromtoolResult result = promtool_check(text);
    EXPECT_EQ(result.status, 0) << name << ":\n" << result.output;
    EXPECT_EQ(result.output, "") << name << ": promtool reported problems:\n"
                                 << result.output << "\non:\n"
                                 << text;
  }
}

// The aim: a scrape under 50 ms with 200,000 TIME_WAIT sockets over 10,000 destinations
// in one netns. Figures, not pass/fail.
TEST(CollectorPerfTest, CollectWith200kTimeWaitOver10kDestinations) {
  constexpr int kDestinations = 10'000;
  constexpr int kPerDestination = 20;
  std::vector<SocketEntry> sockets;
  sockets.reserve(static_cast<std::size_t>(kDestinations) * kPerDestination + 2);
  sockets.push_back(listener("0.0.0.0:8080"));
  SocketEntry base = time_wait("10.0.0.1:32768", "10.1.0.1:443");
  for (int d = 0; d < kDestinations; ++d) {
    const auto addr = IpAddress::v4(std::array<std::uint8_t, 4>{
        10, 1, static_cast<std::uint8_t>(d / 250), static_cast<std::uint8_t>(1 + d % 250)});
    for (int j = 0; j < kPerDestination; ++j) {
      SocketEntry e = base;
      e.local.port = static_cast<std::uint16_t>(32768 + (d * 7 + j * 1201) % 28232);
      e.remote = Endpoint{addr, 443};
      e.time_wait_remaining = milliseconds{1000 + (d + j) % 59000};
      sockets.push_back(std::move(e));
    }
  }
  ScrapeInput input;
  input.namespaces.push_back(netns_scrape(kNetns, sockets));
  const PortlensCollector collector([&input] { return input; });

  using Clock = std::chrono::steady_clock;
  const auto ms_since = [](Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  };
  (void)collector.Collect();  // warm-up
  constexpr int kRuns = 5;
  std::vector<double> collect_ms;  // Collect(): the source's copy of the input, then build()
  std::vector<double> build_ms;    // build() alone, on a copy made beforehand
  std::vector<double> copy_ms;
  std::vector<double> render_ms;
  std::string text;
  for (int i = 0; i < kRuns; ++i) {
    auto start = Clock::now();
    const auto families = collector.Collect();
    collect_ms.push_back(ms_since(start));
    start = Clock::now();
    text = render_text(families);
    render_ms.push_back(ms_since(start));
    start = Clock::now();
    // NOLINTNEXTLINE(performance-unnecessary-copy-initialization): the copy is what is timed
    const ScrapeInput copy = input;
    copy_ms.push_back(ms_since(start));
    start = Clock::now();
    (void)PortlensCollector::build(copy, kDefaultTopK);
    build_ms.push_back(ms_since(start));
  }
  for (auto* v : {&collect_ms, &build_ms, &copy_ms, &render_ms}) {
    std::sort(v->begin(), v->end());
  }
  const auto figures = [](const std::vector<double>& v) {
    return std::to_string(v.front()).substr(0, 5) + " / " +
           std::to_string(v[v.size() / 2]).substr(0, 5) + " / " +
           std::to_string(v.back()).substr(0, 5) + " ms";
  };
  std::printf(
      "[ perf     ] %zu TIME_WAIT over %d destinations, top-k %zu, %d runs (min / median / max):\n"
      "[ perf     ]   Collect() (source copies the input, then build()): %s\n"
      "[ perf     ]   build() alone:                                     %s\n"
      "[ perf     ]   copying the ScrapeInput:                           %s\n"
      "[ perf     ]   render_text():                                     %s (%zu bytes)\n",
      input.namespaces[0].sockets.size() - 1, kDestinations, kDefaultTopK, kRuns,
      figures(collect_ms).c_str(), figures(build_ms).c_str(), figures(copy_ms).c_str(),
      figures(render_ms).c_str(), text.size());
  EXPECT_NE(text.find("local_port=\"other\""), std::string::npos);
}

}  // namespace
}  // namespace portlens
