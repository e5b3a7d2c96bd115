// What the agent hands the Prometheus collector at scrape time: a consistent copy of its socket
// tables, port configuration and counters. The collector turns it into metric families; it
// never sees the agent's locks or threads.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "agent/socket_table.hpp"

namespace portlens {

// One network namespace: its sockets as the tracker knows them (TIME_WAIT included, with time
// left) and the sysctls that decide its ports.
struct NetnsScrape {
  std::uint64_t inode = 0;
  NetnsPortConfig config;
  SocketTable table;
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
  std::map<std::string, std::uint64_t> events_by_type;         // bind, listen, connect, state, ...
  std::uint64_t events_lost = 0;                               // ring full + in-flight table full
  std::map<std::string, std::uint64_t> reconcile_corrections;  // by kind (tracker.hpp)
  std::map<std::string, std::uint64_t> evictions;              // by table: sockets, time_wait
};

struct ScrapeInput {
  std::vector<NetnsScrape> namespaces;
  AgentCounters counters;
  std::uint64_t tracked_sockets = 0;  // full sockets + TIME_WAIT in the tracker
  double last_scrape_duration_seconds = 0;
  std::string version;  // build info
  std::string kernel;   // uname -r
};

}  // namespace portlens
