// The program's logger (spdlog, to stderr) and the route for libbpf's own messages into it.
#pragma once

#include <string>

#include "agent/kernel/kernel_only.hpp"

namespace portlens {

// verbosity 0: warnings and errors; 1 (-v): debug, including libbpf's messages; 2 (-vv): trace.
// The format is a plain line for people.
void setup_logging(int verbosity);

// The agent's form: level is debug, info, warn or error; format is logfmt or json (one object
// per line). Throws UsageError for anything else.
void setup_logging(const std::string& level, const std::string& format);

}  // namespace portlens
