// The socket table the diagnoser reasons over: every port owner a snapshot or the tracker knows
// of, plus the per-netns sysctls that shape port allocation. Plain values, no I/O.
//
// Fields that a source cannot see are std::optional: the sock_diag fallback, for example, has no
// reuse flags and no uid. Unknown stays unknown; the diagnoser says so instead of assuming.
#pragma once

#include <bitset>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/model/inet.hpp"

namespace portlens {

// Three-valued knowledge: a kernel rule evaluated over fields that may be unknown.
enum class Tristate : std::uint8_t { kNo, kYes, kUnknown };

constexpr Tristate to_tristate(bool value) { return value ? Tristate::kYes : Tristate::kNo; }
constexpr Tristate to_tristate(const std::optional<bool>& value) {
  return value ? to_tristate(*value) : Tristate::kUnknown;
}

// The options of the socket making a call, as the BPF capture reads them at syscall entry.
struct SocketOptions {
  bool reuseaddr = false;             // SO_REUSEADDR (sk_reuse)
  bool reuseport = false;             // SO_REUSEPORT
  bool v6only = false;                // IPV6_V6ONLY
  bool freebind = false;              // IP_FREEBIND
  bool transparent = false;           // IP_TRANSPARENT
  bool bind_address_no_port = false;  // IP_BIND_ADDRESS_NO_PORT
  int bound_dev_if = 0;               // SO_BINDTODEVICE ifindex, 0 = none

  bool operator==(const SocketOptions&) const = default;
};

// A TCP port's bind bucket (struct inet_bind_bucket) as far as inet_csk_get_port()'s fast paths
// read it: inet_csk_update_fastreuse() sets it on every successful bind()/listen() on the port, so
// it remembers the order the owners came in, which no owner's own fields tell.
struct TcpBindBucket {
  static constexpr int kFastreuseportAny = 1;     // FASTREUSEPORT_ANY
  static constexpr int kFastreuseportStrict = 2;  // FASTREUSEPORT_STRICT

  int fastreuse = -1;      // -1: made by connect(); 0; 1: every owner bound with SO_REUSEADDR
  int fastreuseport = -1;  // -1, 0, kFastreuseportAny or kFastreuseportStrict
  std::uint32_t fastuid = 0;
  // The socket that set fastreuseport last: its family, addresses and v6only (STRICT compares
  // them with a new socket's through ipv4_rcv_saddr_equal / ipv6_rcv_saddr_equal).
  Family fast_family = Family::kIpv4;
  IpAddress fast_rcv_saddr = IpAddress::any_v4();  // fast_rcv_saddr, IPv4
  IpAddress fast_v6_rcv_saddr = IpAddress::any_v6();
  bool fast_ipv6_only = false;
  int l3mdev = 0;  // the VRF the bucket belongs to; 0 outside VRFs

