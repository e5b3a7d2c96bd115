// Kernel tests of the deployment: the real agent runs as root with exactly the capabilities that
// deploy/systemd/portlens.service grants (through setpriv, as systemd would set them), against
// sockets in private network namespaces; then once more without each capability, to show that
// every one of them is needed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"
#include "tests/support/loopback_http.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;

constexpr uid_t kNobody = 65534;
constexpr std::uint16_t kListenPort = 7600;    // held by a nobody process in the test's netns
constexpr std::uint16_t kTimeWaitPort = 7601;  // TIME_WAITs made while the agent runs
constexpr std::uint16_t kHiddenPort = 7602;    // held in a namespace that only /proc can reach
constexpr const char* kHolderComm = "pl-deploy-lsn";
constexpr const char* kHiddenComm = "pl-deploy-hid";
constexpr const char* kSetpriv = "/usr/bin/setpriv";

// The names in linux/capability.h, by number.
const std::vector<std::string>& capability_names() {
  static const std::vector<std::string> kNames = [] {
    std::istringstream words(
        "CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_KILL "
        "CAP_SETGID CAP_SETUID CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE "
        "CAP_NET_BROADCAST CAP_NET_ADMIN CAP_NET_RAW CAP_IPC_LOCK CAP_IPC_OWNER "
        "CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT "
        "CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME "
        "CAP_SYS_TTY_CONFIG CAP_MKNOD CAP_LEASE CAP_AUDIT_WRITE CAP_AUDIT_CONTROL "
        "CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG CAP_WAKE_ALARM "
        "CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE");
    std::vector<std::string> out;
    for (std::string name; words >> name;) {
      out.push_back(name);
    }
    return out;
  }();
  return kNames;
}

std::filesystem::path unit_file() {
  return std::filesystem::path(PORTLENS_SOURCE_DIR) / "deploy" / "systemd" / "portlens.service";
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r");
  const auto last = s.find_last_not_of(" \t\r");
  return first == std::string::npos ? std::string() : s.substr(first, last - first + 1);
}

// The value of KEY= in the unit, as systemd reads it: every line adds up, an empty assignment
// resets the list, and a leading ~ (an inverted list) is refused here. Throws when unreadable.
std::vector<std::string> unit_capabilities(const std::string& key) {
  std::ifstream in(unit_file());
  if (!in) {
    throw std::runtime_error("cannot read " + unit_file().string());
  }
  std::set<std::string> caps;
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (!line.starts_with(key + "=")) {
      continue;
    }
    const std::string value = trim(line.substr(key.size() + 1));
    if (value.empty()) {
      caps.clear();
      continue;
    }
    if (value.front() == '~') {
      throw std::runtime_error(key + "= is an inverted (~) list; this test reads plain lists");
    }
    std::istringstream words(value);
    for (std::string cap; words >> cap;) {
      if (std::find(capability_names().begin(), capability_names().end(), cap) ==
          capability_names().end()) {
        throw std::runtime_error(key + "=: unknown capability " + cap);
      }
      caps.insert(cap);
    }
  }
  return {caps.begin(), caps.end()};
}

bool unit_says(const std::string& line) {
  std::ifstream in(unit_file());
  for (std::string l; std::getline(in, l);) {
    if (trim(l) == line) {
      return true;
    }
  }
  return false;
}

// For value-parameterized tests: the bounding set, or nothing when the unit cannot be read (the
// main test then fails and says why).
std::vector<std::string> bounding_set_or_empty() {
  try {
    return unit_capabilities("CapabilityBoundingSet");
  } catch (const std::exception&) {
    return {};
  }
}

std::uint64_t capability_mask(const std::vector<std::string>& caps) {
  std::uint64_t mask = 0;
  for (const auto& cap : caps) {
    const auto& names = capability_names();
    const auto it = std::find(names.begin(), names.end(), cap);
    mask |= std::uint64_t{1} << static_cast<unsigned>(it - names.begin());
  }
  return mask;
}

