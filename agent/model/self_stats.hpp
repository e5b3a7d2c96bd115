// What the agent knows about itself, for its self-metrics: the process's resources (read from
// /proc/self by agent/kernel/self_stats) and each of its BPF programs' run time (the kernel's
// program statistics, read by BpfTracer). Plain values: the exporters turn them into
// Prometheus's process_* families and portlens_bpf_program_*.
#pragma once

#include <cstdint>
#include <string>

namespace portlens {

// Prometheus's standard process metrics, with their semantics (client_golang's process
// collector): CPU is user + system time, memory is bytes, max_fds the soft RLIMIT_NOFILE,
// virtual_max_bytes the soft RLIMIT_AS (RLIM_INFINITY as is), start_time seconds since the epoch.
struct ProcessStats {
  double cpu_seconds = 0;
  double resident_bytes = 0;
  double virtual_bytes = 0;
  double virtual_max_bytes = 0;
  double open_fds = 0;
  double max_fds = 0;
  double start_time_seconds = 0;
};

// One attached BPF program: its name in the object (the C function's) and the kernel's counters
// of it. Both counters stay 0 while the kernel's program statistics are off.
struct BpfProgramStats {
  std::string name;
  std::uint64_t run_time_ns = 0;
  std::uint64_t run_count = 0;
};

}  // namespace portlens
