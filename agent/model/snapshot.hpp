// A snapshot of one network namespace's port owners, as the kernel showed them at one moment.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/model/compact_sockets.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

enum class SnapshotSource : std::uint8_t { kBpfIterator, kSockDiag };
std::string_view to_string(SnapshotSource source);

struct Snapshot {
  SocketTable table;  // sockets of one netns, and its entry in table.netns_config
  // A snapshot taken compact (NamespaceSource::take_compact(), for the reconcile) keeps its
  // sockets here instead, table.sockets staying empty: the same entries in less than half the
  // bytes.
  bool is_compact = false;
  CompactSockets compact;
  SnapshotSource source = SnapshotSource::kBpfIterator;
  std::uint64_t netns = 0;
  // The namespace's cookie (SO_NETNS_COOKIE): unique for the life of the system, unlike the
  // inode, which a new namespace may reuse. 0 when unknown.
  std::uint64_t cookie = 0;
  std::uint64_t truncated = 0;        // sockets seen beyond max_entries
  std::vector<std::string> problems;  // config values that could not be read (defaults kept)
  std::chrono::microseconds elapsed{0};
};

// Moves a snapshot's table.sockets into its compact form (is_compact), and frees the vector.
void make_compact(Snapshot& snapshot);

}  // namespace portlens
