// Which process names get a `comm` label of their own in the failure counters: the top_k
// failing most lately, not the first top_k to fail after the start (a batch job that failed
// once at boot kept its label for life, and a real offender went to "other").
//
// Each comm's activity is a count of its failures that halves every half-life. A comm without
// a label takes the place of the least active labelled one once it is twice as active (so two
// comms of about the same rate do not swap labels back and forth). The comm that lost its
// place is retired: its series keep their last values (a counter never goes backwards) until
// more than top_k labels are retired, then the oldest retired ones are dropped. A real process
// named "other" never merges into the aggregate: it is labelled "other_" (and "other_" as
// "other__", and so on). Pure; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace portlens {

class CommLabels {
 public:
  static constexpr std::uint64_t kDefaultHalfLifeNs = 600'000'000'000ULL;  // 10 minutes

  explicit CommLabels(std::size_t top_k, std::uint64_t half_life_ns = kDefaultHalfLifeNs);

  // The label a failure by comm at now_ns is counted under; counts the failure.
  std::string label(std::string_view comm, std::uint64_t now_ns);
  // Labels whose series should go: retired longer ago than the top_k retired after them.
  // Cleared by the call.
  std::vector<std::string> take_dropped();

  // The label for a comm that has one, spelled so that no real comm is mistaken for "other".
  static std::string spelled(std::string_view comm);

 private:
  struct Activity {
    double score = 0;
    std::uint64_t at_ns = 0;
    bool labelled = false;
  };
  [[nodiscard]] double decayed(const Activity& a, std::uint64_t now_ns) const;
  void forget_quietest(std::uint64_t now_ns);

  const std::size_t top_k_;
  const std::uint64_t half_life_ns_;
  std::map<std::string, Activity, std::less<>> seen_;  // bounded: kept_ below
  std::size_t labelled_ = 0;
  std::deque<std::string> retired_;
  std::vector<std::string> dropped_;
  const std::size_t kept_;
};

}  // namespace portlens
