// A SocketTracker fed a random but plausible event stream over two network namespaces: outbound
// connections (some from explicitly bound ports, some MPTCP or UDP), listeners and their accepted
// children, active closes into TIME_WAIT (with and without timestamps, some after an RST),
// passive closes, takeovers of TIME_WAIT 4-tuples, expiry, and merges of snapshots that disagree
// with the events (bootstrap or reconcile). As in the agent, snapshots are taken, queued, then
// merged in slices of random size, with events applied before the merge and between slices.
// Small address and port pools make destinations, ports and 4-tuples collide. For differential
// tests of the tracker itself and of what is computed from it.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "agent/model/compact_sockets.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens {

class RandomTracker {
 public:
  static constexpr std::uint64_t kNetnsA = 4026531840;
  static constexpr std::uint64_t kNetnsB = 4026532001;
  static constexpr std::uint64_t kSec = 1'000'000'000ULL;

  explicit RandomTracker(std::uint32_t seed, TrackerLimits limits = {})
      : rng_(seed), tracker_(limits) {
    for (const std::uint64_t netns : {kNetnsA, kNetnsB}) {
      NetnsPortConfig config;
      config.port_range_lo = static_cast<std::uint16_t>(32768 + pick(4));
      config.port_range_hi = static_cast<std::uint16_t>(config.port_range_lo + 8 + pick(24));
      config.tcp_tw_reuse = static_cast<int>(pick(3));
      config.tcp_tw_reuse_delay = std::chrono::milliseconds(pick(2) == 0 ? 1000 : 20000);
      if (pick(2) == 0) {
        config.reserved_ports.set(config.port_range_lo + 1);
      }
      configs_.emplace(netns, config);
    }
  }

  // Follows every operation applied to tracker(), e.g. with a model of it. merge_some() returns
  // whether the merge is done; merged() is called after each merge.
  struct Mirror {
    std::function<void(const Event&)> apply;
    std::function<void(std::uint64_t now_ns)> expire;
    std::function<void(std::uint64_t netns, const SocketTable&, std::uint64_t snapshot_ns,
                       bool bootstrap)>
        begin_merge;
    std::function<bool(std::size_t max_entries)> merge_some;
    std::function<void()> merged;
  };
  void mirror(Mirror m) { mirror_ = std::move(m); }

  SocketTracker& tracker() { return tracker_; }
  // From now on every snapshot carries its namespace's config, with this tcp_max_tw_buckets.
  void limit_time_waits(std::uint32_t max) {
    for (auto& [netns, config] : configs_) {
      config.tcp_max_tw_buckets = max;
    }
    snapshots_carry_config_ = true;
  }
  // From now on the tracker merges each snapshot in its compact form (CompactSockets), as the
  // agent's reconcile does; the mirror still gets the SocketTable.
  void compact_merges() { compact_merges_ = true; }
  [[nodiscard]] std::uint64_t now() const { return ts_; }
  [[nodiscard]] const std::map<std::uint64_t, NetnsPortConfig>& configs() const { return configs_; }
  // Slices after which the mirror's merge_some() said otherwise than the tracker's.
  [[nodiscard]] int slices_disagreed() const { return slices_disagreed_; }
  [[nodiscard]] int merges() const { return merges_; }

  void run(int steps) {
    for (int i = 0; i < steps; ++i) {
      step();
    }
  }

 private:
  struct Live {
    std::uint64_t netns = 0;
    Proto proto = Proto::kTcp;
    Endpoint local;
    Endpoint remote;
    TcpState state = TcpState::kClose;
  };

  std::uint32_t pick(std::uint32_t n) { return static_cast<std::uint32_t>(rng_() % n); }

  void apply(const Event& e) {
    tracker_.apply(e);
    if (mirror_.apply) {
      mirror_.apply(e);
    }
  }

  std::uint64_t random_netns() { return pick(4) == 0 ? kNetnsB : kNetnsA; }

