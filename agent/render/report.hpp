// How a diagnosis or a prediction looks: lines for people, the JSON form of docs/architecture.md
// for programs. Shared by `trace`, `check` and `why`.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "agent/diagnose/diagnoser.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

// "TIME_WAIT", "LISTEN", ...; "CLOSE" for a bound TCP socket (the kernel's own name);
// "UNCONN" / "ESTAB" for UDP, as ss(8) says.
std::string socket_state_name(const SocketEntry& socket);

// One blocker in docs/architecture.md's form, plus what portlens knows of its options and why it
// blocks: {"proto","state","local","remote","pid","comm","expires_in_ms","why","definite",...}.
nlohmann::json blocker_to_json(const Blocker& blocker);
nlohmann::json socket_to_json(const SocketEntry& socket);

// {"kind":"set_option","option":"SO_REUSEADDR","on":"new"}, {"kind":"wait","seconds":41.3},
// {"kind":"stop","pid":812}, ...: only the keys that apply (docs/architecture.md, "Fixes").
nlohmann::json fix_to_json(const Fix& fix);

// {"cause","hint","fixes":[...],"blockers":[...]} and, for exhaustion, "ephemeral":{...}.
nlohmann::json diagnosis_to_json(const Diagnosis& diagnosis);

// "cause: time_wait" line, the hint, an "or:" line per further fix, and one line per blocker;
// each line starts with indent.
std::string format_diagnosis(const Diagnosis& diagnosis, const std::string& indent);
// One line for a socket: state, endpoints, owner, options, TIME_WAIT time left.
std::string format_socket(const SocketEntry& socket);
// The same line with the owner's text given (already escaped for the terminal), for a socket
// whose owner is known otherwise (a connection in a listener's accept queue).
std::string format_socket(const SocketEntry& socket, const std::string& owner);

}  // namespace portlens