// CAP_SYS_ADMIN -> sys_admin, as setpriv spells it.
std::string setpriv_name(const std::string& cap) {
  std::string out = cap.substr(4);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// What systemd does for a root service with these CapabilityBoundingSet=, AmbientCapabilities=
// and NoNewPrivileges=yes: the bounding set is cut to the list, so root's permitted and
// effective sets are exactly the list.
std::vector<std::string> setpriv_launcher(const std::vector<std::string>& caps) {
  std::string list = "-all";
  for (const auto& cap : caps) {
    list += ",+" + setpriv_name(cap);
  }
  return {kSetpriv,
          "--inh-caps=" + list,
          "--ambient-caps=" + list,
          "--bounding-set=" + list,
          "--no-new-privs",
          "--"};
}

// A process holding a listening TCP socket, and nothing else: made as root in a network
// namespace, then running as nobody under its own name, and dumpable, like any program that user
// runs. With an empty netns_path it makes a network namespace of its own, which is not under
// /run/netns: only /proc/PID/ns/net leads to it (as for a container's).
class Holder {
 public:
  Holder(const std::string& netns_path, const char* addr, std::uint16_t port, const char* comm) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    inet_pton(AF_INET, addr, &sin.sin_addr);
    std::array<int, 2> ready{};
    if (pipe2(ready.data(), O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2");
    }
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) {
      throw std::runtime_error("fork");
    }
    if (pid_ == 0) {
      // Only system calls from here: the parent may have threads.
      ::close(ready[0]);
      child(netns_path.empty() ? nullptr : netns_path.c_str(), sin, comm, parent, ready[1]);
    }
    ::close(ready[1]);
    char step = 0;
    const ssize_t n = read(ready[0], &step, 1);
    ::close(ready[0]);
    if (n != 1 || step != 'k') {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      throw std::runtime_error(std::string("the holder process failed at step ") +
                               (n == 1 ? std::string(1, step) : std::string("?")));
    }
    struct stat st {};
    if (stat(("/proc/" + std::to_string(pid_) + "/ns/net").c_str(), &st) != 0) {
      throw std::runtime_error("cannot stat the holder's network namespace");
    }
    netns_ = static_cast<std::uint32_t>(st.st_ino);
  }
  ~Holder() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Holder(const Holder&) = delete;
  Holder& operator=(const Holder&) = delete;
  Holder(Holder&&) = delete;
  Holder& operator=(Holder&&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::uint32_t netns() const { return netns_; }

 private:
  [[noreturn]] static void child(const char* netns_path, const sockaddr_in& sin, const char* comm,
                                 pid_t parent, int ready) {
    const auto fail = [ready](char step) {
      [[maybe_unused]] const ssize_t n = write(ready, &step, 1);
      _exit(1);
    };
    if (netns_path != nullptr) {
      const int fd = open(netns_path, O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        fail('n');
      }
      ::close(fd);
    } else if (unshare(CLONE_NEWNET) != 0) {
      fail('u');
    }
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || bind(s, reinterpret_cast<const sockaddr*>(&sin), sizeof sin) != 0 ||
        listen(s, 8) != 0) {
      fail('b');
    }
    if (prctl(PR_SET_NAME, comm, 0, 0, 0) != 0 || setgroups(0, nullptr) != 0 ||
        setresgid(kNobody, kNobody, kNobody) != 0 || setresuid(kNobody, kNobody, kNobody) != 0) {
      fail('i');
    }
    // After the uid change, which clears both: die with the test, and stay dumpable (a process
    // exec'd by that user is), which gives it its own /proc/PID ownership.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != parent ||
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) {
      fail('d');
    }
    const char ok = 'k';
    [[maybe_unused]] const ssize_t n = write(ready, &ok, 1);
    ::close(ready);
    for (;;) {
      pause();
    }
  }

  pid_t pid_ = -1;
  std::uint32_t netns_ = 0;
};

// The effective capabilities of the process whose command line mentions needle, as hex.
std::string effective_caps_of(const std::string& needle) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) {
      continue;
    }
    std::ifstream cmdline(entry.path() / "cmdline");
    const std::string args((std::istreambuf_iterator<char>(cmdline)),
                           std::istreambuf_iterator<char>());
    if (args.find(needle) == std::string::npos || args.find(kSetpriv) == 0) {
      continue;
    }
    std::ifstream status(entry.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.starts_with("CapEff:")) {
        return trim(line.substr(7));
      }
    }
  }
  return {};
}

// j[key], or null when j is not an object or has no such key.
nlohmann::json field(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) ? j[key] : nlohmann::json();
}

// What one agent run showed, under one capability set.
struct Observation {
  bool served = false;
  std::string stderr_text;
  std::string effective_caps;             // hex, as /proc/PID/status shows it
  std::optional<double> listen_here;      // tcp_sockets LISTEN in the test's netns
  std::optional<double> listen_hidden;    // tcp_sockets LISTEN in the holder's own netns
  int bind_rc = 0;                        // the conflicting bind() in the test's netns
  std::optional<double> bind_failures;    // bind_failures_total, port_in_use, the test's comm
  std::optional<nlohmann::json> blocker;  // the diagnosis's first blocker, from the event log
  std::optional<double> time_wait;        // tcp_sockets TIME_WAIT in the test's netns
  int exit_code = -1;

