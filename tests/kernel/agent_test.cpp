// Kernel tests of `portlens agent`: the real binary runs, real sockets are made in a private
// network namespace, and the test scrapes /metrics over HTTP on loopback.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;

using AgentTest = KernelTest;

TEST_F(AgentTest, TimeWaitGaugesAgreeWithSs) {
  PORTLENS_START_AGENT(agent);
  make_time_waits(ns(), 7100, 12);
  const std::string netns = std::to_string(ns().inode());
  ASSERT_EQ(ss_count_time_wait(ns()), "12");
  const std::string text = agent.scrape_until([&](const std::string& t) {
    return metric(t, "portlens_tcp_sockets", {{"netns", netns}, {"state", "TIME_WAIT"}}) == 12;
  });
  EXPECT_EQ(metric(text, "portlens_tcp_sockets", {{"netns", netns}, {"state", "TIME_WAIT"}}), 12)
      << text;
  // The TIME_WAITs are on the clients' ephemeral ports, toward 127.0.0.1:7100.
  EXPECT_EQ(metric(text, "portlens_time_wait_sockets_by_remote",
                   {{"netns", netns}, {"remote_addr", "127.0.0.1"}, {"remote_port", "7100"}}),
            12)
      << text;
  const auto per_port = metric_sum(text, "portlens_time_wait_sockets", {{"netns", netns}});
  EXPECT_EQ(per_port, 12) << "per-port series must add up to ss's count";
  EXPECT_EQ(metric(text, "portlens_events_lost_total"), 0);
  EXPECT_EQ(agent.stop(), 0);
}

TEST_F(AgentTest, BindFailureIsCountedWithCauseAndComm) {
  PORTLENS_START_AGENT(agent);
  const auto rcs = ns().run([] {
    TestSocket a(AF_INET, SOCK_STREAM);
    TestSocket b(AF_INET, SOCK_STREAM);
    const int r1 = a.bind("0.0.0.0", 7200);
    const int r2 = a.listen();
    const int r3 = b.bind("0.0.0.0", 7200);
    return std::array<int, 3>{r1, r2, r3};
  });
  ASSERT_EQ(rcs, (std::array<int, 3>{0, 0, EADDRINUSE}));
  const Labels labels = {
      {"proto", "tcp"}, {"syscall", "bind"}, {"cause", "port_in_use"}, {"comm", own_comm()}};
  const std::string text = agent.scrape_until(
      [&](const std::string& t) { return metric(t, "portlens_bind_failures_total", labels) >= 1; });
  EXPECT_EQ(metric(text, "portlens_bind_failures_total", labels), 1) << text;
  // The event log carries the diagnosed failure (written by its own thread: soon after).
  std::string line;
  ASSERT_TRUE(eventually([&] {
    std::ifstream log(agent.dir() / "events.log");
    return static_cast<bool>(std::getline(log, line));
  }));
  const auto record = nlohmann::json::parse(line);
  EXPECT_EQ(record["diagnosis"]["cause"], "port_in_use");
  EXPECT_EQ(record["local"]["port"], 7200);
  EXPECT_EQ(agent.stop(), 0);
}

TEST_F(AgentTest, WhyShowsTheAgentsRecentFailuresOnThePort) {
  PORTLENS_START_AGENT(agent);
  ASSERT_EQ(ns().run([] {
    TestSocket a(AF_INET, SOCK_STREAM);
    TestSocket b(AF_INET, SOCK_STREAM);
    a.bind("127.0.0.1", 7250);
    return b.bind("127.0.0.1", 7250);
  }),
            EADDRINUSE);
  const std::string counted = agent.scrape_until([](const std::string& t) {
    return metric(t, "portlens_bind_failures_total", {{"cause", "missing_reuseaddr"}}).has_value();
  });
  ASSERT_TRUE(metric(counted, "portlens_bind_failures_total", {{"cause", "missing_reuseaddr"}}))
      << [&] {
           std::ifstream in(agent.dir() / "events.log");
           std::stringstream log;
           log << in.rdbuf();
           return log.str();
         }();
  const std::string api = (agent.dir() / "api.sock").string();
  Process why(
      {PORTLENS_BINARY, "why", "7250", "--netns", ns().name(), "--api.socket", api, "--json"});
  ASSERT_EQ(why.wait(30s), 0) << why.err();
  const auto j = nlohmann::json::parse(why.out());
  ASSERT_TRUE(j["history"].is_array()) << j.dump();
  ASSERT_EQ(j["history"].size(), 1U) << j.dump();
  EXPECT_EQ(j["history"][0]["diagnosis"]["cause"], "missing_reuseaddr");
  EXPECT_EQ(j["history"][0]["local"]["port"], 7250);
  EXPECT_EQ(j["history"][0]["pid"], getpid());
  // Another port has no history, and the agent says so by an empty list.
  Process other(
      {PORTLENS_BINARY, "why", "7251", "--netns", ns().name(), "--api.socket", api, "--json"});
  ASSERT_EQ(other.wait(30s), 0) << other.err();
  EXPECT_TRUE(nlohmann::json::parse(other.out())["history"].empty());
  EXPECT_EQ(agent.stop(), 0);
}

