// Accept queues (issue 13), judged against the kernel: what `portlens why --json` says of a
// listener's queue must be what `ss -ltn` shows (Recv-Q: sk_ack_backlog, Send-Q:
// sk_max_ack_backlog), its namespace's overflow count what /proc/net/netstat counts, and the
// connections waiting in the queue must be named as the listener's.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "agent/kernel/netns_config.hpp"
#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr std::uint16_t kPort = 7460;

// A file descriptor closed on destruction.
struct OwnedFd {
  int fd = -1;
  explicit OwnedFd(int f) : fd(f) {}
  ~OwnedFd() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  OwnedFd(OwnedFd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  OwnedFd& operator=(OwnedFd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
};

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

// A listener on 127.0.0.1:port with this backlog, made in the caller's namespace; never accepts.
OwnedFd listener(std::uint16_t port, int backlog) {
  OwnedFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const sockaddr_in sa = loopback(port);
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
  if (s.fd < 0 || ::bind(s.fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(s.fd, backlog) != 0) {
    return OwnedFd(-1);
  }
  return s;
}

// n non-blocking connect()s toward 127.0.0.1:port: the handshakes the queue has room for
// complete, the others are dropped by the kernel and retried.
std::vector<OwnedFd> clients(std::uint16_t port, int n) {
  std::vector<OwnedFd> out;
  const sockaddr_in sa = loopback(port);
  for (int i = 0; i < n; ++i) {
    OwnedFd c(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
    (void)::connect(c.fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);  // EINPROGRESS
    out.push_back(std::move(c));
  }
  return out;
}

struct SsQueue {
  long recv_q = -1;  // the accept queue's length
  long send_q = -1;  // its limit
};

// `ss -Hltn` for the listener on port in the namespace: what the kernel reports.
std::optional<SsQueue> ss_listener(const NetnsSandbox& ns, std::uint16_t port) {
  const CommandResult r = run_command("ip netns exec " + ns.name() +
                                      " ss -Hltn 'sport = :" + std::to_string(port) + "'");
  std::istringstream in(r.output);
  std::string state;
  SsQueue q;
  if (r.status != 0 || !(in >> state >> q.recv_q >> q.send_q) || state != "LISTEN") {
    return std::nullopt;
  }
  return q;
}

// TcpExtListenOverflows of the namespace, read from inside it.
std::optional<std::uint64_t> listen_overflows(const NetnsSandbox& ns) {
  return ns.run([]() -> std::optional<std::uint64_t> {
    std::ifstream f("/proc/thread-self/net/netstat");
    std::stringstream text;
    text << f.rdbuf();
    return parse_netstat_counter(text.str(), "TcpExt", "ListenOverflows");
  });
}

json why_json(const NetnsSandbox& ns, std::uint16_t port, const std::string& snapshot) {
  Process p({PORTLENS_BINARY, "why", std::to_string(port), "--json", "--netns", ns.name(),
             "--snapshot", snapshot, "--api.socket", "/nonexistent/portlens.sock"});
  const int code = p.wait(20s);
  EXPECT_EQ(code, 0) << p.err();
  return json::parse(p.out(), nullptr, false);
}

class AcceptQueueTest : public ::testing::Test {
 protected:
  NetnsSandbox ns_{"portlens-aq"};
};

// listen(1) and no accept(), 12 clients: two handshakes complete (sk_acceptq_is_full() is
// ack_backlog > max_ack_backlog), the rest overflow. Both snapshot sources must show the queue
// as ss does, the overflows as netstat counts them, and the two queued connections as waiting in
// this process's listener.
TEST_F(AcceptQueueTest, FullQueueAgreesWithSsAndNetstat) {
  OwnedFd l = ns_.run([] { return listener(kPort, 1); });
  ASSERT_GE(l.fd, 0) << "listen(1) failed";
  const auto before = listen_overflows(ns_);
  ASSERT_TRUE(before.has_value());
  std::vector<OwnedFd> cs = ns_.run([] { return clients(kPort, 12); });
  // The queue fills within a round trip on loopback; bounded wait for ss to show it.
  std::optional<SsQueue> ss;
  for (int i = 0; i < 50; ++i) {
    ss = ss_listener(ns_, kPort);
    if (ss && ss->recv_q == 2) {
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(ss.has_value());
  ASSERT_EQ(ss->recv_q, 2) << "the kernel queued a different number than expected";
  ASSERT_EQ(ss->send_q, 1);

  for (const std::string snapshot : {"bpf", "sock_diag"}) {
    SCOPED_TRACE(snapshot);
    const auto low = listen_overflows(ns_);
    const json doc = why_json(ns_, kPort, snapshot);
    const auto high = listen_overflows(ns_);
    ASSERT_TRUE(doc.is_object());
    ASSERT_EQ(doc["listeners"].size(), 1U) << doc.dump();
    const json& q = doc["listeners"][0]["accept_queue"];
    ASSERT_TRUE(q.is_object()) << doc.dump();
    EXPECT_EQ(q["length"], ss->recv_q);
    EXPECT_EQ(q["limit"], ss->send_q);
    EXPECT_EQ(q["full"], true);
    if (snapshot == "bpf") {
      EXPECT_TRUE(q["syn_queue"].is_number()) << q.dump();
    } else {
      EXPECT_TRUE(q["syn_queue"].is_null()) << "sock_diag does not show it";
    }
    // SYNs are retried while portlens reads: its count lies between two readings of netstat.
    ASSERT_TRUE(doc["listen_overflows"].is_number()) << doc.dump();
    ASSERT_TRUE(low && high);
    EXPECT_GE(doc["listen_overflows"].get<std::uint64_t>(), *low);
    EXPECT_LE(doc["listen_overflows"].get<std::uint64_t>(), *high);
    EXPECT_GT(*high, *before) << "10 clients found the queue full: the kernel counts overflows";
    // The queued connections: the kernel's two, each named as this process's listener's.
    EXPECT_EQ(doc["connections"]["in_accept_queues"], ss->recv_q) << doc.dump();
    int named = 0;
    for (const json& c : doc["connections"]["sockets"]) {
      if (c.value("in_accept_queue", false)) {
        ++named;
        EXPECT_EQ(c["in_accept_queue_of"]["pid"], ::getpid()) << c.dump();
      }
    }
    EXPECT_EQ(named, ss->recv_q);
  }
}

// The same full queue as the agent exports it: portlens_listen_queue_length and _limit equal to
// ss's Recv-Q and Send-Q, and portlens_listen_overflows_total within two readings of the
// namespace's TcpExtListenOverflows taken around the scrape. Then the queue drains (the test
// accepts): the gauge follows the kernel down.
TEST_F(AcceptQueueTest, AgentExportsTheQueueAndOverflowsAsTheKernelCounts) {
  if (geteuid() != 0) {
    if (bpf_required()) {
      FAIL() << "PORTLENS_REQUIRE_BPF=1 but not root";
    }
    GTEST_SKIP() << "needs root";
  }
  PORTLENS_START_AGENT(agent);
  OwnedFd l = ns_.run([] { return listener(kPort, 1); });
  ASSERT_GE(l.fd, 0) << "listen(1) failed";
  const auto before = listen_overflows(ns_);
  ASSERT_TRUE(before.has_value());
  std::vector<OwnedFd> cs = ns_.run([] { return clients(kPort, 12); });
  std::optional<SsQueue> ss;
  for (int i = 0; i < 50 && !(ss && ss->recv_q == 2); ++i) {
    std::this_thread::sleep_for(20ms);
    ss = ss_listener(ns_, kPort);
  }
  ASSERT_TRUE(ss.has_value());
  ASSERT_EQ(ss->recv_q, 2);

  const std::map<std::string, std::string> labels = {{"netns", std::to_string(ns_.inode())},
                                                     {"local_addr", "127.0.0.1"},
                                                     {"local_port", std::to_string(kPort)}};
  // The listener's series exist once the agent's tracker has the listen() (an event away).
  std::string text = agent.scrape_until(
      [&](const std::string& t) { return metric(t, "portlens_listen_queue_length", labels) == 2; });
  EXPECT_EQ(metric(text, "portlens_listen_queue_length", labels), ss->recv_q) << text;
  EXPECT_EQ(metric(text, "portlens_listen_queue_limit", labels), ss->send_q);
  const auto low = listen_overflows(ns_);
  text = agent.scrape();
  const auto high = listen_overflows(ns_);
  ASSERT_TRUE(low && high);
  const auto overflows =
      metric(text, "portlens_listen_overflows_total", {{"netns", std::to_string(ns_.inode())}});
  ASSERT_TRUE(overflows.has_value()) << text;
  std::cout << "overflows: netstat " << *low << ".." << *high << ", portlens " << *overflows
            << " (before the clients: " << *before << ")\n";
  EXPECT_GE(*overflows, static_cast<double>(*low));
  EXPECT_LE(*overflows, static_cast<double>(*high));
  EXPECT_GT(*high, *before) << "10 clients found the queue full: the kernel counts overflows";

  // accept() both: the kernel's queue is empty, and so is the gauge at the next scrape.
  ns_.run([&] {
    for (int i = 0; i < 2; ++i) {
      const int fd = ::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        ::close(fd);
      }
    }
  });
  ss = ss_listener(ns_, kPort);
  ASSERT_TRUE(ss.has_value());
  text = agent.scrape();
  EXPECT_EQ(metric(text, "portlens_listen_queue_length", labels), ss->recv_q)
      << "ss now says " << ss->recv_q;
  EXPECT_TRUE(passes_promtool(agent.dir(), text));
  EXPECT_EQ(agent.stop(), 0);
}

// listen(4096) with net.core.somaxconn 128: the kernel clamps the limit to 128; portlens says the
// limit is somaxconn's.
TEST_F(AcceptQueueTest, BacklogClampedBySomaxconnIsReported) {
  ns_.sysctl("net.core.somaxconn", "128");
  OwnedFd l = ns_.run([] { return listener(kPort, 4096); });
  ASSERT_GE(l.fd, 0);
  const auto ss = ss_listener(ns_, kPort);
  ASSERT_TRUE(ss.has_value());
  ASSERT_EQ(ss->send_q, 128) << "the kernel did not clamp the backlog";
  const json doc = why_json(ns_, kPort, "bpf");
  ASSERT_TRUE(doc.is_object());
  ASSERT_EQ(doc["listeners"].size(), 1U) << doc.dump();
  const json& q = doc["listeners"][0]["accept_queue"];
  EXPECT_EQ(q["limit"], ss->send_q);
  EXPECT_EQ(q["length"], ss->recv_q);
  EXPECT_EQ(q["somaxconn"], 128);
  EXPECT_EQ(q["limit_is_somaxconn"], true);

  // Text: the clamp is said in words.
  Process p({PORTLENS_BINARY, "why", std::to_string(kPort), "--netns", ns_.name(), "--api.socket",
             "/nonexistent/portlens.sock"});
  ASSERT_EQ(p.wait(20s), 0) << p.err();
  EXPECT_NE(p.out().find("accept queue 0 of 128"), std::string::npos) << p.out();
  EXPECT_NE(p.out().find("net.core.somaxconn (128)"), std::string::npos) << p.out();
}

// A listener below somaxconn keeps the backlog it asked for and is not said to be clamped.
TEST_F(AcceptQueueTest, BacklogBelowSomaxconnIsKept) {
  ns_.sysctl("net.core.somaxconn", "128");
  OwnedFd l = ns_.run([] { return listener(kPort, 7); });
  ASSERT_GE(l.fd, 0);
  const auto ss = ss_listener(ns_, kPort);
  ASSERT_TRUE(ss.has_value());
  ASSERT_EQ(ss->send_q, 7);
  const json doc = why_json(ns_, kPort, "sock_diag");
  ASSERT_TRUE(doc.is_object());
  ASSERT_EQ(doc["listeners"].size(), 1U) << doc.dump();
  const json& q = doc["listeners"][0]["accept_queue"];
  EXPECT_EQ(q["limit"], 7);
  EXPECT_EQ(q["full"], false);
  EXPECT_EQ(q["limit_is_somaxconn"], false);
}

// Two processes listening on one port with SO_REUSEPORT (haproxy's and nginx's reuseport
// workers): both are listed, said to share the port, and both PIDs are named.
TEST_F(AcceptQueueTest, SharedReuseportListenersAreNamedAsAGroup) {
  const std::string script =
      "import socket,sys,time\n"
      "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n"
      "s.bind(('127.0.0.1', " +
      std::to_string(kPort) +
      ")); s.listen(8)\n"
      "print('ready', flush=True); time.sleep(30)\n";
  Process other({"/usr/bin/ip", "netns", "exec", ns_.name(), "/usr/bin/python3", "-c", script});
  ASSERT_TRUE(other.wait_until([&] { return other.out().find("ready") != std::string::npos; }, 10s))
      << other.err();
  OwnedFd mine = ns_.run([] {
    OwnedFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int one = 1;
    const sockaddr_in sa = loopback(kPort);
    if (s.fd < 0 || ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
        ::bind(s.fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0 ||
        ::listen(s.fd, 8) != 0) {
      return OwnedFd(-1);
    }
    return s;
  });
  ASSERT_GE(mine.fd, 0) << "the kernel refused the second SO_REUSEPORT listener";
  const CommandResult ss = run_command("ip netns exec " + ns_.name() +
                                       " ss -Hltn 'sport = :" + std::to_string(kPort) + "'");
  ASSERT_EQ(std::count(ss.output.begin(), ss.output.end(), '\n'), 2) << ss.output;

  const json doc = why_json(ns_, kPort, "bpf");
  ASSERT_TRUE(doc.is_object());
  ASSERT_EQ(doc["listeners"].size(), 2U) << doc.dump();
  std::vector<int> pids;
  for (const json& l : doc["listeners"]) {
    EXPECT_EQ(l["reuseport_group_size"], 2) << l.dump();
    pids.push_back(l["pid"].is_number() ? l["pid"].get<int>() : -1);
  }
  std::sort(pids.begin(), pids.end());
  std::vector<int> expected{static_cast<int>(::getpid()), static_cast<int>(other.pid())};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(pids, expected);

  Process text({PORTLENS_BINARY, "why", std::to_string(kPort), "--netns", ns_.name(),
                "--api.socket", "/nonexistent/portlens.sock"});
  ASSERT_EQ(text.wait(20s), 0) << text.err();
  EXPECT_NE(text.out().find("2 listeners share 127.0.0.1:" + std::to_string(kPort) +
                            " with SO_REUSEPORT"),
            std::string::npos)
      << text.out();
  EXPECT_NE(text.out().find("pid " + std::to_string(other.pid())), std::string::npos);
  EXPECT_NE(text.out().find("pid " + std::to_string(::getpid())), std::string::npos);
  other.signal(SIGTERM);
  other.wait(5s);
}

}  // namespace
}  // namespace portlens::testing
