// `portlens check connect` (issue 13) against the kernel: at every step of filling a narrowed
// ephemeral range toward one destination, its prediction must be what the next real connect()
// then does (a port found, or EADDRNOTAVAIL), with tcp_tw_reuse off and on.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr std::uint16_t kServerPort = 9100;  // outside the range below
constexpr int kRangeSize = 8;

json check_connect(const NetnsSandbox& ns) {
  Process p({PORTLENS_BINARY, "check", "connect", "127.0.0.1:" + std::to_string(kServerPort),
             "--json", "--netns", ns.name()});
  const int code = p.wait(20s);
  json doc = json::parse(p.out(), nullptr, false);
  // The exit code follows the prediction: 0 succeeds, 1 otherwise.
  if (doc.is_object()) {
    EXPECT_EQ(code, doc.value("prediction", "") == "succeeds" ? 0 : 1) << p.out() << p.err();
  } else {
    ADD_FAILURE() << "no JSON from check connect (exit " << code << "): " << p.err();
  }
  return doc;
}

bool reads_eof(int fd) {
  pollfd p{fd, POLLIN, 0};
  char byte = 0;
  return ::poll(&p, 1, 2000) > 0 && ::read(fd, &byte, 1) == 0;
}

class CheckConnectTest : public ::testing::TestWithParam<int> {
 protected:
  NetnsSandbox ns_{"portlens-cc"};
};

TEST_P(CheckConnectTest, AgreesWithTheKernelAtEveryStepOfFillingTheRange) {
  const int tw_reuse = GetParam();
  ns_.sysctl("net.ipv4.ip_local_port_range", "40000 40007");
  ns_.sysctl("net.ipv4.tcp_tw_reuse", std::to_string(tw_reuse));
  auto listener = ns_.run([] { return std::make_unique<TestSocket>(AF_INET, SOCK_STREAM); });
  ASSERT_EQ(listener->bind("127.0.0.1", kServerPort), 0);
  ASSERT_EQ(listener->listen(64), 0);

  std::vector<std::unique_ptr<TestSocket>> held;  // ESTABLISHED clients, kept open
  std::vector<int> accepted;                      // their server sides
  int succeeded = 0;
  int failed = 0;
  int time_waits = 0;
  // Alternate kept connections and TIME_WAITs at first, then keep every connection: the range
  // fills in at most 8 + the TIME_WAITs taken over steps. Bounded at 24 steps.
  for (int step = 0; step < 24 && failed < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step) + ", tcp_tw_reuse " + std::to_string(tw_reuse));
    const json predicted = check_connect(ns_);
    ASSERT_TRUE(predicted.is_object());
    auto client = ns_.run([] { return std::make_unique<TestSocket>(AF_INET, SOCK_STREAM); });
    const int result = client->connect("127.0.0.1", kServerPort);
    ASSERT_TRUE(result == 0 || result == EADDRNOTAVAIL) << "connect(): " << result;
    EXPECT_EQ(predicted["prediction"], result == 0 ? "succeeds" : "fails") << predicted.dump();
    if (result != 0) {
      ++failed;
      EXPECT_EQ(predicted["errno"], "EADDRNOTAVAIL");
      EXPECT_EQ(predicted["ports"]["available"], 0);
      EXPECT_EQ(predicted["diagnosis"]["cause"], "ephemeral_exhausted") << predicted.dump();
      continue;
    }
    ++succeeded;
    EXPECT_GT(predicted["ports"]["available"].get<int>(), 0);
    EXPECT_EQ(predicted["ports"]["capacity"], kRangeSize);
    const int server = listener->accept_one();
    ASSERT_GE(server, 0);
    if (step < 6 && step % 2 == 1) {
      // Client first: the client's port ends in TIME_WAIT toward the server.
      ASSERT_EQ(::shutdown(client->fd(), SHUT_WR), 0);
      ASSERT_TRUE(reads_eof(server));
      ::close(server);
      ASSERT_TRUE(reads_eof(client->fd()));
      client->close();
      ++time_waits;
      if (tw_reuse != 0) {
        // Past tcp_tw_reuse_delay (1 s), so the TIME_WAIT is reusable both when portlens looks
        // and when the kernel connects: the answer cannot change between the two.
        std::this_thread::sleep_for(1200ms);
      }
      continue;
    }
    accepted.push_back(server);  // both sides stay ESTABLISHED
    held.push_back(std::move(client));
  }
  for (const int fd : accepted) {
    ::close(fd);
  }
  EXPECT_EQ(time_waits, 3);
  EXPECT_EQ(failed, 2) << "the range was never exhausted";
  if (tw_reuse == 0) {
    // The TIME_WAITs kept their ports: 8 connections filled the range.
    EXPECT_EQ(succeeded, kRangeSize);
  } else {
    // Each aged TIME_WAIT was taken over once the free ports were gone: its port served twice.
    EXPECT_EQ(succeeded, kRangeSize + time_waits);
  }
}

INSTANTIATE_TEST_SUITE_P(TwReuse, CheckConnectTest, ::testing::Values(0, 1),
                         [](const auto& p) { return "tcp_tw_reuse_" + std::to_string(p.param); });

}  // namespace
}  // namespace portlens::testing
