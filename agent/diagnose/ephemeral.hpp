// Ephemeral-port accounting per destination, as __inet_hash_connect() sees it
// (docs/kernel-rules.md section 6). Pure functions over a SocketTable.
#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <optional>
#include <vector>

#include "agent/model/inet.hpp"
#include "agent/model/socket_row.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

// TCP_TIMEWAIT_LEN: hard-coded in the kernel, so a TIME_WAIT's age is this minus its remaining.
inline constexpr std::chrono::milliseconds kTimeWaitLength{60000};

// Exhaustion is per (netns, source address, destination address, destination port), never
// global: one local port serves many destinations at once. Addresses are kept unmapped, since a
// v4-mapped connect() goes through the IPv4 hash.
struct Destination {
  std::uint64_t netns = 0;
  IpAddress source;
  Endpoint remote;

  // clang-tidy 14 reports the literal 0 of the synthesized <=> comparison: a false positive.
  auto operator<=>(const Destination&) const = default;  // NOLINT(modernize-use-nullptr)
  bool operator==(const Destination&) const = default;
};

// Who holds the ports counted in EphemeralAccount::in_use, largest first.
struct PortHolder {
  std::optional<SocketOwner> owner;  // nullopt: unattributed (TIME_WAIT minisockets, mostly)
  bool time_wait = false;            // these ports are held by TIME_WAIT sockets only
  std::uint32_t ports = 0;
  SocketEntry example;  // one socket of this holder, to show as a blocker
};

struct EphemeralAccount {
  // nullopt for autobind accounting (bind(0), listen() on an unbound socket, UDP autobind),
  // where the kernel picks a port before any destination is known.
  std::optional<Destination> destination;
  std::uint32_t range_size = 0;      // ip_local_port_range hi - lo + 1
  std::uint32_t reserved = 0;        // ip_local_reserved_ports inside the range
  std::uint32_t explicit_owned = 0;  // non-reserved ports in range held by bind()/listen()
  std::uint32_t capacity = 0;        // range_size - reserved - explicit_owned
  // Ports of the capacity that a socket holds: toward the destination (any state, TIME_WAIT
  // included) for connect(); by any conflicting owner for autobind.
  std::uint32_t in_use = 0;
  std::uint32_t time_wait = 0;           // of in_use: held by TIME_WAIT sockets only
  std::uint32_t time_wait_reusable = 0;  // of time_wait: connect() may take them over now
  // Of in_use: ports that may be free, but the answer depends on unknown fields (a TIME_WAIT's
  // timestamps or age, an owner's reuse flags). Counted as taken: never assumed free.
  std::uint32_t undecided = 0;
  std::uint32_t available = 0;      // capacity - in_use + time_wait_reusable
  double utilization = 0.0;         // 1 - available / capacity; 1 when capacity is 0
  std::vector<PortHolder> holders;  // top holders of in_use, at most kMaxHolders
  static constexpr std::size_t kMaxHolders = 5;
};

// The row of a socket; nullopt when the socket is in no TCP table (UDP, SCTP).
std::optional<SocketRow> row_of(const SocketEntry& entry);
// The rows of every TCP-table socket among these, in order.
std::vector<SocketRow> rows_of(const std::vector<SocketEntry>& sockets);

// Whether connect() can take over this TIME_WAIT 4-tuple now (tcp_twsk_unique()).
// port_bound_before_connect: the connecting socket's port was bound explicitly, so the kernel
// passes twp == NULL and only the timestamps matter (tcp_tw_reuse and the delay do not).
Tristate time_wait_reusable_by_connect(const SocketEntry& time_wait, const NetnsPortConfig& config,
                                       bool port_bound_before_connect);
Tristate time_wait_reusable_by_connect(const SocketRow& time_wait, const NetnsPortConfig& config,
                                       bool port_bound_before_connect);

// Whether a socket holds its port as an explicit bind()/listen() owner, which takes the port
// away from connect() on every address (__inet_hash_connect skips buckets with fastreuse >= 0).
bool holds_port_explicitly(const SocketEntry& entry);
bool holds_port_explicitly(const SocketRow& row);

// Whether a socket occupies a 4-tuple in the established hash (what __inet_check_established
// looks up): a connected TCP or MPTCP socket in any state but LISTEN and CLOSE.
bool occupies_four_tuple(const SocketEntry& entry);
bool occupies_four_tuple(const SocketRow& row);

// One held port: a representative socket, and whether only TIME_WAIT sockets hold the port.
struct HeldPort {
  const SocketEntry* representative = nullptr;
  bool time_wait_only = false;
};

// The holders of a set of held ports, grouped by owner, largest first, at most kMaxHolders.
std::vector<PortHolder> rank_port_holders(const std::vector<HeldPort>& held);

// Fills available and utilization from capacity, in_use and time_wait_reusable.
void finish_account(EphemeralAccount& account);

// The accounting of one destination. O(n) over the table.
EphemeralAccount account_destination(const SocketTable& table, const Destination& destination);

// The accounting of every destination that connect()-picked ports point at, sorted by
// destination. O(n log n): built for 200,000 sockets over 10,000 destinations. Connections whose
// local port lies outside the usable capacity (servers' accepted connections, explicitly bound
// clients) do not form destinations: they do not draw on the ephemeral range.
std::vector<EphemeralAccount> account_by_destination(const SocketTable& table);
// The same over one netns's rows, counts only: no port holders are ranked (holders stays
// empty). What a metrics scrape needs, at a fraction of the cost.
std::vector<EphemeralAccount> count_by_destination(std::uint64_t netns,
                                                   const NetnsPortConfig& config,
                                                   const std::vector<SocketRow>& rows);

}  // namespace portlens
