#include "tests/kernel/harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "agent/kernel/preflight.hpp"
#include "agent/model/error.hpp"

namespace portlens::testing {
namespace {

sockaddr_storage make_sockaddr(const std::string& addr, std::uint16_t port, socklen_t* len) {
  sockaddr_storage ss{};
  if (addr.find(':') == std::string::npos) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    if (inet_pton(AF_INET, addr.c_str(), &sin->sin_addr) != 1) {
      throw std::invalid_argument("bad IPv4 address " + addr);
    }
    *len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    if (inet_pton(AF_INET6, addr.c_str(), &sin6->sin6_addr) != 1) {
      throw std::invalid_argument("bad IPv6 address " + addr);
    }
    *len = sizeof(sockaddr_in6);
  }
  return ss;
}

int setopt(int fd, int level, int name) {
  const int one = 1;
  return setsockopt(fd, level, name, &one, sizeof one) == 0 ? 0 : errno;
}

}  // namespace

bool bpf_required() {
  const char* v = std::getenv("PORTLENS_REQUIRE_BPF");  // NOLINT(concurrency-mt-unsafe)
  return v != nullptr && std::string(v) == "1";
}

TestSocket::TestSocket(int family, int type) : fd_(::socket(family, type | SOCK_CLOEXEC, 0)) {
  if (fd_ < 0) {
    throw std::runtime_error("socket(): " + errno_text(errno));
  }
}

TestSocket::~TestSocket() { close(); }

void TestSocket::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

TestSocket& TestSocket::reuseaddr() {
  if (setopt(fd_, SOL_SOCKET, SO_REUSEADDR) != 0) {
    throw std::runtime_error("SO_REUSEADDR");
  }
  return *this;
}

TestSocket& TestSocket::reuseport() {
  if (setopt(fd_, SOL_SOCKET, SO_REUSEPORT) != 0) {
    throw std::runtime_error("SO_REUSEPORT");
  }
  return *this;
}

TestSocket& TestSocket::v6only() {
  if (setopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY) != 0) {
    throw std::runtime_error("IPV6_V6ONLY");
  }
  return *this;
}

int TestSocket::bind(const std::string& addr, std::uint16_t port) const {
  socklen_t len = 0;
  const sockaddr_storage ss = make_sockaddr(addr, port, &len);
  return ::bind(fd_, reinterpret_cast<const sockaddr*>(&ss), len) == 0 ? 0 : errno;
}

int TestSocket::listen(int backlog) const { return ::listen(fd_, backlog) == 0 ? 0 : errno; }

int TestSocket::connect(const std::string& addr, std::uint16_t port) const {
  socklen_t len = 0;
  const sockaddr_storage ss = make_sockaddr(addr, port, &len);
  return ::connect(fd_, reinterpret_cast<const sockaddr*>(&ss), len) == 0 ? 0 : errno;
}

int TestSocket::accept_one() const {
  const int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  return fd >= 0 ? fd : -errno;
}

std::uint16_t TestSocket::local_port() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return 0;
  }
  if (ss.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
}

int TraceSession::poll_once(std::chrono::milliseconds timeout) {
  return tracer_.poll(timeout, [this](std::span<const std::byte> record) {
    DecodeResult r = decode_event(record);
    if (r.event) {
      events_.push_back(std::move(*r.event));
    } else {
      ++malformed_;
    }
  });
}

bool TraceSession::wait_for(const std::function<bool(const std::vector<Event>&)>& done,
                            std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done(events_)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    poll_once(std::chrono::milliseconds(50));
  }
  return true;
}

void TraceSession::drain(std::chrono::milliseconds quiet, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto last = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < deadline) {
    if (poll_once(std::chrono::milliseconds(50)) > 0) {
      last = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - last >= quiet) {
      return;
    }
  }
}

void KernelTest::SetUp() {
  if (geteuid() != 0) {
    if (bpf_required()) {
      FAIL() << "PORTLENS_REQUIRE_BPF=1 but not running as root: kernel tests need root";
    }
    GTEST_SKIP() << "kernel tests need root (network namespaces and BPF)";
  }
  ns_.emplace();
}

std::unique_ptr<TraceSession> try_trace(const TracerConfig& config, std::string* why) {
  try {
    require_preflight();
    return std::make_unique<TraceSession>(config);
  } catch (const Error& e) {
    *why = e.what();
    return nullptr;
  }
}

std::vector<Event> calls_of(const std::vector<Event>& events, EventType type) {
  std::vector<Event> out;
  for (const auto& e : events) {
    if (e.type == type) {
      out.push_back(e);
    }
  }
  return out;
}

}  // namespace portlens::testing