TEST_F(AgentTest, SighupReopensTheEventLogAfterLogrotate) {
  PORTLENS_START_AGENT(agent);
  const auto conflict = [this](std::uint16_t port) {
    return ns().run([port] {
      TestSocket a(AF_INET, SOCK_STREAM);
      TestSocket b(AF_INET, SOCK_STREAM);
      a.bind("127.0.0.1", port);
      return b.bind("127.0.0.1", port);
    });
  };
  const auto log_lines = [](const std::filesystem::path& path) {
    std::ifstream in(path);
    std::vector<nlohmann::json> lines;
    for (std::string line; std::getline(in, line);) {
      lines.push_back(nlohmann::json::parse(line));
    }
    return lines;
  };
  const auto log = agent.dir() / "events.log";
  ASSERT_EQ(conflict(7260), EADDRINUSE);
  ASSERT_TRUE(eventually([&] { return log_lines(log).size() == 1; }));
  // What logrotate does: move the file away, then tell the daemon.
  std::filesystem::rename(log, agent.dir() / "events.log.1");
  agent.process().signal(SIGHUP);
  ASSERT_TRUE(agent.process().wait_for_stderr("reopened the event log", 10s))
      << agent.process().err();
  ASSERT_EQ(conflict(7261), EADDRINUSE);
  ASSERT_TRUE(eventually([&] { return log_lines(log).size() == 1; }));
  const auto fresh = log_lines(log);
  ASSERT_EQ(fresh.size(), 1U);
  EXPECT_EQ(fresh[0]["local"]["port"], 7261);
  const auto rotated = log_lines(agent.dir() / "events.log.1");
  ASSERT_EQ(rotated.size(), 1U);
  EXPECT_EQ(rotated[0]["local"]["port"], 7260);
  EXPECT_EQ(agent.stop(), 0);
}

