// Kernel-test harness: private network namespaces, real sockets inside them, and a tracer that
// skips the test when BPF cannot be loaded, or fails it when PORTLENS_REQUIRE_BPF=1 (CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "agent/kernel/bpf_tracer.hpp"
#include "agent/model/event.hpp"
#include "tests/support/netns_sandbox.hpp"

namespace portlens::testing {

bool bpf_required();

// A socket file descriptor, closed on destruction. Every call returns 0 or an errno value.
class TestSocket {
 public:
  TestSocket(int family, int type);
  ~TestSocket();
  TestSocket(const TestSocket&) = delete;
  TestSocket& operator=(const TestSocket&) = delete;
  TestSocket(TestSocket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  TestSocket& operator=(TestSocket&&) = delete;

  [[nodiscard]] int fd() const { return fd_; }
  TestSocket& reuseaddr();
  TestSocket& reuseport();
  TestSocket& v6only();
  int bind(const std::string& addr, std::uint16_t port) const;
  int listen(int backlog = 16) const;
  int connect(const std::string& addr, std::uint16_t port) const;
  int accept_one() const;  // returns the accepted fd (caller closes) or -errno
  std::uint16_t local_port() const;
  void close();

 private:
  int fd_ = -1;
};

// A tracer plus what it has delivered so far, decoded.
class TraceSession {
 public:
  explicit TraceSession(const TracerConfig& config) : tracer_(config) {}

  // Polls until done(events) holds or timeout passes; returns done's last answer.
  bool wait_for(const std::function<bool(const std::vector<Event>&)>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Polls until nothing new arrives for quiet, bounded by timeout.
  void drain(std::chrono::milliseconds quiet = std::chrono::milliseconds(300),
             std::chrono::milliseconds timeout = std::chrono::seconds(5));

  [[nodiscard]] const std::vector<Event>& events() const { return events_; }
  [[nodiscard]] std::uint64_t malformed() const { return malformed_; }
  [[nodiscard]] DropCounters drops() const { return tracer_.drops(); }

 private:
  int poll_once(std::chrono::milliseconds timeout);

  BpfTracer tracer_;
  std::vector<Event> events_;
  std::uint64_t malformed_ = 0;
};

// Starts a session, or explains why it cannot (then the caller skips or fails).
std::unique_ptr<TraceSession> try_trace(const TracerConfig& config, std::string* why);

// Base fixture: skips (or, with PORTLENS_REQUIRE_BPF=1, fails) without root, before making the
// namespace that every kernel test works in.
class KernelTest : public ::testing::Test {
 protected:
  void SetUp() override;
  NetnsSandbox& ns() { return *ns_; }

 private:
  std::optional<NetnsSandbox> ns_;
};

// Events of one kind, in order.
std::vector<Event> calls_of(const std::vector<Event>& events, EventType type);

}  // namespace portlens::testing

// Starts a TraceSession into `var`; skips the test when BPF is unavailable, fails it when
// PORTLENS_REQUIRE_BPF=1.
// NOLINTBEGIN(bugprone-macro-parentheses): var names a variable being declared.
#define PORTLENS_START_TRACE(var, config)                                            \
  std::string var##_why;                                                             \
  auto var = ::portlens::testing::try_trace((config), &var##_why);                   \
  if (!var) {                                                                        \
    if (::portlens::testing::bpf_required()) {                                       \
      FAIL() << "PORTLENS_REQUIRE_BPF=1 but BPF could not be loaded: " << var##_why; \
    }                                                                                \
    GTEST_SKIP() << "BPF unavailable (" << var##_why                                 \
                 << "); set PORTLENS_REQUIRE_BPF=1 to make this a failure";          \
  }
// NOLINTEND(bugprone-macro-parentheses)
