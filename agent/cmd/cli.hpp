// The command line: parsing into plain options (testable without privileges) and running.
#pragma once

#include <exception>
#include <iosfwd>
#include <string>
#include <vector>

#include "agent/cmd/agent.hpp"
#include "agent/cmd/check.hpp"
#include "agent/cmd/top.hpp"
#include "agent/cmd/trace.hpp"

namespace portlens {

enum class Command { kAgent, kTrace, kCheck, kWhy, kExplain, kTop };

struct CommandLine {
  Command command = Command::kTrace;
  int verbosity = 0;
  std::string color = "auto";  // --color: auto, always or never
  AgentOptions agent;
  TraceOptions trace;
  CheckOptions check;
  WhyOptions why;
  TopOptions top;
  std::optional<std::string> explain_cause;
};

// What parsing decided: run a command, or exit now with exit_code after printing text
// (help and version go to stdout with 0; usage errors to stderr with 2).
struct ParseOutcome {
  std::optional<CommandLine> command_line;
  int exit_code = 0;
  std::string stdout_text;
  std::string stderr_text;
};

// args[0] is the program name, as in argv.
ParseOutcome parse_command_line(const std::vector<std::string>& args);

// What run_main prints for an error that ends a command: "portlens: WHAT\n", escaped for the
// terminal (messages carry namespace names and paths). A preflight error lists every problem, one
// a line, when verbosity > 0 (-v); otherwise the first and a count of the others.
std::string error_lines(const std::exception& error, int verbosity);

// Everything main() does; returns the process exit code.
int run_main(int argc, char** argv);

}  // namespace portlens
