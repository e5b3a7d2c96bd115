// A SocketTracker fed a random but plausible event stream over two network namespaces: outbound
// connections (some from explicitly bound ports, some MPTCP or UDP), listeners and their accepted
// children, active closes into TIME_WAIT (with and without timestamps, some after an RST),
// passive closes, takeovers of TIME_WAIT 4-tuples, expiry, and reconciles against snapshots that
// disagree with the events. Small address and port pools make destinations, ports and 4-tuples
// collide. For differential tests of what is computed from the tracker.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

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

  // Follows every operation applied to tracker(), e.g. with another tracker.
  struct Mirror {
    std::function<void(const Event&)> apply;
    std::function<void(std::uint64_t now_ns)> expire;
    std::function<void(std::uint64_t netns, const SocketTable&, std::uint64_t ts_ns,
                       bool bootstrap)>
        merge;
  };
  void mirror(Mirror m) { mirror_ = std::move(m); }

  SocketTracker& tracker() { return tracker_; }
  [[nodiscard]] std::uint64_t now() const { return ts_; }
  [[nodiscard]] const std::map<std::uint64_t, NetnsPortConfig>& configs() const { return configs_; }

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

  void snapshot_reconcile() {
    const std::uint64_t netns = random_netns();
    SocketTable snap = tracker_.table(netns, ts_);
    std::vector<SocketEntry> kept;
    for (SocketEntry& s : snap.sockets) {
      if (pick(10) == 0) {
        continue;  // the kernel no longer has it
      }
      s.owner.reset();  // a snapshot names no TIME_WAIT owner
      if (s.state == TcpState::kTimeWait && pick(3) == 0) {
        s.time_wait_remaining = std::chrono::milliseconds(pick(60000));
        s.time_wait_substate = pick(4) == 0 ? TcpState::kFinWait2 : TcpState::kTimeWait;
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
      tw.time_wait_remaining = std::chrono::milliseconds(pick(60000));
      if (pick(3) != 0) {
        tw.timestamps = pick(2) == 0;
      }
      if (pick(2) == 0) {
        tw.bound_dev_if = static_cast<int>(pick(2));
      }
      tw.sock_id = next_sk_++;
      kept.push_back(tw);
    }
    snap.sockets = std::move(kept);
    const bool bootstrap = pick(3) == 0;
    if (bootstrap) {
      tracker_.bootstrap(netns, snap, ts_);
    } else {
      tracker_.reconcile(netns, snap, ts_);
    }
    if (mirror_.merge) {
      mirror_.merge(netns, snap, ts_, bootstrap);
    }
    for (auto it = live_.begin(); it != live_.end();) {  // forget what the merge may have erased
      it = it->second.netns == netns && pick(2) == 0 ? live_.erase(it) : std::next(it);
    }
  }

  void step() {
    ts_ += pick(10) * (kSec / 50);
    const std::uint32_t op = pick(100);
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
      apply(b);
      Live s{netns, Proto::kTcp, local, Endpoint{}, TcpState::kClose};
      if (pick(2) == 0) {
        Event l = call(EventType::kListen, sk, netns);
        l.local = local;
        apply(l);
        s.state = TcpState::kListen;
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
    } else if (op < 96) {
      tracker_.expire(ts_);
      if (mirror_.expire) {
        mirror_.expire(ts_);
      }
    } else if (op < 98) {
      snapshot_reconcile();
    } else if (pick(4) == 0) {
      ts_ += 30 * kSec;
    }
  }

  std::mt19937 rng_;
  SocketTracker tracker_;
  Mirror mirror_;
  std::map<std::uint64_t, NetnsPortConfig> configs_;
  std::map<std::uint64_t, Live> live_;
  std::vector<Live> tws_;  // 4-tuples that went into TIME_WAIT, for takeovers
  std::uint64_t ts_ = 1000 * kSec;
  std::uint64_t next_sk_ = 0xffff'8880'0000'0000ULL;
};

}  // namespace portlens
