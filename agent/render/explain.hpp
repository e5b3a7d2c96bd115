// `portlens explain CAUSE`: the long form of each cause of the vocabulary.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "agent/diagnose/diagnoser.hpp"

namespace portlens {

// Every cause, in the order docs/architecture.md lists them.
const std::vector<Cause>& all_causes();
// The one-line meaning of a cause (docs/architecture.md's table).
std::string_view cause_summary(Cause cause);
// What the kernel does, a minimal example, the fixes and their trade-offs.
std::string explain(Cause cause);
// "causes:" and one line per cause with its summary: what an unknown CAUSE is answered with.
std::string list_causes();

}  // namespace portlens
