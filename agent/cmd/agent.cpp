#include "agent/cmd/agent.hpp"

#include <CivetServer.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/kernel/inspector.hpp"
#include "agent/kernel/preflight.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"
#include "agent/render/format.hpp"
#include "agent/render/report.hpp"
#include "agent/tracker/tracker.hpp"
#include "exporters/collector.hpp"
#include "exporters/event_log.hpp"
#include "exporters/local_api.hpp"
#include "exporters/scrape_input.hpp"
#include "portlens_version.hpp"

namespace portlens {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kOther = "other";
constexpr std::size_t kMaxBatch = 65536;  // events applied per hold of the lock, at most
constexpr std::chrono::milliseconds kBatchPause{2};
// Snapshot sockets merged per hold of the lock: some 25 ms at ~6 us each, a third of what the
// default ring holds at 650,000 events/s.
constexpr std::size_t kMergeSlice = 1024;

// Reconcile snapshots are taken on their own thread. A walk of a busy namespace takes longer
// than the ring holds events for (the default 8 MiB is about 70 ms at 650,000 events/s), so the
// event loop must keep draining while it runs. Each snapshot is handed over one at a time, so
// at most one namespace's table is held besides the tracker, and the loop merges it after
// catching up with the events of the walk.
class SnapshotWalker {
 public:
  struct Taken {
    NetnsRef ns;
    Snapshot snapshot;
    std::uint64_t taken_ns = 0;  // CLOCK_MONOTONIC when the walk began
  };

  SnapshotWalker(const SocketSnapshotter& snapshotter, double interval_s)
      : snapshotter_(snapshotter),
        interval_(
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(interval_s))),
        thread_([this] { run(); }) {}
  ~SnapshotWalker() {
    {
      const std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  SnapshotWalker(const SnapshotWalker&) = delete;
  SnapshotWalker& operator=(const SnapshotWalker&) = delete;
  SnapshotWalker(SnapshotWalker&&) = delete;
  SnapshotWalker& operator=(SnapshotWalker&&) = delete;

  // A snapshot waiting to be merged, if any; taking it lets the walk go on.
  std::optional<Taken> next_snapshot() { return take(snapshot_); }
  // The namespaces of a finished round, once every one of its snapshots has been taken.
  std::optional<std::vector<NetnsRef>> finished_round() { return take(round_); }

 private:
  template <typename T>
  std::optional<T> take(std::optional<T>& slot) {
    std::optional<T> out;
    {
      const std::lock_guard lock(mu_);
      out.swap(slot);
    }
    if (out) {
      cv_.notify_all();
    }
    return out;
  }
  // Waits until the loop has taken what was handed over; false when stopping.
  bool wait_handed_over(std::unique_lock<std::mutex>& lock) {
    cv_.wait(lock, [this] { return stopping_ || (!snapshot_ && !round_); });
    return !stopping_;
  }
  void run() {
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, interval_, [this] { return stopping_; })) {
      lock.unlock();
      std::vector<NetnsRef> namespaces;
      try {
        namespaces = discover_netns();
      } catch (const std::exception& e) {
        spdlog::warn("cannot list network namespaces for reconcile: {}", e.what());
      }
      for (const NetnsRef& ns : namespaces) {
        Taken taken{ns, {}, monotonic_ns()};
        try {
          taken.snapshot = snapshotter_.take(ns);
        } catch (const std::exception& e) {
          spdlog::debug("netns {} not inspectable: {}", ns.path, e.what());
          continue;
        }
        lock.lock();
        if (!wait_handed_over(lock)) {
          return;
        }
        snapshot_ = std::move(taken);
        lock.unlock();
      }
      lock.lock();
      if (!wait_handed_over(lock)) {
        return;
      }
      round_ = std::move(namespaces);
    }
  }

  const SocketSnapshotter& snapshotter_;
  const Clock::duration interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::optional<Taken> snapshot_;
  std::optional<std::vector<NetnsRef>> round_;
  std::thread thread_;  // last: starts once the members above exist
};

std::string kernel_release() {
  utsname u{};
  return uname(&u) == 0 ? std::string(u.release) : std::string("unknown");
}

