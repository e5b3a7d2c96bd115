// Ring-buffer records as the kernel side could send them, and worse: each input is a sequence of
// records (a length byte, then that many bytes), decoded by decode_event and, when they decode,
// applied to a SocketTracker with small caps, printed as a trace row and as JSON. Checks that
// decoding gives an event or an error and never both, that the caps hold, that a trace row has
// no byte a terminal would obey, and that the JSON form is valid.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/model/clock.hpp"
#include "agent/model/event.hpp"
#include "agent/render/format.hpp"
#include "agent/tracker/tracker.hpp"
#include "bpf/events.h"
#include "tests/fuzz/fuzz_check.hpp"

namespace {

// The record sizes the kernel sends, so most inputs reach past the length checks.
std::size_t record_length(std::uint8_t selector, std::size_t left) {
  std::size_t length = 0;
  switch (selector % 4) {
    case 0:
      length = sizeof(pl_event);
      break;
    case 1:
      length = sizeof(pl_sock_event);
      break;
    default:
      length = selector;  // anything: too short, between the two, ...
      break;
  }
  return std::min(length, left);
}

bool printable(const std::string& text) {
  return std::none_of(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr portlens::TrackerLimits kLimits{
      .max_sockets = 32, .max_time_wait = 32, .max_resets = 8, .max_tombstones = 8};
  portlens::SocketTracker tracker(kLimits);
  const portlens::WallClock clock(0);
  std::uint64_t latest_ns = 0;
  std::uint32_t netns = 0;
  std::size_t offset = 0;
  std::size_t records = 0;
  while (offset < size) {
    const std::size_t length = record_length(data[offset], size - offset - 1);
    ++offset;
    const auto* first = reinterpret_cast<const std::byte*>(data + offset);
    const portlens::DecodeResult decoded =
        portlens::decode_event(std::span<const std::byte>(first, length));
    offset += length;
    FUZZ_CHECK(decoded.event.has_value() != decoded.error.has_value());
    if (decoded.error) {
      FUZZ_CHECK(!portlens::to_string(*decoded.error).empty());
      continue;
    }
    const portlens::Event& event = *decoded.event;
    // The kernel's comm has its NUL within 16 bytes; a record without one keeps all 16.
    FUZZ_CHECK(event.comm.size() <= PL_COMM_LEN);
    const std::string row = portlens::format_table_row(event, clock);
    FUZZ_CHECK(printable(row));
    const nlohmann::json as_json = portlens::event_to_json(event, clock);
    const std::string text = as_json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    FUZZ_CHECK(!nlohmann::json::parse(text, nullptr, false).is_discarded());
    tracker.apply(event);
    latest_ns = std::max(latest_ns, event.ts_ns);
    netns = event.netns;
    if (++records % 8 == 0) {
      tracker.expire(latest_ns);
      (void)tracker.rows(latest_ns);
      (void)tracker.table(std::nullopt, latest_ns);
    }
    FUZZ_CHECK(tracker.socket_count() <= kLimits.max_sockets);
    FUZZ_CHECK(tracker.time_wait_count() <= kLimits.max_time_wait);
  }
  (void)tracker.table_at(netns, latest_ns, latest_ns);
  tracker.release_memory(0);
  return 0;
}
