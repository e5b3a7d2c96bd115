#include "agent/diagnose/diagnoser.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <string>
#include <utility>

namespace portlens {
namespace {

// ---------------------------------------------------------------------------------------------
// Three-valued rule evaluation that remembers which unknown fields an undecided answer hangs on.

struct Judgement {
  Tristate value = Tristate::kYes;
  std::vector<std::string_view> unknown_fields;  // only when value is kUnknown
};

Judgement known(bool value) { return {to_tristate(value), {}}; }

Judgement field(const std::optional<bool>& value, std::string_view name) {
  if (value) {
    return known(*value);
  }
  return {Tristate::kUnknown, {name}};
}

void merge_unknowns(std::vector<std::string_view>& into, const Judgement& from) {
  for (const std::string_view f : from.unknown_fields) {
    if (std::find(into.begin(), into.end(), f) == into.end()) {
      into.push_back(f);
    }
  }
}

Judgement all_of(std::initializer_list<Judgement> terms) {
  Judgement result;
  for (const Judgement& t : terms) {
    if (t.value == Tristate::kNo) {
      return known(false);
    }
    if (t.value == Tristate::kUnknown) {
      result.value = Tristate::kUnknown;
      merge_unknowns(result.unknown_fields, t);
    }
  }
  return result;
}

Judgement any_of(std::initializer_list<Judgement> terms) {
  Judgement result{Tristate::kNo, {}};
  for (const Judgement& t : terms) {
    if (t.value == Tristate::kYes) {
      return known(true);
    }
    if (t.value == Tristate::kUnknown) {
      result.value = Tristate::kUnknown;
      merge_unknowns(result.unknown_fields, t);
    }
  }
  return result;
}

Judgement negate(Judgement j) {
  if (j.value != Tristate::kUnknown) {
    j.value = j.value == Tristate::kYes ? Tristate::kNo : Tristate::kYes;
  }
  return j;
}

// ---------------------------------------------------------------------------------------------
// The sockets the rules compare: the new socket S (from the call) and an owner E (from the table).

// Each protocol has its own bind table (docs/kernel-rules.md section 4); MPTCP binds through TCP's.
enum class PortTable : std::uint8_t { kTcp, kUdp, kUdpLite, kSctp };

PortTable table_of(Proto proto) {
  switch (proto) {
    case Proto::kTcp:
    case Proto::kMptcp:
      return PortTable::kTcp;
    case Proto::kUdp:
      return PortTable::kUdp;
    case Proto::kUdpLite:
      return PortTable::kUdpLite;
    case Proto::kSctp:
      return PortTable::kSctp;
  }
  return PortTable::kSctp;
}

bool is_udp_like(PortTable t) { return t == PortTable::kUdp || t == PortTable::kUdpLite; }

struct Subject {
  PortTable table = PortTable::kTcp;
  Family family = Family::kIpv4;  // the socket's own family: AF_INET6 may bind ::ffff:X
  std::uint64_t netns = 0;
  Endpoint local;
  SocketOptions options;
  std::uint32_t uid = 0;
  std::optional<std::uint64_t> inode;
  std::optional<std::uint64_t> sock_id;
  bool listening = false;  // inet_csk_listen_start() sets LISTEN before calling get_port()
};

Subject subject_of(const Call& call, bool listening) {
  return Subject{table_of(call.proto), call.family,  call.netns, call.local, call.options, call.uid,
                 call.inode,           call.sock_id, listening};
}

// The five address columns of the overlap table (docs/kernel-rules.md section 1).
enum class AddressKind : std::uint8_t { kAny4, kIpv4, kAny6Dual, kAny6Only, kIpv6 };

// ::ffff:X behaves as X, and binding a specific non-mapped IPv6 address sets sk_ipv6only
// (__inet6_bind), so only [::] depends on the IPV6_V6ONLY flag.
std::optional<AddressKind> kind_of(const IpAddress& address, Tristate v6only) {
  const IpAddress a = address.unmapped();
  if (a.is_v4()) {
    return a.is_any() ? AddressKind::kAny4 : AddressKind::kIpv4;
  }
  if (!a.is_any()) {
    return AddressKind::kIpv6;
  }
  if (v6only == Tristate::kUnknown) {
    return std::nullopt;
  }
  return v6only == Tristate::kYes ? AddressKind::kAny6Only : AddressKind::kAny6Dual;
}

bool same_address(const IpAddress& a, const IpAddress& b) { return a.unmapped() == b.unmapped(); }

// inet_rcv_saddr_equal(sk, sk2, true) -> ipv4_rcv_saddr_equal / ipv6_rcv_saddr_equal.
bool kinds_overlap(AddressKind s, AddressKind e, bool same) {
  enum : std::uint8_t { N, Y, S };  // no, yes, only the same address
  static constexpr std::array<std::array<std::uint8_t, 5>, 5> kOverlap = {{
      // E: any4 ipv4 dual only ipv6
      {Y, Y, Y, N, N},  // S: 0.0.0.0
      {Y, S, Y, N, N},  // S: IPv4 X or ::ffff:X
      {Y, Y, Y, Y, Y},  // S: [::] v6only=0
      {N, N, Y, Y, Y},  // S: [::] v6only=1
      {N, N, Y, Y, S},  // S: IPv6 Y
  }};
  const std::uint8_t cell = kOverlap[static_cast<std::size_t>(s)][static_cast<std::size_t>(e)];
  return cell == Y || (cell == S && same);
}

AddressKind subject_kind(const Subject& s) {
  return *kind_of(s.local.addr, to_tristate(s.options.v6only));
}

// LOOPBACK4_IPV6 (include/net/ipv6.h): the IPv4 receive address of an AF_INET6 socket with a
// specific IPv6 address.
IpAddress loopback4_ipv6() { return IpAddress::v4(std::array<std::uint8_t, 4>{127, 0, 0, 6}); }

// An AF_INET6 owner that is not v6only yet holds a specific IPv6 address got it from connect()
// over IPv6 (binding one sets sk_ipv6only, __inet6_bind), and tcp_v6_connect() and
// ip6_datagram_dst_update() set its inet_rcv_saddr to LOOPBACK4_IPV6. A new AF_INET socket is
// compared with that IPv4 address (inet_rcv_saddr_equal -> ipv4_rcv_saddr_equal, which skips
// only v6only owners): 0.0.0.0 overlaps it. A specific IPv4 address overlaps it only for UDP
// (udp_lib_lport_inuse compares every socket of the port); TCP binds a specific address through
// bhash2 (inet_use_bhash2_on_bind): only that address's bind2 bucket and the wildcard ones
// (inet_bhash2_addr_any_conflict) are checked, never the owner's IPv6 one.
// Only a source that read the socket's live receive addresses (v4_rcv_saddr, with the live
// sk_ipv6only beside it) shows this case; an entry from a bind() event carries the v6only the
// socket had before bind() set it, so without v4_rcv_saddr the bind rule stands (kind_of).
// nullopt: not this case.
std::optional<Judgement> connected_dual_stack_overlap(const Subject& s, const SocketEntry& e) {
  const IpAddress& a = e.local.addr;
  if (s.family != Family::kIpv4 || !a.is_v6() || a.is_any() || a.is_v4_mapped() ||
      !e.v4_rcv_saddr || e.v6only == true) {
    return std::nullopt;
  }
  bool overlap = true;
  if (!s.local.addr.is_any()) {
    overlap = is_udp_like(s.table) && s.local.addr == *e.v4_rcv_saddr;
  }
  if (!overlap) {
    return known(false);  // nor when v6only: the same answer either way
  }
  return field(e.v6only.has_value() ? std::optional<bool>(!*e.v6only) : std::nullopt,
               "IPV6_V6ONLY");
}

Judgement addresses_overlap(const Subject& s, const SocketEntry& e) {
  if (const auto j = connected_dual_stack_overlap(s, e)) {
    return *j;
  }
  const bool same = same_address(s.local.addr, e.local.addr);
  const auto e_kind = kind_of(e.local.addr, to_tristate(e.v6only));
  if (e_kind) {
    return known(kinds_overlap(subject_kind(s), *e_kind, same));
  }
  const bool if_dual = kinds_overlap(subject_kind(s), AddressKind::kAny6Dual, same);
  const bool if_only = kinds_overlap(subject_kind(s), AddressKind::kAny6Only, same);
  if (if_dual == if_only) {
    return known(if_dual);
  }
  return {Tristate::kUnknown, {"IPV6_V6ONLY"}};
}

// Rule D: !sk->sk_bound_dev_if || !sk2->sk_bound_dev_if || equal.
Judgement devices_compatible(const Subject& s, const SocketEntry& e) {
  if (s.options.bound_dev_if == 0) {
    return known(true);
  }
  if (!e.bound_dev_if) {
    return {Tristate::kUnknown, {"bound device"}};
  }
  return known(*e.bound_dev_if == 0 || *e.bound_dev_if == s.options.bound_dev_if);
}

Judgement in_state(const SocketEntry& e, TcpState state) {
  if (!e.state) {
    return {Tristate::kUnknown, {"TCP state"}};
  }
  return known(*e.state == state);
}

Judgement same_uid(const Subject& s, const SocketEntry& e) {
  if (!e.uid) {
    return {Tristate::kUnknown, {"uid"}};
  }
  return known(*e.uid == s.uid);
}

// R1 of inet_bind_conflict(): sk->sk_reuse && sk2->sk_reuse && sk2->sk_state != TCP_LISTEN.
Judgement tcp_reuseaddr_shares(const Subject& s, const SocketEntry& e) {
  return all_of({known(s.options.reuseaddr), field(e.reuseaddr, "SO_REUSEADDR"),
                 negate(in_state(e, TcpState::kListen))});
}

// R2 of inet_bind_conflict(): both sk_reuseport, and sk2 in TIME_WAIT or the same uid.
Judgement tcp_reuseport_shares(const Subject& s, const SocketEntry& e) {
  return all_of({known(s.options.reuseport), field(e.reuseport, "SO_REUSEPORT"),
                 any_of({in_state(e, TcpState::kTimeWait), same_uid(s, e)})});
}

// inet_bind_conflict() with relax = true, reuseport_ok = true, as inet_csk_get_port() calls it
// for an explicit port at bind() and again at listen().
Judgement tcp_bind_conflict(const Subject& s, const SocketEntry& e) {
  return all_of({devices_compatible(s, e), addresses_overlap(s, e),
                 negate(tcp_reuseaddr_shares(s, e)), negate(tcp_reuseport_shares(s, e))});
}

// udp_lib_lport_inuse(): the test an owner must pass to decide the walk over the port's sockets:
// same device rule, overlapping addresses, not SO_REUSEADDR on both. State plays no part.
Judgement udp_contends(const Subject& s, const SocketEntry& e) {
  const Judgement reuseaddr =
      all_of({known(s.options.reuseaddr), field(e.reuseaddr, "SO_REUSEADDR")});
  return all_of({devices_compatible(s, e), addresses_overlap(s, e), negate(reuseaddr)});
}

// udp_lib_lport_inuse(): a contending owner with SO_REUSEPORT on both and the same uid ends the
// walk with "port not in use" (S, a new socket, has no sk_reuseport_cb yet).
Judgement udp_reuseport_shares(const Subject& s, const SocketEntry& e) {
  return all_of({known(s.options.reuseport), field(e.reuseport, "SO_REUSEPORT"), same_uid(s, e)});
}

// Whether E would refuse S if it were the only owner: SO_REUSEADDR on both shares across uids,
// SO_REUSEPORT on both only with the same uid. With several owners the first contending one in
// the hash chain decides (udp_port_conflicts).
Judgement udp_bind_conflict(const Subject& s, const SocketEntry& e) {
  return all_of({udp_contends(s, e), negate(udp_reuseport_shares(s, e))});
}

Judgement bind_conflict(const Subject& s, const SocketEntry& e) {
  return is_udp_like(s.table) ? udp_bind_conflict(s, e) : tcp_bind_conflict(s, e);
}

// inet_csk_find_open_port(): the first scan calls inet_bind_conflict() with relax = false, so
// any overlapping, device-compatible owner takes the port whatever the flags. With
// ip_autobind_reuse a second scan relaxes it with reuseport_ok = false: an owner then only
// yields when R1 holds and R2 does not (R2 would put S in E's reuseport group).
Judgement tcp_autobind_conflict(const Subject& s, const SocketEntry& e, bool autobind_reuse) {
  if (!autobind_reuse) {
    return all_of({devices_compatible(s, e), addresses_overlap(s, e)});
  }
  return all_of({devices_compatible(s, e), addresses_overlap(s, e),
                 negate(all_of({tcp_reuseaddr_shares(s, e), negate(tcp_reuseport_shares(s, e))}))});
}

// Whether E is in the bind table S's port lookup walks. Request sockets (SYN_RECV
// minisockets) are not bind owners; the calling socket is never its own blocker.
bool may_own_port(const Subject& s, const SocketEntry& e) {
  if (e.netns != s.netns || table_of(e.proto) != s.table || e.local.port == 0) {
    return false;
  }
  if ((s.inode && e.inode != 0 && e.inode == *s.inode) ||
      (s.sock_id && e.sock_id != 0 && e.sock_id == *s.sock_id)) {
    return false;
  }
  return !(s.table == PortTable::kTcp &&
           (e.state == TcpState::kSynRecv || e.state == TcpState::kNewSynRecv));
}

// ---------------------------------------------------------------------------------------------
// Words for people.

std::string owner_text(const SocketEntry& e) {
  if (e.owner) {
    return "PID " + std::to_string(e.owner->pid) + " (" + e.owner->comm + ")";
  }
  if (e.inode != 0) {
    return "the owner of socket inode " + std::to_string(e.inode) + " (process unknown)";
  }
  return "its owner (process unknown)";
}

std::string address_text(const IpAddress& address, const std::optional<bool>& v6only) {
  if (address.is_v6() && address.is_any()) {
    if (!v6only) {
      return "[::]";
    }
    return *v6only ? "[::] (v6only)" : "[::] (dual-stack)";
  }
  return address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
}

std::string state_text(const SocketEntry& e) {
  if (table_of(e.proto) != PortTable::kTcp) {
    return e.remote ? "connected" : "bound";
  }
  if (!e.state) {
    return "state unknown";
  }
  if (*e.state == TcpState::kClose || *e.state == TcpState::kBoundInactive) {
    return "bound";
  }
  return state_name(static_cast<int>(*e.state));
}

std::string seconds_text(std::chrono::milliseconds ms) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(ms).count()) + " s";
}

