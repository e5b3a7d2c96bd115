// The program's logger (spdlog, to stderr) and the route for libbpf's own messages into it.
#pragma once

namespace portlens {

// verbosity 0: warnings and errors; 1 (-v): debug, including libbpf's messages; 2 (-vv): trace.
void setup_logging(int verbosity);

}  // namespace portlens
