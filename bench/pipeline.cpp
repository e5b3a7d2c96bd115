// Section 1: the userspace pipeline, single thread, from recorded events. A realistic stream of
// pl_event records (what the ring buffer carries) is generated in memory: connection churn on
// loopback and outbound, every TCP state change through FIN_WAIT2->CLOSE (a TIME_WAIT), binds,
// listens, and now and then a failed bind() or connect(). Each run replays it through a fresh
// EventPipeline, the agent's own (agent/live/pipeline.hpp), with stand-ins for the ring (the
// recorded records, 1,024 per wakeup), the snapshot (a prebuilt table) and /proc (no owners).
// No I/O is timed.
#include "agent/live/pipeline.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "agent/diagnose/diagnoser.hpp"
#include "agent/live/judge.hpp"
#include "agent/live/sources.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/event.hpp"
#include "bench/sections.hpp"
#include "exporters/findings.hpp"
#include "exporters/scrape_input.hpp"

namespace portlens::bench {
namespace {

constexpr std::uint32_t kNetns = 4026532001U;
constexpr std::uint64_t kEventSpacingNs = 4'000;  // ~250k events/s: ~20k connections/s
constexpr std::size_t kBatch = 1024;              // the agent applies what one poll returned
constexpr std::uint32_t kLoopback = 0x7f000001U;  // 127.0.0.1
constexpr std::uint16_t kFirstServerPort = 8000;
constexpr int kServers = 16;

enum : std::uint8_t {
  kEstablished = 1,
  kSynSent = 2,
  kSynRecv = 3,
  kFinWait1 = 4,
  kFinWait2 = 5,
  kClose = 7,
  kCloseWait = 8,
  kLastAck = 9,
  kListen = 10,
};

void set_v4(pl_endpoint& ep, std::uint32_t addr, std::uint16_t port) {
  ep = pl_endpoint{};
  ep.family = PL_AF_INET;
  ep.port = port;
  ep.addr[0] = static_cast<__u8>(addr >> 24);
  ep.addr[1] = static_cast<__u8>(addr >> 16);
  ep.addr[2] = static_cast<__u8>(addr >> 8);
  ep.addr[3] = static_cast<__u8>(addr);
}

void set_v6_loopback(pl_endpoint& ep, std::uint16_t port) {
  ep = pl_endpoint{};
  ep.family = PL_AF_INET6;
  ep.port = port;
  ep.addr[15] = 1;
}

struct Task {
  std::uint32_t pid = 0;
  const char* comm = "";
};

constexpr std::array<Task, 5> kClients = {
    {{2101, "curl"}, {2102, "python3"}, {2103, "java"}, {2104, "node"}, {2105, "envoy"}}};
constexpr Task kServer{1000, "nginx"};

// One socket's events in kernel order, with the timestamps filled when emitted.
struct Flow {
  std::vector<pl_event> events;
  std::size_t next = 0;
};

class StreamGenerator {
 public:
  explicit StreamGenerator(std::size_t failure_every) : failure_every_(failure_every) {}

  std::vector<pl_event> generate(std::size_t count) {
    std::vector<pl_event> out;
    out.reserve(count);
    for (int i = 0; i < kServers; ++i) {  // the services, before the churn starts
      for (auto& e : listener(static_cast<std::uint16_t>(kFirstServerPort + i))) {
        emit(out, e);
      }
    }
    std::vector<Flow> active(kConcurrent);
    for (auto& f : active) {
      f = next_flow();
    }
    std::size_t since_failure = 0;
    while (out.size() < count) {
      if (failure_every_ > 0 && ++since_failure >= failure_every_) {
        since_failure = 0;
        for (auto& e : failure()) {
          emit(out, e);
        }
        continue;
      }
      // Interleave the flows in flight, as concurrent connections interleave on a host.
      Flow& f = active[rng_() % active.size()];
      emit(out, f.events[f.next++]);
      if (f.next == f.events.size()) {
        f = next_flow();
      }
    }
    out.resize(count);
    return out;
  }

