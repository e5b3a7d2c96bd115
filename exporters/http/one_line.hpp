// Messages that quote what a user or a file wrote stay one line: the HTTP layer's refusals are
// printed as the agent's one-line error at start.
#pragma once

#include <string>
#include <string_view>

namespace portlens::http {

// message with every control byte (0x00-0x1f, 0x7f: a newline, an ESC) shown as \xNN.
std::string one_line(std::string_view message);

}  // namespace portlens::http
