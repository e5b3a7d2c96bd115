// Errors that end a command with one clear line for the user.
#pragma once

#include <stdexcept>
#include <string>

namespace portlens {

// A failure the user can act on. what() is the whole message: what went wrong and what to do.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, int exit_code = 1)
      : std::runtime_error(message), exit_code_(exit_code) {}
  [[nodiscard]] int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Bad input on the command line: exit code 2, as for CLI11's own parse errors.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message, 2) {}
};

// "Operation not permitted" for errno values, std::strerror without its thread-safety trap.
std::string errno_text(int err);

}  // namespace portlens