  // Everything the deployment is for: it runs, sees both namespaces, names the owner.
  [[nodiscard]] bool complete(pid_t holder) const {
    return served && listen_here == 1 && listen_hidden == 1 && blocker.has_value() &&
           field(*blocker, "pid") == holder;
  }
};

std::string describe(const Observation& o) {
  std::ostringstream out;
  const auto opt = [](const std::optional<double>& v) {
    return v ? std::to_string(*v) : std::string("none");
  };
  out << "served=" << o.served << " CapEff=" << o.effective_caps
      << " LISTEN(here)=" << opt(o.listen_here) << " LISTEN(hidden)=" << opt(o.listen_hidden)
      << " bind_failures=" << opt(o.bind_failures)
      << " blocker=" << (o.blocker ? o.blocker->dump() : std::string("none"))
      << " TIME_WAIT=" << opt(o.time_wait) << " exit=" << o.exit_code;
  if (!o.served) {
    out << "\nagent stderr:\n" << o.stderr_text;
  }
  return out.str();
}

// Runs the agent under caps and makes the activity this file checks. Bounded: each wait ends
// after at most 15 s.
Observation observe(const std::vector<std::string>& caps, const NetnsSandbox& ns,
                    const Holder& hidden) {
  Observation o;
  Agent agent({}, setpriv_launcher(caps));
  o.served = agent.ready();
  if (!o.served) {
    o.exit_code = agent.process().wait(10s);
    o.stderr_text = agent.process().err();
    return o;
  }
  o.effective_caps = effective_caps_of((agent.dir() / "api.sock").string());
  const std::string here = std::to_string(ns.inode());
  const std::string there = std::to_string(hidden.netns());
  const Labels listen_here = {{"netns", here}, {"state", "LISTEN"}};
  const Labels listen_hidden = {{"netns", there}, {"state", "LISTEN"}};
  static_cast<void>(agent.scrape_until(
      [&](const std::string& t) { return metric(t, "portlens_tcp_sockets", listen_here) == 1; }));
  // Every namespace is walked in the same pass; two more passes (--reconcile-interval 1) settle
  // whether the hidden one is visible at all.
  std::this_thread::sleep_for(2500ms);
  const std::string text = agent.scrape();
  o.listen_here = metric(text, "portlens_tcp_sockets", listen_here);
  o.listen_hidden = metric(text, "portlens_tcp_sockets", listen_hidden);

  o.bind_rc = ns.run([] {
    TestSocket s(AF_INET, SOCK_STREAM);
    return s.bind("127.0.0.1", kListenPort);
  });
  const Labels failure = {
      {"proto", "tcp"}, {"syscall", "bind"}, {"cause", "port_in_use"}, {"comm", own_comm()}};
  const std::string counted = agent.scrape_until([&](const std::string& t) {
    return metric(t, "portlens_bind_failures_total", failure).has_value();
  });
  o.bind_failures = metric(counted, "portlens_bind_failures_total", failure);
  const auto log = agent.dir() / "events.log";
  eventually([&] {
    std::ifstream in(log);
    const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (const auto& record : json_lines(all)) {
      const auto blockers = field(field(record, "diagnosis"), "blockers");
      if (field(field(record, "local"), "port") == kListenPort && blockers.is_array() &&
          !blockers.empty()) {
        o.blocker = blockers[0];
        return true;
      }
    }
    return false;
  });

  make_time_waits(ns, kTimeWaitPort, 3);
  const Labels tw = {{"netns", here}, {"state", "TIME_WAIT"}};
  o.time_wait = metric(agent.scrape_until([&](const std::string& t) {
    return metric(t, "portlens_tcp_sockets", tw) == 3;
  }),
                       "portlens_tcp_sockets", tw);
  o.exit_code = agent.stop();
  return o;
}

class DeployTest : public KernelTest {
 protected:
  void SetUp() override {
    KernelTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    ASSERT_TRUE(std::filesystem::exists(kSetpriv))
        << "setpriv missing: run scripts/install-deps.sh";
    {
      // The same skip-or-fail rule as every kernel test, when BPF cannot load at all.
      PORTLENS_START_TRACE(probe, TracerConfig{});
    }
    holder_.emplace(ns().path(), "127.0.0.1", kListenPort, kHolderComm);
    hidden_.emplace("", "0.0.0.0", kHiddenPort, kHiddenComm);
  }
  void TearDown() override {
    hidden_.reset();
    holder_.reset();
  }

  std::optional<Holder> holder_;
  std::optional<Holder> hidden_;
};

