#include "agent/live/judge.hpp"

#include <cerrno>
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

bool explained_errno(const Event& e) {
  const int err = -e.result;
  switch (e.type) {
    case EventType::kBind:
      return err == EADDRINUSE || err == EADDRNOTAVAIL || err == EACCES;
    case EventType::kListen:
      return err == EADDRINUSE;
    case EventType::kConnect:
      return err == EADDRNOTAVAIL || err == EAGAIN;
    default:
      return false;
  }
}

}  // namespace

std::optional<Call> call_from_event(const Event& e) {
  if (!e.failed() || !explained_errno(e)) {
    return std::nullopt;
  }
  Call c;
  c.proto = e.proto;
  c.family = e.family;
  c.netns = e.netns;
  c.result = e.result;
  c.options = e.opts.value_or(SocketOptions{});
  c.uid = e.sock_uid.value_or(e.uid);
  c.sock_id = e.sock_id;
  const Endpoint any{e.family == Family::kIpv4 ? IpAddress::any_v4() : IpAddress::any_v6(), 0};
  switch (e.type) {
    case EventType::kBind:
      if (!e.requested) {
        return std::nullopt;  // the sockaddr was unreadable: nothing to reason about
      }
      c.syscall = Syscall::kBind;
      c.local = *e.requested;
      break;
    case EventType::kListen:
      c.syscall = Syscall::kListen;
      c.local = e.local.value_or(any);  // a failed listen() keeps its bound address
      break;
    case EventType::kConnect:
      if (!e.requested) {
        return std::nullopt;
      }
      c.syscall = Syscall::kConnect;
      c.remote = e.requested;
      // The address bind() fixed survives the failure; the port is the one held at entry.
      c.local = e.local.value_or(any);
      c.local.port = e.enter_port;
      break;
    default:
      return std::nullopt;
  }
  return c;
}

SocketTable merge_for_event(const SocketTable& snapshot, const SocketTable& tracked,
                            const std::function<bool(const SocketEntry&)>& born_after) {
  SocketTable out = tracked;
  out.netns_config = snapshot.netns_config;
  out.default_config = snapshot.default_config;
  std::unordered_map<std::uint64_t, std::size_t> by_id;
  std::map<std::tuple<std::uint64_t, Endpoint, Endpoint>, std::size_t> time_wait;
  const auto tw_key = [](const SocketEntry& s) {
    return std::tuple{s.netns, Endpoint{s.local.addr.unmapped(), s.local.port},
                      s.remote ? Endpoint{s.remote->addr.unmapped(), s.remote->port} : Endpoint{}};
  };
  std::set<std::tuple<std::uint64_t, Endpoint, Endpoint>> live_connections;
  for (std::size_t i = 0; i < out.sockets.size(); ++i) {
    const SocketEntry& s = out.sockets[i];
    if (s.state == TcpState::kTimeWait) {
      time_wait.emplace(tw_key(s), i);
    } else {
      if (s.sock_id != 0) {
        by_id.emplace(s.sock_id, i);
      }
      if (s.remote) {
        live_connections.insert(tw_key(s));
      }
    }
  }
  std::vector<bool> in_snapshot(out.sockets.size(), false);
  for (const SocketEntry& s : snapshot.sockets) {
    if (born_after && born_after(s)) {
      continue;  // it did not exist yet when the call failed
    }
    if (s.state == TcpState::kTimeWait) {
      if (live_connections.contains(tw_key(s))) {
        continue;  // at the time of the call this 4-tuple was still the live connection
      }
      const auto it = time_wait.find(tw_key(s));
      if (it == time_wait.end()) {
        out.sockets.push_back(s);
        continue;
      }
      SocketEntry& t = out.sockets[it->second];
      in_snapshot[it->second] = true;
      t.time_wait_substate = s.time_wait_substate;
      t.time_wait_remaining = s.time_wait_remaining;
      if (s.timestamps) {
        t.timestamps = s.timestamps;
      }
      continue;
    }
    const auto it = s.sock_id != 0 ? by_id.find(s.sock_id) : by_id.end();
    if (it == by_id.end()) {
      out.sockets.push_back(s);
      continue;
    }
    SocketEntry merged = s;
    const SocketEntry& t = out.sockets[it->second];
    merged.state = t.state;  // as of the failing event
    merged.local = t.local.port != 0 ? t.local : s.local;
    merged.remote = t.remote;
    if (t.owner) {
      merged.owner = t.owner;
    }
    out.sockets[it->second] = std::move(merged);
    in_snapshot[it->second] = true;
  }
  std::vector<SocketEntry> kept;
  kept.reserve(out.sockets.size());
  for (std::size_t i = 0; i < out.sockets.size(); ++i) {
    const SocketEntry& s = out.sockets[i];
    const bool udp = s.proto == Proto::kUdp || s.proto == Proto::kUdpLite;
    if (i < in_snapshot.size() && !in_snapshot[i] && udp) {
      continue;
    }
    kept.push_back(s);
  }
  out.sockets = std::move(kept);
  return out;
}