  // What a snapshot taken before the stream would hold: the listeners (the same sockets the
  // stream shows), long-lived connections and older TIME_WAITs. Stands in for the cached
  // snapshot in the diagnosis path.
  [[nodiscard]] SocketTable prebuilt_table() const {
    SocketTable table;
    for (const auto& [port, sk] : listeners_) {
      SocketEntry s;
      s.state = TcpState::kListen;
      s.local = Endpoint{IpAddress::any_v4(), port};
      s.netns = kNetns;
      s.reuseaddr = true;
      s.reuseport = false;
      s.v6only = false;
      s.bound_dev_if = 0;
      s.uid = 0;
      s.explicit_port = true;
      s.inode = 100'000 + port;
      s.sock_id = sk;
      s.owner = SocketOwner{kServer.pid, kServer.comm};
      table.sockets.push_back(s);
    }
    for (std::uint32_t i = 0; i < 3000; ++i) {
      SocketEntry s;
      s.netns = kNetns;
      s.local = Endpoint{IpAddress::v4(kLoopback), static_cast<std::uint16_t>(20000 + i)};
      s.remote = Endpoint{IpAddress::v4(0x7f000300U + (i % 200)), 5432};
      s.reuseaddr = false;
      s.reuseport = false;
      s.v6only = false;
      s.bound_dev_if = 0;
      if (i < 1000) {
        s.state = TcpState::kEstablished;
        s.uid = 1000;
        s.inode = 200'000 + i;
        s.sock_id = 0xffff'9000'0000'0000ULL + i * 2048ULL;
        s.owner = SocketOwner{kClients[2].pid, kClients[2].comm};
      } else {
        s.state = TcpState::kTimeWait;
        s.time_wait_substate = TcpState::kTimeWait;
        s.time_wait_remaining = std::chrono::milliseconds(30'000);
        s.timestamps = true;
      }
      table.sockets.push_back(s);
    }
    table.netns_config[kNetns] = NetnsPortConfig{};
    return table;
  }

 private:
  static constexpr std::size_t kConcurrent = 64;

  void emit(std::vector<pl_event>& out, pl_event e) {
    ts_ += kEventSpacingNs;
    e.ts_ns = ts_;
    out.push_back(e);
  }

  std::uint64_t new_sk() {
    next_sk_ += 2048;  // struct sock allocations: distinct, aligned kernel addresses
    return next_sk_;
  }

  static pl_event base(std::uint16_t type, std::uint64_t sk, const Task& task, bool v6 = false) {
    pl_event e{};
    e.type = type;
    e.sk = sk;
    e.pid = task.pid;
    e.tid = task.pid;
    e.uid = task.pid == kServer.pid ? 0 : 1000;
    e.sock_uid = e.uid;
    e.netns = kNetns;
    e.fd = -1;
    e.sock_family = v6 ? AF_INET6 : AF_INET;
    e.sock_type = SOCK_STREAM;
    e.protocol = IPPROTO_TCP;
    e.flags = PL_F_OPTS_VALID;
    e.cgroup_id = 4242;
    std::strncpy(e.comm, task.comm, sizeof e.comm - 1);
    return e;
  }

  static pl_event state(std::uint64_t sk, const Task& task, std::uint8_t from, std::uint8_t to,
                        const pl_endpoint& local, const pl_endpoint& remote) {
    const bool v6 = local.family == PL_AF_INET6;
    pl_event e = base(PL_EV_STATE, sk, task, v6);
    e.old_state = from;
    e.new_state = to;
    e.local = local;
    e.remote = remote;
    return e;
  }

  static pl_event destroy(std::uint64_t sk, const Task& task, const pl_endpoint& local,
                          const pl_endpoint& remote) {
    pl_event e = base(PL_EV_DESTROY, sk, task, local.family == PL_AF_INET6);
    e.flags = 0;
    e.old_state = kClose;
    e.new_state = kClose;
    e.local = local;
    e.remote = remote;
    return e;
  }

  std::vector<pl_event> listener(std::uint16_t port) {
    const std::uint64_t sk = new_sk();
    listeners_[port] = sk;
    pl_endpoint any;
    set_v4(any, 0, port);
    pl_endpoint none{};
    pl_event bind = base(PL_EV_BIND, sk, kServer);
    bind.opts.reuseaddr = 1;
    bind.flags |= PL_F_REQ_VALID;
    bind.req = any;
    bind.local = any;
    bind.fd = 6;
    pl_event to_listen = state(sk, kServer, kClose, kListen, any, none);
    to_listen.opts.reuseaddr = 1;
    pl_event listen = base(PL_EV_LISTEN, sk, kServer);
    listen.opts.reuseaddr = 1;
    listen.local = any;
    listen.enter_port = port;
    listen.backlog = 4096;
    listen.fd = 6;
    return {bind, to_listen, listen};
  }

  std::uint16_t ephemeral_port() {
    next_port_ = next_port_ >= 60999 ? 32768 : next_port_ + 1;
    return next_port_;
  }

  const Task& client_task() { return kClients[rng_() % kClients.size()]; }

  Flow next_flow() {
    const auto dice = rng_() % 100;
    if (dice < 80) {
      return local_connection(dice < 8, false);
    }
    if (dice < 95) {
      return outbound_connection();
    }
    return local_connection(false, true);
  }

  // A client and the server child of one loopback connection, closed client-first: the client
  // ends in TIME_WAIT, the server child goes LAST_ACK->CLOSE. explicit_bind: bind() first.
  Flow local_connection(bool v6, bool explicit_bind) {
    const Task& task = client_task();
    const std::uint64_t c = new_sk();
    const std::uint64_t s = new_sk();
    const auto server_port = static_cast<std::uint16_t>(kFirstServerPort + rng_() % kServers);
    const std::uint16_t port = ephemeral_port();
    pl_endpoint cl;
    pl_endpoint cl0;
    pl_endpoint sv;
    if (v6) {
      set_v6_loopback(cl, port);
      set_v6_loopback(cl0, 0);
      set_v6_loopback(sv, server_port);
    } else {
      set_v4(cl, kLoopback, port);
      set_v4(cl0, kLoopback, 0);
      set_v4(sv, kLoopback, server_port);
    }
    Flow f;
    auto& ev = f.events;
    if (explicit_bind) {
      pl_event bind = base(PL_EV_BIND, c, task);
      bind.flags |= PL_F_REQ_VALID;
      bind.req = cl0;
      bind.local = cl;
      bind.fd = 7;
      ev.push_back(bind);
    }
    ev.push_back(state(c, task, kClose, kSynSent, explicit_bind ? cl : cl0, sv));
    ev.push_back(state(c, task, kSynSent, kEstablished, cl, sv));
    pl_event child = state(s, task, kListen, kSynRecv, sv, cl);
    child.opts.reuseaddr = 1;
    ev.push_back(child);
    ev.push_back(state(s, task, kSynRecv, kEstablished, sv, cl));
    pl_event connect = base(PL_EV_CONNECT, c, task, v6);
    connect.flags |= PL_F_REQ_VALID;
    connect.req = sv;
    connect.local = cl;
    connect.fd = 7;
    connect.enter_port = explicit_bind ? port : 0;
    ev.push_back(connect);
    ev.push_back(state(c, task, kEstablished, kFinWait1, cl, sv));
    ev.push_back(state(s, kServer, kEstablished, kCloseWait, sv, cl));
    ev.push_back(state(c, task, kFinWait1, kFinWait2, cl, sv));
    ev.push_back(state(s, kServer, kCloseWait, kLastAck, sv, cl));
    pl_event to_close = state(c, kServer, kFinWait2, kClose, cl, sv);
    to_close.flags |= PL_F_TS_RECENT;
    ev.push_back(to_close);
    ev.push_back(destroy(c, kServer, cl, sv));
    ev.push_back(state(s, task, kLastAck, kClose, sv, cl));
    ev.push_back(destroy(s, task, sv, cl));
    recent_ports_[recent_next_++ % recent_ports_.size()] = port;
    return f;
  }

  // A client toward a service of another host (only the client side is here).
  Flow outbound_connection() {
    const Task& task = client_task();
    const std::uint64_t c = new_sk();
    pl_endpoint cl;
    pl_endpoint cl0;
    pl_endpoint sv;
    set_v4(cl, kLoopback, ephemeral_port());
    set_v4(cl0, kLoopback, 0);
    set_v4(sv, 0x7f000200U + static_cast<std::uint32_t>(rng_() % 256), 443);
    Flow f;
    auto& ev = f.events;
    ev.push_back(state(c, task, kClose, kSynSent, cl0, sv));
    ev.push_back(state(c, task, kSynSent, kEstablished, cl, sv));
    pl_event connect = base(PL_EV_CONNECT, c, task);
    connect.flags |= PL_F_REQ_VALID;
    connect.req = sv;
    connect.local = cl;
    connect.fd = 7;
    ev.push_back(connect);
    ev.push_back(state(c, task, kEstablished, kFinWait1, cl, sv));
    ev.push_back(state(c, task, kFinWait1, kFinWait2, cl, sv));
    pl_event to_close = state(c, task, kFinWait2, kClose, cl, sv);
    to_close.flags |= PL_F_TS_RECENT;
    ev.push_back(to_close);
    ev.push_back(destroy(c, task, cl, sv));
    return f;
  }

  // A failed call and its socket's end: bind() on a listener's port, bind() on a port a
  // TIME_WAIT holds, or connect() finding no ephemeral port, in turn.
  std::vector<pl_event> failure() {
    const Task& task = client_task();
    const std::uint64_t sk = new_sk();
    pl_endpoint unbound;
    set_v4(unbound, 0, 0);
    pl_endpoint none{};
    pl_event e;
    switch (failures_++ % 3) {
      case 0: {
        e = base(PL_EV_BIND, sk, task);
        e.ret = -EADDRINUSE;
        e.opts.reuseaddr = 1;
        e.flags |= PL_F_REQ_VALID;
        set_v4(e.req, 0, static_cast<std::uint16_t>(kFirstServerPort + rng_() % kServers));
        e.local = unbound;
        break;
      }
      case 1: {
        e = base(PL_EV_BIND, sk, task);
        e.ret = -EADDRINUSE;
        e.flags |= PL_F_REQ_VALID;
        const std::uint16_t port = recent_ports_[rng_() % recent_ports_.size()];
        set_v4(e.req, 0, port == 0 ? 40000 : port);
        e.local = unbound;
        break;
      }
      default: {
        e = base(PL_EV_CONNECT, sk, task);
        e.ret = -EADDRNOTAVAIL;
        e.flags |= PL_F_REQ_VALID;
        set_v4(e.req, kLoopback, kFirstServerPort);
        e.local = unbound;
        break;
      }
    }
    e.fd = 9;
    return {e, destroy(sk, task, unbound, none)};
  }

  std::size_t failure_every_;
  std::mt19937_64 rng_{20240611};
  std::uint64_t ts_ = 1'000'000'000'000ULL;
  std::uint64_t next_sk_ = 0xffff'8880'0000'0000ULL;
  std::uint16_t next_port_ = 32768;
  std::uint64_t failures_ = 0;
  std::map<std::uint16_t, std::uint64_t> listeners_;
  std::array<std::uint16_t, 256> recent_ports_{};
  std::size_t recent_next_ = 0;
};

enum class Mode : std::uint8_t { kDecode, kApply, kFull, kAgent };

struct RunStats {
  double seconds = 0;
  double diagnosis_seconds = 0;
  std::size_t events = 0;
  std::size_t failures = 0;
  std::size_t sockets = 0;
  std::size_t time_wait = 0;
  std::map<std::string, std::size_t> causes;
};

// The stream as the ring carries it: calls as pl_event, state, reset and destroy events as the
// slimmer pl_sock_event (bpf/events.h), back to back.
struct Recorded {
  std::vector<std::byte> bytes;
  std::vector<std::size_t> sizes;
};

template <typename T>
void append(Recorded& out, const T& record) {
  const auto* p = reinterpret_cast<const std::byte*>(&record);
  out.bytes.insert(out.bytes.end(), p, p + sizeof record);
  out.sizes.push_back(sizeof record);
}

// The generator writes every event as a pl_event; the socket events keep only what the kernel
// side now sends for them.
Recorded recorded(const std::vector<pl_event>& stream) {
  Recorded out;
  out.bytes.reserve(stream.size() * sizeof(pl_event));
  for (const pl_event& e : stream) {
    if (e.type != PL_EV_STATE && e.type != PL_EV_RESET && e.type != PL_EV_DESTROY &&
        e.type != PL_EV_RESET_SENT) {
      append(out, e);
      continue;
    }
    pl_sock_event s{};
    s.ts_ns = e.ts_ns;
    s.sk = e.sk;
    s.netns = e.netns;
    s.type = e.type;
    s.sock_family = e.sock_family;
    s.sport = e.local.port;
    s.dport = e.remote.port;
    s.old_state = e.old_state;
    s.new_state = e.new_state;
    s.flags = static_cast<__u16>(e.flags);
    s.sock_uid = e.sock_uid;
    s.opts = e.opts;
    std::memcpy(s.saddr, e.local.addr, sizeof s.saddr);
    std::memcpy(s.daddr, e.remote.addr, sizeof s.daddr);
    append(out, s);
  }
  return out;
}

// The recorded stream as the ring would hand it over: kBatch records per wakeup.
class ReplayRing final : public RecordSource {
 public:
  explicit ReplayRing(const Recorded& records) : records_(records) {}
  int poll(std::chrono::milliseconds /*timeout*/, const Sink& sink,
           std::size_t max_records) override {
    if (drained_) {  // the ring looked empty once: the pipeline processes what it has
      drained_ = false;
      return 0;
    }
    int n = 0;
    const std::span<const std::byte> bytes(records_.bytes);
    while (next_ < records_.sizes.size() && n < static_cast<int>(kBatch) &&
           static_cast<std::size_t>(n) < max_records) {
      sink(bytes.subspan(offset_, records_.sizes[next_]));
      offset_ += records_.sizes[next_++];
      ++n;
    }
    drained_ = true;
    return n;
  }
  [[nodiscard]] DropCounters drops() const override { return {}; }
  [[nodiscard]] bool done() const { return next_ >= records_.sizes.size(); }

