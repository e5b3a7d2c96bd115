// `portlens top`: a live terminal view of namespaces, listeners, TIME_WAIT ports, destinations and
// failures. One frame is a JSON object (top_snapshot()) built from an EventPipeline: the agent
// serves it on its local API (op "top"), and top builds the same object from a pipeline of its
// own when no agent answers, so one renderer (agent/cmd/top_view.hpp) serves both.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/live/pipeline.hpp"
#include "agent/live/sources.hpp"
#include "exporters/findings.hpp"
#include "exporters/local_api.hpp"

namespace portlens {

struct TopOptions {
  std::optional<std::string> netns;  // as the user gave it
  double interval_s = 1.0;
  bool once = false;            // print one plain frame and exit (also when stdout is no tty)
  std::string source = "auto";  // auto (the agent when it answers, else a tracer), agent, tracer
  std::string api_socket = std::string(kDefaultApiSocket);
};

// What a frame holds at most per list, and what a request may ask for.
inline constexpr std::size_t kTopDefaultLimit = 200;
inline constexpr std::size_t kTopMaxLimit = 5000;
// Accept queues are read from a fresh snapshot of the namespaces with listeners, at most this
// many per frame (the tracker's table has no queue lengths: they change with every handshake).
inline constexpr std::size_t kTopQueueNamespaces = 8;

// What a frame is asked for: one namespace (its inode) or all, and the length of each list.
struct TopQuery {
  std::optional<std::uint64_t> netns;
  std::size_t limit = kTopDefaultLimit;
  // From a local API request {"op":"top","netns":N?,"limit":N?}; out-of-range values are
  // clamped, wrong types ignored (check_api_request checks the form).
  static TopQuery from_request(const nlohmann::json& request);
};

// One frame: {"monotonic_ms","time_ms","netns_filter","namespaces":[...],"listeners":[...],
// "ports":[...],"destinations":[...],"failures":[...],"events_lost","events_malformed",
// "notes":[...]}. Takes the pipeline's mutex for the copy it reads. queues, when given, is
// asked for a snapshot of up to kTopQueueNamespaces namespaces with TCP listeners (their accept
// queues); owners, when given, names the listeners' processes (not thread-safe: only from the
// thread that drives the pipeline). Strings are as the kernel gave them: the renderer escapes.
nlohmann::json top_snapshot(const EventPipeline& pipeline, const AgentFindings& findings,
                            const NamespaceSource* queues, const OwnerSource* owners,
                            const TopQuery& query);

// Runs `portlens top` until 'q', SIGINT/SIGTERM (stop) or, with --once or when out is not a
// terminal, after one frame. Throws UsageError for bad input, Error when it cannot run.
int run_top(const TopOptions& options, std::ostream& out, const std::atomic<bool>& stop);

}  // namespace portlens
