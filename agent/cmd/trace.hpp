// `portlens trace`: which events to show, and the loop that shows them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "agent/kernel/bpf_tracer.hpp"
#include "agent/model/event.hpp"

namespace portlens {

struct TraceOptions {
  bool json = false;
  bool failures = false;  // only failed calls
  bool states = false;    // also TCP state changes and resets received
  bool wide = false;      // the table's addresses whole (wider than 120 columns)
  std::optional<std::uint32_t> pid;
  std::optional<std::uint16_t> port;
  std::optional<std::string> netns;  // as the user gave it
  std::optional<double> duration_s;
  std::size_t ring_bytes = kDefaultRingBytes;
};

// Decides which decoded events `trace` shows. State events happen in softirq context, so their
// pid is not the socket's owner: with --pid they are shown for the sockets that process made
// calls on. At most kMaxRememberedSockets are remembered; later ones are not followed.
class EventFilter {
 public:
  static constexpr std::size_t kMaxRememberedSockets = 65536;

  EventFilter(const TraceOptions& options, std::optional<std::uint32_t> netns_inode);
  bool accepts(const Event& event);

 private:
  bool port_matches(const Event& event) const;

  bool failures_;
  bool states_;
  std::optional<std::uint32_t> pid_;
  std::optional<std::uint16_t> port_;
  std::optional<std::uint32_t> netns_;
  std::unordered_set<std::uint64_t> pid_sockets_;
};

struct TraceSummary {
  std::uint64_t shown = 0;
  std::uint64_t seen = 0;           // records read from the ring buffer
  std::uint64_t malformed = 0;      // records that failed to decode
  std::uint64_t diagnosed = 0;      // failures explained
  std::uint64_t self_connects = 0;  // shown connect()s that connected a socket to itself
  // From the failed call (its kernel timestamp) to its diagnosis being written, per diagnosis.
  std::vector<std::uint64_t> diagnosis_latency_ns;
  DropCounters lost;
};

// Runs the trace until stop becomes true, the duration passes, or out fails (a closed pipe).
// Loads BPF; throws Error on failures the user must act on.
TraceSummary run_trace(const TraceOptions& options, std::ostream& out, std::ostream& status,
                       const std::atomic<bool>& stop);

}  // namespace portlens
