// Time as the events carry it (CLOCK_MONOTONIC nanoseconds) and its mapping to wall-clock time.
#pragma once

#include <cstdint>

namespace portlens {

// CLOCK_MONOTONIC now, in the unit of event timestamps.
std::uint64_t monotonic_ns();

// Maps the BPF side's CLOCK_MONOTONIC timestamps to wall-clock time. The offset is taken once,
// when the clock is made; a wall-clock step afterwards shifts later times by the step.
class WallClock {
 public:
  WallClock();
  explicit WallClock(std::int64_t realtime_minus_monotonic_ns)
      : offset_ns_(realtime_minus_monotonic_ns) {}
  [[nodiscard]] std::int64_t to_realtime_ns(std::uint64_t monotonic_ns) const {
    return static_cast<std::int64_t>(monotonic_ns) + offset_ns_;
  }

 private:
  std::int64_t offset_ns_ = 0;
};

}  // namespace portlens
