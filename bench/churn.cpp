// Section 2 and the generator the kernel sections share: loopback connection churn inside a
// private network namespace, with and without the real agent, alternating.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <thread>

#include "bench/sections.hpp"

namespace portlens::bench {
namespace {

// The server: one epoll thread accepting on every listener and closing each connection once
// the client's FIN is in (so the client, which closed first, keeps the TIME_WAIT).
class EpollServer {
 public:
  explicit EpollServer(const std::vector<std::uint16_t>& ports) : epoll_(epoll_create1(0)) {
    for (const std::uint16_t port : ports) {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      const int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in sin{};
      sin.sin_family = AF_INET;
      sin.sin_port = htons(port);
      if (bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 || listen(fd, 65535) != 0) {
        const std::string err = std::strerror(errno);
        close(fd);
        throw BenchError("server on port " + std::to_string(port) + ": " + err);
      }
      listeners_.push_back(fd);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenerTag | static_cast<std::uint64_t>(fd);
      epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
    }
  }
  ~EpollServer() {
    for (const int fd : listeners_) {
      close(fd);
    }
    close(epoll_);
  }
  EpollServer(const EpollServer&) = delete;
  EpollServer& operator=(const EpollServer&) = delete;
  EpollServer(EpollServer&&) = delete;
  EpollServer& operator=(EpollServer&&) = delete;

  // Serves until stop is set and every accepted connection is closed (bounded by drain_timeout
  // after stop).
  void serve(const std::atomic<bool>& stop) {
    std::array<epoll_event, 256> events{};
    std::optional<Clock::time_point> stop_seen;
    for (;;) {
      const int n = epoll_wait(epoll_, events.data(), events.size(), 20);
      for (int i = 0; i < n; ++i) {
        const std::uint64_t tag = events[i].data.u64;
        if ((tag & kListenerTag) != 0) {
          accept_all(static_cast<int>(tag & ~kListenerTag));
        } else {
          finish(static_cast<int>(tag));
        }
      }
      if (stop.load()) {
        if (!stop_seen) {
          stop_seen = Clock::now();
          for (const int fd : listeners_) {
            accept_all(fd);  // whatever the last clients left in the queues
          }
        }
        if (open_ == 0 || Clock::now() - *stop_seen > std::chrono::seconds(5)) {
          return;
        }
      }
    }
  }

 private:
  static constexpr std::uint64_t kListenerTag = 1ULL << 40;

  void accept_all(int listener) {
    for (;;) {
      const int fd = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        return;
      }
      std::array<char, 64> buf{};
      const ssize_t got = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (got == 0) {
        close(fd);  // the client's FIN is already in
        continue;
      }
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.u64 = static_cast<std::uint64_t>(fd);
      epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
      ++open_;
    }
  }

  void finish(int fd) {
    std::array<char, 64> buf{};
    const ssize_t got = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (got > 0 || (got < 0 && errno == EAGAIN)) {
      return;
    }
    epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    --open_;
  }

  int epoll_;
  std::vector<int> listeners_;
  std::size_t open_ = 0;
};

struct ClientTally {
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::string first_error;
};

}  // namespace

void prepare_churn_netns(const Netns& ns, int tw_reuse) {
  ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
  ns.sysctl("net.ipv4.tcp_tw_reuse", std::to_string(tw_reuse));
  ns.sysctl("net.ipv4.tcp_max_tw_buckets", "2000000");
  ns.sysctl("net.core.somaxconn", "65535");
  ns.sysctl("net.ipv4.tcp_max_syn_backlog", "65535");
}

