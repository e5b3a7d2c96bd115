#include "agent/kernel/sock_diag.hpp"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>

#include <libmnl/libmnl.h>

#include "agent/model/error.hpp"

namespace portlens {
namespace {

// inet_twsk_diag_fill() reports a timewait minisocket with idiag_timer 3 and its tw_substate as
// idiag_state; full sockets use 0 (none), 1 (retransmit), 2 (keepalive), 4 (zero window probe).
constexpr std::uint8_t kTimerTimeWait = 3;

// include/net/tcp_states.h; TCP_BOUND_INACTIVE (6.8+) is newer than Debian 12's uapi headers.
constexpr int kTcpListen = 10;
constexpr int kTcpSynRecv = 3;
constexpr int kTcpNewSynRecv = 12;
constexpr int kTcpBoundInactive = 13;

// Every TCP state that owns a port. SYN_RECV is left out: those are request minisockets, which
// own no port (their listener does). TCPF_BOUND_INACTIVE asks 6.8+ kernels for bound-only
// sockets (inet_diag_dump_icsk walks the bind hash for them); older kernels ignore the bit.
constexpr std::uint32_t kTcpStates =
    (0xfffu & ~(1u << kTcpSynRecv) & ~(1u << kTcpNewSynRecv)) | (1u << kTcpBoundInactive);

struct MnlSocketDeleter {
  void operator()(mnl_socket* nl) const { mnl_socket_close(nl); }
};
using MnlSocket = std::unique_ptr<mnl_socket, MnlSocketDeleter>;

Endpoint endpoint_of(int family, const __be32* addr, __be16 port) {
  Endpoint ep;
  if (family == AF_INET) {
    ep.addr = IpAddress::v4(addr[0]);
  } else {
    std::array<std::uint8_t, 16> bytes{};
    std::memcpy(bytes.data(), addr, bytes.size());
    ep.addr = IpAddress::v6(bytes);
  }
  ep.port = ntohs(port);
  return ep;
}

struct DumpState {
  Proto proto = Proto::kTcp;
  std::uint64_t netns = 0;
  std::size_t max_entries = 0;
  std::vector<SocketEntry>* out = nullptr;
  std::vector<ListenQueue>* queues = nullptr;
  bool queues_only = false;  // a LISTEN-only dump for the queues: no SocketEntry kept
  std::uint64_t cut = 0;
};

int on_message(const nlmsghdr* nlh, void* data) {
  auto* state = static_cast<DumpState*>(data);
  const std::span payload(static_cast<const std::byte*>(mnl_nlmsg_get_payload(nlh)),
                          mnl_nlmsg_get_payload_len(nlh));
  if (state->queues_only) {
    if (auto queue = decode_inet_diag_listen_queue(payload, state->netns)) {
      if (state->queues->size() < state->max_entries) {
        state->queues->push_back(*queue);
      } else {
        ++state->cut;
      }
    }
    return MNL_CB_OK;
  }
  if (auto entry = decode_inet_diag(payload, state->proto, state->netns)) {
    if (state->out->size() < state->max_entries) {
      state->out->push_back(std::move(*entry));
      if (state->queues != nullptr && state->proto == Proto::kTcp) {
        if (auto queue = decode_inet_diag_listen_queue(payload, state->netns)) {
          state->queues->push_back(*queue);
        }
      }
    } else {
      ++state->cut;
    }
  }
  return MNL_CB_OK;
}

// One SOCK_DIAG_BY_FAMILY dump for a family and protocol.
void dump(mnl_socket* nl, std::uint8_t family, std::uint8_t protocol, std::uint32_t states,
          DumpState* state) {
  // A netlink header and an inet_diag_req_v2, 8-byte aligned.
  std::array<std::uint64_t, 16> request{};
  nlmsghdr* nlh = mnl_nlmsg_put_header(request.data());
  nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  const auto seq = static_cast<std::uint32_t>(family << 8 | protocol);
  nlh->nlmsg_seq = seq;
  auto* req =
      static_cast<inet_diag_req_v2*>(mnl_nlmsg_put_extra_header(nlh, sizeof(inet_diag_req_v2)));
  req->sdiag_family = family;
  req->sdiag_protocol = protocol;
  req->idiag_states = states;
  if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
    throw Error("sock_diag: cannot send the dump request: " + errno_text(errno));
  }
  // Large reads: the kernel fills each dump skb up to what the reader accepted last time.
  std::vector<char> buf(std::size_t{64} << 10);
  const unsigned portid = mnl_socket_get_portid(nl);
  for (;;) {
    const ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw Error("sock_diag: reading the dump failed: " + errno_text(errno));
    }
    const int rc =
        mnl_cb_run(buf.data(), static_cast<std::size_t>(n), seq, portid, on_message, state);
    if (rc == MNL_CB_STOP) {
      return;
    }
    if (rc < 0) {
      // ENOENT: the kernel has no diag module for this family/protocol (udp_diag not loaded).
      throw Error("sock_diag: the kernel refused the dump: " + errno_text(errno) +
                  (errno == ENOENT ? " (load the inet_diag, tcp_diag and udp_diag modules)" : ""));
    }
  }
}

}  // namespace

