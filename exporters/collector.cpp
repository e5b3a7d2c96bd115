#include "exporters/collector.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <prometheus/client_metric.h>
#include <prometheus/metric_type.h>
#include <prometheus/text_serializer.h>

#include "agent/diagnose/ephemeral.hpp"
#include "agent/model/inet.hpp"

namespace portlens {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

constexpr std::size_t kPortCount = 65536;

MetricFamily make_family(std::string name, std::string help, MetricType type) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void add_sample(MetricFamily& family, Labels labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (family.type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
}

// The length of the well-formed UTF-8 sequence at s[i] (as Go's utf8.ValidString, which the
// Prometheus parser applies to label values, sees it: no overlong forms, no surrogates), or 0.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  unsigned char lo = 0x80;  // the range allowed for the first continuation byte
  unsigned char hi = 0xBF;
  if (lead < 0x80) {
    return 1;
  }
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    lo = lead == 0xE0 ? 0xA0 : lo;  // overlong
    hi = lead == 0xED ? 0x9F : hi;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    lo = lead == 0xF0 ? 0x90 : lo;  // overlong
    hi = lead == 0xF4 ? 0x8F : hi;  // beyond U+10FFFF
  } else {
    return 0;
  }
  if (i + length > s.size() || byte(1) < lo || byte(1) > hi) {
    return 0;
  }
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(k) < 0x80 || byte(k) > 0xBF) {
      return 0;
    }
  }
  return length;
}

// Label values must be UTF-8; a comm is whatever bytes a process put there. Bytes that are not
// UTF-8 become U+FFFD.
std::string label_value(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size();) {
    const std::size_t length = utf8_sequence_length(raw, i);
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(raw.substr(i, length));
      i += length;
    }
  }
  return out;
}

// Passes counters through with their labels. Keys that only differ in bytes label_value()
// replaced would make duplicate series, so values are summed by final label values.
template <typename Map, typename ToValues>
void add_counters(MetricFamily& family, const std::vector<std::string>& names, const Map& counters,
                  ToValues to_values) {
  std::map<std::vector<std::string>, double> merged;
  for (const auto& [key, value] : counters) {
    std::vector<std::string> values = to_values(key);
    for (std::string& v : values) {
      v = label_value(v);
    }
    merged[std::move(values)] += static_cast<double>(value);
  }
  for (auto& [values, value] : merged) {
    Labels labels;
    labels.reserve(names.size());
    for (std::size_t i = 0; i < names.size(); ++i) {
      labels.push_back({names[i], values[i]});
    }
    add_sample(family, std::move(labels), value);
  }
}

template <typename Tuple>
std::vector<std::string> tuple_values(const Tuple& key) {
  return std::apply([](const auto&... v) { return std::vector<std::string>{v...}; }, key);
}

// A remote endpoint as a hash key: the address unmapped, as the labels show it. Two 64-bit
// loads and multiplications: the per-socket loop of a scrape hashes 200,000 of them.
struct EndpointHash {
  std::size_t operator()(const Endpoint& e) const {
    constexpr std::uint64_t kMul = 0x9E3779B97F4A7C15ULL;
    std::uint64_t hi = 0;
    std::uint64_t lo = 0;
    std::memcpy(&hi, e.addr.bytes().data(), sizeof hi);
    std::memcpy(&lo, e.addr.bytes().data() + sizeof hi, sizeof lo);
    std::uint64_t h = (hi ^ (lo * kMul) ^ (std::uint64_t{e.port} << 48U) ^
                       static_cast<std::uint64_t>(e.addr.family())) *
                      kMul;
    h ^= h >> 32U;
    return static_cast<std::size_t>(h);
  }
};

// Sorts the best k items to the front (partial_sort: O(n log k)) and returns how many they are.
template <typename Item, typename Better>
std::size_t cut_top_k(std::vector<Item>& items, std::size_t top_k, Better better) {
  const std::size_t kept = std::min(top_k, items.size());
  std::partial_sort(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(kept), items.end(),
                    better);
  return kept;
}

// The states portlens_tcp_sockets always has a series for (0 when no socket is in them), named
// as ss shows them: bound-only sockets are CLOSE, request sockets SYN_RECV.
constexpr std::array<TcpState, 11> kExportedStates = {
    TcpState::kEstablished, TcpState::kSynSent,  TcpState::kSynRecv, TcpState::kFinWait1,
    TcpState::kFinWait2,    TcpState::kTimeWait, TcpState::kClose,   TcpState::kCloseWait,
    TcpState::kLastAck,     TcpState::kListen,   TcpState::kClosing};

// The state a TCP socket is counted under. A timewait minisocket counts under its substate, as
// inet_diag reports it (ss shows a FIN_WAIT2-substate minisocket as FIN-WAIT-2, and `ss state
// time-wait` leaves it out), so TIME_WAIT here agrees with `ss -tan state time-wait`.
TcpState exported_state(const SocketRow& entry) {
  if (!entry.state) {
    return TcpState::kClose;  // a TCP socket seen bound, before any state change
  }
  switch (*entry.state) {
    case TcpState::kTimeWait:
      return entry.time_wait_substate == TcpState::kFinWait2 ? TcpState::kFinWait2
                                                             : TcpState::kTimeWait;
    case TcpState::kBoundInactive:
      return TcpState::kClose;
    case TcpState::kNewSynRecv:
      return TcpState::kSynRecv;
    default:
      return *entry.state;
  }
}