TEST_F(AgentTest, ExhaustionClimbsToOneTowardOneDestinationOnly) {
  ns().sysctl("net.ipv4.ip_local_port_range", "40000 40009");
  ns().sysctl("net.ipv4.tcp_tw_reuse", "0");
  PORTLENS_START_AGENT(agent);
  make_time_waits(ns(), 7300, 10);  // every port of the range toward 127.0.0.1:7300
  // Another destination, reached and kept open while the test scrapes: sockets stay in the
  // namespace they were made in after the thread that made them is gone.
  struct Held {
    std::unique_ptr<TestSocket> server;
    std::unique_ptr<TestSocket> other;
    int other_rc = -1;
    int exhausted_rc = -1;
  };
  const Held held = ns().run([] {
    Held h;
    h.server = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    h.server->bind("127.0.0.1", 7301);
    h.server->listen();
    h.other = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    h.other_rc = h.other->connect("127.0.0.1", 7301);
    TestSocket more(AF_INET, SOCK_STREAM);
    h.exhausted_rc = more.connect("127.0.0.1", 7300);
    return h;
  });
  ASSERT_EQ(held.other_rc, 0);
  ASSERT_EQ(held.exhausted_rc, EADDRNOTAVAIL);
  const std::string netns = std::to_string(ns().inode());
  const Labels dest = {{"netns", netns}, {"remote_addr", "127.0.0.1"}, {"remote_port", "7300"}};
  const std::string text = agent.scrape_until([&](const std::string& t) {
    return metric(t, "portlens_ephemeral_port_utilization_ratio", dest) == 1.0 &&
           metric(t, "portlens_connect_failures_total",
                  {{"cause", "ephemeral_exhausted"}, {"errno", "EADDRNOTAVAIL"}}) >= 1;
  });
  EXPECT_EQ(metric(text, "portlens_ephemeral_port_utilization_ratio", dest), 1.0) << text;
  EXPECT_EQ(metric(text, "portlens_ephemeral_ports_in_use", dest), 10) << text;
  EXPECT_EQ(metric(text, "portlens_ephemeral_port_range_size", {{"netns", netns}}), 10) << text;
  EXPECT_EQ(metric(text, "portlens_ephemeral_port_utilization_max_ratio", {{"netns", netns}}), 1.0);
  EXPECT_GE(metric(text, "portlens_connect_failures_total",
                   {{"cause", "ephemeral_exhausted"}, {"errno", "EADDRNOTAVAIL"}})
                .value_or(0),
            1)
      << text;
  // The other destination has one connection of ten ports: 0.1, far from 1.
  const std::string with_other = agent.scrape_until([&](const std::string& t) {
    return metric(t, "portlens_ephemeral_port_utilization_ratio",
                  {{"netns", netns}, {"remote_port", "7301"}})
        .has_value();
  });
  const auto other = metric(with_other, "portlens_ephemeral_port_utilization_ratio",
                            {{"netns", netns}, {"remote_port", "7301"}});
  ASSERT_TRUE(other.has_value()) << with_other;
  EXPECT_LE(*other, 0.2);

  // Kill the TIME_WAITs (sock_diag SOCK_DESTROY): the reconcile path notices and the gauges fall.
  const std::string kill =
      "ip netns exec " + ns().name() + " ss -K -tan state time-wait >/dev/null";
  ASSERT_EQ(std::system(kill.c_str()), 0);  // NOLINT(cert-env33-c)
  ASSERT_EQ(ss_count_time_wait(ns()), "0");
  const std::string after = agent.scrape_until([&](const std::string& t) {
    return metric(t, "portlens_tcp_sockets", {{"netns", netns}, {"state", "TIME_WAIT"}})
               .value_or(-1) == 0;
  });
  EXPECT_EQ(metric(after, "portlens_tcp_sockets", {{"netns", netns}, {"state", "TIME_WAIT"}})
                .value_or(-1),
            0)
      << after;
  EXPECT_LT(metric(after, "portlens_ephemeral_port_utilization_max_ratio", {{"netns", netns}})
                .value_or(1),
            0.5)
      << after;
  EXPECT_GE(metric(after, "portlens_reconcile_corrections_total", {{"kind", "time_wait_stale"}})
                .value_or(0),
            10);
  EXPECT_EQ(agent.stop(), 0);
}