 private:
  const Recorded& records_;
  std::size_t next_ = 0;
  std::size_t offset_ = 0;
  bool drained_ = false;
};

// The prebuilt table stands in for the namespace's snapshot.
class PrebuiltNamespaces final : public NamespaceSource {
 public:
  explicit PrebuiltNamespaces(const SocketTable& table) : table_(table) {}
  std::vector<NetnsRef> discover() override { return {NetnsRef{"/bench/ns", kNetns}}; }
  std::optional<NetnsRef> locate(std::uint32_t /*inode*/, std::uint32_t /*pid*/) override {
    return NetnsRef{"/bench/ns", kNetns};
  }
  [[nodiscard]] bool refers_to(const NetnsRef& /*ns*/) const override { return true; }
  [[nodiscard]] Snapshot take(const NetnsRef& /*ns*/) const override {
    Snapshot s;
    s.table = table_;
    s.netns = kNetns;
    return s;
  }

 private:
  const SocketTable& table_;
};

class NoOwners final : public OwnerSource {
 public:
  void scan() override {}
  void attribute(SocketTable& /*table*/) const override {}
  [[nodiscard]] std::uint64_t dropped() const override { return 0; }
};

// Counts what the pipeline hands over and times each diagnosis: the pipeline judges a failure
// between select() and event().
class BenchSink final : public PipelineSink {
 public:
  BenchSink(Mode mode, RunStats& stats, PipelineSink* agent)
      : mode_(mode), stats_(stats), agent_(agent) {}
  void applied(std::span<const Event> batch) override {
    stats_.events += batch.size();
    if (agent_ != nullptr) {
      agent_->applied(batch);
    }
  }
  bool select(const Event& e) override {
    if (mode_ == Mode::kApply || !e.failed()) {
      return false;
    }
    diag_start_ = Clock::now();
    return true;
  }
  void event(const Event& e, const Diagnosis* d) override {
    if (d == nullptr) {
      return;
    }
    stats_.diagnosis_seconds += seconds_since(diag_start_);
    ++stats_.failures;
    ++stats_.causes[std::string(to_string(d->cause))];
    if (agent_ != nullptr) {
      agent_->event(e, d);
    }
  }

