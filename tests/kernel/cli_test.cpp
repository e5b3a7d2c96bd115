// End-to-end tests of the portlens binary: it traces while the test makes real calls in a
// private network namespace, and the test reads what it printed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <fstream>
#include <memory>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "agent/kernel/netns_config.hpp"
#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;

// Skips (or fails, in CI) when this process cannot load BPF at all.
#define PORTLENS_REQUIRE_ROOT()                                                     \
  if (geteuid() != 0) {                                                             \
    if (bpf_required()) FAIL() << "PORTLENS_REQUIRE_BPF=1 but not running as root"; \
    GTEST_SKIP() << "needs root to load BPF";                                       \
  }

// Two binds of one address in the namespace: the first succeeds, the second EADDRINUSE.
void make_conflict(NetnsSandbox& ns, std::uint16_t port) {
  const auto [a, b] = ns.run([port] {
    TestSocket s1(AF_INET, SOCK_STREAM);
    TestSocket s2(AF_INET, SOCK_STREAM);
    const int r1 = s1.bind("127.0.0.1", port);
    const int r2 = s2.bind("127.0.0.1", port);
    return std::pair{r1, r2};
  });
  ASSERT_EQ(a, 0);
  ASSERT_EQ(b, EADDRINUSE);
}

using TraceCliTest = KernelTest;

TEST_F(TraceCliTest, JsonLinesCarryTheFailedBindAndSigintPrintsTheSummary) {
  Process p({PORTLENS_BINARY, "trace", "--json", "--netns", ns().name(), "--duration", "60"});
  ASSERT_TRUE(p.wait_for_stderr("Tracing", 20s)) << p.err();
  make_conflict(ns(), 9999);
  std::this_thread::sleep_for(300ms);
  p.signal(SIGINT);
  ASSERT_EQ(p.wait(10s), 0) << p.err();

  const auto lines = json_lines(p.out());
  ASSERT_EQ(lines.size(), 2U) << p.out();
  const auto& ok = lines[0];
  const auto& failed = lines[1];
  EXPECT_EQ(ok["event"], "bind");
  EXPECT_EQ(ok["result"], 0);
  EXPECT_TRUE(ok["errno"].is_null());
  EXPECT_EQ(failed["event"], "bind");
  EXPECT_EQ(failed["proto"], "tcp");
  EXPECT_EQ(failed["family"], "ipv4");
  EXPECT_EQ(failed["local"]["addr"], "127.0.0.1");
  EXPECT_EQ(failed["local"]["port"], 9999);
  EXPECT_TRUE(failed["remote"].is_null());
  EXPECT_EQ(failed["result"], -EADDRINUSE);
  EXPECT_EQ(failed["errno"], "EADDRINUSE");
  EXPECT_EQ(failed["netns"], ns().inode());
  EXPECT_EQ(failed["pid"], getpid());
  EXPECT_EQ(failed["opts"]["reuseaddr"], false);
  EXPECT_FALSE(ok.contains("diagnosis"));  // present exactly when the call failed
  // Two bound (not listening) sockets, neither with SO_REUSEADDR.
  ASSERT_TRUE(failed.contains("diagnosis")) << failed.dump();
  const auto& d = failed["diagnosis"];
  EXPECT_EQ(d["cause"], "missing_reuseaddr");
  EXPECT_FALSE(d["hint"].get<std::string>().empty());
  ASSERT_EQ(d["blockers"].size(), 1U) << d.dump();
  EXPECT_EQ(d["blockers"][0]["state"], "CLOSE");
  EXPECT_EQ(d["blockers"][0]["local"]["port"], 9999);
  EXPECT_EQ(d["blockers"][0]["pid"], getpid());  // the sandbox thread's process made it
  EXPECT_TRUE(d["blockers"][0]["remote"].is_null());
  EXPECT_NE(failed["time"].get<std::string>().find('T'), std::string::npos);
  EXPECT_NE(p.err().find("2 events shown"), std::string::npos) << p.err();
  EXPECT_NE(p.err().find(" 0 lost"), std::string::npos) << p.err();
}

TEST_F(TraceCliTest, FailuresFlagShowsOnlyTheFailedCall) {
  Process p({PORTLENS_BINARY, "trace", "--json", "--failures", "--netns", ns().path(), "--duration",
             "60"});
  ASSERT_TRUE(p.wait_for_stderr("Tracing", 20s)) << p.err();
  make_conflict(ns(), 9998);
  std::this_thread::sleep_for(300ms);
  p.signal(SIGTERM);
  ASSERT_EQ(p.wait(10s), 0) << p.err();
  const auto lines = json_lines(p.out());
  ASSERT_EQ(lines.size(), 1U) << p.out();
  EXPECT_EQ(lines[0]["errno"], "EADDRINUSE");
  EXPECT_EQ(lines[0]["local"]["port"], 9998);
}

