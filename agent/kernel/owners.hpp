// Which process holds a socket: /proc/PID/fd links of the form socket:[INODE].
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "agent/kernel/kernel_only.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

// A map from socket inode to its owner, built by one pass over /proc. A socket held by several
// processes (after fork) is attributed to the lowest pid, usually the parent that made it.
// Bounded: at most max_entries inodes are kept; what does not fit is counted in dropped().
class SocketOwnerMap {
 public:
  static constexpr std::size_t kDefaultMaxEntries = 4'000'000;

  explicit SocketOwnerMap(std::size_t max_entries = kDefaultMaxEntries)
      : max_entries_(max_entries) {}

  // Rescans proc_root (normally /proc). Processes that vanish or deny access are skipped.
  void scan(const std::string& proc_root = "/proc");

  [[nodiscard]] std::optional<SocketOwner> find(std::uint64_t inode) const;
  [[nodiscard]] std::size_t size() const { return owners_.size(); }
  [[nodiscard]] std::uint64_t dropped() const { return dropped_; }

  // Fills SocketEntry::owner for every entry with an inode and no owner yet.
  void attribute(SocketTable& table) const;

 private:
  std::size_t max_entries_;
  std::unordered_map<std::uint64_t, SocketOwner> owners_;
  std::uint64_t dropped_ = 0;
};

// Parses a /proc/PID/fd link target "socket:[12345]"; nullopt for anything else.
std::optional<std::uint64_t> parse_socket_link(std::string_view target);

}  // namespace portlens
