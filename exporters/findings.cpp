#include "exporters/findings.hpp"

#include <algorithm>
#include <utility>

#include "agent/render/format.hpp"
#include "agent/render/report.hpp"

namespace portlens {
namespace {

using nlohmann::json;

// The cause label of a failure shed unjudged (the diagnosis queue was full).
constexpr std::string_view kNotJudged = "not_judged";

bool port_matches(const Event& e, std::uint16_t port) {
  const auto has = [port](const std::optional<Endpoint>& ep) { return ep && ep->port == port; };
  return has(e.requested) || has(e.local) || has(e.remote);
}

}  // namespace

AgentFindings::AgentFindings(std::size_t top_k, std::size_t history, EventLog* event_log)
    : history_limit_(history), event_log_(event_log), comm_labels_(top_k) {}

void AgentFindings::applied(std::span<const Event> batch) {
  const std::lock_guard lock(mu_);
  for (const Event& e : batch) {
    tally_.count(e);
  }
}

void AgentFindings::event(const Event& e, const Diagnosis* diagnosis) {
  if (diagnosis == nullptr) {
    return;  // a failure portlens does not explain (ECONNREFUSED, ...): counted as an event only
  }
  json record = event_to_json(e, clock_);
  record["diagnosis"] = diagnosis_to_json(*diagnosis);
  record["time_ms"] = clock_.to_realtime_ns(e.ts_ns) / 1'000'000;
  if (event_log_ != nullptr) {
    event_log_->append(record);
  }
  const std::lock_guard lock(mu_);
  count_failure(e, to_string(diagnosis->cause));
  remember(std::move(record), e);
}

void AgentFindings::repeat(const Event& e, const Diagnosis& diagnosis) {
  const std::lock_guard lock(mu_);
  count_failure(e, to_string(diagnosis.cause));
}

void AgentFindings::shed(const Event& e) {
  const std::lock_guard lock(mu_);
  count_failure(e, kNotJudged);
}

void AgentFindings::coalesced(const FailureCoalescer::Closed& closed) {
  const std::int64_t last_ms = clock_.to_realtime_ns(closed.last_ts_ns) / 1'000'000;
  if (event_log_ != nullptr) {
    // The judged failure's record again, with how many identical ones followed it.
    json record = event_to_json(closed.first, clock_);
    record["diagnosis"] = diagnosis_to_json(closed.diagnosis);
    record["time_ms"] = clock_.to_realtime_ns(closed.first.ts_ns) / 1'000'000;
    record["repeats"] = closed.repeats;
    record["last_time_ms"] = last_ms;
    event_log_->append(record);
  }
  const std::lock_guard lock(mu_);
  const auto judged = std::find_if(history_.rbegin(), history_.rend(), [&](const HistoryEntry& h) {
    return h.event.ts_ns == closed.first.ts_ns && h.event.sock_id == closed.first.sock_id;
  });
  if (judged != history_.rend()) {
    judged->record["repeats"] = closed.repeats;
    judged->record["last_time_ms"] = last_ms;
  }
}

void AgentFindings::count_failure(const Event& e, std::string_view cause_name) {
  const std::string cause(cause_name);
  const std::string comm = comm_label(e);
  if (e.type == EventType::kConnect && cause_name == to_string(Cause::kEphemeralExhausted) &&
      (peaks_.size() < kMaxPeaks || peaks_.contains(e.netns))) {
    peaks_[e.netns] = 1.0;  // no port left toward the destination: the kernel's own verdict
  }
  if (e.type == EventType::kConnect) {
    ++counters_
          .connect_failures[{std::string(to_string(e.proto)), errno_name(e.result), cause, comm}];
  } else {
    ++counters_.bind_failures[{std::string(to_string(e.proto)), std::string(to_string(e.type)),
                               cause, comm}];
  }
}

std::string AgentFindings::comm_label(const Event& e) {
  std::string label = comm_labels_.label(e.comm, e.ts_ns);
  // A label that lost its place long enough ago: its series go.
  for (const std::string& gone : comm_labels_.take_dropped()) {
    std::erase_if(counters_.bind_failures,
                  [&](const auto& kv) { return std::get<3>(kv.first) == gone; });
    std::erase_if(counters_.connect_failures,
                  [&](const auto& kv) { return std::get<3>(kv.first) == gone; });
  }
  return label;
}

std::map<std::uint64_t, double> AgentFindings::take_utilization_peaks() {
  const std::lock_guard lock(mu_);
  return std::exchange(peaks_, {});
}

void AgentFindings::remember(json record, const Event& event) {
  history_.push_back(HistoryEntry{std::move(record), event});
  while (history_.size() > history_limit_) {
    history_.pop_front();
  }
}

void AgentFindings::fill(AgentCounters& counters) const {
  const std::lock_guard lock(mu_);
  counters.bind_failures = counters_.bind_failures;
  counters.connect_failures = counters_.connect_failures;
  tally_.name_into(counters);
}

json AgentFindings::failures(const json& request) const {
  const std::lock_guard lock(mu_);
  const auto port = request.value("port", 0);
  const auto pid = request.value("pid", 0);
  const auto netns = request.value("netns", std::uint64_t{0});
  const auto since_ms = request.value("since_ms", std::int64_t{0});
  const auto limit = static_cast<std::size_t>(request.value("limit", 100));
  json out = json::array();
  for (auto it = history_.rbegin(); it != history_.rend() && out.size() < limit; ++it) {
    const Event& e = it->event;
    if ((port != 0 && !port_matches(e, static_cast<std::uint16_t>(port))) ||
        (pid != 0 && e.pid != static_cast<std::uint32_t>(pid)) ||
        (netns != 0 && e.netns != netns) ||
        (since_ms != 0 && it->record.value("time_ms", std::int64_t{0}) < since_ms)) {
      continue;
    }
    out.push_back(it->record);
  }
  return out;
}

}  // namespace portlens
