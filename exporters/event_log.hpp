// The JSON Lines event log of `portlens agent --event-log PATH`: one diagnosed failure per line,
// size-capped with numbered rotation (PATH.1 newest ... PATH.<keep> oldest), reopened on SIGHUP
// for an external logrotate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace portlens {

// What the log has done since it was made; write failures (a full disk) are counted here and
// never thrown, so the agent keeps running without its log.
struct EventLogStats {
  std::uint64_t lines_written = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t write_failures = 0;
  std::uint64_t rotations = 0;
};

class EventLog {
 public:
  static constexpr std::uint64_t kDefaultMaxBytes = std::uint64_t{64} << 20;
  static constexpr std::size_t kDefaultKeep = 3;

  // Opens (creating, mode 0640) or appends to path. Throws Error with one line saying what to
  // do when it cannot: a missing directory, a directory as path, no permission.
  // A path that is not a regular file (/dev/stdout) is written but never rotated.
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
  void append(const nlohmann::json& event);

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
  void adopt(int fd);  // requires mutex_
  void rotate();       // requires mutex_

  const std::string path_;
  const std::uint64_t max_bytes_;
  const std::size_t keep_;

  mutable std::mutex mutex_;
  int fd_ = -1;
  bool regular_file_ = false;
  std::uint64_t size_ = 0;  // of the open file, as far as this process wrote it
  EventLogStats stats_;
};

}  // namespace portlens
