#include "agent/live/walker.hpp"

#include <exception>
#include <utility>

#include <spdlog/spdlog.h>

#include "agent/model/clock.hpp"

namespace portlens {

SnapshotWalker::SnapshotWalker(const NamespaceSource& source, double interval_s, Scope scope)
    : source_(source),
      interval_(
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(interval_s))),
      scope_(std::move(scope)),
      thread_([this] { run(); }) {}

SnapshotWalker::~SnapshotWalker() {
  {
    const std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool SnapshotWalker::wait_handed_over(std::unique_lock<std::mutex>& lock) {
  cv_.wait(lock, [this] { return stopping_ || (!snapshot_ && !round_); });
  return !stopping_;
}

void SnapshotWalker::run() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, interval_, [this] { return stopping_; })) {
    lock.unlock();
    std::vector<NetnsRef> namespaces;
    try {
      namespaces = scope_();
    } catch (const std::exception& e) {
      spdlog::warn("cannot list network namespaces for reconcile: {}", e.what());
    }
    for (const NetnsRef& ns : namespaces) {
      TakenSnapshot taken{ns, {}, monotonic_ns()};
      try {
        taken.snapshot = source_.take_compact(ns);
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
    round_ = std::move(namespaces);  // alive: found, even when one could not be walked
  }
}

}  // namespace portlens
