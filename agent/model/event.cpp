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
    case EventType::kResetSent:
      return "reset_sent";
    case EventType::kDestroy:
      return "destroy";
  }
  return "?";
}

std::string_view to_string(DecodeError error) {
  switch (error) {
    case DecodeError::kTooShort:
      return "record shorter than its type's struct (pl_event or pl_sock_event)";
    case DecodeError::kBadLength:
      return "socket event longer than pl_sock_event";
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

bool Event::self_connect() const {
  return type == EventType::kConnect && (proto == Proto::kTcp || proto == Proto::kMptcp) &&
         (result == 0 || result == -EINPROGRESS) && local && requested && local->port != 0 &&
         local->port == requested->port && local->addr.unmapped() == requested->addr.unmapped();
}

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

namespace {

std::optional<SocketOptions> to_options(const pl_sock_opts& opts) {
  return SocketOptions{
      .reuseaddr = opts.reuseaddr != 0,
      .reuseport = opts.reuseport != 0,
      .v6only = opts.v6only != 0,
      .freebind = opts.freebind != 0,
      .transparent = opts.transparent != 0,
      .bind_address_no_port = opts.bind_address_no_port != 0,
      .bound_dev_if = opts.bound_dev_if,
  };
}

// A call: bind(), listen() or connect(), with its task, options and addresses.
DecodeResult decode_call(std::span<const std::byte> record, Event e) {
  if (record.size() < sizeof(pl_event)) {
    return {std::nullopt, DecodeError::kTooShort};
  }
  pl_event raw{};
  std::memcpy(&raw, record.data(), sizeof raw);
  const auto proto = proto_from_ipproto(raw.protocol);
  if (!proto) {
    return {std::nullopt, DecodeError::kBadProtocol};
  }
  e.proto = *proto;
  e.cgroup_id = raw.cgroup_id;
  e.pid = raw.pid;
  e.tid = raw.tid;
  e.uid = raw.uid;
  e.result = raw.ret;
  e.fd = raw.fd;
  e.backlog = raw.backlog;
  e.sock_type = raw.sock_type;
  e.enter_port = raw.enter_port;
  if ((raw.flags & PL_F_OPTS_VALID) != 0U) {
    e.opts = to_options(raw.opts);
    e.sock_uid = raw.sock_uid;
  }
  if ((raw.flags & PL_F_REQ_VALID) != 0U) {
    e.requested = to_endpoint(raw.req);
  }
  e.requested_fault = (raw.flags & PL_F_REQ_FAULT) != 0U;
  e.local = to_endpoint(raw.local);
  // comm is NUL-terminated by the kernel, but never trust a length that crossed a boundary.
  const std::string_view comm(raw.comm, sizeof raw.comm);
  e.comm = std::string(comm.substr(0, comm.find('\0')));
  return {std::move(e), std::nullopt};
}

// A state change, reset or destroy: a TCP socket, its states and its 4-tuple, no task.
DecodeResult decode_sock_event(std::span<const std::byte> record, Event e) {
  if (record.size() < sizeof(pl_sock_event)) {
    return {std::nullopt, DecodeError::kTooShort};
  }
  // The ring hands over records at their reserved length: a longer one is no pl_sock_event.
  if (record.size() > sizeof(pl_sock_event)) {
    return {std::nullopt, DecodeError::kBadLength};
  }
  pl_sock_event raw{};
  std::memcpy(&raw, record.data(), sizeof raw);
  e.proto = Proto::kTcp;
  e.sock_type = SOCK_STREAM;
  e.old_state = raw.old_state;
  e.new_state = raw.new_state;
  if ((raw.flags & PL_F_OPTS_VALID) != 0U) {
    e.opts = to_options(raw.opts);
    // sk_uid is not readable on TIME_WAIT and request minisockets; the BPF side leaves 0 there,
    // which is also root's uid, so only state changes' values (full sockets) are trusted.
    if (e.type == EventType::kState) {
      e.sock_uid = raw.sock_uid;
    }
  }
  e.timestamps = (raw.flags & PL_F_TS_RECENT) != 0U;
  const bool v4 = e.family == Family::kIpv4;
  const auto address = [v4](const __u8(&bytes)[16]) {
    if (v4) {
      return IpAddress::v4(std::array<std::uint8_t, 4>{bytes[0], bytes[1], bytes[2], bytes[3]});
    }
    std::array<std::uint8_t, 16> b{};
    std::copy(std::begin(bytes), std::end(bytes), b.begin());
    return IpAddress::v6(b);
  };
  e.local = Endpoint{address(raw.saddr), raw.sport};
  e.remote = Endpoint{address(raw.daddr), raw.dport};
  return {std::move(e), std::nullopt};
}

}  // namespace

DecodeResult decode_event(std::span<const std::byte> record) {
  // The header both record kinds share (bpf/events.h): its fields sit at the same offsets.
  constexpr std::size_t kHeader = offsetof(pl_sock_event, sock_family) + sizeof(__u16);
  static_assert(offsetof(pl_event, ts_ns) == offsetof(pl_sock_event, ts_ns) &&
                offsetof(pl_event, sk) == offsetof(pl_sock_event, sk) &&
                offsetof(pl_event, netns) == offsetof(pl_sock_event, netns));
  if (record.size() < kHeader) {
    return {std::nullopt, DecodeError::kTooShort};
  }
  pl_sock_event head{};
  std::memcpy(&head, record.data(), kHeader);

  Event e;
  switch (head.type) {
    case PL_EV_BIND:
    case PL_EV_LISTEN:
    case PL_EV_CONNECT:
    case PL_EV_STATE:
    case PL_EV_RESET:
    case PL_EV_DESTROY:
    case PL_EV_RESET_SENT:
      e.type = static_cast<EventType>(head.type);
      break;
    default:
      return {std::nullopt, DecodeError::kBadType};
  }
  if (head.sock_family == AF_INET) {
    e.family = Family::kIpv4;
  } else if (head.sock_family == AF_INET6) {
    e.family = Family::kIpv6;
  } else {
    return {std::nullopt, DecodeError::kBadFamily};
  }
  e.ts_ns = head.ts_ns;
  e.sock_id = head.sk;
  e.netns = head.netns;
  return e.is_call() ? decode_call(record, std::move(e)) : decode_sock_event(record, std::move(e));
}

}  // namespace portlens
