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

EventPipeline::EventPipeline(RecordSource& ring, FailureJudge& judge, PipelineSink& sink,
                             PipelineOptions options)
    : ring_(ring), judge_(judge), sink_(sink), options_(options), tracker_(options.tracker_limits) {
  batch_.reserve(std::min<std::size_t>(options_.max_batch, 4096));
}

std::size_t EventPipeline::bootstrap(NamespaceSource& source,
                                     const std::vector<NetnsRef>& namespaces) {
  std::size_t done = 0;
  for (const NetnsRef& ns : namespaces) {
    const std::uint64_t taken = monotonic_ns();
    Snapshot snapshot;
    try {
      snapshot = source.take(ns);
    } catch (const Error& e) {
      static_cast<void>(e);  // its last process may be gone: nothing to bootstrap
      continue;
    }
    const std::lock_guard lock(mu_);
    tracker_.bootstrap(ns.inode, snapshot.table, taken);
    configs_[ns.inode] = snapshot.table.config_for(ns.inode);
    ++done;
  }
  return done;
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
    }
    it = live ? std::next(it) : configs_.erase(it);
  }
}

}  // namespace portlens
