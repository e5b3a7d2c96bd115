#include "agent/kernel/snapshot.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <thread>
#include <unordered_set>

#include "agent/kernel/netns_config.hpp"
#include "agent/kernel/sock_diag.hpp"
#include "agent/model/error.hpp"
#include "agent/model/fd.hpp"
#include "snapshot.skel.h"

namespace portlens {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint16_t kIpprotoTcp = 6;
constexpr std::uint16_t kIpprotoUdp = 17;

std::string load_hint(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return " (run as root, or grant CAP_BPF and CAP_PERFMON)";
    case ENOENT:
    case EINVAL:
    case ESRCH:
      return " (the kernel lacks BPF socket iterators or BTF: 5.14+ with CONFIG_DEBUG_INFO_BTF "
             "is needed; use the sock_diag snapshot instead)";
    default:
      return "";
  }
}

Endpoint endpoint_of(const pl_endpoint& ep) {
  Endpoint out;
  if (ep.family == PL_AF_INET) {
    std::array<std::uint8_t, 4> bytes{};
    std::memcpy(bytes.data(), ep.addr, bytes.size());
    out.addr = IpAddress::v4(bytes);
  } else {
    std::array<std::uint8_t, 16> bytes{};
    std::memcpy(bytes.data(), ep.addr, bytes.size());
    out.addr = IpAddress::v6(bytes);
  }
  out.port = ep.port;
  return out;
}

// What the clock_sample program reads: jiffies now, and two sysctls kept in jiffies.
struct ClockSample {
  std::uint64_t jiffies = 0;
  std::uint64_t fin_timeout = 0;     // net.ipv4.tcp_fin_timeout
  std::uint64_t keepalive_time = 0;  // net.ipv4.tcp_keepalive_time

  bool operator==(const ClockSample&) const = default;
};

ClockSample sample_clock(int prog_fd) {
  std::array<__u64, 3> ctx{};
  bpf_test_run_opts opts{};
  opts.sz = sizeof opts;
  opts.ctx_in = ctx.data();  // a syscall program's context is copied back to ctx_in
  opts.ctx_size_in = sizeof ctx;
  if (bpf_prog_test_run_opts(prog_fd, &opts) != 0) {
    throw Error("cannot read the kernel's jiffies: " + errno_text(errno) + load_hint(errno));
  }
  return {ctx[0], ctx[1], ctx[2]};
}

// A sysctl in whole seconds, as /proc/sys/net of the calling thread's netns shows it.
std::optional<long> sysctl_seconds(const char* path) {
  std::ifstream f(path);
  std::string text;
  if (!f || !std::getline(f, text)) {
    return std::nullopt;
  }
  return parse_sysctl_int(text, 1, 1L << 30);
}

// Spins until jiffies moves: the moment of a tick, as seen from here.
std::pair<std::uint64_t, Clock::time_point> next_tick(int prog_fd) {
  const std::uint64_t start = sample_clock(prog_fd).jiffies;
  const auto deadline = Clock::now() + std::chrono::seconds(1);
  for (;;) {
    const std::uint64_t now = sample_clock(prog_fd).jiffies;
    const auto at = Clock::now();
    if (now != start) {
      return {now, at};
    }
    if (at > deadline) {
      throw Error("the kernel's jiffies did not advance for a second; cannot measure HZ");
    }
  }
}

// HZ, exactly, from a jiffies sysctl and its seconds (the same netns: this thread's); timed
// against CLOCK_MONOTONIC only when both sysctls are unusable (0, or changed meanwhile).
unsigned measure_hz(int prog_fd) {
  const ClockSample before = sample_clock(prog_fd);
  const auto fin_seconds = sysctl_seconds("/proc/sys/net/ipv4/tcp_fin_timeout");
  const auto keepalive_seconds = sysctl_seconds("/proc/sys/net/ipv4/tcp_keepalive_time");
  const ClockSample after = sample_clock(prog_fd);
  if (before.fin_timeout == after.fin_timeout && fin_seconds) {
    if (const auto hz = hz_from_sysctl(before.fin_timeout, *fin_seconds)) {
      return *hz;
    }
  }
  if (before.keepalive_time == after.keepalive_time && keepalive_seconds) {
    if (const auto hz = hz_from_sysctl(before.keepalive_time, *keepalive_seconds)) {
      return *hz;
    }
  }
  // Tick edge to tick edge: off by at most the lag of one edge, under 1 % over half a second.
  const auto [j0, t0] = next_tick(prog_fd);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto [j1, t1] = next_tick(prog_fd);
  return hz_from_measurement(j1 - j0, std::chrono::duration<double>(t1 - t0).count());
}

}  // namespace

