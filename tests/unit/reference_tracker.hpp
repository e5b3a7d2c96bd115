// The SocketTracker as it was before its compact TIME_WAIT table and folded socket records (the
// commit before them, verbatim but for the name): the reference the new tracker is compared
// with, event stream by event stream. Test code only.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "agent/model/event.hpp"
#include "agent/model/socket_table.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens::reference {

class ReferenceTracker {
 public:
  explicit ReferenceTracker(TrackerLimits limits = {}) : limits_(limits) {}

  // Applies one event; its timestamp is the tracker's notion of now for what it creates.
  void apply(const Event& event);
  // Forgets TIME_WAIT sockets whose lifetime ended before now_ns (CLOCK_MONOTONIC).
  void expire(std::uint64_t now_ns);
  // Makes what is known of netns match a snapshot taken at snapshot_ns, counting differences.
  // Owners the tracker learned from events are kept: the snapshot cannot know TIME_WAIT owners.
  void reconcile(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns);
  // A namespace that no longer exists: its sockets went with it. Not a correction.
  void forget_namespace(std::uint64_t netns, std::uint64_t now_ns);
  // The first look at a namespace: the same merge, but nothing it adds is a correction.
  void bootstrap(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns);

  // The table the diagnoser reads: every tracked socket of netns (all when nullopt), with
  // TIME_WAIT time left computed at now_ns. Carries no sysctl configuration.
  [[nodiscard]] SocketTable table(std::optional<std::uint64_t> netns, std::uint64_t now_ns) const;
  // The sockets of netns as they were at at_ns: those first seen by then, including ones
  // removed since (kept for kTombstoneTtlNs). TIME_WAIT time left is computed at now_ns.
  // With port, only the sockets on that local port: all a bind()/listen() conflict can involve.
  [[nodiscard]] SocketTable table_at(std::uint64_t netns, std::uint64_t at_ns, std::uint64_t now_ns,
                                     std::optional<std::uint16_t> port = std::nullopt) const;
  // When the tracker first saw this socket (full: by identity; TIME_WAIT: by 4-tuple), if it
  // did. A snapshot socket first seen after a failure did not exist when the call failed.
  [[nodiscard]] std::optional<std::uint64_t> first_seen(const SocketEntry& entry) const;

  // The owner remembered for a socket, full or TIME_WAIT, when the events named one.
  [[nodiscard]] std::optional<SocketOwner> owner_of(const SocketEntry& entry) const;
  // Fills missing owners in a table (e.g. a fresh snapshot) from the tracker's memory.
  void attribute(SocketTable& table) const;

  [[nodiscard]] std::size_t socket_count() const { return sockets_.size(); }
  [[nodiscard]] std::size_t time_wait_count() const { return time_wait_.size(); }
  [[nodiscard]] const TrackerCounters& counters() const { return counters_; }

 private:
  struct FourTuple {
    std::uint64_t netns = 0;
    Endpoint local;
    Endpoint remote;
    bool operator==(const FourTuple&) const = default;
  };
  struct FourTupleHash {
    std::size_t operator()(const FourTuple& t) const;
  };
  struct TimeWait {
    SocketEntry entry;
    std::uint64_t expires_ns = 0;
    std::uint64_t created_ns = 0;  // when the tracker learned of it (event or snapshot time)
  };
  using ExpiryItem = std::pair<std::uint64_t, FourTuple>;  // (expires_ns, key)
  struct ExpiryOrder {
    bool operator()(const ExpiryItem& a, const ExpiryItem& b) const { return a.first > b.first; }
  };
  using ExpiryQueue = std::priority_queue<ExpiryItem, std::vector<ExpiryItem>, ExpiryOrder>;

  static std::optional<FourTuple> tuple_of(const SocketEntry& entry);
  static std::uint64_t listener_key(std::uint64_t netns, std::uint16_t port);
  SocketEntry* upsert(const Event& event);
  void on_state(const Event& event);
  void on_close(const Event& event);
  void erase_socket(std::uint64_t sock_id, std::uint64_t erased_ns);
  void bury_time_wait(const FourTuple& key, const TimeWait& tw, std::uint64_t erased_ns);
  void prune_tombstones(std::uint64_t now_ns);
  void forget_listener(const SocketEntry& entry);
  void add_time_wait(const SocketEntry& from, std::uint64_t expires_ns, std::uint64_t created_ns);
  void rebuild_expiry_queue();
  void take_over_time_wait(const SocketEntry& entry, std::uint64_t ts_ns);
  std::optional<SocketOwner> owner_of_listener(const SocketEntry& child) const;
  void count_correction(std::string_view kind, std::uint64_t n = 1);
  void merge_snapshot(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns,
                      bool count);