namespace {

bool toward(const SocketEntry& s, const Endpoint& destination) {
  return s.remote && s.remote->port == destination.port &&
         s.remote->addr.unmapped() == destination.addr;
}

std::pair<Endpoint, Endpoint> unmapped_tuple(const SocketEntry& s) {
  return {Endpoint{s.local.addr.unmapped(), s.local.port},
          Endpoint{s.remote->addr.unmapped(), s.remote->port}};
}

// A connect() EADDRNOTAVAIL toward call.remote: diagnose_connect() reads the sockets toward the
// destination and the explicit port owners only (four_tuple_diagnosis, and
// connect_exhaustion_diagnosis with account_destination and explicit_owner_blockers). The table
// keeps those, in the order the whole merge would give them, and whatever merges with them: a
// snapshot row and a tracked socket are kept together, by sock_id or by 4-tuple, so that
// merge_for_event() pairs them as it would with every row present.
SocketTable connect_table(const Call& call, std::uint64_t at_ns, std::uint64_t now_ns,
                          const SocketTable& snapshot, const SocketTracker& tracker) {
  ConnectScope scope;
  scope.remote = Endpoint{call.remote->addr.unmapped(), call.remote->port};
  std::vector<bool> kept(snapshot.sockets.size());
  for (std::size_t i = 0; i < snapshot.sockets.size(); ++i) {
    const SocketEntry& s = snapshot.sockets[i];
    if (!scope.wants(s, s.state)) {
      continue;
    }
    kept[i] = true;
    if (s.state == TcpState::kTimeWait) {
      // One toward the destination meets its tracked twin anyway; an explicit one may not.
      if (s.remote && !toward(s, scope.remote)) {
        scope.four_tuples.insert(unmapped_tuple(s));
      }
    } else if (s.sock_id != 0) {
      scope.sock_ids.insert(s.sock_id);
    }
  }
  SocketTable tracked = tracker.table_at(call.netns, at_ns, now_ns, scope);
  // The other way round: snapshot rows that merge with a tracked socket kept.
  std::unordered_set<std::uint64_t> tracked_ids;
  std::set<std::pair<Endpoint, Endpoint>> tracked_time_waits;
  for (const SocketEntry& t : tracked.sockets) {
    if (t.state == TcpState::kTimeWait) {
      if (t.remote) {
        tracked_time_waits.insert(unmapped_tuple(t));
      }
    } else if (t.sock_id != 0) {
      tracked_ids.insert(t.sock_id);
    }
  }
  SocketTable table;
  table.netns_config = snapshot.netns_config;
  table.default_config = snapshot.default_config;
  for (std::size_t i = 0; i < snapshot.sockets.size(); ++i) {
    const SocketEntry& s = snapshot.sockets[i];
    const bool partner = s.state == TcpState::kTimeWait
                             ? s.remote && tracked_time_waits.contains(unmapped_tuple(s))
                             : s.sock_id != 0 && tracked_ids.contains(s.sock_id);
    if (kept[i] || partner) {
      table.sockets.push_back(s);
    }
  }
  return merge_for_event(table, tracked, [&tracker, at_ns](const SocketEntry& s) {
    const auto seen = tracker.first_seen(s);
    return seen && *seen > at_ns;
  });
}

}  // namespace

SocketTable table_for_call(const Call& call, std::uint64_t at_ns, std::uint64_t now_ns,
                           const SocketTable& snapshot, const SocketTracker* tracker) {
  const bool tcp_table = call.proto == Proto::kTcp || call.proto == Proto::kMptcp;
  if (tracker != nullptr && call.syscall == Syscall::kConnect && tcp_table &&
      call.result == -EADDRNOTAVAIL && call.remote) {
    return connect_table(call, at_ns, now_ns, snapshot, *tracker);
  }
  const std::optional<std::uint16_t> port =
      call.syscall != Syscall::kConnect && call.local.port != 0
          ? std::optional<std::uint16_t>(call.local.port)
          : std::nullopt;
  SocketTable table;
  table.netns_config = snapshot.netns_config;
  table.default_config = snapshot.default_config;
  for (const SocketEntry& s : snapshot.sockets) {
    if (!port || s.local.port == *port) {
      table.sockets.push_back(s);
    }
  }
  if (tracker == nullptr) {
    return table;
  }
  return merge_for_event(table, tracker->table_at(call.netns, at_ns, now_ns, port),
                         [tracker, at_ns](const SocketEntry& s) {
                           const auto seen = tracker->first_seen(s);
                           return seen && *seen > at_ns;
                         });
}

