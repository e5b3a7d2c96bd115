// The one event pipeline: ring records -> decode -> batch -> apply to the tracker -> diagnose the
// failures -> sinks. `portlens agent`, `portlens trace` and the benchmark all run this code; what
// differs between them is the sources they plug in and the sink they hand findings to.
//
// Threads: one thread drives the pipeline (step, catch_up, reconcile, bootstrap, expire). It
// alone changes the tracker, always under mutex(); readers (a scrape, the local API) take
// mutex() to read it. A diagnosis copies the sockets its call can involve under the lock and is
// judged outside it (FailureJudge), so readers never wait for a snapshot walk or /proc scan.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "agent/diagnose/diagnoser.hpp"
#include "agent/live/coalesce.hpp"
#include "agent/live/judge.hpp"
#include "agent/live/sources.hpp"
#include "agent/model/event.hpp"
#include "agent/model/netns_ref.hpp"
#include "agent/model/snapshot.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens {

struct PipelineOptions {
  // Events applied per hold of the lock, at most: a third of what the default ring holds, so a
  // full batch (216 bytes an event, 3.5 MB) is one of several drains of a backed-up ring, not a
  // copy of all of it. The next batch follows at once, without batch_pause.
  std::size_t max_batch = 16384;
  // After a batch that did not fill, wait this long before the next poll: under churn the ring
  // refills within microseconds of a drain, and a wakeup per handful of events (epoll, the lock,
  // the drop counters' map reads) costs more than the events themselves. The default 8 MiB ring
  // holds ~47,000 events, some 70 ms at 650,000 events/s, far more than the pause.
  std::chrono::milliseconds batch_pause{2};
  // Snapshot sockets merged per hold of the lock: some 25 ms at ~6 us each, a third of what the
  // default ring holds at 650,000 events/s.
  std::size_t merge_slice = 1024;
  // Namespaces first seen in events are loaded (config and a bootstrap snapshot) before their
  // batch is diagnosed: at most this many per batch, the rest with the next batches, and one
  // that could not be loaded is tried again after load_retry.
  std::size_t max_new_namespaces_per_batch = 32;
  std::chrono::milliseconds load_retry{1000};
  TrackerLimits tracker_limits;
  // Diagnosis with a budget (docs/architecture.md, "Diagnosis under a flood"). Identical
  // failures within coalesce_window of a judged one share its diagnosis (FailureCoalescer).
  // Judging stops for the turn after diagnosis_budget; the failures left wait in order, at most
  // max_pending of them, and those beyond are shed: counted, handed to the sink unjudged.
  std::chrono::milliseconds coalesce_window{1000};
  std::size_t max_coalesced_keys = 4096;
  std::chrono::milliseconds diagnosis_budget{50};
  std::size_t max_pending = 16384;
  // When set, a catch-up, a reconcile and the diagnosis queue give up as soon as it is: a stop
  // is never held up by a flood.
  const std::atomic<bool>* stop = nullptr;
};

// What the pipeline itself counted; read under mutex().
struct PipelineCounters {
  std::uint64_t records = 0;              // handed over by the ring
  std::uint64_t malformed = 0;            // records that failed to decode: dropped, counted here
  std::uint64_t diagnosed = 0;            // failures judged
  std::uint64_t coalesced = 0;            // failures given an identical one's diagnosis
  std::uint64_t shed = 0;                 // failures not judged: the queue was full
  std::uint64_t pending = 0;              // failures waiting for their judgment now
  std::uint64_t namespaces_loaded = 0;    // first seen in events, loaded at once
  std::uint64_t namespaces_recycled = 0;  // an inode that came back as another namespace
  DropCounters lost;                      // what the BPF side dropped, as of the last step
};

// Where findings go.
class PipelineSink {
 public:
  PipelineSink() = default;
  virtual ~PipelineSink() = default;
  PipelineSink(const PipelineSink&) = delete;
  PipelineSink& operator=(const PipelineSink&) = delete;
  PipelineSink(PipelineSink&&) = delete;
  PipelineSink& operator=(PipelineSink&&) = delete;

  // Under mutex(), right after the batch was applied: for cheap per-event counting.
  virtual void applied(std::span<const Event> batch) { static_cast<void>(batch); }
  // Outside the lock, each event of the batch in order: whether the sink wants it. Only the
  // events selected are diagnosed (when they are failures portlens explains) and handed to
  // event(). Default: the failures.
  virtual bool select(const Event& event) { return event.failed(); }
  // Outside the lock, each selected event in order, with its diagnosis when it has one.
  virtual void event(const Event& event, const Diagnosis* diagnosis) = 0;
  // A failure given the diagnosis of an identical one judged shortly before (FailureCoalescer).
  // By default handed to event() like any other.
  virtual void repeat(const Event& event, const Diagnosis& diagnosis) {
    this->event(event, &diagnosis);
  }
  // A coalescing window closed after it gave its diagnosis to closed.repeats failures.
  virtual void coalesced(const FailureCoalescer::Closed& closed) { static_cast<void>(closed); }
  // A failure that will not be judged: the diagnosis queue was full. By default handed to
  // event() without a diagnosis.
  virtual void shed(const Event& event) { this->event(event, nullptr); }
};

// A snapshot handed to reconcile(), with when its walk began.
struct TakenSnapshot {
  NetnsRef ns;
  Snapshot snapshot;
  std::uint64_t taken_ns = 0;  // CLOCK_MONOTONIC
};