TEST_F(TraceCliTest, TableShowsRequestedAddressAndErrnoAndDurationEndsIt) {
  Process p(
      {PORTLENS_BINARY, "trace", "--netns", ns().name(), "--port", "9997", "--duration", "4"});
  ASSERT_TRUE(p.wait_for_stderr("Tracing", 20s)) << p.err();
  make_conflict(ns(), 9997);
  make_conflict(ns(), 9996);             // filtered out by --port
  ASSERT_EQ(p.wait(30s), 0) << p.err();  // --duration ends it without a signal
  std::istringstream in(p.out());
  std::string header;
  std::getline(in, header);
  EXPECT_NE(header.find("RESULT"), std::string::npos);
  std::vector<std::string> rows;
  std::string diagnosis;  // the indented lines under the failed row
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("    ")) {
      diagnosis += line + "\n";
    } else {
      rows.push_back(line);
    }
  }
  ASSERT_EQ(rows.size(), 2U) << p.out();
  EXPECT_NE(rows[1].find("127.0.0.1:9997"), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find("EADDRINUSE"), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find("bind"), std::string::npos) << rows[1];
  EXPECT_NE(diagnosis.find("cause: missing_reuseaddr"), std::string::npos) << p.out();
  EXPECT_NE(diagnosis.find("blocker: tcp CLOSE"), std::string::npos) << p.out();
  EXPECT_EQ(p.out().find("9996"), std::string::npos);
}

TEST(TraceCliPreflightTest, UnprivilegedUserGetsOneClearLineAndExitOne) {
  PORTLENS_REQUIRE_ROOT();
  if (access("/usr/bin/setpriv", X_OK) != 0) {
    GTEST_SKIP() << "setpriv (util-linux) is not installed";
  }
  Process p({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=-all", "--", PORTLENS_BINARY, "trace", "--duration", "1"});
  EXPECT_EQ(p.wait(20s), 1);
  EXPECT_NE(p.err().find("CAP_BPF"), std::string::npos) << p.err();
  EXPECT_EQ(std::count(p.err().begin(), p.err().end(), '\n'), 1) << p.err();
}

TEST(TraceCliPreflightTest, UnknownNamespaceIsAUsageError) {
  Process p({PORTLENS_BINARY, "trace", "--netns", "portlens-no-such-netns"});
  EXPECT_EQ(p.wait(20s), 2);
  EXPECT_NE(p.err().find("ip netns list"), std::string::npos) << p.err();
}

}  // namespace
}  // namespace portlens::testing

