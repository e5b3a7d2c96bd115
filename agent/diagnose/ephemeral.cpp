#include "agent/diagnose/ephemeral.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace portlens {
namespace {

constexpr int kLoopbackIfindex = 1;  // LOOPBACK_IFINDEX
constexpr std::size_t kPortCount = 65536;

bool in_tcp_table(Proto proto) { return proto == Proto::kTcp || proto == Proto::kMptcp; }

// SocketEntry and SocketRow share these fields' names, so one template serves both.
template <typename Socket>
bool is_time_wait(const Socket& entry) {
  return entry.state == TcpState::kTimeWait;
}

Tristate all_of(std::initializer_list<Tristate> terms) {
  bool unknown = false;
  for (const Tristate t : terms) {
    if (t == Tristate::kNo) {
      return Tristate::kNo;
    }
    unknown = unknown || t == Tristate::kUnknown;
  }
  return unknown ? Tristate::kUnknown : Tristate::kYes;
}

template <typename Socket>
bool holds_port_explicitly_of(const Socket& entry) {
  // Listening and bound-only sockets got their port from inet_csk_get_port() whatever the
  // source says: a connect()-picked port is released (inet_put_port) when connect() fails.
  return entry.explicit_port || entry.state == TcpState::kListen ||
         entry.state == TcpState::kClose || entry.state == TcpState::kBoundInactive;
}

template <typename Socket>
bool occupies_four_tuple_of(const Socket& entry) {
  return in_tcp_table(entry.proto) && entry.remote.has_value() &&
         entry.state != TcpState::kListen && entry.state != TcpState::kClose &&
         entry.state != TcpState::kBoundInactive;
}

template <typename Socket>
Tristate time_wait_reusable_of(const Socket& time_wait, const NetnsPortConfig& config,
                               bool port_bound_before_connect) {
  // tcp_twsk_unique(): reuse needs tw_ts_recent_stamp, i.e. the connection used timestamps.
  const Tristate timestamps = to_tristate(time_wait.timestamps);
  if (port_bound_before_connect) {
    // With an explicitly bound port __inet_hash_connect passes twp == NULL, and the test is
    // `ts_recent_stamp && (!twp || ...)`: tcp_tw_reuse, the delay and the substate play no part
    // (verified on 6.18 with tcp_tw_reuse=0).
    return timestamps;
  }
  // tcp_twsk_unique(): the FIN_WAIT2 substate forces reuse = 0.
  Tristate substate = Tristate::kUnknown;
  if (time_wait.time_wait_substate) {
    substate = to_tristate(*time_wait.time_wait_substate != TcpState::kFinWait2);
  }
  Tristate sysctl = to_tristate(config.tcp_tw_reuse != 0);
  if (config.tcp_tw_reuse == 2) {
    // tcp_tw_reuse=2: only loopback, recognised by address (either end) or by a bind to lo.
    const bool loopback_address =
        time_wait.local.addr.is_loopback() ||
        (time_wait.remote.has_value() && time_wait.remote->addr.is_loopback());
    if (loopback_address) {
      sysctl = Tristate::kYes;
    } else if (time_wait.bound_dev_if) {
      sysctl = to_tristate(*time_wait.bound_dev_if == kLoopbackIfindex);
    } else {
      sysctl = Tristate::kUnknown;
    }
  }
  // time_after32(now, tw_entry_stamp + tcp_tw_reuse_delay): strictly older than the delay.
  Tristate old_enough = Tristate::kUnknown;
  if (time_wait.time_wait_remaining) {
    old_enough =
        to_tristate(kTimeWaitLength - *time_wait.time_wait_remaining > config.tcp_tw_reuse_delay);
  }
  return all_of({substate, sysctl, timestamps, old_enough});
}

// What bind()/listen() owners and the sysctls leave of one netns's range for connect().
struct NetnsPorts {
  std::uint64_t netns = 0;
  const NetnsPortConfig* config = nullptr;
  std::vector<bool> explicit_ports = std::vector<bool>(kPortCount);
  std::uint32_t range_size = 0;
  std::uint32_t reserved = 0;
  std::uint32_t explicit_owned = 0;

  [[nodiscard]] bool in_range(std::uint16_t port) const {
    return port >= config->port_range_lo && port <= config->port_range_hi;
  }
  // A port __inet_hash_connect could hand out: in range, not reserved, no explicit owner.
  [[nodiscard]] bool in_capacity(std::uint16_t port) const {
    return in_range(port) && !config->reserved_ports.test(port) && !explicit_ports[port];
  }
  [[nodiscard]] std::uint32_t capacity() const { return range_size - reserved - explicit_owned; }

  template <typename Socket>
  void mark(const Socket& entry) {
    if (in_tcp_table(entry.proto) && entry.local.port != 0 && holds_port_explicitly_of(entry)) {
      explicit_ports[entry.local.port] = true;
    }
  }

