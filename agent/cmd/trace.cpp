#include "agent/cmd/trace.hpp"

#include <chrono>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <unordered_set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/kernel/inspector.hpp"
#include "agent/kernel/netns.hpp"
#include "agent/kernel/preflight.hpp"
#include "agent/live/pipeline.hpp"
#include "agent/live/walker.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"
#include "agent/render/format.hpp"
#include "agent/render/report.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens {

namespace {
// How often trace corrects its socket table from snapshots of the namespaces it watches.
constexpr std::chrono::duration<double> kTraceReconcileInterval{30.0};
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
  if (event.type == EventType::kDestroy) {
    return false;  // the tracker's business; `trace` shows what happened to the state instead
  }
  if (event.type == EventType::kState || event.type == EventType::kReset ||
      event.type == EventType::kResetSent) {
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

namespace {

// What `trace` does with the pipeline's findings: the filter decides what is shown (and so
// diagnosed), and each shown event is written at once, with its diagnosis.
class TraceWriter final : public PipelineSink {
 public:
  TraceWriter(const TraceOptions& options, std::optional<std::uint32_t> netns_inode,
              std::ostream& out, TraceSummary& summary)
      : options_(options), filter_(options, netns_inode), out_(out), summary_(summary) {}

  bool select(const Event& event) override { return filter_.accepts(event); }

  void event(const Event& event, const Diagnosis* diagnosis) override {
    ++summary_.shown;
    summary_.self_connects += event.self_connect() ? 1 : 0;
    if (diagnosis != nullptr) {
      ++summary_.diagnosed;
      if (summary_.diagnosis_latency_ns.size() < kMaxLatencySamples) {
        summary_.diagnosis_latency_ns.push_back(monotonic_ns() - event.ts_ns);
      }
    }
    const std::optional<int> time_wait_s = time_wait_born(event);
    if (options_.json) {
      nlohmann::json j = event_to_json(event, clock_);
      if (time_wait_s) {
        j["time_wait_expires_in_s"] = *time_wait_s;
      }
      if (diagnosis != nullptr) {
        j["diagnosis"] = diagnosis_to_json(*diagnosis);
      }
      // A comm is bytes, not always UTF-8: replace keeps the line valid JSON.
      out_ << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    } else {
      std::string row = format_table_row(event, clock_, options_.wide);
      if (time_wait_s) {
        // "FIN_WAIT2->CLOSE" becomes "FIN_WAIT2->TIME_WAIT 60s": the socket's place is taken
        // by a TIME_WAIT, which lasts that long.
        row.replace(row.size() - std::string_view("CLOSE").size(), std::string::npos,
                    fmt::format("TIME_WAIT {}s", *time_wait_s));
      }
      out_ << row << '\n';
      if (diagnosis != nullptr) {
        out_ << format_diagnosis(*diagnosis, "    ");
      }
    }
  }

 private:
  // docs/kernel-rules.md 5: tcp_time_wait() then tcp_done() shows FIN_WAIT2->CLOSE or
  // CLOSING->CLOSE, and the TIME_WAIT that takes the socket's place lasts TCP_TIMEWAIT_LEN (60 s);
  // an RST received first (tcp_reset(), then tcp_done()) closes it with none. Returns the
  // TIME_WAIT's lifetime when this state event began one.
  std::optional<int> time_wait_born(const Event& event) {
    if (event.type == EventType::kReset) {
      if (reset_.size() >= EventFilter::kMaxRememberedSockets) {
        reset_.clear();  // bounded: an RST whose close never came is forgotten
      }
      reset_.insert(event.sock_id);
      return std::nullopt;
    }
    if (event.type != EventType::kState || event.new_state != static_cast<int>(TcpState::kClose)) {
      return std::nullopt;
    }
    const bool was_reset = reset_.erase(event.sock_id) > 0;
    const bool closing = event.old_state == static_cast<int>(TcpState::kFinWait2) ||
                         event.old_state == static_cast<int>(TcpState::kClosing);
    return closing && !was_reset ? std::optional(kTimeWaitSeconds) : std::nullopt;
  }

  static constexpr int kTimeWaitSeconds = 60;  // TCP_TIMEWAIT_LEN
  const TraceOptions& options_;
  EventFilter filter_;
  std::unordered_set<std::uint64_t> reset_;  // sockets shown an RST, until their close
  std::ostream& out_;
  TraceSummary& summary_;
  const WallClock clock_;
};

}  // namespace

TraceSummary run_trace(const TraceOptions& options, std::ostream& out, std::ostream& status,
                       const std::atomic<bool>& stop) {
  std::optional<NetnsRef> only;
  if (options.netns) {
    only = resolve_netns(*options.netns);
  }
  require_preflight();

  TracerConfig config;
  config.pid_filter = options.pid.value_or(0);
  config.netns_filter = only ? only->inode : 0;
  config.ring_bytes = options.ring_bytes;
  // State changes always feed the tracker, which remembers who owned each TIME_WAIT socket;
  // they are shown only with --states.
  config.tcp_states = true;
  const std::uint64_t traced_since = monotonic_ns();  // no event is older
  BpfTracer tracer(config);
  TracerRecords records(tracer);
  LiveInspector inspector;
  TraceSummary summary;
  TraceWriter writer(options, only ? std::optional(only->inode) : std::nullopt, out, summary);
  EventPipeline pipeline(records, inspector.namespaces(), inspector.judge(), writer);

  // Bootstrap: what exists before the first event. A snapshot taken lazily at a namespace's
  // first event could already miss a blocker that exited in between.
  const SnapshotWalker::Scope scope = [&]() {
    return only ? std::vector<NetnsRef>{*only} : inspector.namespaces().discover();
  };
  const std::size_t namespaces = pipeline.bootstrap(scope(), traced_since);
  {
    const std::lock_guard lock(pipeline.mutex());
    spdlog::debug("bootstrapped {} sockets and {} TIME_WAIT from {} namespaces",
                  pipeline.tracker().socket_count(), pipeline.tracker().time_wait_count(),
                  namespaces);
  }

  if (!options.json) {
    out << format_table_header(options.wide) << '\n';
  }
  status << "Tracing bind/listen/connect" << (options.states ? " and TCP state changes" : "")
         << "... Ctrl-C to stop." << std::endl;

  using Clock = std::chrono::steady_clock;
  const auto deadline =
      options.duration_s
          ? std::optional(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(*options.duration_s)))
          : std::nullopt;
  // Corrections from snapshots, taken on their own thread and merged in slices, as the agent
  // does: a trace of a busy host never stops showing events while a namespace is walked.
  SnapshotWalker walker(inspector.namespaces(), kTraceReconcileInterval.count(), scope);
  while (!stop.load(std::memory_order_relaxed)) {
    auto wait = std::chrono::milliseconds(100);
    if (deadline) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
      if (left.count() <= 0) {
        break;
      }
      wait = std::min(wait, left);
    }
    // Flushed after every turn: failures that waited for their judgment come out in later
    // turns, records or not.
    pipeline.step(wait);
    out.flush();
    if (!out) {
      break;  // the reader went away (a closed pipe): stop quietly
    }
    if (auto taken = walker.next_snapshot()) {
      pipeline.reconcile(*taken);
      out.flush();
    }
    if (const auto round = walker.finished_round()) {
      pipeline.forget_all_but(*round);
    }
  }
  // Whatever is already in the ring is part of the trace, and every failure in it is judged.
  pipeline.finish();
  out.flush();
  const std::lock_guard lock(pipeline.mutex());
  summary.seen = pipeline.counters().records;
  summary.malformed = pipeline.counters().malformed;
  summary.lost = tracer.drops();
  for (const auto& [kind, n] : pipeline.tracker().counters().corrections) {
    spdlog::debug("tracker corrections {}: {}", kind, n);
  }
  return summary;
}

}  // namespace portlens
