// Network namespaces named the ways users name them: `ip netns` names, paths, pid:PID.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace portlens {

struct NetnsRef {
  std::string path;         // a file that refers to the namespace
  std::uint32_t inode = 0;  // what the kernel reports as the netns (ns.inum)
};

// "blue" -> /run/netns/blue; "/proc/42/ns/net" or any path; "pid:42" -> /proc/42/ns/net.
// Throws UsageError with a clear message when the spec names no network namespace.
NetnsRef resolve_netns(std::string_view spec);

// The network namespace of the calling thread.
NetnsRef current_netns();

}  // namespace portlens