// Per-destination ephemeral accounting, folded to the labels the metrics carry. An
// EphemeralAccount's destination also has the local source address; when several source
// addresses reach the same remote endpoint, each has the whole range toward it, so ports in
// use, capacity and reusable TIME_WAIT add up, and the ratio is the worst source's (the one whose
// connect() fails first).
struct RemoteAccount {
  Endpoint remote;
  std::uint64_t in_use = 0;
  std::uint64_t capacity = 0;
  std::uint64_t time_wait_reusable = 0;
  double utilization = 0.0;
};

double ratio_0_1(double value) { return std::clamp(value, 0.0, 1.0); }

// The metric families, in the order of docs/architecture.md.
struct Families {
  MetricFamily bind_failures = make_family(
      "portlens_bind_failures_total",
      "Failed bind() and listen() calls, by protocol, syscall, diagnosed cause and process name "
      "(names beyond the agent's top-k are summed under comm=\"other\").",
      MetricType::Counter);
  MetricFamily connect_failures = make_family(
      "portlens_connect_failures_total",
      "Failed connect() calls, by protocol, errno name, diagnosed cause and process name "
      "(names beyond the agent's top-k are summed under comm=\"other\").",
      MetricType::Counter);
  MetricFamily tcp_sockets = make_family(
      "portlens_tcp_sockets",
      "TCP sockets by network namespace (inode) and state as ss shows it, TIME_WAIT included; "
      "bound-only sockets are CLOSE.",
      MetricType::Gauge);
  MetricFamily time_wait = make_family(
      "portlens_time_wait_sockets",
      "TCP sockets in TIME_WAIT (as `ss state time-wait` counts them) by local port: the top-k "
      "ports of each network namespace, the rest summed under local_port=\"other\".",
      MetricType::Gauge);
  MetricFamily time_wait_by_remote = make_family(
      "portlens_time_wait_sockets_by_remote",
      "TCP sockets in TIME_WAIT by remote address and port: the top-k destinations of each "
      "network namespace, the rest summed under remote_addr=\"other\",remote_port=\"other\".",
      MetricType::Gauge);
  MetricFamily range_size = make_family(
      "portlens_ephemeral_port_range_size",
      "Ports in net.ipv4.ip_local_port_range of the network namespace.", MetricType::Gauge);
  MetricFamily in_use = make_family(
      "portlens_ephemeral_ports_in_use",
      "Ephemeral ports held toward a destination, in any state (TIME_WAIT included), summed "
      "over local source addresses: the top-k destinations by utilization of each network "
      "namespace, the rest summed under remote_addr=\"other\",remote_port=\"other\".",
      MetricType::Gauge);
  MetricFamily utilization = make_family(
      "portlens_ephemeral_port_utilization_ratio",
      "Share (0..1) of the usable ephemeral ports toward a destination that connect() cannot "
      "take now (in use, minus TIME_WAIT it could reuse); with several local source addresses, "
      "the highest. Top-k destinations only: ratios do not add up, so there is no \"other\" "
      "series; see portlens_ephemeral_port_utilization_max_ratio for all of them.",
      MetricType::Gauge);
  MetricFamily peak_utilization = make_family(
      "portlens_ephemeral_port_utilization_peak_ratio",
      "Highest ephemeral port utilization (0..1) of the network namespace since the previous "
      "scrape: at least portlens_ephemeral_port_utilization_max_ratio, and 1 when a connect() "
      "found no port toward a destination in between, so a burst that ended before this "
      "scrape still shows. Each scrape resets it: two Prometheus servers scraping one agent "
      "each see the peaks since their own previous scrape only if they alternate, so alert on "
      "it from one.",
      MetricType::Gauge);
  MetricFamily max_utilization =
      make_family("portlens_ephemeral_port_utilization_max_ratio",
                  "Highest ephemeral port utilization (0..1) over every destination of the network "
                  "namespace, none left out; 0 without destinations.",
                  MetricType::Gauge);
  // Named like portlens_ephemeral_ports_in_use, after the Prometheus rules: a gauge of a count
  // carries the counted unit (ports) in its name, and in_use, capacity and reusable TIME_WAIT
  // share it, so they combine in PromQL (a "portlens_ephemeral_port_capacity" or
  // "portlens_ephemeral_time_wait_reusable" would not say what they count).
  MetricFamily capacity = make_family(
      "portlens_ephemeral_ports_capacity",
      "Ephemeral ports connect() can use toward a destination: range size minus reserved ports "
      "minus ports held by bind()/listen() owners, summed over local source addresses. Same "
      "destinations as portlens_ephemeral_ports_in_use; no \"other\" series, since every "
      "destination has the whole range.",
      MetricType::Gauge);
  MetricFamily reusable = make_family(
      "portlens_ephemeral_ports_time_wait_reusable",
      "Ephemeral ports toward a destination held only by TIME_WAIT sockets that connect() may "
      "take over now (tcp_tw_reuse), summed over local source addresses. Same destinations as "
      "portlens_ephemeral_ports_in_use, the rest summed under remote_addr=\"other\","
      "remote_port=\"other\".",
      MetricType::Gauge);
  MetricFamily transitions =
      make_family("portlens_tcp_state_transitions_total",
                  "TCP state changes seen, by old and new state.", MetricType::Counter);
  MetricFamily events = make_family(
      "portlens_events_total", "Kernel events the agent processed, by type.", MetricType::Counter);
  MetricFamily events_lost = make_family(
      "portlens_events_lost_total",
      "Kernel events lost before the agent read them (ring buffer or in-flight table full).",
      MetricType::Counter);
  MetricFamily events_malformed = make_family(
      "portlens_events_malformed_total",
      "Ring buffer records the agent could not decode (too short, unknown type, family or "
      "protocol): dropped, never applied. Nonzero means a kernel/agent ABI mismatch or a bug.",
      MetricType::Counter);
  MetricFamily event_log_write_failures = make_family(
      "portlens_event_log_write_failures_total",
      "Diagnosed failures that could not be written to the event log (--event-log): the write "
      "failed or wrote short (disk full, file gone). The failure is still counted and kept for "
      "the local API.",
      MetricType::Counter);
  MetricFamily event_log_dropped = make_family(
      "portlens_event_log_lines_dropped_total",
      "Diagnosed failures not written to the event log because its writer's queue was full: the "
      "file's reader (a FIFO, a slow disk) did not keep up. The failure is still counted and kept "
      "for the local API; the agent never waits for the log.",
      MetricType::Counter);
  MetricFamily owner_map_drops = make_family(
      "portlens_owner_map_drops_total",
      "Sockets whose owning process could not be recorded because the inode-to-process map "
      "built from /proc/PID/fd was full: their owner shows as unknown. Summed over /proc scans.",
      MetricType::Counter);
  MetricFamily diagnoses = make_family(
      "portlens_diagnoses_total",
      "Failed calls portlens explains, by outcome: judged against the kernel's sockets, "
      "coalesced (given the diagnosis of an identical failure judged just before, with nothing "
      "on its port or destination changed since), or shed (not judged: the diagnosis queue was "
      "full; counted under cause not_judged).",
      MetricType::Counter);
  MetricFamily diagnosis_queue = make_family(
      "portlens_diagnosis_queue_length",
      "Failed calls waiting for their diagnosis (each diagnosis turn has a time budget).",
      MetricType::Gauge);
  MetricFamily corrections = make_family(
      "portlens_reconcile_corrections_total",
      "Differences between the tracked socket table and a periodic snapshot of the kernel's "
      "sockets (BPF iterators, or sock_diag), by kind.",
      MetricType::Counter);
  MetricFamily evictions =
      make_family("portlens_evictions_total",
                  "Sockets not tracked because a table was full, by table.", MetricType::Counter);
  MetricFamily time_wait_refused = make_family(
      "portlens_time_wait_refused_total",
      "Closes that would have left a TIME_WAIT but did not: the namespace already held "
      "net.ipv4.tcp_max_tw_buckets of them (the kernel counts TcpExtTCPTimeWaitOverflow). The "
      "TIME_WAIT gauges leave them out, as the kernel does.",
      MetricType::Counter);
  MetricFamily folded = make_family(
      "portlens_network_namespaces_folded",
      "Network namespaces beyond --web.max-namespaces (the most sockets first keep their own "
      "series) whose sockets are summed under netns=\"other\".",
      MetricType::Gauge);
  MetricFamily tracked =
      make_family("portlens_tracked_sockets", "Sockets the agent tracks, TIME_WAIT included.",
                  MetricType::Gauge);
  MetricFamily scrape_duration =
      make_family("portlens_scrape_duration_seconds", "Time the previous /metrics scrape took.",
                  MetricType::Gauge);
  MetricFamily close_wait = make_family(
      "portlens_close_wait_sockets",
      "TCP sockets in CLOSE_WAIT (the peer closed, the owner has not) by owner's comm and local "
      "port, the most per namespace first (top-k, the rest under comm and local_port \"other\"). "
      "A count that only grows is a process that never closes its side.",
      MetricType::Gauge);
  MetricFamily close_wait_oldest = make_family(
      "portlens_close_wait_oldest_seconds",
      "How long the oldest CLOSE_WAIT socket of each owner and port has been in CLOSE_WAIT (at "
      "least: a socket found in it by a snapshot counts from then).",
      MetricType::Gauge);
  MetricFamily self_connects = make_family(
      "portlens_tcp_self_connects_total",
      "connect() calls that connected a socket to itself: the kernel chose a local port equal "
      "to the destination's on the same address (TCP simultaneous open). The socket holds the "
      "port a server on it needs; a client that retries toward a local port it may pick does it.",
      MetricType::Counter);
  MetricFamily closes = make_family(
      "portlens_tcp_closes_total",
      "TCP connections that ended, by how: fin_time_wait (a FIN close that left a TIME_WAIT on "
      "this side), fin_no_time_wait (a FIN close that left none: the passive closer, or "
      "tcp_max_tw_buckets reached), rst_sent (close() with unread data, SO_LINGER 0, an abort), "
      "rst_received, other (neither seen: a timeout). Namespaces with series of their own only.",
      MetricType::Counter);
  MetricFamily listen_queue_length = make_family(
      "portlens_listen_queue_length",
      "Connections in a TCP listener's accept queue now, handshake done and not yet accepted "
      "(sk_ack_backlog, ss -ltn's Recv-Q), by listening address; SO_REUSEPORT listeners of one "
      "address are summed.",
      MetricType::Gauge);
  MetricFamily listen_queue_limit =
      make_family("portlens_listen_queue_limit",
                  "The accept queue's limit (sk_max_ack_backlog: listen()'s backlog clamped to "
                  "net.core.somaxconn, ss -ltn's Send-Q); beyond it the kernel drops handshakes.",
                  MetricType::Gauge);
  MetricFamily listen_overflows = make_family(
      "portlens_listen_overflows_total",
      "Handshakes the namespace's listeners dropped because an accept queue was full (the "
      "kernel's TcpExtListenOverflows of the namespace).",
      MetricType::Counter);
  MetricFamily build_info = make_family(
      "portlens_build_info",
      "Always 1: the portlens release, the source revision it was built from, and the compiler.",
      MetricType::Gauge);
  MetricFamily kernel_info =
      make_family("portlens_kernel_info", "Always 1: the running kernel's release (uname -r).",
                  MetricType::Gauge);
  MetricFamily bpf_run_seconds =
      make_family("portlens_bpf_program_run_seconds_total",
                  "Time the kernel spent running each of the agent's BPF programs (bpf_prog_info "
                  "run_time_ns; counts only while the kernel's BPF statistics are on, see "
                  "portlens_bpf_stats_enabled).",
                  MetricType::Counter);
  MetricFamily bpf_run_count = make_family(
      "portlens_bpf_program_run_count_total",
      "Runs of each of the agent's BPF programs (bpf_prog_info run_cnt; counts only while the "
      "kernel's BPF statistics are on).",
      MetricType::Counter);
  MetricFamily bpf_stats_enabled = make_family(
      "portlens_bpf_stats_enabled",
      "1 when the kernel counts BPF program run time (the agent holds BPF_ENABLE_STATS, or "
      "kernel.bpf_stats_enabled=1), 0 when the run-time counters stand still.",
      MetricType::Gauge);
  MetricFamily process_cpu =
      make_family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                  MetricType::Counter);
  MetricFamily process_open_fds =
      make_family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge);
  MetricFamily process_max_fds =
      make_family("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge);
  MetricFamily process_virtual = make_family("process_virtual_memory_bytes",
                                             "Virtual memory size in bytes.", MetricType::Gauge);
  MetricFamily process_virtual_max =
      make_family("process_virtual_memory_max_bytes",
                  "Maximum amount of virtual memory available in bytes.", MetricType::Gauge);
  MetricFamily process_resident = make_family("process_resident_memory_bytes",
                                              "Resident memory size in bytes.", MetricType::Gauge);
  MetricFamily process_start =
      make_family("process_start_time_seconds",
                  "Start time of the process since unix epoch in seconds.", MetricType::Gauge);

  std::vector<MetricFamily> take() {
    std::vector<MetricFamily> out;
    out.reserve(40);
    for (MetricFamily* f : {&bind_failures,
                            &connect_failures,
                            &tcp_sockets,
                            &time_wait,
                            &time_wait_by_remote,
                            &range_size,
                            &in_use,
                            &utilization,
                            &max_utilization,
                            &peak_utilization,
                            &capacity,
                            &reusable,
                            &transitions,
                            &events,
                            &events_lost,
                            &events_malformed,
                            &event_log_write_failures,
                            &event_log_dropped,
                            &owner_map_drops,
                            &diagnoses,
                            &diagnosis_queue,
                            &corrections,
                            &evictions,
                            &time_wait_refused,
                            &folded,
                            &tracked,
                            &scrape_duration,
                            &closes,
                            &self_connects,
                            &close_wait,
                            &close_wait_oldest,
                            &listen_queue_length,
                            &listen_queue_limit,
                            &listen_overflows,
                            &build_info,
                            &kernel_info,
                            &bpf_run_seconds,
                            &bpf_run_count,
                            &bpf_stats_enabled,
                            &process_cpu,
                            &process_open_fds,
                            &process_max_fds,
                            &process_virtual,
                            &process_virtual_max,
                            &process_resident,
                            &process_start}) {
      // process_* without /proc, or no program attached: left out rather than an empty family.
      if (f->metric.empty() &&
          (f->name.starts_with("process_") || f->name.starts_with("portlens_bpf_program_"))) {
        continue;
      }
      out.push_back(std::move(*f));
    }
    return out;
  }
};

