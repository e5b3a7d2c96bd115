// `portlens check` (would this bind succeed now?) and `portlens why` (who holds this port?).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

#include "agent/kernel/snapshot.hpp"
#include "agent/model/inet.hpp"
#include "agent/model/netns_ref.hpp"

namespace portlens {

struct CheckOptions {
  Proto proto = Proto::kTcp;
  std::string address;  // ADDR:PORT as the user wrote it
  bool reuseaddr = false;
  bool reuseport = false;
  bool v6only = false;
  bool listen = false;
  bool json = false;
  std::optional<std::string> device;  // interface name or index
  std::optional<std::uint32_t> uid;   // default: the caller's uid
  std::optional<std::string> netns;
  SnapshotMode snapshot_mode = SnapshotMode::kAuto;
  // `check connect ADDR:PORT`: would a connect() toward ADDR:PORT, from an unbound TCP socket,
  // find a local port now. address is then the destination.
  bool connect = false;
};

// Exit codes of `check`: 0 the bind (and listen) would succeed; 1 it would fail, or the answer
// depends on what portlens cannot see (said so). Usage errors throw UsageError (exit 2).
inline constexpr int kCheckSucceeds = 0;
inline constexpr int kCheckFails = 1;

int run_check(const CheckOptions& options, std::ostream& out);

// The interface index of --device (a name, or an index) in ns, checked there: throws UsageError
// when no interface has that name or index.
int resolve_device(const std::string& device, const NetnsRef& ns);

struct WhyOptions {
  std::string api_socket = "/run/portlens/api.sock";  // where a running agent answers
  std::uint16_t port = 0;
  Proto proto = Proto::kTcp;
  std::optional<std::string> netns;
  bool json = false;
  SnapshotMode snapshot_mode = SnapshotMode::kAuto;
};

int run_why(const WhyOptions& options, std::ostream& out);

}  // namespace portlens