// Binds (and releases) each address first: civetweb reports every failure as "null context",
// and the user deserves to hear that the port is taken, and by whom to ask.
void probe_listen_address(const std::string& spec, const std::string& as_given) {
  const auto colon = spec.rfind(':');
  const std::string host = colon == std::string::npos ? "0.0.0.0" : spec.substr(0, colon);
  const std::string port_text = colon == std::string::npos ? spec : spec.substr(colon + 1);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port_text)));
  if (inet_pton(AF_INET, host.c_str(), &sin.sin_addr) != 1) {
    throw UsageError("--web.listen-address " + as_given + ": not an IPv4 address");
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // as civetweb does
  const int rc = bind(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
  const int err = errno;
  close(fd);
  if (rc != 0) {
    std::string hint;
    if (err == EADDRINUSE) {
      hint = "; `portlens why " + port_text + "` shows who holds it, or pick another port";
    } else if (err == EADDRNOTAVAIL) {
      hint = "; that address is not on this host";
    }
    throw Error("cannot listen on " + as_given + ": " + errno_text(err) + hint);
  }
}

class LandingPage : public CivetHandler {
 public:
  explicit LandingPage(std::string telemetry_path) : path_(std::move(telemetry_path)) {}
  bool handleGet(CivetServer* /*server*/, mg_connection* conn) override {
    const std::string body = fmt::format(
        "<!DOCTYPE html><html><head><title>portlens</title></head><body>"
        "<h1>portlens {}</h1><p>eBPF port and TIME_WAIT observability.</p>"
        "<p><a href=\"{}\">Metrics</a></p></body></html>\n",
        kPortlensVersion, path_);
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
              "Content-Length: %zu\r\nConnection: close\r\n\r\n",
              body.size());
    mg_write(conn, body.data(), body.size());
    return true;
  }

 private:
  std::string path_;
};

class MetricsPage : public CivetHandler {
 public:
  explicit MetricsPage(std::shared_ptr<PortlensCollector> collector)
      : collector_(std::move(collector)) {}
  bool handleGet(CivetServer* /*server*/, mg_connection* conn) override {
    const std::string body = render_text(collector_->Collect());
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
              "Content-Length: %zu\r\nConnection: close\r\n\r\n",
              body.size());
    mg_write(conn, body.data(), body.size());
    return true;
  }

 private:
  std::shared_ptr<PortlensCollector> collector_;
};

bool port_matches(const Event& e, std::uint16_t port) {
  const auto has = [port](const std::optional<Endpoint>& ep) { return ep && ep->port == port; };
  return has(e.requested) || has(e.local) || has(e.remote);
}

// Everything the main loop and the scrape and API threads share, behind one mutex.
class AgentState {
 public:
  explicit AgentState(const AgentOptions& options) : options_(options) {}

  std::mutex mu;
  SocketTracker tracker;
  AgentCounters counters;  // but events_by_type and state_transitions, kept in tally
  EventTally tally;
  std::map<std::uint64_t, NetnsPortConfig> configs;
  double last_scrape_seconds = 0;

  // A comm keeps its own label once it has one: folding it into "other" later would make its
  // counters go backwards. The first top_k comms that fail get labels; the rest are "other".
  std::string comm_label(const std::string& comm) {
    if (labelled_comms_.contains(comm)) {
      return comm;
    }
    if (labelled_comms_.size() < options_.top_k) {
      labelled_comms_.insert(comm);
      return comm;
    }
    return kOther;
  }

  void remember(json record, const Event& event) {
    history_.push_back(HistoryEntry{std::move(record), event});
    while (history_.size() > options_.history) {
      history_.pop_front();
    }
  }

  json failures(const json& request) const {
    const auto port = request.value("port", 0);
    const auto pid = request.value("pid", 0);
    const auto netns = request.value("netns", std::uint64_t{0});
    const auto since_ms = request.value("since_ms", std::int64_t{0});
    const auto limit = static_cast<std::size_t>(request.value("limit", 100));
    json out = json::array();
    for (auto it = history_.rbegin(); it != history_.rend() && out.size() < limit; ++it) {
      const Event& e = it->event;
      if ((port != 0 && !port_matches(e, static_cast<std::uint16_t>(port))) ||
          (pid != 0 && e.pid != static_cast<std::uint32_t>(pid)) ||
          (netns != 0 && e.netns != netns) ||
          (since_ms != 0 && it->record.value("time_ms", std::int64_t{0}) < since_ms)) {
        continue;
      }
      out.push_back(it->record);
    }
    return out;
  }

 private:
  struct HistoryEntry {
    json record;
    Event event;
  };
  const AgentOptions& options_;
  std::set<std::string> labelled_comms_;
  std::deque<HistoryEntry> history_;
};