// Scratch space reused across network namespaces: TIME_WAIT counts by local port, and the ports
// touched, so that clearing costs what was counted rather than 65536 slots.
struct PortCounts {
  std::vector<std::uint32_t> count = std::vector<std::uint32_t>(kPortCount);
  std::vector<std::uint16_t> touched;

  void add(std::uint16_t port) {
    if (count[port]++ == 0) {
      touched.push_back(port);
    }
  }
  // (port, count) of every counted port, and the counts reset.
  std::vector<std::pair<std::uint16_t, std::uint32_t>> drain() {
    std::vector<std::pair<std::uint16_t, std::uint32_t>> out;
    out.reserve(touched.size());
    for (const std::uint16_t port : touched) {
      out.emplace_back(port, count[port]);
      count[port] = 0;
    }
    touched.clear();
    return out;
  }
};

Labels remote_labels(const std::string& netns, const Endpoint& remote) {
  return {{"netns", netns},
          {"remote_addr", remote.addr.to_string()},
          {"remote_port", std::to_string(remote.port)}};
}

Labels other_remote_labels(const std::string& netns) {
  return {{"netns", netns}, {"remote_addr", kOtherLabel}, {"remote_port", kOtherLabel}};
}

// The namespaces beyond the budget, summed: what adds up keeps its sum under netns="other"
// (states, TIME_WAIT, ports in use and reusable), the highest utilization its maximum.
struct Folded {
  std::size_t namespaces = 0;
  std::array<std::uint64_t, 16> states{};
  std::uint64_t time_wait = 0;
  std::uint64_t time_wait_with_remote = 0;
  std::uint64_t in_use = 0;
  std::uint64_t reusable = 0;
  bool any_destination = false;
  double max_utilization = 0.0;
  double peak_utilization = 0.0;
};

