// A naive model of SocketTracker, the oracle of tracker_differential_test. It is written from the
// rules the tracker is meant to follow (docs/architecture.md: the tracker, tombstones, reconcile;
// docs/kernel-rules.md section 5.2: how a TIME_WAIT starts and ends), not from tracker.cpp: plain
// maps and linear scans, no capacity limits (the test stays below them). Each rule is stated where
// it is applied: E for events, T for TIME_WAITs, Q for queries, M for merges. Test code only.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "agent/model/event.hpp"
#include "agent/model/socket_table.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens::model {

// A state change of a full socket: when, and the state it had before.
struct Change {
  std::uint64_t at_ns = 0;
  std::optional<TcpState> before;
};

struct FullSocket {
  SocketEntry entry;
  std::uint64_t first_seen_ns = 0;
  std::uint64_t updated_ns = 0;  // the last event that touched it
  std::vector<Change> history;
};

struct TimeWait {
  SocketEntry entry;             // time_wait_remaining unset
  std::uint64_t created_ns = 0;  // when the tracker learned of it: inference or snapshot
  std::uint64_t expires_ns = 0;
};

// A socket or TIME_WAIT that is gone, as it was when it went (a tombstone).
struct Removed {
  SocketEntry entry;
  std::uint64_t first_seen_ns = 0;  // TIME_WAIT: its created_ns
  std::uint64_t removed_ns = 0;
  std::uint64_t expires_ns = 0;  // TIME_WAIT only
  std::vector<Change> history;
};

struct PendingMerge {
  std::uint64_t netns = 0;
  SocketTable snapshot;
  std::uint64_t snapshot_ns = 0;
  bool count = true;
  std::size_t next = 0;
  std::set<std::uint64_t> seen;  // full sockets, by identity
  std::set<std::tuple<std::uint64_t, Endpoint, Endpoint>> seen_time_wait;
  std::optional<std::uint64_t> first_gone;  // KnownTrackerBugs::stops_at_older_removal
};

// Where SocketTracker breaks a rule (found by tracker_differential_test and reported for issue 9;
// see DISABLED_ tests there), the model can do as the tracker does, so that every other rule
// stays checked until it is fixed. Off: the rules.
struct KnownTrackerBugs {
  // M5: a merge re-arms a TIME_WAIT the events inferred after the snapshot began, from the
  // snapshot's (older) one on the same 4-tuple: its timer and fields.
  bool rearms_newer_time_wait = false;
  // M3/M5: the merge's first look at what the events removed walks back from the newest removal
  // and stops at the first one not after the snapshot, though an earlier merge buried its stale
  // sockets at its own older snapshot time after newer removals (a snapshot queued behind
  // another). Later looks take every removal since, whenever it happened.
  bool stops_at_older_removal = false;
};

class TrackerModel {
 public:
  using Tuple = std::tuple<std::uint64_t, Endpoint, Endpoint>;

  explicit TrackerModel(KnownTrackerBugs bugs = {}) : bugs_(bugs) {}

  void apply(const Event& e) {
    switch (e.type) {
      case EventType::kBind:
        // E2. A successful bind() with an address: the socket has that local address and owns
        // its port explicitly; a TCP socket without a state is bound only (CLOSE). UDP has no
        // state.
        if (e.result == 0 && e.local) {
          FullSocket& s = touch(e);
          s.entry.local = *e.local;
          s.entry.explicit_port = true;
          if (!is_udp(s.entry.proto) && !s.entry.state) {
            s.entry.state = TcpState::kClose;
          }
        }
        return;
      case EventType::kListen:
        // E3. A successful listen(): LISTEN, an explicit port, the address it reports if any.
        if (e.result == 0) {
          FullSocket& s = touch(e);
          if (e.local) {
            s.entry.local = *e.local;
          }
          s.entry.state = TcpState::kListen;
          s.entry.explicit_port = true;
        }
        return;
      case EventType::kConnect:
        on_connect(e);
        return;
      case EventType::kState:
        if (e.new_state == static_cast<int>(TcpState::kClose)) {
          on_close(e);
        } else {
          on_state(e);
        }
        return;
      case EventType::kResetSent:
        return;  // only the close counters read it; the model has none of those
      case EventType::kReset:
        // E7. A received RST is counted and marks the socket until its close or destroy.
        ++counters_.resets_seen;
        resets_.insert(e.sock_id);
        return;
      case EventType::kDestroy:
        // E8. tcp_destroy_sock: the socket is gone (the only sign a bound-only one closed).
        if (const auto it = sockets_.find(e.sock_id); it != sockets_.end()) {
          remove_socket(it, e.ts_ns);
        }
        resets_.erase(e.sock_id);
        return;
    }
  }

