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

#include "agent/diagnoser.hpp"
#include "agent/event.hpp"
#include "agent/netns.hpp"
#include "agent/owners.hpp"
#include "agent/snapshot.hpp"
#include "agent/tracker.hpp"

namespace portlens {

// The failed call an event describes, or nullopt when the event is not a failure portlens
// explains (a success, EINPROGRESS, ECONNREFUSED, ...).
std::optional<Call> call_from_event(const Event& event);

// Finds a file that refers to the network namespace with this inode: the caller's own,
// /run/netns/*, or some process's /proc/PID/ns/net. nullopt when no process is left in it.
std::optional<NetnsRef> find_netns_by_inode(std::uint32_t inode);

// Every network namespace this process can reach: its own, /run/netns/*, and each distinct one
// in /proc/*/ns/net (containers), one path per inode. At most max_namespaces.
std::vector<NetnsRef> discover_netns(std::size_t max_namespaces = 4096);

// The table a traced failure is judged against: the tracker's view as of the failing call
// (SocketTracker::table_at: a blocker closed right after the failure is still there), plus the
// snapshot's sockets the events never showed (those older than the trace). Left out: snapshot
// sockets the tracker first saw after the call (born_after), snapshot TIME_WAITs whose 4-tuple
// was still a live connection then, and UDP sockets only the tracker knows (UDP has no
// tracepoint for its close, so they may be long gone). Sockets in both take the tracker's state
// and the snapshot's other fields.
SocketTable merge_for_event(const SocketTable& snapshot, const SocketTable& tracked,
                            const std::function<bool(const SocketEntry&)>& born_after);

// The table a failed call made at at_ns is judged against: merge_for_event() of the snapshot and
// the tracker's view at that moment (tracker may be null: the snapshot alone). A bind() or
// listen() with a port can only conflict with sockets on that port, so only those are copied;
// a TCP connect() EADDRNOTAVAIL only with sockets toward its destination and explicit port
// owners (ConnectScope); autobind needs the whole namespace (the ephemeral range).
SocketTable table_for_call(const Call& call, std::uint64_t at_ns, std::uint64_t now_ns,
                           const SocketTable& snapshot, const SocketTracker* tracker);

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

// CLOCK_MONOTONIC now, in the unit of event timestamps.
std::uint64_t monotonic_ns();

}  // namespace portlens
