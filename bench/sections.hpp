// The sections of portlens_bench. Each prints its figures as it goes and adds its summary rows
// to the report; each is bounded in count and time. Kernel sections throw BenchError when they
// cannot run at all.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/common.hpp"

namespace portlens::bench {

// 1. decode_event + SocketTracker::apply + diagnosis of the failures, single thread, from a
//    recorded stream generated in memory.
void pipeline_section(const Options& options, Report& report);

// 3a. Bytes per tracked socket in SocketTracker, full sockets and TIME_WAIT (malloc deltas).
void tracker_memory_section(const Options& options, Report& report);

// 2. Loopback connection churn with and without the real agent, alternating.
void churn_section(const Options& options, Report& report);

// 3b and 4. A namespace with options.time_waits TIME_WAIT sockets over options.destinations
//    destinations made while the agent runs: the agent's RSS, /metrics scrape time, snapshot
//    time, agent start-to-serving time, and PortlensCollector::build() alone.
void population_section(const Options& options, Report& report);

// 5. What tracing costs per connection and per bind (issue 11): BPF run time (the kernel's
//    bpf_stats) and the tracer's CPU, for no tracer, empty programs, bpftrace and the agent.
void cost_section(const Options& options, Report& report);

// 6. Memory under churn (issue 14): the agent's RSS over options.soak_seconds of loopback churn,
//    its peak, and what it is once the churn's TIME_WAITs have expired.
void soak_section(const Options& options, Report& report);

// The loopback churn generator, shared by the kernel sections.
struct Destination {
  std::uint32_t addr = 0;  // IPv4, host order (127.x.y.z)
  std::uint16_t port = 0;
};

struct ChurnConfig {
  std::vector<std::uint16_t> listen_ports;  // the server listens on 0.0.0.0:port for each
  std::vector<Destination> destinations;    // connection k goes to destinations[k % size]
  int clients = 2;                          // client threads
  std::uint64_t max_connections = 100'000;  // bounded in count...
  double max_seconds = 5.0;                 // ...and in time
};

struct ChurnResult {
  std::uint64_t connections = 0;  // connect() that succeeded, then close()
  std::uint64_t failures = 0;     // connect() that failed
  std::string first_error;
  double seconds = 0;  // from the clients' start to the last client's end
  [[nodiscard]] double rate() const { return seconds > 0 ? connections / seconds : 0; }
};

// Sets the namespace up for churn: the whole port range, a deep accept queue, room for the
// TIME_WAIT sockets, and tcp_tw_reuse as asked.
void prepare_churn_netns(const Netns& ns, int tw_reuse);

// Runs the generator in ns: client threads connect() and close() first (each connection leaves
// a TIME_WAIT on the client side), an epoll server accepts and closes after the client's FIN.
// Returns after max_connections or max_seconds, and after the server has closed everything.
ChurnResult run_churn(const Netns& ns, const ChurnConfig& config);

}  // namespace portlens::bench