std::string join(const std::vector<std::string_view>& parts, std::string_view separator) {
  std::string out;
  for (const std::string_view p : parts) {
    if (!out.empty()) {
      out += separator;
    }
    out += p;
  }
  return out;
}

int severity(Cause cause) {
  switch (cause) {
    case Cause::kPortInUse:
      return 0;
    case Cause::kReuseportUidMismatch:
      return 1;
    case Cause::kWildcardConflict:
      return 2;
    case Cause::kMissingReuseaddr:
      return 3;
    case Cause::kTimeWait:
      return 4;
    default:
      return 5;
  }
}

// ---------------------------------------------------------------------------------------------
// Port conflicts (bind() with a port, listen()).

// A TCP socket that is only bound: neither listening nor connected.
bool is_bound_only(const SocketEntry& e) {
  return table_of(e.proto) == PortTable::kTcp && !e.remote &&
         (e.state == TcpState::kClose || e.state == TcpState::kBoundInactive);
}

// docs/architecture.md: TIME_WAIT first, then different-address overlap, then LISTEN, then others.
// A SO_REUSEPORT pair split only by uid is named as such before LISTEN: that is its fix.
Cause classify(const Subject& s, const SocketEntry& e) {
  if (s.table == PortTable::kTcp && e.state == TcpState::kTimeWait) {
    return Cause::kTimeWait;
  }
  // An overlapping, different address is the story when a listener is involved on either side:
  // R1 (SO_REUSEADDR on both) never clears a LISTEN, so only other addresses or SO_REUSEPORT
  // help. When neither listens, SO_REUSEADDR on both clears it whatever the addresses: then
  // the blocker is an old connection or bound socket like any other (docs/kernel-rules.md
  // section 1's table; issue 3, question 7: an old instance's accepted connection).
  const bool r1_could_clear =
      s.table == PortTable::kTcp && e.state != TcpState::kListen && !s.listening;
  if (!same_address(s.local.addr, e.local.addr) && !r1_could_clear) {
    return Cause::kWildcardConflict;
  }
  if (s.options.reuseport && e.reuseport == true && e.uid && *e.uid != s.uid) {
    return Cause::kReuseportUidMismatch;
  }
  if (s.table == PortTable::kTcp) {
    return e.state == TcpState::kListen ? Cause::kPortInUse : Cause::kMissingReuseaddr;
  }
  // An unconnected UDP socket receives everything sent to its address: UDP's listener.
  return e.remote ? Cause::kMissingReuseaddr : Cause::kPortInUse;
}

std::string reuseaddr_gap(const Subject& s, const SocketEntry& e) {
  const bool here = !s.options.reuseaddr;
  if (!e.reuseaddr) {
    return here ? "SO_REUSEADDR missing here, unknown on it" : "its SO_REUSEADDR unknown";
  }
  if (here && !*e.reuseaddr) {
    return "SO_REUSEADDR on neither";
  }
  return here ? "SO_REUSEADDR missing here" : "SO_REUSEADDR missing on it";
}

std::string why_blocks(const Subject& s, const SocketEntry& e, Cause cause) {
  switch (cause) {
    case Cause::kTimeWait: {
      std::string why = "TIME_WAIT";
      if (e.time_wait_substate == TcpState::kFinWait2) {
        why += " (FIN_WAIT2 substate)";
      }
      why += e.time_wait_remaining ? ", expires in " + seconds_text(*e.time_wait_remaining)
                                   : ", expiry unknown";
      if (s.options.reuseaddr && e.reuseaddr == false) {
        why += ", kept no SO_REUSEADDR";
      }
      return why;
    }
    case Cause::kWildcardConflict:
      return state_text(e) + " on " + address_text(e.local.addr, e.v6only) + ", overlaps " +
             address_text(s.local.addr, s.options.v6only);
    case Cause::kReuseportUidMismatch:
      return "SO_REUSEPORT on both, but uid " + std::to_string(*e.uid) + " vs " +
             std::to_string(s.uid);
    case Cause::kPortInUse:
      return state_text(e) + " on the same address";
    case Cause::kMissingReuseaddr:
      // Also a different, overlapping address when neither side listens (classify).
      if (!same_address(s.local.addr, e.local.addr)) {
        return state_text(e) + " on " + address_text(e.local.addr, e.v6only) + ", overlaps " +
               address_text(s.local.addr, s.options.v6only) + ", " + reuseaddr_gap(s, e);
      }
      return state_text(e) + " on the same address, " + reuseaddr_gap(s, e);
    default:
      return {};
  }
}

Blocker make_blocker(const SocketEntry& e, Cause cause, std::string why, const Judgement& j) {
  Blocker b{e, cause, std::move(why), j.value == Tristate::kYes};
  if (!b.definite) {
    b.why += "; may not block: " + join(j.unknown_fields, ", ") + " unknown";
  }
  return b;
}

void rank(std::vector<Blocker>& blockers) {
  std::stable_sort(blockers.begin(), blockers.end(), [](const Blocker& a, const Blocker& b) {
    if (a.definite != b.definite) {
      return a.definite;
    }
    return severity(a.cause) < severity(b.cause);
  });
}

// What udp_lib_lport_inuse2() sees when udp_lib_get_port() looks up the hash2 slots instead of
// the port's slot: S's address's slot and the wildcard one (ipv4_portaddr_hash and
// ipv6_portaddr_hash hash 0.0.0.0, [::] and ::ffff:0.0.0.0 alike, and X like ::ffff:X).
bool in_hash2_view(const Subject& s, const SocketEntry& e) {
  const IpAddress a = e.local.addr.unmapped();
  return a.is_any() || a == s.local.addr.unmapped();
}

// udp_lib_get_port() -> udp_lib_lport_inuse(): the port's sockets are walked in hash chain order
// and the FIRST contending one decides: the port is free if it shares through SO_REUSEPORT (same
// uid), in use otherwise; later sockets are never looked at. Later 6.18 kernels look at every
// contender instead, each of which must share (NetnsPortConfig::udp_first_contender_decides). With
// the chain positions from the snapshot, that walk is replayed; without them, an answer that
// depends on the order is left undecided. With more than 10 sockets in the port's slot the kernel
// may walk the hash2 slots instead (udp_lib_lport_inuse2, first contender per slot, S's slot then
// the wildcard one), in an order the snapshot does not record: then only what holds in any order is
// definite.
std::vector<Blocker> udp_port_conflicts(const Subject& s, const SocketTable& table) {
  struct Contender {
    const SocketEntry* e;
    Judgement contends;
    Judgement shares;
  };
  std::vector<Contender> contenders;
  bool ordered = true;
  std::uint32_t slot_count = 0;
  for (const SocketEntry& e : table.sockets) {
    if (!may_own_port(s, e) || e.local.port != s.local.port) {
      continue;
    }
    slot_count = std::max(slot_count, e.udp_slot_count.value_or(0));
    Judgement contends = udp_contends(s, e);
    if (contends.value == Tristate::kNo) {
      continue;
    }
    contenders.push_back(Contender{&e, std::move(contends), udp_reuseport_shares(s, e)});
    ordered = ordered && e.udp_chain_position.has_value();
  }
  constexpr std::uint32_t kPrimaryScanMax = 10;  // udp_lib_get_port(): hslot->count > 10
  const bool hash2_possible = slot_count > kPrimaryScanMax;
  // The chain order matters only where the first contender decides; where every contender must
  // share, each one that does not blocks, whatever its place.
  const std::optional<bool> first_decides = table.config_for(s.netns).udp_first_contender_decides;
  ordered = ordered && !hash2_possible && first_decides == true;

  std::vector<Blocker> blockers;
  const auto add = [&](const Contender& c, const Judgement& j) {
    const Cause cause = classify(s, *c.e);
    blockers.push_back(make_blocker(*c.e, cause, why_blocks(s, *c.e, cause), j));
  };
  if (ordered) {
    std::stable_sort(contenders.begin(), contenders.end(), [](const auto& a, const auto& b) {
      return *a.e->udp_chain_position < *b.e->udp_chain_position;
    });
    Judgement reached = known(true);  // whether the walk gets as far as this socket
    for (const Contender& c : contenders) {
      if (c.shares.value != Tristate::kYes) {
        add(c, all_of({reached, c.contends, negate(c.shares)}));
      }
      if (c.contends.value == Tristate::kYes) {
        break;  // it decides, whichever way
      }
      reached = all_of({reached, negate(c.contends)});
    }
  } else {
    for (const Contender& c : contenders) {
      if (c.shares.value == Tristate::kYes) {
        continue;
      }
      Judgement j = all_of({c.contends, negate(c.shares)});
      const bool another_may_share = std::any_of(
          contenders.begin(), contenders.end(),
          [&](const Contender& d) { return &d != &c && d.shares.value != Tristate::kNo; });
      if (another_may_share && first_decides != false) {
        j = all_of(
            {j, Judgement{Tristate::kUnknown,
                          {first_decides.has_value() ? "the UDP hash chain order"
                                                     : "the kernel's UDP rule (first contender or "
                                                       "every contender)"}}});
      }
      if (hash2_possible && !in_hash2_view(s, *c.e)) {
        j = all_of({j, Judgement{Tristate::kUnknown,
                                 {"the UDP lookup (over 10 sockets share the port's hash slot)"}}});
      }
      add(c, j);
    }
  }
  rank(blockers);
  return blockers;
}

