#include "exporters/event_log.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <functional>
#include <optional>
#include <utility>

#include "agent/model/clock.hpp"
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
    case ENXIO:
      return "it is a FIFO that no process has open for reading; start its reader first, or "
             "give a regular file with --event-log PATH";
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

// Writes line whole with write(2), through EINTR and short writes. A non-blocking file that is
// full (a FIFO whose reader is slow) is waited for while wait() says so. On failure (ENOSPC
// part way through) a regular file gets the partial line cut off again, so every line in it
// stays whole. Returns 0, or the errno of the failure.
int write_whole_line(int fd, bool regular_file, const std::string& line,
                     const std::function<bool()>& wait) {
  std::size_t done = 0;
  int err = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait && wait()) {
      pollfd p{fd, POLLOUT, 0};
      static_cast<void>(::poll(&p, 1, 100));
      continue;
    }
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (done == line.size()) {
    return 0;
  }
  if (done > 0 && regular_file) {
    struct stat st {};
    // Cut the partial line off, so that the next one starts on a line of its own; if even that
    // fails, the reader sees one malformed line, and the failure is counted either way.
    if (fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) >= done &&
        ::ftruncate(fd, st.st_size - static_cast<off_t>(done)) != 0) {
      return errno;
    }
  }
  return err;
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
  stop_writer();
  if (fd_ >= 0) {
    ::close(fd_);
  }
  if (pending_fd_ >= 0) {
    ::close(pending_fd_);
  }
}

int EventLog::open_path() const {
  // Non-blocking: a FIFO without a reader fails at once (ENXIO) instead of hanging the start,
  // and a full one makes write() return rather than wait.
  const int fd = ::open(path_.c_str(),
                        O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0640);
  struct stat st {};
  if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    static_cast<void>(::fcntl(fd, F_SETFL, O_WRONLY | O_APPEND));  // a disk file blocks as usual
  }
  return fd;
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
  {
    std::unique_lock lock(queue_mu_);
    if (writer_.joinable()) {
      if (stopping_ || queued_bytes_ + line.size() > max_queued_bytes_) {
        lock.unlock();
        const std::lock_guard stats_lock(stats_mu_);
        ++stats_.dropped;
        return;
      }
      queued_bytes_ += line.size();
      queue_.push_back(std::move(line));
      ++enqueued_;
      lock.unlock();
      queue_cv_.notify_one();
      return;
    }
  }
  write_line(line, false);
}

void EventLog::write_line(const std::string& line, bool may_wait) {
  const std::lock_guard lock(mutex_);
  const auto failed = [this](int err) {
    const std::lock_guard stats_lock(stats_mu_);
    ++stats_.write_failures;
    if (err != 0) {
      stats_.last_write_error = errno_text(err);
    }
  };
  if (fd_ < 0) {
    // The last rotation could not open a fresh file; try again rather than give up for good.
    const int fd = open_path();
    if (fd < 0) {
      failed(errno);
      return;
    }
    adopt(fd);
  }
  if (regular_file_ && size_ > 0 && size_ + line.size() > max_bytes_) {
    rotate();
  }
  if (fd_ < 0) {
    failed(errno);
    return;
  }
  const std::function<bool()> wait = [this, may_wait] {
    const std::uint64_t give_up = give_up_at_ns_.load(std::memory_order_relaxed);
    return may_wait && (give_up == 0 || monotonic_ns() < give_up);
  };
  if (const int err = write_whole_line(fd_, regular_file_, line, wait); err != 0) {
    failed(err);
    return;
  }
  size_ += line.size();
  const std::lock_guard stats_lock(stats_mu_);
  ++stats_.lines_written;
  stats_.bytes_written += line.size();
}

void EventLog::start_writer(std::size_t max_queued_bytes) {
  const std::lock_guard lock(queue_mu_);
  if (writer_.joinable()) {
    return;
  }
  max_queued_bytes_ = max_queued_bytes;
  writer_ = std::thread([this] { run_writer(); });
}

void EventLog::run_writer() {
  for (;;) {
    std::string line;
    int fd = -1;
    {
      std::unique_lock lock(queue_mu_);
      queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty() || pending_fd_ >= 0; });
      std::swap(fd, pending_fd_);
      if (queue_.empty() && fd < 0) {
        return;  // stopping, and everything is written
      }
      if (!queue_.empty()) {
        line = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= line.size();
      }
    }
    if (fd >= 0) {
      const std::lock_guard lock(mutex_);
      adopt(fd);
    }
    if (!line.empty()) {
      write_line(line, true);
      {
        const std::lock_guard lock(queue_mu_);
        ++finished_;
      }
      idle_cv_.notify_all();
    }
  }
}

void EventLog::stop_writer() {
  {
    const std::lock_guard lock(queue_mu_);
    if (!writer_.joinable()) {
      return;
    }
    stopping_ = true;
    give_up_at_ns_ = monotonic_ns() + 500'000'000;
  }
  queue_cv_.notify_all();
  writer_.join();
}

bool EventLog::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(queue_mu_);
  const std::uint64_t target = enqueued_;
  return idle_cv_.wait_for(lock, timeout, [this, target] { return finished_ >= target; });
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
  {
    const std::lock_guard stats_lock(stats_mu_);
    ++stats_.rotations;
  }
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
  {
    // The writer adopts it before its next line; this thread never waits for the file.
    std::unique_lock lock(queue_mu_);
    if (writer_.joinable()) {
      if (pending_fd_ >= 0) {
        ::close(pending_fd_);
      }
      pending_fd_ = fd;
      lock.unlock();
      queue_cv_.notify_one();
      return std::nullopt;
    }
  }
  const std::lock_guard lock(mutex_);
  adopt(fd);
  return std::nullopt;
}

EventLogStats EventLog::stats() const {
  const std::lock_guard lock(stats_mu_);
  return stats_;
}

}  // namespace portlens