  bool counting_ = true;  // false while bootstrapping
  TrackerLimits limits_;
  std::unordered_map<std::uint64_t, SocketEntry> sockets_;  // by sock_id
  // When each socket was last touched: a snapshot older than that cannot correct it.
  std::unordered_map<std::uint64_t, std::uint64_t> updated_ns_;
  // Listening sockets by (netns, port), to attribute accepted children to their listener.
  std::unordered_multimap<std::uint64_t, std::uint64_t> listeners_;
  std::unordered_map<FourTuple, TimeWait, FourTupleHash> time_wait_;
  ExpiryQueue expiry_queue_;
  std::unordered_set<std::uint64_t> resets_;  // sock_ids that received an RST
  // First sight of each socket, live or tombstoned (by identity, and TIME_WAIT by 4-tuple).
  std::unordered_map<std::uint64_t, std::uint64_t> first_seen_ns_;
  std::unordered_map<FourTuple, std::uint64_t, FourTupleHash> time_wait_first_seen_ns_;
  // The last few state changes of a socket, so that table_at() can tell the state it had at a
  // moment already past: (when it changed, what it was before).
  struct StateHistory {
    static constexpr std::size_t kDepth = 4;
    std::array<std::uint64_t, kDepth> changed_ns{};
    std::array<std::optional<TcpState>, kDepth> before{};
    std::size_t size = 0;
    void record(std::uint64_t ts_ns, std::optional<TcpState> old_state);
    [[nodiscard]] std::optional<TcpState> state_at(std::uint64_t at_ns,
                                                   std::optional<TcpState> now) const;
  };
  void record_transition(const SocketEntry& entry, std::uint64_t ts_ns);
  struct Tombstone {
    StateHistory history;
    SocketEntry entry;
    std::uint64_t first_seen_ns = 0;
    std::uint64_t erased_ns = 0;
    std::uint64_t expires_ns = 0;  // TIME_WAIT only
  };
  std::deque<Tombstone> tombstones_;
  std::unordered_map<std::uint64_t, StateHistory> history_;  // by sock_id
  TrackerCounters counters_;
};

inline bool is_state(const Event& e, TcpState s) { return e.old_state == static_cast<int>(s); }

inline std::size_t hash_endpoint(const Endpoint& ep) {
  std::size_t h = std::hash<std::uint16_t>{}(ep.port);
  for (const auto b : ep.addr.bytes()) {
    h = h * 131 + b;
  }
  return h;
}

// Entries from sources without kernel addresses (sock_diag) are identified by inode instead;
// kernel addresses start at 0xffff800000000000, so the tag cannot collide with one.
constexpr std::uint64_t kInodeIdentityTag = 0x7f00'0000'0000'0000ULL;

inline std::uint64_t identity_of(const SocketEntry& s) {
  if (s.sock_id != 0) {
    return s.sock_id;
  }
  return s.inode != 0 ? (kInodeIdentityTag | s.inode) : 0;
}

inline bool is_time_wait(const SocketEntry& s) { return s.state == TcpState::kTimeWait; }

inline std::size_t ReferenceTracker::FourTupleHash::operator()(const FourTuple& t) const {
  return (std::hash<std::uint64_t>{}(t.netns) * 31 + hash_endpoint(t.local)) * 31 +
         hash_endpoint(t.remote);
}

inline std::optional<ReferenceTracker::FourTuple> ReferenceTracker::tuple_of(
    const SocketEntry& entry) {
  if (!entry.remote || entry.local.port == 0 || entry.remote->port == 0) {
    return std::nullopt;
  }
  // ::ffff:X and X are one address to the kernel's hash tables.
  return FourTuple{entry.netns, Endpoint{entry.local.addr.unmapped(), entry.local.port},
                   Endpoint{entry.remote->addr.unmapped(), entry.remote->port}};
}

inline void ReferenceTracker::count_correction(std::string_view kind, std::uint64_t n) {
  if (n == 0 || !counting_) {
    return;
  }
  const auto it = counters_.corrections.find(kind);
  if (it == counters_.corrections.end()) {
    counters_.corrections.emplace(std::string(kind), n);
  } else {
    it->second += n;
  }
}