// Reads an iterator to its end, handing each whole record to sink. Records may straddle reads.
void read_iterator(bpf_link* link, const char* what,
                   const std::function<void(const pl_sock_record&)>& sink) {
  const Fd fd(bpf_iter_create(bpf_link__fd(link)));
  if (!fd) {
    throw Error(std::string("cannot start the ") + what + " iterator: " + errno_text(errno));
  }
  constexpr std::size_t kRecord = sizeof(pl_sock_record);
  std::vector<std::byte> buf(std::size_t{256} << 10);
  std::size_t have = 0;
  for (;;) {
    const ssize_t n = read(fd.get(), buf.data() + have, buf.size() - have);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      const int err = errno;
      throw Error(std::string("reading the ") + what + " iterator failed: " + errno_text(err));
    }
    if (n == 0) {
      break;
    }
    have += static_cast<std::size_t>(n);
    std::size_t used = 0;
    for (; have - used >= kRecord; used += kRecord) {
      pl_sock_record record;
      std::memcpy(&record, buf.data() + used, kRecord);
      sink(record);
    }
    std::memmove(buf.data(), buf.data() + used, have - used);
    have -= used;
  }
}

std::optional<unsigned> hz_from_sysctl(std::uint64_t jiffies, long seconds) {
  // proc_dointvec_jiffies() stores seconds * HZ, so a value set through /proc divides exactly.
  if (seconds <= 0 || jiffies % static_cast<std::uint64_t>(seconds) != 0) {
    return std::nullopt;
  }
  const std::uint64_t hz = jiffies / static_cast<std::uint64_t>(seconds);
  if (hz < 10 || hz > 10000) {
    return std::nullopt;
  }
  return static_cast<unsigned>(hz);
}

unsigned hz_from_measurement(std::uint64_t jiffies_delta, double elapsed_seconds) {
  if (elapsed_seconds <= 0) {
    return 0;
  }
  const double measured = static_cast<double>(jiffies_delta) / elapsed_seconds;
  // The CONFIG_HZ values Linux architectures offer.
  constexpr std::array<unsigned, 14> kChoices{24,  32,  48,  64,  100, 128,  200,
                                              250, 256, 300, 500, 512, 1000, 1024};
  for (const unsigned hz : kChoices) {
    if (std::abs(measured - hz) <= hz * 0.012) {
      return hz;
    }
  }
  return static_cast<unsigned>(std::lround(measured));
}