  void count() {
    const std::uint32_t lo = config->port_range_lo;
    const std::uint32_t hi = config->port_range_hi;
    if (hi < lo) {
      return;
    }
    range_size = hi - lo + 1;
    for (std::uint32_t p = lo; p <= hi; ++p) {
      if (config->reserved_ports.test(p)) {
        ++reserved;
      } else if (explicit_ports[p]) {
        ++explicit_owned;
      }
    }
  }
};

NetnsPorts scan_netns(const SocketTable& table, std::uint64_t netns) {
  NetnsPorts ports;
  ports.netns = netns;
  ports.config = &table.config_for(netns);
  for (const SocketEntry& entry : table.sockets) {
    if (entry.netns == netns) {
      ports.mark(entry);
    }
  }
  ports.count();
  return ports;
}

bool same_remote(const Endpoint& a, const Endpoint& b) {
  return a.port == b.port && a.addr.unmapped() == b.addr.unmapped();
}

// The 4-tuple sockets toward one destination whose ports lie in the capacity, in any order.
// Port holders are ranked for SocketEntry groups only: rows carry no owners.
template <typename Socket>
EphemeralAccount account_group(const Destination& destination, const NetnsPorts& ports,
                               std::vector<const Socket*>& group, bool rank_holders) {
  EphemeralAccount account;
  account.destination = destination;
  account.range_size = ports.range_size;
  account.reserved = ports.reserved;
  account.explicit_owned = ports.explicit_owned;
  account.capacity = ports.capacity();

  // By port, stable. Most groups are a few dozen sockets: insertion sort, no buffer to allocate.
  const auto by_port = [](const Socket* a, const Socket* b) {
    return a->local.port < b->local.port;
  };
  if (group.size() <= 64) {
    for (auto it = group.begin(); it != group.end(); ++it) {
      std::rotate(std::upper_bound(group.begin(), it, *it, by_port), it, it + 1);
    }
  } else {
    std::stable_sort(group.begin(), group.end(), by_port);
  }

  std::vector<HeldPort> held;
  for (auto first = group.begin(); first != group.end();) {
    const std::uint16_t port = (*first)->local.port;
    const auto last =
        std::find_if(first, group.end(), [port](const Socket* e) { return e->local.port != port; });
    ++account.in_use;
    const bool only_time_wait =
        std::all_of(first, last, [](const Socket* e) { return is_time_wait(*e); });
    if (only_time_wait) {
      ++account.time_wait;
      Tristate reusable = Tristate::kYes;
      for (auto it = first; it != last; ++it) {
        reusable = all_of({reusable, time_wait_reusable_of(**it, *ports.config, false)});
      }
      if (reusable == Tristate::kYes) {
        ++account.time_wait_reusable;
      } else if (reusable == Tristate::kUnknown) {
        ++account.undecided;
      }
    }
    if constexpr (std::is_same_v<Socket, SocketEntry>) {
      if (rank_holders) {
        const auto live =
            std::find_if(first, last, [](const SocketEntry* e) { return !is_time_wait(*e); });
        held.push_back(HeldPort{live == last ? *first : *live, only_time_wait});
      }
    }
    first = last;
  }
  finish_account(account);
  if (rank_holders) {
    account.holders = rank_port_holders(held);
  }
  return account;
}

// Destinations as plain integers: sorting 200,000 sockets by this is several times faster than
// by Destination, whose comparison walks byte arrays.
struct DestinationKey {
  std::uint64_t netns = 0;
  std::uint64_t source_hi = 0;
  std::uint64_t source_lo = 0;
  std::uint64_t remote_hi = 0;
  std::uint64_t remote_lo = 0;
  std::uint32_t remote_port_and_families = 0;
  auto operator<=>(const DestinationKey&) const = default;  // NOLINT(modernize-use-nullptr)
};

// splitmix64's finalizer over the key's words: a well-mixed 64-bit hash.
std::uint64_t hash_of(const DestinationKey& k) {
  const auto mix = [](std::uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  std::uint64_t h = mix(k.netns);
  for (const std::uint64_t w : {k.source_hi, k.source_lo, k.remote_hi, k.remote_lo,
                                std::uint64_t{k.remote_port_and_families}}) {
    h = mix(h ^ w);
  }
  return h;
}

DestinationKey key_of(const Destination& d) {
  DestinationKey k;
  k.netns = d.netns;
  std::memcpy(&k.source_hi, d.source.bytes().data(), 8);
  std::memcpy(&k.source_lo, d.source.bytes().data() + 8, 8);
  std::memcpy(&k.remote_hi, d.remote.addr.bytes().data(), 8);
  std::memcpy(&k.remote_lo, d.remote.addr.bytes().data() + 8, 8);
  k.remote_port_and_families = (std::uint32_t{d.remote.port} << 16) |
                               (static_cast<std::uint32_t>(d.source.family()) << 8) |
                               static_cast<std::uint32_t>(d.remote.addr.family());
  return k;
}

Destination destination_of(const SocketEntry& entry, std::uint64_t netns) {
  return Destination{netns, entry.local.addr.unmapped(),
                     Endpoint{entry.remote->addr.unmapped(), entry.remote->port}};
}

Destination destination_of(const SocketRow& row, std::uint64_t netns) {
  return Destination{netns, row.local.addr, *row.remote};  // rows are unmapped already
}

}  // namespace

std::vector<PortHolder> rank_port_holders(const std::vector<HeldPort>& held) {
  using HolderKey = std::tuple<bool, std::uint32_t, std::string, bool>;
  std::map<HolderKey, PortHolder> by_owner;
  for (const HeldPort& port : held) {
    const auto& owner = port.representative->owner;
    HolderKey key{owner.has_value(), owner ? owner->pid : 0, owner ? owner->comm : std::string(),
                  port.time_wait_only};
    auto [slot, inserted] = by_owner.try_emplace(std::move(key));
    if (inserted) {
      slot->second.owner = owner;
      slot->second.time_wait = port.time_wait_only;
      slot->second.example = *port.representative;
    }
    ++slot->second.ports;
  }
  std::vector<PortHolder> holders;
  holders.reserve(by_owner.size());
  for (auto& [key, holder] : by_owner) {
    holders.push_back(std::move(holder));
  }
  // Most ports first; on a tie, live owners before TIME_WAIT, whose fix differs.
  std::stable_sort(holders.begin(), holders.end(), [](const PortHolder& a, const PortHolder& b) {
    if (a.ports != b.ports) {
      return a.ports > b.ports;
    }
    return !a.time_wait && b.time_wait;
  });
  if (holders.size() > EphemeralAccount::kMaxHolders) {
    holders.resize(EphemeralAccount::kMaxHolders);
  }
  return holders;
}

std::optional<SocketRow> row_of(const SocketEntry& entry) {
  if (!in_tcp_table(entry.proto)) {
    return std::nullopt;
  }
  SocketRow row;
  row.local = Endpoint{entry.local.addr.unmapped(), entry.local.port};
  if (entry.remote) {
    row.remote = Endpoint{entry.remote->addr.unmapped(), entry.remote->port};
  }
  row.time_wait_remaining = entry.time_wait_remaining;
  row.bound_dev_if = entry.bound_dev_if;
  row.proto = entry.proto;
  row.state = entry.state;
  row.time_wait_substate = entry.time_wait_substate;
  row.timestamps = entry.timestamps;
  row.explicit_port = entry.explicit_port;
  return row;
}

std::vector<SocketRow> rows_of(const std::vector<SocketEntry>& sockets) {
  std::vector<SocketRow> rows;
  rows.reserve(sockets.size());
  for (const SocketEntry& entry : sockets) {
    if (auto row = row_of(entry)) {
      rows.push_back(*row);
    }
  }
  return rows;
}

void finish_account(EphemeralAccount& account) {
  account.available = account.capacity - account.in_use + account.time_wait_reusable;
  account.utilization = account.capacity == 0 ? 1.0
                                              : 1.0 - static_cast<double>(account.available) /
                                                          static_cast<double>(account.capacity);
}

bool holds_port_explicitly(const SocketEntry& entry) { return holds_port_explicitly_of(entry); }
bool holds_port_explicitly(const SocketRow& row) { return holds_port_explicitly_of(row); }

bool occupies_four_tuple(const SocketEntry& entry) { return occupies_four_tuple_of(entry); }
bool occupies_four_tuple(const SocketRow& row) { return occupies_four_tuple_of(row); }

Tristate time_wait_reusable_by_connect(const SocketEntry& time_wait, const NetnsPortConfig& config,
                                       bool port_bound_before_connect) {
  return time_wait_reusable_of(time_wait, config, port_bound_before_connect);
}
Tristate time_wait_reusable_by_connect(const SocketRow& time_wait, const NetnsPortConfig& config,
                                       bool port_bound_before_connect) {
  return time_wait_reusable_of(time_wait, config, port_bound_before_connect);
}

EphemeralAccount account_destination(const SocketTable& table, const Destination& destination) {
  const NetnsPorts ports = scan_netns(table, destination.netns);
  const IpAddress source = destination.source.unmapped();
  std::vector<const SocketEntry*> group;
  for (const SocketEntry& entry : table.sockets) {
    if (entry.netns == destination.netns && occupies_four_tuple(entry) &&
        entry.local.addr.unmapped() == source && same_remote(*entry.remote, destination.remote) &&
        ports.in_capacity(entry.local.port)) {
      group.push_back(&entry);
    }
  }
  Destination normalized = destination;
  normalized.source = source;
  normalized.remote.addr = destination.remote.addr.unmapped();
  return account_group<SocketEntry>(normalized, ports, group, true);
}

namespace {

// ports_of(socket) is the NetnsPorts of the socket's netns.
template <typename Socket, typename PortsOf>
std::vector<EphemeralAccount> account_destinations(const std::vector<Socket>& sockets,
                                                   PortsOf ports_of, bool rank_holders) {
  // Grouped by a 64-bit hash of the destination, then by the destination itself where a hash
  // is shared: 16-byte elements sort fast, and a collision costs time, never correctness.
  struct Candidate {
    std::uint64_t hash = 0;
    std::uint32_t index = 0;  // into sockets
  };
  const auto key_at = [&](const Candidate& c) {
    const Socket& entry = sockets[c.index];
    return key_of(destination_of(entry, ports_of(entry).netns));
  };
  std::vector<Candidate> candidates;
  candidates.reserve(sockets.size());
  for (std::uint32_t i = 0; i < sockets.size(); ++i) {
    const Socket& entry = sockets[i];
    const NetnsPorts& ports = ports_of(entry);
    if (occupies_four_tuple_of(entry) && ports.in_capacity(entry.local.port)) {
      candidates.push_back(Candidate{hash_of(key_of(destination_of(entry, ports.netns))), i});
    }
  }
  // LSD radix sort on the hash, a byte per pass: linear, and stable, so a destination's sockets
  // stay in table order (which picks its holders' examples).
  std::vector<Candidate> scratch(candidates.size());
  for (unsigned shift = 0; shift < 64; shift += 8) {
    std::array<std::size_t, 257> offset{};
    for (const Candidate& c : candidates) {
      ++offset[((c.hash >> shift) & 0xffU) + 1];
    }
    for (std::size_t d = 1; d < offset.size(); ++d) {
      offset[d] += offset[d - 1];
    }
    for (const Candidate& c : candidates) {
      scratch[offset[(c.hash >> shift) & 0xffU]++] = c;
    }
    candidates.swap(scratch);
  }

  std::vector<EphemeralAccount> accounts;
  std::vector<const Socket*> group;
  for (auto first = candidates.begin(); first != candidates.end();) {
    const auto last = std::find_if(first, candidates.end(),
                                   [&](const Candidate& c) { return c.hash != first->hash; });
    const DestinationKey key = key_at(*first);
    if (!std::all_of(first + 1, last, [&](const Candidate& c) { return key_at(c) == key; })) {
      std::stable_sort(first, last, [&](const Candidate& a, const Candidate& b) {
        return key_at(a) < key_at(b);
      });
    }
    for (auto g = first; g != last;) {
      const DestinationKey group_key = key_at(*g);
      const auto g_end =
          std::find_if(g, last, [&](const Candidate& c) { return key_at(c) != group_key; });
      group.clear();
      for (auto it = g; it != g_end; ++it) {
        group.push_back(&sockets[it->index]);
      }
      const NetnsPorts& ports = ports_of(*group.front());
      accounts.push_back(account_group<Socket>(destination_of(*group.front(), ports.netns), ports,
                                               group, rank_holders));
      g = g_end;
    }
    first = last;
  }
  // Callers get destinations in order, as before; sorting 10,000 accounts is cheap.
  std::sort(accounts.begin(), accounts.end(),
            [](const auto& a, const auto& b) { return *a.destination < *b.destination; });
  return accounts;
}

}  // namespace

std::vector<EphemeralAccount> account_by_destination(const SocketTable& table) {
  // One pass marks every netns's explicit owners; counting is O(range) per netns.
  std::map<std::uint64_t, NetnsPorts> netns_ports;
  for (const SocketEntry& entry : table.sockets) {
    auto [it, inserted] = netns_ports.try_emplace(entry.netns);
    if (inserted) {
      it->second.netns = entry.netns;
      it->second.config = &table.config_for(entry.netns);
    }
    it->second.mark(entry);
  }
  for (auto& [netns, ports] : netns_ports) {
    ports.count();
  }
  return account_destinations(
      table.sockets,
      [&netns_ports](const SocketEntry& entry) -> const NetnsPorts& {
        return netns_ports.at(entry.netns);
      },
      true);
}

std::vector<EphemeralAccount> count_by_destination(std::uint64_t netns,
                                                   const NetnsPortConfig& config,
                                                   const std::vector<SocketRow>& rows) {
  NetnsPorts ports;
  ports.netns = netns;
  ports.config = &config;
  for (const SocketRow& row : rows) {
    ports.mark(row);
  }
  ports.count();
  return account_destinations(
      rows, [&ports](const SocketRow& /*row*/) -> const NetnsPorts& { return ports; }, false);
}

}  // namespace portlens