  Endpoint local_endpoint(std::uint16_t port) {
    static const std::array<const char*, 5> kLocal = {"127.0.0.1", "10.0.0.1", "10.0.0.2",
                                                      "::ffff:10.0.0.1", "10.0.0.3"};
    return Endpoint{*IpAddress::parse(kLocal[pick(kLocal.size())]), port};
  }

  Endpoint remote_endpoint() {
    static const std::array<const char*, 6> kRemote = {"10.0.0.9",        "10.0.0.8", "127.0.0.1",
                                                       "::ffff:10.0.0.9", "10.0.1.1", "10.0.0.7"};
    static const std::array<std::uint16_t, 3> kPorts = {5432, 80, 443};
    return Endpoint{*IpAddress::parse(kRemote[pick(kRemote.size())]), kPorts[pick(kPorts.size())]};
  }

  std::uint16_t random_port() { return static_cast<std::uint16_t>(32760 + pick(48)); }

  Event base(EventType type, std::uint64_t sk, std::uint64_t netns) {
    Event e;
    e.type = type;
    e.sock_id = sk;
    e.ts_ns = ts_;
    e.netns = static_cast<std::uint32_t>(netns);
    e.opts = SocketOptions{};
    e.opts->reuseaddr = pick(2) == 0;
    e.opts->bound_dev_if = pick(8) == 0 ? 1 : 0;
    return e;
  }

  Event call(EventType type, std::uint64_t sk, std::uint64_t netns) {
    Event e = base(type, sk, netns);
    e.pid = 100 + pick(6);
    e.comm = "proc" + std::to_string(e.pid);
    e.sock_uid = 1000;
    return e;
  }

  void state(std::uint64_t sk, Live& s, TcpState to, bool timestamps = true) {
    Event e = base(EventType::kState, sk, s.netns);
    e.proto = s.proto;
    e.pid = 1;
    e.comm = "ksoftirqd/0";
    e.old_state = static_cast<int>(s.state);
    e.new_state = static_cast<int>(to);
    e.local = s.local;
    e.remote = s.remote;
    e.timestamps = timestamps;
    apply(e);
    s.state = to;
  }

  void destroy(std::uint64_t sk) {
    const auto it = live_.find(sk);
    apply(base(EventType::kDestroy, sk, it->second.netns));
    live_.erase(it);
  }

  std::uint64_t any_live(TcpState state) {
    std::vector<std::uint64_t> found;
    for (const auto& [sk, s] : live_) {
      if (s.state == state && s.proto != Proto::kUdp) {
        found.push_back(sk);
      }
    }
    return found.empty() ? 0 : found[pick(static_cast<std::uint32_t>(found.size()))];
  }

  void connect_out(Endpoint local, const Endpoint& remote, std::uint64_t netns, bool bound) {
    const std::uint64_t sk = next_sk_++;
    Live s{netns, Proto::kTcp, local, remote, TcpState::kClose};
    const std::uint32_t proto = pick(20);
    s.proto = proto == 0 ? Proto::kMptcp : proto == 1 ? Proto::kUdp : Proto::kTcp;
    if (bound) {
      Event b = call(EventType::kBind, sk, netns);
      b.proto = s.proto;
      b.requested = local;
      b.local = local;
      apply(b);
    }
    if (s.proto != Proto::kUdp) {
      Live syn = s;
      syn.local.port = bound ? local.port : 0;
      state(sk, syn, TcpState::kSynSent);
      s.state = TcpState::kSynSent;
      state(sk, s, TcpState::kEstablished);
    }
    Event c = call(EventType::kConnect, sk, netns);
    c.proto = s.proto;
    c.local = local;
    c.requested = remote;
    c.enter_port = bound ? local.port : 0;
    apply(c);
    s.state = TcpState::kEstablished;
    live_[sk] = s;
  }