inline SocketEntry* ReferenceTracker::upsert(const Event& event) {
  auto it = sockets_.find(event.sock_id);
  if (it == sockets_.end()) {
    if (sockets_.size() >= limits_.max_sockets) {
      ++counters_.sockets_dropped;
      return nullptr;
    }
    SocketEntry fresh;
    fresh.proto = event.proto;
    fresh.netns = event.netns;
    fresh.sock_id = event.sock_id;
    fresh.local =
        Endpoint{event.family == Family::kIpv4 ? IpAddress::any_v4() : IpAddress::any_v6(), 0};
    it = sockets_.emplace(event.sock_id, std::move(fresh)).first;
    first_seen_ns_[event.sock_id] = event.ts_ns;
  }
  SocketEntry& e = it->second;
  updated_ns_[event.sock_id] = event.ts_ns;
  if (event.opts) {
    e.reuseaddr = event.opts->reuseaddr;
    e.reuseport = event.opts->reuseport;
    e.v6only = event.opts->v6only;
    e.bound_dev_if = event.opts->bound_dev_if;
  }
  if (event.sock_uid) {
    e.uid = event.sock_uid;
  }
  // Only a system call runs in the owner's context; state changes often run in softirq.
  if (event.is_call()) {
    e.owner = SocketOwner{event.pid, event.comm};
  }
  return &e;
}

inline void ReferenceTracker::apply(const Event& event) {
  switch (event.type) {
    case EventType::kBind: {
      if (event.result != 0 || !event.local) {
        return;
      }
      SocketEntry* e = upsert(event);
      if (e == nullptr) {
        return;
      }
      e->local = *event.local;
      e->explicit_port = true;  // inet_csk_get_port(): the port now belongs to this socket
      if (e->proto != Proto::kUdp && e->proto != Proto::kUdpLite && !e->state) {
        e->state = TcpState::kClose;
      }
      return;
    }
    case EventType::kListen: {
      if (event.result != 0) {
        return;
      }
      SocketEntry* e = upsert(event);
      if (e == nullptr) {
        return;
      }
      if (event.local) {
        e->local = *event.local;  // listen() on an unbound socket picks the port itself
      }
      e->state = TcpState::kListen;
      e->explicit_port = true;
      return;
    }
    case EventType::kConnect: {
      if (event.result != 0 && event.result != -EINPROGRESS) {
        return;
      }
      SocketEntry* e = upsert(event);
      if (e == nullptr) {
        return;
      }
      if (event.local && event.local->port != 0) {
        e->local = *event.local;
      }
      e->remote = event.requested;  // AF_UNSPEC (disconnect) leaves none
      if (event.enter_port != 0) {
        e->explicit_port = true;
      }
      if (e->proto != Proto::kUdp && e->proto != Proto::kUdpLite) {
        // State events usually arrived first; without them, infer from the result.
        if (!e->state || *e->state == TcpState::kClose) {
          e->state = event.result == 0 ? TcpState::kEstablished : TcpState::kSynSent;
        }
        take_over_time_wait(*e, event.ts_ns);
      }
      return;
    }
    case EventType::kState:
      on_state(event);
      return;
    case EventType::kReset:
      ++counters_.resets_seen;
      if (resets_.size() < limits_.max_resets) {
        resets_.insert(event.sock_id);
      }
      return;
    case EventType::kDestroy:
      erase_socket(event.sock_id, event.ts_ns);
      resets_.erase(event.sock_id);
      return;
  }
}

inline void ReferenceTracker::StateHistory::record(std::uint64_t ts_ns,
                                                   std::optional<TcpState> old_state) {
  if (size == kDepth) {  // keep the newest: older changes matter for older moments only
    std::move(changed_ns.begin() + 1, changed_ns.end(), changed_ns.begin());
    std::move(before.begin() + 1, before.end(), before.begin());
    --size;
  }
  changed_ns[size] = ts_ns;
  before[size] = old_state;
  ++size;
}

inline std::optional<TcpState> ReferenceTracker::StateHistory::state_at(
    std::uint64_t at_ns, std::optional<TcpState> now) const {
  for (std::size_t i = 0; i < size; ++i) {
    if (changed_ns[i] > at_ns) {
      return before[i];  // the first change after that moment tells what it was then
    }
  }
  return now;
}

