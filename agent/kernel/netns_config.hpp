// The per-netns port configuration (NetnsPortConfig): sysctls under /proc/sys/net and the local
// addresses, read inside the network namespace of the calling thread. The parsers are pure; odd
// input leaves the kernel's default in place and is reported, never guessed.
#pragma once

#include <bitset>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/kernel/kernel_only.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

// "32768\t60999\n" (ip_local_port_range): two ports, low <= high, both 1..65535.
std::optional<std::pair<std::uint16_t, std::uint16_t>> parse_port_range(std::string_view text);

// "8080,9000-9010\n" (ip_local_reserved_ports, proc_do_large_bitmap's format); blank is empty.
std::optional<std::bitset<65536>> parse_port_list(std::string_view text);

// One decimal integer, surrounding whitespace allowed, within [lo, hi].
std::optional<long> parse_sysctl_int(std::string_view text, long lo, long hi);

// The sysctl keys read, with dots: "net.ipv4.ip_local_port_range", ...
const std::vector<std::string>& port_config_sysctl_keys();

// Builds the config from sysctl texts keyed as above. A key that is absent keeps its default
// (net.ipv4.tcp_tw_reuse_delay exists only from 6.14 on, silently); every other absent key and
// every value that does not parse is described in *problems.
NetnsPortConfig port_config_from_sysctls(const std::map<std::string, std::string>& texts,
                                         std::vector<std::string>* problems);

// One counter of /proc/net/netstat (or /proc/net/snmp): the value under `name` in the `group`
// line pair ("TcpExt", "TCPTimeWaitOverflow"); nullopt when absent or malformed.
std::optional<std::uint64_t> parse_netstat_counter(std::string_view text, std::string_view group,
                                                   std::string_view name);

// The prefix length of a contiguous netmask, nullopt for a non-contiguous one.
std::optional<std::uint8_t> prefix_length(std::span<const std::uint8_t> netmask);

// Reads the sysctls, the local addresses (getifaddrs) and TcpExtTCPTimeWaitOverflow of the
// calling thread's netns.
NetnsPortConfig read_netns_port_config(std::vector<std::string>* problems);

// The running kernel's UDP bind rule (docs/kernel-rules.md 3), probed once per process in a
// private network namespace of a thread of its own: true when the first contender in the port's
// chain decides, false when every contender must share; nullopt when no namespace could be made
// (no CAP_SYS_ADMIN) or the sockets failed otherwise.
std::optional<bool> udp_first_contender_decides();

}  // namespace portlens
