#include "exporters/comm_labels.hpp"

#include <algorithm>
#include <cmath>

namespace portlens {
namespace {

constexpr std::string_view kOther = "other";
// A comm without a label takes a labelled one's place when this many times as active.
constexpr double kTakeOver = 2.0;

}  // namespace

CommLabels::CommLabels(std::size_t top_k, std::uint64_t half_life_ns)
    : top_k_(top_k),
      half_life_ns_(std::max<std::uint64_t>(half_life_ns, 1)),
      kept_(8 * top_k + 64) {}

std::string CommLabels::spelled(std::string_view comm) {
  // "other", "other_", "other__", ...: one more underscore each, so the aggregate's label is
  // never a real comm's and two real comms never share a label.
  if (comm.starts_with(kOther) &&
      comm.find_first_not_of('_', kOther.size()) == std::string_view::npos) {
    return std::string(comm) + "_";
  }
  return std::string(comm);
}

double CommLabels::decayed(const Activity& a, std::uint64_t now_ns) const {
  if (now_ns <= a.at_ns) {
    return a.score;
  }
  const double halves = static_cast<double>(now_ns - a.at_ns) / static_cast<double>(half_life_ns_);
  return a.score * std::exp2(-halves);
}

void CommLabels::forget_quietest(std::uint64_t now_ns) {
  // The least active comm without a label goes: its activity is what a newcomer starts from.
  auto quietest = seen_.end();
  double lowest = 0;
  for (auto it = seen_.begin(); it != seen_.end(); ++it) {
    if (it->second.labelled) {
      continue;
    }
    const double d = decayed(it->second, now_ns);
    if (quietest == seen_.end() || d < lowest) {
      quietest = it;
      lowest = d;
    }
  }
  if (quietest != seen_.end()) {
    seen_.erase(quietest);
  }
}

std::string CommLabels::label(std::string_view comm, std::uint64_t now_ns) {
  auto it = seen_.find(comm);
  if (it == seen_.end()) {
    if (seen_.size() >= kept_) {
      forget_quietest(now_ns);
    }
    it = seen_.emplace(std::string(comm), Activity{}).first;
  }
  Activity& a = it->second;
  a.score = decayed(a, now_ns) + 1.0;
  a.at_ns = std::max(a.at_ns, now_ns);
  if (a.labelled) {
    return spelled(comm);
  }
  if (labelled_ < top_k_) {
    a.labelled = true;
    ++labelled_;
    return spelled(comm);
  }
  // Full: the least active labelled comm gives way to one twice as active.
  auto weakest = seen_.end();
  double lowest = 0;
  for (auto l = seen_.begin(); l != seen_.end(); ++l) {
    if (!l->second.labelled) {
      continue;
    }
    const double d = decayed(l->second, now_ns);
    if (weakest == seen_.end() || d < lowest) {
      weakest = l;
      lowest = d;
    }
  }
  if (weakest == seen_.end() || a.score < kTakeOver * lowest) {
    return std::string(kOther);
  }
  weakest->second.labelled = false;
  const std::string gone = spelled(weakest->first);
  // Coming back later, it starts over like any comm without a label.
  retired_.erase(std::remove(retired_.begin(), retired_.end(), gone), retired_.end());
  retired_.push_back(gone);
  a.labelled = true;
  std::string mine = spelled(comm);
  retired_.erase(std::remove(retired_.begin(), retired_.end(), mine), retired_.end());
  while (retired_.size() > top_k_) {
    dropped_.push_back(retired_.front());
    retired_.pop_front();
  }
  return mine;
}

std::vector<std::string> CommLabels::take_dropped() {
  std::vector<std::string> out;
  out.swap(dropped_);
  return out;
}

}  // namespace portlens
