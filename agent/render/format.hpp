// How events look to people (a table) and to programs (JSON Lines, docs/architecture.md's form).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "agent/model/clock.hpp"
#include "agent/model/event.hpp"

namespace portlens {

// A string from the kernel or /proc (a comm, a namespace name, a path) made safe to print to a
// terminal, so that it cannot move the cursor, clear the screen or start a line of its own:
// ESC (0x1b) becomes "\e", every other control byte (0x00-0x1f, 0x7f) and every C1 control
// (U+0080-U+009F, which some terminals obey as ESC sequences) "\xNN", a backslash "\\", and
// each byte that is not part of valid UTF-8 "\xNN". Valid UTF-8 text is kept as it is. For
// human output only: JSON and Prometheus have escaping of their own.
std::string escape_for_terminal(std::string_view text);

// "2026-11-21T10:15:03.123456Z"
std::string format_rfc3339_us(std::int64_t realtime_ns);
// "10:15:03.123456", local time
std::string format_clock_time(std::int64_t realtime_ns, bool microseconds = true);

// "EADDRINUSE" for 98 or -98; "OK" for 0; "E?123" for numbers libc does not name.
std::string errno_name(int err);

// Socket options as letters: R SO_REUSEADDR, P SO_REUSEPORT, 6 IPV6_V6ONLY, F IP_FREEBIND,
// T IP_TRANSPARENT, N IP_BIND_ADDRESS_NO_PORT, then "@ifindex" for SO_BINDTODEVICE; "-" if none.
std::string format_option_letters(const SocketOptions& opts);

// The table form of `portlens trace`.
// Colour on the terminal (--color): off unless enable_color(true) was called, which the CLI does
// for --color=always, and for auto when stdout is a terminal, NO_COLOR is unset and TERM is not
// "dumb". paint() wraps text in an SGR sequence then, and returns it unchanged otherwise; only
// text portlens wrote is painted, never kernel or /proc strings, which stay escaped.
enum class Paint : std::uint8_t { kFail, kOk };
void enable_color(bool on);
[[nodiscard]] bool color_enabled();
std::string paint(std::string_view text, Paint how);
// --color=auto's decision for this process's stdout.
bool color_wanted_on_stdout();

// `trace`'s table. It fits 120 columns: the time in milliseconds, and an address longer than its
// column shortened in the middle ("[2001:db8:..]:443"), keeping its port; wide shows
// microseconds and every address whole. State and reset rows run in softirq context, where the
// task is whichever one was interrupted: their COMM and PID read "-".
inline constexpr std::size_t kTableAddressWidth = 19;  // 10.244.123.45:43480
std::string format_table_header(bool wide = false);
std::string format_table_row(const Event& event, const WallClock& clock, bool wide = false);
// An endpoint's text in at most width characters (never shortens below its port).
std::string elide_endpoint(const std::string& text, std::size_t width);

// The JSON form of docs/architecture.md (without "diagnosis", which the diagnoser adds).
nlohmann::json event_to_json(const Event& event, const WallClock& clock);
nlohmann::json endpoint_to_json(const Endpoint& endpoint);

}  // namespace portlens
