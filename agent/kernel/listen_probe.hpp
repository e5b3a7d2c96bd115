// The accept queues of every TCP listener of a set of network namespaces, and each namespace's
// TcpExtListenOverflows, read at the moment they are asked for (a scrape): the tracker follows no
// queue (a handshake or an accept() makes no event), so the queues are asked of the kernel each
// time, with a LISTEN-only sock_diag dump that costs what the listeners are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "agent/model/netns_ref.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

struct NetnsListeners {
  std::vector<ListenQueue> queues;         // at most max_per_netns
  std::uint64_t cut = 0;                   // listeners beyond it
  std::optional<std::uint64_t> overflows;  // TcpExtListenOverflows of the namespace
};

class ListenQueueProbe {
 public:
  explicit ListenQueueProbe(std::size_t max_per_netns = 4096) : max_per_netns_(max_per_netns) {}

  // The listeners of each namespace of inodes that can still be entered; a namespace that is gone
  // (or cannot be entered) is left out. Safe from any thread: each namespace is entered by a
  // thread of its own, and the paths found are kept (checked before each use, found again by
  // walking /run/netns and /proc when a namespace's path no longer refers to it).
  std::map<std::uint64_t, NetnsListeners> probe(const std::vector<std::uint64_t>& inodes);

 private:
  std::size_t max_per_netns_;
  std::mutex mutex_;
  std::map<std::uint64_t, NetnsRef> refs_;
};

}  // namespace portlens