  bool operator==(const TcpBindBucket&) const = default;
};

struct SocketOwner {
  std::uint32_t pid = 0;
  std::string comm;
};

// One existing socket: a port owner as the kernel's bind tables would see it.
struct SocketEntry {
  Proto proto = Proto::kTcp;
  // nullopt for UDP. A bound-only TCP socket is CLOSE (or BOUND_INACTIVE from 6.8 iterators).
  std::optional<TcpState> state;
  // For TIME_WAIT entries: the timewait minisocket's tw_substate, TIME_WAIT or FIN_WAIT2.
  std::optional<TcpState> time_wait_substate;
  Endpoint local;
  std::optional<Endpoint> remote;  // nullopt when unconnected
  std::uint64_t netns = 0;         // network namespace inode
  std::optional<bool> reuseaddr;
  std::optional<bool> reuseport;
  std::optional<bool> v6only;
  std::optional<int> bound_dev_if;
  std::optional<std::uint32_t> uid;
  // True when the port came from bind() or listen() (inet_csk_get_port, the path that sets
  // SOCK_BINDPORT_LOCK for an explicit port): its bind bucket then has fastreuse >= 0 and
  // __inet_hash_connect never hands the port to connect(). False when connect() picked it.
  // Listening and bound-only sockets are always treated as explicit owners, whatever this says.
  bool explicit_port = false;
  std::uint64_t inode = 0;  // 0 for TIME_WAIT minisockets, which have no inode
  // The kernel address of the struct sock (or timewait minisocket): what events carry as
  // Event::sock_id, so the tracker can match events to snapshot entries. Never shown. 0: unknown.
  std::uint64_t sock_id = 0;
  std::optional<SocketOwner> owner;
  // TIME_WAIT only: what is left of the timer, and whether the connection carried TCP
  // timestamps (tw_ts_recent_stamp != 0), which tcp_twsk_unique requires for reuse.
  std::optional<std::chrono::milliseconds> time_wait_remaining;
  std::optional<bool> timestamps;
  // TCP: the port's bind bucket (icsk_bind_hash, or tw_tb for TIME_WAIT); every owner of the
  // port in one netns (outside VRFs) shares it. nullopt when the source cannot see it.
  std::optional<TcpBindBucket> bind_bucket;
  // AF_INET6 sockets: the IPv4 receive address (inet_rcv_saddr) the kernel keeps beside the IPv6
  // one: the mapped address, 0.0.0.0 for [::], 127.0.0.6 (LOOPBACK4_IPV6) for a specific IPv6
  // address. A dual-stack socket that connect()ed over IPv6 still covers it for IPv4 binds.
  std::optional<IpAddress> v4_rcv_saddr;
  // UDP: the 0-based position in the port's primary hash chain, which udp_lib_lport_inuse()
  // walks from the head, and that slot's socket count (every netns's sockets that hash there).
  std::optional<std::uint32_t> udp_chain_position;
  std::optional<std::uint32_t> udp_slot_count;
};

// An address configured in a network namespace.
struct LocalAddress {
  IpAddress address;
  std::uint8_t prefix_len = 32;
  // fib_add_ifaddr() makes the whole prefix of an address on a loopback device local
  // (127.0.0.1/8 on lo makes 127.0.0.2 bindable); elsewhere only the address itself.
  bool on_loopback_device = false;
};

// The per-netns sysctls that decide port allocation, with the kernel's defaults.
struct NetnsPortConfig {
  std::uint16_t port_range_lo = 32768;  // net.ipv4.ip_local_port_range
  std::uint16_t port_range_hi = 60999;
  std::bitset<65536> reserved_ports;                   // net.ipv4.ip_local_reserved_ports
  int tcp_tw_reuse = 2;                                // net.ipv4.tcp_tw_reuse: 0, 1, 2 (loopback)
  std::chrono::milliseconds tcp_tw_reuse_delay{1000};  // net.ipv4.tcp_tw_reuse_delay (6.14+)
  int ip_unprivileged_port_start = 1024;               // net.ipv4.ip_unprivileged_port_start
  bool ip_autobind_reuse = false;                      // net.ipv4.ip_autobind_reuse
  bool ip_nonlocal_bind = false;                       // net.ipv4.ip_nonlocal_bind
  bool ip6_nonlocal_bind = false;                      // net.ipv6.ip_nonlocal_bind
  // net.ipv4.tcp_max_tw_buckets: the TIME_WAITs the namespace may hold (inet_twsk_alloc(),
  // docs/kernel-rules.md 5.3). Its default depends on the hash table size: nullopt when unknown.
  std::optional<std::uint32_t> tcp_max_tw_buckets;
  // Not a setting but a reading taken with them: TcpExtTCPTimeWaitOverflow of /proc/net/netstat,
  // the TIME_WAITs the namespace refused since it was made. nullopt when not read.
  std::optional<std::uint64_t> tcp_time_wait_overflow;
  // net.core.somaxconn: listen() clamps its backlog to it (__sys_listen_socket()). nullopt when
  // not read.
  std::optional<std::uint32_t> somaxconn;
  // Readings: TcpExtListenOverflows and TcpExtListenDrops of /proc/net/netstat, the handshakes
  // the namespace dropped because an accept queue was full (overflows), and for any reason,
  // overflows included (drops), since it was made. nullopt when not read.
  std::optional<std::uint64_t> listen_overflows;
  std::optional<std::uint64_t> listen_drops;
  // nullopt when the addresses of the netns are not known.
  std::optional<std::vector<LocalAddress>> local_addresses;
  // Not a setting but the running kernel's UDP rule (docs/kernel-rules.md 3): whether the first
  // contender in the port's chain decides a bind (true: a sharing SO_REUSEPORT socket ends the
  // walk), or every contender must share (false: later 6.18 kernels). The kernel layer probes it
  // once in a private namespace; nullopt when it could not.
  std::optional<bool> udp_first_contender_decides = true;
};

// A TCP listener's queues as a snapshot saw them (docs/kernel-rules.md 12). The accept queue holds
// connections whose handshake completed and that accept() has not taken yet; the kernel drops a
// handshake that would take it past its limit (tcp_v4_syn_recv_sock(): sk_acceptq_is_full(),
// TcpExtListenOverflows).
struct ListenQueue {
  std::uint64_t sock_id = 0;  // as SocketEntry::sock_id; 0 from sock_diag
  std::uint64_t inode = 0;    // as SocketEntry::inode
  std::uint64_t netns = 0;
  Endpoint local;
  std::uint32_t length = 0;  // sk_ack_backlog (ss -ltn's Recv-Q)
  std::uint32_t limit = 0;   // sk_max_ack_backlog: min(listen()'s backlog, somaxconn) (Send-Q)
  // Requests waiting for the handshake's last ACK (icsk_accept_queue.qlen); the BPF iterator
  // reads it, sock_diag does not show it.
  std::optional<std::uint32_t> syn_queue;
};

// Every socket portlens knows of, across network namespaces. Each netns may carry its own
// config; a netns without one uses default_config (so a single-netns table just sets that).
struct SocketTable {
  std::vector<SocketEntry> sockets;
  // TCP listeners' queues, when the table comes from a snapshot (empty in the tracker's).
  std::vector<ListenQueue> listen_queues;
  std::map<std::uint64_t, NetnsPortConfig> netns_config;
  NetnsPortConfig default_config;

  [[nodiscard]] const NetnsPortConfig& config_for(std::uint64_t netns) const {
    const auto it = netns_config.find(netns);
    return it == netns_config.end() ? default_config : it->second;
  }
};

}  // namespace portlens