TEST_F(DeployTest, AgentDoesEverythingWithExactlyTheUnitsCapabilities) {
  const auto caps = unit_capabilities("CapabilityBoundingSet");
  ASSERT_FALSE(caps.empty()) << unit_file() << " sets no CapabilityBoundingSet=";
  // Ambient capabilities never exceed the bounding set (systemd would refuse them anyway).
  for (const auto& cap : unit_capabilities("AmbientCapabilities")) {
    EXPECT_TRUE(std::find(caps.begin(), caps.end(), cap) != caps.end())
        << cap << " is in AmbientCapabilities= but not in CapabilityBoundingSet=";
  }
  EXPECT_TRUE(unit_says("NoNewPrivileges=yes"));

  const Observation o = observe(caps, ns(), *hidden_);
  ASSERT_TRUE(o.served) << describe(o);
  // setpriv gave the agent the list and nothing else.
  std::ostringstream mask;
  mask << std::hex << std::setw(16) << std::setfill('0') << capability_mask(caps);
  EXPECT_EQ(o.effective_caps, mask.str()) << describe(o);
  // A snapshot of the test's namespace (under /run/netns), and of one only /proc leads to.
  EXPECT_EQ(o.listen_here, 1) << describe(o);
  EXPECT_EQ(o.listen_hidden, 1) << describe(o);
  // The failed bind: counted, diagnosed, and its blocker named, though the blocker's process is
  // another user's and was there before the agent (so only /proc can tell whose it is).
  EXPECT_EQ(o.bind_rc, EADDRINUSE);
  EXPECT_EQ(o.bind_failures, 1) << describe(o);
  ASSERT_TRUE(o.blocker) << describe(o);
  EXPECT_EQ(field(*o.blocker, "pid"), holder_->pid()) << describe(o);
  EXPECT_EQ(field(*o.blocker, "comm"), std::string(kHolderComm)) << describe(o);
  // SO_REUSEADDR is known (false), not unknown (null): the BPF iterators took the snapshot, not
  // the sock_diag fallback.
  EXPECT_EQ(field(*o.blocker, "reuseaddr"), false) << describe(o);
  // Tracepoints: TIME_WAITs made after the start are followed from the events.
  EXPECT_EQ(o.time_wait, 3) << describe(o);
  EXPECT_EQ(o.exit_code, 0) << describe(o);
}

// Without each capability of the unit, something the deployment is for breaks. The known ones
// say what breaks; a capability added to the unit later must show its own breakage, or go.
class DeployDropTest : public DeployTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(DeployDropTest, EachCapabilityIsNeeded) {
  auto caps = unit_capabilities("CapabilityBoundingSet");
  const std::string dropped = GetParam();
  caps.erase(std::remove(caps.begin(), caps.end(), dropped), caps.end());
  const Observation o = observe(caps, ns(), *hidden_);
  EXPECT_FALSE(o.complete(holder_->pid()))
      << dropped << " is not needed: everything worked without it. " << describe(o);
  if (dropped == "CAP_SYS_ADMIN") {
    // Nothing else lets it load BPF (CAP_BPF, CAP_PERFMON are not in the set).
    EXPECT_FALSE(o.served) << describe(o);
    EXPECT_NE(o.stderr_text.find("cannot load the BPF programs"), std::string::npos) << describe(o);
    EXPECT_EQ(o.exit_code, 1) << describe(o);
  } else if (dropped == "CAP_SYS_PTRACE") {
    // /run/netns is still readable, /proc/PID/ns/net of another user's process is not, and no
    // socket owner is found through /proc/PID/fd.
    ASSERT_TRUE(o.served) << describe(o);
    EXPECT_EQ(o.listen_here, 1) << describe(o);
    EXPECT_FALSE(o.listen_hidden) << describe(o);
    ASSERT_TRUE(o.blocker) << describe(o);
    EXPECT_TRUE(field(*o.blocker, "pid").is_null()) << describe(o);
  } else if (dropped == "CAP_DAC_READ_SEARCH") {
    // Namespaces are all seen; another user's /proc/PID/fd (mode 0500) cannot be listed.
    ASSERT_TRUE(o.served) << describe(o);
    EXPECT_EQ(o.listen_here, 1) << describe(o);
    EXPECT_EQ(o.listen_hidden, 1) << describe(o);
    ASSERT_TRUE(o.blocker) << describe(o);
    EXPECT_TRUE(field(*o.blocker, "pid").is_null()) << describe(o);
  }
}

// Test names: sys_admin, sys_ptrace, ...
std::string capability_test_name(const ::testing::TestParamInfo<std::string>& param) {
  return setpriv_name(param.param);
}

INSTANTIATE_TEST_SUITE_P(UnitCapabilities, DeployDropTest,
                         ::testing::ValuesIn(bounding_set_or_empty()), capability_test_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(DeployDropTest);

}  // namespace
}  // namespace portlens::testing