std::size_t tcp_rows(const NetnsScrape& ns) {
  return static_cast<std::size_t>(
      std::count_if(ns.sockets.begin(), ns.sockets.end(),
                    [](const SocketRow& r) { return r.proto == Proto::kTcp; }));
}

void fold_sockets(Folded& fold, const NetnsScrape& ns) {
  for (const SocketRow& entry : ns.sockets) {
    if (entry.proto != Proto::kTcp) {
      continue;
    }
    const TcpState state = exported_state(entry);
    ++fold.states[static_cast<std::size_t>(state)];
    if (state == TcpState::kTimeWait) {
      ++fold.time_wait;
      fold.time_wait_with_remote += entry.remote ? 1 : 0;
    }
  }
}

void fold_ephemeral(Folded& fold, const NetnsScrape& ns) {
  fold.peak_utilization = std::max(fold.peak_utilization, ratio_0_1(ns.utilization_peak_seen));
  for (const EphemeralAccount& account : count_by_destination(ns.inode, ns.config, ns.sockets)) {
    if (!account.destination) {
      continue;
    }
    fold.any_destination = true;
    fold.in_use += account.in_use;
    fold.reusable += account.time_wait_reusable;
    fold.max_utilization = std::max(fold.max_utilization, ratio_0_1(account.utilization));
  }
}