std::optional<SocketEntry> decode_sock_record(const pl_sock_record& r, unsigned hz) {
  SocketEntry e;
  if (r.protocol == kIpprotoTcp) {
    e.proto = Proto::kTcp;
  } else if (r.protocol == kIpprotoUdp) {
    e.proto = Proto::kUdp;
  } else {
    return std::nullopt;
  }
  if ((r.local.family != PL_AF_INET && r.local.family != PL_AF_INET6) ||
      r.remote.family != r.local.family) {
    return std::nullopt;
  }
  const bool time_wait = (r.flags & PL_SR_F_TIMEWAIT) != 0;
  if (e.proto == Proto::kTcp) {
    e.state = tcp_state_from_int(r.state);
    if (!e.state || *e.state == TcpState::kNewSynRecv) {
      return std::nullopt;
    }
    if (time_wait) {
      e.state = TcpState::kTimeWait;
      e.time_wait_substate = tcp_state_from_int(r.tw_substate);
      e.timestamps = (r.flags & PL_SR_F_TW_TIMESTAMPS) != 0;
      if ((r.flags & PL_SR_F_TW_TIMER) != 0 && hz != 0) {
        // Both jiffies values were read by the program in one run; a timer already past but
        // not yet run counts as 0 (jiffies_delta_to_msecs), and jiffies_to_msecs rounds up.
        const auto left = static_cast<std::int64_t>(r.tw_expires - r.now_jiffies);
        const std::int64_t ms = left <= 0 ? 0 : (left * 1000 + hz - 1) / hz;
        e.time_wait_remaining = std::chrono::milliseconds(ms);
      }
    }
  }
  e.local = endpoint_of(r.local);
  if (r.remote.port != 0) {
    e.remote = endpoint_of(r.remote);
  }
  e.netns = r.netns;
  e.reuseaddr = r.reuse != 0;  // SK_CAN_REUSE or SK_FORCE_REUSE
  e.reuseport = (r.flags & PL_SR_F_REUSEPORT) != 0;
  e.v6only = (r.flags & PL_SR_F_V6ONLY) != 0;
  e.bound_dev_if = r.bound_dev_if;
  if ((r.flags & PL_SR_F_FULL) != 0) {
    e.uid = r.uid;
    e.inode = r.ino;
    // SOCK_BINDPORT_LOCK: set by __inet_bind() for an explicit port; sk_clone_lock() clears it
    // on accepted children, so for TCP the bind bucket below is the better witness.
    e.explicit_port = (r.flags & PL_SR_F_BINDPORT_LOCK) != 0;
  }
  if ((r.flags & PL_SR_F_BUCKET_READ) != 0) {
    e.explicit_port = (r.flags & PL_SR_F_BUCKET_BOUND) != 0;
    TcpBindBucket b;
    // __s8 fields holding -1, 0, 1 or 2: the sign extension is what is meant.
    b.fastreuse = r.fastreuse;          // NOLINT(bugprone-signed-char-misuse)
    b.fastreuseport = r.fastreuseport;  // NOLINT(bugprone-signed-char-misuse)
    b.fastuid = r.fastuid;
    b.fast_family = r.fast_sk_family == PL_AF_INET6 ? Family::kIpv6 : Family::kIpv4;
    std::array<std::uint8_t, 4> v4{};
    std::memcpy(v4.data(), r.fast_rcv_saddr, v4.size());
    b.fast_rcv_saddr = IpAddress::v4(v4);
    std::array<std::uint8_t, 16> v6{};
    std::memcpy(v6.data(), r.fast_v6_rcv_saddr, v6.size());
    b.fast_v6_rcv_saddr = IpAddress::v6(v6);
    b.fast_ipv6_only = r.fast_ipv6_only != 0;
    b.l3mdev = r.bucket_l3mdev;
    e.bind_bucket = b;
  }
  if ((r.flags & PL_SR_F_V4_RCV_SADDR) != 0 && r.local.family == PL_AF_INET6) {
    std::array<std::uint8_t, 4> v4{};
    std::memcpy(v4.data(), r.v4_rcv_saddr, v4.size());
    e.v4_rcv_saddr = IpAddress::v4(v4);
  }
  if ((r.flags & PL_SR_F_UDP_CHAIN) != 0 && e.proto == Proto::kUdp) {
    e.udp_chain_position = r.udp_chain_pos;
    e.udp_slot_count = r.udp_slot_count;
  }
  e.sock_id = r.sk;
  return e;
}

std::optional<ListenQueue> decode_listen_queue(const pl_sock_record& r) {
  if ((r.flags & PL_SR_F_LISTEN_QUEUE) == 0 || r.protocol != kIpprotoTcp ||
      (r.local.family != PL_AF_INET && r.local.family != PL_AF_INET6)) {
    return std::nullopt;
  }
  ListenQueue q;
  q.sock_id = r.sk;
  q.inode = r.ino;
  q.netns = r.netns;
  q.local = endpoint_of(r.local);
  q.length = r.ack_backlog;
  q.limit = r.max_ack_backlog;
  q.syn_queue = r.syn_qlen;
  return q;
}

