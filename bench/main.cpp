// portlens_bench: the figures of issue 4's "Benchmarks", printed, never asserted.
//
//   portlens_bench [all|pipeline|churn|memory|scrape|cost|soak] [--smoke] [options]
//
// Exit status: 0 when every section ran (or was skipped for want of root), 1 when one could not
// run at all (the agent did not start, a namespace could not be made), 2 on a usage error.
#include <cstdlib>
#include <exception>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "bench/common.hpp"
#include "bench/sections.hpp"

namespace portlens::bench {
namespace {

constexpr const char* kUsage = R"(usage: portlens_bench [SECTION...] [OPTIONS]

sections (default: all):
  pipeline   events/s of decode_event + SocketTracker::apply + diagnosis, one thread
  churn      loopback connections/s without and with the agent; agent CPU; events lost
  memory     bytes per tracked socket; agent RSS with the TIME_WAIT population
  scrape     /metrics scrape time, snapshot and agent start-to-serving with that population
  cost       BPF and userspace time per connection and per bind: empty programs, bpftrace,
             the agent (issue 11)
  soak       agent RSS over minutes of churn, its peak, and after the TIME_WAITs expire
  all        every section (memory and scrape share one population)

options:
  --smoke              every section at a tiny size, to prove the benchmark runs (< 1 min)
  --agent PATH         the portlens binary to start (default: the one built with this bench)
  --events N           pipeline: records in the stream (1000000)
  --runs N             pipeline: runs, the median is reported (5)
  --failure-every N    pipeline: one failed call per N events (10000)
  --rounds N           churn: rounds of (without agent, with agent); cost: rounds of the 4
                       configurations (3)
  --seconds S          churn: the time bound of each run (5)
  --clients N          churn, population and cost: client threads (2)
  --time-waits N       memory/scrape: TIME_WAIT sockets to make (200000)
  --destinations N     memory/scrape: destinations they spread over (10000)
  --tracker-sockets N  memory: sockets in the tracker measurement (200000)
  --scrapes N          scrape: scrapes timed, the median is reported (10)
  --soak-seconds S     soak: how long the churn runs (300)

Kernel sections (churn, cost, the agent and snapshot parts of memory and scrape) need root;
without it they are skipped, unless PORTLENS_REQUIRE_BPF=1 makes that a failure.
)";

std::size_t number(const std::vector<std::string>& args, std::size_t& i) {
  if (i + 1 >= args.size()) {
    throw std::invalid_argument(args[i] + " needs a value");
  }
  ++i;
  return std::stoull(args[i]);
}

int run(const std::vector<std::string>& args) {
  Options options;
  options.agent_binary = PORTLENS_BINARY;
  std::set<std::string> sections;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    }
    if (a == "--smoke") {
      options.smoke = true;
    } else if (a == "--agent") {
      if (i + 1 >= args.size()) {
        throw std::invalid_argument("--agent needs a path");
      }
      options.agent_binary = args[++i];
    } else if (a == "--events") {
      options.events = number(args, i);
    } else if (a == "--runs") {
      options.runs = static_cast<int>(number(args, i));
    } else if (a == "--failure-every") {
      options.failure_every = number(args, i);
    } else if (a == "--rounds") {
      options.rounds = static_cast<int>(number(args, i));
    } else if (a == "--seconds") {
      if (i + 1 >= args.size()) {
        throw std::invalid_argument("--seconds needs a value");
      }
      options.churn_seconds = std::stod(args[++i]);
    } else if (a == "--clients") {
      options.clients = static_cast<int>(number(args, i));
    } else if (a == "--time-waits") {
      options.time_waits = number(args, i);
    } else if (a == "--destinations") {
      options.destinations = number(args, i);
    } else if (a == "--tracker-sockets") {
      options.tracker_sockets = number(args, i);
    } else if (a == "--soak-seconds") {
      if (i + 1 >= args.size()) {
        throw std::invalid_argument("--soak-seconds needs a value");
      }
      options.soak_seconds = std::stod(args[++i]);
      if (!(options.soak_seconds >= 1 && options.soak_seconds <= 3600)) {
        throw std::invalid_argument("--soak-seconds must be between 1 and 3600");
      }
    } else if (a == "--scrapes") {
      options.scrapes = static_cast<int>(number(args, i));
    } else if (a == "pipeline" || a == "churn" || a == "memory" || a == "scrape" || a == "cost" ||
               a == "soak" || a == "all") {
      sections.insert(a);
    } else {
      throw std::invalid_argument("unknown argument " + a);
    }
  }
  if (sections.empty() || sections.contains("all")) {
    sections = {"pipeline", "churn", "memory", "scrape", "cost", "soak"};
  }
  if (options.runs < 1 || options.rounds < 1 || options.clients < 1 || options.scrapes < 1 ||
      options.events < 1000 || options.destinations < 1 || options.time_waits < 1) {
    throw std::invalid_argument("counts must be positive (--events at least 1000)");
  }

  std::cout << "# portlens_bench"
            << (options.smoke ? " --smoke (tiny sizes: figures mean nothing)" : "")
            << "\n\nmachine: " << machine_context() << "\nagent binary: " << options.agent_binary
            << "\n";
  Report report;
  std::vector<std::string> failed;
  const bool kernel = is_root();
  const auto guarded = [&](const std::string& name, const auto& body) {
    try {
      body();
    } catch (const std::exception& e) {
      std::cout << "\n!! section " << name << " could not run: " << e.what() << "\n";
      report.skip(name, "could not run (see above)");
      failed.push_back(name);
    }
  };
  const auto kernel_section = [&](const std::string& name, const auto& body) {
    if (!kernel) {
      std::cout << "\n## " << name << ": skipped, needs root (network namespaces, BPF)\n";
      report.skip(name, "needs root");
      if (kernel_required()) {
        failed.push_back(name + " (PORTLENS_REQUIRE_BPF=1 but not root)");
      }
      return;
    }
    guarded(name, body);
  };

  if (sections.contains("pipeline")) {
    guarded("pipeline", [&] { pipeline_section(options, report); });
  }
  if (sections.contains("memory")) {
    guarded("tracker memory", [&] { tracker_memory_section(options, report); });
  }
  if (sections.contains("churn")) {
    kernel_section("churn", [&] { churn_section(options, report); });
  }
  if (sections.contains("memory") || sections.contains("scrape")) {
    kernel_section("agent RSS, scrape and bootstrap", [&] { population_section(options, report); });
  }
  if (sections.contains("cost")) {
    kernel_section("cost", [&] { cost_section(options, report); });
  }
  if (sections.contains("soak")) {
    kernel_section("soak", [&] { soak_section(options, report); });
  }

  std::cout << "\n## summary\n\nmachine: " << machine_context() << "\n\n" << report.markdown();
  if (!failed.empty()) {
    std::cout << "\nsections that could not run:";
    for (const auto& f : failed) {
      std::cout << " " << f << ";";
    }
    std::cout << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace portlens::bench

int main(int argc, char** argv) {
  try {
    return portlens::bench::run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::invalid_argument& e) {
    std::cerr << "portlens_bench: " << e.what() << "\n\n" << portlens::bench::kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "portlens_bench: " << e.what() << "\n";
    return 1;
  }
}
