// Series bounded across namespaces (issue 14, item 4): any local user can make network
// namespaces (`unshare -rn`), so a scrape must not grow with their number. 200 namespaces, each
// with TIME_WAITs and a failed bind: the scrape stays under a few thousand series, at most
// --web.max-namespaces of them keep their own netns label, and the sums stay exact: the TIME_WAIT
// gauge summed over every netns label (the folded "other" included) equals what the kernel holds
// in every namespace on the host, and every failed bind is counted.
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kNamespaces = 200;
constexpr int kTimeWaitsEach = 3;
constexpr std::uint16_t kPort = 7340;

// Every network namespace reachable on the host, as the agent finds them: /run/netns and the
// namespace of every process. One path per inode.
std::vector<std::string> host_namespaces() {
  std::set<ino_t> seen;
  std::vector<std::string> out;
  const auto add = [&](const std::string& path) {
    struct stat st {};
    if (stat(path.c_str(), &st) == 0 && seen.insert(st.st_ino).second) {
      out.push_back(path);
    }
  };
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    add(e.path().string());
  }
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos) {
      add(e.path().string() + "/ns/net");
    }
  }
  return out;
}

// TIME_WAIT sockets (state 06) in the namespace at path, from /proc/net/tcp{,6} read inside it;
// -1 when it cannot be entered (the process left meanwhile).
long time_waits_in(const std::string& path) {
  long count = -1;
  std::thread worker([&] {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return;
    }
    const bool entered = setns(fd, CLONE_NEWNET) == 0;
    close(fd);
    if (!entered) {
      return;
    }
    count = 0;
    for (const char* table : {"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"}) {
      std::ifstream in(table);
      std::string line;
      std::getline(in, line);  // the header
      while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string sl;
        std::string local;
        std::string remote;
        std::string state;
        fields >> sl >> local >> remote >> state;
        count += state == "06" ? 1 : 0;
      }
    }
  });
  worker.join();
  return count;
}

long host_time_waits() {
  long total = 0;
  for (const std::string& path : host_namespaces()) {
    total += std::max(0L, time_waits_in(path));
  }
  return total;
}

// Sample lines (not comments) in an exposition, and the distinct values of one label in it.
std::size_t series_count(const std::string& text) {
  std::size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    n += !line.empty() && line[0] != '#' ? 1 : 0;
  }
  return n;
}

std::set<std::string> label_values(const std::string& text, const std::string& label) {
  std::set<std::string> values;
  const std::string key = label + "=\"";
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    if (const auto at = line.find(key); at != std::string::npos) {
      const auto start = at + key.size();
      values.insert(line.substr(start, line.find('"', start) - start));
    }
  }
  return values;
}

TEST(ManyNamespacesTest, SeriesStayUnderTheBudgetAndSumsStayExact) {
  std::vector<std::unique_ptr<NetnsSandbox>> namespaces;
  namespaces.reserve(kNamespaces);
  for (int i = 0; i < kNamespaces; ++i) {
    namespaces.push_back(std::make_unique<NetnsSandbox>("portlens-many"));
    make_time_waits(*namespaces.back(), kPort, kTimeWaitsEach);
  }
  PORTLENS_START_AGENT(agent);
  // A failed bind in each: a listener without SO_REUSEADDR and a second bind to its port.
  int failed = 0;
  for (const auto& ns : namespaces) {
    failed += ns->run([] {
      TestSocket a(AF_INET, SOCK_STREAM);
      TestSocket b(AF_INET, SOCK_STREAM);
      if (a.bind("127.0.0.1", kPort + 1) != 0 || a.listen() != 0) {
        return 0;
      }
      return b.bind("127.0.0.1", kPort + 1) == EADDRINUSE ? 1 : 0;
    });
  }
  ASSERT_EQ(failed, kNamespaces);
  const Labels mine{{"comm", own_comm()}};
  // Equal to the kernel's count in every namespace of the host, taken just before the scrape
  // (each scrape's own connection leaves a TIME_WAIT in the host namespace after it is served);
  // another namespace's TIME_WAITs may come and go meanwhile, so until the two agree (bounded).
  long kernel = -1;
  double exported = -2;
  std::string text;
  for (int round = 0; round < 20 && exported != static_cast<double>(kernel); ++round) {
    if (round > 0) {
      std::this_thread::sleep_for(500ms);
    }
    kernel = host_time_waits();
    text = agent.scrape();
    exported = metric_sum(text, "portlens_tcp_sockets", {{"state", "TIME_WAIT"}}).value_or(-1);
    if (metric_sum(text, "portlens_bind_failures_total", mine) < kNamespaces) {
      exported = -2;  // not caught up yet
    }
  }
  const std::set<std::string> labelled = label_values(text, "netns");
  const double folded = metric(text, "portlens_network_namespaces_folded").value_or(-1);
  std::printf(
      "%d namespaces: %zu series, %zu netns label values, %.0f namespaces folded; TIME_WAIT "
      "exported %.0f, kernel %ld; failed binds counted %.0f of %d\n",
      kNamespaces, series_count(text), labelled.size(), folded, exported, kernel,
      metric_sum(text, "portlens_bind_failures_total", mine).value_or(-1), failed);
  EXPECT_EQ(exported, static_cast<double>(kernel)) << "the sums are not exact";
  EXPECT_GE(kernel, kNamespaces * kTimeWaitsEach);
  EXPECT_EQ(metric_sum(text, "portlens_bind_failures_total", mine), kNamespaces);
  // The default budget: 16 namespaces by their own label, the rest under "other".
  EXPECT_LE(labelled.size(), 17U);
  EXPECT_TRUE(labelled.contains("other"));
  EXPECT_GE(folded, kNamespaces - 16);
  EXPECT_LT(series_count(text), 3000U) << "a scrape must not grow with the namespaces";
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace portlens::testing