FailureJudge::FailureJudge(NamespaceSource& namespaces, OwnerSource& owners)
    : namespaces_(namespaces), owners_(owners) {}

void FailureJudge::refresh_owners_if_stale() {
  const std::uint64_t now = monotonic_ns();
  if (owners_scanned_ns_ == 0 || now - owners_scanned_ns_ >= kOwnerRescanNs) {
    owners_.scan();
    owners_scanned_ns_ = monotonic_ns();
  }
}

bool FailureJudge::ready_for(const Event& event) const {
  const auto it = snapshots_.find(event.netns);
  if (it == snapshots_.end() || it->second.taken_ns >= event.ts_ns) {
    return true;
  }
  const auto interval =
      static_cast<std::uint64_t>(std::chrono::nanoseconds(snapshot_interval_).count());
  return monotonic_ns() >= it->second.taken_ns + interval;
}

std::optional<FailureJudge::CachedSnapshot> FailureJudge::take_snapshot(const Event& event,
                                                                        std::string& problem) {
  // Twice at most: a path found through the failing process (/proc/PID/ns/net) is gone as soon
  // as that process exits, possibly between the lookup and the walk; the second lookup goes by
  // the namespace's inode alone (/run/netns, or any process still in it).
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto path = netns_paths_.find(event.netns);
    // A cached path is checked before use: after `ip netns del a; ip netns add b` the inode may
    // be b's while /run/netns/a is gone, and a stale path names a namespace that is not there.
    if (path != netns_paths_.end() && !namespaces_.refers_to(path->second)) {
      netns_paths_.erase(path);
      snapshots_.erase(event.netns);
      path = netns_paths_.end();
    }
    if (path == netns_paths_.end()) {
      const auto found = namespaces_.locate(event.netns, attempt == 0 ? event.pid : 0);
      if (!found) {
        problem = "cannot inspect network namespace " + std::to_string(event.netns) +
                  ": no process is left in it and it is not under /run/netns";
        return std::nullopt;
      }
      path = netns_paths_.insert_or_assign(event.netns, *found).first;
    }
    CachedSnapshot fresh;
    fresh.taken_ns = monotonic_ns();  // before the walk: it sees at least this moment's sockets
    try {
      fresh.snapshot = namespaces_.take(path->second);
      return fresh;
    } catch (const Error& e) {
      netns_paths_.erase(path);  // the namespace may be gone; look it up again
      problem = std::string("cannot inspect the namespace: ") + e.what();
    }
  }
  return std::nullopt;
}

Diagnosis FailureJudge::diagnose(const Event& event, const Call& call, const SocketTracker* tracker,
                                 std::mutex* mu) {
  auto cached = snapshots_.find(event.netns);
  if (cached == snapshots_.end() || cached->second.taken_ns < event.ts_ns) {
    std::string problem;
    std::optional<CachedSnapshot> fresh = take_snapshot(event, problem);
    if (!fresh) {
      Diagnosis d;
      d.inspected = false;
      d.hint = problem;
      return d;
    }
    // take_snapshot() may have dropped this namespace's entry (a stale path): look again.
    if (!snapshots_.contains(event.netns) && snapshots_.size() >= kMaxCachedNamespaces) {
      snapshots_.erase(snapshots_.begin());
    }
    refresh_owners_if_stale();
    cached = snapshots_.insert_or_assign(event.netns, std::move(*fresh)).first;
  }

  SocketTable table;
  if (tracker != nullptr) {
    // Only the copy of what the call can involve is made under the lock.
    const std::unique_lock lock =
        mu != nullptr ? std::unique_lock(*mu) : std::unique_lock<std::mutex>();
    table =
        table_for_call(call, event.ts_ns, monotonic_ns(), cached->second.snapshot.table, tracker);
    tracker->attribute(table);  // owners the events named, TIME_WAITs' included
  } else {
    table =
        table_for_call(call, event.ts_ns, monotonic_ns(), cached->second.snapshot.table, nullptr);
  }
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
