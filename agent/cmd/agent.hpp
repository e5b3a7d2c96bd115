// `portlens agent`: the long-running daemon. It follows the events, keeps the socket table of
// every network namespace live, diagnoses every failure, and serves Prometheus metrics, an
// event log and a local API for `portlens why`.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/kernel/bpf_tracer.hpp"

namespace portlens {

struct AgentOptions {
  std::vector<std::string> listen_addresses = {":10130"};  // --web.listen-address, repeatable
  std::string telemetry_path = "/metrics";
  unsigned max_requests = 40;                  // --web.max-requests: parallel scrapes; 0 = any
  std::optional<std::string> web_config_file;  // exporter-toolkit's web config (TLS, basic auth)
  std::size_t top_k = 20;
  std::size_t max_namespaces = 16;       // exporters/collector.hpp kDefaultMaxNamespaces
  std::optional<std::string> event_log;  // JSON Lines of every diagnosed failure
  std::uint64_t event_log_max_bytes = std::uint64_t{64} << 20;
  std::size_t event_log_keep = 3;
  std::string api_socket = "/run/portlens/api.sock";
  std::string log_level = "info";
  std::string log_format = "logfmt";
  double reconcile_interval_s = 30;
  std::size_t ring_bytes = kDefaultRingBytes;
  std::size_t history = 10'000;  // diagnosed failures kept for the local API
  bool bpf_stats = true;         // hold BPF_ENABLE_STATS for portlens_bpf_program_run_*
};

// The --web.listen-address values, each checked (":PORT" dual-stack, "IPv4:PORT",
// "[IPv6]:PORT"); throws UsageError naming the bad one.
std::vector<std::string> checked_listen_addresses(const std::vector<std::string>& addresses);

// --web.telemetry-path: starts with / and is not / (the landing page), has no '?' or '#' (a
// query or fragment, which no request's path can match), no white space or control characters.
// Throws UsageError saying which rule it breaks.
void check_telemetry_path(const std::string& path);

// --event-log: given, it is not empty (open() would say "No such file or directory" of "").
// Everything else about it is for open() to tell (EventLog names the problem).
void check_event_log_path(const std::optional<std::string>& path);

// Runs until stop becomes true; reopens the event log whenever reopen_log is set (SIGHUP).
// Throws Error (one line, what to do) when it cannot start.
int run_agent(const AgentOptions& options, const std::atomic<bool>& stop,
              std::atomic<bool>& reopen_log);

}  // namespace portlens