namespace portlens::testing {
namespace {

// Reads until EOF (bounded): the peer's FIN arrived.
bool reads_eof(int fd) {
  pollfd p{fd, POLLIN, 0};
  char byte = 0;
  return ::poll(&p, 1, 2000) > 0 && ::read(fd, &byte, 1) == 0;
}

struct ClosedPair {
  std::uint16_t client_port = 0;  // the client's local port
  bool ok = false;
};

// A loopback connection to port, closed one of two ways: a FIN close with the client first (it
// ends in TIME_WAIT), or the client's close with SO_LINGER 0 (an RST, which leaves none; the
// server receives it).
ClosedPair connect_and_close(std::uint16_t port, bool linger_zero) {
  ClosedPair out;
  TestSocket listener(AF_INET, SOCK_STREAM);
  TestSocket client(AF_INET, SOCK_STREAM);
  if (listener.bind("127.0.0.1", port) != 0 || listener.listen() != 0 ||
      client.connect("127.0.0.1", port) != 0) {
    return out;
  }
  const int server = listener.accept_one();
  if (server < 0) {
    return out;
  }
  out.client_port = client.local_port();
  if (linger_zero) {
    const linger l{1, 0};
    out.ok = ::setsockopt(client.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l) == 0;
    client.close();
    pollfd p{server, POLLIN, 0};
    out.ok = out.ok && ::poll(&p, 1, 2000) > 0;  // the RST arrived
  } else {
    out.ok = ::shutdown(client.fd(), SHUT_WR) == 0 && reads_eof(server);
    ::close(server);
    out.ok = out.ok && reads_eof(client.fd());
    client.close();
    return out;
  }
  ::close(server);
  return out;
}

// trace --states tells the closes apart as the kernel made them: the FIN close's FIN_WAIT2->CLOSE
// is said to leave a TIME_WAIT of 60 s, and ss shows that TIME_WAIT; the SO_LINGER 0 close leaves
// none (ss agrees), and the server's side shows the RST it received.
TEST_F(TraceCliTest, StatesTellAFinCloseThatLeftATimeWaitFromAResetClose) {
  PORTLENS_REQUIRE_ROOT();
  Process p(
      {PORTLENS_BINARY, "trace", "--json", "--states", "--netns", ns().name(), "--duration", "60"});
  ASSERT_TRUE(p.wait_for_stderr("Tracing", 20s)) << p.err();
  const ClosedPair fin = ns().run([] { return connect_and_close(9981, false); });
  const ClosedPair rst = ns().run([] { return connect_and_close(9982, true); });
  ASSERT_TRUE(fin.ok && rst.ok);
  const CommandResult ss =
      run_command("ip netns exec " + ns().name() + " ss -Htan state time-wait");
  ASSERT_EQ(ss.status, 0);
  // The kernel's view: one TIME_WAIT, the FIN closer's.
  EXPECT_NE(ss.output.find("127.0.0.1:" + std::to_string(fin.client_port)), std::string::npos)
      << ss.output;
  EXPECT_EQ(ss.output.find("127.0.0.1:" + std::to_string(rst.client_port)), std::string::npos)
      << ss.output;
  std::this_thread::sleep_for(300ms);
  p.signal(SIGINT);
  ASSERT_EQ(p.wait(10s), 0) << p.err();

  const auto lines = json_lines(p.out());
  const auto local_port = [](const nlohmann::json& j) {
    return j["local"].is_object() ? j["local"].value("port", 0) : 0;
  };
  int fin_time_waits = 0;
  int rst_time_waits = 0;
  int resets_received = 0;
  for (const auto& j : lines) {
    if (j.value("event", "") == "reset" && local_port(j) == 9982) {
      ++resets_received;
      EXPECT_EQ(j["old_state"], "ESTABLISHED") << j.dump();
    }
    if (j.value("event", "") != "state" || !j.contains("time_wait_expires_in_s")) {
      continue;
    }
    EXPECT_EQ(j["time_wait_expires_in_s"], 60) << j.dump();
    EXPECT_EQ(j["new_state"], "CLOSE") << j.dump();
    if (local_port(j) == fin.client_port) {
      ++fin_time_waits;
      EXPECT_EQ(j["old_state"], "FIN_WAIT2") << j.dump();
    } else {
      ++rst_time_waits;  // either side of the reset close, or the FIN close's passive side
    }
  }
  EXPECT_EQ(fin_time_waits, 1) << p.out();
  EXPECT_EQ(rst_time_waits, 0) << p.out();
  EXPECT_EQ(resets_received, 1) << p.out();
  // The RST the SO_LINGER 0 close sent, on the client's side (tcp:tcp_send_reset, after
  // tcp_disconnect() set it to CLOSE).
  int resets_sent = 0;
  for (const auto& j : lines) {
    if (j.value("event", "") == "reset_sent" && local_port(j) == rst.client_port) {
      ++resets_sent;
      EXPECT_EQ(j["old_state"], "CLOSE") << j.dump();
    }
  }
  EXPECT_EQ(resets_sent, 1) << p.out();
}

// One Tcp counter of /proc/net/snmp inside ns.
std::uint64_t tcp_snmp(const NetnsSandbox& ns, const std::string& name) {
  return ns.run([&name]() -> std::uint64_t {
    std::ifstream f("/proc/thread-self/net/snmp");
    std::stringstream text;
    text << f.rdbuf();
    return parse_netstat_counter(text.str(), "Tcp", name).value_or(~std::uint64_t{0});
  });
}

// The same two closes as the agent counts them in portlens_tcp_closes_total, judged against the
// kernel: fin_time_wait is the TIME_WAIT ss shows; the server's LAST_ACK close left none; the
// reset sent and the reset received are the two TcpEstabResets the kernel counted (a close from
// ESTABLISHED to CLOSE), of which the one sent is its TcpOutRsts.
TEST_F(TraceCliTest, AgentCountsClosesByKindAsTheKernelMadeThem) {
  PORTLENS_REQUIRE_ROOT();
  PORTLENS_START_AGENT(agent);
  const std::uint64_t estab_resets = tcp_snmp(ns(), "EstabResets");
  const std::uint64_t out_rsts = tcp_snmp(ns(), "OutRsts");
  const ClosedPair fin = ns().run([] { return connect_and_close(9983, false); });
  const ClosedPair rst = ns().run([] { return connect_and_close(9984, true); });
  ASSERT_TRUE(fin.ok && rst.ok);
  const std::uint64_t estab_delta = tcp_snmp(ns(), "EstabResets") - estab_resets;
  const std::uint64_t rsts_delta = tcp_snmp(ns(), "OutRsts") - out_rsts;
  ASSERT_EQ(estab_delta, 2U);
  ASSERT_EQ(rsts_delta, 1U);
  ASSERT_EQ(
      run_command("ip netns exec " + ns().name() + " ss -Htan state time-wait | wc -l").output,
      "1\n");
  const std::string netns = std::to_string(ns().inode());
  const auto kind = [&](const std::string& text, const std::string& k) {
    return metric(text, "portlens_tcp_closes_total", {{"netns", netns}, {"kind", k}});
  };
  const std::string text = agent.scrape_until([&](const std::string& t) {
    return kind(t, "rst_sent") == 1 && kind(t, "rst_received") == 1 &&
           kind(t, "fin_time_wait") == 1 && kind(t, "fin_no_time_wait") == 1;
  });
  EXPECT_EQ(kind(text, "fin_time_wait"), 1) << text;
  EXPECT_EQ(kind(text, "fin_no_time_wait"), 1);
  EXPECT_EQ(kind(text, "rst_sent"), static_cast<double>(rsts_delta));
  EXPECT_EQ(kind(text, "rst_sent").value_or(0) + kind(text, "rst_received").value_or(0),
            static_cast<double>(estab_delta));
  EXPECT_EQ(kind(text, "other"), 0);
  EXPECT_EQ(agent.stop(), 0);
}

// An unprivileged `why` in its own namespace: it enters nothing, so it needs no privilege; it
// reads the sockets through sock_diag (which any user may ask), lists root's listener as ss
// does, and says plainly what it cannot see: the reuse flags and other users' owners.
TEST_F(TraceCliTest, UnprivilegedWhyWorksInItsOwnNamespace) {
  PORTLENS_REQUIRE_ROOT();
  if (access("/usr/bin/setpriv", X_OK) != 0) {
    GTEST_SKIP() << "setpriv (util-linux) is not installed";
  }
  constexpr std::uint16_t kPort = 9971;
  auto listener = ns().run([] { return std::make_unique<TestSocket>(AF_INET, SOCK_STREAM); });
  listener->reuseaddr();
  ASSERT_EQ(listener->bind("127.0.0.1", kPort), 0);
  ASSERT_EQ(listener->listen(), 0);
  const CommandResult ss = run_command("ip netns exec " + ns().name() +
                                       " ss -Hltn 'sport = :" + std::to_string(kPort) + "'");
  ASSERT_EQ(std::count(ss.output.begin(), ss.output.end(), '\n'), 1) << ss.output;
  const std::vector<std::string> as_nobody{"/usr/bin/ip",
                                           "netns",
                                           "exec",
                                           ns().name(),
                                           "/usr/bin/setpriv",
                                           "--reuid=65534",
                                           "--regid=65534",
                                           "--clear-groups",
                                           "--inh-caps=-all",
                                           "--",
                                           PORTLENS_BINARY,
                                           "why",
                                           std::to_string(kPort)};
  std::vector<std::string> json_args = as_nobody;
  json_args.insert(json_args.end(), {"--json", "--api.socket", "/nonexistent/portlens.sock"});
  Process p(json_args);
  ASSERT_EQ(p.wait(20s), 0) << p.err();
  const auto doc = nlohmann::json::parse(p.out(), nullptr, false);
  ASSERT_TRUE(doc.is_object()) << p.out() << p.err();
  EXPECT_EQ(doc["privileged"], false);
  EXPECT_EQ(doc["snapshot"]["source"], "sock_diag");
  ASSERT_EQ(doc["listeners"].size(), 1U) << doc.dump();
  const auto& l = doc["listeners"][0];
  EXPECT_EQ(l["local"]["port"], kPort);
  EXPECT_TRUE(l["pid"].is_null()) << "root's socket: its owner is not nobody's to read";
  EXPECT_TRUE(l["reuseaddr"].is_null()) << l.dump();  // set, but sock_diag cannot show it

  std::vector<std::string> text_args = as_nobody;
  text_args.insert(text_args.end(), {"--api.socket", "/nonexistent/portlens.sock"});
  Process t(text_args);
  ASSERT_EQ(t.wait(20s), 0) << t.err();
  EXPECT_NE(t.out().find("not root: the owners of other users' sockets are unknown"),
            std::string::npos)
      << t.out();
  EXPECT_NE(t.out().find("SO_REUSEADDR/SO_REUSEPORT flags"), std::string::npos) << t.out();
}

// --color: always paints the verdict; auto, on a pipe as here, leaves every byte printable.
TEST_F(TraceCliTest, ColorAlwaysPaintsTheVerdictAndAutoOnAPipeDoesNot) {
  constexpr std::uint16_t kPort = 9972;
  auto listener = ns().run([] { return std::make_unique<TestSocket>(AF_INET, SOCK_STREAM); });
  ASSERT_EQ(listener->bind("127.0.0.1", kPort), 0);
  ASSERT_EQ(listener->listen(), 0);
  const std::string addr = "127.0.0.1:" + std::to_string(kPort);
  Process always({PORTLENS_BINARY, "check", addr, "--netns", ns().name(), "--color=always"});
  EXPECT_EQ(always.wait(20s), 1) << always.err();
  EXPECT_NE(always.out().find("\x1b[1;31mwould FAIL\x1b[0m"), std::string::npos) << always.out();
  Process automatic({PORTLENS_BINARY, "check", addr, "--netns", ns().name()});
  EXPECT_EQ(automatic.wait(20s), 1) << automatic.err();
  EXPECT_NE(automatic.out().find("would FAIL"), std::string::npos);
  EXPECT_EQ(automatic.out().find('\x1b'), std::string::npos) << automatic.out();
}

// Self-connect: with a one-port range, a connect() toward 127.0.0.1 on that very port gets it as
// its local port, and TCP's simultaneous open connects the socket to itself (the kernel's own
// getsockname() and getpeername() agree). trace flags that call, and only it, and counts it.
TEST_F(TraceCliTest, ASelfConnectIsFlaggedAndCounted) {
  PORTLENS_REQUIRE_ROOT();
  constexpr std::uint16_t kPort = 40001;
  ns().sysctl("net.ipv4.ip_local_port_range", "40001 40001");
  PORTLENS_START_AGENT(agent);
  const double before = metric(agent.scrape(), "portlens_tcp_self_connects_total").value_or(-1);
  Process p({PORTLENS_BINARY, "trace", "--json", "--netns", ns().name(), "--duration", "60"});
  ASSERT_TRUE(p.wait_for_stderr("Tracing", 20s)) << p.err();
  const auto [result, local, peer] = ns().run([] {
    TestSocket s(AF_INET, SOCK_STREAM);
    const int r = s.connect("127.0.0.1", kPort);
    sockaddr_in peer_addr{};
    socklen_t len = sizeof peer_addr;
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
    const int got = ::getpeername(s.fd(), reinterpret_cast<sockaddr*>(&peer_addr), &len);
    return std::tuple{r, s.local_port(), got == 0 ? ntohs(peer_addr.sin_port) : 0};
  });
  ASSERT_EQ(result, 0) << "the kernel refused the self-connect";
  ASSERT_EQ(local, kPort);
  ASSERT_EQ(peer, kPort);  // connected to itself
  std::this_thread::sleep_for(300ms);
  p.signal(SIGINT);
  ASSERT_EQ(p.wait(10s), 0) << p.err();
  int flagged = 0;
  for (const auto& j : json_lines(p.out())) {
    if (j.value("self_connect", false)) {
      ++flagged;
      EXPECT_EQ(j["event"], "connect");
      EXPECT_EQ(j["local"]["port"], kPort);
      EXPECT_EQ(j["remote"]["port"], kPort);
    }
  }
  EXPECT_EQ(flagged, 1) << p.out();
  EXPECT_NE(p.err().find("1 self-connects"), std::string::npos) << p.err();
  // The agent counts it too (host-wide: the delta over this test's one self-connect).
  ASSERT_GE(before, 0);
  const std::string text = agent.scrape_until([&](const std::string& t) {
    return metric(t, "portlens_tcp_self_connects_total").value_or(0) >= before + 1;
  });
  EXPECT_EQ(metric(text, "portlens_tcp_self_connects_total"), before + 1) << text;
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace portlens::testing
