// Owns the loaded BPF programs: opens the skeleton, sets the tunables, loads, attaches the
// tracepoints asked for, and hands ring-buffer records to the caller. Destroying it detaches
// everything.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "agent/kernel/kernel_only.hpp"
#include "agent/kernel/skeleton.hpp"
#include "agent/live/sources.hpp"

struct portlens_bpf;
struct ring_buffer;

namespace portlens {

inline constexpr std::size_t kDefaultRingBytes = std::size_t{8} << 20;

struct TracerConfig {
  std::uint32_t pid_filter = 0;    // 0: every process
  std::uint32_t netns_filter = 0;  // 0: every network namespace (inode otherwise)
  std::size_t ring_bytes = kDefaultRingBytes;
  bool syscalls = true;    // bind/listen/connect
  bool tcp_states = true;  // inet_sock_set_state, tcp_receive_reset and tcp_destroy_sock
};

// The ring buffer must be a power-of-two number of pages; rounds up to the next one.
std::size_t ring_size_for(std::size_t requested_bytes);

class BpfTracer {
 public:
  using RecordSink = std::function<void(std::span<const std::byte>)>;

  // Loads and attaches; throws Error with what failed and what to do.
  explicit BpfTracer(const TracerConfig& config);
  ~BpfTracer();
  BpfTracer(const BpfTracer&) = delete;
  BpfTracer& operator=(const BpfTracer&) = delete;
  BpfTracer(BpfTracer&&) = delete;
  BpfTracer& operator=(BpfTracer&&) = delete;

  // Hands each waiting record to sink; when there is none, waits up to timeout for some. The
  // programs wake the wait only for a failed call or a ring more than half full, so records
  // otherwise wait for the end of the timeout: poll with a timeout as long as a record may wait.
  // Hands over at most max_records: the ring is read as fast as the programs fill it, so a
  // reader with no bound would keep taking (and keeping) records for as long as the churn lasts.
  // Returns how many were handed over; 0 also when a signal interrupted the wait.
  int poll(std::chrono::milliseconds timeout, const RecordSink& sink,
           std::size_t max_records = std::numeric_limits<std::size_t>::max());

  [[nodiscard]] DropCounters drops() const;
  [[nodiscard]] std::size_t ring_bytes() const { return ring_bytes_; }

 private:
  static int on_record(void* ctx, void* data, std::size_t size);

  SkeletonPtr<portlens_bpf> skel_{nullptr, nullptr};
  std::vector<LinkPtr> links_;  // the attached programs; destroyed before the skeleton
  std::unique_ptr<ring_buffer, void (*)(ring_buffer*)> ring_{nullptr, nullptr};
  const RecordSink* sink_ = nullptr;
  int delivered_ = 0;
  std::size_t max_records_ = 0;
  std::size_t ring_bytes_ = 0;
};

}  // namespace portlens