  // T3. TCP_TIMEWAIT_LEN is fixed: a TIME_WAIT whose expiry is at or before now is gone.
  void expire(std::uint64_t now_ns) {
    for (std::size_t i = 0; i < time_waits_.size();) {
      if (time_waits_[i].expires_ns <= now_ns) {
        remove_time_wait(i, now_ns);
        ++counters_.time_wait_expired;
      } else {
        ++i;
      }
    }
  }

  // M0. A merge makes what is known of one netns match a snapshot taken at snapshot_ns, a slice
  // of snapshot entries at a time, in order; events may be applied between slices. Merging in
  // one slice is a whole merge (reconcile, bootstrap). A bootstrap counts no corrections.
  void begin_merge(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns,
                   bool bootstrap) {
    merge_ = PendingMerge{};
    merge_->netns = netns;
    merge_->snapshot = snapshot;
    merge_->snapshot_ns = snapshot_ns;
    merge_->count = !bootstrap;
    // T5. The namespace's tcp_max_tw_buckets is the one its latest snapshot read (none when it
    // read none), from the start of the merge. (The TCPTimeWaitOverflow reading a snapshot may
    // carry is not modelled: tracker_time_wait_limit_test checks it.)
    limits_[netns] = snapshot.config_for(netns).tcp_max_tw_buckets;
  }
  bool merge_some(std::size_t max_entries) {
    if (!merge_) {
      return true;
    }
    PendingMerge& m = *merge_;
    if (bugs_.stops_at_older_removal && !m.first_gone) {
      std::size_t i = removed_.size();
      while (i > 0 && removed_[i - 1].removed_ns > m.snapshot_ns) {
        --i;
      }
      m.first_gone = removals_ - removed_.size() + i;
    }
    const std::size_t size = m.snapshot.sockets.size();
    const std::size_t end = m.next + std::min(max_entries, size - m.next);
    for (; m.next < end; ++m.next) {
      merge_entry(m, m.snapshot.sockets[m.next]);
    }
    if (m.next < size) {
      return false;
    }
    finish(m);
    merge_.reset();
    return true;
  }

  // Q1. Every full socket as it is now and every TIME_WAIT with the time left at now (whole
  // milliseconds, rounded down, never negative).
  [[nodiscard]] SocketTable table(std::optional<std::uint64_t> netns, std::uint64_t now_ns) const {
    SocketTable out;
    for (const auto& [id, s] : sockets_) {
      if (!netns || s.entry.netns == *netns) {
        out.sockets.push_back(s.entry);
      }
    }
    for (const TimeWait& tw : time_waits_) {
      if (!netns || tw.entry.netns == *netns) {
        out.sockets.push_back(with_time_left(tw.entry, tw.expires_ns, now_ns));
      }
    }
    return out;
  }