 private:
  Mode mode_;
  RunStats& stats_;
  PipelineSink* agent_;
  Clock::time_point diag_start_;
};

RunStats run_once(const Recorded& records, const SocketTable& prebuilt, Mode mode) {
  RunStats stats;
  if (mode == Mode::kDecode) {
    const auto start = Clock::now();
    const std::span<const std::byte> bytes(records.bytes);
    std::size_t off = 0;
    for (const std::size_t size : records.sizes) {
      stats.events += decode_event(bytes.subspan(off, size)).event ? 1 : 0;
      off += size;
    }
    stats.seconds = seconds_since(start);
    return stats;
  }
  // The agent's own pipeline, with the agent's sink (AgentFindings: per-event tallies, failure
  // counters, history) for kAgent; only the ring, the snapshots and /proc are stand-ins.
  ReplayRing ring(records);
  PrebuiltNamespaces namespaces(prebuilt);
  NoOwners owners;
  FailureJudge judge(namespaces, owners);
  AgentFindings findings(20, 10'000, nullptr);
  BenchSink sink(mode, stats, mode == Mode::kAgent ? &findings : nullptr);
  PipelineOptions options;
  options.batch_pause = std::chrono::milliseconds(0);
  EventPipeline pipeline(ring, namespaces, judge, sink, options);
  const auto start = Clock::now();
  while (!ring.done()) {
    pipeline.step(std::chrono::milliseconds(0));
  }
  pipeline.finish();  // the failures still waiting for their judgment are part of the run
  if (mode == Mode::kAgent) {
    AgentCounters counters;
    findings.fill(counters);  // what each scrape does with them
  }
  stats.seconds = seconds_since(start);
  const std::lock_guard lock(pipeline.mutex());
  stats.sockets = pipeline.tracker().socket_count();
  stats.time_wait = pipeline.tracker().time_wait_count();
  return stats;
}

// The stream's timestamps moved so that its last event is now: the pipeline expires TIME_WAITs
// and judges snapshots against CLOCK_MONOTONIC, as in the agent.
std::vector<pl_event> rebased(std::vector<pl_event> stream) {
  if (stream.empty()) {
    return stream;
  }
  const std::uint64_t now = monotonic_ns();
  const std::uint64_t last = stream.back().ts_ns;
  for (pl_event& e : stream) {
    e.ts_ns = now - (last - e.ts_ns);
  }
  return stream;
}

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::kDecode:
      return "decode_event only";
    case Mode::kApply:
      return "EventPipeline: decode + apply + expire, no diagnosis";
    case Mode::kFull:
      return "EventPipeline: decode + apply + diagnosis of failures";
    case Mode::kAgent:
      return "EventPipeline with the agent's sink (AgentFindings)";
  }
  return "?";
}

}  // namespace

void pipeline_section(const Options& options, Report& report) {
  std::cout << "\n## 1. pipeline: decode_event + SocketTracker::apply + diagnosis, one thread\n";
  const std::size_t count = options.smoke ? 20'000 : options.events;
  const int runs = options.smoke ? 1 : options.runs;
  StreamGenerator generator(options.failure_every);
  const auto gen_start = Clock::now();
  const std::vector<pl_event> stream = rebased(generator.generate(count));
  const Recorded records = recorded(stream);
  const SocketTable prebuilt = generator.prebuilt_table();
  std::map<int, std::size_t> by_type;
  for (const auto& e : stream) {
    ++by_type[e.type];
  }
  std::cout << "stream: " << with_commas(stream.size()) << " pl_event records ("
            << with_commas(records.bytes.size() / 1024 / 1024) << " MiB), generated in "
            << fixed(seconds_since(gen_start), 2) << " s: bind " << by_type[PL_EV_BIND]
            << ", listen " << by_type[PL_EV_LISTEN] << ", connect " << by_type[PL_EV_CONNECT]
            << ", state " << by_type[PL_EV_STATE] << ", destroy " << by_type[PL_EV_DESTROY]
            << "; one failed call per " << options.failure_every << " events; prebuilt table "
            << prebuilt.sockets.size() << " sockets\n";
  std::cout << "each run: a fresh tracker replays the whole stream in batches of " << kBatch
            << "; median of " << runs << " runs\n";

  double full_rate = 0;
  double full_ns = 0;
  for (const Mode mode : {Mode::kDecode, Mode::kApply, Mode::kFull, Mode::kAgent}) {
    std::vector<double> rates;
    std::vector<double> diag_us;
    RunStats last;
    for (int r = 0; r < runs; ++r) {
      last = run_once(records, prebuilt, mode);
      rates.push_back(static_cast<double>(last.events) / last.seconds);
      if (last.failures > 0) {
        diag_us.push_back(last.diagnosis_seconds * 1e6 / static_cast<double>(last.failures));
      }
    }
    const double rate = median(rates);
    std::cout << "  " << mode_name(mode) << ": " << with_commas(static_cast<std::uint64_t>(rate))
              << " events/s, " << fixed(1e9 / rate, 0) << " ns/event (min "
              << with_commas(static_cast<std::uint64_t>(min_of(rates))) << ", max "
              << with_commas(static_cast<std::uint64_t>(max_of(rates))) << ")\n";
    if (mode == Mode::kApply) {
      report.add(Row{"pipeline events/s without diagnoses (decode + apply)",
                     with_commas(static_cast<std::uint64_t>(rate)) + " (" + fixed(1e9 / rate, 0) +
                         " ns/event)",
                     ">= 1,000,000", rate >= 1e6 ? Met::kYes : Met::kNo});
      std::cout << "    tracker at the end: " << with_commas(last.sockets) << " sockets, "
                << with_commas(last.time_wait) << " TIME_WAIT\n";
    }
    if (mode == Mode::kFull) {
      full_rate = rate;
      full_ns = 1e9 / rate;
      const double share = last.diagnosis_seconds / last.seconds * 100;
      std::cout << "    " << last.failures << " failures diagnosed, median "
                << fixed(median(diag_us), 0) << " us each (" << fixed(share, 1)
                << "% of the run); causes:";
      for (const auto& [cause, n] : last.causes) {
        std::cout << " " << cause << "=" << n;
      }
      std::cout << "\n";
      report.add(Row{"pipeline: diagnosis of one failure (FailureJudge: table_for_call + diagnose)",
                     fixed(median(diag_us), 0) + " us", "", Met::kNoAim});
    }
  }
  report.add(Row{
      "pipeline events/s (decode + apply + diagnosis, 1 thread)",
      with_commas(static_cast<std::uint64_t>(full_rate)) + " (" + fixed(full_ns, 0) + " ns/event)",
      ">= 1,000,000", full_rate >= 1e6 ? Met::kYes : Met::kNo});
}

}  // namespace portlens::bench