std::vector<Blocker> port_conflicts(const Subject& s, const SocketTable& table) {
  if (is_udp_like(s.table)) {
    return udp_port_conflicts(s, table);
  }
  std::vector<Blocker> blockers;
  for (const SocketEntry& e : table.sockets) {
    if (!may_own_port(s, e) || e.local.port != s.local.port) {
      continue;
    }
    const Judgement j = bind_conflict(s, e);
    if (j.value == Tristate::kNo) {
      continue;
    }
    const Cause cause = classify(s, e);
    blockers.push_back(make_blocker(e, cause, why_blocks(s, e, cause), j));
  }
  rank(blockers);
  return blockers;
}

std::string wait_text(const std::vector<Blocker>& blockers) {
  std::optional<std::chrono::milliseconds> longest;
  for (const Blocker& b : blockers) {
    if (b.cause == Cause::kTimeWait && b.socket.time_wait_remaining) {
      longest =
          std::max(longest.value_or(std::chrono::milliseconds{0}), *b.socket.time_wait_remaining);
    }
  }
  return longest ? "wait " + seconds_text(*longest) + " for TIME_WAIT to expire"
                 : "wait up to 60 s for TIME_WAIT to expire";
}

std::string conflict_hint(const Subject& s, const std::vector<Blocker>& blockers) {
  const Blocker& first = blockers.front();
  const SocketEntry& e = first.socket;
  const bool udp = is_udp_like(s.table);
  switch (first.cause) {
    case Cause::kPortInUse:
      return udp ? "stop " + owner_text(e) +
                       " or set SO_REUSEADDR (or SO_REUSEPORT, same uid) on both sockets"
                 : "stop " + owner_text(e) + " or set SO_REUSEPORT on both sockets (same uid)";
    case Cause::kReuseportUidMismatch:
      return "run both under one uid: " + owner_text(e) + " runs as uid " + std::to_string(*e.uid) +
             ", this socket as uid " + std::to_string(s.uid);
    case Cause::kWildcardConflict: {
      const auto e_kind = kind_of(e.local.addr, to_tristate(e.v6only));
      const AddressKind s_kind = subject_kind(s);
      const bool s_ipv4 = s_kind == AddressKind::kAny4 || s_kind == AddressKind::kIpv4;
      const bool e_ipv4 = e_kind == AddressKind::kAny4 || e_kind == AddressKind::kIpv4;
      if (e_kind == AddressKind::kAny6Dual && s_ipv4) {
        return "set IPV6_V6ONLY on the [::] socket of " + owner_text(e) +
               " so it stops covering IPv4, or bind a non-overlapping address";
      }
      if (s_kind == AddressKind::kAny6Dual && e_ipv4) {
        return "set IPV6_V6ONLY on this socket so [::] stops covering IPv4, or stop " +
               owner_text(e);
      }
      if (udp) {
        return "set SO_REUSEADDR (or SO_REUSEPORT, same uid) on both sockets, or bind "
               "addresses that do not overlap";
      }
      if (s.listening || e.state == TcpState::kListen) {
        return "overlapping addresses cannot both listen: set SO_REUSEPORT on both sockets "
               "(same uid), or stop " +
               owner_text(e);
      }
      return "set SO_REUSEADDR on both sockets: overlapping addresses then share the port while "
             "at most one of them listens (or SO_REUSEPORT on both, same uid)";
    }
    case Cause::kMissingReuseaddr: {
      const bool others_have_it =
          std::all_of(blockers.begin(), blockers.end(), [](const Blocker& b) {
            return b.cause != Cause::kMissingReuseaddr || b.socket.reuseaddr == true;
          });
      if (!s.options.reuseaddr && others_have_it) {
        return "set SO_REUSEADDR before bind()";
      }
      // R1 needs it on both; a bound socket sharing this way may not listen once this one does.
      return std::string("set SO_REUSEADDR on ") +
             (s.options.reuseaddr ? "" : "this socket and on ") + "the socket of " + owner_text(e) +
             (is_bound_only(e) ? " (of sockets sharing a port this way, only one can listen)" : "");
    }
    case Cause::kTimeWait:
      // A TIME_WAIT keeps its socket's sk_reuse (tcp_time_wait), which R1 reads.
      if (e.reuseaddr == false) {
        return "these TIME_WAIT sockets kept no SO_REUSEADDR from their socket, so SO_REUSEADDR "
               "here does not pass them: " +
               wait_text(blockers);
      }
      if (!s.options.reuseaddr && e.reuseaddr == true) {
        return "set SO_REUSEADDR before bind() (or " + wait_text(blockers) + ")";
      }
      return wait_text(blockers) + " (their SO_REUSEADDR is unknown)";
    default:
      return {};
  }
}

std::string call_text(const Call& call) {
  return std::string(to_string(call.proto)) + " " + call.local.to_string();
}

Diagnosis unknown_diagnosis(std::string hint) {
  Diagnosis d;
  d.cause = Cause::kUnknown;
  d.hint = std::move(hint);
  return d;
}

Diagnosis conflict_diagnosis(const Call& call, const SocketTable& table, bool listening) {
  const Subject s = subject_of(call, listening);
  if (s.table == PortTable::kSctp) {
    return unknown_diagnosis("portlens does not model SCTP's port rules");
  }
  Diagnosis d;
  d.blockers = port_conflicts(s, table);
  if (d.blockers.empty()) {
    return unknown_diagnosis("no socket portlens knows of explains EADDRINUSE on " +
                             call_text(call) +
                             ": its holder may be gone already, or outside portlens's view");
  }
  d.cause = d.blockers.front().cause;
  d.hint = conflict_hint(s, d.blockers);
  return d;
}

// ---------------------------------------------------------------------------------------------
// Ephemeral exhaustion.

std::string range_text(const NetnsPortConfig& config) {
  return std::to_string(config.port_range_lo) + "-" + std::to_string(config.port_range_hi);
}

std::vector<Blocker> holder_blockers(const EphemeralAccount& account, const std::string& scope) {
  std::vector<Blocker> blockers;
  for (const PortHolder& h : account.holders) {
    std::string why = (h.time_wait ? "TIME_WAIT holds " : "holds ") + std::to_string(h.ports) +
                      " of " + std::to_string(account.capacity) + " ports" + scope;
    blockers.push_back(Blocker{h.example, Cause::kEphemeralExhausted, std::move(why), true});
  }
  return blockers;
}

// When bind()/listen() owners and reserved ports leave connect() nothing at all, they are
// what holds the range: name them.
std::vector<Blocker> explicit_owner_blockers(std::uint64_t netns, const SocketTable& table) {
  const NetnsPortConfig& config = table.config_for(netns);
  std::vector<bool> seen(65536);
  std::vector<HeldPort> held;
  for (const SocketEntry& e : table.sockets) {
    const std::uint16_t port = e.local.port;
    if (e.netns == netns && table_of(e.proto) == PortTable::kTcp && holds_port_explicitly(e) &&
        port >= config.port_range_lo && port <= config.port_range_hi &&
        !config.reserved_ports.test(port) && !seen[port]) {
      seen[port] = true;
      held.push_back(HeldPort{&e, e.state == TcpState::kTimeWait});
    }
  }
  std::vector<Blocker> blockers;
  for (const PortHolder& h : rank_port_holders(held)) {
    blockers.push_back(Blocker{h.example, Cause::kEphemeralExhausted,
                               "bind()/listen() hold " + std::to_string(h.ports) +
                                   " ports of the range, closed to connect()",
                               true});
  }
  return blockers;
}

std::string percent_text(std::uint32_t part, std::uint32_t whole) {
  return std::to_string(whole == 0 ? 0 : (100ULL * part) / whole) + "%";
}

bool tw_reuse_blocked_by_sysctl(const NetnsPortConfig& config, const Destination& d) {
  return config.tcp_tw_reuse == 0 ||
         (config.tcp_tw_reuse == 2 && !d.source.is_loopback() && !d.remote.addr.is_loopback());
}

// Why tcp_tw_reuse reuses none of the TIME_WAITs toward a destination, when it is on: said
// from what the TIME_WAITs themselves show (tcp_twsk_unique()'s conditions, one by one).
std::string tw_reuse_obstacles(const SocketTable& table, const Destination& d,
                               const NetnsPortConfig& config) {
  std::uint32_t young = 0;
  std::uint32_t no_timestamps = 0;
  std::uint32_t fin_wait2 = 0;
  std::optional<std::chrono::milliseconds> first_ready;
  for (const SocketEntry& e : table.sockets) {
    if (e.netns != d.netns || e.state != TcpState::kTimeWait || !e.remote ||
        !same_address(e.remote->addr, d.remote.addr) || e.remote->port != d.remote.port) {
      continue;
    }
    if (e.time_wait_substate == TcpState::kFinWait2) {
      ++fin_wait2;
    } else if (e.timestamps == false) {
      ++no_timestamps;
    } else if (e.time_wait_remaining) {
      const auto age = kTimeWaitLength - *e.time_wait_remaining;
      if (age <= config.tcp_tw_reuse_delay) {
        ++young;
        const auto wait = config.tcp_tw_reuse_delay - age;
        first_ready = first_ready ? std::min(*first_ready, wait) : wait;
      }
    }
  }
  std::vector<std::string> reasons;
  if (young > 0) {
    reasons.push_back(std::to_string(young) + " are younger than tcp_tw_reuse_delay (" +
                      std::to_string(config.tcp_tw_reuse_delay.count()) +
                      " ms): the first becomes reusable in " + seconds_text(*first_ready));
  }
  if (no_timestamps > 0) {
    reasons.push_back(std::to_string(no_timestamps) +
                      " carry no TCP timestamps, which reuse needs: enable "
                      "net.ipv4.tcp_timestamps on both ends");
  }
  if (fin_wait2 > 0) {
    reasons.push_back(std::to_string(fin_wait2) +
                      " are in the FIN_WAIT2 substate, which is never reused");
  }
  if (reasons.empty()) {
    return "tcp_tw_reuse is on, but none of these TIME_WAITs is reusable yet";
  }
  std::string out = "tcp_tw_reuse is on, but of these TIME_WAITs ";
  for (std::size_t i = 0; i < reasons.size(); ++i) {
    out += (i == 0 ? "" : ", ") + reasons[i];
  }
  return out;
}

std::string connect_exhaustion_hint(const EphemeralAccount& a, const NetnsPortConfig& config,
                                    const SocketTable& table) {
  const Destination& d = *a.destination;
  std::vector<std::string> parts;
  if (a.time_wait > 0 && a.time_wait * 2 >= a.in_use) {
    const std::string share =
        " (TIME_WAIT holds " + percent_text(a.time_wait, a.in_use) + " of the ports in use)";
    if (tw_reuse_blocked_by_sysctl(config, d)) {
      parts.push_back("enable net.ipv4.tcp_tw_reuse=1" + share);
    } else {
      parts.push_back(tw_reuse_obstacles(table, d, config) + share);
    }
  }
  if (a.explicit_owned * 10 >= a.range_size && a.explicit_owned > 0) {
    parts.push_back("bind before connect() with IP_BIND_ADDRESS_NO_PORT (bind()/listen() hold " +
                    std::to_string(a.explicit_owned) + " ports of the range)");
  }
  parts.push_back("widen net.ipv4.ip_local_port_range (now " + range_text(config) +
                  ") or add destination addresses");
  std::string hint = "toward " + d.remote.to_string() + ": ";
  for (std::size_t i = 0; i < parts.size(); ++i) {
    hint += (i == 0 ? "" : "; ") + parts[i];
  }
  return hint;
}

