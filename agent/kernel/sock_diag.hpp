// The snapshot's fallback where BPF iterators are missing: TCP (every state, TIME_WAIT with its
// timer) and UDP sockets, IPv4 and IPv6, listed over NETLINK_SOCK_DIAG. It fills what
// inet_diag reports (state, endpoints, uid, inode, bound device, v6only, TIME_WAIT timer) and
// leaves the reuse flags unknown: sock_diag does not report them, and they are never guessed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "agent/kernel/kernel_only.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

// Decodes one SOCK_DIAG_BY_FAMILY answer: the netlink payload, a struct inet_diag_msg followed
// by its attributes. Pure; nullopt for anything that is not a TCP or UDP port owner of
// AF_INET/AF_INET6 (request sockets, truncated messages, unknown states).
std::optional<SocketEntry> decode_inet_diag(std::span<const std::byte> payload, Proto proto,
                                            std::uint64_t netns);

// A TCP listener's accept queue from the same answer (idiag_rqueue and idiag_wqueue hold
// sk_ack_backlog and sk_max_ack_backlog for LISTEN, tcp_diag_get_info()); nullopt for any other
// socket. sock_diag does not show the SYN queue.
std::optional<ListenQueue> decode_inet_diag_listen_queue(std::span<const std::byte> payload,
                                                         std::uint64_t netns);

// Appends the TCP and UDP sockets of the calling thread's network namespace to out, at most
// max_entries in out overall; returns how many more there were. netns is the namespace's inode,
// written into each entry. The listeners kept also append their accept queue to queues, when
// given. Throws Error when the kernel cannot be asked.
std::uint64_t sock_diag_list(std::uint64_t netns, std::size_t max_entries,
                             std::vector<SocketEntry>* out,
                             std::vector<ListenQueue>* queues = nullptr);

// The accept queues of the calling thread's namespace's TCP listeners, at most max_entries in
// queues; returns how many more there were. A LISTEN-only dump: cheap whatever the connections.
// Throws Error when the kernel cannot be asked.
std::uint64_t sock_diag_listen_queues(std::uint64_t netns, std::size_t max_entries,
                                      std::vector<ListenQueue>* queues);

}  // namespace portlens
