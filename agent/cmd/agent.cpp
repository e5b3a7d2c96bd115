#include "agent/cmd/agent.hpp"

#include <malloc.h>
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
#include <systemd/sd-daemon.h>

#include "agent/cmd/top.hpp"
#include "agent/kernel/inspector.hpp"
#include "agent/kernel/listen_probe.hpp"
#include "agent/kernel/preflight.hpp"
#include "agent/kernel/self_stats.hpp"
#include "agent/live/pipeline.hpp"
#include "agent/live/walker.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"
#include "agent/render/format.hpp"
#include "agent/render/report.hpp"
#include "agent/tracker/tracker.hpp"
#include "exporters/collector.hpp"
#include "exporters/event_log.hpp"
#include "exporters/findings.hpp"
#include "exporters/http/listen_address.hpp"
#include "exporters/http/server.hpp"
#include "exporters/http/web_config.hpp"
#include "exporters/local_api.hpp"
#include "exporters/scrape_input.hpp"
#include "portlens_revision.hpp"
#include "portlens_version.hpp"

namespace portlens {
namespace {

// Hands memory back to the system after a burst (docs/architecture.md, "Memory after a
// burst"). What the tracker frees when its sockets go goes back to malloc's free lists, not to
// the kernel: without malloc_trim the agent's RSS would stay at the burst's peak for good.
// Trimming walks every malloc arena, so it is done once per round of snapshots, and only when
// the tracker held markedly more since the last trim or released table capacity.
class MemoryReturn {
 public:
  // Under the pipeline's lock: the tracker's size now, for the high-water mark.
  void note(const SocketTracker& tracker) {
    high_ = std::max(high_, tracker.socket_count() + tracker.time_wait_count());
  }
  void after_round(EventPipeline& pipeline) {
    const std::size_t released = pipeline.release_memory();
    std::size_t now = 0;
    {
      const std::lock_guard lock(pipeline.mutex());
      now = pipeline.tracker().socket_count() + pipeline.tracker().time_wait_count();
    }
    if (released == 0 && high_ < now + kDrop) {
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    malloc_trim(0);
    spdlog::debug(
        "returned memory after the tracker fell from {} to {} sockets ({} KiB of table capacity): "
        "{} ms",
        high_, now, released / 1024,
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                              start)
            .count());
    high_ = now;
  }

 private:
  // A drop that is worth a trim: about a megabyte of tracked sockets.
  static constexpr std::size_t kDrop = 8192;
  std::size_t high_ = 0;
};

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Tells systemd (Type=notify) when the agent is ready, that it is stopping, and feeds the
// watchdog (WatchdogSec=) from the event loop, so a loop that stops turning gets the agent
// restarted. Without $NOTIFY_SOCKET (not under systemd) every call does nothing.
class SystemdNotifier {
 public:
  SystemdNotifier() {
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
      // Twice per period, as sd_watchdog_enabled(3) advises.
      interval_ = std::chrono::microseconds(usec / 2);
      spdlog::debug("feeding the systemd watchdog every {} ms",
                    std::chrono::duration_cast<std::chrono::milliseconds>(interval_).count());
    }
  }
  void ready(const std::string& status) {
    send("READY=1\nSTATUS=" + status);
    last_ = Clock::now();
  }
  void heartbeat() {
    if (interval_.count() == 0 || Clock::now() - last_ < interval_) {
      return;
    }
    last_ = Clock::now();
    send("WATCHDOG=1");
  }
  void stopping() { send("STOPPING=1"); }