inline void ReferenceTracker::record_transition(const SocketEntry& entry, std::uint64_t ts_ns) {
  history_[entry.sock_id].record(ts_ns, entry.state);
}

inline void ReferenceTracker::on_state(const Event& event) {
  if (event.new_state == static_cast<int>(TcpState::kClose)) {
    on_close(event);
    return;
  }
  const auto new_state = tcp_state_from_int(event.new_state);
  if (!new_state) {
    return;
  }
  const bool is_new = !sockets_.contains(event.sock_id);
  SocketEntry* e = upsert(event);
  if (e == nullptr) {
    return;
  }
  const bool was_listening = e->state == TcpState::kListen;
  if (!is_new) {
    record_transition(*e, event.ts_ns);
  }
  e->state = *new_state;
  if (event.local && event.local->port != 0) {
    e->local = *event.local;
  }
  if (*new_state == TcpState::kListen) {
    e->remote.reset();
    e->explicit_port = true;
    listeners_.emplace(listener_key(e->netns, e->local.port), e->sock_id);
    return;
  }
  if (was_listening) {
    forget_listener(*e);
  }
  if (event.remote && event.remote->port != 0) {
    e->remote = *event.remote;
  }
  // inet_csk_clone_lock(): a child of a listener shows LISTEN->SYN_RECV on its own address.
  // It shares the listener's port and, until accept(), its owner.
  if (is_new && is_state(event, TcpState::kListen)) {
    e->explicit_port = false;
    if (!e->owner) {
      e->owner = owner_of_listener(*e);
    }
  }
  // A new connection on a TIME_WAIT's 4-tuple replaced it (tcp_twsk_unique(), or a SYN that
  // tcp_timewait_state_process() accepted on the passive side).
  if (*new_state == TcpState::kEstablished || *new_state == TcpState::kSynRecv) {
    take_over_time_wait(*e, event.ts_ns);
  }
}

inline void ReferenceTracker::on_close(const Event& event) {
  const bool reset = resets_.erase(event.sock_id) > 0;
  const auto it = sockets_.find(event.sock_id);
  // docs/kernel-rules.md section 5: tcp_time_wait() then tcp_done() shows FIN_WAIT2->CLOSE or
  // CLOSING->CLOSE; an RST received first means no TIME_WAIT was made.
  if ((is_state(event, TcpState::kFinWait2) || is_state(event, TcpState::kClosing)) && !reset &&
      event.local && event.remote) {
    SocketEntry tw = it != sockets_.end() ? it->second : SocketEntry{};
    tw.proto = event.proto;
    tw.netns = event.netns;
    tw.local = *event.local;
    tw.remote = event.remote;
    tw.state = TcpState::kTimeWait;
    tw.time_wait_substate = TcpState::kTimeWait;
    tw.timestamps = event.timestamps;
    tw.inode = 0;
    tw.sock_id = 0;  // the minisocket is a different object
    if (event.opts) {
      tw.reuseaddr = event.opts->reuseaddr;
      tw.reuseport = event.opts->reuseport;
      tw.v6only = event.opts->v6only;
      tw.bound_dev_if = event.opts->bound_dev_if;
    }
    tw.uid.reset();  // timewait sockets keep no uid (R2 ignores it for them)
    add_time_wait(tw, event.ts_ns + kTimeWaitLenNs, event.ts_ns);
    ++counters_.time_wait_inferred;
  }
  if (it == sockets_.end()) {
    return;
  }
  // tcp_set_state(TCP_CLOSE) releases the port unless bind() locked it (SOCK_BINDPORT_LOCK);
  // a socket holding a locked port stays an owner until it is destroyed.
  record_transition(it->second, event.ts_ns);
  if (it->second.explicit_port) {
    if (it->second.state == TcpState::kListen) {
      forget_listener(it->second);
    }
    it->second.state = TcpState::kClose;
    it->second.remote.reset();
    updated_ns_[event.sock_id] = event.ts_ns;
    return;
  }
  erase_socket(event.sock_id, event.ts_ns);
}