// A burst that ran out of ports and was over before the scrape: four connections take the whole
// four-port range, a fifth connect() gets EADDRNOTAVAIL, then all four are reset (SO_LINGER 0:
// no TIME_WAIT). The next scrape finds nothing toward the destination (ss agrees), yet the peak
// says 1.0; the scrape after it, 0.
TEST_F(AgentTest, UtilizationPeakKeepsABurstThatEndedBeforeTheScrape) {
  ns().sysctl("net.ipv4.ip_local_port_range", "40100 40103");
  ns().sysctl("net.ipv4.tcp_tw_reuse", "0");
  PORTLENS_START_AGENT(agent);
  const std::string netns = std::to_string(ns().inode());
  struct Burst {
    std::unique_ptr<TestSocket> server;
    std::vector<std::unique_ptr<TestSocket>> clients;
    int connected = 0;
    int exhausted_rc = -1;
  };
  Burst burst = ns().run([] {
    Burst b;
    b.server = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    b.server->bind("127.0.0.1", 7620);
    b.server->listen(64);
    for (int i = 0; i < 4; ++i) {
      b.clients.push_back(std::make_unique<TestSocket>(AF_INET, SOCK_STREAM));
      b.connected += b.clients.back()->connect("127.0.0.1", 7620) == 0 ? 1 : 0;
    }
    TestSocket fifth(AF_INET, SOCK_STREAM);
    b.exhausted_rc = fifth.connect("127.0.0.1", 7620);
    return b;
  });
  ASSERT_EQ(burst.connected, 4);
  ASSERT_EQ(burst.exhausted_rc, EADDRNOTAVAIL);
  // The agent has judged the refused connect() once its event log says so (no scrape yet: a
  // scrape would take the peak).
  ASSERT_TRUE(eventually([&] {
    std::ifstream log(agent.dir() / "events.log");
    std::stringstream text;
    text << log.rdbuf();
    return text.str().find("ephemeral_exhausted") != std::string::npos;
  })) << agent.process().err();
  for (auto& c : burst.clients) {
    const linger reset{1, 0};
    ASSERT_EQ(setsockopt(c->fd(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset), 0);
    c->close();
  }
  const CommandResult left =
      run_command("ip netns exec " + ns().name() + " ss -Htan 'dport = :7620' | wc -l");
  ASSERT_EQ(left.output, "0\n") << "the resets left sockets toward the destination";
  // Let the agent read the closes (it drains the ring at least every 100 ms).
  std::this_thread::sleep_for(1s);
  const std::string text = agent.scrape();
  EXPECT_EQ(metric(text, "portlens_ephemeral_port_utilization_max_ratio", {{"netns", netns}}), 0)
      << text;
  EXPECT_EQ(metric(text, "portlens_ephemeral_port_utilization_peak_ratio", {{"netns", netns}}), 1.0)
      << text;
  const std::string next = agent.scrape();
  EXPECT_EQ(metric(next, "portlens_ephemeral_port_utilization_peak_ratio", {{"netns", netns}}), 0)
      << "each scrape resets the peak";
  EXPECT_EQ(agent.stop(), 0);
}

// 20 connections the peer closed and this process never did: 20 CLOSE_WAIT sockets under this
// process's comm and the listener's port, as ss counts them, with their age; gone once it closes
// them.
TEST_F(AgentTest, CloseWaitSocketsAppearUnderTheirOwnerAndVanishWhenClosed) {
  PORTLENS_START_AGENT(agent);
  struct Held {
    std::unique_ptr<TestSocket> listener;
    std::vector<int> accepted;
    bool ok = false;
  };
  const auto start = std::chrono::steady_clock::now();
  Held held = ns().run([] {
    Held h;
    h.listener = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    if (h.listener->bind("127.0.0.1", 7650) != 0 || h.listener->listen(64) != 0) {
      return h;
    }
    for (int i = 0; i < 20; ++i) {
      TestSocket client(AF_INET, SOCK_STREAM);
      if (client.connect("127.0.0.1", 7650) != 0) {
        return h;
      }
      const int fd = h.listener->accept_one();
      if (fd < 0) {
        return h;
      }
      h.accepted.push_back(fd);
      client.close();  // the peer's FIN: the accepted socket goes to CLOSE_WAIT
    }
    h.ok = true;
    return h;
  });
  ASSERT_TRUE(held.ok);
  const auto ss_close_wait = [&] {
    return run_command("ip netns exec " + ns().name() +
                       " ss -Htan state close-wait 'sport = :7650' | wc -l")
        .output;
  };
  ASSERT_TRUE(eventually([&] { return ss_close_wait() == "20\n"; }, 5s)) << ss_close_wait();
  const Labels labels = {
      {"netns", std::to_string(ns().inode())}, {"comm", own_comm()}, {"local_port", "7650"}};
  std::string text = agent.scrape_until(
      [&](const std::string& t) { return metric(t, "portlens_close_wait_sockets", labels) == 20; });
  EXPECT_EQ(metric(text, "portlens_close_wait_sockets", labels), 20) << text;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto age = metric(text, "portlens_close_wait_oldest_seconds", labels);
  ASSERT_TRUE(age.has_value()) << text;
  EXPECT_GE(*age, 0);
  EXPECT_LE(*age, elapsed + 1);

  for (const int fd : held.accepted) {
    ::close(fd);
  }
  ASSERT_TRUE(eventually([&] { return ss_close_wait() == "0\n"; }, 5s));
  text = agent.scrape_until([&](const std::string& t) {
    return !metric(t, "portlens_close_wait_sockets", labels).has_value();
  });
  EXPECT_FALSE(metric(text, "portlens_close_wait_sockets", labels).has_value()) << text;
  EXPECT_FALSE(metric(text, "portlens_close_wait_oldest_seconds", labels).has_value());
  EXPECT_EQ(agent.stop(), 0);
}

TEST_F(AgentTest, LiveScrapePassesPromtoolAndLandingPageLinksMetrics) {
  PORTLENS_START_AGENT(agent);
  make_time_waits(ns(), 7400, 3);
  const std::string text = agent.scrape_until(
      [](const std::string& t) { return metric(t, "portlens_build_info").has_value(); });
  EXPECT_TRUE(passes_promtool(agent.dir(), text));
  const std::string landing = http_get(agent.port(), "/");
  EXPECT_NE(landing.find("href=\"/metrics\""), std::string::npos) << landing;
  EXPECT_EQ(agent.stop(), 0);
}

// The BPF programs a process holds: the prog_id of each of its fds that is one.
std::set<std::uint32_t> bpf_prog_ids(pid_t pid) {
  std::set<std::uint32_t> ids;
  const std::filesystem::path dir = "/proc/" + std::to_string(pid) + "/fdinfo";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with("prog_id:")) {
        ids.insert(static_cast<std::uint32_t>(std::stoul(line.substr(8))));
      }
    }
  }
  return ids;
}