json holders(AgentState& state, const json& request, std::uint64_t default_netns) {
  const auto port = static_cast<std::uint16_t>(request.value("port", 0));
  const auto proto = parse_proto(request.value("proto", std::string("tcp"))).value_or(Proto::kTcp);
  const auto netns = request.value("netns", default_netns);
  std::lock_guard lock(state.mu);
  const SocketTable table = state.tracker.table(netns, monotonic_ns());
  json sockets = json::array();
  for (const SocketEntry& s : table.sockets) {
    const bool same_table = (s.proto == Proto::kMptcp ? Proto::kTcp : s.proto) == proto;
    if (s.local.port == port && same_table) {
      sockets.push_back(socket_to_json(s));
    }
  }
  return json{{"port", port}, {"proto", to_string(proto)}, {"netns", netns}, {"sockets", sockets}};
}

}  // namespace

std::string civetweb_listen_spec(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    throw UsageError("--web.listen-address " + address + ": expected :PORT or HOST:PORT");
  }
  const std::string host = address.substr(0, colon);
  const std::string port_text = address.substr(colon + 1);
  unsigned port = 0;
  const auto [ptr, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() ||
      port == 0 || port > 65535) {
    throw UsageError("--web.listen-address " + address + ": the port must be 1-65535");
  }
  if (host.empty() || host == "0.0.0.0") {
    return std::to_string(port);  // every IPv4 address
  }
  if (host.front() == '[' || host.find(':') != std::string::npos) {
    throw UsageError("--web.listen-address " + address +
                     ": IPv6 addresses cannot be served (the HTTP library, Debian's civetweb, is "
                     "built without IPv6); use :" +
                     port_text + " or an IPv4 address");
  }
  const auto ip = IpAddress::parse(host);
  if (!ip || !ip->is_v4()) {
    throw UsageError("--web.listen-address " + address + ": '" + host +
                     "' is not an IPv4 address (host names are not resolved)");
  }
  return host + ":" + std::to_string(port);
}