std::string autobind_hint(const Call& call, const EphemeralAccount& a,
                          const NetnsPortConfig& config) {
  std::string hint = "widen net.ipv4.ip_local_port_range (now " + range_text(config) + ")";
  if (a.reserved * 10 >= a.range_size && a.reserved > 0) {
    hint +=
        " or release some of the " + std::to_string(a.reserved) + " ip_local_reserved_ports in it";
  }
  if (call.syscall == Syscall::kBind && table_of(call.proto) == PortTable::kTcp) {
    hint += "; if this socket binds only to connect(), set IP_BIND_ADDRESS_NO_PORT";
  }
  return hint;
}

Diagnosis autobind_diagnosis(const Call& call, const SocketTable& table) {
  const NetnsPortConfig& config = table.config_for(call.netns);
  EphemeralAccount account = account_autobind(call, table);
  Diagnosis d;
  if (account.available > 0) {
    d.hint = "portlens counts " + std::to_string(account.available) + " free ports in " +
             range_text(config) +
             " for this socket and cannot explain the exhaustion (a narrower "
             "IP_LOCAL_PORT_RANGE on the socket, or sockets outside portlens's view)";
  } else {
    d.cause = Cause::kEphemeralExhausted;
    d.blockers = holder_blockers(account, " of the range");
    d.hint = autobind_hint(call, account, config);
  }
  d.ephemeral = std::move(account);
  return d;
}

Diagnosis connect_exhaustion_diagnosis(const Call& call, const SocketTable& table) {
  const NetnsPortConfig& config = table.config_for(call.netns);
  const Endpoint remote{call.remote->addr.unmapped(), call.remote->port};
  // An unbound socket's source address is chosen by routing and reset when connect() fails,
  // so it may be unknown: then take the source toward this destination with the fewest ports.
  std::vector<IpAddress> sources;
  if (!call.local.addr.is_any()) {
    sources.push_back(call.local.addr.unmapped());
  } else {
    for (const SocketEntry& e : table.sockets) {
      if (e.netns == call.netns && occupies_four_tuple(e) && e.remote->port == remote.port &&
          e.remote->addr.unmapped() == remote.addr) {
        sources.push_back(e.local.addr.unmapped());
      }
    }
    std::sort(sources.begin(), sources.end());
    sources.erase(std::unique(sources.begin(), sources.end()), sources.end());
    if (sources.empty()) {
      sources.push_back(call.local.addr.unmapped());
    }
  }
  std::optional<EphemeralAccount> tightest;
  for (const IpAddress& source : sources) {
    EphemeralAccount a = account_destination(table, Destination{call.netns, source, remote});
    if (!tightest || a.available < tightest->available) {
      tightest = std::move(a);
    }
  }
  Diagnosis d;
  if (tightest->available > 0) {
    d.hint = "portlens counts " + std::to_string(tightest->available) + " usable ports toward " +
             remote.to_string() +
             " and cannot explain EADDRNOTAVAIL (a narrower IP_LOCAL_PORT_RANGE on the socket, "
             "or connections outside portlens's view)";
  } else {
    d.cause = Cause::kEphemeralExhausted;
    d.blockers = holder_blockers(*tightest, " toward " + remote.to_string());
    if (d.blockers.empty()) {
      d.blockers = explicit_owner_blockers(call.netns, table);
    }
    d.hint = connect_exhaustion_hint(*tightest, config, table);
  }
  d.ephemeral = std::move(tightest);
  return d;
}

// ---------------------------------------------------------------------------------------------
// connect() from an explicitly bound port: only the 4-tuple check runs (__inet_hash_connect
// with a port calls check_established(..., NULL)).

Diagnosis four_tuple_diagnosis(const Call& call, const SocketTable& table) {
  const NetnsPortConfig& config = table.config_for(call.netns);
  const bool source_known = !call.local.addr.is_any();
  Diagnosis d;
  for (const SocketEntry& e : table.sockets) {
    if (e.netns != call.netns || !occupies_four_tuple(e) || e.local.port != call.local.port ||
        e.remote->port != call.remote->port || !same_address(e.remote->addr, call.remote->addr) ||
        (source_known && !same_address(e.local.addr, call.local.addr))) {
      continue;
    }
    if ((call.inode && e.inode == *call.inode) ||
        (call.sock_id && e.sock_id != 0 && e.sock_id == *call.sock_id)) {
      continue;
    }
    Judgement j = known(true);
    std::string why;
    if (e.state == TcpState::kTimeWait) {
      // tcp_twsk_unique() with twp == NULL: a TIME_WAIT with timestamps is taken over.
      const Tristate reusable = time_wait_reusable_by_connect(e, config, true);
      if (reusable == Tristate::kYes) {
        continue;
      }
      j = reusable == Tristate::kNo ? known(true)
                                    : Judgement{Tristate::kUnknown, {"TCP timestamps"}};
      why = "TIME_WAIT on the same 4-tuple";
      why += e.timestamps == false ? " without TCP timestamps" : "";
      if (e.time_wait_remaining) {
        why += ", expires in " + seconds_text(*e.time_wait_remaining);
      }
    } else {
      why = state_text(e) + " on the same 4-tuple";
    }
    if (!source_known) {
      j = all_of({j, Judgement{Tristate::kUnknown, {"source address"}}});
    }
    d.blockers.push_back(make_blocker(e, Cause::kFourTupleInUse, std::move(why), j));
  }
  rank(d.blockers);
  if (d.blockers.empty()) {
    return unknown_diagnosis("no connection portlens knows of holds " + call.local.to_string() +
                             " -> " + call.remote->to_string() +
                             ", so it cannot explain this EADDRNOTAVAIL");
  }
  const SocketEntry& e = d.blockers.front().socket;
  d.cause = Cause::kFourTupleInUse;
  d.hint = "let connect() pick the port (or bind with IP_BIND_ADDRESS_NO_PORT): port " +
           std::to_string(call.local.port) + " already connects to " + call.remote->to_string() +
           (e.state == TcpState::kTimeWait ? " (TIME_WAIT)" : " (" + owner_text(e) + ")");
  return d;
}

// ---------------------------------------------------------------------------------------------
// bind() address and privilege checks.

bool prefix_contains(const IpAddress& prefix, unsigned length, const IpAddress& address) {
  const auto& p = prefix.bytes();
  const auto& a = address.bytes();
  for (unsigned bit = 0; bit < length; ++bit) {
    const unsigned mask = 0x80U >> (bit % 8);
    if ((p[bit / 8] & mask) != (a[bit / 8] & mask)) {
      return false;
    }
  }
  return true;
}

bool host_bits_all_ones(const IpAddress& address, unsigned length) {
  const auto& a = address.bytes();
  for (unsigned bit = length; bit < 32; ++bit) {
    if ((a[bit / 8] & (0x80U >> (bit % 8))) == 0) {
      return false;
    }
  }
  return true;
}

// inet_addr_valid_or_nonlocal() / ipv6_chk_addr(): the wildcard, multicast and broadcast
// addresses are always accepted, otherwise the address must be local (RTN_LOCAL).
Tristate address_is_local(const IpAddress& address, const NetnsPortConfig& config) {
  const IpAddress a = address.unmapped();
  if (a.is_any()) {
    return Tristate::kYes;
  }
  const auto& b = a.bytes();
  if (a.is_v4() &&
      ((b[0] & 0xf0U) == 0xe0U || (b[0] == 0xff && b[1] == 0xff && b[2] == 0xff && b[3] == 0xff))) {
    return Tristate::kYes;
  }
  if (a.is_v6() && b[0] == 0xff) {
    return Tristate::kYes;
  }
  if (!config.local_addresses) {
    return Tristate::kUnknown;
  }
  for (const LocalAddress& local : *config.local_addresses) {
    const IpAddress l = local.address.unmapped();
    if (l.family() != a.family()) {
      continue;
    }
    if (l == a) {
      return Tristate::kYes;
    }
    const bool in_prefix = prefix_contains(l, local.prefix_len, a);
    if (local.on_loopback_device && in_prefix) {
      return Tristate::kYes;  // fib_add_ifaddr(): a loopback prefix route is RTN_LOCAL
    }
    if (a.is_v4() && in_prefix && local.prefix_len < 31 &&
        host_bits_all_ones(a, local.prefix_len)) {
      return Tristate::kYes;  // the prefix's broadcast address (RTN_BROADCAST)
    }
  }
  return Tristate::kNo;
}

bool nonlocal_bind_allowed(const Call& call, const NetnsPortConfig& config) {
  // inet_can_nonlocal_bind() / ipv6_can_nonlocal_bind(); a v4-mapped address is checked by
  // the IPv4 rule (inet_addr_valid_or_nonlocal) even on an AF_INET6 socket.
  const bool ipv4_rule = call.local.addr.unmapped().is_v4();
  return call.options.freebind || call.options.transparent ||
         (ipv4_rule ? config.ip_nonlocal_bind : config.ip6_nonlocal_bind);
}

Diagnosis address_not_local_diagnosis(const Call& call, const NetnsPortConfig& config) {
  Diagnosis d;
  d.cause = Cause::kAddressNotLocal;
  d.hint = call.local.addr.to_string() +
           " is not an address of this network namespace: add it to an interface, or set "
           "IP_FREEBIND (or net.ipv4.ip_nonlocal_bind=1) to bind it anyway";
  if (address_is_local(call.local.addr, config) == Tristate::kYes) {
    d.hint += " (it is configured now: it came after the call, or was not yet usable)";
  }
  return d;
}

bool needs_privilege(const Call& call, const NetnsPortConfig& config) {
  // inet_port_requires_bind_service(): port < net.ipv4.ip_unprivileged_port_start.
  return call.local.port != 0 && call.local.port < config.ip_unprivileged_port_start;
}

Diagnosis privileged_port_diagnosis(const Call& call, const NetnsPortConfig& config) {
  Diagnosis d;
  d.cause = Cause::kPrivilegedPort;
  d.hint = "port " + std::to_string(call.local.port) + " is below ip_unprivileged_port_start (" +
           std::to_string(config.ip_unprivileged_port_start) +
           "): use a higher port, grant CAP_NET_BIND_SERVICE, or lower the sysctl";
  return d;
}

Diagnosis diagnose_bind(const Call& call, const SocketTable& table) {
  const NetnsPortConfig& config = table.config_for(call.netns);
  switch (-call.result) {
    case EACCES:
      if (needs_privilege(call, config)) {
        return privileged_port_diagnosis(call, config);
      }
      return unknown_diagnosis(
          "port " + std::to_string(call.local.port) + " needs no privilege here (" +
          "ip_unprivileged_port_start=" + std::to_string(config.ip_unprivileged_port_start) +
          "), so portlens cannot explain this EACCES; an LSM or a cgroup BPF program can refuse "
          "bind() too");
    case EADDRNOTAVAIL:
      // __inet_bind / __inet6_bind return EADDRNOTAVAIL only for a non-local address.
      if (nonlocal_bind_allowed(call, config)) {
        return unknown_diagnosis(
            "EADDRNOTAVAIL although this socket may bind non-local addresses (IP_FREEBIND, "
            "IP_TRANSPARENT or ip_nonlocal_bind); portlens cannot explain it");
      }
      return address_not_local_diagnosis(call, config);
    case EADDRINUSE:
      if (call.local.port == 0) {
        return autobind_diagnosis(call, table);
      }
      return conflict_diagnosis(call, table, false);
    default:
      return unknown_diagnosis("portlens has no rule for this bind() error");
  }
}

