#include "agent/kernel/bpf_tracer.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <string>
#include <thread>
#include <vector>

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
  skel_ = portlens_bpf__open();
  if (skel_ == nullptr) {
    const int err = errno;
    throw Error("cannot open the BPF object: " + errno_text(err) + load_failure_hint(err));
  }
  skel_->rodata->targ_tgid = config.pid_filter;
  skel_->rodata->targ_netns = config.netns_filter;
  // The programs wake poll() only past half the ring (or for a failed call): poll() drains the
  // rest on its own interval, so a burst still has half the ring to land in.
  skel_->rodata->wakeup_bytes = ring_bytes_ / 2;
  int rc = bpf_map__set_max_entries(skel_->maps.events, static_cast<__u32>(ring_bytes_));
  if (rc == 0) {
    rc = portlens_bpf__load(skel_);
  }
  if (rc != 0) {
    portlens_bpf__destroy(skel_);
    skel_ = nullptr;
    throw Error("cannot load the BPF programs: " + errno_text(rc) + load_failure_hint(-rc) +
                "; run with -v for the verifier's log");
  }

  std::vector<std::pair<bpf_program*, bpf_link**>> wanted;
  if (config.syscalls) {
    wanted.insert(wanted.end(), {{skel_->progs.sys_enter_bind, &skel_->links.sys_enter_bind},
                                 {skel_->progs.sys_exit_bind, &skel_->links.sys_exit_bind},
                                 {skel_->progs.sys_enter_listen, &skel_->links.sys_enter_listen},
                                 {skel_->progs.sys_exit_listen, &skel_->links.sys_exit_listen},
                                 {skel_->progs.sys_enter_connect, &skel_->links.sys_enter_connect},
                                 {skel_->progs.sys_exit_connect, &skel_->links.sys_exit_connect}});
  }
  if (config.tcp_states) {
    wanted.insert(wanted.end(),
                  {{skel_->progs.inet_sock_set_state, &skel_->links.inet_sock_set_state},
                   {skel_->progs.tcp_receive_reset, &skel_->links.tcp_receive_reset},
                   {skel_->progs.tcp_destroy_sock, &skel_->links.tcp_destroy_sock}});
  }
  for (auto [prog, link] : wanted) {
    *link = bpf_program__attach(prog);
    if (*link == nullptr) {
      const int err = errno;
      const std::string name = bpf_program__section_name(prog);
      portlens_bpf__destroy(skel_);  // detaches what was attached so far
      skel_ = nullptr;
      throw Error("cannot attach " + name + ": " + errno_text(err) + load_failure_hint(err));
    }
  }

  ring_ = ring_buffer__new(bpf_map__fd(skel_->maps.events), &BpfTracer::on_record, this, nullptr);
  if (ring_ == nullptr) {
    const int err = errno;
    portlens_bpf__destroy(skel_);
    skel_ = nullptr;
    throw Error("cannot map the BPF ring buffer: " + errno_text(err) + load_failure_hint(err));
  }
}

BpfTracer::~BpfTracer() {
  ring_buffer__free(ring_);
  if (skel_ == nullptr) {
    return;
  }
  // Unregistering a tracepoint waits for an RCU grace period, about 100 ms each on this kernel;
  // detaching the links side by side lets the waits overlap (800 ms -> one grace period).
  std::vector<std::thread> detachers;
  for (bpf_link** link :
       {&skel_->links.sys_enter_bind, &skel_->links.sys_exit_bind, &skel_->links.sys_enter_listen,
        &skel_->links.sys_exit_listen, &skel_->links.sys_enter_connect,
        &skel_->links.sys_exit_connect, &skel_->links.inet_sock_set_state,
        &skel_->links.tcp_receive_reset, &skel_->links.tcp_destroy_sock}) {
    if (*link != nullptr) {
      detachers.emplace_back([link] {
        bpf_link__destroy(*link);
        *link = nullptr;
      });
    }
  }
  for (auto& t : detachers) {
    t.join();
  }
  portlens_bpf__destroy(skel_);
}

int BpfTracer::on_record(void* ctx, void* data, std::size_t size) {
  auto* self = static_cast<BpfTracer*>(ctx);
  (*self->sink_)(std::span<const std::byte>(static_cast<const std::byte*>(data), size));
  ++self->delivered_;
  return 0;
}

int BpfTracer::poll(std::chrono::milliseconds timeout, const RecordSink& sink) {
  sink_ = &sink;
  delivered_ = 0;
  // Most records come without a wakeup (submit_flags() in bpf/common.bpf.h): take what is
  // there, and only when nothing is, wait; a wait that ends without a wakeup (the timeout)
  // still takes what arrived meanwhile, so a record waits at most one timeout.
  int rc = ring_buffer__consume(ring_);
  if (rc == 0 && timeout.count() > 0) {
    rc = ring_buffer__poll(ring_, static_cast<int>(timeout.count()));
    if (rc == 0) {
      rc = ring_buffer__consume(ring_);
    }
  }
  sink_ = nullptr;
  if (rc < 0 && rc != -EINTR) {
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