inline void ReferenceTracker::erase_socket(std::uint64_t sock_id, std::uint64_t erased_ns) {
  const auto it = sockets_.find(sock_id);
  if (it == sockets_.end()) {
    return;
  }
  if (it->second.state == TcpState::kListen) {
    forget_listener(it->second);
  }
  // Kept a while in the state it had until now: a failure diagnosed late still sees it.
  const auto seen = first_seen_ns_.find(sock_id);
  StateHistory history;
  if (const auto h = history_.find(sock_id); h != history_.end()) {
    history = h->second;
    history_.erase(h);
  }
  tombstones_.push_back(Tombstone{history, std::move(it->second),
                                  seen == first_seen_ns_.end() ? 0 : seen->second, erased_ns, 0});
  sockets_.erase(it);
  updated_ns_.erase(sock_id);
  prune_tombstones(erased_ns);
}

inline void ReferenceTracker::bury_time_wait(const FourTuple& key, const TimeWait& tw,
                                             std::uint64_t erased_ns) {
  tombstones_.push_back(Tombstone{{}, tw.entry, tw.created_ns, erased_ns, tw.expires_ns});
  tombstones_.back().entry.netns = key.netns;
  prune_tombstones(erased_ns);
}

inline void ReferenceTracker::prune_tombstones(std::uint64_t now_ns) {
  while (!tombstones_.empty() && (tombstones_.size() > limits_.max_tombstones ||
                                  tombstones_.front().erased_ns + kTombstoneTtlNs < now_ns)) {
    const Tombstone& t = tombstones_.front();
    if (t.entry.state == TcpState::kTimeWait) {
      const auto key = tuple_of(t.entry);
      if (key && !time_wait_.contains(*key)) {
        time_wait_first_seen_ns_.erase(*key);
      }
    } else if (t.entry.sock_id != 0 && !sockets_.contains(t.entry.sock_id)) {
      first_seen_ns_.erase(t.entry.sock_id);
    }
    tombstones_.pop_front();
  }
}

inline std::uint64_t ReferenceTracker::listener_key(std::uint64_t netns, std::uint16_t port) {
  return (netns << 16) | port;
}

inline void ReferenceTracker::forget_listener(const SocketEntry& entry) {
  auto [first, last] = listeners_.equal_range(listener_key(entry.netns, entry.local.port));
  for (auto it = first; it != last; ++it) {
    if (it->second == entry.sock_id) {
      listeners_.erase(it);
      return;
    }
  }
}

inline std::optional<SocketOwner> ReferenceTracker::owner_of_listener(
    const SocketEntry& child) const {
  auto [first, last] = listeners_.equal_range(listener_key(child.netns, child.local.port));
  std::optional<SocketOwner> wildcard;
  for (auto it = first; it != last; ++it) {
    const auto s = sockets_.find(it->second);
    if (s == sockets_.end() || !s->second.owner) {
      continue;
    }
    if (s->second.local.addr.unmapped() == child.local.addr.unmapped()) {
      return s->second.owner;  // the listener on the exact address wins the lookup
    }
    if (s->second.local.addr.is_any()) {
      wildcard = s->second.owner;
    }
  }
  return wildcard;
}

inline void ReferenceTracker::add_time_wait(const SocketEntry& from, std::uint64_t expires_ns,
                                            std::uint64_t created_ns) {
  const auto key = tuple_of(from);
  if (!key) {
    return;
  }
  auto it = time_wait_.find(*key);
  if (it == time_wait_.end()) {
    if (time_wait_.size() >= limits_.max_time_wait) {
      ++counters_.time_wait_dropped;
      return;
    }
    it = time_wait_.emplace(*key, TimeWait{}).first;
  }
  it->second.entry = from;
  it->second.expires_ns = expires_ns;
  it->second.created_ns = created_ns;
  time_wait_first_seen_ns_.try_emplace(*key, created_ns);
  expiry_queue_.emplace(expires_ns, *key);
  // Entries re-armed by reconcile leave stale queue items; keep the queue proportional.
  if (expiry_queue_.size() > 2 * time_wait_.size() + 1024) {
    rebuild_expiry_queue();
  }
}

inline void ReferenceTracker::rebuild_expiry_queue() {
  std::vector<std::pair<std::uint64_t, FourTuple>> items;
  items.reserve(time_wait_.size());
  for (const auto& [key, tw] : time_wait_) {
    items.emplace_back(tw.expires_ns, key);
  }
  expiry_queue_ = ExpiryQueue(ExpiryOrder{}, std::move(items));
}

