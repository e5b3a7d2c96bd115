// The randomized differential test of issue 3: thousands of generated scenarios, each in a
// throwaway network namespace, comparing what `portlens check` predicts (predict() over a BPF
// iterator snapshot) with what the kernel does on the real bind() and listen(). The kernel is the
// judge (docs/kernel-rules.md): every disagreement fails the test and prints the scenario, with a
// unit-test form of it for tests/unit/diagnoser_test.cpp.
//
// Issue 10, the kernel judges every fix: for each scenario whose real call failed (and that
// portlens predicted), every set_option, bind_address and wait fix of the diagnosis is applied to
// a fresh copy of the scenario in a new network namespace (the options set on the new socket, or
// the blockers made with them; for wait, the copy is made without the blocking TIME_WAITs, which
// is what waiting does), and the real bind() (and listen()) must then succeed. A fix that fails
// prints the fix, the errno and the scenario. sysctl and stop fixes are not checked here.
//
// PORTLENS_DIFF_SEED (default kDefaultSeed) and PORTLENS_DIFF_COUNT (default kDefaultCount) pick
// the scenarios; scenario i depends only on (seed, i), so PORTLENS_DIFF_ONLY=i replays one.
// PORTLENS_DIFF_JOBS sets how many scenarios run at once (default 2), PORTLENS_DIFF_PRINT how
// many disagreements are printed in full (default 20).
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agent/diagnose/diagnoser.hpp"
#include "agent/kernel/netns.hpp"
#include "agent/kernel/snapshot.hpp"
#include "agent/model/error.hpp"
#include "agent/render/format.hpp"
#include "agent/render/report.hpp"
#include "tests/kernel/harness.hpp"

namespace portlens::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kDefaultSeed = 20240611;
constexpr std::uint64_t kDefaultCount = 8000;
constexpr unsigned kDefaultJobs = 2;
constexpr std::uint32_t kOtherUid = 1000;
constexpr std::uint64_t kPrintedDisagreements = 20;
// Issue 10: the fix check must cover at least this many failing scenarios with the default seed.
constexpr std::uint64_t kMinFailingWithFixes = 2000;

// ---------------------------------------------------------------------------------------------
// Environment.