  // Every process that listens on a port is the same one, so that which of several listeners
  // on a port an accepted child is attributed to never matters.
  static SocketOwner owner_of_port(std::uint16_t port) {
    const std::uint32_t pid = 100 + port % 6;
    return SocketOwner{pid, "proc" + std::to_string(pid)};
  }

  // What the kernel has, as a snapshot of netns would show it: the tracker's table, less some
  // sockets (closes the events missed), with other states, flags, timers and TIME_WAIT
  // substates, plus sockets and TIME_WAITs the events never showed, and entries every merge
  // skips (another namespace's, a request sock).
  SocketTable snapshot_of(std::uint64_t netns) {
    SocketTable snap = tracker_.table(netns, ts_);
    std::vector<SocketEntry> kept;
    for (SocketEntry& s : snap.sockets) {
      if (pick(10) == 0) {
        continue;  // the kernel no longer has it
      }
      s.owner.reset();  // a snapshot names no TIME_WAIT owner, and seldom another
      if (s.state == TcpState::kTimeWait) {
        if (pick(3) == 0) {
          s.time_wait_remaining = std::chrono::milliseconds(pick(60000));
          s.time_wait_substate = pick(4) == 0 ? TcpState::kFinWait2 : TcpState::kTimeWait;
        }
      } else {
        if (s.state != TcpState::kListen && pick(4) == 0) {
          s.owner = SocketOwner{200 + pick(3), "snapped"};
        }
        if (s.state == TcpState::kEstablished && pick(12) == 0) {
          s.state = TcpState::kCloseWait;  // a FIN the events did not show
        } else if (s.state == TcpState::kListen && pick(12) == 0) {
          s.state = TcpState::kClose;
        }
        if (pick(12) == 0) {
          s.reuseaddr = !s.reuseaddr.value_or(false);
        }
      }
      kept.push_back(s);
    }
    for (int i = 0; i < 3; ++i) {  // TIME_WAITs the events never showed
      SocketEntry tw;
      tw.netns = netns;
      tw.state = TcpState::kTimeWait;
      tw.time_wait_substate = pick(5) == 0 ? TcpState::kFinWait2 : TcpState::kTimeWait;
      tw.local = local_endpoint(random_port());
      tw.remote = remote_endpoint();
      if (pick(6) != 0) {
        tw.time_wait_remaining = std::chrono::milliseconds(pick(60000));
      }
      if (pick(3) != 0) {
        tw.timestamps = pick(2) == 0;
      }
      if (pick(2) == 0) {
        tw.bound_dev_if = static_cast<int>(pick(2));
      }
      tw.sock_id = next_sk_++;
      kept.push_back(tw);
    }
    if (pick(2) == 0) {  // a socket the events never showed, known by inode only at times
      SocketEntry s;
      s.netns = netns;
      s.local = local_endpoint(random_port());
      const std::uint32_t kind = pick(3);
      s.state = kind == 0   ? TcpState::kClose
                : kind == 1 ? TcpState::kEstablished
                            : TcpState::kListen;
      if (kind == 1) {
        s.remote = remote_endpoint();
      } else {
        s.explicit_port = true;
      }
      if (kind == 2) {
        s.owner = owner_of_port(s.local.port);
      }
      s.reuseaddr = pick(2) == 0;
      s.inode = 500'000 + next_sk_ % 100'000;
      s.sock_id = pick(4) == 0 ? 0 : next_sk_;
      ++next_sk_;
      kept.push_back(s);
    }
    if (pick(8) == 0) {  // a request sock and another namespace's socket: not merged
      SocketEntry req;
      req.netns = netns;
      req.state = TcpState::kNewSynRecv;
      req.local = local_endpoint(random_port());
      req.remote = remote_endpoint();
      req.sock_id = next_sk_++;
      kept.push_back(req);
      SocketEntry other = req;
      other.state = TcpState::kEstablished;
      other.netns = netns == kNetnsA ? kNetnsB : kNetnsA;
      other.sock_id = next_sk_++;
      kept.push_back(other);
    }
    snap.sockets = std::move(kept);
    if (snapshots_carry_config_) {
      snap.netns_config[netns] = configs_.at(netns);
    }
    return snap;
  }