  // Q2. The sockets of netns as they were at at_ns: full sockets first seen by then, in the
  // state they had then; TIME_WAITs learned of by then; and what was removed after at_ns but
  // first seen by then, as it was when removed. A removed socket is kept kTombstoneTtlNs, so
  // this is defined for at_ns >= now_ns - kTombstoneTtlNs only. With port: that local port only.
  [[nodiscard]] SocketTable table_at(std::uint64_t netns, std::uint64_t at_ns, std::uint64_t now_ns,
                                     std::optional<std::uint16_t> port = std::nullopt) const {
    const auto wanted = [&](const SocketEntry& e) {
      return e.netns == netns && (!port || e.local.port == *port);
    };
    SocketTable out;
    for (const auto& [id, s] : sockets_) {
      if (wanted(s.entry) && s.first_seen_ns <= at_ns) {
        out.sockets.push_back(s.entry);
        out.sockets.back().state = state_at(s.history, at_ns, s.entry.state);
      }
    }
    for (const TimeWait& tw : time_waits_) {
      if (wanted(tw.entry) && tw.created_ns <= at_ns) {
        out.sockets.push_back(with_time_left(tw.entry, tw.expires_ns, now_ns));
      }
    }
    for (const Removed& r : removed_) {
      if (wanted(r.entry) && r.first_seen_ns <= at_ns && r.removed_ns > at_ns) {
        if (r.entry.state == TcpState::kTimeWait) {
          out.sockets.push_back(with_time_left(r.entry, r.expires_ns, now_ns));
        } else {
          out.sockets.push_back(r.entry);
          out.sockets.back().state = state_at(r.history, at_ns, r.entry.state);
        }
      }
    }
    return out;
  }

  [[nodiscard]] std::size_t socket_count() const { return sockets_.size(); }
  [[nodiscard]] std::size_t time_wait_count() const { return time_waits_.size(); }
  [[nodiscard]] const TrackerCounters& counters() const { return counters_; }

 private:
  // The tag tracker.cpp gives a snapshot socket known by inode only (sock_diag has no kernel
  // addresses), as its sock_id: an encoding, not a rule, but the table shows it.
  static constexpr std::uint64_t kInodeIdentityTag = 0x7f00'0000'0000'0000ULL;
  // How many state changes of a socket the tracker remembers (a capacity limit, documented in
  // tracker.hpp's StateHistory): for an older moment it reports the state before the oldest kept.
  static constexpr std::size_t kHistoryDepth = 4;

  static bool is_udp(Proto p) { return p == Proto::kUdp || p == Proto::kUdpLite; }

  // T0. A TIME_WAIT is known by its 4-tuple as the established hash sees it: netns, local and
  // remote address and port, ::ffff:a.b.c.d being a.b.c.d. No remote or a zero port: no 4-tuple.
  static std::optional<Tuple> tuple_of(const SocketEntry& e) {
    if (!e.remote || e.local.port == 0 || e.remote->port == 0) {
      return std::nullopt;
    }
    return Tuple{e.netns, Endpoint{e.local.addr.unmapped(), e.local.port},
                 Endpoint{e.remote->addr.unmapped(), e.remote->port}};
  }
  TimeWait* find_time_wait(const Tuple& key) {
    for (TimeWait& tw : time_waits_) {
      if (tuple_of(tw.entry) == key) {
        return &tw;
      }
    }
    return nullptr;
  }