std::optional<std::uint64_t> env_number(const char* name) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read before any thread
  if (v == nullptr || *v == '\0') {
    return std::nullopt;
  }
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 0);
  if (end == nullptr || *end != '\0') {
    throw std::invalid_argument(std::string(name) + " is not a number: " + v);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// What a scenario is made of.

enum class Addr : std::uint8_t {
  kAny4,
  kLoopback1,
  kLoopback2,
  kMapped,
  kAny6Dual,
  kAny6Only,
  kLoopback6
};

struct AddrDesc {
  const char* text;  // what bind() gets
  int family;        // the socket's family
  bool v6only;       // IPV6_V6ONLY set explicitly before bind()
  const char* label;
};

constexpr std::array<AddrDesc, 7> kAddrs{{
    {"0.0.0.0", AF_INET, false, "0.0.0.0"},
    {"127.0.0.1", AF_INET, false, "127.0.0.1"},
    {"127.0.0.2", AF_INET, false, "127.0.0.2"},
    {"::ffff:127.0.0.1", AF_INET6, false, "[::ffff:127.0.0.1]"},
    {"::", AF_INET6, false, "[::] dual-stack"},
    {"::", AF_INET6, true, "[::] v6only"},
    {"::1", AF_INET6, false, "[::1]"},
}};

const AddrDesc& desc(Addr a) { return kAddrs.at(static_cast<std::size_t>(a)); }

// What the kernel makes of the socket's v6only: IPV6_V6ONLY, or implied by inet6_bind() for a
// specific, non-mapped IPv6 address (check.cpp predicts with the same rule).
bool effective_v6only(Addr a) { return a == Addr::kAny6Only || a == Addr::kLoopback6; }

enum class Role : std::uint8_t {
  kBound,
  kListen,
  kEstablished,
  kTimeWait,
  kUdpBound,
  kUdpConnected
};

const char* role_name(Role r) {
  switch (r) {
    case Role::kBound:
      return "bound";
    case Role::kListen:
      return "LISTEN";
    case Role::kEstablished:
      return "ESTABLISHED";
    case Role::kTimeWait:
      return "TIME_WAIT";
    case Role::kUdpBound:
      return "bound";
    case Role::kUdpConnected:
      return "connected";
  }
  return "?";
}

bool connects(Role r) {
  return r == Role::kEstablished || r == Role::kTimeWait || r == Role::kUdpConnected;
}

struct Existing {
  Proto proto = Proto::kTcp;
  Addr addr = Addr::kAny4;
  std::uint16_t port = 0;
  bool reuseaddr = false;
  bool reuseport = false;
  std::uint32_t uid = 0;
  bool device = false;  // SO_BINDTODEVICE "lo"
  Role role = Role::kBound;
  const char* peer = nullptr;  // connect() target address (the helper's port)

  // Filled in by the run.
  std::string fate;  // empty: made as asked; otherwise why it was dropped
  std::uint64_t inode = 0;
  std::optional<Endpoint> local;   // getsockname() once made
  std::optional<Endpoint> remote;  // getpeername() once connected
};

struct NewSocket {
  Proto proto = Proto::kTcp;
  Addr addr = Addr::kAny4;
  // A bind_address fix: what bind() gets instead of desc(addr).text (same family and options).
  std::optional<std::string> addr_text;
  bool reuseaddr = false;
  bool reuseport = false;
  std::uint32_t uid = 0;
  bool device = false;
  bool then_listen = false;
};

struct Scenario {
  std::uint64_t seed = 0;
  std::uint64_t index = 0;
  std::uint16_t port = 0;  // P: the port under test
  // Existing socket i connects to a [::] dual-stack listener on helper_port + i, so that no two
  // of them share a 4-tuple (connect() would take over a TIME_WAIT of the same 4-tuple).
  std::uint16_t helper_port = 0;
  std::vector<Existing> existing;
  NewSocket call;
};

template <class Rng>
bool coin(Rng& rng, double p) {
  return std::bernoulli_distribution(p)(rng);
}

template <class Rng>
std::size_t pick(Rng& rng, std::size_t n) {
  return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
}

template <class Rng>
Addr random_addr(Rng& rng) {
  return static_cast<Addr>(pick(rng, kAddrs.size()));
}

// A peer the socket can reach from its address: the same family, mapped for dual-stack IPv4.
template <class Rng>
const char* peer_for(Rng& rng, Addr a) {
  switch (a) {
    case Addr::kAny4:
    case Addr::kLoopback1:
    case Addr::kLoopback2:
      return "127.0.0.1";
    case Addr::kMapped:
      return "::ffff:127.0.0.1";
    case Addr::kAny6Dual:
      return coin(rng, 0.5) ? "::ffff:127.0.0.1" : "::1";
    case Addr::kAny6Only:
    case Addr::kLoopback6:
      return "::1";
  }
  return "127.0.0.1";
}

Scenario generate(std::uint64_t seed, std::uint64_t index) {
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32U),
                    static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32U)};
  std::mt19937 rng(seq);
  Scenario s;
  s.seed = seed;
  s.index = index;
  // Unprivileged and below the ephemeral range (32768-60999), so connect() never picks them.
  s.port = static_cast<std::uint16_t>(std::uniform_int_distribution<int>(10000, 30000)(rng));
  s.helper_port = static_cast<std::uint16_t>(s.port + 100);

  NewSocket& c = s.call;
  c.proto = coin(rng, 0.6) ? Proto::kTcp : Proto::kUdp;
  c.addr = random_addr(rng);
  c.reuseaddr = coin(rng, 0.5);
  c.reuseport = coin(rng, 0.5);
  c.uid = coin(rng, 0.5) ? 0 : kOtherUid;
  c.device = coin(rng, 0.2);
  c.then_listen = c.proto == Proto::kTcp && coin(rng, 0.6);

  const std::size_t n = 1 + pick(rng, 4);
  for (std::size_t i = 0; i < n; ++i) {
    Existing e;
    e.proto = coin(rng, 0.85) ? c.proto : (c.proto == Proto::kTcp ? Proto::kUdp : Proto::kTcp);
    e.addr = random_addr(rng);
    e.port = coin(rng, 0.9) ? s.port : static_cast<std::uint16_t>(s.port + 1);
    e.reuseaddr = coin(rng, 0.5);
    e.reuseport = coin(rng, 0.5);
    e.uid = coin(rng, 0.5) ? 0 : kOtherUid;
    e.device = coin(rng, 0.2);
    if (e.proto == Proto::kTcp) {
      constexpr std::array<Role, 4> kTcpRoles{Role::kBound, Role::kListen, Role::kEstablished,
                                              Role::kTimeWait};
      constexpr std::array<double, 4> kWeights{25, 35, 20, 20};
      e.role = kTcpRoles.at(
          std::discrete_distribution<std::size_t>(kWeights.begin(), kWeights.end())(rng));
    } else {
      e.role = coin(rng, 0.7) ? Role::kUdpBound : Role::kUdpConnected;
    }
    e.peer = peer_for(rng, e.addr);
    s.existing.push_back(e);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Doing it for real, in the worker thread.

// The calling thread's effective (and so filesystem) uid, for the life of the scope: the raw
// syscall changes only this thread, where glibc's setresuid() would change every thread.
class UidScope {
 public:
  explicit UidScope(std::uint32_t uid) : active_(uid != 0) {
    if (active_ && syscall(SYS_setresuid, static_cast<long>(-1), static_cast<long>(uid),
                           static_cast<long>(-1)) != 0) {
      throw std::runtime_error("setresuid(-1, " + std::to_string(uid) +
                               ", -1): " + errno_text(errno));
    }
  }
  ~UidScope() {
    if (active_ && syscall(SYS_setresuid, static_cast<long>(-1), 0L, static_cast<long>(-1)) != 0) {
      std::fputs("differential_test: cannot restore euid 0; aborting\n", stderr);
      std::abort();  // never go on running as another uid
    }
  }
  UidScope(const UidScope&) = delete;
  UidScope& operator=(const UidScope&) = delete;
  UidScope(UidScope&&) = delete;
  UidScope& operator=(UidScope&&) = delete;

 private:
  bool active_;
};

// A plain descriptor, closed on destruction.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

void bring_loopback_up() {
  const Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    throw std::runtime_error("socket for SIOCSIFFLAGS: " + errno_text(errno));
  }
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, "lo", 3);
  if (ioctl(fd.get(), SIOCGIFFLAGS, &ifr) != 0) {
    throw std::runtime_error("SIOCGIFFLAGS lo: " + errno_text(errno));
  }
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(fd.get(), SIOCSIFFLAGS, &ifr) != 0) {
    throw std::runtime_error("SIOCSIFFLAGS lo up: " + errno_text(errno));
  }
}

std::optional<Endpoint> endpoint_from(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, &ss, sizeof sin);
    return Endpoint{IpAddress::v4(sin.sin_addr.s_addr), ntohs(sin.sin_port)};
  }
  if (ss.ss_family == AF_INET6) {
    sockaddr_in6 sin6{};
    std::memcpy(&sin6, &ss, sizeof sin6);
    std::array<std::uint8_t, 16> bytes{};
    std::memcpy(bytes.data(), &sin6.sin6_addr, bytes.size());
    return Endpoint{IpAddress::v6(bytes), ntohs(sin6.sin6_port)};
  }
  return std::nullopt;
}

std::optional<Endpoint> sock_name(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  if ((peer ? getpeername(fd, sa, &len) : getsockname(fd, sa, &len)) != 0) {
    return std::nullopt;
  }
  return endpoint_from(ss);
}

std::uint64_t inode_of(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    throw std::runtime_error("fstat: " + errno_text(errno));
  }
  return st.st_ino;
}

// Waits (bounded) until fd reads end-of-file: the peer's FIN has arrived.
void wait_eof(int fd) {
  pollfd p{fd, POLLIN, 0};
  char byte = 0;
  if (poll(&p, 1, 2000) != 1 || ::read(fd, &byte, 1) != 0) {
    throw std::runtime_error("no FIN from the client of a TIME_WAIT connection");
  }
}