int run_agent(const AgentOptions& options, const std::atomic<bool>& stop,
              std::atomic<bool>& reopen_log) {
  if (options.telemetry_path.empty() || options.telemetry_path.front() != '/' ||
      options.telemetry_path == "/") {
    throw UsageError("--web.telemetry-path " + options.telemetry_path +
                     ": must start with / and not be / (the landing page)");
  }
  std::vector<std::string> specs;
  for (const auto& address : options.listen_addresses) {
    specs.push_back(civetweb_listen_spec(address));
  }
  require_preflight();
  for (std::size_t i = 0; i < specs.size(); ++i) {
    probe_listen_address(specs[i], options.listen_addresses[i]);
  }
  std::unique_ptr<EventLog> event_log;
  if (options.event_log) {
    event_log = std::make_unique<EventLog>(*options.event_log, options.event_log_max_bytes,
                                           options.event_log_keep);
  }

  TracerConfig config;
  config.ring_bytes = options.ring_bytes;
  auto tracer = std::make_unique<BpfTracer>(config);
  LiveInspector inspector;
  AgentState state(options);
  const std::uint64_t host_netns = current_netns().inode;

  // Merges one namespace's snapshot: the first look at it (bootstrap) or a correction.
  // The first look at a namespace, before the agent serves: merged at once.
  const auto bootstrap = [&](const NetnsRef& ns, const Snapshot& snap, std::uint64_t taken) {
    std::lock_guard lock(state.mu);
    state.tracker.bootstrap(ns.inode, snap.table, taken);
    state.configs[ns.inode] = snap.table.config_for(ns.inode);
  };
  // Namespaces that are gone: forget their configuration (their sockets went with them).
  const auto forget_gone = [&](const std::vector<NetnsRef>& namespaces) {
    std::lock_guard lock(state.mu);
    for (auto it = state.configs.begin(); it != state.configs.end();) {
      const bool alive = std::any_of(namespaces.begin(), namespaces.end(),
                                     [&](const NetnsRef& n) { return n.inode == it->first; });
      if (!alive) {
        state.tracker.forget_namespace(it->first, monotonic_ns());
      }
      it = alive ? std::next(it) : state.configs.erase(it);
    }
  };
  const std::vector<NetnsRef> namespaces = discover_netns();
  for (const NetnsRef& ns : namespaces) {
    const std::uint64_t taken = monotonic_ns();
    try {
      bootstrap(ns, inspector.snapshotter().take(ns), taken);
    } catch (const Error& e) {
      spdlog::debug("netns {} not inspectable: {}", ns.path, e.what());
    }
  }
  spdlog::info("bootstrapped {} sockets and {} TIME_WAIT from {} network namespaces",
               state.tracker.socket_count(), state.tracker.time_wait_count(), namespaces.size());

  const std::string version = kPortlensVersion;
  const std::string kernel = kernel_release();
  auto collector = std::make_shared<PortlensCollector>(
      [&state, &version, &kernel]() {
        std::lock_guard lock(state.mu);
        ScrapeInput in;
        // Rows, not a SocketTable copy: the lock also holds off event processing.
        auto rows = state.tracker.rows(monotonic_ns());
        for (const auto& [inode, cfg] : state.configs) {
          NetnsScrape ns{inode, cfg, {}};
          if (const auto it = rows.find(inode); it != rows.end()) {
            ns.sockets = std::move(it->second);
          }
          in.namespaces.push_back(std::move(ns));
        }
        in.counters = state.counters;
        state.tally.name_into(in.counters);
        for (const auto& [kind, n] : state.tracker.counters().corrections) {
          in.counters.reconcile_corrections[kind] = n;
        }
        in.counters.evictions["sockets"] = state.tracker.counters().sockets_dropped;
        in.counters.evictions["time_wait"] = state.tracker.counters().time_wait_dropped;
        in.tracked_sockets = state.tracker.socket_count() + state.tracker.time_wait_count();
        in.last_scrape_duration_seconds = state.last_scrape_seconds;
        in.version = version;
        in.kernel = kernel;
        return in;
      },
      options.top_k);

  // The scrape duration is measured around the whole handler and reported by the next scrape.
  class TimedMetricsPage : public MetricsPage {
   public:
    TimedMetricsPage(std::shared_ptr<PortlensCollector> c, AgentState& s)
        : MetricsPage(std::move(c)), state_(s) {}
    bool handleGet(CivetServer* server, mg_connection* conn) override {
      const auto start = Clock::now();
      const bool ok = MetricsPage::handleGet(server, conn);
      std::lock_guard lock(state_.mu);
      state_.last_scrape_seconds = std::chrono::duration<double>(Clock::now() - start).count();
      return ok;
    }

   private:
    AgentState& state_;
  };
  LandingPage landing(options.telemetry_path);
  TimedMetricsPage metrics(collector, state);
  std::unique_ptr<CivetServer> http;
  std::string ports;
  for (const auto& s : specs) {
    ports += (ports.empty() ? "" : ",") + s;
  }
  try {
    http = std::make_unique<CivetServer>(
        std::vector<std::string>{"listening_ports", ports, "num_threads", "4"});
  } catch (const CivetException& e) {
    throw Error(std::string("cannot start the HTTP server on ") + ports + ": " + e.what());
  }
  http->addHandler("/", landing);
  http->addHandler(options.telemetry_path, metrics);

  LocalApiServer api(options.api_socket, [&state, host_netns](const json& request) -> json {
    const std::string op = request.value("op", "");
    if (op == "ping") {
      return json{{"ok", true}, {"version", kPortlensVersion}};
    }
    if (op == "failures") {
      std::lock_guard lock(state.mu);
      return json{{"failures", state.failures(request)}};
    }
    if (op == "holders") {
      return holders(state, request, host_netns);
    }
    return json{{"error", "unknown op '" + op + "' (ping, failures, holders)"}};
  });

  spdlog::info("serving {} on {} and the local API on {}", options.telemetry_path, ports,
               options.api_socket);

  const WallClock clock;
  std::vector<Event> batch;
  const BpfTracer::RecordSink sink = [&](std::span<const std::byte> record) {
    DecodeResult decoded = decode_event(record);
    if (decoded.event) {
      batch.push_back(std::move(*decoded.event));
    }
  };
  const auto apply_batch = [&] {
    std::lock_guard lock(state.mu);
    for (const Event& e : batch) {
      state.tracker.apply(e);
      state.tally.count(e);
    }
    // Diagnosed after the whole batch is applied: the tracker then knows what came after.
    for (const Event& e : batch) {
      const auto call = call_from_event(e);
      if (!call) {
        continue;
      }
      const Diagnosis d = inspector.diagnose(e, *call, &state.tracker);
      const std::string cause(to_string(d.cause));
      const std::string comm = state.comm_label(e.comm);
      if (e.type == EventType::kConnect) {
        ++state.counters.connect_failures[{std::string(to_string(e.proto)), errno_name(e.result),
                                           cause, comm}];
      } else {
        ++state.counters.bind_failures[{std::string(to_string(e.proto)),
                                        std::string(to_string(e.type)), cause, comm}];
      }
      json record = event_to_json(e, clock);
      record["diagnosis"] = diagnosis_to_json(d);
      record["time_ms"] = clock.to_realtime_ns(e.ts_ns) / 1'000'000;
      if (event_log) {
        event_log->append(record);
      }
      state.remember(std::move(record), e);
    }
    batch.clear();
  };
  // Drains what the ring holds now. Bounded: under endless churn the ring never empties, and
  // events newer than the snapshot need no catching up (the merge leaves them alone).
  const auto catch_up = [&] {
    for (int round = 0; round < 16; ++round) {
      while (batch.size() < kMaxBatch && tracer->poll(std::chrono::milliseconds(0), sink) > 0) {
      }
      const bool full = batch.size() >= kMaxBatch;
      apply_batch();
      if (!full) {
        break;
      }
    }
  };

  SnapshotWalker walker(inspector.snapshotter(), options.reconcile_interval_s);
  while (!stop.load(std::memory_order_relaxed)) {
    if (reopen_log.exchange(false) && event_log) {
      if (const auto error = event_log->reopen()) {
        spdlog::error("cannot reopen the event log, still writing the old file: {}", *error);
      } else {
        spdlog::info("reopened the event log {}", *options.event_log);
      }
    }
    if (tracer->poll(std::chrono::milliseconds(100), sink) > 0) {
      while (tracer->poll(std::chrono::milliseconds(0), sink) > 0 && batch.size() < kMaxBatch) {
      }
      const bool full = batch.size() >= kMaxBatch;
      apply_batch();
      // Under churn the ring refills within microseconds of a drain, and a wakeup per handful
      // of events (epoll, the lock, expire, the drop counters' two map reads) cost more than
      // the events themselves. A short pause lets the next batch gather: the default 8 MiB
      // ring holds ~47,000 events, some 70 ms at 650,000 events/s, far more than the pause.
      if (!full) {
        std::this_thread::sleep_for(kBatchPause);
      }
    }
    {
      std::lock_guard lock(state.mu);
      state.tracker.expire(monotonic_ns());
      state.counters.events_lost = tracer->drops().total();
    }
    if (auto taken = walker.next_snapshot()) {
      // The events of the sockets that changed while the snapshot ran are still in the ring.
      // Merged before them, each would count as a correction that is none (a TIME_WAIT the
      // iterator saw before its FIN_WAIT2->CLOSE event was read, say): apply them first. Then
      // merge a slice at a time, applying what arrives in between: at a few microseconds per
      // socket, a busy namespace merged at once would hold the loop until the ring overflowed.
      const auto start = Clock::now();
      catch_up();
      {
        std::lock_guard lock(state.mu);
        state.tracker.begin_merge(taken->ns.inode, taken->snapshot.table, taken->taken_ns);
        state.configs[taken->ns.inode] = taken->snapshot.table.config_for(taken->ns.inode);
      }
      int slices = 0;
      for (bool done = false; !done; ++slices) {
        {
          std::lock_guard lock(state.mu);
          done = state.tracker.merge_some(kMergeSlice);
        }
        catch_up();
      }
      spdlog::debug(
          "reconciled netns {} ({} sockets) in {} slices, {} ms", taken->ns.inode,
          taken->snapshot.table.sockets.size(), slices,
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
    }
    if (const auto round = walker.finished_round()) {
      forget_gone(*round);
    }
  }
  // Torn down in order, each step timed: SIGTERM must detach within about a second.
  const auto timed = [](const char* what, const auto& step) {
    const auto start = Clock::now();
    step();
    spdlog::debug(
        "stopped {} in {} ms", what,
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
  };
  spdlog::info("stopping");
  timed("the BPF programs", [&] { tracer.reset(); });
  timed("the local API", [&] { api.stop(); });
  // civetweb's mg_stop() waits out its master thread's 2 s poll quantum (compiled in). The
  // process is exiting and the kernel closes the listening sockets with it, so the server is
  // deliberately not waited for.
  static_cast<void>(http.release());  // NOLINT(bugprone-unused-return-value)
  return 0;
}

}  // namespace portlens