void emit_folded(Families& f, const Folded& fold) {
  add_sample(f.folded, {}, static_cast<double>(fold.namespaces));
  if (fold.namespaces == 0) {
    return;
  }
  for (const TcpState state : kExportedStates) {
    add_sample(f.tcp_sockets,
               {{"netns", kOtherLabel}, {"state", state_name(static_cast<int>(state))}},
               static_cast<double>(fold.states[static_cast<std::size_t>(state)]));
  }
  if (fold.time_wait > 0) {
    add_sample(f.time_wait, {{"netns", kOtherLabel}, {"local_port", kOtherLabel}},
               static_cast<double>(fold.time_wait));
  }
  if (fold.time_wait_with_remote > 0) {
    add_sample(f.time_wait_by_remote, other_remote_labels(kOtherLabel),
               static_cast<double>(fold.time_wait_with_remote));
  }
  add_sample(f.max_utilization, {{"netns", kOtherLabel}}, fold.max_utilization);
  add_sample(f.peak_utilization, {{"netns", kOtherLabel}},
             std::max(fold.max_utilization, fold.peak_utilization));
  if (fold.any_destination) {
    add_sample(f.in_use, other_remote_labels(kOtherLabel), static_cast<double>(fold.in_use));
    add_sample(f.reusable, other_remote_labels(kOtherLabel), static_cast<double>(fold.reusable));
  }
}