std::optional<SocketEntry> decode_inet_diag(std::span<const std::byte> payload, Proto proto,
                                            std::uint64_t netns) {
  inet_diag_msg msg{};
  if (payload.size() < sizeof msg) {
    return std::nullopt;
  }
  std::memcpy(&msg, payload.data(), sizeof msg);
  if (msg.idiag_family != AF_INET && msg.idiag_family != AF_INET6) {
    return std::nullopt;
  }
  SocketEntry e;
  e.proto = proto;
  e.netns = netns;
  e.local = endpoint_of(msg.idiag_family, msg.id.idiag_src, msg.id.idiag_sport);
  if (msg.id.idiag_dport != 0) {
    e.remote = endpoint_of(msg.idiag_family, msg.id.idiag_dst, msg.id.idiag_dport);
  }
  e.bound_dev_if = static_cast<int>(msg.id.idiag_if);
  const bool time_wait = proto == Proto::kTcp && msg.idiag_timer == kTimerTimeWait;
  if (proto == Proto::kTcp) {
    const int raw_state = msg.idiag_state == kTcpBoundInactive ? 7 /* TCP_CLOSE */
                                                               : msg.idiag_state;
    const auto state = tcp_state_from_int(raw_state);
    if (!state || raw_state == kTcpSynRecv || raw_state == kTcpNewSynRecv) {
      return std::nullopt;
    }
    if (time_wait) {
      e.state = TcpState::kTimeWait;
      e.time_wait_substate = state;
      // inet_twsk_diag_fill(): jiffies_delta_to_msecs(tw_timer.expires - jiffies), 0 if past.
      e.time_wait_remaining = std::chrono::milliseconds(msg.idiag_expires);
    } else {
      e.state = state;
    }
  }
  if (!time_wait) {
    // Timewait minisockets have neither (inet_twsk_diag_fill reports 0 for both).
    e.uid = msg.idiag_uid;
    e.inode = msg.idiag_inode;
  }
  if (msg.idiag_family == AF_INET) {
    e.v6only = false;
  }
  // INET_DIAG_SKV6ONLY comes with every full AF_INET6 socket (inet_diag_msg_attrs_fill).
  const auto attrs = payload.subspan(NLMSG_ALIGN(sizeof msg));
  mnl_attr_parse_payload(
      attrs.data(), attrs.size(),
      [](const nlattr* attr, void* data) {
        if (mnl_attr_get_type(attr) == INET_DIAG_SKV6ONLY &&
            mnl_attr_validate(attr, MNL_TYPE_U8) == 0) {
          static_cast<SocketEntry*>(data)->v6only = mnl_attr_get_u8(attr) != 0;
        }
        return MNL_CB_OK;
      },
      &e);
  return e;
}

std::optional<ListenQueue> decode_inet_diag_listen_queue(std::span<const std::byte> payload,
                                                         std::uint64_t netns) {
  inet_diag_msg msg{};
  if (payload.size() < sizeof msg) {
    return std::nullopt;
  }
  std::memcpy(&msg, payload.data(), sizeof msg);
  if ((msg.idiag_family != AF_INET && msg.idiag_family != AF_INET6) ||
      msg.idiag_state != kTcpListen) {
    return std::nullopt;
  }
  ListenQueue q;
  q.inode = msg.idiag_inode;
  q.netns = netns;
  q.local = endpoint_of(msg.idiag_family, msg.id.idiag_src, msg.id.idiag_sport);
  q.length = msg.idiag_rqueue;
  q.limit = msg.idiag_wqueue;
  return q;
}

namespace {
// A NETLINK_SOCK_DIAG socket of the calling thread's namespace (a netlink socket belongs to the
// namespace of the thread that creates it).
MnlSocket open_sock_diag() {
  MnlSocket nl(mnl_socket_open2(NETLINK_SOCK_DIAG, SOCK_CLOEXEC));
  if (!nl) {
    throw Error("sock_diag: cannot open a NETLINK_SOCK_DIAG socket: " + errno_text(errno));
  }
  if (mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
    throw Error("sock_diag: cannot bind the netlink socket: " + errno_text(errno));
  }
  return nl;
}
}  // namespace

std::uint64_t sock_diag_listen_queues(std::uint64_t netns, std::size_t max_entries,
                                      std::vector<ListenQueue>* queues) {
  const MnlSocket nl = open_sock_diag();
  DumpState state;
  state.netns = netns;
  state.max_entries = max_entries;
  state.queues = queues;
  state.queues_only = true;
  for (const std::uint8_t family : {AF_INET, AF_INET6}) {
    // LISTEN alone: inet_diag_dump_icsk() then walks the listening hash only, not the
    // established one, so this costs what the listeners are.
    dump(nl.get(), family, IPPROTO_TCP, 1U << kTcpListen, &state);
  }
  return state.cut;
}

std::uint64_t sock_diag_list(std::uint64_t netns, std::size_t max_entries,
                             std::vector<SocketEntry>* out, std::vector<ListenQueue>* queues) {
  const MnlSocket nl = open_sock_diag();
  DumpState state;
  state.netns = netns;
  state.max_entries = max_entries;
  state.out = out;
  state.queues = queues;
  for (const std::uint8_t family : {AF_INET, AF_INET6}) {
    state.proto = Proto::kTcp;
    dump(nl.get(), family, IPPROTO_TCP, kTcpStates, &state);
    state.proto = Proto::kUdp;
    dump(nl.get(), family, IPPROTO_UDP, ~0u, &state);
  }
  return state.cut;
}

}  // namespace portlens
