// Network namespaces named the ways users name them: `ip netns` names, paths, pid:PID.
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "agent/kernel/kernel_only.hpp"
#include "agent/model/netns_ref.hpp"

namespace portlens {

// "blue" -> /run/netns/blue; "/proc/42/ns/net" or any path; "pid:42" -> /proc/42/ns/net.
// Throws UsageError with a clear message when the spec names no network namespace.
NetnsRef resolve_netns(std::string_view spec);
// Its first step, without opening anything: the path a spec names. Throws UsageError for an
// empty spec, a bad pid:PID, "." and "..".
std::string netns_spec_to_path(std::string_view spec);

// The network namespace of the calling thread.
NetnsRef current_netns();

// Finds a file that refers to the network namespace with this inode: the caller's own,
// /run/netns/*, or some process's /proc/PID/ns/net. nullopt when no process is left in it.
std::optional<NetnsRef> find_netns_by_inode(std::uint32_t inode);

// Every network namespace this process can reach: its own, /run/netns/*, and each distinct one
// in /proc/*/ns/net (containers), one path per inode. At most max_namespaces.
std::vector<NetnsRef> discover_netns(std::size_t max_namespaces = 4096);

// The calling thread's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14+): unlike the
// inode, never reused by a later namespace. 0 when the kernel cannot tell.
std::uint64_t current_netns_cookie();

// Whether ns.path still refers to the namespace with inode ns.inode (a path to a namespace
// that was deleted may now name another one, or nothing).
bool still_refers_to(const NetnsRef& ns);

// A file for the namespace with this inode: /proc/PID/ns/net of the process that made an event
// when it is still in it, else find_netns_by_inode().
std::optional<NetnsRef> find_netns_of(std::uint32_t inode, std::uint32_t pid);

// setns(CLONE_NEWNET) for the calling thread only; returns the namespace's inode. Throws Error.
std::uint64_t enter_netns(const NetnsRef& ns);

// Runs fn(inode) in a thread of its own that has entered ns and ends with it, so that no other
// thread's namespace ever changes; returns what fn returns and rethrows what fn or the entering
// throws.
template <typename Fn>
auto run_in_netns(const NetnsRef& ns, Fn&& fn) -> std::invoke_result_t<Fn, std::uint64_t> {
  using Result = std::invoke_result_t<Fn, std::uint64_t>;
  std::exception_ptr error;
  if constexpr (std::is_void_v<Result>) {
    std::thread([&] {
      try {
        fn(enter_netns(ns));
      } catch (...) {
        error = std::current_exception();
      }
    }).join();
    if (error) {
      std::rethrow_exception(error);
    }
  } else {
    std::optional<Result> out;
    std::thread([&] {
      try {
        out.emplace(fn(enter_netns(ns)));
      } catch (...) {
        error = std::current_exception();
      }
    }).join();
    if (error) {
      std::rethrow_exception(error);
    }
    return std::move(*out);
  }
}

}  // namespace portlens
