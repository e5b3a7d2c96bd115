// The agent's own process, read from /proc/self for the process_* metrics.
#pragma once

#include <optional>
#include <string_view>

#include "agent/model/self_stats.hpp"

namespace portlens {

// The process's CPU time, memory, descriptors and start time; nullopt when /proc cannot be read
// (the families are then left out of the scrape rather than reported as zero).
std::optional<ProcessStats> read_process_stats();

// The fields of a /proc/PID/stat line after the command name (which may hold spaces and
// parentheses, so the split starts after its last ')'), and /proc/stat's btime: the parts of
// read_process_stats() that are pure parsing. nullopt when the line is not one.
std::optional<ProcessStats> parse_process_stat(std::string_view stat_line, double boot_time_s,
                                               long clock_ticks, long page_size);

}  // namespace portlens