inline void ReferenceTracker::take_over_time_wait(const SocketEntry& entry, std::uint64_t ts_ns) {
  const auto key = tuple_of(entry);
  if (!key) {
    return;
  }
  const auto it = time_wait_.find(*key);
  if (it != time_wait_.end()) {
    bury_time_wait(*key, it->second, ts_ns);
    time_wait_.erase(it);
    ++counters_.time_wait_reused;
  }
}

inline void ReferenceTracker::expire(std::uint64_t now_ns) {
  while (!expiry_queue_.empty() && expiry_queue_.top().first <= now_ns) {
    const auto [expires, key] = expiry_queue_.top();
    expiry_queue_.pop();
    const auto it = time_wait_.find(key);
    // Skip queue items left behind by a re-armed or removed TIME_WAIT.
    if (it != time_wait_.end() && it->second.expires_ns == expires) {
      bury_time_wait(key, it->second, now_ns);
      time_wait_.erase(it);
      ++counters_.time_wait_expired;
    }
  }
}

inline void ReferenceTracker::reconcile(std::uint64_t netns, const SocketTable& snapshot,
                                        std::uint64_t snapshot_ns) {
  merge_snapshot(netns, snapshot, snapshot_ns, true);
}

inline void ReferenceTracker::forget_namespace(std::uint64_t netns, std::uint64_t now_ns) {
  merge_snapshot(netns, SocketTable{}, now_ns, false);
}

inline void ReferenceTracker::bootstrap(std::uint64_t netns, const SocketTable& snapshot,
                                        std::uint64_t snapshot_ns) {
  merge_snapshot(netns, snapshot, snapshot_ns, false);
}

inline void ReferenceTracker::merge_snapshot(std::uint64_t netns, const SocketTable& snapshot,
                                             std::uint64_t snapshot_ns, bool count) {
  counting_ = count;
  std::unordered_set<std::uint64_t> seen;
  std::unordered_set<FourTuple, FourTupleHash> seen_tw;
  for (const SocketEntry& s : snapshot.sockets) {
    if (s.netns != netns || s.state == TcpState::kNewSynRecv) {
      continue;
    }
    if (is_time_wait(s)) {
      const auto key = tuple_of(s);
      if (!key) {
        continue;
      }
      seen_tw.insert(*key);
      const auto it = time_wait_.find(*key);
      SocketEntry merged = s;
      if (it == time_wait_.end()) {
        count_correction("time_wait_missing");
      } else if (!merged.owner) {
        merged.owner = it->second.entry.owner;
      }
      const std::uint64_t left =
          s.time_wait_remaining ? static_cast<std::uint64_t>(std::max<std::int64_t>(
                                      0, std::chrono::nanoseconds(*s.time_wait_remaining).count()))
                                : kTimeWaitLenNs;
      add_time_wait(merged, snapshot_ns + left,
                    it == time_wait_.end() ? snapshot_ns : it->second.created_ns);
      continue;
    }
    const std::uint64_t id = identity_of(s);
    if (id == 0) {
      continue;
    }
    seen.insert(id);
    const auto it = sockets_.find(id);
    if (it == sockets_.end()) {
      if (sockets_.size() >= limits_.max_sockets) {
        ++counters_.sockets_dropped;
        continue;
      }
      count_correction("socket_missing");
      SocketEntry fresh = s;
      fresh.sock_id = id;
      sockets_.emplace(id, fresh);
      updated_ns_[id] = snapshot_ns;
      first_seen_ns_[id] = snapshot_ns;
      if (fresh.state == TcpState::kListen) {
        listeners_.emplace(listener_key(fresh.netns, fresh.local.port), id);
      }
      continue;
    }
    if (updated_ns_[id] > snapshot_ns) {
      continue;  // events newer than the snapshot know better
    }
    if (it->second.state != s.state) {
      count_correction("socket_state");
      record_transition(it->second, snapshot_ns);
    }
    if (it->second.state == TcpState::kListen) {
      forget_listener(it->second);
    }
    SocketEntry merged = s;
    merged.sock_id = id;
    if (it->second.owner) {
      merged.owner = it->second.owner;  // who made it, from the events
    }
    it->second = std::move(merged);
    if (it->second.state == TcpState::kListen) {
      listeners_.emplace(listener_key(it->second.netns, it->second.local.port), id);
    }
  }

  std::vector<std::uint64_t> stale;
  for (const auto& [id, entry] : sockets_) {
    if (entry.netns == netns && !seen.contains(id) && updated_ns_[id] <= snapshot_ns) {
      stale.push_back(id);
    }
  }
  for (const auto id : stale) {
    erase_socket(id, snapshot_ns);
  }
  count_correction("socket_stale", stale.size());

  std::uint64_t stale_tw = 0;
  for (auto it = time_wait_.begin(); it != time_wait_.end();) {
    if (it->first.netns == netns && !seen_tw.contains(it->first) &&
        it->second.created_ns <= snapshot_ns) {
      bury_time_wait(it->first, it->second, snapshot_ns);
      it = time_wait_.erase(it);
      ++stale_tw;
    } else {
      ++it;
    }
  }
  count_correction("time_wait_stale", stale_tw);
  counting_ = true;
}

