// Decoded kernel events: the C++ view of bpf/events.h, validated so that nothing odd coming out
// of the ring buffer can crash or mislead the agent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "agent/model/inet.hpp"
#include "agent/model/socket_table.hpp"
#include "bpf/events.h"

namespace portlens {

// bpf/events.h asserts its own layout in both compilers; here, that the C++ side sees what the
// BPF side sees (no packing pragma or different alignment in effect).
static_assert(sizeof(pl_event) == 176 && alignof(pl_event) == 8, "pl_event differs from BPF");
static_assert(sizeof(pl_sock_event) == 80 && alignof(pl_sock_event) == 8,
              "pl_sock_event differs from BPF");

enum class EventType : std::uint8_t {
  kBind = PL_EV_BIND,
  kListen = PL_EV_LISTEN,
  kConnect = PL_EV_CONNECT,
  kState = PL_EV_STATE,
  kReset = PL_EV_RESET,
  kDestroy = PL_EV_DESTROY,
  kResetSent = PL_EV_RESET_SENT,
};

std::string_view to_string(EventType type);

// A call (bind, listen, connect) from a pl_event, or a socket event (state, reset, destroy) from
// a pl_sock_event: the latter run in softirq context and carry no task, so pid, tid, uid,
// cgroup_id and comm are 0 and empty, and opts only where the BPF side read them.
struct Event {
  EventType type = EventType::kBind;
  std::uint64_t ts_ns = 0;  // CLOCK_MONOTONIC
  std::uint64_t cgroup_id = 0;
  std::uint64_t sock_id = 0;  // identity of the kernel socket; never shown
  std::uint32_t pid = 0;
  std::uint32_t tid = 0;
  std::uint32_t uid = 0;
  std::optional<std::uint32_t> sock_uid;  // the socket's owner, when it was readable
  std::uint32_t netns = 0;
  int result = 0;  // 0 or -errno
  int fd = -1;
  int backlog = 0;
  Family family = Family::kIpv4;  // the socket's family
  int sock_type = 0;
  Proto proto = Proto::kTcp;
  std::optional<SocketOptions> opts;
  // bind: the address asked for; connect: the destination. nullopt: none (AF_UNSPEC) or the
  // sockaddr was unreadable (requested_fault).
  std::optional<Endpoint> requested;
  bool requested_fault = false;
  std::optional<Endpoint> local;   // calls: the socket's local address when the call returned;
                                   // socket events: its local address
  std::optional<Endpoint> remote;  // socket events (state, reset, destroy): the peer
  std::uint16_t enter_port = 0;    // connect: the port the socket was bound to before the call
  int old_state = 0;
  int new_state = 0;
  bool timestamps = false;  // state events into CLOSE: the connection carried TCP timestamps
  std::string comm;

  [[nodiscard]] bool is_call() const {
    return type == EventType::kBind || type == EventType::kListen || type == EventType::kConnect;
  }
  // A call that did not do what was asked. A non-blocking connect()'s EINPROGRESS is not one.
  [[nodiscard]] bool failed() const;
  // A TCP connect() that got the port it connects to, on the same address: the SYN meets its own
  // socket and TCP's simultaneous open connects it to itself (a client picking a loopback
  // server's port from the ephemeral range while that server is down).
  [[nodiscard]] bool self_connect() const;
  // The address that names the call in output: bind's requested address, the socket's own
  // address for everything else.
  [[nodiscard]] std::optional<Endpoint> shown_local() const;
  [[nodiscard]] std::optional<Endpoint> shown_remote() const;
};

enum class DecodeError : std::uint8_t {
  kTooShort,
  kBadLength,  // a state, reset or destroy record that is not a pl_sock_event
  kBadType,
  kBadFamily,
  kBadProtocol,
};
std::string_view to_string(DecodeError error);

struct DecodeResult {
  std::optional<Event> event;
  std::optional<DecodeError> error;
};

// Decodes one ring-buffer record. Never throws; malformed records come back with an error.
DecodeResult decode_event(std::span<const std::byte> record);

}  // namespace portlens