 private:
  void send(const std::string& state) {
    const int rc = sd_notify(0, state.c_str());
    if (rc < 0 && !warned_) {
      warned_ = true;
      spdlog::warn("cannot notify systemd ({}): {}", state.substr(0, state.find('\n')),
                   errno_text(-rc));
    }
  }
  std::chrono::microseconds interval_{0};
  Clock::time_point last_ = Clock::now();
  bool warned_ = false;
};

std::string kernel_release() {
  utsname u{};
  return uname(&u) == 0 ? std::string(u.release) : std::string("unknown");
}

// The landing page at "/": what this is and where the metrics are.
http::Response landing_page(const std::string& telemetry_path) {
  http::Response r;
  r.content_type = "text/html; charset=utf-8";
  r.body = fmt::format(
      "<!DOCTYPE html><html><head><title>portlens</title></head><body>"
      "<h1>portlens {}</h1><p>eBPF port and TIME_WAIT observability.</p>"
      "<p><a href=\"{}\">Metrics</a> &middot; <a href=\"/healthz\">health</a> &middot; "
      "<a href=\"/ready\">readiness</a></p></body></html>\n",
      kPortlensVersion, telemetry_path);
  return r;
}

http::Response plain(int status, std::string body) {
  http::Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

// How long the event loop may go without a turn before /healthz says it is stuck: a turn is at
// most a poll timeout (100 ms) plus a reconcile slice or a diagnosis, far below this.
constexpr std::chrono::seconds kLoopStallLimit{10};

// The local API's "holders": the tracked sockets on a port, for `portlens why`.
json holders(const EventPipeline& pipeline, const json& request, std::uint64_t default_netns) {
  const auto port = static_cast<std::uint16_t>(request.value("port", 0));
  const auto proto = parse_proto(request.value("proto", std::string("tcp"))).value_or(Proto::kTcp);
  const auto netns = request.value("netns", default_netns);
  SocketTable table;
  {
    const std::lock_guard lock(pipeline.mutex());
    table = pipeline.tracker().table(netns, monotonic_ns());
  }
  json sockets = json::array();
  for (const SocketEntry& s : table.sockets) {
    const bool same_table = (s.proto == Proto::kMptcp ? Proto::kTcp : s.proto) == proto;
    if (s.local.port == port && same_table) {
      sockets.push_back(socket_to_json(s));
    }
  }
  return json{{"port", port}, {"proto", to_string(proto)}, {"netns", netns}, {"sockets", sockets}};
}

// The accept queues and ListenOverflows of the namespaces with TCP listeners, the most listeners
// first and at most max_namespaces of them (the collector gives series to that many at most).
void add_listen_queues(ScrapeInput& in, ListenQueueProbe& probe, std::size_t max_namespaces) {
  std::vector<std::pair<std::size_t, NetnsScrape*>> listening;
  for (NetnsScrape& ns : in.namespaces) {
    const auto listeners = static_cast<std::size_t>(std::count_if(
        ns.sockets.begin(), ns.sockets.end(),
        [](const SocketRow& r) { return r.proto != Proto::kUdp && r.state == TcpState::kListen; }));
    if (listeners > 0) {
      listening.emplace_back(listeners, &ns);
    }
  }
  std::sort(listening.begin(), listening.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second->inode < b.second->inode;
  });
  listening.resize(std::min(listening.size(), max_namespaces));
  std::vector<std::uint64_t> inodes;
  inodes.reserve(listening.size());
  for (const auto& [count, ns] : listening) {
    inodes.push_back(ns->inode);
  }
  auto found = probe.probe(inodes);
  for (const auto& [count, ns] : listening) {
    if (const auto it = found.find(ns->inode); it != found.end()) {
      ns->listen_queues = std::move(it->second.queues);
      ns->listen_overflows = it->second.overflows;
    }
  }
}

}  // namespace

std::vector<std::string> checked_listen_addresses(const std::vector<std::string>& addresses) {
  if (addresses.empty()) {
    throw UsageError("--web.listen-address: give at least one address, e.g. :10130");
  }
  for (const std::string& address : addresses) {
    std::uint16_t port = 0;
    try {
      port = http::parse_listen_address(address).port;
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("--web.listen-address ") + e.what());
    }
    if (port == 0) {
      throw UsageError("--web.listen-address " + address + ": the port must be 1-65535");
    }
  }
  return addresses;
}

void check_telemetry_path(const std::string& path) {
  if (path.empty() || path.front() != '/' || path == "/") {
    throw UsageError("--web.telemetry-path " + path +
                     ": must start with / and not be / (the landing page)");
  }
  // A request's path ends where its query (?) or fragment (#) begins: no scrape could reach it.
  if (const auto at = path.find_first_of("?#"); at != std::string::npos) {
    throw UsageError("--web.telemetry-path " + path + ": '" + path[at] + "' starts the " +
                     (path[at] == '?' ? "query" : "fragment") +
                     " of a URL, so no request can reach this path; give the path alone, as in " +
                     path.substr(0, at));
  }
  if (std::any_of(path.begin(), path.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return byte <= 0x20 || byte == 0x7f;
      })) {
    throw UsageError("--web.telemetry-path " + path +
                     ": a URL path has no white space or control characters");
  }
}

