#include "agent/kernel/preflight.hpp"

#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>

#include "agent/model/error.hpp"

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
  if (exists(paths.debugfs_tracing + "/events")) {
    return paths.debugfs_tracing;
  }
  if (exists(paths.tracefs + "/events")) {
    return paths.tracefs;
  }
  if (mount("nodev", paths.tracefs.c_str(), "tracefs", 0, nullptr) != 0) {
    const int err = errno;
    throw Error("tracefs is not mounted and mounting it at " + paths.tracefs +
                " failed: " + errno_text(err) +
                "; mount it (mount -t tracefs nodev /sys/kernel/tracing) or run as root");
  }
  if (!exists(paths.tracefs + "/events")) {
    throw Error("tracefs mounted at " + paths.tracefs +
                " has no events/ directory: the kernel lacks tracepoint support "
                "(CONFIG_TRACEPOINTS, CONFIG_FTRACE_SYSCALLS)");
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

void require_preflight(const PreflightPaths& paths) {
  const auto problems = run_preflight(paths);
  if (problems.empty()) {
    return;
  }
  std::string msg = problems.front().what;
  if (problems.size() > 1) {
    msg += " (and " + std::to_string(problems.size() - 1) + " more problem" +
           (problems.size() > 2 ? "s" : "") + "; run with -v to see them)";
  }
  throw Error(msg);
}

}  // namespace portlens
