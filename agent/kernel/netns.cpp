#include "agent/kernel/netns.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <set>
#include <system_error>

#include "agent/model/error.hpp"
#include "agent/model/fd.hpp"

namespace portlens {

std::string netns_spec_to_path(std::string_view spec) {
  if (spec.empty()) {
    throw UsageError("--netns: empty value; give an `ip netns` name, a path or pid:PID");
  }
  if (spec.starts_with("pid:")) {
    const std::string_view digits = spec.substr(4);
    unsigned pid = 0;
    const auto* end = digits.data() + digits.size();
    const auto [ptr, ec] = std::from_chars(digits.data(), end, pid);
    if (digits.empty() || ec != std::errc() || ptr != end || pid == 0) {
      throw UsageError("--netns " + std::string(spec) + ": expected pid:PID with a process id");
    }
    return "/proc/" + std::to_string(pid) + "/ns/net";
  }
  if (spec.find('/') != std::string_view::npos) {
    return std::string(spec);
  }
  if (spec == "." || spec == "..") {
    throw UsageError("--netns " + std::string(spec) + ": not a namespace name");
  }
  return "/run/netns/" + std::string(spec);
}

NetnsRef resolve_netns(std::string_view spec) {
  const std::string path = netns_spec_to_path(spec);
  // O_NONBLOCK: a FIFO (or a device) named by mistake must not hang the command.
  const Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    const int err = errno;
    std::string hint;
    if (err == ENOENT && path.starts_with("/run/netns/")) {
      hint = " (no such `ip netns` name; `ip netns list` shows them)";
    } else if (err == ENOENT && path.starts_with("/proc/")) {
      hint = " (no such process)";
    }
    throw UsageError("--netns " + std::string(spec) + ": cannot open " + path + ": " +
                     errno_text(err) + hint);
  }
  // NS_GET_NSTYPE tells a namespace file from any other file, and its kind.
  const int type = ioctl(fd.get(), NS_GET_NSTYPE);
  struct stat st {};
  const int stat_rc = fstat(fd.get(), &st);
  if (type != CLONE_NEWNET || stat_rc != 0) {
    throw UsageError("--netns " + std::string(spec) + ": " + path + " is not a network namespace");
  }
  return {path, static_cast<std::uint32_t>(st.st_ino)};
}

NetnsRef current_netns() {
  // /proc/thread-self: a thread that entered another namespace with setns() sees its own.
  return resolve_netns("/proc/thread-self/ns/net");
}

namespace {

std::optional<std::uint32_t> inode_of(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return std::nullopt;
  }
  return static_cast<std::uint32_t>(st.st_ino);
}

}  // namespace

std::optional<NetnsRef> find_netns_by_inode(std::uint32_t inode) {
  if (inode_of("/proc/thread-self/ns/net") == inode) {
    return NetnsRef{"/proc/thread-self/ns/net", inode};
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
    if (inode_of(entry.path().string()) == inode) {
      return NetnsRef{entry.path().string(), inode};
    }
  }
  DIR* proc = opendir("/proc");
  if (proc == nullptr) {
    return std::nullopt;
  }
  std::optional<NetnsRef> found;
  while (const dirent* de = readdir(proc)) {
    if (de->d_name[0] < '1' || de->d_name[0] > '9') {
      continue;
    }
    const std::string path = std::string("/proc/") + de->d_name + "/ns/net";
    if (inode_of(path) == inode) {
      found = NetnsRef{path, inode};
      break;
    }
  }
  closedir(proc);
  return found;
}

std::vector<NetnsRef> discover_netns(std::size_t max_namespaces) {
  std::vector<NetnsRef> out;
  std::set<std::uint32_t> seen;
  const auto add = [&](const std::string& path) {
    const auto inode = inode_of(path);
    if (inode && out.size() < max_namespaces && seen.insert(*inode).second) {
      out.push_back(NetnsRef{path, *inode});
    }
  };
  add("/proc/thread-self/ns/net");
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
    add(entry.path().string());
  }
  if (DIR* proc = opendir("/proc")) {
    while (const dirent* de = readdir(proc)) {
      if (de->d_name[0] >= '1' && de->d_name[0] <= '9') {
        add(std::string("/proc/") + de->d_name + "/ns/net");
      }
    }
    closedir(proc);
  }
  return out;
}

std::uint64_t enter_netns(const NetnsRef& ns) {
  const Fd fd(open(ns.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    throw Error("cannot open network namespace " + ns.path + ": " + errno_text(errno));
  }
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) {
    throw Error("cannot read network namespace " + ns.path + ": " + errno_text(errno));
  }
  // Already there (the caller's own namespace): nothing to enter, and no privilege needed, so
  // `why` and `check` work unprivileged in the namespace they run in.
  struct stat own {};
  if (stat("/proc/thread-self/ns/net", &own) == 0 && own.st_dev == st.st_dev &&
      own.st_ino == st.st_ino) {
    return st.st_ino;
  }
  if (setns(fd.get(), CLONE_NEWNET) != 0) {
    const int err = errno;
    throw Error("cannot enter network namespace " + ns.path + ": " + errno_text(err) +
                (err == EPERM ? " (run as root: entering a namespace needs CAP_SYS_ADMIN)" : ""));
  }
  return st.st_ino;
}

std::uint64_t current_netns_cookie() {
  const Fd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  std::uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (!fd || getsockopt(fd.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) {
    return 0;
  }
  return cookie;
}

bool still_refers_to(const NetnsRef& ns) { return inode_of(ns.path) == ns.inode; }

std::optional<NetnsRef> find_netns_of(std::uint32_t inode, std::uint32_t pid) {
  if (pid != 0) {
    const std::string path = "/proc/" + std::to_string(pid) + "/ns/net";
    if (inode_of(path) == inode) {
      return NetnsRef{path, inode};
    }
  }
  return find_netns_by_inode(inode);
}

}  // namespace portlens
