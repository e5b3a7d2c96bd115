#include "agent/render/format.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

namespace portlens {
namespace {

constexpr std::int64_t kNsPerSec = 1'000'000'000;

std::string endpoint_or_dash(const std::optional<Endpoint>& ep) {
  return ep ? ep->to_string() : std::string("-");
}

std::string family_name(Family f) { return f == Family::kIpv4 ? "ipv4" : "ipv6"; }

// The length of the well-formed UTF-8 sequence that starts text[at] (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), or 0 when the byte starts none.
std::size_t utf8_sequence_length(std::string_view text, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[at + i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  unsigned char low = 0x80;  // the range the second byte must fall in
  unsigned char high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    low = lead == 0xe0 ? 0xa0 : 0x80;   // overlong below U+0800
    high = lead == 0xed ? 0x9f : 0xbf;  // UTF-16 surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    low = lead == 0xf0 ? 0x90 : 0x80;   // overlong below U+10000
    high = lead == 0xf4 ? 0x8f : 0xbf;  // above U+10FFFF
  } else {
    return 0;
  }
  if (at + length > text.size() || byte(1) < low || byte(1) > high) {
    return 0;
  }
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) {
      return 0;
    }
  }
  return length;
}

void append_hex_escape(std::string& out, unsigned char byte) {
  out += fmt::format("\\x{:02x}", byte);
}

}  // namespace

