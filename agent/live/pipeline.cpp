#include "agent/live/pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <optional>
#include <thread>

#include "agent/live/judge.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"

namespace portlens {
namespace {

constexpr int kCatchUpBatches = 16;

}  // namespace

EventPipeline::EventPipeline(RecordSource& ring, NamespaceSource& namespaces, FailureJudge& judge,
                             PipelineSink& sink, PipelineOptions options)
    : ring_(ring),
      source_(namespaces),
      judge_(judge),
      sink_(sink),
      options_(options),
      tracker_(options.tracker_limits) {
  batch_.reserve(std::min<std::size_t>(options_.max_batch, 4096));
}

std::size_t EventPipeline::bootstrap(const std::vector<NetnsRef>& namespaces) {
  std::size_t done = 0;
  for (const NetnsRef& ns : namespaces) {
    done += load(ns) ? 1 : 0;  // one that cannot be inspected (its last process gone) is skipped
  }
  return done;
}

bool EventPipeline::load(const NetnsRef& ns, std::uint64_t as_of_ns) {
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
  tracker_.bootstrap(ns.inode, snapshot.table, taken);
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
  while (batch_.size() < options_.max_batch && ring_.poll(std::chrono::milliseconds(0), take) > 0) {
  }
  return batch_.size() >= options_.max_batch;
}

void EventPipeline::process_batch() {
  {
    const std::lock_guard lock(mu_);
    for (const Event& e : batch_) {
      tracker_.apply(e);
    }
    counters_.records += unflushed_.records;
    counters_.malformed += unflushed_.malformed;
    unflushed_ = {};
    sink_.applied(batch_);
  }
  load_new_namespaces();
  // Selected in order (a sink's filter may keep state), then diagnosed after the whole batch is
  // applied: the tracker then knows which sockets appeared after each failed call.
  for (const Event& e : batch_) {
    if (!sink_.select(e)) {
      continue;
    }
    std::optional<Diagnosis> diagnosis;
    if (const auto call = call_from_event(e)) {
      diagnosis = judge_.diagnose(e, *call, &tracker_, &mu_);
      const std::lock_guard lock(mu_);
      ++counters_.diagnosed;
    }
    sink_.event(e, diagnosis ? &*diagnosis : nullptr);
  }
  batch_.clear();
}

std::size_t EventPipeline::step(std::chrono::milliseconds timeout) {
  const RecordSource::Sink take = [this](std::span<const std::byte> r) { take_record(r); };
  std::size_t records = 0;
  if (ring_.poll(timeout, take) > 0) {
    const bool full = drain();
    records = unflushed_.records;
    process_batch();
    if (!full && options_.batch_pause.count() > 0) {
      std::this_thread::sleep_for(options_.batch_pause);
    }
  }
  const DropCounters lost = ring_.drops();
  const std::lock_guard lock(mu_);
  tracker_.expire(monotonic_ns());
  counters_.lost = lost;
  return records;
}

void EventPipeline::catch_up() {
  for (int round = 0; round < kCatchUpBatches; ++round) {
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
      tracker_.bootstrap(taken.ns.inode, taken.snapshot.table, taken.taken_ns);
      configs_[taken.ns.inode] = taken.snapshot.table.config_for(taken.ns.inode);
      known_[taken.ns.inode] = KnownNamespace{taken.ns, taken.snapshot.cookie};
      return;
    }
    known_[taken.ns.inode] = KnownNamespace{taken.ns, taken.snapshot.cookie};
    tracker_.begin_merge(taken.ns.inode, taken.snapshot.table, taken.taken_ns);
    configs_[taken.ns.inode] = taken.snapshot.table.config_for(taken.ns.inode);
  }
  for (bool done = false; !done;) {
    {
      const std::lock_guard lock(mu_);
      done = tracker_.merge_some(options_.merge_slice);
    }
    catch_up();
  }
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
