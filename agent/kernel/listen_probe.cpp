#include "agent/kernel/listen_probe.hpp"

#include <fstream>
#include <sstream>
#include <string>

#include "agent/kernel/netns.hpp"
#include "agent/kernel/netns_config.hpp"
#include "agent/kernel/sock_diag.hpp"
#include "agent/model/error.hpp"

namespace portlens {
namespace {

// Through thread-self: the thread that entered the namespace reads that namespace's counters.
std::optional<std::uint64_t> listen_overflows_here() {
  std::ifstream in("/proc/thread-self/net/netstat");
  if (!in.is_open()) {
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_netstat_counter(text.str(), "TcpExt", "ListenOverflows");
}

}  // namespace

std::map<std::uint64_t, NetnsListeners> ListenQueueProbe::probe(
    const std::vector<std::uint64_t>& inodes) {
  const std::lock_guard lock(mutex_);
  std::map<std::uint64_t, NetnsListeners> out;
  bool rediscovered = false;
  for (const std::uint64_t inode : inodes) {
    auto it = refs_.find(inode);
    if ((it == refs_.end() || !still_refers_to(it->second)) && !rediscovered) {
      // Once per probe at most: a walk of /proc costs what the processes are.
      rediscovered = true;
      refs_.clear();
      for (NetnsRef& ns : discover_netns()) {
        refs_.emplace(ns.inode, std::move(ns));
      }
      it = refs_.find(inode);
    }
    if (it == refs_.end() || !still_refers_to(it->second)) {
      continue;
    }
    try {
      NetnsListeners listeners = run_in_netns(it->second, [this](std::uint64_t here) {
        NetnsListeners l;
        l.cut = sock_diag_listen_queues(here, max_per_netns_, &l.queues);
        l.overflows = listen_overflows_here();
        return l;
      });
      out.emplace(inode, std::move(listeners));
    } catch (const Error&) {
      continue;  // gone between the check and the entering, or refused: no series this time
    }
  }
  return out;
}

}  // namespace portlens