std::string escape_for_terminal(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    if (c == 0x1b) {
      out += "\\e";
      ++i;
      continue;
    }
    if (c == '\\') {
      out += "\\\\";
      ++i;
      continue;
    }
    // A byte 0x80 or above starts a UTF-8 sequence, or is one byte escaped (as controls are).
    const std::size_t n = c < 0x80 ? 0 : utf8_sequence_length(text, i);
    // A C1 control (U+0080-U+009F) is valid UTF-8 but U+009B is CSI to terminals that take
    // 8-bit controls: its bytes are escaped too.
    const bool c1 = n == 2 && c == 0xc2 && static_cast<unsigned char>(text[i + 1]) <= 0x9f;
    if (n == 0 || c1) {
      for (const std::size_t end = i + std::max<std::size_t>(n, 1); i < end; ++i) {
        append_hex_escape(out, static_cast<unsigned char>(text[i]));
      }
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string format_rfc3339_us(std::int64_t realtime_ns) {
  const auto secs = static_cast<time_t>(realtime_ns / kNsPerSec);
  const auto micros = (realtime_ns % kNsPerSec) / 1000;
  tm utc{};
  gmtime_r(&secs, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, micros);
}

std::string format_clock_time(std::int64_t realtime_ns, bool microseconds) {
  const auto secs = static_cast<time_t>(realtime_ns / kNsPerSec);
  const auto micros = (realtime_ns % kNsPerSec) / 1000;
  tm local{};
  localtime_r(&secs, &local);
  if (!microseconds) {
    return fmt::format("{:02}:{:02}:{:02}.{:03}", local.tm_hour, local.tm_min, local.tm_sec,
                       micros / 1000);
  }
  return fmt::format("{:02}:{:02}:{:02}.{:06}", local.tm_hour, local.tm_min, local.tm_sec, micros);
}

std::string errno_name(int err) {
  if (err == 0) {
    return "OK";
  }
  const long positive = err < 0 ? -static_cast<long>(err) : err;
  // strerrorname_np (glibc 2.32+) knows every errno the kernel returns to these calls.
  const char* name = positive <= 4095 ? strerrorname_np(static_cast<int>(positive)) : nullptr;
  if (name == nullptr) {
    return fmt::format("E?{}", positive);
  }
  return name;
}

std::string format_option_letters(const SocketOptions& opts) {
  std::string out;
  if (opts.reuseaddr) out += 'R';
  if (opts.reuseport) out += 'P';
  if (opts.v6only) out += '6';
  if (opts.freebind) out += 'F';
  if (opts.transparent) out += 'T';
  if (opts.bind_address_no_port) out += 'N';
  if (opts.bound_dev_if != 0) out += fmt::format("@{}", opts.bound_dev_if);
  return out.empty() ? "-" : out;
}

namespace {
std::atomic<bool> g_color{false};
}  // namespace

void enable_color(bool on) { g_color.store(on, std::memory_order_relaxed); }

bool color_enabled() { return g_color.load(std::memory_order_relaxed); }

std::string paint(std::string_view text, Paint how) {
  if (!color_enabled()) {
    return std::string(text);
  }
  const char* sgr = how == Paint::kFail ? "\x1b[1;31m" : "\x1b[32m";
  return std::string(sgr) + std::string(text) + "\x1b[0m";
}

bool color_wanted_on_stdout() {
  const char* no_color = std::getenv("NO_COLOR");  // https://no-color.org: set and not empty
  const char* term = std::getenv("TERM");
  return ::isatty(STDOUT_FILENO) == 1 && (no_color == nullptr || *no_color == '\0') &&
         term != nullptr && std::string_view(term) != "dumb";
}

std::string elide_endpoint(const std::string& text, std::size_t width) {
  if (text.size() <= width) {
    return text;
  }
  // Keep the port (":443", or "]:443" for IPv6) whole and as much of the address as fits.
  const auto colon = text.rfind(':');
  std::size_t tail_at = colon == std::string::npos ? text.size() : colon;
  if (tail_at > 0 && text[tail_at - 1] == ']') {
    --tail_at;
  }
  const std::string tail = text.substr(tail_at);
  const std::size_t room = width > tail.size() + 2 ? width - tail.size() - 2 : 0;
  return text.substr(0, room) + ".." + tail;
}

namespace {

struct Widths {
  std::size_t time;
  std::size_t address;
};

Widths widths(bool wide) {
  return wide ? Widths{15, 46} : Widths{12, kTableAddressWidth};  // 12: 18:39:27.068
}

}  // namespace

std::string format_table_header(bool wide) {
  const Widths w = widths(wide);
  return fmt::format("{:<{}} {:<15} {:>7} {:<7} {:<5} {:<{}} {:<{}} {:<4} {}", "TIME", w.time,
                     "COMM", "PID", "CALL", "PROTO", "LOCAL", w.address, "REMOTE", w.address,
                     "OPTS", "RESULT");
}

std::string format_table_row(const Event& event, const WallClock& clock, bool wide) {
  const Widths w = widths(wide);
  const auto shown = [&](const std::optional<Endpoint>& ep) {
    const std::string text = endpoint_or_dash(ep);
    return wide ? text : elide_endpoint(text, w.address);
  };
  std::string local = shown(event.shown_local());
  // bind(port 0) and listen() on an unbound socket: show the port the kernel picked.
  if (event.type == EventType::kBind && event.result == 0 && event.requested &&
      event.requested->port == 0 && event.local && event.local->port != 0) {
    local += fmt::format(" (got {})", event.local->port);
  }
  if (event.requested_fault) {
    local = "<unreadable sockaddr>";
  }
  std::string result;
  if (event.type == EventType::kState) {
    result = state_name(event.old_state) + "->" + state_name(event.new_state);
  } else if (event.type == EventType::kReset) {
    result = "received in " + state_name(event.old_state);  // tcp:tcp_receive_reset
  } else if (event.type == EventType::kResetSent) {
    result = "sent in " + state_name(event.old_state);  // tcp:tcp_send_reset
  } else if (event.type == EventType::kDestroy) {
    result = "destroyed in " + state_name(event.old_state);
  } else {
    result = errno_name(event.result);
    if (event.self_connect()) {
      result += " self-connect";
    }
    if (event.failed()) {
      result = paint(result, Paint::kFail);  // the last column: its escape bytes pad nothing
    }
  }
  const std::string opts = event.opts ? format_option_letters(*event.opts) : "?";
  // The calls run in their process; state changes and resets in whatever task was interrupted.
  const bool in_softirq = event.type == EventType::kState || event.type == EventType::kReset ||
                          event.type == EventType::kResetSent || event.type == EventType::kDestroy;
  return fmt::format(
      "{:<{}} {:<15} {:>7} {:<7} {:<5} {:<{}} {:<{}} {:<4} {}",
      format_clock_time(clock.to_realtime_ns(event.ts_ns), wide), w.time,
      in_softirq ? std::string("-") : escape_for_terminal(event.comm),
      in_softirq ? std::string("-") : std::to_string(event.pid),
      // A reset either way is "reset" in the 7-wide CALL column; RESULT says
      // which ("received in", "sent in").
      event.type == EventType::kResetSent ? std::string_view("reset") : to_string(event.type),
      to_string(event.proto), local, w.address, shown(event.shown_remote()), w.address, opts,
      result);
}

nlohmann::json endpoint_to_json(const Endpoint& endpoint) {
  return {{"addr", endpoint.addr.to_string()}, {"port", endpoint.port}};
}

nlohmann::json event_to_json(const Event& event, const WallClock& clock) {
  using nlohmann::json;
  const auto ep_or_null = [](const std::optional<Endpoint>& ep) -> json {
    return ep ? endpoint_to_json(*ep) : json(nullptr);
  };
  json j = {
      {"time", format_rfc3339_us(clock.to_realtime_ns(event.ts_ns))},
      {"event", to_string(event.type)},
      {"pid", event.pid},
      {"tid", event.tid},
      {"uid", event.uid},
      {"comm", event.comm},
      {"netns", event.netns},
      {"cgroup_id", event.cgroup_id},
      {"proto", to_string(event.proto)},
      {"family", family_name(event.family)},
      {"local", ep_or_null(event.shown_local())},
      {"remote", ep_or_null(event.shown_remote())},
  };
  if (event.opts) {
    const SocketOptions& o = *event.opts;
    j["opts"] = {{"reuseaddr", o.reuseaddr},
                 {"reuseport", o.reuseport},
                 {"v6only", o.v6only},
                 {"freebind", o.freebind},
                 {"transparent", o.transparent},
                 {"bind_address_no_port", o.bind_address_no_port},
                 {"bound_dev_if", o.bound_dev_if}};
  } else {
    j["opts"] = nullptr;
  }
  j["sock_uid"] = event.sock_uid ? json(*event.sock_uid) : json(nullptr);
  if (event.is_call()) {
    j["result"] = event.result;
    j["errno"] = event.result < 0 ? json(errno_name(event.result)) : json(nullptr);
    // What the call left on the socket: bind(0)'s port, connect()'s chosen source address.
    j["bound"] = event.result == 0 || event.type == EventType::kConnect ? ep_or_null(event.local)
                                                                        : json(nullptr);
    if (event.requested_fault) {
      j["sockaddr_fault"] = true;
    }
    if (event.type == EventType::kListen) {
      j["backlog"] = event.backlog;
    }
    if (event.self_connect()) {
      j["self_connect"] = true;
    }
  } else {
    j["old_state"] = state_name(event.old_state);
    j["new_state"] = state_name(event.new_state);
  }
  return j;
}

}  // namespace portlens
