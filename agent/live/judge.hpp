// How a traced failure is judged: the call it describes, and the table of sockets it is judged
// against (the tracker's view as of the call, merged with a snapshot taken after it). Pure.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>

#include "agent/diagnose/diagnoser.hpp"
#include "agent/live/sources.hpp"
#include "agent/model/call.hpp"
#include "agent/model/event.hpp"
#include "agent/model/socket_table.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens {

// The failed call an event describes, or nullopt when the event is not a failure portlens
// explains (a success, EINPROGRESS, ECONNREFUSED, ...).
std::optional<Call> call_from_event(const Event& event);

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

// Judges traced failures against the live kernel, through the sources: a snapshot of the
// failure's namespace taken after the call (reused for later failures of the same namespace: it
// holds every blocker that still exists), merged with the tracker's view as of the call, with the
// owners /proc shows. The tracker is read only under its mutex, and only to copy the sockets the
// call can involve: the snapshot walk and the diagnosis itself run without it, so a scrape or a
// local API call never waits behind them.
class FailureJudge {
 public:
  FailureJudge(NamespaceSource& namespaces, OwnerSource& owners);

  // tracker may be null (the snapshot alone); when it is not, mu guards it.
  Diagnosis diagnose(const Event& event, const Call& call, const SocketTracker* tracker,
                     std::mutex* mu);

  // Whether event can be judged now: its namespace's cached snapshot was taken after it, or
  // the last walk of that namespace is at least snapshot_interval old. A flood of failures in
  // one namespace walks it at most once per interval; a failure waits at most that long.
  [[nodiscard]] bool ready_for(const Event& event) const;
  void set_snapshot_interval(std::chrono::milliseconds interval) { snapshot_interval_ = interval; }

  [[nodiscard]] OwnerSource& owners() { return owners_; }

 private:
  struct CachedSnapshot {
    std::uint64_t taken_ns = 0;  // CLOCK_MONOTONIC, comparable with event timestamps
    Snapshot snapshot;
  };
  void refresh_owners_if_stale();
  // The namespace's sockets now, or nullopt with what went wrong in problem.
  std::optional<CachedSnapshot> take_snapshot(const Event& event, std::string& problem);

  NamespaceSource& namespaces_;
  OwnerSource& owners_;
  std::uint64_t owners_scanned_ns_ = 0;
  std::chrono::milliseconds snapshot_interval_{100};
  std::map<std::uint32_t, NetnsRef> netns_paths_;
  std::map<std::uint32_t, CachedSnapshot> snapshots_;
};

}  // namespace portlens
