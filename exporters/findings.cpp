#include "exporters/findings.hpp"

#include <utility>

#include "agent/render/format.hpp"
#include "agent/render/report.hpp"

namespace portlens {
namespace {

using nlohmann::json;

constexpr const char* kOther = "other";

bool port_matches(const Event& e, std::uint16_t port) {
  const auto has = [port](const std::optional<Endpoint>& ep) { return ep && ep->port == port; };
  return has(e.requested) || has(e.local) || has(e.remote);
}

}  // namespace

AgentFindings::AgentFindings(std::size_t top_k, std::size_t history, EventLog* event_log)
    : top_k_(top_k), history_limit_(history), event_log_(event_log) {}

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
  const std::string cause(to_string(diagnosis->cause));
  const std::lock_guard lock(mu_);
  const std::string comm = comm_label(e.comm);
  if (e.type == EventType::kConnect) {
    ++counters_
          .connect_failures[{std::string(to_string(e.proto)), errno_name(e.result), cause, comm}];
  } else {
    ++counters_.bind_failures[{std::string(to_string(e.proto)), std::string(to_string(e.type)),
                               cause, comm}];
  }
  remember(std::move(record), e);
}

std::string AgentFindings::comm_label(const std::string& comm) {
  if (labelled_comms_.contains(comm)) {
    return comm;
  }
  if (labelled_comms_.size() < top_k_) {
    labelled_comms_.insert(comm);
    return comm;
  }
  return kOther;
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
