// What the agent hands the Prometheus collector at scrape time: a consistent copy of its
// TCP-table sockets (as SocketRow, what the metrics read), port configuration and counters. The
// collector turns it into metric families; it never sees the agent's locks or threads.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "agent/diagnose/ephemeral.hpp"
#include "agent/model/event.hpp"
#include "agent/model/self_stats.hpp"
#include "agent/model/socket_table.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens {

// One network namespace: its TCP and MPTCP sockets as the tracker knows them (TIME_WAIT
// included, with time left) and the sysctls that decide its ports.
struct NetnsScrape {
  NetnsScrape() = default;
  NetnsScrape(std::uint64_t netns, NetnsPortConfig port_config, std::vector<SocketRow> rows)
      : inode(netns), config(std::move(port_config)), sockets(std::move(rows)) {}

  std::uint64_t inode = 0;
  NetnsPortConfig config;
  std::vector<SocketRow> sockets;
  // Its TCP listeners' accept queues and TcpExtListenOverflows, asked of the kernel at the scrape
  // (agent/kernel/listen_probe); empty and nullopt when the namespace could not be asked.
  std::vector<ListenQueue> listen_queues;
  std::optional<std::uint64_t> listen_overflows;
  // The highest ephemeral port utilization seen since the previous scrape between scrapes (1.0
  // when a connect() found no port), besides what the sockets above show now.
  double utilization_peak_seen = 0;
  // TCP connections ended since the agent started, by CloseKind (agent/tracker/tracker.hpp);
  // nullopt while the tracker has seen none end here.
  std::optional<CloseCounts> closes;
  // Its CLOSE_WAIT sockets by owner and port, and how old the oldest of each group is (ms).
  std::vector<CloseWaitGroup> close_wait;
  std::uint64_t now_ns = 0;  // the tracker's clock at the scrape, for the ages
};

// Monotonic counters kept by the agent since it started. Label values are final: the agent has
// already folded comms beyond its sticky top-k into "other" (a comm keeps its own series once it
// has one, so no counter ever goes backwards).
struct AgentCounters {
  // (proto, syscall "bind"|"listen", cause, comm)
  std::map<std::tuple<std::string, std::string, std::string, std::string>, std::uint64_t>
      bind_failures;
  // (proto, errno name, cause, comm)
  std::map<std::tuple<std::string, std::string, std::string, std::string>, std::uint64_t>
      connect_failures;
  // (from state, to state), TCP state names as the kernel spells them ("ESTABLISHED", ...)
  std::map<std::pair<std::string, std::string>, std::uint64_t> state_transitions;
  std::map<std::string, std::uint64_t> events_by_type;  // bind, listen, connect, state, ...
  // connect()s whose chosen local port was their destination's (TCP simultaneous open with
  // itself on loopback: the socket talks to itself and holds the port a server wanted)
  std::uint64_t self_connects = 0;
  std::uint64_t events_lost = 0;               // ring full + in-flight table full
  std::uint64_t events_malformed = 0;          // ring records that failed to decode, dropped
  std::uint64_t event_log_write_failures = 0;  // diagnosed failures the event log could not write
  std::uint64_t event_log_dropped = 0;         // lines the event log's full queue could not take
  std::uint64_t owner_map_drops = 0;           // sockets whose owner the /proc map had no room for
  // Failures by what became of them: judged, coalesced (given an identical one's diagnosis),
  // shed (not judged: the diagnosis queue was full). Their sum is the failures explained.
  std::uint64_t diagnoses_judged = 0;
  std::uint64_t diagnoses_coalesced = 0;
  std::uint64_t diagnoses_shed = 0;
  std::uint64_t diagnosis_queue = 0;  // failures waiting for their judgment now
  // TIME_WAITs the kernel did not make: the namespace already held tcp_max_tw_buckets.
  std::uint64_t time_wait_refused = 0;
  std::map<std::string, std::uint64_t> reconcile_corrections;  // by kind (tracker.hpp)
  std::map<std::string, std::uint64_t> evictions;              // by table: sockets, time_wait
};

// The per-event counters of AgentCounters (events_by_type, state_transitions), kept by number
// and named only when a scrape asks: a string-keyed map lookup per event cost more than the
// tracker's own work on the event.
class EventTally {
 public:
  void count(const Event& e) {
    ++by_type_[static_cast<std::size_t>(e.type)];
    if (e.type == EventType::kConnect && e.self_connect()) {
      ++self_connects_;
    }
    if (e.type != EventType::kState) {
      return;
    }
    if (e.old_state >= 0 && e.old_state < kStates && e.new_state >= 0 && e.new_state < kStates) {
      ++transitions_[static_cast<std::size_t>(e.old_state)][static_cast<std::size_t>(e.new_state)];
    } else {
      ++odd_transitions_[{e.old_state, e.new_state}];
    }
  }

  // Adds the counts to counters under the labels AgentCounters documents.
  void name_into(AgentCounters& counters) const {
    counters.self_connects += self_connects_;
    for (std::size_t type = 0; type < by_type_.size(); ++type) {
      if (by_type_[type] != 0) {
        counters.events_by_type[std::string(to_string(static_cast<EventType>(type)))] +=
            by_type_[type];
      }
    }
    for (int from = 0; from < kStates; ++from) {
      for (int to = 0; to < kStates; ++to) {
        const std::uint64_t n =
            transitions_[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)];
        if (n != 0) {
          counters.state_transitions[{state_name(from), state_name(to)}] += n;
        }
      }
    }
    for (const auto& [states, n] : odd_transitions_) {
      counters.state_transitions[{state_name(states.first), state_name(states.second)}] += n;
    }
  }

 private:
  static constexpr int kStates = 16;  // TCP_ESTABLISHED (1) .. TCP_BOUND_INACTIVE (13), and room
  std::array<std::uint64_t, 8> by_type_{};
  std::uint64_t self_connects_ = 0;  // by EventType (PL_EV_BIND 1 .. PL_EV_DESTROY 6)
  std::array<std::array<std::uint64_t, kStates>, kStates> transitions_{};
  std::map<std::pair<int, int>, std::uint64_t> odd_transitions_;  // states beyond the table
};

struct ScrapeInput {
  std::vector<NetnsScrape> namespaces;
  AgentCounters counters;
  std::uint64_t tracked_sockets = 0;  // full sockets + TIME_WAIT in the tracker
  double last_scrape_duration_seconds = 0;
  std::string version;   // build info: the release,
  std::string revision;  // the source commit (or "unknown"),
  std::string compiler;  // and what built it ("GNU 12.2.0")
  std::string kernel;    // uname -r
  // The agent's own process (nullopt: /proc/self unreadable, the process_* families left out).
  std::optional<ProcessStats> process;
  // Its attached BPF programs, and whether the kernel counts their run time.
  std::vector<BpfProgramStats> bpf_programs;
  bool bpf_stats_counting = false;
};

}  // namespace portlens
