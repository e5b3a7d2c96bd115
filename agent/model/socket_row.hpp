// The compact view of a TCP-table socket that the metrics read.
#pragma once

#include <chrono>
#include <optional>

#include "agent/model/inet.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

// A TCP or MPTCP socket reduced to what the metrics read of it (portlens_tcp_sockets, the
// TIME_WAIT gauges, the per-destination accounting): the fields keep SocketEntry's names and
// meaning, addresses are unmapped. A scrape copies these, not 264-byte SocketEntry values, while
// it holds the agent's lock.
struct SocketRow {
  Endpoint local;
  std::optional<Endpoint> remote;
  std::optional<std::chrono::milliseconds> time_wait_remaining;
  std::optional<int> bound_dev_if;
  Proto proto = Proto::kTcp;
  std::optional<TcpState> state;
  std::optional<TcpState> time_wait_substate;
  std::optional<bool> timestamps;
  bool explicit_port = false;
};

}  // namespace portlens
