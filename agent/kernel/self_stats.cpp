#include "agent/kernel/self_stats.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace portlens {
namespace {

// /proc/stat's "btime N": when the system booted, in seconds since the epoch.
std::optional<double> boot_time_seconds() {
  std::ifstream in("/proc/stat");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("btime ")) {
      std::uint64_t v = 0;
      const char* begin = line.data() + 6;
      const char* end = line.data() + line.size();
      if (std::from_chars(begin, end, v).ec == std::errc{}) {
        return static_cast<double>(v);
      }
    }
  }
  return std::nullopt;
}

// Entries of /proc/self/fd, the directory's own descriptor included (as client_golang counts).
std::optional<double> open_fds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) {
    return std::nullopt;
  }
  double n = 0;
  // Bounded by the process's own descriptor limit: the directory lists only open descriptors.
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') {
      ++n;
    }
  }
  closedir(dir);
  return n;
}

double soft_limit(int resource) {
  rlimit limit{};
  if (getrlimit(resource, &limit) != 0) {
    return 0;
  }
  return static_cast<double>(limit.rlim_cur);
}

}  // namespace

std::optional<ProcessStats> parse_process_stat(std::string_view stat_line, double boot_time_s,
                                               long clock_ticks, long page_size) {
  const auto close = stat_line.rfind(')');
  if (close == std::string_view::npos || clock_ticks <= 0 || page_size <= 0) {
    return std::nullopt;
  }
  // Field 3 (state) is the first after the name; utime is 14, stime 15, starttime 22, vsize 23
  // and rss 24 (proc(5)), so index i here is field i + 3.
  std::vector<std::string_view> fields;
  std::string_view rest = stat_line.substr(close + 1);
  while (!rest.empty() && fields.size() < 22) {
    const auto start = rest.find_first_not_of(" \n");
    if (start == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(start);
    const auto end = rest.find_first_of(" \n");
    fields.push_back(rest.substr(0, end));
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
  }
  if (fields.size() < 22) {
    return std::nullopt;
  }
  const auto number = [&fields](std::size_t field) -> std::optional<double> {
    const std::string_view text = fields[field - 3];
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || v < 0) {
      return std::nullopt;
    }
    return static_cast<double>(v);
  };
  const auto utime = number(14);
  const auto stime = number(15);
  const auto start = number(22);
  const auto vsize = number(23);
  const auto rss = number(24);
  if (!utime || !stime || !start || !vsize || !rss) {
    return std::nullopt;
  }
  ProcessStats s;
  const auto ticks = static_cast<double>(clock_ticks);
  s.cpu_seconds = (*utime + *stime) / ticks;
  s.start_time_seconds = boot_time_s + *start / ticks;
  s.virtual_bytes = *vsize;
  s.resident_bytes = *rss * static_cast<double>(page_size);
  return s;
}

std::optional<ProcessStats> read_process_stats() {
  std::string text;
  {
    // Closed before the descriptors are counted, so that it is not one of them.
    std::ifstream in("/proc/self/stat");
    if (!in.is_open()) {
      return std::nullopt;
    }
    std::ostringstream read;
    read << in.rdbuf();
    text = read.str();
  }
  const auto boot = boot_time_seconds();
  if (!boot) {
    return std::nullopt;
  }
  auto s = parse_process_stat(text, *boot, sysconf(_SC_CLK_TCK), sysconf(_SC_PAGESIZE));
  if (!s) {
    return std::nullopt;
  }
  if (const auto fds = open_fds()) {
    s->open_fds = *fds;
  }
  s->max_fds = soft_limit(RLIMIT_NOFILE);
  s->virtual_max_bytes = soft_limit(RLIMIT_AS);
  return s;
}

}  // namespace portlens