  static SocketEntry with_time_left(SocketEntry e, std::uint64_t expires_ns, std::uint64_t now_ns) {
    const std::uint64_t left = expires_ns > now_ns ? expires_ns - now_ns : 0;
    e.time_wait_remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds(left));
    return e;
  }

  static std::optional<TcpState> state_at(const std::vector<Change>& history, std::uint64_t at_ns,
                                          std::optional<TcpState> now) {
    const std::size_t first = history.size() > kHistoryDepth ? history.size() - kHistoryDepth : 0;
    for (std::size_t i = first; i < history.size(); ++i) {
      if (history[i].at_ns > at_ns) {
        return history[i].before;  // the first change after at_ns tells what it was then
      }
    }
    return now;
  }

  // E1. An event that names a socket makes it known (first seen now, with the wildcard address
  // of its family) and is its latest update. Options read from the socket replace the known
  // ones, as does its uid. Only a system call runs as the owner: bind, listen and connect name
  // it; state changes (often in softirq) never do.
  FullSocket& touch(const Event& e) {
    auto [it, is_new] = sockets_.try_emplace(e.sock_id);
    FullSocket& s = it->second;
    if (is_new) {
      s.entry.proto = e.proto;
      s.entry.netns = e.netns;
      s.entry.sock_id = e.sock_id;
      s.entry.local =
          Endpoint{e.family == Family::kIpv4 ? IpAddress::any_v4() : IpAddress::any_v6(), 0};
      s.first_seen_ns = e.ts_ns;
    }
    s.updated_ns = e.ts_ns;
    if (e.opts) {
      s.entry.reuseaddr = e.opts->reuseaddr;
      s.entry.reuseport = e.opts->reuseport;
      s.entry.v6only = e.opts->v6only;
      s.entry.bound_dev_if = e.opts->bound_dev_if;
    }
    if (e.sock_uid) {
      s.entry.uid = e.sock_uid;
    }
    if (e.is_call()) {
      s.entry.owner = SocketOwner{e.pid, e.comm};
    }
    return s;
  }

  // E4. A successful (or in-progress) connect(): the local address once it has a port, the
  // destination as remote (none after AF_UNSPEC), an explicit port if it had one on entry. TCP
  // without a state, or in CLOSE, is ESTABLISHED (0) or SYN_SENT (EINPROGRESS), and takes over
  // a TIME_WAIT on its 4-tuple (T4). UDP does neither.
  void on_connect(const Event& e) {
    if (e.result != 0 && e.result != -EINPROGRESS) {
      return;
    }
    FullSocket& s = touch(e);
    if (e.local && e.local->port != 0) {
      s.entry.local = *e.local;
    }
    s.entry.remote = e.requested;
    if (e.enter_port != 0) {
      s.entry.explicit_port = true;
    }
    if (!is_udp(s.entry.proto)) {
      if (!s.entry.state || *s.entry.state == TcpState::kClose) {
        s.entry.state = e.result == 0 ? TcpState::kEstablished : TcpState::kSynSent;
      }
      take_over(s.entry, e.ts_ns);
    }
  }

  // E5. A change into any state but CLOSE: the socket is in it (a known socket's change is
  // remembered, for Q2), with the event's addresses where they have a port. LISTEN: no remote,
  // an explicit port. A socket first seen on LISTEN -> x is an accepted child: its port is the
  // listener's, not its own, and until accept() its owner is the listener's (E6). ESTABLISHED
  // and SYN_RECV take over a TIME_WAIT on the 4-tuple (T4).
  void on_state(const Event& e) {
    const auto to = tcp_state_from_int(e.new_state);
    if (!to) {
      return;
    }
    const bool is_new = !sockets_.contains(e.sock_id);
    FullSocket& s = touch(e);
    if (!is_new) {
      s.history.push_back(Change{e.ts_ns, s.entry.state});
    }
    s.entry.state = *to;
    if (e.local && e.local->port != 0) {
      s.entry.local = *e.local;
    }
    if (*to == TcpState::kListen) {
      s.entry.remote.reset();
      s.entry.explicit_port = true;
      return;
    }
    if (e.remote && e.remote->port != 0) {
      s.entry.remote = *e.remote;
    }
    if (is_new && e.old_state == static_cast<int>(TcpState::kListen)) {
      s.entry.explicit_port = false;
      if (!s.entry.owner) {
        s.entry.owner = listener_owner(s.entry);
      }
    }
    if (*to == TcpState::kEstablished || *to == TcpState::kSynRecv) {
      take_over(s.entry, e.ts_ns);
    }
  }

  // E6. A child's listener: a known LISTEN socket of its netns on its port whose owner is known;
  // one on the child's own address wins over a wildcard one.
  std::optional<SocketOwner> listener_owner(const SocketEntry& child) const {
    std::optional<SocketOwner> wildcard;
    for (const auto& [id, s] : sockets_) {
      const SocketEntry& l = s.entry;
      if (l.state != TcpState::kListen || l.netns != child.netns ||
          l.local.port != child.local.port || !l.owner) {
        continue;
      }
      if (l.local.addr.unmapped() == child.local.addr.unmapped()) {
        return l.owner;
      }
      if (l.local.addr.is_any()) {
        wildcard = l.owner;
      }
    }
    return wildcard;
  }

  // E9. A change into CLOSE. T1: from FIN_WAIT2 or CLOSING, with both addresses and no RST
  // received first, tcp_time_wait() made a TIME_WAIT (kernel-rules 5.2; no event ever shows
  // TIME_WAIT as a new state). The socket itself: tcp_set_state(CLOSE) releases the port unless
  // bind() locked it; a locked port keeps the socket, in CLOSE without remote, until destroyed.
  void on_close(const Event& e) {
    const bool reset = resets_.erase(e.sock_id) > 0;
    const auto it = sockets_.find(e.sock_id);
    if ((e.old_state == static_cast<int>(TcpState::kFinWait2) ||
         e.old_state == static_cast<int>(TcpState::kClosing)) &&
        !reset && e.local && e.remote && !refused(e)) {
      infer_time_wait(e, it == sockets_.end() ? SocketEntry{} : it->second.entry);
    }
    if (it == sockets_.end()) {
      return;
    }
    FullSocket& s = it->second;
    s.history.push_back(Change{e.ts_ns, s.entry.state});
    if (!s.entry.explicit_port) {
      remove_socket(it, e.ts_ns);
      return;
    }
    s.entry.state = TcpState::kClose;
    s.entry.remote.reset();
    s.updated_ns = e.ts_ns;
  }

  // T5. inet_twsk_alloc() makes no TIME_WAIT in a namespace that already holds its
  // tcp_max_tw_buckets (kernel-rules 5.3). Held: its TIME_WAITs but one on the closing
  // connection's own 4-tuple, which that connection took over, so the kernel has it no more.
  // Those whose 60 s ended at or before the close are gone first (T3). A refusal is counted, and
  // the TIME_WAIT on the 4-tuple, if any, is gone (taken over, T4).
  bool refused(const Event& e) {
    const auto limit = limits_.find(e.netns);
    SocketEntry closing;
    closing.netns = e.netns;
    closing.local = *e.local;
    closing.remote = e.remote;
    const auto key = tuple_of(closing);
    if (limit == limits_.end() || !limit->second || !key) {
      return false;
    }
    const auto held = [&] {
      std::size_t n = 0;
      for (const TimeWait& tw : time_waits_) {
        n += tw.entry.netns == e.netns && tuple_of(tw.entry) != key ? 1 : 0;
      }
      return n;
    };
    if (held() < *limit->second) {
      return false;
    }
    expire(e.ts_ns);
    if (held() < *limit->second) {
      return false;
    }
    ++counters_.time_wait_refused;
    take_over(closing, e.ts_ns);
    return true;
  }

  // T2. The inferred TIME_WAIT is a new object (no inode, no sock_id) that keeps what the full
  // socket had (owner: it has no process of its own; explicit port; ...), the event's addresses,
  // the options the event read, its timestamps flag, substate TIME_WAIT, no uid, and 60 s to
  // live from the event. One already on the 4-tuple is replaced, not taken over.
  void infer_time_wait(const Event& e, SocketEntry tw) {
    tw.proto = e.proto;
    tw.netns = e.netns;
    tw.local = *e.local;
    tw.remote = e.remote;
    tw.state = TcpState::kTimeWait;
    tw.time_wait_substate = TcpState::kTimeWait;
    tw.timestamps = e.timestamps;
    tw.inode = 0;
    tw.sock_id = 0;
    if (e.opts) {
      tw.reuseaddr = e.opts->reuseaddr;
      tw.reuseport = e.opts->reuseport;
      tw.v6only = e.opts->v6only;
      tw.bound_dev_if = e.opts->bound_dev_if;
    }
    tw.uid.reset();
    put_time_wait(tw, e.ts_ns + kTimeWaitLenNs, e.ts_ns);
    ++counters_.time_wait_inferred;
  }

  void put_time_wait(SocketEntry entry, std::uint64_t expires_ns, std::uint64_t created_ns) {
    const auto key = tuple_of(entry);
    if (!key) {
      return;
    }
    entry.time_wait_remaining.reset();
    if (TimeWait* tw = find_time_wait(*key)) {
      *tw = TimeWait{std::move(entry), created_ns, expires_ns};
    } else {
      time_waits_.push_back(TimeWait{std::move(entry), created_ns, expires_ns});
    }
  }

  // T4. A new connection on a TIME_WAIT's 4-tuple replaced it (tcp_twsk_unique(), or a SYN that
  // tcp_timewait_state_process() accepted): gone, counted as reused.
  void take_over(const SocketEntry& e, std::uint64_t ts_ns) {
    const auto key = tuple_of(e);
    for (std::size_t i = 0; key && i < time_waits_.size(); ++i) {
      if (tuple_of(time_waits_[i].entry) == key) {
        remove_time_wait(i, ts_ns);
        ++counters_.time_wait_reused;
        return;
      }
    }
  }

  // Q3. What goes is kept as it was (with its state history), for Q2 and M3/M5, for
  // kTombstoneTtlNs: a removal forgets, oldest first, those older than that.
  void bury(Removed r) {
    const std::uint64_t now_ns = r.removed_ns;
    removed_.push_back(std::move(r));
    ++removals_;
    while (removed_.front().removed_ns + kTombstoneTtlNs < now_ns) {
      removed_.pop_front();
    }
  }
  void remove_socket(std::map<std::uint64_t, FullSocket>::iterator it, std::uint64_t ts_ns) {
    bury(Removed{it->second.entry, it->second.first_seen_ns, ts_ns, 0, it->second.history});
    sockets_.erase(it);
  }
  void remove_time_wait(std::size_t i, std::uint64_t ts_ns) {
    const TimeWait& tw = time_waits_[i];
    bury(Removed{tw.entry, tw.created_ns, ts_ns, tw.expires_ns, {}});
    time_waits_.erase(time_waits_.begin() + static_cast<std::ptrdiff_t>(i));
  }

  // M3/M5. Removed by the events after the snapshot began: the snapshot may still show it, but
  // it is gone, not missing. (Defined while the snapshot is younger than kTombstoneTtlNs.)
  template <typename Match>
  [[nodiscard]] bool removed_since(const PendingMerge& m, Match match) const {
    for (std::size_t i = 0; i < removed_.size(); ++i) {
      const bool after = m.first_gone ? removals_ - removed_.size() + i >= *m.first_gone
                                      : removed_[i].removed_ns > m.snapshot_ns;
      if (after && removed_[i].entry.netns == m.netns && match(removed_[i].entry)) {
        return true;
      }
    }
    return false;
  }

  void count(const PendingMerge& m, const char* kind, std::uint64_t n = 1) {
    if (m.count && n > 0) {
      counters_.corrections[kind] += n;
    }
  }

  void merge_entry(PendingMerge& m, const SocketEntry& s) {
    // M1. Only the merge's netns; NEW_SYN_RECV entries are request socks, not sockets.
    if (s.netns != m.netns || s.state == TcpState::kNewSynRecv) {
      return;
    }
    if (s.state == TcpState::kTimeWait) {
      merge_time_wait(m, s);
      return;
    }
    // M2. A full socket is known by its kernel address, or by its inode where the source has
    // none (sock_diag); with neither it cannot be matched and is skipped.
    const std::uint64_t id = s.sock_id != 0 ? s.sock_id
                             : s.inode != 0 ? kInodeIdentityTag | s.inode
                                            : 0;
    if (id == 0) {
      return;
    }
    m.seen.insert(id);
    const auto it = sockets_.find(id);
    if (it == sockets_.end()) {
      // M3. Unknown to the events: socket_missing, known from the snapshot's moment on; unless
      // the events removed it after the snapshot began.
      if (removed_since(m, [id](const SocketEntry& e) {
            return e.state != TcpState::kTimeWait && e.sock_id == id;
          })) {
        return;
      }
      count(m, "socket_missing");
      FullSocket fresh{s, m.snapshot_ns, m.snapshot_ns, {}};
      fresh.entry.sock_id = id;
      sockets_.emplace(id, std::move(fresh));
      return;
    }
    // M4. Known: an event after the snapshot began knows better, and the socket is left alone.
    // Otherwise the snapshot's view wins (a different state is socket_state, a change at the
    // snapshot's moment), but the owner the events named is kept.
    FullSocket& t = it->second;
    if (t.updated_ns > m.snapshot_ns) {
      return;
    }
    if (t.entry.state != s.state) {
      count(m, "socket_state");
      t.history.push_back(Change{m.snapshot_ns, t.entry.state});
    }
    SocketEntry merged = s;
    merged.sock_id = id;
    if (t.entry.owner) {
      merged.owner = t.entry.owner;
    }
    t.entry = std::move(merged);
  }

  // M5. A snapshot TIME_WAIT (by 4-tuple, T0). Unknown: time_wait_missing, learned of at the
  // snapshot's moment; unless the events removed a TIME_WAIT on that 4-tuple after the snapshot
  // began (expired, taken over). Known and inferred after the snapshot began: the events know
  // better (as in M4), left alone. Otherwise re-armed from the snapshot's timer (60 s when it
  // shows none), its fields the snapshot's but the owner the events named (a snapshot cannot
  // know a TIME_WAIT's process), still learned of when it was. The timer counts from
  // snapshot_ns.
  void merge_time_wait(PendingMerge& m, const SocketEntry& s) {
    const auto key = tuple_of(s);
    if (!key) {
      return;
    }
    m.seen_time_wait.insert(*key);
    const std::uint64_t left =
        s.time_wait_remaining ? static_cast<std::uint64_t>(std::max<std::int64_t>(
                                    0, std::chrono::nanoseconds(*s.time_wait_remaining).count()))
                              : kTimeWaitLenNs;
    TimeWait* tw = find_time_wait(*key);
    if (tw == nullptr) {
      if (removed_since(m, [&key](const SocketEntry& e) {
            return e.state == TcpState::kTimeWait && tuple_of(e) == key;
          })) {
        return;
      }
      count(m, "time_wait_missing");
      put_time_wait(s, m.snapshot_ns + left, m.snapshot_ns);
      return;
    }
    if (tw->created_ns > m.snapshot_ns && !bugs_.rearms_newer_time_wait) {
      return;
    }
    SocketEntry merged = s;
    if (tw->entry.owner) {
      merged.owner = tw->entry.owner;
    }
    put_time_wait(merged, m.snapshot_ns + left, tw->created_ns);
  }

  // M6. At the end: what the snapshot does not have is gone (socket_stale, time_wait_stale),
  // removed at the snapshot's moment; but not what the events made or touched after it began.
  void finish(const PendingMerge& m) {
    std::uint64_t stale = 0;
    for (auto it = sockets_.begin(); it != sockets_.end();) {
      const FullSocket& s = it->second;
      if (s.entry.netns == m.netns && !m.seen.contains(it->first) &&
          s.updated_ns <= m.snapshot_ns) {
        const auto next = std::next(it);
        remove_socket(it, m.snapshot_ns);
        it = next;
        ++stale;
      } else {
        ++it;
      }
    }
    count(m, "socket_stale", stale);
    std::uint64_t stale_tw = 0;
    for (std::size_t i = 0; i < time_waits_.size();) {
      const TimeWait& tw = time_waits_[i];
      if (tw.entry.netns == m.netns && !m.seen_time_wait.contains(*tuple_of(tw.entry)) &&
          tw.created_ns <= m.snapshot_ns) {
        remove_time_wait(i, m.snapshot_ns);
        ++stale_tw;
      } else {
        ++i;
      }
    }
    count(m, "time_wait_stale", stale_tw);
  }

  std::map<std::uint64_t, FullSocket> sockets_;  // by sock_id
  std::vector<TimeWait> time_waits_;             // scanned by 4-tuple
  std::deque<Removed> removed_;                  // recent removals, in order
  std::uint64_t removals_ = 0;                   // ever
  std::set<std::uint64_t> resets_;               // sockets that received an RST
  std::optional<PendingMerge> merge_;
  std::map<std::uint64_t, std::optional<std::uint32_t>> limits_;  // T5, by netns
  KnownTrackerBugs bugs_;
  TrackerCounters counters_;
};

}  // namespace portlens::model
