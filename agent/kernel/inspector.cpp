#include "agent/kernel/inspector.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"

namespace portlens {
namespace {

constexpr std::uint64_t kMsNs = 1'000'000;
// A /proc scan costs about a microsecond per open file: redo it at most this often, unless a
// blocker's owner is missing and the scan is older than kOwnerMissRescanNs.
constexpr std::uint64_t kOwnerRescanNs = 1000 * kMsNs;
constexpr std::uint64_t kOwnerMissRescanNs = 200 * kMsNs;
constexpr std::size_t kMaxCachedNamespaces = 64;

}  // namespace

LiveInspector::LiveInspector(SnapshotOptions options)
    : snapshotter_(std::make_unique<SocketSnapshotter>(options)) {}

void LiveInspector::refresh_owners_if_stale() {
  const std::uint64_t now = monotonic_ns();
  if (owners_scanned_ns_ == 0 || now - owners_scanned_ns_ >= kOwnerRescanNs) {
    owners_.scan();
    owners_scanned_ns_ = monotonic_ns();
  }
}

LiveTable LiveInspector::inspect(const NetnsRef& ns, const SocketTracker* tracker) {
  LiveTable live{snapshotter_->take(ns), ns};
  if (tracker != nullptr) {
    tracker->attribute(live.snapshot.table);
  }
  owners_.scan();  // a command's one look: always fresh
  owners_scanned_ns_ = monotonic_ns();
  owners_.attribute(live.snapshot.table);
  return live;
}

Diagnosis LiveInspector::diagnose(const Event& event, const Call& call,
                                  const SocketTracker* tracker) {
  auto path = netns_paths_.find(event.netns);
  if (path == netns_paths_.end()) {
    const auto found = find_netns_by_inode(event.netns);
    if (!found) {
      Diagnosis d;
      d.hint = "cannot inspect network namespace " + std::to_string(event.netns) +
               ": no process is left in it and it is not under /run/netns";
      return d;
    }
    path = netns_paths_.emplace(event.netns, *found).first;
  }

  auto cached = snapshots_.find(event.netns);
  if (cached == snapshots_.end() || cached->second.taken_ns < event.ts_ns) {
    if (cached == snapshots_.end() && snapshots_.size() >= kMaxCachedNamespaces) {
      snapshots_.erase(snapshots_.begin());
    }
    CachedSnapshot fresh;
    fresh.taken_ns = monotonic_ns();  // before the walk: it sees at least this moment's sockets
    try {
      fresh.snapshot = snapshotter_->take(path->second);
    } catch (const Error& e) {
      netns_paths_.erase(path);  // the namespace may be gone; look it up again next time
      Diagnosis d;
      d.hint = std::string("cannot inspect the namespace: ") + e.what();
      return d;
    }
    refresh_owners_if_stale();
    if (tracker != nullptr) {
      tracker->attribute(fresh.snapshot.table);
    }
    owners_.attribute(fresh.snapshot.table);
    cached = snapshots_.insert_or_assign(event.netns, std::move(fresh)).first;
  }

  SocketTable table =
      table_for_call(call, event.ts_ns, monotonic_ns(), cached->second.snapshot.table, tracker);
  owners_.attribute(table);
  Diagnosis d = portlens::diagnose(call, table);
  // A blocker created after the last /proc scan has no owner yet: look once more.
  bool missing = false;
  for (const auto& b : d.blockers) {
    missing = missing || (!b.socket.owner && b.socket.inode != 0);
  }
  if (missing && monotonic_ns() - owners_scanned_ns_ >= kOwnerMissRescanNs) {
    owners_.scan();
    owners_scanned_ns_ = monotonic_ns();
    owners_.attribute(table);
    d = portlens::diagnose(call, table);
  }
  return d;
}

}  // namespace portlens