ChurnResult run_churn(const Netns& ns, const ChurnConfig& config) {
  std::atomic<bool> stop_server{false};
  std::atomic<bool> stop_clients{false};
  std::atomic<bool> go{false};
  std::atomic<std::int64_t> budget{static_cast<std::int64_t>(config.max_connections)};
  std::atomic<int> ready{0};
  std::exception_ptr server_error;
  std::atomic<bool> server_up{false};

  std::thread server([&] {
    try {
      ns.enter();
      EpollServer srv(config.listen_ports);
      server_up = true;
      srv.serve(stop_server);
    } catch (...) {
      server_error = std::current_exception();
      server_up = true;
    }
  });
  while (!server_up.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (server_error) {
    server.join();
    std::rethrow_exception(server_error);
  }

  const int clients = std::max(1, config.clients);
  std::vector<ClientTally> tallies(static_cast<std::size_t>(clients));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(clients));
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      ClientTally& tally = tallies[static_cast<std::size_t>(c)];
      try {
        ns.enter();
      } catch (const std::exception& e) {
        tally.first_error = e.what();
        ++ready;
        return;
      }
      ++ready;
      while (!go.load()) {
        std::this_thread::yield();
      }
      const std::size_t n = config.destinations.size();
      auto k = static_cast<std::size_t>(c);
      while (!stop_clients.load(std::memory_order_relaxed) && budget.fetch_sub(1) > 0) {
        const Destination& d = config.destinations[k % n];
        k += static_cast<std::size_t>(clients);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(d.port);
        sin.sin_addr.s_addr = htonl(d.addr);
        const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
          ++tally.failed;
          if (tally.first_error.empty()) {
            tally.first_error = std::string("socket(): ") + std::strerror(errno);
          }
          continue;
        }
        if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0) {
          ++tally.ok;
        } else {
          ++tally.failed;
          if (tally.first_error.empty()) {
            tally.first_error = std::string("connect(): ") + std::strerror(errno);
          }
        }
        close(fd);
      }
    });
  }
  while (ready.load() < clients) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const auto start = Clock::now();
  go = true;
  // The time bound: the clients stop at max_seconds whatever the count.
  std::thread timer([&] {
    const auto deadline = start + std::chrono::duration<double>(config.max_seconds);
    while (Clock::now() < deadline && budget.load() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop_clients = true;
  });
  for (auto& t : threads) {
    t.join();
  }
  ChurnResult result;
  result.seconds = seconds_since(start);
  stop_clients = true;
  timer.join();
  stop_server = true;
  server.join();
  for (const auto& t : tallies) {
    result.connections += t.ok;
    result.failures += t.failed;
    if (result.first_error.empty()) {
      result.first_error = t.first_error;
    }
  }
  return result;
}

namespace {

struct AgentRun {
  ChurnResult churn;
  double agent_cpu_seconds = 0;  // over the run and the drain after it
  double lost = 0;               // portlens_events_lost_total, after - before
  double events = 0;             // portlens_events_total, after - before
};

ChurnConfig churn_config(const Options& options) {
  ChurnConfig config;
  config.listen_ports = {7001, 7002, 7003, 7004};
  for (const std::uint16_t p : config.listen_ports) {
    config.destinations.push_back(Destination{0x7f000001U, p});
  }
  config.clients = options.clients;
  config.max_connections = options.smoke ? 2'000 : options.churn_max_connections;
  config.max_seconds = options.smoke ? 0.5 : options.churn_seconds;
  return config;
}

// One run in a fresh namespace, so that every run starts without TIME_WAITs.
ChurnResult run_without_agent(const ChurnConfig& config) {
  const Netns ns;
  prepare_churn_netns(ns, 1);
  return run_churn(ns, config);
}

AgentRun run_with_agent(const Options& options, const ChurnConfig& config) {
  const Netns ns;
  prepare_churn_netns(ns, 1);
  AgentProcess agent(options.agent_binary);
  agent.wait_serving();
  agent.wait_idle(std::chrono::milliseconds(200), std::chrono::seconds(10));
  const std::string before = agent.scrape();
  const double cpu_before = agent.cpu_seconds();
  AgentRun run;
  run.churn = run_churn(ns, config);
  agent.wait_idle();  // the agent has drained the ring buffer
  run.agent_cpu_seconds = agent.cpu_seconds() - cpu_before;
  const std::string after = agent.scrape();
  run.lost = metric_sum(after, "portlens_events_lost_total").value_or(-1) -
             metric_sum(before, "portlens_events_lost_total").value_or(0);
  run.events = metric_sum(after, "portlens_events_total").value_or(0) -
               metric_sum(before, "portlens_events_total").value_or(0);
  if (after.empty()) {
    throw BenchError("the agent did not answer a scrape after the churn:\n" + agent.stderr_text());
  }
  agent.stop();
  return run;
}

}  // namespace