int socket_type(Proto p) { return p == Proto::kTcp ? SOCK_STREAM : SOCK_DGRAM; }

// Creates a socket as uid with the options set and bind() done; returns bind()'s errno.
int make_bound(TestSocket* out, Addr addr, std::uint16_t port, bool reuseaddr, bool reuseport,
               bool device, const std::optional<std::string>& addr_text = std::nullopt) {
  const AddrDesc& a = desc(addr);
  if (a.v6only) {
    out->v6only();
  }
  if (reuseaddr) {
    out->reuseaddr();
  }
  if (reuseport) {
    out->reuseport();
  }
  if (device) {
    constexpr char kLo[] = "lo";
    if (setsockopt(out->fd(), SOL_SOCKET, SO_BINDTODEVICE, kLo, sizeof kLo) != 0) {
      throw std::runtime_error("SO_BINDTODEVICE lo: " + errno_text(errno));
    }
  }
  return out->bind(addr_text.value_or(a.text), port);
}

// Everything a scenario keeps open until its real call is made.
struct Held {
  std::vector<TestSocket> sockets;
  std::vector<Fd> children;
};

void make_existing(Existing& e, const TestSocket& helper, std::uint16_t helper_port, Held& held) {
  std::optional<TestSocket> sock;
  int err = 0;
  {
    const UidScope as(e.uid);
    sock.emplace(desc(e.addr).family, socket_type(e.proto));
    err = make_bound(&*sock, e.addr, e.port, e.reuseaddr, e.reuseport, e.device);
  }
  if (err != 0) {
    e.fate = "bind() " + errno_name(err);
    return;
  }
  if (e.role == Role::kListen) {
    err = sock->listen(16);
    if (err != 0) {
      e.fate = "listen() " + errno_name(err);
      return;
    }
  }
  if (connects(e.role)) {
    err = sock->connect(e.peer, helper_port);
    if (err != 0) {
      e.fate = std::string("connect(") + e.peer + ") " + errno_name(err);
      return;
    }
  }
  e.local = sock_name(sock->fd(), false);
  if (connects(e.role)) {
    e.remote = sock_name(sock->fd(), true);
  }
  e.inode = inode_of(sock->fd());
  if (e.proto == Proto::kTcp && connects(e.role)) {
    const int child = helper.accept_one();
    if (child < 0) {
      throw std::runtime_error("accept() on the helper: " + errno_text(-child));
    }
    Fd accepted(child);
    if (e.role == Role::kTimeWait) {
      // Active close from the client: FIN_WAIT2, then TIME_WAIT once the child closes too.
      sock->close();
      wait_eof(accepted.get());
      return;  // accepted closes here
    }
    held.children.push_back(std::move(accepted));
  }
  held.sockets.push_back(std::move(*sock));
}

struct Actual {
  bool ok = true;
  Syscall failing = Syscall::kBind;
  int err = 0;  // positive errno
};

struct Result {
  Scenario scenario;
  std::optional<Snapshot> snapshot;
  std::optional<Call> call;
  std::optional<Prediction> prediction;
  Actual actual;
  std::vector<std::string> snapshot_problems;
  std::string error;  // the run itself failed
};

bool same_endpoint(const Endpoint& a, const Endpoint& b) {
  return a.port == b.port && a.addr.unmapped() == b.addr.unmapped();
}

const SocketEntry* find_time_wait(const Snapshot& snap, const Existing& e) {
  for (const SocketEntry& s : snap.table.sockets) {
    if (s.proto == Proto::kTcp && s.state == TcpState::kTimeWait && s.remote && e.local &&
        e.remote && same_endpoint(s.local, *e.local) && same_endpoint(*s.remote, *e.remote)) {
      return &s;
    }
  }
  return nullptr;
}

bool time_waits_present(const Scenario& s, const Snapshot& snap) {
  return std::all_of(s.existing.begin(), s.existing.end(), [&](const Existing& e) {
    return e.role != Role::kTimeWait || !e.fate.empty() || find_time_wait(snap, e) != nullptr;
  });
}

Call call_of(const NewSocket& n, std::uint16_t port, int lo_index, std::uint64_t netns) {
  // As `portlens check` builds it (check.cpp bind_call): family from the address, v6only given
  // or implied by a specific non-mapped IPv6 address, uid, options, the netns inode.
  const auto addr = IpAddress::parse(desc(n.addr).text);
  if (!addr) {
    throw std::logic_error("unparsable address");
  }
  Call c;
  c.syscall = Syscall::kBind;
  c.proto = n.proto;
  c.family = addr->family();
  c.netns = netns;
  c.local = Endpoint{*addr, port};
  c.options.reuseaddr = n.reuseaddr;
  c.options.reuseport = n.reuseport;
  c.options.v6only =
      desc(n.addr).v6only || (addr->is_v6() && !addr->is_any() && !addr->is_v4_mapped());
  c.options.bound_dev_if = n.device ? lo_index : 0;
  c.uid = n.uid;
  return c;
}