Diagnosis diagnose_connect(const Call& call, const SocketTable& table) {
  const PortTable t = table_of(call.proto);
  if (t == PortTable::kTcp && -call.result == EADDRNOTAVAIL && call.remote) {
    return call.local.port != 0 ? four_tuple_diagnosis(call, table)
                                : connect_exhaustion_diagnosis(call, table);
  }
  if (is_udp_like(t) && -call.result == EAGAIN && call.local.port == 0) {
    return autobind_diagnosis(call, table);  // inet_autobind() failed: -EAGAIN
  }
  return unknown_diagnosis("portlens has no rule for this connect() error");
}

// ---------------------------------------------------------------------------------------------
// inet_csk_get_port()'s fast paths. When the port's bind bucket already has owners,
//   if (sk->sk_reuse == SK_FORCE_REUSE || (tb->fastreuse > 0 && reuse) ||
//       sk_reuseport_match(tb, sk))
//           check_bind_conflict = false;
// with reuse = sk->sk_reuse && sk->sk_state != TCP_LISTEN: the conflict check (and
// inet_bhash2_addr_any_conflict) is skipped altogether. The bucket's fast* state is what
// inet_csk_update_fastreuse() left after each successful get_port, so the answer depends on the
// order the owners came in. SK_FORCE_REUSE is never set from user space.

// The receive addresses sk_reuseport_match() and inet_csk_update_fastreuse() use.
struct RcvAddresses {
  Family family = Family::kIpv4;
  IpAddress v4 = IpAddress::any_v4();  // inet_rcv_saddr
  std::optional<IpAddress> v6;         // inet6_rcv_saddr(): AF_INET6 sockets only
  bool ipv6_only = false;
};

// __inet6_bind(): a mapped address gives its IPv4 receive address, [::] gives 0, a specific IPv6
// address LOOPBACK4_IPV6 and sk_ipv6only.
RcvAddresses rcv_addresses(Family family, const IpAddress& address, std::optional<bool> v6only,
                           const std::optional<IpAddress>& v4_rcv_saddr) {
  RcvAddresses r;
  if (family == Family::kIpv4 || address.is_v4()) {
    r.v4 = address.unmapped();
    return r;
  }
  r.family = Family::kIpv6;
  r.v6 = address;
  const bool specific = !address.is_v4_mapped() && !address.is_any();
  if (address.is_v4_mapped()) {
    r.v4 = address.unmapped();
  } else if (specific) {
    r.v4 = loopback4_ipv6();
  }
  r.v4 = v4_rcv_saddr.value_or(r.v4);
  r.ipv6_only = v6only.value_or(specific) || specific;
  return r;
}

RcvAddresses subject_addresses(const Subject& s) {
  return rcv_addresses(s.family, s.local.addr, s.options.v6only, std::nullopt);
}

// ipv4_rcv_saddr_equal() (net/ipv4/inet_connection_sock.c).
bool ipv4_rcv_saddr_equal(const IpAddress& sk1, const IpAddress& sk2, bool sk2_ipv6only,
                          bool match_sk1_wildcard, bool match_sk2_wildcard) {
  if (sk2_ipv6only) {
    return false;
  }
  return sk1 == sk2 || (match_sk1_wildcard && sk1.is_any()) || (match_sk2_wildcard && sk2.is_any());
}

enum class V6Type : std::uint8_t { kAny, kMapped, kOther };

// ipv6_addr_type() as ipv6_rcv_saddr_equal() uses it; no IPv6 address (an AF_INET socket) counts
// as mapped.
V6Type v6_type(const std::optional<IpAddress>& a) {
  if (!a || a->is_v4() || a->is_v4_mapped()) {
    return V6Type::kMapped;
  }
  return a->is_any() ? V6Type::kAny : V6Type::kOther;
}

// ipv6_rcv_saddr_equal() (net/ipv4/inet_connection_sock.c).
bool ipv6_rcv_saddr_equal(const RcvAddresses& sk1, const RcvAddresses& sk2, bool match_sk1_wildcard,
                          bool match_sk2_wildcard) {
  const V6Type t1 = v6_type(sk1.v6);
  const V6Type t2 = v6_type(sk2.v6);
  if (t1 == V6Type::kMapped && t2 == V6Type::kMapped) {
    return ipv4_rcv_saddr_equal(sk1.v4, sk2.v4, sk2.ipv6_only, match_sk1_wildcard,
                                match_sk2_wildcard);
  }
  if (t1 == V6Type::kAny && t2 == V6Type::kAny) {
    return true;
  }
  if (t2 == V6Type::kAny && match_sk2_wildcard && !(sk2.ipv6_only && t1 == V6Type::kMapped)) {
    return true;
  }
  if (t1 == V6Type::kAny && match_sk1_wildcard && !(sk1.ipv6_only && t2 == V6Type::kMapped)) {
    return true;
  }
  return sk1.v6 && sk2.v6 && *sk1.v6 == *sk2.v6;
}

RcvAddresses fast_addresses(const TcpBindBucket& tb) {
  return RcvAddresses{tb.fast_family, tb.fast_rcv_saddr, tb.fast_v6_rcv_saddr, tb.fast_ipv6_only};
}

// sk_reuseport_match() (net/ipv4/inet_connection_sock.c); S is a new socket, so it is in no
// reuseport group (sk_reuseport_cb is NULL).
bool sk_reuseport_match(const TcpBindBucket& tb, const Subject& s, const RcvAddresses& a) {
  if (tb.fastreuseport <= 0 || !s.options.reuseport || tb.fastuid != s.uid) {
    return false;
  }
  if (tb.fastreuseport == TcpBindBucket::kFastreuseportAny) {
    return true;
  }
  if (tb.fast_family == Family::kIpv6) {
    return ipv6_rcv_saddr_equal(fast_addresses(tb), a, true, false);
  }
  return ipv4_rcv_saddr_equal(tb.fast_rcv_saddr, a.v4, a.ipv6_only, true, false);
}

// inet_csk_update_fastreuse() for S joining a bucket that has owners, at bind() (not LISTEN).
TcpBindBucket update_fastreuse(TcpBindBucket tb, const Subject& s, const RcvAddresses& a) {
  if (!s.options.reuseaddr) {
    tb.fastreuse = 0;
  }
  if (!s.options.reuseport) {
    tb.fastreuseport = 0;
  } else if (!sk_reuseport_match(tb, s, a)) {
    tb.fastreuseport = TcpBindBucket::kFastreuseportStrict;
    tb.fastuid = s.uid;
    tb.fast_family = a.family;
    tb.fast_rcv_saddr = a.v4;
    tb.fast_v6_rcv_saddr = a.v6.value_or(IpAddress::any_v6());
    tb.fast_ipv6_only = a.ipv6_only;
  }
  return tb;
}

struct PortBucket {
  bool owners = false;                  // !hlist_empty(&tb->bhash2)
  std::optional<TcpBindBucket> bucket;  // nullopt: no owner's entry carries it
};

// Every owner of the port in one netns shares the bucket (inet_bind_bucket_match: net, port,
// l3mdev); portlens does not model VRFs, so it takes the bucket outside them.
PortBucket port_bucket(const Subject& s, const SocketTable& table) {
  PortBucket out;
  for (const SocketEntry& e : table.sockets) {
    if (!may_own_port(s, e) || e.local.port != s.local.port) {
      continue;
    }
    out.owners = true;
    if (!out.bucket && e.bind_bucket && e.bind_bucket->l3mdev == 0) {
      out.bucket = e.bind_bucket;
    }
  }
  return out;
}

// With the bucket unknown: could an owner have left it in a state that lets S through?
// fastreuse > 0 needs every owner to have come with SO_REUSEADDR outside LISTEN
// (inet_csk_update_fastreuse clears it otherwise), and R1 already lets S share with those, so
// only sk_reuseport_match() can change an answer. FASTREUSEPORT_ANY with S's uid implies every
// owner bound with SO_REUSEPORT and that uid, which R2 lets S share with too; STRICT was set by an
// SO_REUSEPORT owner of S's uid and remembers its bound address, which S must match (a connected
// owner may have bound a wildcard before connect() changed it: any address then). A departed
// owner's leftover state is not considered.
bool reuseport_fast_path_possible(const Subject& s, const SocketTable& table,
                                  const RcvAddresses& a) {
  if (!s.options.reuseport) {
    return false;
  }
  for (const SocketEntry& e : table.sockets) {
    if (!may_own_port(s, e) || e.local.port != s.local.port || e.reuseport == false ||
        (e.uid && *e.uid != s.uid)) {
      continue;
    }
    if (e.remote) {
      return true;
    }
    const Family family = e.local.addr.is_v6() ? Family::kIpv6 : Family::kIpv4;
    const RcvAddresses ea = rcv_addresses(family, e.local.addr, e.v6only, e.v4_rcv_saddr);
    TcpBindBucket tb;
    tb.fastreuseport = TcpBindBucket::kFastreuseportStrict;
    tb.fastuid = s.uid;
    tb.fast_family = ea.family;
    tb.fast_rcv_saddr = ea.v4;
    tb.fast_v6_rcv_saddr = ea.v6.value_or(IpAddress::any_v6());
    tb.fast_ipv6_only = ea.ipv6_only;
    if (sk_reuseport_match(tb, s, a)) {
      return true;
    }
  }
  return false;
}

constexpr std::string_view kBucketUnknown = "the port's bind bucket (inet_csk_get_port fast path)";

// Whether bind() takes a fast path past the conflict check.
Judgement tcp_bind_fast_path(const Subject& s, const SocketTable& table) {
  const PortBucket pb = port_bucket(s, table);
  if (!pb.owners) {
    return known(false);  // a new bucket: the conflict check finds nothing anyway
  }
  const RcvAddresses a = subject_addresses(s);
  if (pb.bucket) {
    const bool reuse = s.options.reuseaddr;  // S is not LISTEN at bind()
    return known((pb.bucket->fastreuse > 0 && reuse) || sk_reuseport_match(*pb.bucket, s, a));
  }
  if (reuseport_fast_path_possible(s, table, a)) {
    return Judgement{Tristate::kUnknown, {kBucketUnknown}};
  }
  return known(false);
}

// Whether listen() takes a fast path: inet_csk_listen_start() sets LISTEN and calls get_port()
// again, so reuse is false and only sk_reuseport_match() can apply, against the bucket as S's own
// bind() left it (inet_csk_update_fastreuse). That always matches an SO_REUSEPORT S: the update
// either found a match or reset STRICT to S's own uid and address. So listen() after a
// successful bind() skips the conflict check exactly when S has SO_REUSEPORT, whatever the
// bucket; with the bucket known this is computed rather than assumed.
bool tcp_listen_fast_path(const Subject& s, const SocketTable& table) {
  const PortBucket pb = port_bucket(s, table);
  if (!pb.owners) {
    return false;
  }
  if (!pb.bucket) {
    return s.options.reuseport;
  }
  const RcvAddresses a = subject_addresses(s);
  return sk_reuseport_match(update_fastreuse(*pb.bucket, s, a), s, a);
}