  struct Pending {
    std::uint64_t netns = 0;
    SocketTable snapshot;
    std::uint64_t taken_ns = 0;
    bool bootstrap = false;
  };

  void take_snapshot() {
    const std::uint64_t netns = random_netns();
    pending_.push_back(Pending{netns, snapshot_of(netns), ts_, pick(3) == 0});
    ++ts_;  // what the events show from now on happened after the snapshot began
  }

  // The oldest snapshot taken, merged in slices of random size; events arrive between slices
  // while the merge is young, so that what they remove is still tombstoned when it ends.
  void merge_oldest() {
    merging_ = std::move(pending_.front());
    pending_.pop_front();
    const Pending& m = merging_;
    if (compact_merges_) {
      merging_compact_ = CompactSockets{};
      for (const SocketEntry& e : m.snapshot.sockets) {
        merging_compact_.push_back(e);
      }
      merging_compact_.seal();
      tracker_.begin_merge(m.netns, merging_compact_, m.snapshot.config_for(m.netns), m.taken_ns,
                           m.bootstrap);
    } else {
      tracker_.begin_merge(m.netns, m.snapshot, m.taken_ns, m.bootstrap);
    }
    if (mirror_.begin_merge) {
      mirror_.begin_merge(m.netns, m.snapshot, m.taken_ns, m.bootstrap);
    }
    static constexpr std::array<std::size_t, 6> kSlices = {1, 2, 3, 7, 30, 100'000};
    for (bool done = false; !done;) {
      const std::size_t slice = kSlices[pick(kSlices.size())];
      done = tracker_.merge_some(slice);
      if (mirror_.merge_some && mirror_.merge_some(slice) != done) {
        ++slices_disagreed_;
      }
      if (!done && ts_ < m.taken_ns + 4 * kSec && pick(3) == 0) {
        for (std::uint32_t i = 0, n = 1 + pick(3); i < n; ++i) {
          ts_ += pick(10) * (kSec / 50);
          churn(pick(96));
        }
      }
    }
    ++merges_;
    if (mirror_.merged) {
      mirror_.merged();
    }
    for (auto it = live_.begin(); it != live_.end();) {  // forget what the merge may have erased
      it = it->second.netns == m.netns && pick(2) == 0 ? live_.erase(it) : std::next(it);
    }
  }

  void step() {
    ts_ += pick(10) * (kSec / 50);
    const std::uint32_t op = pick(100);
    if (op < 96) {
      churn(op);
    } else if (op < 98) {
      if (pending_.size() < 3) {
        take_snapshot();
        if (pick(3) == 0) {
          merge_oldest();  // at once: no events before the merge
        }
      }
    } else if (op < 99) {
      if (!pending_.empty()) {
        merge_oldest();
      }
    } else if (pick(4) == 0) {
      while (!pending_.empty()) {  // no snapshot waits across the jump
        merge_oldest();
      }
      ts_ += 30 * kSec;
    }
    if (!pending_.empty() && pending_.front().taken_ns + 3 * kSec < ts_) {
      merge_oldest();
    }
  }

  void churn(std::uint32_t op) {
    if (op < 30) {
      const bool bound = pick(10) == 0;
      if (pick(2) == 0) {  // one busy destination, so that its ports run out at times
        connect_out(Endpoint{*IpAddress::parse("10.0.0.1"), random_port()},
                    Endpoint{*IpAddress::parse("10.0.0.9"), 5432}, kNetnsA, bound);
      } else {
        connect_out(local_endpoint(random_port()), remote_endpoint(), random_netns(), bound);
      }
    } else if (op < 36) {
      const std::uint64_t sk = next_sk_++;
      const std::uint64_t netns = random_netns();
      const Endpoint local = pick(2) == 0 ? Endpoint{*IpAddress::parse("0.0.0.0"), random_port()}
                                          : local_endpoint(random_port());
      Event b = call(EventType::kBind, sk, netns);
      b.requested = local;
      b.local = local;
      const bool listens = pick(2) == 0;
      if (listens) {
        b.pid = owner_of_port(local.port).pid;
        b.comm = owner_of_port(local.port).comm;
      }
      apply(b);
      Live s{netns, Proto::kTcp, local, Endpoint{}, TcpState::kClose};
      if (listens) {
        // inet_csk_listen_start(): CLOSE -> LISTEN before listen() returns.
        state(sk, s, TcpState::kListen);
        Event l = call(EventType::kListen, sk, netns);
        l.pid = owner_of_port(local.port).pid;
        l.comm = owner_of_port(local.port).comm;
        l.local = local;
        apply(l);
      }
      live_[sk] = s;
    } else if (op < 44) {
      if (const std::uint64_t listener = any_live(TcpState::kListen)) {
        const Live& l = live_.at(listener);
        const std::uint64_t sk = next_sk_++;
        Live child{l.netns, Proto::kTcp, local_endpoint(l.local.port), remote_endpoint(),
                   TcpState::kListen};
        state(sk, child, TcpState::kSynRecv);
        state(sk, child, TcpState::kEstablished);
        live_[sk] = child;
      }
    } else if (op < 70) {
      if (const std::uint64_t sk = any_live(TcpState::kEstablished)) {
        Live& s = live_.at(sk);
        state(sk, s, TcpState::kFinWait1);
        state(sk, s, TcpState::kFinWait2);
        if (pick(10) == 0) {
          apply(base(EventType::kReset, sk, s.netns));
        }
        state(sk, s, TcpState::kClose, pick(4) != 0);
        tws_.push_back(s);
        if (pick(10) < 7) {
          destroy(sk);
        }
      }
    } else if (op < 75) {
      if (const std::uint64_t sk = any_live(TcpState::kEstablished)) {
        Live& s = live_.at(sk);
        state(sk, s, TcpState::kCloseWait);
        state(sk, s, TcpState::kLastAck);
        state(sk, s, TcpState::kClose);
        destroy(sk);
      }
    } else if (op < 82) {
      if (!live_.empty()) {
        auto it = live_.begin();
        std::advance(it, pick(static_cast<std::uint32_t>(live_.size())));
        destroy(it->first);
      }
    } else if (op < 88) {
      if (!tws_.empty()) {  // a new connection on a TIME_WAIT's 4-tuple
        const Live& tw = tws_[pick(static_cast<std::uint32_t>(tws_.size()))];
        connect_out(tw.local, tw.remote, tw.netns, pick(2) == 0);
      }
    } else {
      tracker_.expire(ts_);
      if (mirror_.expire) {
        mirror_.expire(ts_);
      }
    }
  }

  std::mt19937 rng_;
  SocketTracker tracker_;
  Mirror mirror_;
  std::map<std::uint64_t, NetnsPortConfig> configs_;
  std::map<std::uint64_t, Live> live_;
  std::vector<Live> tws_;        // 4-tuples that went into TIME_WAIT, for takeovers
  std::deque<Pending> pending_;  // snapshots taken, not merged yet
  Pending merging_;  // the snapshot being merged: the tracker reads it until the merge ends
  bool compact_merges_ = false;
  CompactSockets merging_compact_;  // its compact form, with compact_merges()
  int slices_disagreed_ = 0;
  int merges_ = 0;
  bool snapshots_carry_config_ = false;
  std::uint64_t ts_ = 1000 * kSec;
  std::uint64_t next_sk_ = 0xffff'8880'0000'0000ULL;
};

}  // namespace portlens