// The whole scenario, on the calling thread, which it moves into a new network namespace.
void run_in_new_netns(const SocketSnapshotter& snapshotter, Result& r) {
  Scenario& s = r.scenario;
  if (unshare(CLONE_NEWNET) != 0) {
    throw std::runtime_error("unshare(CLONE_NEWNET): " + errno_text(errno));
  }
  bring_loopback_up();
  const int lo_index = static_cast<int>(if_nametoindex("lo"));

  std::vector<TestSocket> helpers;
  for (std::size_t i = 0; i < s.existing.size(); ++i) {
    TestSocket& h = helpers.emplace_back(AF_INET6, SOCK_STREAM);
    const auto port = static_cast<std::uint16_t>(s.helper_port + i);
    int err = h.bind("::", port);
    if (err == 0) {
      err = h.listen(16);
    }
    if (err != 0) {
      throw std::runtime_error("helper listener on port " + std::to_string(port) + ": " +
                               errno_text(err));
    }
  }
  Held held;
  for (std::size_t i = 0; i < s.existing.size(); ++i) {
    make_existing(s.existing[i], helpers[i], static_cast<std::uint16_t>(s.helper_port + i), held);
  }

  NetnsRef ns;
  ns.path = "/proc/" + std::to_string(getpid()) + "/task/" + std::to_string(gettid()) + "/ns/net";
  struct stat st {};
  if (stat(ns.path.c_str(), &st) != 0) {
    throw std::runtime_error("stat " + ns.path + ": " + errno_text(errno));
  }
  ns.inode = static_cast<std::uint32_t>(st.st_ino);

  // A TIME_WAIT comes a moment after the closes: wait until the snapshot has every one.
  r.snapshot = snapshotter.take(ns);
  for (int i = 0; i < 200 && !time_waits_present(s, *r.snapshot); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    r.snapshot = snapshotter.take(ns);
  }

  r.call = call_of(s.call, s.port, lo_index, ns.inode);
  r.prediction = predict(*r.call, s.call.then_listen, r.snapshot->table);

  std::optional<TestSocket> sock;
  int err = 0;
  {
    const UidScope as(s.call.uid);
    sock.emplace(desc(s.call.addr).family, socket_type(s.call.proto));
    err =
        make_bound(&*sock, s.call.addr, s.port, s.call.reuseaddr, s.call.reuseport, s.call.device);
  }
  if (err != 0) {
    r.actual = Actual{false, Syscall::kBind, err};
  } else if (s.call.then_listen) {
    err = sock->listen(16);
    if (err != 0) {
      r.actual = Actual{false, Syscall::kListen, err};
    }
  }
}

Result run_scenario(const SocketSnapshotter& snapshotter, Scenario scenario) {
  Result r;
  r.scenario = std::move(scenario);
  std::thread worker([&] {
    try {
      run_in_new_netns(snapshotter, r);
    } catch (const std::exception& e) {
      r.error = e.what();
    }
  });
  worker.join();
  return r;
}

// ---------------------------------------------------------------------------------------------
// The kernel judges every fix: a failing scenario is made again from scratch in a fresh network
// namespace with one fix applied, and the real bind() (and listen()) must then succeed.

struct FixRun {
  bool checked = false;  // false: a kind the kernel check skips (sysctl, stop without a PID)
  Actual actual;
  std::string copy_problem;  // the fresh copy could not be made as the original was
  std::string error;
  bool changed_any = false;  // the fix recreated blockers with an option
  bool reordered = false;    // ... and they had to be restarted after the others were made
};

// Whether an existing socket of the original run is this blocker: by inode, or for a TIME_WAIT
// (no inode) by its 4-tuple.
bool is_blocker(const Existing& e, const Blocker& b) {
  if (!e.fate.empty()) {
    return false;
  }
  if (e.role == Role::kTimeWait) {
    return b.socket.state == TcpState::kTimeWait && b.socket.remote && e.local && e.remote &&
           same_endpoint(b.socket.local, *e.local) && same_endpoint(*b.socket.remote, *e.remote);
  }
  return b.socket.inode != 0 && b.socket.inode == e.inode;
}

bool set_flag(const std::string& option, bool& reuseaddr, bool& reuseport, Addr& addr) {
  if (option == "SO_REUSEADDR") {
    reuseaddr = true;
  } else if (option == "SO_REUSEPORT") {
    reuseport = true;
  } else if (option == "IPV6_V6ONLY" && addr == Addr::kAny6Dual) {
    addr = Addr::kAny6Only;
  } else {
    return false;
  }
  return true;
}