void churn_section(const Options& options, Report& report) {
  std::cout << "\n## 2. churn: loopback connections/s with and without the agent\n";
  const ChurnConfig config = churn_config(options);
  const int rounds = options.smoke ? 1 : options.rounds;
  std::cout << config.clients << " client threads (connect, close first) + 1 epoll server, "
            << config.destinations.size() << " destinations on 127.0.0.1, fresh netns per run "
            << "(ip_local_port_range 1024-65535, tcp_tw_reuse 1), each run bounded by "
            << with_commas(config.max_connections) << " connections and "
            << fixed(config.max_seconds, 1) << " s; " << rounds << " rounds of (without, with)\n";
  std::vector<double> without_rates;
  std::vector<double> with_rates;
  std::vector<double> ratios;
  std::vector<double> cpu_per_10k;
  double lost_total = 0;
  double events_total = 0;
  std::uint64_t failures = 0;
  std::string first_error;
  for (int r = 0; r < rounds; ++r) {
    const ChurnResult plain = run_without_agent(config);
    const AgentRun with = run_with_agent(options, config);
    failures += plain.failures + with.churn.failures;
    if (first_error.empty()) {
      first_error = plain.first_error.empty() ? with.churn.first_error : plain.first_error;
    }
    const double ratio = with.churn.rate() / plain.rate();
    const double cpu_pct = with.agent_cpu_seconds / with.churn.seconds * 100;
    const double per_10k = cpu_pct / (with.churn.rate() / 10'000);
    without_rates.push_back(plain.rate());
    with_rates.push_back(with.churn.rate());
    ratios.push_back(ratio);
    cpu_per_10k.push_back(per_10k);
    lost_total += with.lost;
    events_total += with.events;
    std::cout << "  round " << r + 1 << ": without " << with_commas(plain.connections) << " in "
              << fixed(plain.seconds, 2) << " s = " << with_commas(std::uint64_t(plain.rate()))
              << "/s; with " << with_commas(with.churn.connections) << " in "
              << fixed(with.churn.seconds, 2)
              << " s = " << with_commas(std::uint64_t(with.churn.rate())) << "/s; ratio "
              << fixed(ratio, 3) << "; agent CPU " << fixed(with.agent_cpu_seconds, 2)
              << " s = " << fixed(cpu_pct, 1) << "% of a core = " << fixed(per_10k, 1)
              << "% per 10k conn/s; events " << with_commas(std::uint64_t(with.events)) << ", lost "
              << with.lost << "; load " << load_average() << "\n";
  }
  if (failures > 0) {
    std::cout << "  failed connect() calls: " << failures << " (first: " << first_error << ")\n";
  }
  const double slower = (1 - median(ratios)) * 100;
  std::cout << "  median: without " << with_commas(std::uint64_t(median(without_rates)))
            << "/s, with " << with_commas(std::uint64_t(median(with_rates)))
            << "/s, ratio (each round's own) " << fixed(median(ratios), 3) << " ("
            << fixed(slower, 1) << "% slower), agent " << fixed(median(cpu_per_10k), 1)
            << "% of a core per 10k conn/s\n";
  report.add(Row{"churn without agent (conn/s, " + std::to_string(config.clients) + " clients)",
                 with_commas(std::uint64_t(median(without_rates))), "", Met::kNoAim});
  report.add(Row{"churn with agent (conn/s)", with_commas(std::uint64_t(median(with_rates))), "",
                 Met::kNoAim});
  report.add(Row{"churn slowdown with agent (median of per-round ratios)",
                 fixed(slower, 1) + "% slower (ratio " + fixed(median(ratios), 3) + ")",
                 "< 5% slower", slower < 5 ? Met::kYes : Met::kNo});
  report.add(Row{"events lost under churn (default 8 MiB ring)",
                 with_commas(std::uint64_t(std::max(0.0, lost_total))) + " of " +
                     with_commas(std::uint64_t(events_total)),
                 "0", lost_total == 0 ? Met::kYes : Met::kNo});
  report.add(Row{"agent CPU per 10k conn/s", fixed(median(cpu_per_10k), 1) + "% of one core",
                 "< 10%", median(cpu_per_10k) < 10 ? Met::kYes : Met::kNo});
}

}  // namespace portlens::bench