// The event log's first write failure and first drop are logged once each (the counters say
// how many followed): a full disk or a reader that stalled is news once, not per line.
struct EventLogWarned {
  bool failure = false;
  bool dropped = false;
};

void log_event_log_trouble(const EventLog& log, EventLogWarned& warned) {
  if (warned.failure && warned.dropped) {
    return;
  }
  const EventLogStats stats = log.stats();
  if (!warned.failure && stats.write_failures > 0) {
    warned.failure = true;
    spdlog::warn(
        "cannot write the event log {}: {}; the agent goes on without it, and "
        "portlens_event_log_write_failures_total counts the lines lost",
        escape_for_terminal(log.path()), stats.last_write_error);
  }
  if (!warned.dropped && stats.dropped > 0) {
    warned.dropped = true;
    spdlog::warn(
        "the event log {} is not read fast enough: lines are dropped, never waited for; "
        "portlens_event_log_lines_dropped_total counts them",
        escape_for_terminal(log.path()));
  }
}

void check_event_log_path(const std::optional<std::string>& path) {
  if (path && path->empty()) {
    throw UsageError(
        "--event-log: the path is empty; give a file path, as in --event-log "
        "/var/log/portlens/events.jsonl");
  }
}

int run_agent(const AgentOptions& options, const std::atomic<bool>& stop,
              std::atomic<bool>& reopen_log) {
  check_telemetry_path(options.telemetry_path);
  check_event_log_path(options.event_log);
  const std::vector<std::string> addresses = checked_listen_addresses(options.listen_addresses);
  if (options.web_config_file) {
    try {
      static_cast<void>(http::load_web_config(*options.web_config_file));
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("--web.config.file: ") + e.what());
    }
  }
  require_preflight();
  // Blocks of 256 KiB and more (a snapshot's chunks, the batch, the tables' arrays, a scrape's
  // rows) get pages of their own, given back to the system when freed. glibc would otherwise
  // raise the threshold to the largest block freed so far (up to 32 MiB), and the next such
  // blocks would come from the heaps, where a free gives nothing back until malloc_trim.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  std::unique_ptr<EventLog> event_log;
  if (options.event_log) {
    event_log = std::make_unique<EventLog>(*options.event_log, options.event_log_max_bytes,
                                           options.event_log_keep);
    // Its own thread: a stalled reader or a slow disk never holds up the event loop.
    event_log->start_writer();
  }

  TracerConfig config;
  config.ring_bytes = options.ring_bytes;
  config.enable_stats = options.bpf_stats;
  const std::uint64_t traced_since = monotonic_ns();  // no event is older
  auto tracer = std::make_unique<BpfTracer>(config);
  if (!tracer->stats_error().empty()) {
    spdlog::warn(
        "cannot turn on the kernel's BPF program statistics ({}): "
        "portlens_bpf_program_run_seconds_total stands still unless kernel.bpf_stats_enabled=1",
        tracer->stats_error());
  }
  // Scrapes read the programs' statistics from the HTTP threads; the teardown takes this lock
  // before it detaches the programs, so no scrape reads a tracer being destroyed.
  std::mutex tracer_mutex;
  TracerRecords records(*tracer);
  LiveInspector inspector;
  AgentFindings findings(options.top_k, options.history, event_log.get());
  PipelineOptions pipeline_options;
  pipeline_options.stop = &stop;
  EventPipeline pipeline(records, inspector.namespaces(), inspector.judge(), findings,
                         pipeline_options);
  const std::uint64_t host_netns = current_netns().inode;

  const std::string version = kPortlensVersion;
  const std::string kernel = kernel_release();
  std::atomic<double> last_scrape_seconds{0};
  ListenQueueProbe listen_probe;
  auto collector = std::make_shared<PortlensCollector>(
      [&]() {
        const std::uint64_t owner_drops = inspector.owners().dropped();
        const EventLogStats log_stats = event_log ? event_log->stats() : EventLogStats{};
        ScrapeInput in;
        in.process = read_process_stats();
        {
          const std::lock_guard tracer_lock(tracer_mutex);
          if (tracer) {
            in.bpf_programs = tracer->program_stats();
            in.bpf_stats_counting = tracer->stats_counting();
          }
        }
        {
          const std::lock_guard lock(pipeline.mutex());
          const SocketTracker& tracker = pipeline.tracker();
          // Rows, not a SocketTable copy: the lock also holds off event processing.
          const std::uint64_t now = monotonic_ns();
          auto rows = tracker.rows(now);
          auto close_waits = tracker.close_wait_groups();
          for (const auto& [inode, cfg] : pipeline.configs()) {
            NetnsScrape ns(inode, cfg, {});
            if (const auto it = rows.find(inode); it != rows.end()) {
              ns.sockets = std::move(it->second);
            }
            if (const auto it = tracker.counters().closes.find(inode);
                it != tracker.counters().closes.end()) {
              ns.closes = it->second;
            }
            if (const auto it = close_waits.find(inode); it != close_waits.end()) {
              ns.close_wait = std::move(it->second);
            }
            ns.now_ns = now;
            in.namespaces.push_back(std::move(ns));
          }
          findings.fill(in.counters);
          for (const auto& [inode, peak] : findings.take_utilization_peaks()) {
            for (NetnsScrape& ns : in.namespaces) {
              if (ns.inode == inode) {
                ns.utilization_peak_seen = peak;
              }
            }
          }
          in.counters.events_lost = pipeline.counters().lost.total();
          in.counters.events_malformed = pipeline.counters().malformed;
          in.counters.event_log_write_failures = log_stats.write_failures;
          in.counters.event_log_dropped = log_stats.dropped;
          in.counters.owner_map_drops = owner_drops;
          in.counters.diagnoses_judged = pipeline.counters().diagnosed;
          in.counters.diagnoses_coalesced = pipeline.counters().coalesced;
          in.counters.diagnoses_shed = pipeline.counters().shed;
          in.counters.diagnosis_queue = pipeline.counters().pending;
          for (const auto& [kind, n] : tracker.counters().corrections) {
            in.counters.reconcile_corrections[kind] = n;
          }
          in.counters.evictions["sockets"] = tracker.counters().sockets_dropped;
          in.counters.evictions["time_wait"] = tracker.counters().time_wait_dropped;
          in.counters.time_wait_refused = tracker.counters().time_wait_refused;
          in.tracked_sockets = tracker.socket_count() + tracker.time_wait_count();
          in.last_scrape_duration_seconds = last_scrape_seconds.load();
          in.version = version;
          in.revision = kPortlensRevision;
          in.compiler = kPortlensCompiler;
          in.kernel = kernel;
        }
        // Outside the lock: the accept queues, asked of the kernel now.
        add_listen_queues(in, listen_probe, options.max_namespaces);
        return in;
      },
      options.top_k, options.max_namespaces);

  // The event loop's heartbeat, for /healthz; readiness once the bootstrap is merged.
  std::atomic<std::int64_t> heartbeat_ns{static_cast<std::int64_t>(monotonic_ns())};
  std::atomic<bool> ready{false};
  std::map<std::string, http::Handler, std::less<>> routes;
  routes["/"] = [&](const http::Request& /*request*/) {
    return landing_page(options.telemetry_path);
  };
  routes[options.telemetry_path] = [&](const http::Request& /*request*/) {
    // Measured around the whole collection and reported by the next scrape.
    const auto start = Clock::now();
    http::Response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = render_text(collector->Collect());
    last_scrape_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return r;
  };
  routes["/healthz"] = [&](const http::Request& /*request*/) {
    const auto since =
        std::chrono::nanoseconds(static_cast<std::int64_t>(monotonic_ns()) - heartbeat_ns.load());
    if (since > kLoopStallLimit) {
      return plain(503, fmt::format("the event loop has not turned for {:.1f} s\n",
                                    std::chrono::duration<double>(since).count()));
    }
    return plain(200, "ok\n");
  };
  routes["/ready"] = [&](const http::Request& /*request*/) {
    return ready.load() ? plain(200, "ready\n") : plain(503, "bootstrapping the socket table\n");
  };
  http::ServerOptions web;
  web.listen_addresses = addresses;
  web.max_requests = options.max_requests;
  web.web_config_file = options.web_config_file;
  web.log = [](std::string_view line) { spdlog::warn("http: {}", line); };
  std::unique_ptr<http::Server> http;
  try {
    http = std::make_unique<http::Server>(web, std::move(routes));
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  } catch (const std::runtime_error& e) {
    std::string hint;
    const std::string what = e.what();
    if (what.find("Address already in use") != std::string::npos) {
      const auto address = http::parse_listen_address(
          what.substr(what.find("on ") + 3, what.find(": ") - what.find("on ") - 3));
      hint = "; `portlens why " + std::to_string(address.port) +
             "` shows who holds it, or pick another port";
    }
    throw Error(what + hint);
  }
  std::string ports;
  for (const auto& b : http->bound()) {
    ports += (ports.empty() ? "" : ",") + b;
  }

  LocalApiServer api(options.api_socket, [&](const json& request) -> json {
    const std::string op = request.value("op", "");
    if (op == "ping") {
      return json{{"ok", true}, {"version", kPortlensVersion}};
    }
    if (op == "failures") {
      return json{{"failures", findings.failures(request)}};
    }
    if (op == "holders") {
      return holders(pipeline, request, host_netns);
    }
    if (op == "top") {
      return top_snapshot(pipeline, findings, &inspector.namespaces(), nullptr,
                          TopQuery::from_request(request));
    }
    return json{{"error", "unknown op '" + op + "' (ping, failures, holders, top)"}};
  });

  spdlog::info("serving {} on {} and the local API on {}", options.telemetry_path, ports,
               options.api_socket);
  // Served from here on, /ready says 503 until the first look at every namespace is merged.
  const std::vector<NetnsRef> namespaces = inspector.namespaces().discover();
  pipeline.bootstrap(namespaces, traced_since);
  {
    const std::lock_guard lock(pipeline.mutex());
    spdlog::info("bootstrapped {} sockets and {} TIME_WAIT from {} network namespaces",
                 pipeline.tracker().socket_count(), pipeline.tracker().time_wait_count(),
                 namespaces.size());
  }

  ready = true;
  SystemdNotifier systemd;
  systemd.ready(fmt::format("tracing; {} network namespaces bootstrapped", namespaces.size()));

  EventLogWarned log_warned;
  MemoryReturn memory;
  SnapshotWalker walker(inspector.namespaces(), options.reconcile_interval_s,
                        [&inspector] { return inspector.namespaces().discover(); });
  while (!stop.load(std::memory_order_relaxed)) {
    if (reopen_log.exchange(false) && event_log) {
      if (const auto error = event_log->reopen()) {
        spdlog::error("cannot reopen the event log, still writing the old file: {}", *error);
      } else {
        spdlog::info("reopened the event log {}", *options.event_log);
      }
    }
    heartbeat_ns = static_cast<std::int64_t>(monotonic_ns());
    systemd.heartbeat();
    pipeline.step(std::chrono::milliseconds(100));
    if (event_log) {
      log_event_log_trouble(*event_log, log_warned);
    }
    if (auto taken = walker.next_snapshot()) {
      const auto start = Clock::now();
      pipeline.reconcile(*taken);
      spdlog::debug(
          "reconciled netns {} ({} sockets, {} KiB), {} ms", taken->ns.inode,
          taken->snapshot.is_compact ? taken->snapshot.compact.size()
                                     : taken->snapshot.table.sockets.size(),
          taken->snapshot.compact.memory_bytes() / 1024,
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
    }
    {
      const std::lock_guard lock(pipeline.mutex());
      memory.note(pipeline.tracker());
    }
    if (const auto round = walker.finished_round()) {
      pipeline.forget_all_but(*round);
      memory.after_round(pipeline);
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
  systemd.stopping();
  timed("the BPF programs", [&] {
    const std::lock_guard lock(tracer_mutex);
    tracer.reset();
  });
  timed("the local API", [&] { api.stop(); });
  timed("the HTTP server", [&] { http.reset(); });
  return 0;
}

}  // namespace portlens
