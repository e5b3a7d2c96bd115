#include "agent/model/event.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace portlens {
namespace {

std::optional<Endpoint> to_endpoint(const pl_endpoint& ep) {
  Endpoint out;
  out.port = ep.port;
  if (ep.family == PL_AF_INET) {
    out.addr =
        IpAddress::v4(std::array<std::uint8_t, 4>{ep.addr[0], ep.addr[1], ep.addr[2], ep.addr[3]});
    return out;
  }
  if (ep.family == PL_AF_INET6) {
    std::array<std::uint8_t, 16> b{};
    std::copy(std::begin(ep.addr), std::end(ep.addr), b.begin());
    out.addr = IpAddress::v6(b);
    return out;
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(EventType type) {
  switch (type) {
    case EventType::kBind:
      return "bind";
    case EventType::kListen:
      return "listen";
    case EventType::kConnect:
      return "connect";
    case EventType::kState:
      return "state";
    case EventType::kReset:
      return "reset";
    case EventType::kDestroy:
      return "destroy";
  }
  return "?";
}

std::string_view to_string(DecodeError error) {
  switch (error) {
    case DecodeError::kTooShort:
      return "record shorter than pl_event";
    case DecodeError::kBadType:
      return "unknown event type";
    case DecodeError::kBadFamily:
      return "socket family is neither AF_INET nor AF_INET6";
    case DecodeError::kBadProtocol:
      return "protocol has no ports portlens follows";
  }
  return "?";
}

bool Event::failed() const { return is_call() && result < 0 && result != -EINPROGRESS; }

std::optional<Endpoint> Event::shown_local() const {
  if (type == EventType::kBind) {
    return requested;
  }
  return local;
}

std::optional<Endpoint> Event::shown_remote() const {
  if (type == EventType::kConnect) {
    return requested;
  }
  return remote;
}

DecodeResult decode_event(std::span<const std::byte> record) {
  if (record.size() < sizeof(pl_event)) {
    return {std::nullopt, DecodeError::kTooShort};
  }
  pl_event raw{};
  std::memcpy(&raw, record.data(), sizeof raw);

  Event e;
  switch (raw.type) {
    case PL_EV_BIND:
    case PL_EV_LISTEN:
    case PL_EV_CONNECT:
    case PL_EV_STATE:
    case PL_EV_RESET:
    case PL_EV_DESTROY:
      e.type = static_cast<EventType>(raw.type);
      break;
    default:
      return {std::nullopt, DecodeError::kBadType};
  }
  if (raw.sock_family == AF_INET) {
    e.family = Family::kIpv4;
  } else if (raw.sock_family == AF_INET6) {
    e.family = Family::kIpv6;
  } else {
    return {std::nullopt, DecodeError::kBadFamily};
  }
  const auto proto = proto_from_ipproto(raw.protocol);
  if (!proto) {
    return {std::nullopt, DecodeError::kBadProtocol};
  }
  e.proto = *proto;
  e.ts_ns = raw.ts_ns;
  e.cgroup_id = raw.cgroup_id;
  e.sock_id = raw.sk;
  e.pid = raw.pid;
  e.tid = raw.tid;
  e.uid = raw.uid;
  e.netns = raw.netns;
  e.result = raw.ret;
  e.fd = raw.fd;
  e.backlog = raw.backlog;
  e.sock_type = raw.sock_type;
  e.enter_port = raw.enter_port;
  e.old_state = raw.old_state;
  e.new_state = raw.new_state;
  if ((raw.flags & PL_F_OPTS_VALID) != 0U) {
    e.opts = SocketOptions{
        .reuseaddr = raw.opts.reuseaddr != 0,
        .reuseport = raw.opts.reuseport != 0,
        .v6only = raw.opts.v6only != 0,
        .freebind = raw.opts.freebind != 0,
        .transparent = raw.opts.transparent != 0,
        .bind_address_no_port = raw.opts.bind_address_no_port != 0,
        .bound_dev_if = raw.opts.bound_dev_if,
    };
    // sk_uid is not readable on TIME_WAIT and request minisockets; the BPF side leaves 0 there,
    // which is also root's uid, so only full sockets' values are trusted.
    if (e.type != EventType::kReset && e.type != EventType::kDestroy) {
      e.sock_uid = raw.sock_uid;
    }
  }
  if ((raw.flags & PL_F_REQ_VALID) != 0U) {
    e.requested = to_endpoint(raw.req);
  }
  e.requested_fault = (raw.flags & PL_F_REQ_FAULT) != 0U;
  e.timestamps = (raw.flags & PL_F_TS_RECENT) != 0U;
  e.local = to_endpoint(raw.local);
  e.remote = to_endpoint(raw.remote);
  // comm is NUL-terminated by the kernel, but never trust a length that crossed a boundary.
  const std::string_view comm(raw.comm, sizeof raw.comm);
  e.comm = std::string(comm.substr(0, comm.find('\0')));
  return {std::move(e), std::nullopt};
}

}  // namespace portlens