SocketSnapshotter::SocketSnapshotter(SnapshotOptions options) : options_(options) {
  if (options_.mode == SnapshotMode::kSockDiag) {
    source_ = SnapshotSource::kSockDiag;
    return;
  }
  try {
    load();
    source_ = SnapshotSource::kBpfIterator;
  } catch (const Error& e) {
    if (options_.mode == SnapshotMode::kBpfIterator) {
      throw;
    }
    fallback_reason_ = e.what();
    source_ = SnapshotSource::kSockDiag;
    iterators_.clear();
    skel_.reset();
  }
}

SocketSnapshotter::~SocketSnapshotter() = default;

void SocketSnapshotter::load() {
  skel_ = adopt_skeleton(snapshot_bpf__open(), &snapshot_bpf__destroy);
  if (!skel_) {
    const int err = errno;
    throw Error("cannot open the snapshot BPF object: " + errno_text(err) + load_hint(err));
  }
  check_abi(skel_->rodata->pl_abi_version, "snapshot");
  const int rc = snapshot_bpf__load(skel_.get());
  if (rc != 0) {
    throw Error("cannot load the snapshot BPF programs: " + errno_text(rc) + load_hint(-rc) +
                "; run with -v for the verifier's log");
  }
  // Every iterator program of the object, by its section: adding one needs no list here.
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, skel_->obj) {
    const std::string section = bpf_program__section_name(prog);
    if (!section.starts_with("iter/")) {
      continue;
    }
    LinkPtr link(bpf_program__attach_iter(prog, nullptr));
    if (!link) {
      const int err = errno;
      throw Error("cannot attach " + section + ": " + errno_text(err) + load_hint(err));
    }
    iterators_.emplace(section, std::move(link));
  }
  hz_ = measure_hz(bpf_program__fd(skel_->progs.clock_sample));
}

bpf_link* SocketSnapshotter::iterator(std::string_view section) const {
  const auto it = iterators_.find(section);
  if (it == iterators_.end()) {
    throw Error("the snapshot BPF object has no " + std::string(section) + " program");
  }
  return it->second.get();
}

Snapshot SocketSnapshotter::take(const NetnsRef& ns, bool compact) const {
  Snapshot out;
  out.source = source_;
  const auto start = Clock::now();
  run_in_netns(ns, [&](std::uint64_t inode) {
    out.netns = inode;
    out.cookie = current_netns_cookie();
    take_in_netns(&out, compact);
  });
  out.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  return out;
}

void SocketSnapshotter::take_in_netns(Snapshot* out, bool compact) const {
  if (source_ == SnapshotSource::kBpfIterator) {
    read_iterators(out, compact);
  } else {
    out->truncated = sock_diag_list(out->netns, options_.max_entries, &out->table.sockets,
                                    &out->table.listen_queues);
    if (compact) {
      make_compact(*out);
    }
  }
  out->table.netns_config[out->netns] = read_netns_port_config(&out->problems);
}

void SocketSnapshotter::read_iterators(Snapshot* out, bool compact) const {
  auto& sockets = out->table.sockets;
  const auto kept = [&] { return compact ? out->compact.size() : sockets.size(); };
  const auto keep = [&](const pl_sock_record& record) {
    // The iterators see only this netns; the check guards against a kernel that differs.
    if (record.netns != out->netns) {
      return;
    }
    auto entry = decode_sock_record(record, hz_);
    if (!entry) {
      return;
    }
    if (kept() >= options_.max_entries) {
      ++out->truncated;
      return;
    }
    if (auto queue = decode_listen_queue(record)) {
      out->table.listen_queues.push_back(*queue);  // one per listener kept: bounded as they are
    }
    if (compact) {
      out->compact.push_back(*entry);
    } else {
      sockets.push_back(std::move(*entry));
    }
  };
  read_iterator(iterator("iter/tcp"), "iter/tcp", keep);
  read_iterator(iterator("iter/udp"), "iter/udp", keep);
  // A bound-only socket held by several descriptors (fork, SCM_RIGHTS) comes once per holder.
  std::unordered_set<std::uint64_t> bound_seen;
  read_iterator(iterator("iter/task_file"), "iter/task_file", [&](const pl_sock_record& record) {
    if (bound_seen.insert(record.sk).second) {
      keep(record);
    }
  });
  if (compact) {
    out->compact.seal();
    out->is_compact = true;
  }
}

}  // namespace portlens