inline SocketTable ReferenceTracker::table(std::optional<std::uint64_t> netns,
                                           std::uint64_t now_ns) const {
  SocketTable out;
  for (const auto& [id, entry] : sockets_) {
    if (!netns || entry.netns == *netns) {
      out.sockets.push_back(entry);
    }
  }
  for (const auto& [key, tw] : time_wait_) {
    if (netns && key.netns != *netns) {
      continue;
    }
    SocketEntry e = tw.entry;
    const std::uint64_t left = tw.expires_ns > now_ns ? tw.expires_ns - now_ns : 0;
    e.time_wait_remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds(left));
    out.sockets.push_back(std::move(e));
  }
  return out;
}

inline SocketTable ReferenceTracker::table_at(std::uint64_t netns, std::uint64_t at_ns,
                                              std::uint64_t now_ns,
                                              std::optional<std::uint16_t> port) const {
  const auto wanted = [port](const SocketEntry& e) { return !port || e.local.port == *port; };
  const auto remaining = [now_ns](std::uint64_t expires_ns) {
    const std::uint64_t left = expires_ns > now_ns ? expires_ns - now_ns : 0;
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds(left));
  };
  SocketTable out;
  for (const auto& [id, entry] : sockets_) {
    const auto seen = first_seen_ns_.find(id);
    if (entry.netns == netns && wanted(entry) &&
        (seen == first_seen_ns_.end() || seen->second <= at_ns)) {
      out.sockets.push_back(entry);
      if (const auto h = history_.find(id); h != history_.end()) {
        out.sockets.back().state = h->second.state_at(at_ns, entry.state);
      }
    }
  }
  for (const auto& [key, tw] : time_wait_) {
    if (key.netns == netns && tw.created_ns <= at_ns && wanted(tw.entry)) {
      SocketEntry e = tw.entry;
      e.time_wait_remaining = remaining(tw.expires_ns);
      out.sockets.push_back(std::move(e));
    }
  }
  for (const Tombstone& t : tombstones_) {
    if (t.entry.netns == netns && t.first_seen_ns <= at_ns && t.erased_ns > at_ns &&
        wanted(t.entry)) {
      SocketEntry e = t.entry;
      if (e.state == TcpState::kTimeWait) {
        e.time_wait_remaining = remaining(t.expires_ns);
      } else {
        e.state = t.history.state_at(at_ns, e.state);
      }
      out.sockets.push_back(std::move(e));
    }
  }
  return out;
}

inline std::optional<std::uint64_t> ReferenceTracker::first_seen(const SocketEntry& entry) const {
  if (is_time_wait(entry)) {
    const auto key = tuple_of(entry);
    if (!key) {
      return std::nullopt;
    }
    const auto it = time_wait_first_seen_ns_.find(*key);
    return it == time_wait_first_seen_ns_.end() ? std::nullopt : std::optional(it->second);
  }
  const auto it = first_seen_ns_.find(identity_of(entry));
  return it == first_seen_ns_.end() ? std::nullopt : std::optional(it->second);
}

inline std::optional<SocketOwner> ReferenceTracker::owner_of(const SocketEntry& entry) const {
  if (is_time_wait(entry)) {
    const auto key = tuple_of(entry);
    if (!key) {
      return std::nullopt;
    }
    const auto it = time_wait_.find(*key);
    return it == time_wait_.end() ? std::nullopt : it->second.entry.owner;
  }
  const auto it = sockets_.find(identity_of(entry));
  return it == sockets_.end() ? std::nullopt : it->second.owner;
}

inline void ReferenceTracker::attribute(SocketTable& table) const {
  for (auto& s : table.sockets) {
    if (!s.owner) {
      s.owner = owner_of(s);
    }
  }
}

}  // namespace portlens::reference
