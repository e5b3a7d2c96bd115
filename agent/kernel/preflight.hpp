// Checks, before loading anything, that this host and this process can run the BPF programs,
// and names what is missing and how to fix it.
#pragma once

#include <string>
#include <vector>

#include "agent/kernel/kernel_only.hpp"
#include "agent/model/error.hpp"

namespace portlens {

struct PreflightProblem {
  std::string what;  // one line: what is missing and what to do
};

struct PreflightPaths {
  std::string btf = "/sys/kernel/btf/vmlinux";
  std::string tracefs = "/sys/kernel/tracing";
  std::string debugfs_tracing = "/sys/kernel/debug/tracing";
  std::string mounts = "/proc/self/mounts";  // tells "mounted but not readable" from "not mounted"
};

// What require_preflight throws: the first problem, with a count of the others, as what(); every
// problem in problems(), for -v.
class PreflightError : public Error {
 public:
  explicit PreflightError(std::vector<PreflightProblem> problems);
  [[nodiscard]] const std::vector<PreflightProblem>& problems() const { return problems_; }

 private:
  std::vector<PreflightProblem> problems_;
};

// Tracepoints the BPF programs attach to, as "category/name".
const std::vector<std::string>& required_tracepoints();

// Mounts tracefs at paths.tracefs when no tracefs is mounted. Returns the tracing directory in
// use, or throws Error saying what is wrong: mounted but not readable by this process, mounted
// without events/, or not mounted and the mount failed.
std::string ensure_tracefs(const PreflightPaths& paths = {});

// Every problem found; empty when the BPF programs can be loaded and attached.
std::vector<PreflightProblem> run_preflight(const PreflightPaths& paths = {});

// Runs the preflight and throws PreflightError with the first problem (and a count of the
// others).
void require_preflight(const PreflightPaths& paths = {});

}  // namespace portlens
