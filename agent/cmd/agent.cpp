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
#include "exporters/local_api.hpp"
#include "exporters/scrape_input.hpp"
#include "portlens_version.hpp"

namespace portlens {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

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
  TracerRecords records(*tracer);
  LiveInspector inspector;
  AgentFindings findings(options.top_k, options.history, event_log.get());
  EventPipeline pipeline(records, inspector.judge(), findings);
  const std::uint64_t host_netns = current_netns().inode;

  const std::vector<NetnsRef> namespaces = inspector.namespaces().discover();
  pipeline.bootstrap(inspector.namespaces(), namespaces);
  {
    const std::lock_guard lock(pipeline.mutex());
    spdlog::info("bootstrapped {} sockets and {} TIME_WAIT from {} network namespaces",
                 pipeline.tracker().socket_count(), pipeline.tracker().time_wait_count(),
                 namespaces.size());
  }

  const std::string version = kPortlensVersion;
  const std::string kernel = kernel_release();
  std::atomic<double> last_scrape_seconds{0};
  auto collector = std::make_shared<PortlensCollector>(
      [&]() {
        const std::uint64_t owner_drops = inspector.owners().dropped();
        const std::uint64_t log_failures = event_log ? event_log->stats().write_failures : 0;
        const std::lock_guard lock(pipeline.mutex());
        const SocketTracker& tracker = pipeline.tracker();
        ScrapeInput in;
        // Rows, not a SocketTable copy: the lock also holds off event processing.
        auto rows = tracker.rows(monotonic_ns());
        for (const auto& [inode, cfg] : pipeline.configs()) {
          NetnsScrape ns{inode, cfg, {}};
          if (const auto it = rows.find(inode); it != rows.end()) {
            ns.sockets = std::move(it->second);
          }
          in.namespaces.push_back(std::move(ns));
        }
        findings.fill(in.counters);
        in.counters.events_lost = pipeline.counters().lost.total();
        in.counters.events_malformed = pipeline.counters().malformed;
        in.counters.event_log_write_failures = log_failures;
        in.counters.owner_map_drops = owner_drops;
        for (const auto& [kind, n] : tracker.counters().corrections) {
          in.counters.reconcile_corrections[kind] = n;
        }
        in.counters.evictions["sockets"] = tracker.counters().sockets_dropped;
        in.counters.evictions["time_wait"] = tracker.counters().time_wait_dropped;
        in.tracked_sockets = tracker.socket_count() + tracker.time_wait_count();
        in.last_scrape_duration_seconds = last_scrape_seconds.load();
        in.version = version;
        in.kernel = kernel;
        return in;
      },
      options.top_k);

  // The scrape duration is measured around the whole handler and reported by the next scrape.
  class TimedMetricsPage : public MetricsPage {
   public:
    TimedMetricsPage(std::shared_ptr<PortlensCollector> c, std::atomic<double>& seconds)
        : MetricsPage(std::move(c)), seconds_(seconds) {}
    bool handleGet(CivetServer* server, mg_connection* conn) override {
      const auto start = Clock::now();
      const bool ok = MetricsPage::handleGet(server, conn);
      seconds_ = std::chrono::duration<double>(Clock::now() - start).count();
      return ok;
    }

   private:
    std::atomic<double>& seconds_;
  };
  LandingPage landing(options.telemetry_path);
  TimedMetricsPage metrics(collector, last_scrape_seconds);
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
    return json{{"error", "unknown op '" + op + "' (ping, failures, holders)"}};
  });

  spdlog::info("serving {} on {} and the local API on {}", options.telemetry_path, ports,
               options.api_socket);

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
    pipeline.step(std::chrono::milliseconds(100));
    if (auto taken = walker.next_snapshot()) {
      const auto start = Clock::now();
      pipeline.reconcile(*taken);
      spdlog::debug(
          "reconciled netns {} ({} sockets), {} ms", taken->ns.inode,
          taken->snapshot.table.sockets.size(),
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
    }
    if (const auto round = walker.finished_round()) {
      pipeline.forget_all_but(*round);
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
