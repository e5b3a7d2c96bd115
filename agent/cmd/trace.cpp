#include "agent/cmd/trace.hpp"

#include <chrono>
#include <ostream>

#include <spdlog/spdlog.h>

#include "agent/kernel/inspector.hpp"
#include "agent/kernel/netns.hpp"
#include "agent/kernel/preflight.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"
#include "agent/render/format.hpp"
#include "agent/render/report.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens {

namespace {
// How often trace corrects its socket table from snapshots of the namespaces it watches.
constexpr auto kTraceReconcileInterval = std::chrono::seconds(30);
constexpr std::size_t kMaxLatencySamples = 100'000;
}  // namespace

EventFilter::EventFilter(const TraceOptions& options, std::optional<std::uint32_t> netns_inode)
    : failures_(options.failures),
      states_(options.states),
      pid_(options.pid),
      port_(options.port),
      netns_(netns_inode) {}

bool EventFilter::port_matches(const Event& event) const {
  if (!port_) {
    return true;
  }
  const auto has = [&](const std::optional<Endpoint>& ep) { return ep && ep->port == *port_; };
  return has(event.requested) || has(event.local) || has(event.remote);
}

bool EventFilter::accepts(const Event& event) {
  if (netns_ && event.netns != *netns_) {
    return false;
  }
  if (event.type == EventType::kReset || event.type == EventType::kDestroy) {
    return false;  // the tracker's business; `trace` shows what happened to the state instead
  }
  if (event.type == EventType::kState) {
    if (!states_ || failures_) {
      return false;
    }
    if (pid_) {
      const auto it = pid_sockets_.find(event.sock_id);
      if (it == pid_sockets_.end()) {
        return false;
      }
      // A closed socket's kernel address can be reused by another process's next socket.
      if (event.new_state == static_cast<int>(TcpState::kClose)) {
        pid_sockets_.erase(it);
      }
    }
    return port_matches(event);
  }
  if (pid_) {
    if (event.pid != *pid_) {
      return false;
    }
    if (states_ && pid_sockets_.size() < kMaxRememberedSockets) {
      pid_sockets_.insert(event.sock_id);
    }
  }
  if (failures_ && !event.failed()) {
    return false;
  }
  return port_matches(event);
}

TraceSummary run_trace(const TraceOptions& options, std::ostream& out, std::ostream& status,
                       const std::atomic<bool>& stop) {
  std::optional<std::uint32_t> netns_inode;
  if (options.netns) {
    netns_inode = resolve_netns(*options.netns).inode;
  }
  require_preflight();

  TracerConfig config;
  config.pid_filter = options.pid.value_or(0);
  config.netns_filter = netns_inode.value_or(0);
  config.ring_bytes = options.ring_bytes;
  // State changes always feed the tracker, which remembers who owned each TIME_WAIT socket;
  // they are shown only with --states.
  config.tcp_states = true;
  BpfTracer tracer(config);
  LiveInspector inspector;
  SocketTracker tracker;

  // Bootstrap: what exists before the first event. A snapshot taken lazily at a namespace's
  // first event could already miss a blocker that exited in between.
  std::vector<NetnsRef> namespaces;
  if (netns_inode) {
    namespaces.push_back(resolve_netns(*options.netns));
  } else {
    namespaces = discover_netns();
  }
  const auto reconcile_all = [&](bool first) {
    for (auto it = namespaces.begin(); it != namespaces.end();) {
      const std::uint64_t taken = monotonic_ns();
      try {
        const Snapshot snap = inspector.snapshotter().take(*it);
        if (first) {
          tracker.bootstrap(it->inode, snap.table, taken);
        } else {
          tracker.reconcile(it->inode, snap.table, taken);
        }
        ++it;
      } catch (const Error& e) {
        spdlog::debug("netns {} no longer inspectable: {}", it->path, e.what());
        it = namespaces.erase(it);  // its last process is gone
      }
    }
  };
  reconcile_all(true);
  spdlog::debug("bootstrapped {} sockets and {} TIME_WAIT from {} namespaces",
                tracker.socket_count(), tracker.time_wait_count(), namespaces.size());

  const WallClock clock;
  EventFilter filter(options, netns_inode);
  TraceSummary summary;
  if (!options.json) {
    out << format_table_header() << '\n';
  }
  status << "Tracing bind/listen/connect" << (options.states ? " and TCP state changes" : "")
         << "... Ctrl-C to stop." << std::endl;

  std::vector<Event> shown;  // this batch's events that pass the filter, in order
  const BpfTracer::RecordSink sink = [&](std::span<const std::byte> record) {
    ++summary.seen;
    const DecodeResult decoded = decode_event(record);
    if (!decoded.event) {
      ++summary.malformed;
      spdlog::debug("dropped a malformed record: {}", to_string(*decoded.error));
      return;
    }
    const Event& event = *decoded.event;
    tracker.apply(event);
    if (!filter.accepts(event)) {
      return;
    }
    ++summary.shown;
    shown.push_back(event);
  };
  // Failures are diagnosed once the batch they came in has been applied to the tracker: by then
  // it knows which sockets appeared after each failed call, and leaves them out.
  const auto write_shown = [&] {
    for (const Event& event : shown) {
      std::optional<Diagnosis> diagnosis;
      if (const auto call = call_from_event(event)) {
        diagnosis = inspector.diagnose(event, *call, &tracker);
        ++summary.diagnosed;
        if (summary.diagnosis_latency_ns.size() < kMaxLatencySamples) {
          summary.diagnosis_latency_ns.push_back(monotonic_ns() - event.ts_ns);
        }
      }
      if (options.json) {
        nlohmann::json j = event_to_json(event, clock);
        if (diagnosis) {
          j["diagnosis"] = diagnosis_to_json(*diagnosis);
        }
        out << j.dump() << '\n';
      } else {
        out << format_table_row(event, clock) << '\n';
        if (diagnosis) {
          out << format_diagnosis(*diagnosis, "    ");
        }
      }
    }
    shown.clear();
    out.flush();
  };

  using Clock = std::chrono::steady_clock;
  const auto deadline =
      options.duration_s
          ? std::optional(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(*options.duration_s)))
          : std::nullopt;
  auto next_reconcile = Clock::now() + kTraceReconcileInterval;
  while (!stop.load(std::memory_order_relaxed)) {
    if (Clock::now() >= next_reconcile) {
      tracer.poll(std::chrono::milliseconds(0), sink);  // apply what came before the snapshot
      write_shown();
      reconcile_all(false);
      next_reconcile = Clock::now() + kTraceReconcileInterval;
    }
    auto wait = std::chrono::milliseconds(100);
    if (deadline) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
      if (left.count() <= 0) {
        break;
      }
      wait = std::min(wait, left);
    }
    tracker.expire(monotonic_ns());
    if (tracer.poll(wait, sink) > 0) {
      // Drain what else is already there, so the batch is complete before diagnosing.
      while (tracer.poll(std::chrono::milliseconds(0), sink) > 0) {
      }
      write_shown();
      if (!out) {
        break;  // the reader went away (a closed pipe): stop quietly
      }
    }
  }
  // Whatever is already in the ring is part of the trace.
  tracer.poll(std::chrono::milliseconds(0), sink);
  write_shown();
  summary.lost = tracer.drops();
  for (const auto& [kind, n] : tracker.counters().corrections) {
    spdlog::debug("tracker corrections {}: {}", kind, n);
  }
  return summary;
}

}  // namespace portlens
