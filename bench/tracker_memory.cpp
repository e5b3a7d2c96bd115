// Section 3a: bytes per tracked socket in SocketTracker, from the allocator's own accounting
// (mallinfo2: bytes in use in the arena plus mmapped blocks, where big hash tables live), before
// and after the tracker learns N sockets. Full sockets come from a connect()'s events; TIME_WAIT
// from FIN_WAIT2->CLOSE (the marginal cost), from whole connections (with the bounded tombstones
// of the sockets they replace), and from a snapshot at bootstrap.
#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <iostream>
#include <span>

#include "agent/model/event.hpp"
#include "agent/tracker/tracker.hpp"
#include "bench/sections.hpp"

namespace portlens::bench {
namespace {

constexpr std::uint32_t kNetns = 4026532002U;

std::size_t heap_in_use() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

pl_sock_event state_event(std::uint64_t sk, std::uint64_t ts, std::uint8_t from, std::uint8_t to,
                          std::uint32_t i) {
  pl_sock_event e{};
  e.type = PL_EV_STATE;
  e.ts_ns = ts;
  e.sk = sk;
  e.netns = kNetns;
  e.sock_family = AF_INET;
  e.flags = PL_F_OPTS_VALID | PL_F_TS_RECENT;
  e.old_state = from;
  e.new_state = to;
  // 127.0.0.1:(1024 + i % 64000) -> 127.1.x.y:80, a distinct 4-tuple for each i
  e.saddr[0] = 127;
  e.saddr[3] = 1;
  e.sport = static_cast<std::uint16_t>(1024 + i % 64000);
  e.daddr[0] = 127;
  e.daddr[1] = 1;
  e.daddr[2] = static_cast<__u8>(i / 64000);
  e.daddr[3] = 1;
  e.dport = 80;
  return e;
}

// The connect() exit of state_event(..., i)'s socket.
pl_event connect_event(std::uint64_t sk, std::uint64_t ts, std::uint32_t i) {
  const pl_sock_event s = state_event(sk, ts, 0, 0, i);
  pl_event e{};
  e.type = PL_EV_CONNECT;
  e.ts_ns = ts;
  e.sk = sk;
  e.pid = 4000;
  e.netns = kNetns;
  e.fd = -1;
  e.sock_family = AF_INET;
  e.sock_type = SOCK_STREAM;
  e.protocol = IPPROTO_TCP;
  e.flags = PL_F_OPTS_VALID | PL_F_REQ_VALID;
  e.local.family = PL_AF_INET;
  std::memcpy(e.local.addr, s.saddr, 4);
  e.local.port = s.sport;
  e.req.family = PL_AF_INET;
  std::memcpy(e.req.addr, s.daddr, 4);
  e.req.port = s.dport;
  std::strncpy(e.comm, "client", sizeof e.comm - 1);
  return e;
}

template <class Record>
void apply(SocketTracker& tracker, const Record& raw) {
  const DecodeResult d = decode_event(std::as_bytes(std::span(&raw, 1)));
  if (d.event) {
    tracker.apply(*d.event);
  }
}

struct Measure {
  double bytes_per_socket = 0;
  std::size_t tracked = 0;
};

template <class Fill>
Measure measure(std::size_t n, Fill fill) {
  const std::size_t before = heap_in_use();
  SocketTracker tracker;
  fill(tracker, n);
  const std::size_t after = heap_in_use();
  const std::size_t tracked = tracker.socket_count() + tracker.time_wait_count();
  return Measure{static_cast<double>(after - before) / static_cast<double>(tracked), tracked};
}

}  // namespace

void tracker_memory_section(const Options& options, Report& report) {
  std::cout << "\n## 3a. memory per tracked socket (SocketTracker, mallinfo2 deltas)\n";
  const std::size_t n = options.smoke ? 2'000 : options.tracker_sockets;
  std::cout << "sizeof(SocketEntry) = " << sizeof(SocketEntry)
            << " bytes, sizeof(Endpoint) = " << sizeof(Endpoint) << ", N = " << with_commas(n)
            << "\n";

  // Connected client sockets, as their connect() shows them: CLOSE->SYN_SENT, ESTABLISHED, exit.
  const Measure full = measure(n, [](SocketTracker& t, std::size_t count) {
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::uint64_t sk = 0xffff'8880'0000'0000ULL + i * 2048ULL;
      const std::uint64_t ts = 1'000'000'000ULL + i * 1000ULL;
      pl_sock_event syn = state_event(sk, ts, 7, 2, i);
      syn.sport = 0;
      apply(t, syn);
      apply(t, state_event(sk, ts + 100, 2, 1, i));
      apply(t, connect_event(sk, ts + 200, i));
    }
  });
  // TIME_WAIT inferred from FIN_WAIT2->CLOSE of sockets the tracker never saw: TIME_WAIT alone.
  const Measure tw = measure(n, [](SocketTracker& t, std::size_t count) {
    for (std::uint32_t i = 0; i < count; ++i) {
      apply(t, state_event(0xffff'8880'0000'0000ULL + i * 2048ULL, 1'000'000'000ULL + i * 1000ULL,
                           5, 7, i));
    }
  });
  // Whole client connections ending in TIME_WAIT: the full socket's erasure leaves a tombstone
  // (at most TrackerLimits::max_tombstones, kept kTombstoneTtlNs).
  const Measure lifecycle = measure(n, [](SocketTracker& t, std::size_t count) {
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::uint64_t sk = 0xffff'8880'0000'0000ULL + i * 2048ULL;
      const std::uint64_t ts = 1'000'000'000ULL + i * 50'000ULL;  // 20k connections/s
      pl_sock_event syn = state_event(sk, ts, 7, 2, i);
      syn.sport = 0;
      apply(t, syn);
      apply(t, state_event(sk, ts + 100, 2, 1, i));
      apply(t, state_event(sk, ts + 200, 1, 4, i));
      apply(t, state_event(sk, ts + 300, 4, 5, i));
      apply(t, state_event(sk, ts + 400, 5, 7, i));
      pl_sock_event destroy = state_event(sk, ts + 500, 7, 7, i);
      destroy.type = PL_EV_DESTROY;
      apply(t, destroy);
    }
  });
  // TIME_WAIT learned from a snapshot at bootstrap (the input table freed before measuring).
  const Measure boot = measure(n, [](SocketTracker& t, std::size_t count) {
    SocketTable table;
    for (std::uint32_t i = 0; i < count; ++i) {
      SocketEntry s;
      s.netns = kNetns;
      s.state = TcpState::kTimeWait;
      s.time_wait_substate = TcpState::kTimeWait;
      s.local = Endpoint{IpAddress::v4(std::array<std::uint8_t, 4>{127, 0, 0, 1}),
                         static_cast<std::uint16_t>(1024 + i % 64000)};
      s.remote = Endpoint{IpAddress::v4(std::array<std::uint8_t, 4>{
                              127, 1, static_cast<std::uint8_t>(i / 64000), 1}),
                          80};
      s.time_wait_remaining = std::chrono::milliseconds(50'000);
      s.timestamps = true;
      s.sock_id = 0xffff'9990'0000'0000ULL + i * 512ULL;
      table.sockets.push_back(s);
    }
    t.bootstrap(kNetns, table, 1'000'000'000ULL);
  });

  const auto line = [](const char* what, const Measure& m) {
    std::cout << "  " << what << ": " << fixed(m.bytes_per_socket, 0) << " bytes/socket ("
              << with_commas(m.tracked) << " tracked)\n";
  };
  line("full sockets (connected, from events)", full);
  line("TIME_WAIT (from FIN_WAIT2->CLOSE alone)", tw);
  line("TIME_WAIT (whole connections: + tombstones of the closed sockets)", lifecycle);
  line("TIME_WAIT (from a snapshot at bootstrap)", boot);
  const auto met = [](double v) { return v < 256 ? Met::kYes : Met::kNo; };
  report.add(Row{"bytes per tracked full socket", fixed(full.bytes_per_socket, 0) + " B", "< 256 B",
                 met(full.bytes_per_socket)});
  report.add(Row{"bytes per tracked TIME_WAIT (events; bootstrap)",
                 fixed(tw.bytes_per_socket, 0) + " B; " + fixed(boot.bytes_per_socket, 0) + " B",
                 "< 256 B", met(std::max(tw.bytes_per_socket, boot.bytes_per_socket))});
}

}  // namespace portlens::bench