TEST_F(AgentTest, RestartComesBackWithTheSameTimeWaitCountAndDetachesCleanly) {
  const std::string netns = std::to_string(ns().inode());
  const Labels tw = {{"netns", netns}, {"state", "TIME_WAIT"}};
  std::set<std::uint32_t> held;
  {
    PORTLENS_START_AGENT(first);
    make_time_waits(ns(), 7500, 8);
    const std::string text = first.scrape_until(
        [&](const std::string& t) { return metric(t, "portlens_tcp_sockets", tw) == 8; });
    ASSERT_EQ(metric(text, "portlens_tcp_sockets", tw), 8) << text;
    held = bpf_prog_ids(first.process().pid());
    // The tracer's programs and the snapshot's, at least.
    EXPECT_GE(held.size(), 9U);
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(first.stop(), 0);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);  // detaches within a second or so
  }
  // Nothing of ours is left loaded: judged by the ids this agent held, so that another portlens
  // or other BPF programs on the host cannot fail the test.
  for (const std::uint32_t id : held) {
    EXPECT_NE(run_command("bpftool prog show id " + std::to_string(id) + " >/dev/null 2>&1").status,
              0)
        << "program " << id << " is still loaded";
  }
  // The second instance learns the TIME_WAITs from its bootstrap snapshot, not from events.
  PORTLENS_START_AGENT(second);
  const std::string text = second.scrape_until(
      [&](const std::string& t) { return metric(t, "portlens_tcp_sockets", tw).has_value(); });
  EXPECT_EQ(metric(text, "portlens_tcp_sockets", tw), 8) << text;
  EXPECT_EQ(second.stop(), 0);
}

TEST(AgentCliTest, BadListenAddressesAreUsageErrors) {
  for (const std::string address :
       {"a:1,b:2", "localhost:10130", "10130", ":0", ":70000", "[::1]", "::1:10130"}) {
    Process p({PORTLENS_BINARY, "agent", "--web.listen-address", address});
    EXPECT_EQ(p.wait(20s), 2) << address << ": " << p.err();
    EXPECT_EQ(std::count(p.err().begin(), p.err().end(), '\n'), 1) << p.err();
  }
}

TEST(AgentCliTest, PortInUseIsOneClearLine) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "needs root";
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof sin;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  const std::string port = std::to_string(ntohs(sin.sin_port));
  Process p({PORTLENS_BINARY, "agent", "--web.listen-address", "127.0.0.1:" + port, "--api.socket",
             "/tmp/portlens-test-unused.sock"});
  EXPECT_EQ(p.wait(30s), 1) << p.err();
  close(fd);
  EXPECT_NE(p.err().find("Address already in use"), std::string::npos) << p.err();
  EXPECT_NE(p.err().find("portlens why " + port), std::string::npos) << p.err();
}

// The HTTP layer (libmicrohttpd): IPv6 and IPv4 at once, HEAD, 404 for what is not a page,
// health and readiness apart from the scrape, gzip when asked.
TEST(AgentHttpTest, ServesIpv6AndIpv4WithHeadNotFoundHealthAndGzip) {
  if (geteuid() != 0) {
    if (bpf_required()) {
      FAIL() << "PORTLENS_REQUIRE_BPF=1 but not root";
    }
    GTEST_SKIP() << "needs root";
  }
  const std::uint16_t v6 = free_port();
  PORTLENS_START_AGENT(agent, {"--web.listen-address", "[::1]:" + std::to_string(v6)});
  const std::string v4 = "http://127.0.0.1:" + std::to_string(agent.port());
  const std::string six = "http://[::1]:" + std::to_string(v6);
  const auto status = [](const std::string& args) {
    return run_command("curl -s -o /dev/null -w '%{http_code}' --max-time 5 " + args).output;
  };
  const std::string via_v6 = run_command("curl -sf --max-time 5 " + six + "/metrics").output;
  EXPECT_TRUE(metric(via_v6, "portlens_build_info").has_value()) << via_v6.substr(0, 300);
  EXPECT_EQ(status(v4 + "/metrics"), "200");
  EXPECT_EQ(status("-I " + v4 + "/metrics"), "200");
  EXPECT_EQ(run_command("curl -sI --max-time 5 " + v4 +
                        "/metrics | tr -d '\\r' | "
                        "grep -ci '^content-length: [1-9]'")
                .output,
            "1\n");
  for (const char* path : {"/nope", "/metricsfoo", "/metrics/", "/healthz/x"}) {
    EXPECT_EQ(status(v4 + path), "404") << path;
  }
  EXPECT_EQ(status(v4 + "/healthz"), "200");
  EXPECT_EQ(status(six + "/ready"), "200");
  EXPECT_EQ(status("-X POST " + v4 + "/metrics"), "405");
  // gzip: the compressed body decompresses to an exposition as complete as the plain one.
  const std::string gz =
      run_command("curl -sf --max-time 5 -H 'Accept-Encoding: gzip' " + v4 + "/metrics | gunzip -c")
          .output;
  EXPECT_TRUE(metric(gz, "portlens_build_info").has_value()) << gz.substr(0, 300);
  EXPECT_NE(gz.find("# TYPE portlens_events_total counter"), std::string::npos);
  EXPECT_EQ(agent.stop(), 0);
}

