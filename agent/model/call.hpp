// One bind(), listen() or connect(): as traced (a failure to explain) or as asked (a prediction).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "agent/model/inet.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

enum class Syscall : std::uint8_t { kBind, kListen, kConnect };

std::string_view to_string(Syscall syscall);

// One bind(), listen() or connect() as the capture saw it.
struct Call {
  Syscall syscall = Syscall::kBind;
  Proto proto = Proto::kTcp;
  Family family = Family::kIpv4;  // the socket's family: an AF_INET6 socket may bind ::ffff:X
  std::uint64_t netns = 0;
  // bind: the requested address; listen: the socket's bound address; connect: the socket's
  // local address at entry (port 0 = not explicitly bound, address any = not bound at all).
  Endpoint local;
  std::optional<Endpoint> remote;  // connect only
  SocketOptions options;
  std::uint32_t uid = 0;
  // CAP_NET_BIND_SERVICE in the netns's user namespace; nullopt: assumed exactly for uid 0.
  std::optional<bool> cap_net_bind_service;
  int result = 0;  // negative errno the call returned; 0 for a prediction
  // The calling socket's inode, so that a listen() never names its own socket as a blocker.
  std::optional<std::uint64_t> inode;
  // The calling socket's kernel identity (Event::sock_id), for the same purpose when the call
  // comes from a traced event rather than from a socket portlens can stat.
  std::optional<std::uint64_t> sock_id;
};

}  // namespace portlens
