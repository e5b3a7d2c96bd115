#include "exporters/event_log.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <optional>
#include <utility>

#include "agent/model/error.hpp"

namespace portlens {
namespace {

std::string directory_of(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

// The kernel's own file systems, where open(O_CREAT) fails (ENOENT in /proc, EACCES in /sys even
// for root): name the file system, not a missing directory or a permission.
std::optional<std::string> pseudo_filesystem(const std::string& dir) {
  struct statfs fs {};
  if (statfs(dir.c_str(), &fs) != 0) {
    return std::nullopt;
  }
  switch (static_cast<std::uint64_t>(fs.f_type)) {
    case PROC_SUPER_MAGIC:
      return "proc";
    case SYSFS_MAGIC:
      return "sysfs";
    case CGROUP_SUPER_MAGIC:
    case CGROUP2_SUPER_MAGIC:
      return "cgroup";
    case DEBUGFS_MAGIC:
      return "debugfs";
    case TRACEFS_MAGIC:
      return "tracefs";
    case BPF_FS_MAGIC:
      return "bpf";
    default:
      return std::nullopt;
  }
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Why path cannot be opened for appending, given the errno open(2) gave, and what to do.
std::string open_problem(const std::string& path, int err) {
  const std::string dir = directory_of(path);
  if (const auto fs = pseudo_filesystem(dir)) {
    return dir + " is on the kernel's " + *fs +
           " file system, where no log file can be made; give a path on a disk with "
           "--event-log PATH";
  }
  switch (err) {
    case EISDIR:
      return "it is a directory; give a file path with --event-log PATH";
    case ENOENT:
      if (is_directory(dir)) {
        return errno_text(err) + " although " + dir +
               " exists (its file system does not let files be made); give another "
               "--event-log PATH";
      }
      return "the directory " + dir + " does not exist; create it or give another --event-log PATH";
    case ENOTDIR:
      return "a component of the path is not a directory; give another --event-log PATH";
    case ELOOP:
      return "too many symbolic links (a loop?); give another --event-log PATH";
    case EACCES:
    case EPERM:
    case EROFS:
      return errno_text(err) + "; make " + dir +
             " writable for portlens or give another --event-log PATH";
    default:
      return errno_text(err) + "; give another --event-log PATH";
  }
}

// One line the user can act on, by the errno open(2) gave.
Error open_error(const std::string& path, int err) {
  if (path.empty()) {
    return Error("--event-log: the path is empty; give a file path, as in --event-log " +
                 std::string("/var/log/portlens/events.jsonl"));
  }
  const std::string what = "cannot open the event log " + path + ": ";
  // open() follows a symbolic link and fails on what it points to: say so, and about the target.
  struct stat st {};
  if (err != ELOOP && lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    std::error_code ec;
    const std::filesystem::path target = std::filesystem::read_symlink(path, ec);
    if (!ec) {
      const std::filesystem::path resolved =
          target.is_absolute() ? target : std::filesystem::path(directory_of(path)) / target;
      return Error(what + "it is a symbolic link to " + target.string() + ", which cannot be " +
                   "opened: " + open_problem(resolved.string(), err));
    }
  }
  return Error(what + open_problem(path, err));
}

// Writes line whole with write(2), through EINTR and short writes. On failure (ENOSPC part way
// through) a regular file gets the partial line cut off again, so every line in it stays whole.
bool write_whole_line(int fd, bool regular_file, const std::string& line) {
  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (done == line.size()) {
    return true;
  }
  if (done > 0 && regular_file) {
    struct stat st {};
    // Cut the partial line off, so that the next one starts on a line of its own; if even that
    // fails, the reader sees one malformed line, and the failure is counted either way.
    if (fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) >= done &&
        ::ftruncate(fd, st.st_size - static_cast<off_t>(done)) != 0) {
      return false;
    }
  }
  return false;
}

}  // namespace

EventLog::EventLog(std::string path, std::uint64_t max_bytes, std::size_t keep)
    : path_(std::move(path)), max_bytes_(max_bytes), keep_(keep) {
  const int fd = open_path();
  if (fd < 0) {
    throw open_error(path_, errno);
  }
  adopt(fd);
}

EventLog::~EventLog() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

int EventLog::open_path() const {
  return ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

void EventLog::adopt(int fd) {
  struct stat st {};
  const bool known = fstat(fd, &st) == 0;
  if (fd_ >= 0) {
    ::close(fd_);
  }
  fd_ = fd;
  regular_file_ = known && S_ISREG(st.st_mode);
  size_ = regular_file_ ? static_cast<std::uint64_t>(st.st_size) : 0;
}

void EventLog::append(const nlohmann::json& event) {
  // replace: a comm with invalid UTF-8 must not cost the whole line (dump would throw).
  std::string line = event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');

  const std::lock_guard lock(mutex_);
  if (fd_ < 0) {
    // The last rotation could not open a fresh file; try again rather than give up for good.
    const int fd = open_path();
    if (fd < 0) {
      ++stats_.write_failures;
      return;
    }
    adopt(fd);
  }
  if (regular_file_ && size_ > 0 && size_ + line.size() > max_bytes_) {
    rotate();
  }
  if (fd_ < 0 || !write_whole_line(fd_, regular_file_, line)) {
    ++stats_.write_failures;
    return;
  }
  size_ += line.size();
  ++stats_.lines_written;
  stats_.bytes_written += line.size();
}

void EventLog::rotate() {
  // Oldest first, so every rename moves into a free name; the last one replaces PATH.<keep>,
  // which drops the oldest file.
  for (std::size_t i = keep_; i > 1; --i) {
    const std::string from = path_ + "." + std::to_string(i - 1);
    const std::string to = path_ + "." + std::to_string(i);
    ::rename(from.c_str(), to.c_str());
  }
  const int moved =
      keep_ == 0 ? ::unlink(path_.c_str()) : ::rename(path_.c_str(), (path_ + ".1").c_str());
  if (moved != 0 && errno != ENOENT) {
    // Cannot move it away (a read-only directory): keep appending to the file we have.
    return;
  }
  ++stats_.rotations;
  const int fd = open_path();
  if (fd < 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  adopt(fd);
}

std::optional<std::string> EventLog::reopen() {
  const int fd = open_path();
  if (fd < 0) {
    return open_error(path_, errno).what();
  }
  const std::lock_guard lock(mutex_);
  adopt(fd);
  return std::nullopt;
}

EventLogStats EventLog::stats() const {
  const std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace portlens
