#include "agent/kernel/owners.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <memory>

#include "agent/model/fd.hpp"

namespace portlens {
namespace {

struct DirCloser {
  void operator()(DIR* d) const { closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

std::optional<std::uint32_t> parse_pid(const char* name) {
  std::uint32_t pid = 0;
  const std::string_view s(name);
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), pid);
  if (ec != std::errc() || ptr != s.data() + s.size() || pid == 0) {
    return std::nullopt;
  }
  return pid;
}

std::string read_comm(int pid_dir_fd) {
  const Fd fd(openat(pid_dir_fd, "comm", O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return {};
  }
  std::array<char, 64> buf{};
  const ssize_t n = read(fd.get(), buf.data(), buf.size() - 1);
  if (n <= 0) {
    return {};
  }
  std::string comm(buf.data(), static_cast<std::size_t>(n));
  if (!comm.empty() && comm.back() == '\n') {
    comm.pop_back();
  }
  return comm;
}

}  // namespace

std::optional<std::uint64_t> parse_socket_link(std::string_view target) {
  constexpr std::string_view kPrefix = "socket:[";
  if (!target.starts_with(kPrefix) || !target.ends_with(']')) {
    return std::nullopt;
  }
  const std::string_view digits = target.substr(kPrefix.size(), target.size() - kPrefix.size() - 1);
  std::uint64_t inode = 0;
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), inode);
  if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size()) {
    return std::nullopt;
  }
  return inode;
}

void SocketOwnerMap::scan(const std::string& proc_root) {
  owners_.clear();
  dropped_ = 0;
  const DirPtr proc(opendir(proc_root.c_str()));
  if (!proc) {
    return;
  }
  while (const dirent* de = readdir(proc.get())) {
    const auto pid = parse_pid(de->d_name);
    if (!pid) {
      continue;
    }
    // Work relative to the pid's directory: a process that exits mid-scan just ends the walk.
    const Fd pid_fd(openat(dirfd(proc.get()), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!pid_fd) {
      continue;
    }
    Fd fd_dir(openat(pid_fd.get(), "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_dir) {
      continue;
    }
    const DirPtr fds(fdopendir(fd_dir.get()));
    if (!fds) {
      continue;
    }
    static_cast<void>(fd_dir.release());  // the DIR owns it now
    std::string comm;                     // read once per process, and only when it holds a socket
    while (const dirent* fe = readdir(fds.get())) {
      std::array<char, 64> target{};
      const ssize_t n = readlinkat(dirfd(fds.get()), fe->d_name, target.data(), target.size());
      if (n <= 0) {
        continue;
      }
      const auto inode =
          parse_socket_link(std::string_view(target.data(), static_cast<std::size_t>(n)));
      if (!inode) {
        continue;
      }
      if (comm.empty()) {
        comm = read_comm(pid_fd.get());
      }
      const auto it = owners_.find(*inode);
      if (it != owners_.end()) {
        if (*pid < it->second.pid) {
          it->second = SocketOwner{*pid, comm};
        }
        continue;
      }
      if (owners_.size() >= max_entries_) {
        ++dropped_;
        continue;
      }
      owners_.emplace(*inode, SocketOwner{*pid, comm});
    }
  }
}

std::optional<SocketOwner> SocketOwnerMap::find(std::uint64_t inode) const {
  const auto it = owners_.find(inode);
  if (it == owners_.end()) {
    return std::nullopt;
  }
  return it->second;
}

void SocketOwnerMap::attribute(SocketTable& table) const {
  for (auto& s : table.sockets) {
    if (!s.owner && s.inode != 0) {
      s.owner = find(s.inode);
    }
  }
}

}  // namespace portlens
