#include "agent/kernel/preflight.hpp"

#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

namespace portlens {
namespace {

// CAP_PERFMON and CAP_BPF (Linux 5.8) may be missing from older libc headers.
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;
constexpr int kCapSysAdmin = 21;

bool has_effective_cap(int cap) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  std::array<__user_cap_data_struct, 2> data{};
  if (syscall(SYS_capget, &header, data.data()) != 0) {
    return false;
  }
  const auto word = static_cast<std::size_t>(cap / 32);
  return (data[word].effective & (1U << (cap % 32))) != 0U;
}

bool exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

// Whether DIR/events can be used: libbpf reads events/CATEGORY/NAME/id from it.
struct EventsAccess {
  enum State { kUsable, kAbsent, kDenied };
  State state = kAbsent;
  int err = 0;  // the errno that made it absent or denied
};

EventsAccess events_access(const std::string& dir) {
  const std::string events = dir + "/events";
  struct stat st {};
  if (stat(events.c_str(), &st) != 0) {
    const int err = errno;
    return {err == EACCES || err == EPERM ? EventsAccess::kDenied : EventsAccess::kAbsent, err};
  }
  if (access(events.c_str(), R_OK | X_OK) != 0) {
    return {EventsAccess::kDenied, errno};
  }
  return {EventsAccess::kUsable, 0};
}

// Whether the mount table (/proc/self/mounts) lists a tracefs mounted at dir.
bool tracefs_mounted_at(const std::string& mounts, const std::string& dir) {
  std::ifstream in(mounts);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string source;
    std::string target;
    std::string type;
    if (fields >> source >> target >> type && type == "tracefs" && target == dir) {
      return true;
    }
  }
  return false;
}

std::string unreadable(const std::string& dir, bool mounted, int err) {
  return (mounted ? "tracefs is mounted at " + dir + " but this process cannot read it"
                  : "this process cannot read " + dir + "/events") +
         " (" + errno_text(err) +
         "): run as root, or let portlens's user read it (mount -o remount,mode=755 " + dir + ")";
}

std::string no_events(const std::string& dir) {
  return "tracefs mounted at " + dir +
         " has no events/ directory: the kernel lacks tracepoint support "
         "(CONFIG_TRACEPOINTS, CONFIG_FTRACE_SYSCALLS)";
}

}  // namespace

const std::vector<std::string>& required_tracepoints() {
  static const std::vector<std::string> kTracepoints = {
      "syscalls/sys_enter_bind",  "syscalls/sys_exit_bind",     "syscalls/sys_enter_listen",
      "syscalls/sys_exit_listen", "syscalls/sys_enter_connect", "syscalls/sys_exit_connect",
      "sock/inet_sock_set_state", "tcp/tcp_receive_reset",      "tcp/tcp_destroy_sock",
  };
  return kTracepoints;
}

std::string ensure_tracefs(const PreflightPaths& paths) {
  // libbpf looks in debugfs's tracing directory first, then in tracefs's own mount point.
  const EventsAccess debugfs = events_access(paths.debugfs_tracing);
  if (debugfs.state == EventsAccess::kUsable) {
    return paths.debugfs_tracing;
  }
  const EventsAccess tracefs = events_access(paths.tracefs);
  if (tracefs.state == EventsAccess::kUsable) {
    return paths.tracefs;
  }
  const bool mounted = tracefs_mounted_at(paths.mounts, paths.tracefs);
  if (tracefs.state == EventsAccess::kDenied) {
    throw Error(unreadable(paths.tracefs, mounted, tracefs.err));
  }
  if (mounted) {
    throw Error(no_events(paths.tracefs));
  }
  if (mount("nodev", paths.tracefs.c_str(), "tracefs", 0, nullptr) != 0) {
    const int err = errno;
    // The one in debugfs is there but closed to this process: that is the problem to name.
    if (debugfs.state == EventsAccess::kDenied) {
      throw Error(unreadable(paths.debugfs_tracing,
                             tracefs_mounted_at(paths.mounts, paths.debugfs_tracing), debugfs.err) +
                  " (and mounting tracefs at " + paths.tracefs + " failed: " + errno_text(err) +
                  ")");
    }
    throw Error("tracefs is not mounted (neither at " + paths.tracefs + " nor at " +
                paths.debugfs_tracing + ") and mounting it at " + paths.tracefs +
                " failed: " + errno_text(err) +
                "; mount it (mount -t tracefs nodev /sys/kernel/tracing) or run as root");
  }
  const EventsAccess fresh = events_access(paths.tracefs);
  if (fresh.state == EventsAccess::kDenied) {
    throw Error(unreadable(paths.tracefs, true, fresh.err));
  }
  if (fresh.state == EventsAccess::kAbsent) {
    throw Error(no_events(paths.tracefs));
  }
  return paths.tracefs;
}

std::vector<PreflightProblem> run_preflight(const PreflightPaths& paths) {
  std::vector<PreflightProblem> problems;
  const bool root = geteuid() == 0;
  const bool caps = has_effective_cap(kCapSysAdmin) ||
                    (has_effective_cap(kCapBpf) && has_effective_cap(kCapPerfmon));
  if (!root && !caps) {
    problems.push_back(
        {"portlens needs root, or CAP_BPF and CAP_PERFMON, to load its BPF "
         "programs: run it with sudo, or grant them with `setcap cap_bpf,cap_perfmon+ep` "
         "(enough for trace; the agent needs cap_sys_admin,cap_sys_ptrace,cap_dac_read_search "
         "to see every namespace and socket owner)"});
  }
  if (!exists(paths.btf)) {
    problems.push_back({"this kernel has no BTF (" + paths.btf +
                        " is missing): portlens's CO-RE programs need a kernel built with "
                        "CONFIG_DEBUG_INFO_BTF=y (Debian's own kernels have it)"});
  }
  std::string tracing;
  try {
    tracing = ensure_tracefs(paths);
  } catch (const Error& e) {
    problems.push_back({e.what()});
    return problems;
  }
  for (const auto& tp : required_tracepoints()) {
    if (!exists(tracing + "/events/" + tp)) {
      const bool syscall_tp = tp.starts_with("syscalls/");
      problems.push_back({"the kernel has no tracepoint " + tp + " (" + tracing + "/events/" + tp +
                          "): " +
                          (syscall_tp ? "it needs CONFIG_FTRACE_SYSCALLS=y"
                                      : "it needs a kernel of 4.16 or newer")});
    }
  }
  return problems;
}

namespace {

std::string first_and_count(const std::vector<PreflightProblem>& problems) {
  std::string msg = problems.empty() ? std::string() : problems.front().what;
  if (problems.size() > 1) {
    msg += " (and " + std::to_string(problems.size() - 1) + " more problem" +
           (problems.size() > 2 ? "s" : "") + "; run with -v to see them)";
  }
  return msg;
}

}  // namespace

PreflightError::PreflightError(std::vector<PreflightProblem> problems)
    : Error(first_and_count(problems)), problems_(std::move(problems)) {}

void require_preflight(const PreflightPaths& paths) {
  auto problems = run_preflight(paths);
  if (!problems.empty()) {
    throw PreflightError(std::move(problems));
  }
}

}  // namespace portlens