class EventPipeline {
 public:
  EventPipeline(RecordSource& ring, NamespaceSource& namespaces, FailureJudge& judge,
                PipelineSink& sink, PipelineOptions options = {});

  // Guards tracker(), configs() and counters().
  [[nodiscard]] std::mutex& mutex() const { return mu_; }
  [[nodiscard]] const SocketTracker& tracker() const { return tracker_; }
  // Each known namespace's port config, from its last snapshot.
  [[nodiscard]] const std::map<std::uint64_t, NetnsPortConfig>& configs() const { return configs_; }
  // Each known namespace as last found: a path to it and its cookie.
  struct KnownNamespace {
    NetnsRef ref;
    std::uint64_t cookie = 0;
  };
  [[nodiscard]] const std::map<std::uint64_t, KnownNamespace>& namespaces() const { return known_; }
  [[nodiscard]] const PipelineCounters& counters() const { return counters_; }

  // The first look at each namespace, before the first event: merged at once. Namespaces that
  // cannot be inspected are skipped (logged at debug). Returns how many were bootstrapped.
  // traced_since_ns, when not 0, is when the tracer attached: what the snapshots show existed
  // since then at least (a failure traced during the bootstrap is judged against it).
  std::size_t bootstrap(const std::vector<NetnsRef>& namespaces, std::uint64_t traced_since_ns = 0);

  // Waits up to timeout for records, then drains up to max_batch, applies them, diagnoses the
  // failures and hands them to the sink. Pauses batch_pause after a batch that did not fill.
  // Also expires TIME_WAITs and reads the ring's drop counters. Returns the records handed over.
  std::size_t step(std::chrono::milliseconds timeout);
  // Drains what the ring holds now, batch by batch. Bounded: under endless churn the ring never
  // empties (at most 16 batches).
  void catch_up();
  // The end of a trace: drains the ring (catch_up), judges every failure still waiting
  // whatever the budget, and closes every coalescing window. Not for a stop under a flood:
  // its cost is the queue's.
  void finish();
  // Merges a snapshot into the tracker in slices, applying the events that arrived meanwhile
  // before and between them: the events of the sockets that changed while the snapshot ran are
  // still in the ring, and merged before them each would count as a correction that is none.
  void reconcile(const TakenSnapshot& taken);
  // Namespaces that are gone: their sockets and config are forgotten (not corrections).
  void forget_all_but(const std::vector<NetnsRef>& alive);
  // Gives back what a burst grew the tracker and the pipeline's own queue to, once they hold
  // far less (SocketTracker::release_memory), and the batch back to its usual reserve; about how
  // many bytes. Takes the lock; called by the thread that drives step().
  std::size_t release_memory();

  // Takes one namespace's snapshot and merges it as a first look; a namespace known under the
  // same inode with another cookie is forgotten first (the inode was reused). False when the
  // namespace could not be inspected.
  // as_of_ns, when not 0, is the moment the snapshot stands for: a namespace first seen in
  // events holds, besides what those events show, only sockets older than its first event.
  bool load(const NetnsRef& ns, std::uint64_t as_of_ns = 0, std::uint64_t known_since_ns = 0);

 private:
  void take_record(std::span<const std::byte> record);
  // Loads the namespaces of batch_ the pipeline does not know yet.
  void load_new_namespaces();
  // Under mu_: forgets everything of one namespace.
  void forget_locked(std::uint64_t inode);
  // Drains the ring into batch_, up to max_batch; true when it filled.
  bool drain();
  void process_batch();
  // A selected event, in order: delivered at once when nothing waits before it and it needs no
  // judgment (or an identical failure's is still valid), else queued.
  void offer(Event event);
  // Judges the queue in order until the deadline (at least one judgment per turn); all: every
  // one, whatever the budget and the snapshot interval.
  void judge_pending(std::uint64_t deadline, bool all = false);
  // Ends a turn: closes the coalescing windows that ended by now_ns, publishes the counters.
  void finish_turn(std::uint64_t now_ns);
  [[nodiscard]] std::uint64_t budget_ns() const;
  [[nodiscard]] bool stopping() const {
    return options_.stop != nullptr && options_.stop->load(std::memory_order_relaxed);
  }

  RecordSource& ring_;
  NamespaceSource& source_;
  FailureJudge& judge_;
  PipelineSink& sink_;
  const PipelineOptions options_;
  mutable std::mutex mu_;
  SocketTracker tracker_;
  std::map<std::uint64_t, NetnsPortConfig> configs_;
  std::map<std::uint64_t, KnownNamespace> known_;
  // Namespaces that could not be loaded, and when to try again (CLOCK_MONOTONIC ns); bounded.
  std::map<std::uint64_t, std::uint64_t> retry_at_;
  PipelineCounters counters_;
  std::vector<Event> batch_;
  FailureCoalescer coalescer_;
  std::deque<Event> pending_;  // selected events behind a failure that waits for its judgment
  bool judged_this_turn_ = false;
  // Counted by this thread since the last flush, added to counters_ under the lock.
  struct {
    std::uint64_t records = 0;
    std::uint64_t malformed = 0;
    std::uint64_t diagnosed = 0;
    std::uint64_t coalesced = 0;
    std::uint64_t shed = 0;
  } unflushed_;
};

}  // namespace portlens
