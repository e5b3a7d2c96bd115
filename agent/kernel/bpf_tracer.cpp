#include "agent/kernel/bpf_tracer.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "agent/kernel/netns_config.hpp"
#include "agent/model/error.hpp"
#include "bpf/events.h"
#include "portlens.skel.h"

namespace portlens {
namespace {

std::string load_failure_hint(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return " (run as root, or grant CAP_BPF and CAP_PERFMON; in a container, also "
             "allow the bpf() system call)";
    case ENOENT:
      return " (a tracepoint or kernel type is missing: the kernel may be too old or lack BTF)";
    case ENOMEM:
      return " (locked-memory limit too low or --ring-buffer-size too large)";
    default:
      return "";
  }
}

}  // namespace

std::size_t ring_size_for(std::size_t requested_bytes) {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return std::bit_ceil(std::max(requested_bytes, page));
}

BpfTracer::BpfTracer(const TracerConfig& config) : ring_bytes_(ring_size_for(config.ring_bytes)) {
  // The UDP rule probe makes a failing bind() of its own; made before the programs attach, the
  // agent and `trace` never see it (docs/kernel-rules.md 3).
  static_cast<void>(udp_first_contender_decides());
  skel_ = adopt_skeleton(portlens_bpf__open(), &portlens_bpf__destroy);
  if (!skel_) {
    const int err = errno;
    throw Error("cannot open the BPF object: " + errno_text(err) + load_failure_hint(err));
  }
  check_abi(skel_->rodata->pl_abi_version, "tracer");
  skel_->rodata->targ_tgid = config.pid_filter;
  skel_->rodata->targ_netns = config.netns_filter;
  // The programs wake poll() only past half the ring (or for a failed call): poll() drains the
  // rest on its own interval, so a burst still has half the ring to land in.
  skel_->rodata->wakeup_bytes = ring_bytes_ / 2;
  int rc = bpf_map__set_max_entries(skel_->maps.events, static_cast<__u32>(ring_bytes_));
  if (rc == 0) {
    rc = portlens_bpf__load(skel_.get());
  }
  if (rc != 0) {
    throw Error("cannot load the BPF programs: " + errno_text(rc) + load_failure_hint(-rc) +
                "; run with -v for the verifier's log");
  }

  // Every program of the object, by its section: the syscall tracepoints for the calls, the
  // rest (tp_btf) for the socket's states. Adding a program needs no list here.
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, skel_->obj) {
    const std::string section = bpf_program__section_name(prog);
    const bool syscall = section.starts_with("tracepoint/syscalls/");
    if (syscall ? !config.syscalls : !config.tcp_states) {
      continue;
    }
    LinkPtr link(bpf_program__attach(prog));
    if (!link) {
      const int err = errno;
      throw Error("cannot attach " + section + ": " + errno_text(err) + load_failure_hint(err));
    }
    links_.push_back(std::move(link));
    attached_.push_back(Attached{bpf_program__name(prog), bpf_program__fd(prog)});
  }
  if (config.enable_stats) {
    stats_fd_.reset(bpf_enable_stats(BPF_STATS_RUN_TIME));
    if (!stats_fd_) {
      stats_error_ = "BPF_ENABLE_STATS: " + errno_text(errno);
    }
  }

  ring_ = {ring_buffer__new(bpf_map__fd(skel_->maps.events), &BpfTracer::on_record, this, nullptr),
           &ring_buffer__free};
  if (!ring_) {
    const int err = errno;
    throw Error("cannot map the BPF ring buffer: " + errno_text(err) + load_failure_hint(err));
  }
}

BpfTracer::~BpfTracer() {
  ring_.reset();
  // Unregistering a tracepoint waits for an RCU grace period, about 100 ms each on this kernel;
  // detaching the links side by side lets the waits overlap (800 ms -> one grace period).
  std::vector<std::thread> detachers;
  detachers.reserve(links_.size());
  for (LinkPtr& link : links_) {
    detachers.emplace_back([&link] { link.reset(); });
  }
  for (auto& t : detachers) {
    t.join();
  }
}

namespace {
// What on_record returns to stop libbpf's loop once enough records are handed over. libbpf
// moves the consumer past a record before its callback runs, so the record that returns this
// is taken, not lost; the loop stops and returns the code, which poll() reads as success.
constexpr int kEnough = -ECANCELED;
}  // namespace

int BpfTracer::on_record(void* ctx, void* data, std::size_t size) {
  auto* self = static_cast<BpfTracer*>(ctx);
  (*self->sink_)(std::span<const std::byte>(static_cast<const std::byte*>(data), size));
  ++self->delivered_;
  return static_cast<std::size_t>(self->delivered_) >= self->max_records_ ? kEnough : 0;
}

std::vector<BpfProgramStats> BpfTracer::program_stats() const {
  std::vector<BpfProgramStats> out;
  out.reserve(attached_.size());
  for (const Attached& a : attached_) {
    bpf_prog_info info{};
    __u32 len = sizeof info;
    if (bpf_obj_get_info_by_fd(a.fd, &info, &len) == 0) {
      out.push_back(BpfProgramStats{a.name, info.run_time_ns, info.run_cnt});
    }
  }
  return out;
}

bool BpfTracer::stats_counting() const {
  if (stats_fd_) {
    return true;
  }
  // The sysctl an administrator may have set (it reads back what was written to it).
  std::ifstream in("/proc/sys/kernel/bpf_stats_enabled");
  int on = 0;
  return (in >> on) && on != 0;
}

int BpfTracer::poll(std::chrono::milliseconds timeout, const RecordSink& sink,
                    std::size_t max_records) {
  if (max_records == 0) {
    return 0;
  }
  sink_ = &sink;
  delivered_ = 0;
  max_records_ = std::min<std::size_t>(max_records, std::numeric_limits<int>::max());
  // Most records come without a wakeup (submit_flags() in bpf/common.bpf.h): take what is
  // there, and only when nothing is, wait; a wait that ends without a wakeup (the timeout)
  // still takes what arrived meanwhile, so a record waits at most one timeout.
  int rc = ring_buffer__consume(ring_.get());
  if (rc == 0 && timeout.count() > 0) {
    rc = ring_buffer__poll(ring_.get(), static_cast<int>(timeout.count()));
    if (rc == 0) {
      rc = ring_buffer__consume(ring_.get());
    }
  }
  sink_ = nullptr;
  if (rc < 0 && rc != -EINTR && rc != kEnough) {
    throw Error("reading the BPF ring buffer failed: " + errno_text(rc));
  }
  return delivered_;
}

DropCounters BpfTracer::drops() const {
  const int ncpus = libbpf_num_possible_cpus();
  DropCounters out;
  if (ncpus <= 0) {
    return out;
  }
  std::vector<__u64> per_cpu(static_cast<std::size_t>(ncpus));
  const int fd = bpf_map__fd(skel_->maps.counters);
  const auto sum = [&](__u32 key) {
    std::uint64_t total = 0;
    if (bpf_map_lookup_elem(fd, &key, per_cpu.data()) == 0) {
      for (const auto v : per_cpu) {
        total += v;
      }
    }
    return total;
  };
  out.ringbuf_full = sum(PL_CNT_RINGBUF_FULL);
  out.inflight_full = sum(PL_CNT_INFLIGHT_FULL);
  return out;
}

}  // namespace portlens
