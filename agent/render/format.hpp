// How events look to people (a table) and to programs (JSON Lines, docs/architecture.md's form).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/model/clock.hpp"
#include "agent/model/event.hpp"

namespace portlens {

// "2026-11-21T10:15:03.123456Z"
std::string format_rfc3339_us(std::int64_t realtime_ns);
// "10:15:03.123456", local time
std::string format_clock_time(std::int64_t realtime_ns);

// "EADDRINUSE" for 98 or -98; "OK" for 0; "E?123" for numbers libc does not name.
std::string errno_name(int err);

// Socket options as letters: R SO_REUSEADDR, P SO_REUSEPORT, 6 IPV6_V6ONLY, F IP_FREEBIND,
// T IP_TRANSPARENT, N IP_BIND_ADDRESS_NO_PORT, then "@ifindex" for SO_BINDTODEVICE; "-" if none.
std::string format_option_letters(const SocketOptions& opts);

// The table form of `portlens trace`.
std::string format_table_header();
std::string format_table_row(const Event& event, const WallClock& clock);

// The JSON form of docs/architecture.md (without "diagnosis", which the diagnoser adds).
nlohmann::json event_to_json(const Event& event, const WallClock& clock);
nlohmann::json endpoint_to_json(const Endpoint& endpoint);

}  // namespace portlens
