#include "bench/common.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace portlens::bench {
namespace {

std::atomic<int> g_counter{0};

std::string met_text(Met met) {
  switch (met) {
    case Met::kYes:
      return "yes";
    case Met::kNo:
      return "**no**";
    case Met::kNoAim:
      return "-";
    case Met::kSkipped:
      return "skipped";
  }
  return "?";
}

}  // namespace

void Report::skip(const std::string& figure, const std::string& why) {
  rows_.push_back(Row{figure, "skipped: " + why, "", Met::kSkipped});
}

std::string Report::markdown() const {
  std::ostringstream out;
  out << "| figure | measured | aim | met? |\n|---|---|---|---|\n";
  for (const Row& r : rows_) {
    out << "| " << r.figure << " | " << r.measured << " | " << (r.aim.empty() ? "-" : r.aim)
        << " | " << met_text(r.met) << " |\n";
  }
  return out.str();
}

double median(std::vector<double> values) {
  if (values.empty()) {
    return 0;
  }
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double min_of(const std::vector<double>& values) {
  return values.empty() ? 0 : *std::min_element(values.begin(), values.end());
}

double max_of(const std::vector<double>& values) {
  return values.empty() ? 0 : *std::max_element(values.begin(), values.end());
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string fixed(double value, int decimals) {
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), "%.*f", decimals, value);
  return buf.data();
}

std::string with_commas(std::uint64_t value) {
  std::string digits = std::to_string(value);
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) {
    digits.insert(static_cast<std::size_t>(i), ",");
  }
  return digits;
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a;
  std::string b;
  std::string c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string machine_context() {
  utsname u{};
  const std::string kernel = uname(&u) == 0 ? std::string(u.release) : "unknown";
  std::string model;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.starts_with("model name")) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  std::ostringstream out;
  out << "nproc " << std::thread::hardware_concurrency() << " (" << model << "), kernel " << kernel
      << ", load average " << load_average() << ", open-files limit " << sysconf(_SC_OPEN_MAX);
  return out.str();
}

bool is_root() { return geteuid() == 0; }

bool kernel_required() {
  const char* v = std::getenv("PORTLENS_REQUIRE_BPF");  // NOLINT(concurrency-mt-unsafe)
  return v != nullptr && std::string(v) == "1";
}

AgentProcess::AgentProcess(const std::string& binary, const std::vector<std::string>& extra_args)
    : dir_((std::filesystem::temp_directory_path() / ("portlens-bench-" + std::to_string(getpid()) +
                                                      "-" + std::to_string(g_counter.fetch_add(1))))
               .string()),
      port_(free_port()) {
  if (access(binary.c_str(), X_OK) != 0) {
    throw BenchError("the agent binary " + binary + " is not executable");
  }
  std::filesystem::create_directories(dir_);
  std::vector<std::string> argv = {binary,
                                   "agent",
                                   "--web.listen-address",
                                   "127.0.0.1:" + std::to_string(port_),
                                   "--api.socket",
                                   dir_ + "/api.sock"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (auto& a : argv) {
    args.push_back(a.data());
  }
  args.push_back(nullptr);
  std::array<int, 2> err{};
  if (pipe2(err.data(), O_CLOEXEC) != 0) {
    throw BenchError("pipe");
  }
  started_ = Clock::now();
  pid_ = fork();
  if (pid_ < 0) {
    close(err[0]);
    close(err[1]);
    throw BenchError("fork");
  }
  if (pid_ == 0) {
    const int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  close(err[1]);
  err_fd_ = err[0];
  reader_ = std::thread([this] {
    std::array<char, 4096> buf{};
    for (;;) {
      const ssize_t n = read(err_fd_, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        return;
      }
      const std::lock_guard lock(mu_);
      err_.append(buf.data(), static_cast<std::size_t>(n));
    }
  });
}

AgentProcess::~AgentProcess() {
  if (!exited_) {
    kill(pid_, SIGKILL);
    int status = 0;
    reap(&status);
  }
  if (reader_.joinable()) {
    reader_.join();
  }
  close(err_fd_);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void AgentProcess::reap(int* status) {
  while (waitpid(pid_, status, 0) < 0 && errno == EINTR) {
  }
  exited_ = true;
}

std::string AgentProcess::stderr_text() const {
  const std::lock_guard lock(mu_);
  return err_;
}

double AgentProcess::wait_serving(std::chrono::seconds timeout) {
  const auto deadline = started_ + timeout;
  for (;;) {
    if (stderr_text().find("serving") != std::string::npos) {
      return seconds_since(started_);
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      if (reader_.joinable()) {
        reader_.join();
      }
      throw BenchError("the agent exited before serving:\n" + stderr_text());
    }
    if (Clock::now() >= deadline) {
      throw BenchError("the agent did not say \"serving\" within " +
                       std::to_string(timeout.count()) + " s:\n" + stderr_text());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

int AgentProcess::stop(std::chrono::seconds timeout) {
  if (exited_) {
    return -1;
  }
  kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + timeout;
  int status = 0;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (Clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      reap(&status);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  exited_ = true;
  if (reader_.joinable()) {
    reader_.join();
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string AgentProcess::scrape() const { return http_get(port_, "/metrics"); }

double AgentProcess::cpu_seconds() const {
  std::ifstream f("/proc/" + std::to_string(pid_) + "/stat");
  std::string text;
  std::getline(f, text);
  // Fields after the comm (which may hold spaces): state is field 3, utime 14, stime 15.
  const auto close_paren = text.rfind(')');
  if (close_paren == std::string::npos) {
    return 0;
  }
  std::istringstream in(text.substr(close_paren + 2));
  std::string field;
  double utime = 0;
  double stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) {
      utime = std::stod(field);
    } else if (i == 15) {
      stime = std::stod(field);
    }
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::uint64_t AgentProcess::status_kb(const std::string& field) const {
  std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
  for (std::string line; std::getline(f, line);) {
    if (line.starts_with(field + ":")) {
      return std::stoull(line.substr(field.size() + 1));
    }
  }
  return 0;
}

void AgentProcess::wait_idle(std::chrono::milliseconds quiet, std::chrono::seconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  double last = cpu_seconds();
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(quiet);
    const double now = cpu_seconds();
    // Idle: under 5% of a core over the quiet period (the agent polls every 100 ms).
    if (now - last < 0.05 * std::chrono::duration<double>(quiet).count()) {
      return;
    }
    last = now;
  }
}

}  // namespace portlens::bench