void collect_sockets(Families& f, const NetnsScrape& ns, const std::string& netns,
                     std::size_t top_k, PortCounts& by_port) {
  std::array<std::uint64_t, 16> states{};
  std::unordered_map<Endpoint, std::uint32_t, EndpointHash> by_remote;
  for (const SocketRow& entry : ns.sockets) {
    if (entry.proto != Proto::kTcp) {
      continue;
    }
    const TcpState state = exported_state(entry);
    ++states[static_cast<std::size_t>(state)];
    if (state != TcpState::kTimeWait) {
      continue;
    }
    by_port.add(entry.local.port);
    if (entry.remote) {
      ++by_remote[*entry.remote];  // rows are unmapped
    }
  }
  for (const TcpState state : kExportedStates) {
    add_sample(f.tcp_sockets, {{"netns", netns}, {"state", state_name(static_cast<int>(state))}},
               static_cast<double>(states[static_cast<std::size_t>(state)]));
  }

  // Most TIME_WAIT first; ties by label value (port number, address then port).
  auto ports = by_port.drain();
  const std::size_t kept_ports = cut_top_k(ports, top_k, [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  std::uint64_t rest = 0;
  for (std::size_t i = 0; i < ports.size(); ++i) {
    if (i < kept_ports) {
      add_sample(f.time_wait, {{"netns", netns}, {"local_port", std::to_string(ports[i].first)}},
                 ports[i].second);
    } else {
      rest += ports[i].second;
    }
  }
  if (kept_ports < ports.size()) {
    add_sample(f.time_wait, {{"netns", netns}, {"local_port", kOtherLabel}},
               static_cast<double>(rest));
  }

  std::vector<std::pair<Endpoint, std::uint32_t>> remotes(by_remote.begin(), by_remote.end());
  const std::size_t kept_remotes = cut_top_k(remotes, top_k, [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  rest = 0;
  for (std::size_t i = 0; i < remotes.size(); ++i) {
    if (i < kept_remotes) {
      add_sample(f.time_wait_by_remote, remote_labels(netns, remotes[i].first), remotes[i].second);
    } else {
      rest += remotes[i].second;
    }
  }
  if (kept_remotes < remotes.size()) {
    add_sample(f.time_wait_by_remote, other_remote_labels(netns), static_cast<double>(rest));
  }
}

// CLOSE_WAIT by owner and port: the largest groups of the namespace, the rest summed (count) and
// maxed (age) under "other".
void collect_close_wait(Families& f, const NetnsScrape& ns, const std::string& netns,
                        std::size_t top_k) {
  std::vector<const CloseWaitGroup*> groups;
  groups.reserve(ns.close_wait.size());
  for (const CloseWaitGroup& g : ns.close_wait) {
    groups.push_back(&g);
  }
  const std::size_t kept = cut_top_k(groups, top_k, [](const auto* a, const auto* b) {
    if (a->count != b->count) {
      return a->count > b->count;
    }
    return std::tie(a->comm, a->local_port) < std::tie(b->comm, b->local_port);
  });
  const auto age_s = [&ns](const CloseWaitGroup& g) {
    return ns.now_ns > g.oldest_since_ns ? static_cast<double>(ns.now_ns - g.oldest_since_ns) / 1e9
                                         : 0.0;
  };
  std::uint64_t rest = 0;
  double rest_age = 0;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const CloseWaitGroup& g = *groups[i];
    if (i >= kept) {
      rest += g.count;
      rest_age = std::max(rest_age, age_s(g));
      continue;
    }
    const Labels labels = {{"netns", netns},
                           {"comm", label_value(g.comm.empty() ? "unknown" : g.comm)},
                           {"local_port", std::to_string(g.local_port)}};
    add_sample(f.close_wait, labels, static_cast<double>(g.count));
    add_sample(f.close_wait_oldest, labels, age_s(g));
  }
  if (kept < groups.size()) {
    const Labels labels = {{"netns", netns}, {"comm", kOtherLabel}, {"local_port", kOtherLabel}};
    add_sample(f.close_wait, labels, static_cast<double>(rest));
    add_sample(f.close_wait_oldest, labels, rest_age);
  }
}

// Accept queues by listening address (SO_REUSEPORT groups summed: one address, one series), the
// fullest top_k with their own series, the rest summed under local_addr="other".
void collect_listen_queues(Families& f, const NetnsScrape& ns, const std::string& netns,
                           std::size_t top_k) {
  if (ns.listen_overflows) {
    add_sample(f.listen_overflows, {{"netns", netns}}, static_cast<double>(*ns.listen_overflows));
  }
  std::map<Endpoint, std::pair<std::uint64_t, std::uint64_t>> by_local;  // (length, limit)
  for (const ListenQueue& q : ns.listen_queues) {
    auto& [length, limit] = by_local[q.local];
    length += q.length;
    limit += q.limit;
  }
  using Queue = std::pair<Endpoint, std::pair<std::uint64_t, std::uint64_t>>;
  std::vector<Queue> queues(by_local.begin(), by_local.end());
  const std::size_t kept = cut_top_k(queues, top_k, [](const Queue& a, const Queue& b) {
    // The fullest first (length / limit, cross-multiplied), then the longest, then by address.
    const auto fill_a = a.second.first * std::max<std::uint64_t>(b.second.second, 1);
    const auto fill_b = b.second.first * std::max<std::uint64_t>(a.second.second, 1);
    if (fill_a != fill_b) {
      return fill_a > fill_b;
    }
    return a.second.first != b.second.first ? a.second.first > b.second.first : a.first < b.first;
  });
  std::uint64_t rest_length = 0;
  std::uint64_t rest_limit = 0;
  for (std::size_t i = 0; i < queues.size(); ++i) {
    const auto& [local, counts] = queues[i];
    if (i >= kept) {
      rest_length += counts.first;
      rest_limit += counts.second;
      continue;
    }
    const Labels labels = {{"netns", netns},
                           {"local_addr", local.addr.to_string()},
                           {"local_port", std::to_string(local.port)}};
    add_sample(f.listen_queue_length, labels, static_cast<double>(counts.first));
    add_sample(f.listen_queue_limit, labels, static_cast<double>(counts.second));
  }
  if (kept < queues.size()) {
    const Labels labels = {
        {"netns", netns}, {"local_addr", kOtherLabel}, {"local_port", kOtherLabel}};
    add_sample(f.listen_queue_length, labels, static_cast<double>(rest_length));
    add_sample(f.listen_queue_limit, labels, static_cast<double>(rest_limit));
  }
}

void collect_ephemeral(Families& f, const NetnsScrape& ns, const std::string& netns,
                       std::size_t top_k) {
  const std::uint32_t lo = ns.config.port_range_lo;
  const std::uint32_t hi = ns.config.port_range_hi;
  add_sample(f.range_size, {{"netns", netns}}, hi >= lo ? hi - lo + 1 : 0);

  std::vector<RemoteAccount> remotes;
  std::unordered_map<Endpoint, std::size_t, EndpointHash> index;
  double max_utilization = 0.0;
  for (const EphemeralAccount& account : count_by_destination(ns.inode, ns.config, ns.sockets)) {
    if (!account.destination) {
      continue;
    }
    const Endpoint& remote = account.destination->remote;  // already unmapped
    const auto [it, inserted] = index.try_emplace(remote, remotes.size());
    if (inserted) {
      remotes.push_back(RemoteAccount{remote});
    }
    RemoteAccount& r = remotes[it->second];
    r.in_use += account.in_use;
    r.capacity += account.capacity;
    r.time_wait_reusable += account.time_wait_reusable;
    r.utilization = std::max(r.utilization, ratio_0_1(account.utilization));
    max_utilization = std::max(max_utilization, r.utilization);
  }
  add_sample(f.max_utilization, {{"netns", netns}}, max_utilization);
  add_sample(f.peak_utilization, {{"netns", netns}},
             std::max(max_utilization, ratio_0_1(ns.utilization_peak_seen)));

  // Highest utilization first, then most ports in use; ties by label value (address, port).
  const std::size_t kept =
      cut_top_k(remotes, top_k, [](const RemoteAccount& a, const RemoteAccount& b) {
        if (a.utilization != b.utilization) {
          return a.utilization > b.utilization;
        }
        if (a.in_use != b.in_use) {
          return a.in_use > b.in_use;
        }
        return a.remote < b.remote;
      });
  std::uint64_t rest_in_use = 0;
  std::uint64_t rest_reusable = 0;
  for (std::size_t i = 0; i < remotes.size(); ++i) {
    const RemoteAccount& r = remotes[i];
    if (i >= kept) {
      rest_in_use += r.in_use;
      rest_reusable += r.time_wait_reusable;
      continue;
    }
    const Labels labels = remote_labels(netns, r.remote);
    add_sample(f.in_use, labels, static_cast<double>(r.in_use));
    add_sample(f.utilization, labels, r.utilization);
    add_sample(f.capacity, labels, static_cast<double>(r.capacity));
    add_sample(f.reusable, labels, static_cast<double>(r.time_wait_reusable));
  }
  if (kept < remotes.size()) {
    add_sample(f.in_use, other_remote_labels(netns), static_cast<double>(rest_in_use));
    add_sample(f.reusable, other_remote_labels(netns), static_cast<double>(rest_reusable));
  }
}

// Label values the agent documents: a counter that has not moved yet still has a 0 series, so
// that rate() and increase() see its first increment.
constexpr std::array<std::string_view, 5> kCorrectionKinds = {"socket_missing", "socket_stale",
                                                              "socket_state", "time_wait_missing",
                                                              "time_wait_stale"};  // tracker.hpp
constexpr std::array<std::string_view, 2> kEvictionTables = {"sockets", "time_wait"};

template <typename Map, std::size_t N>
Map with_zeros(Map counters, const std::array<std::string_view, N>& keys) {
  for (const std::string_view key : keys) {
    counters.try_emplace(std::string(key), 0);
  }
  return counters;
}

void collect_agent(Families& f, const ScrapeInput& input) {
  const AgentCounters& c = input.counters;
  const auto tuple_key = [](const auto& key) { return tuple_values(key); };
  const auto string_key = [](const std::string& key) { return std::vector<std::string>{key}; };
  add_counters(f.bind_failures, {"proto", "syscall", "cause", "comm"}, c.bind_failures, tuple_key);
  add_counters(f.connect_failures, {"proto", "errno", "cause", "comm"}, c.connect_failures,
               tuple_key);
  add_counters(f.transitions, {"from", "to"}, c.state_transitions, tuple_key);
  add_counters(f.events, {"type"}, c.events_by_type, string_key);
  add_sample(f.self_connects, {}, static_cast<double>(c.self_connects));
  add_sample(f.events_lost, {}, static_cast<double>(c.events_lost));
  add_sample(f.events_malformed, {}, static_cast<double>(c.events_malformed));
  add_sample(f.event_log_write_failures, {}, static_cast<double>(c.event_log_write_failures));
  add_sample(f.event_log_dropped, {}, static_cast<double>(c.event_log_dropped));
  add_sample(f.owner_map_drops, {}, static_cast<double>(c.owner_map_drops));
  add_sample(f.diagnoses, {{"outcome", "judged"}}, static_cast<double>(c.diagnoses_judged));
  add_sample(f.diagnoses, {{"outcome", "coalesced"}}, static_cast<double>(c.diagnoses_coalesced));
  add_sample(f.diagnoses, {{"outcome", "shed"}}, static_cast<double>(c.diagnoses_shed));
  add_sample(f.diagnosis_queue, {}, static_cast<double>(c.diagnosis_queue));
  add_counters(f.corrections, {"kind"}, with_zeros(c.reconcile_corrections, kCorrectionKinds),
               string_key);
  add_counters(f.evictions, {"table"}, with_zeros(c.evictions, kEvictionTables), string_key);
  add_sample(f.time_wait_refused, {}, static_cast<double>(c.time_wait_refused));
  add_sample(f.tracked, {}, static_cast<double>(input.tracked_sockets));
  add_sample(f.scrape_duration, {}, input.last_scrape_duration_seconds);
  add_sample(f.build_info,
             {{"version", label_value(input.version)},
              {"revision", label_value(input.revision)},
              {"compiler", label_value(input.compiler)}},
             1);
  add_sample(f.kernel_info, {{"release", label_value(input.kernel)}}, 1);
  add_sample(f.bpf_stats_enabled, {}, input.bpf_stats_counting ? 1 : 0);
  for (const BpfProgramStats& p : input.bpf_programs) {
    const Labels labels = {{"program", label_value(p.name)}};
    add_sample(f.bpf_run_seconds, labels, static_cast<double>(p.run_time_ns) / 1e9);
    add_sample(f.bpf_run_count, labels, static_cast<double>(p.run_count));
  }
  if (const auto& p = input.process) {
    add_sample(f.process_cpu, {}, p->cpu_seconds);
    add_sample(f.process_open_fds, {}, p->open_fds);
    add_sample(f.process_max_fds, {}, p->max_fds);
    add_sample(f.process_virtual, {}, p->virtual_bytes);
    add_sample(f.process_virtual_max, {}, p->virtual_max_bytes);
    add_sample(f.process_resident, {}, p->resident_bytes);
    add_sample(f.process_start, {}, p->start_time_seconds);
  }
}

}  // namespace

PortlensCollector::PortlensCollector(std::function<ScrapeInput()> source, std::size_t top_k,
                                     std::size_t max_namespaces)
    : source_(std::move(source)), top_k_(top_k), max_namespaces_(max_namespaces) {}

std::vector<MetricFamily> PortlensCollector::Collect() const {
  return build(source_(), top_k_, max_namespaces_);
}

std::vector<MetricFamily> PortlensCollector::build(const ScrapeInput& input, std::size_t top_k,
                                                   std::size_t max_namespaces) {
  Families f;
  PortCounts by_port;
  // The namespaces with the most TCP sockets keep their own series; ties by inode.
  std::vector<std::pair<std::size_t, const NetnsScrape*>> order;
  order.reserve(input.namespaces.size());
  for (const NetnsScrape& ns : input.namespaces) {
    order.emplace_back(tcp_rows(ns), &ns);
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second->inode < b.second->inode;
  });
  Folded fold;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const NetnsScrape& ns = *order[i].second;
    if (i >= max_namespaces) {
      ++fold.namespaces;
      fold_sockets(fold, ns);
      fold_ephemeral(fold, ns);
      continue;
    }
    const std::string netns = std::to_string(ns.inode);
    collect_sockets(f, ns, netns, top_k, by_port);
    collect_ephemeral(f, ns, netns, top_k);
    collect_listen_queues(f, ns, netns, top_k);
    collect_close_wait(f, ns, netns, top_k);
    if (ns.closes) {
      for (std::size_t kind = 0; kind < kCloseKindNames.size(); ++kind) {
        add_sample(f.closes, {{"netns", netns}, {"kind", std::string(kCloseKindNames[kind])}},
                   static_cast<double>((*ns.closes)[kind]));
      }
    }
  }
  emit_folded(f, fold);
  collect_agent(f, input);
  return f.take();
}

std::string render_text(const std::vector<MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace portlens
