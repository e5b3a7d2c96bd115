// Reconcile snapshots, taken on their own thread. A walk of a busy namespace takes longer than the
// ring holds events for (the default 8 MiB is about 70 ms at 650,000 events/s), so the pipeline's
// thread must keep draining while it runs. Each snapshot is handed over one at a time, so at most
// one namespace's table is held besides the tracker, and the pipeline merges it after catching up
// with the events of the walk (EventPipeline::reconcile).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "agent/live/pipeline.hpp"
#include "agent/live/sources.hpp"
#include "agent/model/netns_ref.hpp"

namespace portlens {

class SnapshotWalker {
 public:
  // Which namespaces a round walks; by default every one the source discovers.
  using Scope = std::function<std::vector<NetnsRef>()>;

  // Walks every interval_s seconds, the first walk one interval after start.
  SnapshotWalker(const NamespaceSource& source, double interval_s, Scope scope);
  ~SnapshotWalker();
  SnapshotWalker(const SnapshotWalker&) = delete;
  SnapshotWalker& operator=(const SnapshotWalker&) = delete;
  SnapshotWalker(SnapshotWalker&&) = delete;
  SnapshotWalker& operator=(SnapshotWalker&&) = delete;

  // A snapshot waiting to be merged, if any; taking it lets the walk go on.
  std::optional<TakenSnapshot> next_snapshot() { return take(snapshot_); }
  // The namespaces of a finished round, once every one of its snapshots has been taken.
  std::optional<std::vector<NetnsRef>> finished_round() { return take(round_); }

 private:
  using Clock = std::chrono::steady_clock;
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
  // Waits until the pipeline has taken what was handed over; false when stopping.
  bool wait_handed_over(std::unique_lock<std::mutex>& lock);
  void run();

  const NamespaceSource& source_;
  const Clock::duration interval_;
  const Scope scope_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::optional<TakenSnapshot> snapshot_;
  std::optional<std::vector<NetnsRef>> round_;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace portlens
