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
#include <string>
#include <vector>

#include "agent/kernel/kernel_only.hpp"
#include "agent/kernel/skeleton.hpp"
#include "agent/live/sources.hpp"
#include "agent/model/fd.hpp"
#include "agent/model/self_stats.hpp"

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
  // Turn the kernel's BPF program statistics on (BPF_ENABLE_STATS) for as long as the tracer
  // lives, so program_stats() counts. They are host-wide: every BPF program's run then costs two
  // clock reads more (about 20-40 ns), which is why the kernel keeps them off by default.
  bool enable_stats = false;
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

  // Each attached program's run time and run count, from the kernel (bpf_prog_info). Safe from
  // any thread while the tracer lives.
  [[nodiscard]] std::vector<BpfProgramStats> program_stats() const;
  // Whether those counters count: the tracer holds BPF_ENABLE_STATS, or kernel.bpf_stats_enabled
  // is 1.
  [[nodiscard]] bool stats_counting() const;
  // Why enable_stats could not turn them on (empty when it did or was not asked to).
  [[nodiscard]] const std::string& stats_error() const { return stats_error_; }
  [[nodiscard]] std::size_t ring_bytes() const { return ring_bytes_; }

 private:
  static int on_record(void* ctx, void* data, std::size_t size);

  SkeletonPtr<portlens_bpf> skel_{nullptr, nullptr};
  std::vector<LinkPtr> links_;  // the attached programs; destroyed before the skeleton
  struct Attached {
    std::string name;
    int fd = -1;  // the skeleton's, valid while it lives
  };
  std::vector<Attached> attached_;
  Fd stats_fd_;  // BPF_ENABLE_STATS: the statistics count while it is open
  std::string stats_error_;
  std::unique_ptr<ring_buffer, void (*)(ring_buffer*)> ring_{nullptr, nullptr};
  const RecordSink* sink_ = nullptr;
  int delivered_ = 0;
  std::size_t max_records_ = 0;
  std::size_t ring_bytes_ = 0;
};

}  // namespace portlens