// A diagnosis that needs a fresh snapshot of a big namespace walks it without the agent's lock:
// scrapes made while the walk runs answer without waiting for it. Both latencies are printed.
TEST_F(AgentTest, ScrapesDoNotWaitForTheSnapshotADiagnosisTakes) {
  make_time_waits(ns(), 7700, 20000);  // a namespace the snapshot needs tens of ms to walk
  PORTLENS_START_AGENT(agent);
  const auto log = agent.dir() / "events.log";
  const auto lines_in_log = [&] {
    std::ifstream in(log);
    std::size_t n = 0;
    for (std::string line; std::getline(in, line);) {
      ++n;
    }
    return n;
  };
  using Clock = std::chrono::steady_clock;
  std::atomic<bool> done{false};
  std::mutex mu;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> scrapes;
  std::thread scraper([&] {
    for (int i = 0; i < 2000 && !done; ++i) {
      const auto start = Clock::now();
      const std::string text = http_get(agent.port(), "/metrics");
      const auto end = Clock::now();
      if (!text.empty()) {
        const std::lock_guard lock(mu);
        scrapes.emplace_back(start, end);
      }
    }
  });
  std::vector<double> diagnosis_ms;
  int overlapped = 0;
  for (int i = 0; i < 10; ++i) {
    const auto failed_at = Clock::now();
    ASSERT_EQ(ns().run([] {
      TestSocket a(AF_INET, SOCK_STREAM);
      TestSocket b(AF_INET, SOCK_STREAM);
      if (a.bind("127.0.0.1", 7701) != 0 || a.listen() != 0) {
        return -1;
      }
      return b.bind("127.0.0.1", 7701);
    }),
              EADDRINUSE);
    const auto want = static_cast<std::size_t>(i) + 1;
    // Polled every millisecond, so that the moment it is logged is known to about 1 ms.
    bool logged = false;
    for (int tick = 0; tick < 20000 && !logged; ++tick) {
      logged = lines_in_log() >= want;
      if (!logged) {
        std::this_thread::sleep_for(1ms);
      }
    }
    ASSERT_TRUE(logged) << "failure " << want << " never reached the event log";
    const auto logged_at = Clock::now();
    diagnosis_ms.push_back(
        std::chrono::duration<double, std::milli>(logged_at - failed_at).count());
    const std::lock_guard lock(mu);
    for (const auto& [start, end] : scrapes) {
      overlapped += start > failed_at && end < logged_at ? 1 : 0;
    }
  }
  done = true;
  scraper.join();
  double max_scrape_ms = 0;
  for (const auto& [start, end] : scrapes) {
    max_scrape_ms =
        std::max(max_scrape_ms, std::chrono::duration<double, std::milli>(end - start).count());
  }
  std::sort(diagnosis_ms.begin(), diagnosis_ms.end());
  std::printf(
      "diagnosis (failed bind to its event log line), median %.1f ms; %zu scrapes, max "
      "%.1f ms; %d scrapes began and ended while a diagnosis was under way\n",
      diagnosis_ms[diagnosis_ms.size() / 2], scrapes.size(), max_scrape_ms, overlapped);
  EXPECT_GT(overlapped, 0) << "every scrape waited for the diagnoses";
  EXPECT_LT(max_scrape_ms, 1000.0);
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace portlens::testing
