// What one connect() EADDRNOTAVAIL diagnosis reads of a namespace: the diagnoser's own statement
// of its inputs, so that the tracker and the live judge copy only those sockets.
#pragma once

#include <optional>
#include <set>
#include <unordered_set>
#include <utility>

#include "agent/model/inet.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

// Which of a namespace's sockets table_at() copies: what one connect() diagnosis can involve.
// diagnose_connect() reads, for an EADDRNOTAVAIL toward a destination, only the sockets toward it
// and the explicit port owners (the capacity, and the blockers when they hold the whole range);
// the rest of the namespace is never looked at, so it is not copied either.
struct ConnectScope {
  Endpoint remote;  // unmapped
  // Also kept, so that snapshot rows kept for the diagnosis meet their tracked counterparts in
  // merge_for_event(): sockets by sock_id, and connections or TIME_WAITs by 4-tuple (local,
  // remote; unmapped).
  std::unordered_set<std::uint64_t> sock_ids;
  std::set<std::pair<Endpoint, Endpoint>> four_tuples;

  // The sockets the diagnosis reads (or that merge with one that it reads), judged in the
  // state the socket had at the moment of the call.
  [[nodiscard]] bool wants(const SocketEntry& entry, std::optional<TcpState> state) const;
};

// The 4-tuple as the kernel's established hash compares it: addresses unmapped.
std::pair<Endpoint, Endpoint> unmapped_tuple(const Endpoint& local, const Endpoint& remote);
// Whether a remote endpoint is destination (given unmapped).
bool toward(const Endpoint& remote, const Endpoint& destination);

}  // namespace portlens