// The fresh copy with fix applied, run on the calling thread in a new network namespace. Sockets
// the kernel refused in the original are left out; every other one is made in the same order.
// With restart, the blockers the fix changes are first made as in the original, then closed and
// made again with the option once every other socket exists: what restarting them does on a live
// host. Both are the same scenario unless a UDP chain or a bind bucket remembers the order in a
// way that matters to another socket's own bind().
void run_fix_in_new_netns(const SocketSnapshotter& snapshotter, const Result& r, const Fix& fix,
                          bool restart, FixRun& out) {
  Scenario s = r.scenario;
  std::vector<bool> skip(s.existing.size(), false);
  std::vector<bool> changed(s.existing.size(), false);
  for (std::size_t i = 0; i < s.existing.size(); ++i) {
    skip[i] = !s.existing[i].fate.empty();
  }
  const auto blocker = [&](std::size_t i) {
    return std::any_of(r.prediction->diagnosis->blockers.begin(),
                       r.prediction->diagnosis->blockers.end(),
                       [&](const Blocker& b) { return is_blocker(s.existing[i], b); });
  };
  switch (fix.kind) {
    case Fix::Kind::kSetOption:
      if (fix.on != Fix::On::kBlocker &&
          !set_flag(fix.option, s.call.reuseaddr, s.call.reuseport, s.call.addr)) {
        throw std::logic_error("no way to apply " + fix.option + " to the new socket");
      }
      if (fix.on != Fix::On::kNew) {
        // "blocker": every blocker but the TIME_WAITs, recreated with the option.
        for (std::size_t i = 0; i < s.existing.size(); ++i) {
          Existing& e = s.existing[i];
          if (e.role == Role::kTimeWait || !blocker(i)) {
            continue;
          }
          changed[i] = set_flag(fix.option, e.reuseaddr, e.reuseport, e.addr);
          if (!changed[i] && fix.option != "IPV6_V6ONLY") {
            throw std::logic_error("no way to apply " + fix.option + " to a blocker");
          }
        }
      }
      break;
    case Fix::Kind::kWait:
      // What waiting does: the blocking TIME_WAITs expire. The copy is made without them.
      for (std::size_t i = 0; i < s.existing.size(); ++i) {
        skip[i] = skip[i] || (s.existing[i].role == Role::kTimeWait && blocker(i));
      }
      break;
    case Fix::Kind::kBindAddress:
      s.call.addr_text = fix.addr->to_string();
      break;
    case Fix::Kind::kStop:
    case Fix::Kind::kSysctl:
      return;
  }
  out.checked = true;

  if (unshare(CLONE_NEWNET) != 0) {
    throw std::runtime_error("unshare(CLONE_NEWNET): " + errno_text(errno));
  }
  bring_loopback_up();
  std::vector<TestSocket> helpers;
  for (std::size_t i = 0; i < s.existing.size(); ++i) {
    TestSocket& h = helpers.emplace_back(AF_INET6, SOCK_STREAM);
    const auto port = static_cast<std::uint16_t>(s.helper_port + i);
    int err = h.bind("::", port);
    if (err == 0) {
      err = h.listen(16);
    }
    if (err != 0) {
      throw std::runtime_error("helper listener on port " + std::to_string(port) + ": " +
                               errno_text(err));
    }
  }
  Held held;
  std::vector<std::optional<Held>> before_restart(s.existing.size());
  bool time_waits = false;
  out.changed_any = std::find(changed.begin(), changed.end(), true) != changed.end();
  const auto make = [&](std::size_t i, Existing& e, Held& into) {
    e.fate.clear();
    make_existing(e, helpers[i], static_cast<std::uint16_t>(s.helper_port + i), into);
    if (!e.fate.empty()) {
      out.copy_problem +=
          "#" + std::to_string(i) + " was made in the original, here " + e.fate + "; ";
    }
    time_waits = time_waits || e.role == Role::kTimeWait;
  };
  for (std::size_t i = 0; i < s.existing.size(); ++i) {
    if (skip[i]) {
      continue;
    }
    if (restart && changed[i]) {
      Existing original = r.scenario.existing[i];
      make(i, original, before_restart[i].emplace());
    } else {
      make(i, s.existing[i], held);
    }
  }
  if (restart) {
    // The changed blockers are closed and made again with the option, after all the others.
    for (std::size_t i = 0; i < s.existing.size(); ++i) {
      if (before_restart[i]) {
        before_restart[i].reset();
        make(i, s.existing[i], held);
      }
    }
  }
  if (time_waits) {
    // As in the original: the TIME_WAITs come a moment after the closes.
    NetnsRef ns;
    ns.path = "/proc/" + std::to_string(getpid()) + "/task/" + std::to_string(gettid()) + "/ns/net";
    struct stat st {};
    if (stat(ns.path.c_str(), &st) != 0) {
      throw std::runtime_error("stat " + ns.path + ": " + errno_text(errno));
    }
    ns.inode = static_cast<std::uint32_t>(st.st_ino);
    Scenario present = s;
    for (std::size_t i = 0; i < present.existing.size(); ++i) {
      if (skip[i]) {
        present.existing[i].fate = "left out";
      }
    }
    for (int i = 0; i < 200 && !time_waits_present(present, snapshotter.take(ns)); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  std::optional<TestSocket> sock;
  int err = 0;
  {
    const UidScope as(s.call.uid);
    sock.emplace(desc(s.call.addr).family, socket_type(s.call.proto));
    err = make_bound(&*sock, s.call.addr, s.port, s.call.reuseaddr, s.call.reuseport, s.call.device,
                     s.call.addr_text);
  }
  if (err != 0) {
    out.actual = Actual{false, Syscall::kBind, err};
  } else if (s.call.then_listen) {
    err = sock->listen(16);
    if (err != 0) {
      out.actual = Actual{false, Syscall::kListen, err};
    }
  }
}

FixRun run_fix_once(const SocketSnapshotter& snapshotter, const Result& r, const Fix& fix,
                    bool restart) {
  FixRun out;
  std::thread worker([&] {
    try {
      run_fix_in_new_netns(snapshotter, r, fix, restart, out);
    } catch (const std::exception& e) {
      out.error = e.what();
    }
  });
  worker.join();
  return out;
}

// The copy in creation order; if a changed blocker made another socket's own bind() fail there
// (a UDP chain or bind bucket remembers the order), again with the changed blockers restarted.
FixRun run_fix(const SocketSnapshotter& snapshotter, const Result& r, const Fix& fix) {
  FixRun out = run_fix_once(snapshotter, r, fix, false);
  if (!out.copy_problem.empty() && out.changed_any) {
    FixRun again = run_fix_once(snapshotter, r, fix, true);
    if (again.copy_problem.empty()) {
      again.reordered = true;
      return again;
    }
  }
  return out;
}

std::string diagnosis_fix_json(const Fix& f) { return fix_to_json(f).dump(); }

std::string fix_label(const Fix& f) {
  std::string out(to_string(f.kind));
  if (f.kind == Fix::Kind::kSetOption) {
    out += " " + f.option + " on " + std::string(to_string(f.on));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Judging and telling.

bool agrees(const Prediction& p, const Actual& a) {
  switch (p.outcome) {
    case Outcome::kSucceeds:
      return a.ok;
    case Outcome::kFails:
      return !a.ok && p.failing_syscall == a.failing && p.expected_result == -a.err;
    case Outcome::kUndetermined:
      return false;  // every field is known with iterators
  }
  return false;
}

// The snapshot must show each made socket as it was made.
std::vector<std::string> check_snapshot(const Scenario& s, const Snapshot& snap) {
  std::vector<std::string> problems;
  for (std::size_t i = 0; i < s.existing.size(); ++i) {
    const Existing& e = s.existing[i];
    if (!e.fate.empty()) {
      continue;
    }
    const std::string who = "#" + std::to_string(i) + ": ";
    const SocketEntry* entry = nullptr;
    if (e.role == Role::kTimeWait) {
      entry = find_time_wait(snap, e);
    } else {
      const auto it = std::find_if(snap.table.sockets.begin(), snap.table.sockets.end(),
                                   [&](const SocketEntry& x) { return x.inode == e.inode; });
      entry = it == snap.table.sockets.end() ? nullptr : &*it;
    }
    if (entry == nullptr) {
      problems.push_back(who + "not in the snapshot");
      continue;
    }
    const auto expect = [&](bool ok, const std::string& what) {
      if (!ok) {
        problems.push_back(who + what);
      }
    };
    expect(entry->proto == e.proto, "protocol differs");
    expect(entry->local.port == e.port, "port differs");
    expect(entry->reuseaddr == e.reuseaddr, "SO_REUSEADDR differs");
    expect(entry->reuseport == e.reuseport, "SO_REUSEPORT differs");
    expect(entry->v6only == (desc(e.addr).family == AF_INET6 && effective_v6only(e.addr)),
           "v6only differs");
    expect(entry->bound_dev_if == (e.device ? 1 : 0), "bound device differs");
    if (e.role != Role::kTimeWait) {
      expect(entry->uid == e.uid, "uid differs");
    }
    switch (e.role) {
      case Role::kBound:
        expect(entry->state == TcpState::kClose || entry->state == TcpState::kBoundInactive,
               "state is not bound-only");
        break;
      case Role::kListen:
        expect(entry->state == TcpState::kListen, "state is not LISTEN");
        break;
      case Role::kEstablished:
        expect(entry->state == TcpState::kEstablished, "state is not ESTABLISHED");
        break;
      case Role::kTimeWait:
        break;
      case Role::kUdpBound:
        expect(!entry->remote.has_value(), "UDP socket shown connected");
        break;
      case Role::kUdpConnected:
        expect(entry->remote.has_value(), "UDP socket shown unconnected");
        break;
    }
  }
  return problems;
}

std::string flags_text(bool reuseaddr, bool reuseport, std::uint32_t uid, bool device) {
  std::string out;
  out += reuseaddr ? " SO_REUSEADDR" : "";
  out += reuseport ? " SO_REUSEPORT" : "";
  out += device ? " SO_BINDTODEVICE=lo" : "";
  out += " uid=" + std::to_string(uid);
  return out;
}

std::string opt_text(const std::optional<bool>& v) { return v ? (*v ? "1" : "0") : "?"; }

std::string entry_text(const SocketEntry& e) {
  std::ostringstream o;
  o << to_string(e.proto) << ' ' << e.local.to_string();
  if (e.remote) {
    o << " -> " << e.remote->to_string();
  }
  o << ' ' << (e.state ? state_name(static_cast<int>(*e.state)) : "-")
    << " reuseaddr=" << opt_text(e.reuseaddr) << " reuseport=" << opt_text(e.reuseport)
    << " v6only=" << opt_text(e.v6only)
    << " dev=" << (e.bound_dev_if ? std::to_string(*e.bound_dev_if) : "?")
    << " uid=" << (e.uid ? std::to_string(*e.uid) : "-") << " inode=" << e.inode;
  return o.str();
}

std::string state_enum(TcpState s) {
  switch (s) {
    case TcpState::kEstablished:
      return "TcpState::kEstablished";
    case TcpState::kTimeWait:
      return "TcpState::kTimeWait";
    case TcpState::kClose:
      return "TcpState::kClose";
    case TcpState::kListen:
      return "TcpState::kListen";
    case TcpState::kBoundInactive:
      return "TcpState::kBoundInactive";
    default:
      return "static_cast<TcpState>(" + std::to_string(static_cast<int>(s)) + ")";
  }
}

std::string bool_text(bool b) { return b ? "true" : "false"; }

// The scenario as a test of tests/unit/diagnoser_test.cpp (its tcp(), udp(), bind_call(),
// table_of() helpers), from the snapshot's view of port P.
std::string unit_test_text(const Result& r) {
  const Scenario& s = r.scenario;
  std::ostringstream o;
  o << "  std::vector<SocketEntry> sockets;\n";
  for (const SocketEntry& e : r.snapshot->table.sockets) {
    if (e.local.port != s.port) {
      continue;
    }
    o << "  {\n    SocketEntry e = ";
    if (e.proto == Proto::kUdp) {
      o << "udp(\"" << e.local.to_string() << "\");\n";
    } else {
      o << "tcp(" << state_enum(e.state.value_or(TcpState::kClose)) << ", \"" << e.local.to_string()
        << "\");\n";
    }
    o << "    e.remote = "
      << (e.remote ? "ep(\"" + e.remote->to_string() + "\")" : std::string("std::nullopt"))
      << ";\n";
    o << "    e.reuseaddr = " << bool_text(e.reuseaddr.value_or(false))
      << "; e.reuseport = " << bool_text(e.reuseport.value_or(false))
      << "; e.v6only = " << bool_text(e.v6only.value_or(false))
      << "; e.bound_dev_if = " << e.bound_dev_if.value_or(0) << ";\n";
    if (e.uid) {
      o << "    e.uid = " << *e.uid << ";\n";
    }
    o << "    sockets.push_back(e);\n  }\n";
  }
  const Call& c = *r.call;
  o << "  Call c = bind_call(\"" << c.local.to_string()
    << "\", SocketOptions{.reuseaddr = " << bool_text(c.options.reuseaddr)
    << ", .reuseport = " << bool_text(c.options.reuseport)
    << ", .v6only = " << bool_text(c.options.v6only)
    << ", .bound_dev_if = " << c.options.bound_dev_if << "}, " << c.uid << ");\n";
  if (c.proto != Proto::kTcp) {
    o << "  c.proto = Proto::kUdp;\n";
  }
  o << "  const Prediction p = predict(c, " << bool_text(s.call.then_listen)
    << ", table_of(sockets));\n";
  if (r.actual.ok) {
    o << "  EXPECT_EQ(p.outcome, Outcome::kSucceeds);\n";
  } else {
    o << "  EXPECT_EQ(p.outcome, Outcome::kFails);\n"
      << "  EXPECT_EQ(p.failing_syscall, Syscall::"
      << (r.actual.failing == Syscall::kBind ? "kBind" : "kListen") << ");\n"
      << "  EXPECT_EQ(p.expected_result, -" << errno_name(r.actual.err) << ");\n";
  }
  return o.str();
}

std::string actual_text(const NewSocket& n, const Actual& a) {
  if (a.ok) {
    return n.then_listen ? "bind() OK, listen() OK" : "bind() OK";
  }
  if (a.failing == Syscall::kBind) {
    return "bind() -> " + errno_name(a.err);
  }
  return "bind() OK, listen() -> " + errno_name(a.err);
}

std::string prediction_text(const Prediction& p) {
  std::string out;
  switch (p.outcome) {
    case Outcome::kSucceeds:
      out = "succeeds";
      break;
    case Outcome::kFails:
      out = std::string("fails: ") +
            std::string(p.failing_syscall ? to_string(*p.failing_syscall) : "?") + "() -> " +
            errno_name(p.expected_result);
      break;
    case Outcome::kUndetermined:
      out = "UNDETERMINED";
      break;
  }
  if (p.diagnosis) {
    out += " (cause " + std::string(to_string(p.diagnosis->cause)) + ")";
    for (const Blocker& b : p.diagnosis->blockers) {
      out += "\n      blocker: " + entry_text(b.socket) + ": " + b.why +
             (b.definite ? "" : " [not definite]");
    }
    if (!p.diagnosis->hint.empty()) {
      out += "\n      hint: " + p.diagnosis->hint;
    }
    for (const Fix& f : p.diagnosis->fixes) {
      out += "\n      fix: " + fix_to_json(f).dump() + " (" + f.text + ")";
    }
  }
  if (!p.note.empty()) {
    out += "\n      note: " + p.note;
  }
  return out;
}

std::string scenario_text(const Result& r) {
  const Scenario& s = r.scenario;
  std::ostringstream o;
  o << "scenario " << s.index << " of seed " << s.seed << " (replay: PORTLENS_DIFF_SEED=" << s.seed
    << " PORTLENS_DIFF_ONLY=" << s.index << "), port P=" << s.port
    << ", existing #i connects to a [::] dual-stack listener on port " << s.helper_port << "+i\n";
  o << "  existing sockets, in creation order:\n";
  for (std::size_t i = 0; i < s.existing.size(); ++i) {
    const Existing& e = s.existing[i];
    o << "    #" << i << ' ' << to_string(e.proto) << ' ' << desc(e.addr).label << " port "
      << (e.port == s.port ? "P" : "P+1") << flags_text(e.reuseaddr, e.reuseport, e.uid, e.device)
      << ' ' << role_name(e.role);
    if (connects(e.role)) {
      o << " (to " << e.peer << ")";
    }
    if (!e.fate.empty()) {
      o << " -> dropped, " << e.fate;
    } else if (e.local) {
      o << " -> local " << e.local->to_string();
    }
    o << '\n';
  }
  if (r.snapshot) {
    o << "  snapshot (" << r.snapshot->table.sockets.size() << " sockets):\n";
    for (const SocketEntry& e : r.snapshot->table.sockets) {
      o << "    " << entry_text(e) << '\n';
    }
  }
  const NewSocket& n = s.call;
  o << "  call: " << to_string(n.proto) << " bind " << desc(n.addr).label << " port P"
    << flags_text(n.reuseaddr, n.reuseport, n.uid, n.device)
    << (n.then_listen ? ", then listen()" : "") << '\n';
  if (r.prediction) {
    o << "  portlens predicted: " << prediction_text(*r.prediction) << '\n';
    o << "  the kernel did:     " << actual_text(n, r.actual) << '\n';
  }
  for (const std::string& p : r.snapshot_problems) {
    o << "  snapshot problem: " << p << '\n';
  }
  if (!r.error.empty()) {
    o << "  run failed: " << r.error << '\n';
  }
  if (r.snapshot && r.call) {
    o << "  as a unit test (tests/unit/diagnoser_test.cpp helpers):\n" << unit_test_text(r);
  }
  return o.str();
}

std::string outcome_key(const NewSocket& n, const Actual& a) {
  return std::string(to_string(n.proto)) + " " + actual_text(n, a);
}

std::unique_ptr<SocketSnapshotter> try_snapshotter(std::string* why) {
  try {
    return std::make_unique<SocketSnapshotter>(SnapshotOptions{SnapshotMode::kBpfIterator});
  } catch (const Error& e) {
    *why = e.what();
    return nullptr;
  }
}

using DifferentialKernelTest = KernelTest;

TEST_F(DifferentialKernelTest, PredictionsAgreeWithTheKernelOnGeneratedScenarios) {
  std::string why;
  const auto snapshotter = try_snapshotter(&why);
  if (!snapshotter) {
    if (bpf_required()) {
      FAIL() << "PORTLENS_REQUIRE_BPF=1 but the snapshot iterators could not load: " << why;
    }
    GTEST_SKIP() << "BPF iterators unavailable (" << why << ")";
  }
  ASSERT_EQ(snapshotter->source(), SnapshotSource::kBpfIterator);

  const std::uint64_t seed = env_number("PORTLENS_DIFF_SEED").value_or(kDefaultSeed);
  const std::optional<std::uint64_t> only = env_number("PORTLENS_DIFF_ONLY");
  const std::uint64_t count = only ? 1 : env_number("PORTLENS_DIFF_COUNT").value_or(kDefaultCount);
  const std::uint64_t first = only.value_or(0);
  const unsigned jobs = static_cast<unsigned>(
      std::max<std::uint64_t>(1, env_number("PORTLENS_DIFF_JOBS").value_or(kDefaultJobs)));

  const std::uint64_t printed = env_number("PORTLENS_DIFF_PRINT").value_or(kPrintedDisagreements);

  const auto start = Clock::now();
  std::atomic<std::uint64_t> next{0};
  std::mutex mu;
  std::uint64_t run = 0;
  std::uint64_t agreed = 0;
  std::uint64_t undetermined = 0;
  std::vector<std::string> failures;  // scenario printouts
  std::uint64_t failure_count = 0;
  std::map<std::string, std::uint64_t> outcomes;
  std::map<std::string, std::uint64_t> made;  // existing sockets made, by kind
  std::uint64_t dropped = 0;
  // The fix check.
  std::uint64_t failing = 0;                           // scenarios whose real call failed
  std::uint64_t failing_fixed = 0;                     // of those, with at least one fix checked
  std::map<std::string, std::uint64_t> fixes_checked;  // by kind (and option, side)
  std::uint64_t fixes_skipped = 0;                     // sysctl, stop: not checked here
  std::uint64_t fixes_reordered = 0;  // checked with the changed blockers restarted
  std::uint64_t fix_failure_count = 0;
  std::vector<std::string> fix_failures;

  const auto pool_thread = [&] {
    for (;;) {
      const std::uint64_t i = next.fetch_add(1);
      if (i >= count) {
        return;
      }
      Result r = run_scenario(*snapshotter, generate(seed, first + i));
      bool ok = r.error.empty() && r.prediction.has_value();
      if (ok) {
        r.snapshot_problems = check_snapshot(r.scenario, *r.snapshot);
        ok = r.snapshot_problems.empty() && agrees(*r.prediction, r.actual);
      }
      // Each fix of an agreed failure, applied to a fresh copy, must let the real call through.
      std::vector<std::pair<std::string, bool>> fixes_run;  // label, passed
      std::vector<std::string> fix_printouts;
      std::uint64_t skipped = 0;
      std::uint64_t reordered = 0;
      if (ok && !r.actual.ok && r.prediction->diagnosis) {
        for (const Fix& fix : r.prediction->diagnosis->fixes) {
          const FixRun fix_run = run_fix(*snapshotter, r, fix);
          if (!fix_run.checked && fix_run.error.empty()) {
            ++skipped;
            continue;
          }
          const bool passed =
              fix_run.error.empty() && fix_run.copy_problem.empty() && fix_run.actual.ok;
          fixes_run.emplace_back(fix_label(fix), passed);
          reordered += fix_run.reordered ? 1 : 0;
          if (!passed) {
            std::string text = "fix " + diagnosis_fix_json(fix) + " (\"" + fix.text + "\")";
            if (!fix_run.error.empty()) {
              text += ": run failed: " + fix_run.error;
            } else if (!fix_run.copy_problem.empty()) {
              text += ": the fresh copy differs: " + fix_run.copy_problem;
            } else {
              text += ": the kernel did: " + actual_text(r.scenario.call, fix_run.actual);
            }
            fix_printouts.push_back(text + "\n" + scenario_text(r));
          }
        }
      }
      const std::lock_guard lock(mu);
      if (r.prediction && !r.actual.ok && ok) {
        ++failing;
        failing_fixed += fixes_run.empty() ? 0 : 1;
      }
      fixes_skipped += skipped;
      fixes_reordered += reordered;
      for (const auto& [label, passed] : fixes_run) {
        ++fixes_checked[label];
        fix_failure_count += passed ? 0 : 1;
      }
      for (std::string& f : fix_printouts) {
        if (fix_failures.size() < printed) {
          fix_failures.push_back(std::move(f));
        }
      }
      ++run;
      if (r.prediction) {
        ++outcomes[outcome_key(r.scenario.call, r.actual)];
        undetermined += r.prediction->outcome == Outcome::kUndetermined ? 1 : 0;
      }
      for (const Existing& e : r.scenario.existing) {
        if (e.fate.empty()) {
          ++made[std::string(to_string(e.proto)) + " " + role_name(e.role)];
        } else {
          ++dropped;
        }
      }
      if (ok) {
        ++agreed;
      } else {
        ++failure_count;
        if (failures.size() < printed) {
          failures.push_back(scenario_text(r));
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned j = 0; j < jobs; ++j) {
    pool.emplace_back(pool_thread);
  }
  for (std::thread& t : pool) {
    t.join();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  for (const std::string& f : failures) {
    ADD_FAILURE() << "prediction and kernel disagree:\n" << f;
  }
  for (const std::string& f : fix_failures) {
    ADD_FAILURE() << "a fix did not work when applied:\n" << f;
  }
  std::ostringstream summary;
  const double rate =
      run == 0 ? 0.0 : 100.0 * static_cast<double>(agreed) / static_cast<double>(run);
  summary << "differential: seed " << seed << ", " << run << " scenarios, " << agreed
          << " agreements (" << rate << " %), " << failure_count << " disagreements ("
          << undetermined << " undetermined predictions), in " << seconds << " s with " << jobs
          << " jobs\n";
  summary << "  kernel outcomes:";
  for (const auto& [key, n] : outcomes) {
    summary << "\n    " << key << ": " << n;
  }
  summary << "\n  existing sockets made:";
  for (const auto& [key, n] : made) {
    summary << "\n    " << key << ": " << n;
  }
  summary << "\n    dropped (the kernel refused them): " << dropped << '\n';
  std::uint64_t checked = 0;
  for (const auto& [key, n] : fixes_checked) {
    checked += n;
  }
  summary << "  fixes: " << failing << " failing scenarios, " << failing_fixed
          << " with fixes checked; " << checked << " fixes applied to fresh copies, "
          << checked - fix_failure_count << " worked ("
          << (checked == 0 ? 100.0
                           : 100.0 * static_cast<double>(checked - fix_failure_count) /
                                 static_cast<double>(checked))
          << " %), " << fixes_skipped << " not checked (sysctl, stop), " << fixes_reordered
          << " with the changed blockers restarted last";
  for (const auto& [key, n] : fixes_checked) {
    summary << "\n    " << key << ": " << n;
  }
  summary << '\n';
  std::fputs(summary.str().c_str(), stdout);
  RecordProperty("scenarios", static_cast<int>(run));
  RecordProperty("disagreements", static_cast<int>(failure_count));
  RecordProperty("fixes_checked", static_cast<int>(checked));
  RecordProperty("fix_failures", static_cast<int>(fix_failure_count));
  EXPECT_EQ(run, count);
  EXPECT_EQ(fix_failure_count, 0U)
      << (fix_failure_count > fix_failures.size()
              ? "(only the first " + std::to_string(fix_failures.size()) +
                    " fix failures are printed)"
              : std::string());
  if (!only && count == kDefaultCount) {
    EXPECT_GE(failing_fixed, kMinFailingWithFixes) << "too few failing scenarios had a fix checked";
  }
  EXPECT_EQ(failure_count, 0U) << (failure_count > failures.size()
                                       ? "(only the first " + std::to_string(failures.size()) +
                                             " are printed)"
                                       : std::string());
}

}  // namespace
}  // namespace portlens::testing
