#include "tests/kernel/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>

namespace portlens::testing {

using namespace std::chrono_literals;

Process::Process(const std::vector<std::string>& argv) {
  int out[2];
  int err[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe");
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw std::runtime_error("pipe");
  }
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));  // NOLINT: execv's signature
  }
  args.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
}

Process::~Process() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  ::close(out_fd_);
  ::close(err_fd_);
}

bool Process::wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline || !pump(50ms)) {
      return done();
    }
  }
  return true;
}

bool Process::wait_for_stderr(const std::string& needle, std::chrono::milliseconds timeout) {
  return wait_until([&] { return err_.find(needle) != std::string::npos; }, timeout);
}

int Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      break;
    }
    pump(20ms);
  }
  exited_ = true;
  while (pump(0ms)) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void Process::signal(int signo) const { kill(pid_, signo); }

bool Process::pump(std::chrono::milliseconds timeout) {
  std::array<pollfd, 2> fds{{{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}}};
  if (::poll(fds.data(), fds.size(), static_cast<int>(timeout.count())) < 0) {
    return errno == EINTR;
  }
  bool open = false;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    if ((fds[i].revents & (POLLIN | POLLHUP)) == 0) {
      open = open || fds[i].fd >= 0;
      continue;
    }
    std::array<char, 4096> buf{};
    const ssize_t n = read(fds[i].fd, buf.data(), buf.size());
    if (n > 0) {
      (i == 0 ? out_ : err_).append(buf.data(), static_cast<std::size_t>(n));
      open = true;
    }
  }
  return open;
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::size_t start = 0;
  for (std::size_t nl = text.find('\n'); nl != std::string::npos; nl = text.find('\n', start)) {
    const std::string line = text.substr(start, nl - start);
    start = nl + 1;
    if (!line.empty()) {
      out.push_back(nlohmann::json::parse(line, nullptr, false));
    }
  }
  return out;
}

CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");  // NOLINT(cert-env33-c): the test's own command
  if (pipe == nullptr) {
    return result;
  }
  std::array<char, 512> buf{};
  while (fgets(buf.data(), buf.size(), pipe) != nullptr) {
    result.output += buf.data();
  }
  const int status = pclose(pipe);
  result.status = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string own_comm() {
  std::ifstream in("/proc/self/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

}  // namespace portlens::testing