void mark_unknown(std::vector<Blocker>& blockers, std::string_view what) {
  for (Blocker& b : blockers) {
    if (b.definite) {
      b.definite = false;
      b.why += "; may not block: " + std::string(what) + " unknown";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Prediction.

Prediction fails(Syscall step, int error, Diagnosis diagnosis) {
  Prediction p;
  const bool definite = diagnosis.blockers.empty() || diagnosis.blockers.front().definite;
  p.outcome = definite ? Outcome::kFails : Outcome::kUndetermined;
  p.failing_syscall = step;
  p.expected_result = definite ? -error : 0;
  p.diagnosis = std::move(diagnosis);
  return p;
}

// SO_REUSEADDR lets bound-only sockets share an address, but only the first of them may
// listen (docs/kernel-rules.md section 2): say so, since bind() alone will not fail.
std::string reuseaddr_cohabitants_note(const Subject& s, const SocketTable& table,
                                       bool then_listen) {
  std::vector<std::string> owners;
  for (const SocketEntry& e : table.sockets) {
    if (s.table != PortTable::kTcp || !may_own_port(s, e) || e.local.port != s.local.port ||
        e.state == TcpState::kTimeWait) {
      continue;
    }
    const Judgement shares =
        all_of({devices_compatible(s, e), addresses_overlap(s, e), tcp_reuseaddr_shares(s, e),
                negate(tcp_reuseport_shares(s, e))});
    if (shares.value == Tristate::kYes) {
      owners.push_back(owner_text(e));
    }
  }
  if (owners.empty()) {
    return {};
  }
  std::string list;
  for (const std::string& o : owners) {
    list += (list.empty() ? "" : ", ") + o;
  }
  return then_listen ? "once this socket listens, listen() fails for the other SO_REUSEADDR "
                       "sockets on this address: " +
                           list
                     : "SO_REUSEADDR sockets share this address with it (" + list +
                           "): only the first of them to listen() will succeed";
}

Diagnosis diagnose_unfixed(const Call& call, const SocketTable& table) {
  switch (call.syscall) {
    case Syscall::kBind:
      return diagnose_bind(call, table);
    case Syscall::kListen:
      if (-call.result != EADDRINUSE) {
        return unknown_diagnosis("portlens has no rule for this listen() error");
      }
      // inet_csk_listen_start(): an unbound socket picks its port here.
      return call.local.port == 0 ? autobind_diagnosis(call, table)
                                  : conflict_diagnosis(call, table, true);
    case Syscall::kConnect:
      return diagnose_connect(call, table);
  }
  return unknown_diagnosis("portlens has no rule for this call");
}

// predict() without fixes. check_address false skips the address and privilege checks: what a fix
// that keeps the address needs, since the kernel judged them before the port (__inet_bind).
Prediction predict_core(const Call& bind_call, bool then_listen, const SocketTable& table,
                        bool check_address) {
  Call call = bind_call;
  call.syscall = Syscall::kBind;
  call.result = 0;
  const NetnsPortConfig& config = table.config_for(call.netns);
  if (table_of(call.proto) == PortTable::kSctp) {
    Prediction p;
    p.outcome = Outcome::kUndetermined;
    p.diagnosis = unknown_diagnosis("portlens does not model SCTP's port rules");
    return p;
  }

  // __inet_bind checks the address before the privilege; __inet6_bind the other way round.
  const bool privileged = check_address && needs_privilege(call, config) &&
                          !call.cap_net_bind_service.value_or(call.uid == 0);
  const Tristate local = !check_address || nonlocal_bind_allowed(call, config)
                             ? Tristate::kYes
                             : address_is_local(call.local.addr, config);
  if (call.family == Family::kIpv6 && privileged) {
    return fails(Syscall::kBind, EACCES, privileged_port_diagnosis(call, config));
  }
  if (local == Tristate::kNo) {
    return fails(Syscall::kBind, EADDRNOTAVAIL, address_not_local_diagnosis(call, config));
  }
  if (privileged) {
    return fails(Syscall::kBind, EACCES, privileged_port_diagnosis(call, config));
  }

  std::string fast_path_note;
  const bool autobind_at_bind = call.local.port == 0 && !call.options.bind_address_no_port;
  const bool autobind_at_listen =
      then_listen && call.local.port == 0 && call.options.bind_address_no_port;
  const auto exhaustion = [&](Syscall step) -> std::optional<Prediction> {
    Call at = call;
    at.syscall = step;
    Diagnosis d = autobind_diagnosis(at, table);
    if (d.cause != Cause::kEphemeralExhausted) {
      return std::nullopt;
    }
    if (d.ephemeral->undecided > 0) {
      Prediction p = fails(step, EADDRINUSE, std::move(d));
      p.outcome = Outcome::kUndetermined;
      p.expected_result = 0;
      return p;
    }
    return fails(step, EADDRINUSE, std::move(d));
  };

  if (autobind_at_bind) {
    if (auto p = exhaustion(Syscall::kBind)) {
      return *p;
    }
  } else if (call.local.port != 0) {
    const Subject s = subject_of(call, false);
    const Judgement fast = s.table == PortTable::kTcp ? tcp_bind_fast_path(s, table) : known(false);
    Diagnosis d = conflict_diagnosis(call, table, false);
    if (!d.blockers.empty()) {
      if (fast.value == Tristate::kYes) {
        fast_path_note =
            "bind() skips the conflict check: the port's bind bucket lets this socket "
            "in (inet_csk_get_port fast path), although " +
            owner_text(d.blockers.front().socket) + " overlaps it";
      } else {
        if (fast.value == Tristate::kUnknown) {
          mark_unknown(d.blockers, kBucketUnknown);
          rank(d.blockers);
        }
        return fails(Syscall::kBind, EADDRINUSE, std::move(d));
      }
    }
  }
  if (autobind_at_listen) {
    if (auto p = exhaustion(Syscall::kListen)) {
      return *p;
    }
  } else if (then_listen && call.local.port != 0) {
    // inet_csk_listen_start() runs get_port() again with the socket now in LISTEN.
    const Subject s = subject_of(call, true);
    if (s.table != PortTable::kTcp || !tcp_listen_fast_path(s, table)) {
      Diagnosis d = conflict_diagnosis(call, table, true);
      if (!d.blockers.empty()) {
        return fails(Syscall::kListen, EADDRINUSE, std::move(d));
      }
    }
  }

  Prediction p;
  if (local == Tristate::kUnknown) {
    p.outcome = Outcome::kUndetermined;
    p.failing_syscall = Syscall::kBind;
    p.diagnosis = unknown_diagnosis(
        "portlens does not know the addresses of this network "
        "namespace, so cannot tell whether " +
        call.local.addr.to_string() + " is local");
    return p;
  }
  if (call.local.port != 0) {
    p.note = reuseaddr_cohabitants_note(subject_of(call, then_listen), table, then_listen);
  }
  if (!fast_path_note.empty()) {
    p.note = p.note.empty() ? fast_path_note : fast_path_note + "; " + p.note;
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Fixes (docs/architecture.md, "Fixes"). Each candidate is applied to a copy of the call and the
// table, and kept only when predict_core() then says the call succeeds: every fix listed is
// sufficient on its own, by the same rules that explain the failure.

// The same socket in two copies of a table: by inode, else kernel identity, else its endpoints
// and state (TIME_WAIT minisockets have neither).
bool same_socket(const SocketEntry& a, const SocketEntry& b) {
  if (a.inode != 0 || b.inode != 0) {
    return a.inode == b.inode;
  }
  if (a.sock_id != 0 && b.sock_id != 0) {
    return a.sock_id == b.sock_id;
  }
  return a.proto == b.proto && a.netns == b.netns && a.local == b.local && a.remote == b.remote &&
         a.state == b.state;
}

// Only the sockets of the call's port: all predict_core() looks at for an explicit port.
SocketTable port_view(const SocketTable& table, const Call& call) {
  SocketTable view;
  view.netns_config = table.netns_config;
  view.default_config = table.default_config;
  for (const SocketEntry& e : table.sockets) {
    if (e.netns == call.netns && e.local.port == call.local.port) {
      view.sockets.push_back(e);
    }
  }
  return view;
}

// After owners of the port change or go, the bind bucket no longer is what the snapshot read:
// inet_csk_update_fastreuse() rewrites it in the order sockets come. An unknown bucket makes
// predict_core() answer only what holds whatever the bucket. Likewise a UDP socket made again
// joins its chain at the head (at the tail for IPv6 with SO_REUSEPORT, udp_lib_get_port).
void forget_order(SocketTable& table, bool udp_chain) {
  for (SocketEntry& e : table.sockets) {
    e.bind_bucket = std::nullopt;
    if (udp_chain) {
      e.udp_chain_position = std::nullopt;
    }
  }
}

bool succeeds(const Call& call, bool then_listen, const SocketTable& table, bool check_address) {
  return predict_core(call, then_listen, table, check_address).outcome == Outcome::kSucceeds;
}

Fix set_option_fix(std::string option, Fix::On on, std::vector<std::uint32_t> pids,
                   std::string text) {
  Fix f;
  f.kind = Fix::Kind::kSetOption;
  f.option = std::move(option);
  f.on = on;
  f.pids = std::move(pids);
  f.text = std::move(text);
  return f;
}

Fix sysctl_fix(std::string name, std::string value, std::string text) {
  Fix f;
  f.kind = Fix::Kind::kSysctl;
  f.name = std::move(name);
  f.value = std::move(value);
  f.text = std::move(text);
  return f;
}

// Tenths of a second, rounded up: "41.3 s".
std::string tenths_text(std::chrono::milliseconds ms) {
  const auto tenths = (ms.count() + 99) / 100;
  return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + " s";
}

Fix wait_fix(std::chrono::milliseconds ms, std::string text) {
  Fix f;
  f.kind = Fix::Kind::kWait;
  const std::int64_t tenths = (ms.count() + 99) / 100;  // rounded up to 0.1 s
  f.seconds = static_cast<double>(tenths) / 10.0;
  f.text = std::move(text);
  return f;
}

// "PID 812 (nginx)'s socket", "PID 812 (nginx)'s sockets and socket inode 4711's (process
// unknown)": the targets of a blocker-side fix, one mention per owner.
std::string sockets_text(const std::vector<const SocketEntry*>& targets) {
  std::vector<std::string> owners;
  std::vector<int> counts;
  for (const SocketEntry* e : targets) {
    std::string who;
    if (e->owner) {
      who = "PID " + std::to_string(e->owner->pid) + " (" + e->owner->comm + ")";
    } else if (e->inode != 0) {
      who = "socket inode " + std::to_string(e->inode);
    } else {
      who = "the " + state_text(*e) + " socket on " + e->local.to_string();
    }
    const auto it = std::find(owners.begin(), owners.end(), who);
    if (it == owners.end()) {
      owners.push_back(who);
      counts.push_back(1);
    } else {
      ++counts[static_cast<std::size_t>(it - owners.begin())];
    }
  }
  std::string out;
  for (std::size_t i = 0; i < owners.size(); ++i) {
    out += i == 0 ? "" : " and ";
    const bool named = owners[i].rfind("PID ", 0) == 0;
    if (named) {
      out += owners[i] + (counts[i] > 1 ? "'s sockets" : "'s socket");
    } else if (owners[i].rfind("socket inode ", 0) == 0) {
      out += owners[i] + " (process unknown)";
    } else {
      out += owners[i];
    }
  }
  return out;
}

std::vector<std::uint32_t> pids_of(const std::vector<const SocketEntry*>& targets) {
  std::vector<std::uint32_t> pids;
  for (const SocketEntry* e : targets) {
    if (e->owner && std::find(pids.begin(), pids.end(), e->owner->pid) == pids.end()) {
      pids.push_back(e->owner->pid);
    }
  }
  return pids;
}

// What SO_REUSEADDR on both still does not allow (docs/kernel-rules.md section 2): R1 never
// clears a LISTEN owner, so of sockets sharing an address this way only one may listen.
std::string listen_caveat(const std::vector<const SocketEntry*>& changed, bool then_listen) {
  const bool bound = std::any_of(changed.begin(), changed.end(),
                                 [](const SocketEntry* e) { return is_bound_only(*e); });
  if (!bound) {
    return {};
  }
  return then_listen ? "; once this socket listens, the bound one can no longer listen()"
                     : "; then only the first of them to call listen() can listen";
}

bool is_dual_stack_v6(const SocketEntry& e) {
  const IpAddress& a = e.local.addr;
  if (!a.is_v6() || a.is_v4_mapped() || e.v6only != false) {
    return false;
  }
  return a.is_any() || e.v4_rcv_saddr.has_value();  // [::], or connected over IPv6 (1.3)
}

IpAddress mapped(const IpAddress& v4) {
  std::array<std::uint8_t, 16> b{};
  b[10] = 0xff;
  b[11] = 0xff;
  std::copy_n(v4.bytes().begin(), 4, b.begin() + 12);
  return IpAddress::v6(b);
}

// Addresses of this namespace the socket could bind instead, in the socket's family: each
// configured address, and for a loopback prefix its first hosts (fib_add_ifaddr makes the whole
// prefix local: 127.0.0.2, 127.0.0.3). Link-local IPv6 needs a scope id, so none of those.
std::vector<IpAddress> other_addresses(const Call& call, const NetnsPortConfig& config) {
  std::vector<IpAddress> out;
  if (!config.local_addresses) {
    return out;
  }
  const auto add = [&](const IpAddress& a) {
    IpAddress bound = a;
    if (a.is_v4() && call.family == Family::kIpv6) {
      if (call.options.v6only) {
        return;  // an IPV6_V6ONLY socket cannot bind a v4-mapped address
      }
      bound = mapped(a);
    }
    if (a.is_v6() && call.family == Family::kIpv4) {
      return;
    }
    if (same_address(bound, call.local.addr) ||
        std::find(out.begin(), out.end(), bound) != out.end()) {
      return;
    }
    out.push_back(bound);
  };
  constexpr std::uint32_t kLoopbackHosts = 3;
  for (const LocalAddress& l : *config.local_addresses) {
    const IpAddress a = l.address.unmapped();
    if (a.is_v6() && a.bytes()[0] == 0xfe && (a.bytes()[1] & 0xc0U) == 0x80U) {
      continue;
    }
    add(a);
    if (a.is_v4() && l.on_loopback_device && l.prefix_len <= 30) {
      const auto& b = a.bytes();
      const std::uint32_t host = (std::uint32_t{b[0]} << 24U) | (std::uint32_t{b[1]} << 16U) |
                                 (std::uint32_t{b[2]} << 8U) | b[3];
      const std::uint32_t mask = l.prefix_len == 0 ? 0 : ~std::uint32_t{0} << (32U - l.prefix_len);
      for (std::uint32_t n = 1; n <= kLoopbackHosts; ++n) {
        const std::uint32_t h = (host & mask) + n;
        add(IpAddress::v4(std::array<std::uint8_t, 4>{
            static_cast<std::uint8_t>(h >> 24U), static_cast<std::uint8_t>(h >> 16U),
            static_cast<std::uint8_t>(h >> 8U), static_cast<std::uint8_t>(h)}));
      }
    }
  }
  return out;
}

// What closing a process's sockets leaves (tcp_close): a connection that this side closes
// first goes through FIN_WAIT1 to TIME_WAIT (tcp_time_wait), keeping its flags; LISTEN, bound,
// SYN_SENT, CLOSE_WAIT and LAST_ACK sockets leave nothing on the port.
std::optional<SocketEntry> left_after_close(SocketEntry e) {
  if (table_of(e.proto) != PortTable::kTcp || !e.state) {
    return std::nullopt;
  }
  switch (*e.state) {
    case TcpState::kEstablished:
    case TcpState::kFinWait1:
    case TcpState::kFinWait2:
    case TcpState::kClosing:
      e.state = TcpState::kTimeWait;
      e.time_wait_substate = TcpState::kTimeWait;
      e.time_wait_remaining = kTimeWaitLength;
      e.uid = std::nullopt;
      e.owner = std::nullopt;
      e.inode = 0;
      e.sock_id = 0;
      return e;
    default:
      return std::nullopt;
  }
}

std::vector<Fix> conflict_fixes(const Call& call, bool then_listen, const SocketTable& full,
                                const std::vector<Blocker>& blockers) {
  std::vector<Fix> fixes;
  const SocketTable table = port_view(full, call);
  const bool udp = is_udp_like(table_of(call.proto));
  std::vector<const SocketEntry*> targets;  // the blockers a blocker-side change applies to
  std::vector<const Blocker*> time_waits;
  for (const Blocker& b : blockers) {
    if (b.socket.state == TcpState::kTimeWait && !udp) {
      time_waits.push_back(&b);
    } else {
      targets.push_back(&b.socket);
    }
  }
  const bool only_time_waits = targets.empty();

  // 1. An option on the new socket only.
  const auto try_new = [&](const std::string& option, bool SocketOptions::*flag, std::string text) {
    Call c = call;
    if (c.options.*flag) {
      return;
    }
    c.options.*flag = true;
    if (succeeds(c, then_listen, table, false)) {
      fixes.push_back(set_option_fix(option, Fix::On::kNew, {}, std::move(text)));
    }
  };
  try_new("SO_REUSEADDR", &SocketOptions::reuseaddr,
          "set SO_REUSEADDR before bind()" +
              std::string(only_time_waits ? " (these TIME_WAIT sockets kept it)"
                                          : listen_caveat(targets, then_listen)));
  if (call.family == Family::kIpv6 && call.local.addr.is_v6() && call.local.addr.is_any()) {
    try_new("IPV6_V6ONLY", &SocketOptions::v6only,
            "set IPV6_V6ONLY on this socket so that [::] stops covering IPv4");
  }
  try_new("SO_REUSEPORT", &SocketOptions::reuseport,
          only_time_waits
              ? "set SO_REUSEPORT before bind() (these TIME_WAIT sockets kept it, and their uid "
                "does not matter)"
              : "set SO_REUSEPORT before bind(), to share the port with " + sockets_text(targets));

  // 2. Wait: the TIME_WAITs expire (nothing ends them earlier but an RST or a takeover).
  if (!time_waits.empty()) {
    SocketTable t = table;
    std::chrono::milliseconds longest{0};
    bool all_known = true;
    for (const Blocker* b : time_waits) {
      std::erase_if(t.sockets, [&](const SocketEntry& e) { return same_socket(e, b->socket); });
      all_known = all_known && b->socket.time_wait_remaining.has_value();
      longest = std::max(longest, b->socket.time_wait_remaining.value_or(kTimeWaitLength));
    }
    forget_order(t, false);
    if (succeeds(call, then_listen, t, false)) {
      fixes.push_back(wait_fix(longest, all_known ? "wait " + tenths_text(longest) +
                                                        " for the TIME_WAIT sockets to expire"
                                                  : "wait up to 60 s for the TIME_WAIT sockets "
                                                    "to expire"));
    }
  }

  // 3. An option on the blockers too (never on a TIME_WAIT: it keeps the flags it has).
  if (!targets.empty()) {
    const auto try_blockers = [&](const std::string& option, const auto& eligible,
                                  const auto& apply, bool also_new, const auto& text) {
      std::vector<const SocketEntry*> changed;
      for (const SocketEntry* e : targets) {
        if (eligible(*e)) {
          changed.push_back(e);
        }
      }
      if (changed.empty()) {
        return;  // nothing to change on them: the new socket's own fix, tried above
      }
      SocketTable t = table;
      for (SocketEntry& e : t.sockets) {
        for (const SocketEntry* c : changed) {
          if (same_socket(e, *c)) {
            apply(e);
          }
        }
      }
      // Recreated with the option, a blocker joins the chain afresh (udp_lib_get_port): its
      // place is no longer the snapshot's.
      forget_order(t, udp);
      Call c = call;
      if (also_new) {
        (option == "SO_REUSEADDR" ? c.options.reuseaddr : c.options.reuseport) = true;
      }
      if (succeeds(c, then_listen, t, false)) {
        fixes.push_back(set_option_fix(option, also_new ? Fix::On::kBoth : Fix::On::kBlocker,
                                       pids_of(changed), text(changed)));
      }
    };
    try_blockers(
        "IPV6_V6ONLY", [](const SocketEntry& e) { return is_dual_stack_v6(e); },
        [](SocketEntry& e) { e.v6only = true; }, false,
        [](const std::vector<const SocketEntry*>& changed) {
          return "set IPV6_V6ONLY on " + sockets_text(changed) +
                 ", so that its [::] stops "
                 "covering IPv4";
        });
    try_blockers(
        "SO_REUSEADDR", [](const SocketEntry& e) { return e.reuseaddr != true; },
        [](SocketEntry& e) { e.reuseaddr = true; }, !call.options.reuseaddr,
        [&](const std::vector<const SocketEntry*>& changed) {
          return (call.options.reuseaddr
                      ? "set SO_REUSEADDR on " + sockets_text(changed) + " too (this socket has it)"
                      : "set SO_REUSEADDR on this socket and on " + sockets_text(changed)) +
                 listen_caveat(targets, then_listen);
        });
    try_blockers(
        "SO_REUSEPORT", [](const SocketEntry& e) { return e.reuseport != true; },
        [](SocketEntry& e) { e.reuseport = true; }, !call.options.reuseport,
        [&](const std::vector<const SocketEntry*>& changed) {
          return call.options.reuseport ? "set SO_REUSEPORT on " + sockets_text(changed) +
                                              " too (this socket has it; same uid)"
                                        : "set SO_REUSEPORT on this socket and on " +
                                              sockets_text(changed) + " (same uid)";
        });
  }

  // 4. Another address: the first of this namespace's that the port is free on: it
  // moves this service, so it comes after changes that keep every address.
  for (const IpAddress& a : other_addresses(call, table.config_for(call.netns))) {
    Call c = call;
    c.local.addr = a;
    if (succeeds(c, then_listen, table, true)) {
      Fix f;
      f.kind = Fix::Kind::kBindAddress;
      f.addr = a;
      f.text = "bind " + address_text(a, std::nullopt) + " instead of " +
               address_text(call.local.addr, call.options.v6only) + ", where port " +
               std::to_string(call.local.port) + " is free for this socket";
      fixes.push_back(std::move(f));
      break;
    }
  }

  // 5. Stop the processes that hold the blockers (only when every one is known).
  const std::vector<std::uint32_t> pids = pids_of(targets);
  const bool all_owned = std::all_of(targets.begin(), targets.end(),
                                     [](const SocketEntry* e) { return e->owner.has_value(); });
  if (!targets.empty() && all_owned) {
    SocketTable t = table;
    std::vector<SocketEntry> kept;
    for (const SocketEntry& e : t.sockets) {
      const bool stopped = e.state != TcpState::kTimeWait && e.owner &&
                           std::find(pids.begin(), pids.end(), e.owner->pid) != pids.end();
      if (!stopped) {
        kept.push_back(e);
      } else if (auto left = left_after_close(e)) {
        kept.push_back(std::move(*left));
      }
    }
    t.sockets = std::move(kept);
    forget_order(t, false);  // removing sockets leaves the others' chain order as it was
    if (succeeds(call, then_listen, t, false)) {
      std::vector<std::string> names;
      for (const SocketEntry* e : targets) {
        const std::string n = owner_text(*e);
        if (std::find(names.begin(), names.end(), n) == names.end()) {
          names.push_back(n);
        }
      }
      std::string text = "stop ";
      for (std::size_t i = 0; i < names.size(); ++i) {
        text += (i == 0 ? "" : " and ") + names[i];
      }
      Fix f;
      f.kind = Fix::Kind::kStop;
      f.pids = pids;
      f.text = std::move(text);
      fixes.push_back(std::move(f));
    }
  }
  return fixes;
}

// A wider net.ipv4.ip_local_port_range: the range's size again on each side, within
// 1024-65535. nullopt when it cannot grow.
std::optional<std::pair<std::uint16_t, std::uint16_t>> widened_range(const NetnsPortConfig& c) {
  const std::uint32_t size =
      c.port_range_hi >= c.port_range_lo ? std::uint32_t{c.port_range_hi} - c.port_range_lo + 1 : 0;
  const std::uint32_t lo = c.port_range_lo > 1024 + size ? c.port_range_lo - size : 1024;
  const std::uint32_t hi = std::min<std::uint32_t>(65535, std::uint32_t{c.port_range_hi} + size);
  if (lo >= c.port_range_lo && hi <= c.port_range_hi) {
    return std::nullopt;
  }
  return std::pair{static_cast<std::uint16_t>(std::min<std::uint32_t>(lo, c.port_range_lo)),
                   static_cast<std::uint16_t>(hi)};
}

SocketTable with_config(const SocketTable& table, std::uint64_t netns, NetnsPortConfig config) {
  SocketTable t = table;
  t.netns_config[netns] = std::move(config);
  return t;
}

// Exhaustion: the levers that give this one call a port, each recounted with it applied.
std::vector<Fix> exhaustion_fixes(const Call& call, bool then_listen, const SocketTable& table,
                                  const EphemeralAccount& account) {
  std::vector<Fix> fixes;
  const NetnsPortConfig& config = table.config_for(call.netns);
  const auto available = [&](const SocketTable& t) {
    return account.destination ? account_destination(t, *account.destination).available
                               : account_autobind(call, t).available;
  };
  if (!account.destination && call.syscall == Syscall::kBind && !then_listen &&
      table_of(call.proto) == PortTable::kTcp && !call.options.bind_address_no_port) {
    // inet_csk_get_port() is not called for bind(addr, 0) with IP_BIND_ADDRESS_NO_PORT.
    fixes.push_back(set_option_fix("IP_BIND_ADDRESS_NO_PORT", Fix::On::kNew, {},
                                   "set IP_BIND_ADDRESS_NO_PORT before bind(), if this socket "
                                   "binds only to connect()"));
  }
  if (account.destination && config.tcp_tw_reuse != 1 && account.time_wait > 0) {
    NetnsPortConfig c = config;
    c.tcp_tw_reuse = 1;
    if (available(with_config(table, call.netns, c)) > 0) {
      fixes.push_back(sysctl_fix("net.ipv4.tcp_tw_reuse", "1", "set net.ipv4.tcp_tw_reuse=1"));
    }
  }
  if (const auto range = widened_range(config)) {
    NetnsPortConfig c = config;
    c.port_range_lo = range->first;
    c.port_range_hi = range->second;
    if (available(with_config(table, call.netns, c)) > 0) {
      const std::string value = std::to_string(range->first) + " " + std::to_string(range->second);
      fixes.push_back(sysctl_fix("net.ipv4.ip_local_port_range", value,
                                 "set net.ipv4.ip_local_port_range=\"" + value +
                                     "\" (it must not cover ports that services listen on)"));
    }
  }
  return fixes;
}

// address_not_local and privileged_port: each lever replayed through predict_core().
std::vector<Fix> address_fixes(const Call& call, bool then_listen, const SocketTable& table,
                               Cause cause) {
  std::vector<Fix> fixes;
  const NetnsPortConfig& config = table.config_for(call.netns);
  const SocketTable view = port_view(table, call);
  if (cause == Cause::kAddressNotLocal) {
    Call c = call;
    c.options.freebind = true;  // inet_can_nonlocal_bind()
    if (succeeds(c, then_listen, view, true)) {
      fixes.push_back(set_option_fix("IP_FREEBIND", Fix::On::kNew, {},
                                     "set IP_FREEBIND before bind(), to bind " +
                                         call.local.addr.to_string() + " before it is configured"));
    }
    NetnsPortConfig nc = config;
    const bool ipv4_rule = call.local.addr.unmapped().is_v4();
    (ipv4_rule ? nc.ip_nonlocal_bind : nc.ip6_nonlocal_bind) = true;
    if (succeeds(call, then_listen, with_config(view, call.netns, nc), true)) {
      const std::string name =
          ipv4_rule ? "net.ipv4.ip_nonlocal_bind" : "net.ipv6.ip_nonlocal_bind";
      fixes.push_back(sysctl_fix(name, "1", "set " + name + "=1"));
    }
  } else if (cause == Cause::kPrivilegedPort) {
    NetnsPortConfig nc = config;
    nc.ip_unprivileged_port_start = call.local.port;
    if (succeeds(call, then_listen, with_config(view, call.netns, nc), true)) {
      const std::string value = std::to_string(call.local.port);
      fixes.push_back(sysctl_fix("net.ipv4.ip_unprivileged_port_start", value,
                                 "set net.ipv4.ip_unprivileged_port_start=" + value));
    }
  }
  return fixes;
}

// four_tuple_in_use: when only TIME_WAITs hold the 4-tuple, they expire.
std::vector<Fix> four_tuple_fixes(const std::vector<Blocker>& blockers) {
  std::chrono::milliseconds longest{0};
  for (const Blocker& b : blockers) {
    if (b.socket.state != TcpState::kTimeWait || !b.socket.time_wait_remaining) {
      return {};
    }
    longest = std::max(longest, *b.socket.time_wait_remaining);
  }
  if (blockers.empty()) {
    return {};
  }
  return {wait_fix(
      longest, "wait " + tenths_text(longest) + " for the TIME_WAIT on this 4-tuple to expire")};
}

bool is_port_conflict(Cause cause) {
  switch (cause) {
    case Cause::kTimeWait:
    case Cause::kMissingReuseaddr:
    case Cause::kWildcardConflict:
    case Cause::kPortInUse:
    case Cause::kReuseportUidMismatch:
      return true;
    default:
      return false;
  }
}

// Fills d.fixes for the call the user asked about (bind(), then listen() when then_listen), and
// for the port conflicts renders the hint from the first fix. Without a fix portlens can show
// to work (unknown fields, or no single change suffices), the conflict hint stays the rule's.
void add_fixes(Diagnosis& d, const Call& asked, bool then_listen, const SocketTable& table) {
  Call bind = asked;
  bind.result = 0;
  if (is_port_conflict(d.cause)) {
    bind.syscall = Syscall::kBind;
    d.fixes = conflict_fixes(bind, then_listen, table, d.blockers);
    if (d.fixes.empty()) {
      return;
    }
    const Blocker& first = d.blockers.front();
    if (d.cause == Cause::kReuseportUidMismatch && first.socket.uid) {
      d.hint = "run both under one uid (" + owner_text(first.socket) + " runs as uid " +
               std::to_string(*first.socket.uid) + ", this socket as uid " +
               std::to_string(asked.uid) + "), or " + d.fixes.front().text;
    } else {
      d.hint = d.fixes.front().text;
    }
    return;
  }
  switch (d.cause) {
    case Cause::kEphemeralExhausted:
      if (d.ephemeral) {
        d.fixes = exhaustion_fixes(asked, then_listen, table, *d.ephemeral);
      }
      return;
    case Cause::kAddressNotLocal:
    case Cause::kPrivilegedPort:
      bind.syscall = Syscall::kBind;
      d.fixes = address_fixes(bind, then_listen, table, d.cause);
      return;
    case Cause::kFourTupleInUse:
      d.fixes = four_tuple_fixes(d.blockers);
      return;
    default:
      return;
  }
}

}  // namespace

std::string_view to_string(Cause cause) {
  switch (cause) {
    case Cause::kTimeWait:
      return "time_wait";
    case Cause::kMissingReuseaddr:
      return "missing_reuseaddr";
    case Cause::kWildcardConflict:
      return "wildcard_conflict";
    case Cause::kPortInUse:
      return "port_in_use";
    case Cause::kReuseportUidMismatch:
      return "reuseport_uid_mismatch";
    case Cause::kEphemeralExhausted:
      return "ephemeral_exhausted";
    case Cause::kFourTupleInUse:
      return "four_tuple_in_use";
    case Cause::kAddressNotLocal:
      return "address_not_local";
    case Cause::kPrivilegedPort:
      return "privileged_port";
    case Cause::kUnknown:
      return "unknown";
  }
  return "unknown";
}

std::optional<Cause> parse_cause(std::string_view text) {
  for (const Cause c :
       {Cause::kTimeWait, Cause::kMissingReuseaddr, Cause::kWildcardConflict, Cause::kPortInUse,
        Cause::kReuseportUidMismatch, Cause::kEphemeralExhausted, Cause::kFourTupleInUse,
        Cause::kAddressNotLocal, Cause::kPrivilegedPort, Cause::kUnknown}) {
    if (text == to_string(c)) {
      return c;
    }
  }
  return std::nullopt;
}

EphemeralAccount account_autobind(const Call& call, const SocketTable& table) {
  const NetnsPortConfig& config = table.config_for(call.netns);
  const Subject s = subject_of(call, call.syscall == Syscall::kListen);
  const bool udp = is_udp_like(s.table);
  EphemeralAccount account;
  const std::uint32_t lo = config.port_range_lo;
  const std::uint32_t hi = config.port_range_hi;
  if (hi >= lo) {
    account.range_size = hi - lo + 1;
  }
  for (std::uint32_t p = lo; p <= hi; ++p) {
    account.reserved += config.reserved_ports.test(p) ? 1 : 0;
  }
  account.capacity = account.range_size - account.reserved;

  // Per port of the range: the strongest verdict of any owner, and who gave it.
  struct PortState {
    Tristate blocked = Tristate::kNo;
    bool time_wait_only = true;
    const SocketEntry* representative = nullptr;
  };
  std::vector<PortState> ports(hi >= lo ? hi - lo + 1 : 0);
  for (const SocketEntry& e : table.sockets) {
    if (!may_own_port(s, e) || e.local.port < lo || e.local.port > hi ||
        config.reserved_ports.test(e.local.port)) {
      continue;
    }
    // udp_lib_get_port(sk, 0) marks a port used with the same test as for an explicit port.
    const Judgement j =
        udp ? udp_bind_conflict(s, e) : tcp_autobind_conflict(s, e, config.ip_autobind_reuse);
    if (j.value == Tristate::kNo) {
      continue;
    }
    PortState& state = ports[e.local.port - lo];
    const bool time_wait = e.state == TcpState::kTimeWait;
    if (state.representative == nullptr ||
        (state.blocked == Tristate::kUnknown && j.value == Tristate::kYes)) {
      state.representative = &e;
    }
    if (j.value == Tristate::kYes) {
      state.blocked = Tristate::kYes;
    } else if (state.blocked == Tristate::kNo) {
      state.blocked = Tristate::kUnknown;
    }
    state.time_wait_only = state.time_wait_only && time_wait;
  }
  std::vector<HeldPort> held;
  for (const PortState& state : ports) {
    if (state.representative == nullptr) {
      continue;
    }
    ++account.in_use;
    account.time_wait += state.time_wait_only ? 1 : 0;
    account.undecided += state.blocked == Tristate::kUnknown ? 1 : 0;
    held.push_back(HeldPort{state.representative, state.time_wait_only});
  }
  finish_account(account);
  account.holders = rank_port_holders(held);
  return account;
}

std::string_view to_string(Fix::Kind kind) {
  switch (kind) {
    case Fix::Kind::kSetOption:
      return "set_option";
    case Fix::Kind::kWait:
      return "wait";
    case Fix::Kind::kStop:
      return "stop";
    case Fix::Kind::kSysctl:
      return "sysctl";
    case Fix::Kind::kBindAddress:
      return "bind_address";
  }
  return "set_option";
}

std::string_view to_string(Fix::On on) {
  switch (on) {
    case Fix::On::kNew:
      return "new";
    case Fix::On::kBlocker:
      return "blocker";
    case Fix::On::kBoth:
      return "both";
  }
  return "new";
}

Diagnosis diagnose(const Call& call, const SocketTable& table) {
  Diagnosis d = diagnose_unfixed(call, table);
  add_fixes(d, call, call.syscall == Syscall::kListen, table);
  return d;
}

Prediction predict(const Call& bind_call, bool then_listen, const SocketTable& table) {
  Prediction p = predict_core(bind_call, then_listen, table, true);
  if (p.diagnosis && p.outcome != Outcome::kSucceeds) {
    Call call = bind_call;
    call.syscall = Syscall::kBind;
    add_fixes(*p.diagnosis, call, then_listen, table);
  }
  return p;
}

}  // namespace portlens
