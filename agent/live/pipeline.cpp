#include "agent/live/pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <thread>

#include "agent/live/judge.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"

namespace portlens {
namespace {

// Batches drained before a reconcile merges: 64 of max_batch, over twenty rings' worth.
constexpr int kCatchUpBatches = 64;
constexpr std::chrono::milliseconds kPendingPoll{10};
// What the batch keeps reserved between bursts.
constexpr std::size_t kBatchKept = 4096;

}  // namespace

EventPipeline::EventPipeline(RecordSource& ring, NamespaceSource& namespaces, FailureJudge& judge,
                             PipelineSink& sink, PipelineOptions options)
    : ring_(ring),
      source_(namespaces),
      judge_(judge),
      sink_(sink),
      options_(options),
      tracker_(options.tracker_limits),
      coalescer_(FailureCoalescer::Options{
          static_cast<std::uint64_t>(std::chrono::nanoseconds(options.coalesce_window).count()),
          options.max_coalesced_keys}) {
  batch_.reserve(std::min<std::size_t>(options_.max_batch, kBatchKept));
}

std::size_t EventPipeline::bootstrap(const std::vector<NetnsRef>& namespaces,
                                     std::uint64_t traced_since_ns) {
  std::size_t done = 0;
  for (const NetnsRef& ns : namespaces) {
    done += load(ns, 0, traced_since_ns)
                ? 1
                : 0;  // one that cannot be inspected (its last process gone) is skipped
  }
  return done;
}

bool EventPipeline::load(const NetnsRef& ns, std::uint64_t as_of_ns, std::uint64_t known_since_ns) {
  const std::uint64_t taken = as_of_ns != 0 ? as_of_ns : monotonic_ns();
  Snapshot snapshot;
  try {
    snapshot = source_.take(ns);
  } catch (const Error& e) {
    static_cast<void>(e);
    return false;
  }
  const std::lock_guard lock(mu_);
  if (const auto it = known_.find(ns.inode); it != known_.end() && it->second.cookie != 0 &&
                                             snapshot.cookie != 0 &&
                                             it->second.cookie != snapshot.cookie) {
    forget_locked(ns.inode);  // the inode came back as another namespace: nothing carries over
    ++counters_.namespaces_recycled;
  }
  tracker_.bootstrap(ns.inode, snapshot.table, taken, known_since_ns);
  configs_[ns.inode] = snapshot.table.config_for(ns.inode);
  known_[ns.inode] = KnownNamespace{ns, snapshot.cookie};
  retry_at_.erase(ns.inode);
  return true;
}

void EventPipeline::forget_locked(std::uint64_t inode) {
  tracker_.forget_namespace(inode, monotonic_ns());
  configs_.erase(inode);
  known_.erase(inode);
}

void EventPipeline::load_new_namespaces() {
  // (inode, a pid that made an event there): call events name their process; state events run
  // in softirq context and name none.
  struct Unknown {
    std::uint32_t pid = 0;
    std::uint64_t first_ts = 0;
  };
  std::map<std::uint64_t, Unknown> unknown;
  {
    const std::lock_guard lock(mu_);
    const std::uint64_t now = monotonic_ns();
    for (const Event& e : batch_) {
      if (e.netns == 0 || known_.contains(e.netns)) {
        continue;
      }
      if (const auto r = retry_at_.find(e.netns); r != retry_at_.end() && r->second > now) {
        continue;
      }
      Unknown& u = unknown[e.netns];
      if (u.pid == 0 && e.is_call()) {
        u.pid = e.pid;
      }
      if (u.first_ts == 0 || e.ts_ns < u.first_ts) {
        u.first_ts = e.ts_ns;
      }
    }
  }
  std::size_t loaded = 0;
  for (const auto& [inode, u] : unknown) {
    if (loaded >= options_.max_new_namespaces_per_batch) {
      break;
    }
    const auto ref = source_.locate(static_cast<std::uint32_t>(inode), u.pid);
    // The snapshot stands for the moment before the namespace's first event: its sockets the
    // events did not show were there before, so a failure in this batch is judged against them.
    const bool ok = ref && load(*ref, u.first_ts - 1);
    const std::lock_guard lock(mu_);
    if (ok) {
      ++loaded;
      ++counters_.namespaces_loaded;
    } else {
      // Gone already (a container that lived for one call), or not inspectable: try later,
      // with a bounded memory of such namespaces.
      if (retry_at_.size() >= 4096) {
        retry_at_.erase(retry_at_.begin());
      }
      retry_at_[inode] =
          monotonic_ns() +
          static_cast<std::uint64_t>(std::chrono::nanoseconds(options_.load_retry).count());
    }
  }
}

void EventPipeline::take_record(std::span<const std::byte> record) {
  DecodeResult decoded = decode_event(record);
  ++unflushed_.records;
  if (decoded.event) {
    batch_.push_back(std::move(*decoded.event));
  } else {
    ++unflushed_.malformed;
  }
}

bool EventPipeline::drain() {
  const RecordSource::Sink take = [this](std::span<const std::byte> r) { take_record(r); };
  while (batch_.size() < options_.max_batch &&
         ring_.poll(std::chrono::milliseconds(0), take, options_.max_batch - batch_.size()) > 0) {
  }
  return batch_.size() >= options_.max_batch;
}

void EventPipeline::process_batch() {
  {
    const std::lock_guard lock(mu_);
    for (const Event& e : batch_) {
      tracker_.apply(e);
      // In order: a change after a failure means its repeats are judged again.
      if (e.failed()) {
        coalescer_.watch(e);
      } else if (coalescer_.watching()) {
        coalescer_.note_change(e);
      }
    }
    counters_.records += unflushed_.records;
    counters_.malformed += unflushed_.malformed;
    unflushed_.records = 0;
    unflushed_.malformed = 0;
    sink_.applied(batch_);
  }
  load_new_namespaces();
  // Selected in order (a sink's filter may keep state), then judged after the whole batch is
  // applied: the tracker then knows which sockets appeared after each failed call. Judged as
  // they are offered, so that the identical failures after a judged one are coalesced at once
  // instead of filling the queue behind it.
  const std::uint64_t deadline = monotonic_ns() + budget_ns();
  for (Event& e : batch_) {
    if (sink_.select(e)) {
      offer(std::move(e));
      if (!pending_.empty()) {
        judge_pending(deadline);
      }
    }
  }
  batch_.clear();
  finish_turn(monotonic_ns());
}

std::uint64_t EventPipeline::budget_ns() const {
  return static_cast<std::uint64_t>(std::chrono::nanoseconds(options_.diagnosis_budget).count());
}

void EventPipeline::offer(Event event) {
  const bool judged = call_from_event(event).has_value();
  if (pending_.empty() || pending_.size() >= options_.max_pending) {
    if (!judged) {
      sink_.event(event, nullptr);
      return;
    }
    if (const Diagnosis* d = coalescer_.repeat(event)) {
      ++unflushed_.coalesced;
      sink_.repeat(event, *d);
      return;
    }
    if (!pending_.empty()) {
      ++unflushed_.shed;  // the queue is full: counted, never judged
      sink_.shed(event);
      return;
    }
  }
  pending_.push_back(std::move(event));
}

void EventPipeline::finish() {
  catch_up();
  judge_pending(0, true);
  finish_turn(std::numeric_limits<std::uint64_t>::max());
}

void EventPipeline::judge_pending(std::uint64_t deadline, bool all) {
  while (!pending_.empty()) {
    const Event& e = pending_.front();
    const auto call = call_from_event(e);
    if (!call) {
      sink_.event(e, nullptr);
    } else if (const Diagnosis* shared = coalescer_.repeat(e)) {
      ++unflushed_.coalesced;
      sink_.repeat(e, *shared);
    } else {
      // At least one judgment per turn; then the budget, and a namespace whose snapshot was
      // just taken waits for the next one rather than walking again.
      if (!all && (stopping() || !judge_.ready_for(e) ||
                   (judged_this_turn_ && monotonic_ns() >= deadline))) {
        return;
      }
      const Diagnosis d = judge_.diagnose(e, *call, &tracker_, &mu_);
      ++unflushed_.diagnosed;
      judged_this_turn_ = true;
      coalescer_.judged(e, d, monotonic_ns());
      sink_.event(e, &d);
    }
    pending_.pop_front();
  }
}

void EventPipeline::finish_turn(std::uint64_t now_ns) {
  judged_this_turn_ = false;
  for (const FailureCoalescer::Closed& closed : coalescer_.take_closed(now_ns)) {
    sink_.coalesced(closed);
  }
  const std::lock_guard lock(mu_);
  counters_.diagnosed += unflushed_.diagnosed;
  counters_.coalesced += unflushed_.coalesced;
  counters_.shed += unflushed_.shed;
  unflushed_.diagnosed = 0;
  unflushed_.coalesced = 0;
  unflushed_.shed = 0;
  counters_.pending = pending_.size();
}

std::size_t EventPipeline::step(std::chrono::milliseconds timeout) {
  const RecordSource::Sink take = [this](std::span<const std::byte> r) { take_record(r); };
  std::size_t records = 0;
  // Failures waiting for their judgment are taken up again soon, records or not.
  const auto wait = pending_.empty() ? timeout : std::min(timeout, kPendingPoll);
  if (ring_.poll(wait, take, options_.max_batch) > 0) {
    const bool full = drain();
    records = unflushed_.records;
    process_batch();
    if (!full && options_.batch_pause.count() > 0) {
      std::this_thread::sleep_for(options_.batch_pause);
    }
  } else {
    // The queue, and the coalescing windows that ended meanwhile.
    judge_pending(monotonic_ns() + budget_ns());
    finish_turn(monotonic_ns());
  }
  const DropCounters lost = ring_.drops();
  const std::lock_guard lock(mu_);
  tracker_.expire(monotonic_ns());
  counters_.lost = lost;
  return records;
}

void EventPipeline::catch_up() {
  for (int round = 0; round < kCatchUpBatches && !stopping(); ++round) {
    const bool full = drain();
    process_batch();
    if (!full) {
      break;
    }
  }
}

void EventPipeline::reconcile(const TakenSnapshot& taken) {
  catch_up();
  {
    const std::lock_guard lock(mu_);
    if (const auto it = known_.find(taken.ns.inode); it != known_.end() && it->second.cookie != 0 &&
                                                     taken.snapshot.cookie != 0 &&
                                                     it->second.cookie != taken.snapshot.cookie) {
      // The inode now names another namespace: drop the old one's state and take this
      // snapshot as a first look, not as corrections.
      forget_locked(taken.ns.inode);
      ++counters_.namespaces_recycled;
      if (taken.snapshot.is_compact) {
        // bootstrap() over the compact form: the same merge, nothing it adds a correction.
        tracker_.begin_merge(taken.ns.inode, taken.snapshot.compact,
                             taken.snapshot.table.config_for(taken.ns.inode), taken.taken_ns,
                             /*bootstrap=*/true);
        while (!tracker_.merge_some(std::numeric_limits<std::size_t>::max())) {
        }
      } else {
        tracker_.bootstrap(taken.ns.inode, taken.snapshot.table, taken.taken_ns);
      }
      configs_[taken.ns.inode] = taken.snapshot.table.config_for(taken.ns.inode);
      known_[taken.ns.inode] = KnownNamespace{taken.ns, taken.snapshot.cookie};
      return;
    }
    known_[taken.ns.inode] = KnownNamespace{taken.ns, taken.snapshot.cookie};
    if (taken.snapshot.is_compact) {
      tracker_.begin_merge(taken.ns.inode, taken.snapshot.compact,
                           taken.snapshot.table.config_for(taken.ns.inode), taken.taken_ns);
    } else {
      tracker_.begin_merge(taken.ns.inode, taken.snapshot.table, taken.taken_ns);
    }
    configs_[taken.ns.inode] = taken.snapshot.table.config_for(taken.ns.inode);
  }
  for (bool done = false; !done && !stopping();) {
    {
      const std::lock_guard lock(mu_);
      done = tracker_.merge_some(options_.merge_slice);
    }
    catch_up();
  }
}

std::size_t EventPipeline::release_memory() {
  const std::lock_guard lock(mu_);
  std::size_t released = tracker_.release_memory();
  if (pending_.empty()) {
    pending_.shrink_to_fit();
  }
  // The batch is this thread's; a full one (max_batch events of ~200 bytes) need not stay.
  if (batch_.empty() && batch_.capacity() > kBatchKept) {
    released += (batch_.capacity() - kBatchKept) * sizeof(Event);
    std::vector<Event>().swap(batch_);
    batch_.reserve(kBatchKept);
  }
  return released;
}

void EventPipeline::forget_all_but(const std::vector<NetnsRef>& alive) {
  const std::lock_guard lock(mu_);
  for (auto it = configs_.begin(); it != configs_.end();) {
    const bool live = std::any_of(alive.begin(), alive.end(),
                                  [&](const NetnsRef& n) { return n.inode == it->first; });
    if (!live) {
      tracker_.forget_namespace(it->first, monotonic_ns());
      known_.erase(it->first);
    }
    it = live ? std::next(it) : configs_.erase(it);
  }
}

}  // namespace portlens
