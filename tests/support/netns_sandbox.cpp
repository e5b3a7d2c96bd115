#include "tests/support/netns_sandbox.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace portlens::testing {
namespace {

std::atomic<int> g_counter{0};

void run_or_throw(const std::string& command) {
  // The commands are built from our own names only, never from input.
  if (std::system(command.c_str()) != 0) {  // NOLINT(cert-env33-c)
    throw std::runtime_error("command failed: " + command);
  }
}

}  // namespace

NetnsSandbox::NetnsSandbox(std::string_view prefix)
    : name_(std::string(prefix) + "-" + std::to_string(getpid()) + "-" +
            std::to_string(g_counter.fetch_add(1))) {
  run_or_throw("ip netns add " + name_);
  run_or_throw("ip -n " + name_ + " link set lo up");
  struct stat st {};
  if (stat(path().c_str(), &st) != 0) {
    throw std::runtime_error("cannot stat " + path());
  }
  inode_ = static_cast<std::uint32_t>(st.st_ino);
}

NetnsSandbox::~NetnsSandbox() {
  // Best effort: a leftover namespace must not fail the run that made it. The kernel frees it,
  // and its TIME_WAITs, once nothing refers to it.
  const std::string cmd = "ip netns delete " + name_ + " 2>/dev/null";
  [[maybe_unused]] const int rc = std::system(cmd.c_str());  // NOLINT(cert-env33-c)
}

void NetnsSandbox::enter() const {
  const int fd = open(path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw std::runtime_error("cannot open " + path() + ": " + std::strerror(errno));
  }
  const int rc = setns(fd, CLONE_NEWNET);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    throw std::runtime_error("setns " + path() + ": " + std::strerror(err));
  }
}

void NetnsSandbox::sysctl(const std::string& key, const std::string& value) const {
  std::string rel = key;
  std::replace(rel.begin(), rel.end(), '.', '/');
  // /proc/sys/net follows the network namespace of the thread that opens it.
  run([&] {
    std::ofstream f("/proc/sys/" + rel);
    f << value;
    f.close();
    if (!f) {
      throw std::runtime_error("cannot set " + key + " = " + value + " in " + name_);
    }
  });
}

}  // namespace portlens::testing
