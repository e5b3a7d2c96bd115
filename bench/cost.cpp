// Section 5 (issue 11): what tracing these events costs, per connection and per bind. The same
// tracepoints (the portlens programs' own, read from the portlens skeleton) under four
// configurations: no tracer; an empty program on each (the floor); a counter, bpftrace's
// `@[probe] = count()` (or the bench's own counting program when bpftrace cannot run); and the
// real `portlens agent`. Per operation: the BPF programs' run time from the kernel's own
// statistics (BPF_ENABLE_STATS, run_time_ns of each program the tracer holds) and the tracer
// process's utime+stime, each less its idle background measured just before. Also the saturating
// churn: connections/s with each tracer against none, 2 client threads on both cores.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/kernel/preflight.hpp"
#include "bench/sections.hpp"
#include "cost.skel.h"
#include "portlens.skel.h"

namespace portlens::bench {
namespace {

constexpr std::uint64_t kConnections = 40'000;
constexpr std::uint64_t kBinds = 150'000;
constexpr std::uint64_t kSmokeConnections = 300;
constexpr std::uint64_t kSmokeBinds = 500;
constexpr double kMaxSeconds = 60;  // the time bound of each workload
constexpr double kSmokeMaxSeconds = 3;
// The idle baseline before each workload lasts as long as the same workload's window under the
// same tracer in the previous round; these in the first round.
constexpr double kFirstIdleSeconds = 2;
constexpr double kSmokeFirstIdleSeconds = 0.3;
constexpr std::chrono::seconds kBpftraceStart{30};  // bpftrace compiles its programs first

std::string errno_text(int err) { return std::strerror(err); }  // NOLINT(concurrency-mt-unsafe)

// A file descriptor, closed on destruction.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&&) = delete;
  Fd& operator=(Fd&&) = delete;
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

struct Tracepoint {
  std::string category;
  std::string name;
};

// The category of the tracepoint called name, from tracefs (events/<category>/<name>).
std::string tracepoint_category(const std::string& name) {
  const std::filesystem::path events = std::filesystem::path(ensure_tracefs()) / "events";
  std::error_code ec;
  for (const auto& category : std::filesystem::directory_iterator(events, ec)) {
    if (std::filesystem::exists(category.path() / name, ec)) {
      return category.path().filename().string();
    }
  }
  throw BenchError("no tracepoint " + name + " under " + events.string());
}

// The tracepoints the portlens programs attach to, from their section names in the skeleton
// ("tracepoint/<category>/<name>", or "tp_btf/<name>": the same tracepoint, its raw BTF-typed
// form): the one list every configuration uses. The floor and the counting programs attach to
// each as a classic tracepoint, as bpftrace (0.17 has no raw tracepoints) does; the portlens
// programs' cheaper tp_btf dispatch is then outside every run_time_ns alike.
std::vector<Tracepoint> portlens_tracepoints() {
  const std::unique_ptr<portlens_bpf, decltype(&portlens_bpf__destroy)> skel(
      portlens_bpf__open(), &portlens_bpf__destroy);
  if (skel == nullptr) {
    throw BenchError("cannot open the portlens BPF object: " + errno_text(errno));
  }
  const std::string prefix = "tracepoint/";
  const std::string btf_prefix = "tp_btf/";
  std::vector<Tracepoint> out;
  for (bpf_program* prog = bpf_object__next_program(skel->obj, nullptr); prog != nullptr;
       prog = bpf_object__next_program(skel->obj, prog)) {
    const std::string section = bpf_program__section_name(prog);
    if (section.starts_with(btf_prefix)) {
      const std::string name = section.substr(btf_prefix.size());
      out.push_back(Tracepoint{tracepoint_category(name), name});
      continue;
    }
    const auto slash = section.find('/', prefix.size());
    if (!section.starts_with(prefix) || slash == std::string::npos) {
      throw BenchError("the portlens program " + std::string(bpf_program__name(prog)) +
                       " is not on a tracepoint (" + section + "): the cost section knows only " +
                       "tracepoints");
    }
    out.push_back(Tracepoint{section.substr(prefix.size(), slash - prefix.size()),
                             section.substr(slash + 1)});
  }
  return out;
}

// One BPF program's counters (kernel.bpf_stats, on while the section holds its stats fd).
struct Program {
  std::string name;
  double run_time_ns = 0;
  double run_cnt = 0;
};
using Programs = std::map<std::uint32_t, Program>;  // by program id

// The programs among ids that are loaded now, found by walking every loaded program's id.
Programs read_programs(const std::set<std::uint32_t>& ids) {
  Programs out;
  __u32 id = 0;
  while (out.size() < ids.size() && bpf_prog_get_next_id(id, &id) == 0) {
    if (!ids.contains(id)) {
      continue;
    }
    const Fd fd(bpf_prog_get_fd_by_id(id));
    bpf_prog_info info{};
    __u32 len = sizeof info;
    if (fd.get() < 0 || bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) {
      continue;  // unloaded meanwhile
    }
    out[id] = Program{std::string(info.name, strnlen(info.name, sizeof info.name)),
                      static_cast<double>(info.run_time_ns), static_cast<double>(info.run_cnt)};
  }
  return out;
}

// The ids of the BPF programs a process holds: the prog_id: lines of its fds' fdinfo (program
// and link fds).
std::set<std::uint32_t> program_ids_of(pid_t pid) {
  std::set<std::uint32_t> ids;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fdinfo", ec)) {
    std::ifstream f(entry.path());
    for (std::string line; std::getline(f, line);) {
      if (line.starts_with("prog_id:")) {
        ids.insert(static_cast<std::uint32_t>(std::stoul(line.substr(8))));
      }
    }
  }
  return ids;
}

// utime + stime of a whole process, in seconds (/proc/PID/stat, clock ticks).
double cpu_seconds_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(f, text);
  const auto close_paren = text.rfind(')');  // the comm may hold spaces
  if (close_paren == std::string::npos) {
    return 0;
  }
  std::istringstream in(text.substr(close_paren + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {  // state is field 3, utime 14, stime 15
    if (i >= 14) {
      ticks += std::stod(field);
    }
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Waits, bounded, until a process's CPU time stops growing: one clock tick at most over 300 ms.
void wait_quiet(pid_t pid) {
  const auto tick = 1.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  double last = cpu_seconds_of(pid);
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const double now = cpu_seconds_of(pid);
    if (now - last <= tick) {
      return;
    }
    last = now;
  }
}

// What holds the programs under measurement while a configuration runs.
class Tracer {
 public:
  Tracer() = default;
  virtual ~Tracer() = default;
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;
  Tracer(Tracer&&) = delete;
  Tracer& operator=(Tracer&&) = delete;

  [[nodiscard]] virtual std::set<std::uint32_t> program_ids() const = 0;
  // Its own process, whose CPU is the userspace cost; none when the bench loaded the programs.
  [[nodiscard]] virtual std::optional<pid_t> process() const = 0;
  // Returns once the events of the workload that just ended are handled.
  virtual void settle() const {}
  // A note for the round's line (the agent's events lost).
  [[nodiscard]] virtual std::string note() const { return ""; }
};

// tracers.bpf.c's do_nothing (the floor) or count_event, attached to every tracepoint.
class OwnPrograms final : public Tracer {
 public:
  OwnPrograms(const std::vector<Tracepoint>& tracepoints, bool counting)
      : skel_(cost_bpf__open(), &cost_bpf__destroy) {
    if (skel_ == nullptr) {
      throw BenchError("cannot open the bench's BPF object: " + errno_text(errno));
    }
    bpf_program* used = counting ? skel_->progs.count_event : skel_->progs.do_nothing;
    bpf_program__set_autoload(counting ? skel_->progs.do_nothing : skel_->progs.count_event, false);
    if (tracepoints.size() > bpf_map__max_entries(skel_->maps.counts)) {
      throw BenchError("more tracepoints than tracers.bpf.c counts");
    }
    if (const int rc = cost_bpf__load(skel_.get()); rc != 0) {
      throw BenchError("cannot load the bench's BPF programs: " + errno_text(-rc));
    }
    for (std::size_t i = 0; i < tracepoints.size(); ++i) {
      bpf_tracepoint_opts opts{};
      opts.sz = sizeof opts;
      opts.bpf_cookie = i;  // count_event's index
      bpf_link* link = bpf_program__attach_tracepoint_opts(used, tracepoints[i].category.c_str(),
                                                           tracepoints[i].name.c_str(), &opts);
      if (link == nullptr) {
        throw BenchError("cannot attach to " + tracepoints[i].category + "/" + tracepoints[i].name +
                         ": " + errno_text(errno));
      }
      links_.emplace_back(link, &bpf_link__destroy);
    }
    bpf_prog_info info{};
    __u32 len = sizeof info;
    if (bpf_obj_get_info_by_fd(bpf_program__fd(used), &info, &len) != 0) {
      throw BenchError("cannot read the bench's BPF program's id: " + errno_text(errno));
    }
    id_ = info.id;
  }

  [[nodiscard]] std::set<std::uint32_t> program_ids() const override { return {id_}; }
  [[nodiscard]] std::optional<pid_t> process() const override { return std::nullopt; }

 private:
  std::unique_ptr<cost_bpf, decltype(&cost_bpf__destroy)> skel_;
  std::vector<std::unique_ptr<bpf_link, decltype(&bpf_link__destroy)>> links_;
  std::uint32_t id_ = 0;
};

// A child process with its stdout and stderr read by a thread for its whole life; SIGINT on
// destruction (SIGKILL after 5 s).
class Child {
 public:
  explicit Child(std::vector<std::string> argv) {
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (auto& a : argv) {
      args.push_back(a.data());
    }
    args.push_back(nullptr);
    std::array<int, 2> out{};
    if (pipe2(out.data(), O_CLOEXEC) != 0) {
      throw BenchError("pipe: " + errno_text(errno));
    }
    pid_ = fork();
    if (pid_ < 0) {
      close(out[0]);
      close(out[1]);
      throw BenchError("fork: " + errno_text(errno));
    }
    if (pid_ == 0) {
      const int devnull = open("/dev/null", O_RDONLY);
      dup2(devnull, STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      dup2(out[1], STDERR_FILENO);
      execvp(args[0], args.data());
      _exit(127);
    }
    close(out[1]);
    out_fd_ = out[0];
    reader_ = std::thread([this] {
      std::array<char, 4096> buf{};
      for (;;) {
        const ssize_t n = read(out_fd_, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) {
          continue;
        }
        if (n <= 0) {
          return;
        }
        const std::lock_guard lock(mu_);
        output_.append(buf.data(), static_cast<std::size_t>(n));
      }
    });
  }
  ~Child() {
    if (!exit_status_) {
      kill(pid_, SIGINT);
      const auto deadline = Clock::now() + std::chrono::seconds(5);
      while (!exited() && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (!exit_status_) {
        kill(pid_, SIGKILL);
        int status = 0;
        waitpid(pid_, &status, 0);
      }
    }
    reader_.join();
    close(out_fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child(Child&&) = delete;
  Child& operator=(Child&&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string output() const {
    const std::lock_guard lock(mu_);
    return output_;
  }
  // Whether it has exited (and is reaped); its wait status is then exit_status().
  bool exited() {
    int status = 0;
    if (!exit_status_ && waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_status_ = status;
    }
    return exit_status_.has_value();
  }
  [[nodiscard]] int exit_status() const { return exit_status_.value_or(-1); }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  int out_fd_ = -1;
  mutable std::mutex mu_;
  std::string output_;
  std::thread reader_;
};

// `bpftrace -e '<the tracepoints> { @[probe] = count(); }'`. Its BEGIN prints "ready", which
// bpftrace runs once every probe is attached.
std::vector<std::string> bpftrace_argv(const std::vector<Tracepoint>& tracepoints) {
  std::string probes;
  for (const Tracepoint& t : tracepoints) {
    probes += (probes.empty() ? "tracepoint:" : ",tracepoint:") + t.category + ":" + t.name;
  }
  return {"bpftrace", "-B", "line", "-e",
          R"(BEGIN { printf("ready\n"); } )" + probes + " { @[probe] = count(); }"};
}

// Output for a one-line message: its lines joined by "; ".
std::string trimmed(const std::string& text) {
  std::string out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) {
      out += (out.empty() ? "" : "; ") + line;
    }
  }
  return out;
}

class Bpftrace final : public Tracer {
 public:
  explicit Bpftrace(const std::vector<Tracepoint>& tracepoints)
      : child_(bpftrace_argv(tracepoints)) {
    const auto deadline = Clock::now() + kBpftraceStart;
    while (child_.output().find("ready\n") == std::string::npos) {
      if (child_.exited()) {
        const int status = child_.exit_status();
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        throw BenchError("bpftrace exited with status " + std::to_string(code) +
                         (code == 127 ? " (not installed?)" : ": " + trimmed(child_.output())));
      }
      if (Clock::now() >= deadline) {
        throw BenchError("bpftrace did not attach within " +
                         std::to_string(kBpftraceStart.count()) +
                         " s: " + trimmed(child_.output()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  [[nodiscard]] std::set<std::uint32_t> program_ids() const override {
    return program_ids_of(child_.pid());
  }
  [[nodiscard]] std::optional<pid_t> process() const override { return child_.pid(); }
  void settle() const override { wait_quiet(child_.pid()); }  // done starting up, mostly

 private:
  Child child_;
};

// The real agent, on its own port and API socket (AgentProcess).
class Agent final : public Tracer {
 public:
  explicit Agent(const std::string& binary) : agent_(binary) {
    agent_.wait_serving();
    agent_.wait_idle(std::chrono::milliseconds(200), std::chrono::seconds(10));
  }
  ~Agent() override { agent_.stop(); }
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;
  Agent(Agent&&) = delete;
  Agent& operator=(Agent&&) = delete;

  [[nodiscard]] std::set<std::uint32_t> program_ids() const override {
    return program_ids_of(agent_.pid());
  }
  [[nodiscard]] std::optional<pid_t> process() const override { return agent_.pid(); }
  void settle() const override { agent_.wait_idle(); }  // it has drained the ring buffer
  [[nodiscard]] std::string note() const override {
    const std::string metrics = agent_.scrape();
    return "; agent events since its start " +
           with_commas(std::uint64_t(metric_sum(metrics, "portlens_events_total").value_or(0))) +
           ", lost " +
           with_commas(
               std::uint64_t(metric_sum(metrics, "portlens_events_lost_total").value_or(0)));
  }

 private:
  AgentProcess agent_;
};

enum Config : std::uint8_t { kNone, kEmpty, kCounting, kAgent, kConfigs };
enum Workload : std::uint8_t { kConnect, kBind, kWorkloads };

constexpr std::array<const char*, kWorkloads> kOp = {"connection", "bind"};

// One workload under one configuration: per operation, less the idle background.
struct Measured {
  std::uint64_t ops = 0;
  std::uint64_t failures = 0;
  std::string first_error;
  double seconds = 0;
  double bpf_ns = 0;                        // BPF run time per operation
  double user_ns = 0;                       // the tracer process's CPU per operation
  double runs = 0;                          // BPF program runs per operation
  std::map<std::string, Program> programs;  // by name: run time and runs per operation
  [[nodiscard]] double rate() const { return seconds > 0 ? ops / seconds : 0; }
};

struct Sample {
  Clock::time_point at;
  Programs programs;
  double cpu_seconds = 0;
};

Sample sample(const Tracer& tracer) {
  Sample s;
  s.programs = read_programs(tracer.program_ids());
  if (const auto pid = tracer.process()) {
    s.cpu_seconds = cpu_seconds_of(*pid);
  }
  s.at = Clock::now();
  return s;
}

// M socket() + bind(127.0.0.1:0) + close(), one thread.
Measured run_binds(const Netns& ns, std::uint64_t count, double max_seconds) {
  return ns.run([&] {
    Measured m;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::duration<double>(max_seconds);
    for (std::uint64_t i = 0; i < count && (i % 1024 != 0 || Clock::now() < deadline); ++i) {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0) {
        ++m.ops;
      } else if (++m.failures == 1) {
        m.first_error = std::string(fd < 0 ? "socket(): " : "bind(): ") + errno_text(errno);
      }
      if (fd >= 0) {
        close(fd);
      }
    }
    m.seconds = seconds_since(start);
    return m;
  });
}

// Nanoseconds, rounded, with commas.
std::string nanos(double v) {
  return (v < 0 ? "-" : "") + with_commas(static_cast<std::uint64_t>(std::llround(std::abs(v))));
}

class CostSection {
 public:
  explicit CostSection(const Options& options)
      : options_(options),
        tracepoints_(portlens_tracepoints()),
        stats_(bpf_enable_stats(BPF_STATS_RUN_TIME)),
        connections_(options.smoke ? kSmokeConnections : kConnections),
        binds_(options.smoke ? kSmokeBinds : kBinds),
        max_seconds_(options.smoke ? kSmokeMaxSeconds : kMaxSeconds),
        idle_s_{} {
    for (auto& per_workload : idle_s_) {
      per_workload.fill(options.smoke ? kSmokeFirstIdleSeconds : kFirstIdleSeconds);
    }
    if (stats_.get() < 0) {
      throw BenchError("BPF_ENABLE_STATS: " + errno_text(errno));
    }
    ensure_tracefs();  // libbpf and bpftrace find tracepoints there
  }

  void run(Report& report) {
    const int rounds = options_.smoke ? 1 : options_.rounds;
    std::cout << "\n## 5. cost: BPF and userspace time per operation, by tracer\n"
              << tracepoints_.size() << " tracepoints (the portlens programs'):";
    for (const Tracepoint& t : tracepoints_) {
      std::cout << " " << t.category << ":" << t.name;
    }
    std::cout << "\nworkloads, each in a fresh netns: " << with_commas(connections_)
              << " loopback connections (" << options_.clients
              << " client threads, client closes first) and " << with_commas(binds_)
              << " socket()+bind(127.0.0.1:0)+close() (1 thread), each bounded by "
              << fixed(max_seconds_, 0) << " s; before each, an idle baseline as long as its "
              << "window in the previous round (" << fixed(idle_s_[0][0], 1) << " s in the first); "
              << rounds << " rounds, order rotated\n";
    for (int r = 0; r < rounds; ++r) {
      for (int k = 0; k < kConfigs; ++k) {
        run_config(r, static_cast<Config>((k + r) % kConfigs));
      }
    }
    print(report);
  }

 private:
  std::unique_ptr<Tracer> make_tracer(Config config) {
    switch (config) {
      case kEmpty:
        return std::make_unique<OwnPrograms>(tracepoints_, false);
      case kCounting:
        if (!bpftrace_failure_) {
          try {
            return std::make_unique<Bpftrace>(tracepoints_);
          } catch (const BenchError& e) {
            bpftrace_failure_ = e.what();
            std::cout << "  bpftrace cannot run (" << *bpftrace_failure_
                      << "); counting with the bench's own programs instead\n";
          }
        }
        return std::make_unique<OwnPrograms>(tracepoints_, true);
      case kAgent:
        return std::make_unique<Agent>(options_.agent_binary);
      default:
        return nullptr;
    }
  }

  [[nodiscard]] std::string name(Config config) const {
    switch (config) {
      case kNone:
        return "no tracer";
      case kEmpty:
        return "empty programs (the floor)";
      case kCounting:
        return bpftrace_failure_ ? "counting programs (bpftrace failed)"
                                 : "bpftrace counting the events";
      default:
        return "portlens agent";
    }
  }

  void run_config(int round, Config config) {
    const std::unique_ptr<Tracer> tracer = make_tracer(config);
    for (int w = 0; w < kWorkloads; ++w) {
      const Measured m = measure(tracer.get(), config, static_cast<Workload>(w));
      std::cout << "  round " << round + 1 << ", " << name(config) << ": " << with_commas(m.ops)
                << " " << kOp[w] << "s in " << fixed(m.seconds, 3)
                << " s = " << with_commas(std::uint64_t(m.rate())) << "/s";
      if (tracer != nullptr) {
        std::cout << "; per " << kOp[w] << ": BPF " << nanos(m.bpf_ns) << " ns in "
                  << fixed(m.runs, 1) << " runs, userspace " << nanos(m.user_ns) << " ns";
      }
      if (m.failures > 0) {
        std::cout << "; " << m.failures << " failed (first: " << m.first_error << ")";
      }
      std::cout << (tracer != nullptr ? tracer->note() : "") << "; load " << load_average() << "\n";
      results_[config][w].push_back(m);
    }
  }

  Measured measure(const Tracer* tracer, Config config, Workload workload) {
    const Netns ns;
    if (workload == kConnect) {
      prepare_churn_netns(ns, 1);
    }
    Sample before_idle;
    Sample before;
    if (tracer != nullptr) {
      tracer->settle();
      before_idle = sample(*tracer);
      std::this_thread::sleep_for(std::chrono::duration<double>(idle_s_[config][workload]));
      before = sample(*tracer);
    }
    Measured m;
    if (workload == kConnect) {
      ChurnConfig churn_config;
      churn_config.listen_ports = {7001, 7002, 7003, 7004};
      for (const std::uint16_t p : churn_config.listen_ports) {
        churn_config.destinations.push_back(Destination{0x7f000001U, p});
      }
      churn_config.clients = options_.clients;
      churn_config.max_connections = connections_;
      churn_config.max_seconds = max_seconds_;
      const ChurnResult churn = run_churn(ns, churn_config);
      m.ops = churn.connections;
      m.failures = churn.failures;
      m.first_error = churn.first_error;
      m.seconds = churn.seconds;
    } else {
      m = run_binds(ns, binds_, max_seconds_);
    }
    if (tracer == nullptr || m.ops == 0) {
      return m;
    }
    tracer->settle();
    const Sample after = sample(*tracer);
    // The background: what the idle window cost, scaled to the workload's window (about 1).
    const double window = std::chrono::duration<double>(after.at - before.at).count();
    const double scale = window / std::chrono::duration<double>(before.at - before_idle.at).count();
    idle_s_[config][workload] = window;
    const auto ops = static_cast<double>(m.ops);
    for (const auto& entry : after.programs) {
      const Program& p = entry.second;
      const Program none{p.name};
      const auto at = [&](const Sample& s) -> const Program& {
        const auto it = s.programs.find(entry.first);
        return it == s.programs.end() ? none : it->second;
      };
      const Program& b = at(before);
      const Program& i = at(before_idle);
      Program& per_op = m.programs[p.name];
      per_op.name = p.name;
      per_op.run_time_ns +=
          (p.run_time_ns - b.run_time_ns - (b.run_time_ns - i.run_time_ns) * scale) / ops;
      per_op.run_cnt += (p.run_cnt - b.run_cnt - (b.run_cnt - i.run_cnt) * scale) / ops;
      m.bpf_ns += per_op.run_time_ns;
    }
    for (const auto& [n, p] : m.programs) {
      m.runs += p.run_cnt;
    }
    m.user_ns = (after.cpu_seconds - before.cpu_seconds -
                 (before.cpu_seconds - before_idle.cpu_seconds) * scale) *
                1e9 / ops;
    return m;
  }

  [[nodiscard]] double median_of(Config c, Workload w, double Measured::*field) const {
    std::vector<double> values;
    for (const Measured& m : results_[c][w]) {
      values.push_back(m.*field);
    }
    return median(values);
  }

  [[nodiscard]] double total(Config c, Workload w) const { return bpf(c, w) + user(c, w); }

  [[nodiscard]] double median_rate(Config c, Workload w) const {
    std::vector<double> values;
    for (const Measured& m : results_[c][w]) {
      values.push_back(m.rate());
    }
    return median(values);
  }

  // Connections/s with config against none, each round's own ratio, the median.
  [[nodiscard]] double saturation(Config c) const {
    std::vector<double> ratios;
    for (std::size_t r = 0; r < results_[c][kConnect].size(); ++r) {
      ratios.push_back(results_[c][kConnect][r].rate() / results_[kNone][kConnect][r].rate());
    }
    return median(ratios);
  }

  void print(Report& report) const {
    const std::array<Config, 3> tracers = {kEmpty, kCounting, kAgent};
    const auto columns = [&](const std::string& label, const std::vector<Config>& configs,
                             const auto& value) {
      std::cout << "| " << label << " |";
      for (const Config c : configs) {
        std::cout << " " << value(c) << " |";
      }
      std::cout << "\n";
    };
    const std::vector<Config> three(tracers.begin(), tracers.end());
    std::cout << "\nper operation, medians of the rounds (total = BPF + userspace):\n\n";
    columns("per operation", three, [&](Config c) { return name(c); });
    std::cout << "|---|---|---|---|\n";
    columns("connection: BPF ns", three, [&](Config c) { return nanos(bpf(c, kConnect)); });
    columns("connection: userspace ns", three, [&](Config c) { return nanos(user(c, kConnect)); });
    columns("connection: total", three, [&](Config c) { return nanos(total(c, kConnect)); });
    columns("bind: total", three, [&](Config c) { return nanos(total(c, kBind)); });

    const double tick_ns = 1e9 / static_cast<double>(sysconf(_SC_CLK_TCK));
    std::cout << "\nuserspace CPU comes in clock ticks of " << nanos(tick_ns / 1e6)
              << " ms: one tick is " << nanos(tick_ns / static_cast<double>(connections_))
              << " ns per connection, " << nanos(tick_ns / static_cast<double>(binds_))
              << " ns per bind (a round's figure, less its idle baseline, is good to about one "
              << "tick either way)\n";
    std::cout << "\n| ratio of the totals | connection | bind |\n|---|---|---|\n";
    const auto ratio_row = [&](Config a, Config b) {
      std::cout << "| " << name(a) << " / " << name(b) << " | " << times(a, b, kConnect) << " | "
                << times(a, b, kBind) << " |\n";
    };
    ratio_row(kCounting, kEmpty);
    ratio_row(kAgent, kEmpty);
    ratio_row(kAgent, kCounting);

    const std::vector<Config> all = {kNone, kEmpty, kCounting, kAgent};
    std::cout << "\ndetails (medians):\n\n";
    columns("", all, [&](Config c) { return name(c); });
    std::cout << "|---|---|---|---|---|\n";
    for (const Workload w : {kConnect, kBind}) {
      const std::string op = kOp[w];
      columns(op + "s/s", all,
              [&](Config c) { return with_commas(std::uint64_t(median_rate(c, w))); });
      columns("BPF program runs per " + op, all, [&](Config c) {
        return c == kNone ? std::string("-") : fixed(median_of(c, w, &Measured::runs), 1);
      });
    }
    columns("bind: BPF ns", all,
            [&](Config c) { return c == kNone ? std::string("-") : nanos(bpf(c, kBind)); });
    columns("bind: userspace ns", all,
            [&](Config c) { return c == kNone ? std::string("-") : nanos(user(c, kBind)); });
    columns("connections/s against no tracer (median of per-round ratios)", all,
            [&](Config c) { return fixed(saturation(c), 3); });

    std::cout << "\nthe agent's programs (medians, per operation):\n\n"
              << "| program | ns per connection | runs per connection | ns per bind | runs per "
                 "bind |\n|---|---|---|---|---|\n";
    std::set<std::string> programs;
    for (const auto& measured : results_[kAgent]) {
      for (const Measured& m : measured) {
        for (const auto& [program, unused] : m.programs) {
          programs.insert(program);
        }
      }
    }
    for (const std::string& program : programs) {
      std::cout << "| " << program << " |";
      for (const Workload w : {kConnect, kBind}) {
        std::vector<double> run_time;
        std::vector<double> runs;
        for (const Measured& m : results_[kAgent][w]) {
          const auto it = m.programs.find(program);
          run_time.push_back(it == m.programs.end() ? 0 : it->second.run_time_ns);
          runs.push_back(it == m.programs.end() ? 0 : it->second.run_cnt);
        }
        std::cout << " " << nanos(median(run_time)) << " | " << fixed(median(runs), 2) << " |";
      }
      std::cout << "\n";
    }

    const double saturated = saturation(kAgent);
    std::cout << "\nsaturating churn (" << options_.clients
              << " client threads): " << with_commas(std::uint64_t(median_rate(kNone, kConnect)))
              << " connections/s "
              << "without a tracer, " << with_commas(std::uint64_t(median_rate(kAgent, kConnect)))
              << " with the agent: ratio " << fixed(saturated, 3) << " ("
              << fixed((1 - saturated) * 100, 1) << "% slower; median of per-round ratios)\n";
    if (bpftrace_failure_) {
      std::cout << "bpftrace could not run (" << *bpftrace_failure_
                << "): the counting column is the bench's own counting program\n";
    }

    const auto triple = [&](Workload w) {
      return nanos(total(kEmpty, w)) + " / " + nanos(total(kCounting, w)) + " / " +
             nanos(total(kAgent, w)) + " ns";
    };
    const std::string counter = bpftrace_failure_ ? "counting programs" : "bpftrace";
    report.add(Row{"cost per connection, BPF + userspace (floor / " + counter + " / agent)",
                   triple(kConnect), "", Met::kNoAim});
    report.add(Row{"cost per bind, BPF + userspace (floor / " + counter + " / agent)",
                   triple(kBind), "", Met::kNoAim});
    report.add(
        Row{"agent cost against the floor; against " + counter + " (per connection; per bind)",
            times(kAgent, kEmpty, kConnect) + ", " + times(kAgent, kCounting, kConnect) + "; " +
                times(kAgent, kEmpty, kBind) + ", " + times(kAgent, kCounting, kBind),
            "", Met::kNoAim});
    report.add(Row{"saturating churn with agent / without (" + std::to_string(options_.clients) +
                       " clients, median of per-round ratios)",
                   fixed(saturated, 3) + " (" + fixed((1 - saturated) * 100, 1) + "% slower)", "",
                   Met::kNoAim});
  }

  [[nodiscard]] double bpf(Config c, Workload w) const {
    return median_of(c, w, &Measured::bpf_ns);
  }
  [[nodiscard]] double user(Config c, Workload w) const {
    return median_of(c, w, &Measured::user_ns);
  }
  [[nodiscard]] std::string times(Config a, Config b, Workload w) const {
    return fixed(total(a, w) / total(b, w), 1) + "x";
  }

  const Options& options_;
  std::vector<Tracepoint> tracepoints_;
  Fd stats_;  // BPF_ENABLE_STATS: run_time_ns and run_cnt are counted while it is open
  std::uint64_t connections_;
  std::uint64_t binds_;
  double max_seconds_;
  std::array<std::array<double, kWorkloads>, kConfigs> idle_s_;
  std::optional<std::string> bpftrace_failure_;
  std::array<std::array<std::vector<Measured>, kWorkloads>, kConfigs> results_;
};

}  // namespace

void cost_section(const Options& options, Report& report) {
  CostSection section(options);
  section.run(report);
}

}  // namespace portlens::bench
