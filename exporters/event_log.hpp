// The JSON Lines event log of `portlens agent --event-log PATH`: one diagnosed failure per line,
// size-capped with numbered rotation (PATH.1 newest ... PATH.<keep> oldest), reopened on SIGHUP
// for an external logrotate. In the agent it is written by a thread of its own through a bounded
// queue, so that a slow disk or a stalled reader of a FIFO never holds up the event loop.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

namespace portlens {

// What the log has done since it was made; write failures (a full disk) are counted here and
// never thrown, so the agent keeps running without its log.
struct EventLogStats {
  std::uint64_t lines_written = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t write_failures = 0;
  std::uint64_t rotations = 0;
  std::uint64_t dropped = 0;     // lines the writer's full queue could not take
  std::string last_write_error;  // why the last failed write failed; empty when none did
};

class EventLog {
 public:
  static constexpr std::uint64_t kDefaultMaxBytes = std::uint64_t{64} << 20;
  static constexpr std::size_t kDefaultKeep = 3;
  static constexpr std::size_t kDefaultQueueBytes = std::size_t{4} << 20;

  // Opens (creating, mode 0640) or appends to path. Throws Error with one line saying what to
  // do when it cannot: a missing directory, a directory as path, no permission, a FIFO that no
  // one reads. A path that is not a regular file (/dev/stdout, a FIFO) is opened non-blocking,
  // written but never rotated.
  explicit EventLog(std::string path, std::uint64_t max_bytes = kDefaultMaxBytes,
                    std::size_t keep = kDefaultKeep);
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;
  EventLog(EventLog&&) = delete;
  EventLog& operator=(EventLog&&) = delete;

  // Writes event as one line with a single write(2), rotating first when the line would take the
  // file past max_bytes (a line larger than max_bytes gets a file of its own). Thread-safe; never
  // throws for I/O: a failed write is counted and leaves no partial line behind.
  // After start_writer() the line is only queued, and append() returns at once.
  void append(const nlohmann::json& event);

  // From now on lines are written by a thread of this log's: append() queues them (at most
  // max_queued_bytes; a line beyond is dropped and counted). A FIFO whose reader stalls, or a
  // slow disk, then holds up that thread only. The destructor writes what is queued, waiting
  // for a stalled reader at most half a second.
  void start_writer(std::size_t max_queued_bytes = kDefaultQueueBytes);
  // Waits at most timeout until every line queued so far is written or has failed; whether it
  // came to that.
  bool flush(std::chrono::milliseconds timeout);

  // Closes and reopens path, for SIGHUP after logrotate has moved the file away. Call it from the
  // main loop once the signal flag is seen, not from the handler (it takes a mutex). Never
  // throws: when path cannot be opened it returns why (one line, what to do) and the log keeps
  // writing to the file it had; nullopt when it reopened.
  std::optional<std::string> reopen();

  [[nodiscard]] EventLogStats stats() const;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  // Opens path_ for appending; -1 and errno on failure.
  [[nodiscard]] int open_path() const;
  void adopt(int fd);                                       // requires mutex_
  void rotate();                                            // requires mutex_
  void write_line(const std::string& line, bool may_wait);  // takes mutex_
  void run_writer();
  void stop_writer();

  const std::string path_;
  const std::uint64_t max_bytes_;
  const std::size_t keep_;

  // The file: held by whoever writes (the writer thread once started), never by a reader of
  // stats() or by reopen(), which hands a new file over through pending_fd_.
  std::mutex mutex_;
  int fd_ = -1;
  bool regular_file_ = false;
  std::uint64_t size_ = 0;  // of the open file, as far as this process wrote it

  mutable std::mutex stats_mu_;
  EventLogStats stats_;

  // The writer's queue.
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::condition_variable idle_cv_;
  std::deque<std::string> queue_;
  std::size_t queued_bytes_ = 0;
  std::size_t max_queued_bytes_ = 0;
  std::uint64_t enqueued_ = 0;  // lines queued, ever
  std::uint64_t finished_ = 0;  // of those, written or failed
  int pending_fd_ = -1;         // a file reopen() opened, for the writer to adopt
  bool stopping_ = false;
  std::atomic<std::uint64_t> give_up_at_ns_{0};  // while stopping: a stalled reader is left then
  std::thread writer_;
};

}  // namespace portlens
