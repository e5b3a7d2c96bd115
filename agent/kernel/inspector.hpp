// Diagnosis against the live kernel: snapshots of a namespace's sockets, their owners, and the
// failed calls of traced events turned into diagnoses. Used by trace, check, why and the agent.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/diagnose/diagnoser.hpp"
#include "agent/kernel/kernel_only.hpp"
#include "agent/kernel/netns.hpp"
#include "agent/kernel/owners.hpp"
#include "agent/kernel/snapshot.hpp"
#include "agent/live/judge.hpp"
#include "agent/model/event.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens {

// A snapshot of one namespace with owners attributed, for check and why.
struct LiveTable {
  Snapshot snapshot;
  NetnsRef netns;
};

class LiveInspector {
 public:
  explicit LiveInspector(SnapshotOptions options = {});

  // A fresh snapshot of ns with owners: the tracker's memory first (it knows TIME_WAIT
  // owners), then /proc for sockets with an inode.
  LiveTable inspect(const NetnsRef& ns, const SocketTracker* tracker = nullptr);

  // Diagnoses a failed call seen as an event. A snapshot taken after the call is reused for
  // later failures in the same namespace: it holds every blocker that still exists.
  Diagnosis diagnose(const Event& event, const Call& call, const SocketTracker* tracker);

  [[nodiscard]] const SocketSnapshotter& snapshotter() const { return *snapshotter_; }

 private:
  struct CachedSnapshot {
    std::uint64_t taken_ns = 0;  // CLOCK_MONOTONIC, comparable with event timestamps
    Snapshot snapshot;
  };
  void refresh_owners_if_stale();

  std::unique_ptr<SocketSnapshotter> snapshotter_;
  SocketOwnerMap owners_;
  std::uint64_t owners_scanned_ns_ = 0;
  std::map<std::uint32_t, NetnsRef> netns_paths_;
  std::map<std::uint32_t, CachedSnapshot> snapshots_;
};

}  // namespace portlens
