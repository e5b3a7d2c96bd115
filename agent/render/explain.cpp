#include "agent/render/explain.hpp"

#include <array>

namespace portlens {
namespace {

struct Explanation {
  Cause cause;
  std::string_view summary;
  std::string_view text;
};

// The long form of each cause. Each text says what the kernel does (and where), shows a minimal
// way to reproduce it, and lists the fixes with what they cost.
constexpr std::array kExplanations = {
    Explanation{
        Cause::kTimeWait,
        "every blocker is a TIME_WAIT socket; SO_REUSEADDR on the new socket passes one only if "
        "the socket that left it had SO_REUSEADDR too",
        R"(What the kernel does
  A TCP connection closed by this side first stays in TIME_WAIT for 60 seconds
  (TCP_TIMEWAIT_LEN, fixed in the kernel) so that late segments of the old
  connection cannot be taken for a new one. The TIME_WAIT socket still owns its
  local port: inet_bind_conflict() counts it as an owner. The TIME_WAIT keeps
  the flags of the socket it replaced (tcp_time_wait()): a new bind() of that
  port fails with EADDRINUSE unless that socket and the new one both had
  SO_REUSEADDR, or both had SO_REUSEPORT (then the uids do not matter).
  Accepted connections take their flags from the listener, and most servers
  set SO_REUSEADDR, but not all do.

Typical case
  A server is restarted. The old process closed its connections first, and the
  new process binds its port without SO_REUSEADDR:
      old:  listen(0.0.0.0:8080), accept, close()   -> TIME_WAIT 127.0.0.1:8080
      new:  bind(0.0.0.0:8080)                      -> EADDRINUSE for up to 60 s
  If the old listener had no SO_REUSEADDR, its TIME_WAITs block even a new
  socket that sets it.

Fixes
  - If the TIME_WAITs kept SO_REUSEADDR (`portlens why PORT` shows their
    flags), set SO_REUSEADDR on the new socket before bind(). This is safe: it
    never lets two sockets listen on the same address (see port_in_use).
  - If they kept SO_REUSEPORT, set SO_REUSEPORT on the new socket.
  - Otherwise wait until the TIME_WAIT sockets expire (`portlens why PORT`
    shows when the last one does), or bind another address. Set SO_REUSEADDR
    in every instance of the server so that the next restart does not meet
    this.
  Do not shorten TIME_WAIT: the kernel has no setting for it, and
  tcp_tw_reuse affects only connect(), never bind().)"},
    Explanation{
        Cause::kMissingReuseaddr,
        "exact-address blockers that are not listening; SO_REUSEADDR on both sides would let "
        "it bind",
        R"(What the kernel does
  Sockets that are bound, connected or closing (not listening, not TIME_WAIT)
  own their local port. inet_bind_conflict() lets a new bind() share the
  address only when both the new socket and the existing one have
  SO_REUSEADDR (rule R1: sk_reuse on both, and the existing one not LISTEN).

Typical case
  The old instance of a server stopped listening, but its accepted
  connections are still ESTABLISHED or CLOSE_WAIT. The listener had no
  SO_REUSEADDR, and its children inherited that:
      old:  bind(0.0.0.0:8080) without SO_REUSEADDR, accept(), close(listener)
      new:  bind(0.0.0.0:8080)   -> EADDRINUSE while the old connections live

Fixes
  - Set SO_REUSEADDR on both sockets: the old one (so that its connections
    carry it) and the new one.
  - Or end the old connections: stop the old process, or let them finish.)"},
    Explanation{
        Cause::kWildcardConflict,
        "a blocker holds an overlapping but different address (0.0.0.0 vs a specific IPv4, [::] "
        "vs IPv4, ...)",
        R"(What the kernel does
  Addresses overlap when one of them is a wildcard that covers the other:
  0.0.0.0 covers every IPv4 address, [::] without IPV6_V6ONLY covers every
  IPv4 and IPv6 address, and [::] with IPV6_V6ONLY covers only IPv6.
  ::ffff:X behaves exactly like X. inet_bind_conflict() treats overlapping
  addresses like identical ones.
  The common advice "SO_REUSEADDR lets 0.0.0.0:P and 192.168.1.100:P coexist"
  holds on Linux only while neither socket listens and both set SO_REUSEADDR.
  If one of them listens, the overlapping bind() fails. If both are only
  bound, the first listen() succeeds and the second fails.

Typical case
      a:  bind(0.0.0.0:8080), listen()
      b:  bind(127.0.0.1:8080)              -> EADDRINUSE, even with SO_REUSEADDR
      c:  bind([::]:8080), dual-stack       -> EADDRINUSE (it covers 0.0.0.0)

Fixes
  - Bind both services to separate specific addresses, such as 127.0.0.1:P and
    10.0.0.5:P.
  - For IPv6 next to IPv4, set IPV6_V6ONLY on the [::] socket.
  - To run several listeners on one overlapping address, set SO_REUSEPORT on
    all of them, under the same uid.)"},
    Explanation{
        Cause::kPortInUse,
        "a live listener holds exactly that address and port; only SO_REUSEPORT on both (same "
        "uid) could share it",
        R"(What the kernel does
  A LISTEN socket owns its address and port. SO_REUSEADDR never lets a second
  socket listen there: rule R1 excludes LISTEN sockets. Only SO_REUSEPORT on
  both sockets, under the same uid, lets them share the port (rule R2), and
  the kernel then spreads incoming connections between them.

Typical case
  A second copy of a server, or another program, holds the port:
      nginx (pid 812): listen(0.0.0.0:80)
      you:             bind(0.0.0.0:80)     -> EADDRINUSE

Fixes
  - Stop the process that holds the port (portlens names it), or configure
    your service to use another port.
  - For deliberate sharing, such as a zero-downtime restart or several worker
    processes, set SO_REUSEPORT on every socket before bind(), all under one
    uid.)"},
    Explanation{Cause::kReuseportUidMismatch,
                "both sides set SO_REUSEPORT but the owners' uids differ",
                R"(What the kernel does
  SO_REUSEPORT lets sockets share a port only when they belong to the same
  user: inet_bind_conflict() compares sk_uid (rule R2). This stops another
  user from taking a share of a service's traffic. The one exception is a
  TIME_WAIT blocker, whose uid is not checked.

Typical case
      root:      setsockopt(SO_REUSEPORT), bind(0.0.0.0:8080), listen()
      www-data:  setsockopt(SO_REUSEPORT), bind(0.0.0.0:8080)   -> EADDRINUSE

Fixes
  - Run every process that shares the port as the same user.
  - Or create all the sockets in one process (for example the parent), and
    pass them to the workers by fork() or over a Unix socket (SCM_RIGHTS).)"},
    Explanation{
        Cause::kEphemeralExhausted,
        "no free port: bind(0)/listen autobind EADDRINUSE, connect() EADDRNOTAVAIL or UDP EAGAIN",
        R"(What the kernel does
  A connect() with no bound port searches net.ipv4.ip_local_port_range
  (default 32768-60999, per network namespace) for a port toward its
  destination (__inet_hash_connect()). A port is usable when it is not in
  ip_local_reserved_ports, no socket holds it through an explicit bind() or
  listen() (on any address), and no connection already uses the 4-tuple
  (source, port, destination, destination port). The search covers every
  port. When none is usable, connect() fails with EADDRNOTAVAIL.
  Exhaustion is per destination: the same local port can serve many
  destinations at once. TIME_WAIT sockets toward the destination hold their
  4-tuples, unless net.ipv4.tcp_tw_reuse lets connect() take them over:
    0  never
    1  once they are older than tcp_tw_reuse_delay (1 s by default)
    2  as 1, but only on loopback (the default)
  This applies only if the old connection carried TCP timestamps, and never
  in the FIN_WAIT2 substate.
  bind(addr, 0), and listen() on an unbound socket, pick a port outside any
  4-tuple and fail with EADDRINUSE when the range is used up. An unbound UDP
  socket's connect() or sendto() fails with EAGAIN.

Typical case
  A client opens and closes short connections to one backend, 10.0.0.7:5432.
  Each close leaves a TIME_WAIT for 60 s, so 28,232 ports last about 470
  connections per second toward that one destination.

Fixes, with what they cost
  - Reuse connections (pooling, keep-alive). This is the real fix.
  - Widen the range: sysctl net.ipv4.ip_local_port_range="15000 64000". It
    must not cover ports your services listen on.
  - Enable tcp_tw_reuse=1 (it needs TCP timestamps, on by default). It is safe
    for the connecting side.
  - Spread the load over more destinations (addresses or ports) or more
    source addresses. Bind the source address with IP_BIND_ADDRESS_NO_PORT,
    so that connect() can still share ports.
  - Do not bind(addr, 0) before connect() without IP_BIND_ADDRESS_NO_PORT: a
    port taken that way is never shared with other destinations.)"},
    Explanation{
        Cause::kFourTupleInUse,
        "connect() from an explicitly bound port toward a destination that already has that "
        "4-tuple",
        R"(What the kernel does
  A socket bound to a fixed port before connect() skips the port search.
  The kernel only checks that the 4-tuple (source address and port,
  destination address and port) is free (__inet_check_established()). If a
  live connection uses it, connect() fails with EADDRNOTAVAIL. A TIME_WAIT
  socket on the same 4-tuple is taken over when its connection carried TCP
  timestamps (tcp_twsk_unique(), checked on this kernel even with
  tcp_tw_reuse=0). Without timestamps, it blocks.

Typical case
      a:  bind(10.0.0.1:40000), connect(10.0.0.7:80)
      b:  SO_REUSEADDR, bind(10.0.0.1:40000), connect(10.0.0.7:80)  -> EADDRNOTAVAIL

Fixes
  - Do not bind client sockets to a fixed port. Let connect() pick one, or
    bind only the address, with IP_BIND_ADDRESS_NO_PORT.
  - If the source port must be fixed, connect to different destinations, or
    wait for the old connection to end.)"},
    Explanation{Cause::kAddressNotLocal, "bind() EADDRNOTAVAIL: the address is not on this host",
                R"(What the kernel does
  bind() to a specific address requires that the address is configured on an
  interface of the socket's network namespace (inet_addr_valid_or_nonlocal(),
  and for IPv6, ipv6_chk_addr()). The check is skipped with IP_FREEBIND,
  IP_TRANSPARENT (which needs CAP_NET_ADMIN), or the sysctls
  net.ipv4.ip_nonlocal_bind and net.ipv6.ip_nonlocal_bind. A whole prefix
  configured on a loopback device is local: 127.0.0.1/8 makes every 127.x
  address bindable.

Typical case
  A service configured to listen on 10.0.0.5 starts before that address is
  up (DHCP, keepalived, a VIP that moves):
      bind(10.0.0.5:443)   -> EADDRNOTAVAIL

Fixes
  - Start the service after the address exists (systemd:
    After=network-online.target).
  - Or set IP_FREEBIND on the socket (many servers have a "freebind" option),
    or set net.ipv4.ip_nonlocal_bind=1, so it can bind before the address
    arrives.
  - Check for typing mistakes and the right network namespace:
    `portlens check` takes --netns.)"},
    Explanation{Cause::kPrivilegedPort, "bind() EACCES below net.ipv4.ip_unprivileged_port_start",
                R"(What the kernel does
  Ports below net.ipv4.ip_unprivileged_port_start (1024 by default, per
  network namespace) need CAP_NET_BIND_SERVICE in the namespace's user
  namespace (inet_port_requires_bind_service()). Without it, bind() fails
  with EACCES.

Typical case
      uid 1000:  bind(0.0.0.0:80)    -> EACCES

Fixes
  - Grant only that capability: AmbientCapabilities=CAP_NET_BIND_SERVICE
    in a systemd unit, or setcap cap_net_bind_service+ep on the binary.
  - Or listen on a high port and redirect (a firewall rule or a proxy).
  - Or lower the limit in that namespace:
    sysctl net.ipv4.ip_unprivileged_port_start=80. Containers often do this.)"},
    Explanation{Cause::kUnknown, "portlens found no blocker; said plainly, never guessed",
                R"(What it means
  The kernel refused the call, but portlens could not find the socket or
  setting responsible. portlens reports this instead of guessing, because a
  wrong explanation costs more than none.

Common reasons
  - The blocker was gone before portlens looked, for example a TIME_WAIT
    socket killed early, or a socket closed just after the failure.
  - Limits portlens cannot see from outside the socket: a per-socket
    IP_LOCAL_PORT_RANGE, a VRF (l3mdev) scope, a BPF program attached to
    bind or connect (cgroup/bind4, cgroup/connect4), or an LSM policy
    (SELinux name_bind) that returned the error.
  - Only sock_diag was available (no BPF iterators), so the SO_REUSEADDR and
    SO_REUSEPORT flags of existing sockets were unknown.

What to do
  Run `portlens why PORT` to see every socket on the port now, and try again
  with `portlens trace --failures` running, so that the next failure is
  caught as it happens.)"},
};

}  // namespace

const std::vector<Cause>& all_causes() {
  static const std::vector<Cause> kCauses = [] {
    std::vector<Cause> v;
    v.reserve(kExplanations.size());
    for (const auto& e : kExplanations) {
      v.push_back(e.cause);
    }
    return v;
  }();
  return kCauses;
}

std::string_view cause_summary(Cause cause) {
  for (const auto& e : kExplanations) {
    if (e.cause == cause) {
      return e.summary;
    }
  }
  return {};
}

std::string explain(Cause cause) {
  for (const auto& e : kExplanations) {
    if (e.cause == cause) {
      return std::string(to_string(cause)) + ": " + std::string(e.summary) + "\n\n" +
             std::string(e.text) + "\n";
    }
  }
  return {};
}

std::string list_causes() {
  std::string out = "causes:\n";
  for (const auto& e : kExplanations) {
    out += "  " + std::string(to_string(e.cause));
    out.append(24 - std::min<std::size_t>(22, to_string(e.cause).size()), ' ');
    out += std::string(e.summary) + "\n";
  }
  return out;
}

}  // namespace portlens
