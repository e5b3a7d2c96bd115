// What the agent keeps of the pipeline's findings: failures counted by cause and comm, the
// per-event tallies, the recent diagnosed failures for the local API, and each failure written
// to the event log. A PipelineSink, so that unit tests drive it through the real pipeline.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "agent/live/pipeline.hpp"
#include "agent/model/clock.hpp"
#include "exporters/comm_labels.hpp"
#include "exporters/event_log.hpp"
#include "exporters/scrape_input.hpp"

namespace portlens {

class AgentFindings final : public PipelineSink {
 public:
  // event_log may be null. Thread-safe: the pipeline's thread adds, a scrape or the local API
  // reads. applied() runs under the pipeline's mutex and takes this one inside it, as fill()
  // does when a scrape holds the pipeline's: one lock order.
  AgentFindings(std::size_t top_k, std::size_t history, EventLog* event_log);

  void applied(std::span<const Event> batch) override;
  void event(const Event& event, const Diagnosis* diagnosis) override;
  // Counted under the judged failure's cause, without a record of their own.
  void repeat(const Event& event, const Diagnosis& diagnosis) override;
  // The event log gets the judged failure's record again with "repeats" and "last_time_ms";
  // its entry in the recent failures gets them too.
  void coalesced(const FailureCoalescer::Closed& closed) override;
  // Counted under cause "not_judged".
  void shed(const Event& event) override;

  // The counters as a scrape exports them.
  void fill(AgentCounters& counters) const;
  // The namespaces whose ephemeral ports ran out toward a destination since the last call (a
  // connect() the kernel refused for want of a port, diagnosed ephemeral_exhausted): utilization
  // 1.0 was reached there, however briefly. A scrape takes them for
  // portlens_ephemeral_port_utilization_peak_ratio, which they reset.
  std::map<std::uint64_t, double> take_utilization_peaks();
  // The recent failures matching a local API request {"port","pid","netns",
  // "since_ms","limit"}, newest first.
  [[nodiscard]] nlohmann::json failures(const nlohmann::json& request) const;

 private:
  // The comm label of a failure (CommLabels: the top_k failing most lately); drops the series
  // of labels retired long enough. Under mu_.
  std::string comm_label(const Event& event);
  void remember(nlohmann::json record, const Event& event);
  // Under mu_.
  void count_failure(const Event& event, std::string_view cause);

  struct HistoryEntry {
    nlohmann::json record;
    Event event;
  };
  mutable std::mutex mu_;
  const std::size_t history_limit_;
  EventLog* event_log_;
  const WallClock clock_;
  AgentCounters counters_;  // the failure counters; events and transitions are in tally_
  EventTally tally_;
  CommLabels comm_labels_;
  std::deque<HistoryEntry> history_;
  // Peak utilization seen by netns since the last take (bounded: one entry per namespace with an
  // exhausted connect(), at most kMaxPeaks before a scrape takes them).
  static constexpr std::size_t kMaxPeaks = 4096;
  std::map<std::uint64_t, double> peaks_;
};

}  // namespace portlens
