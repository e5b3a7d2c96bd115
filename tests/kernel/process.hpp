// A child process with its stdout and stderr captured, for tests that run the portlens binary.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace portlens::testing {

class Process {
 public:
  // Starts argv[0] (a path) with the given arguments.
  explicit Process(const std::vector<std::string>& argv);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  Process(Process&&) = delete;
  Process& operator=(Process&&) = delete;

  // Reads output until done() holds or timeout passes; returns done()'s last answer.
  bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout);
  bool wait_for_stderr(const std::string& needle, std::chrono::milliseconds timeout);
  // Waits for exit (SIGKILL after timeout); returns the exit code, or 128+signal.
  int wait(std::chrono::milliseconds timeout);

  void signal(int signo) const;
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] const std::string& out() const { return out_; }
  [[nodiscard]] const std::string& err() const { return err_; }

 private:
  bool pump(std::chrono::milliseconds timeout);  // false when both pipes are closed

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  bool exited_ = false;
  std::string out_;
  std::string err_;
};

// The complete JSON lines of text; a line still being written is not parsed, and a line that is
// not JSON becomes a discarded value (is_discarded()) rather than an exception.
std::vector<nlohmann::json> json_lines(const std::string& text);

struct CommandResult {
  int status = -1;  // the exit code, or -1 when the shell could not run or was killed
  std::string output;
};
// Runs a shell command line built by the test itself (never from outside input) and returns its
// exit code and stdout; add 2>&1 to capture stderr too.
CommandResult run_command(const std::string& command);

// This process's comm, as /proc/self/comm gives it: what the socket calls a test makes (and those
// of ns.run's threads, which inherit it) carry in events and comm labels.
std::string own_comm();

}  // namespace portlens::testing
