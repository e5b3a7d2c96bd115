#include "agent/kernel/netns_config.hpp"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <thread>
#include <tuple>
#include <type_traits>

#include "agent/model/error.hpp"
#include "agent/model/fd.hpp"

namespace portlens {
namespace {

constexpr std::string_view kPortRange = "net.ipv4.ip_local_port_range";
constexpr std::string_view kReservedPorts = "net.ipv4.ip_local_reserved_ports";
constexpr std::string_view kTwReuse = "net.ipv4.tcp_tw_reuse";
constexpr std::string_view kTwReuseDelay = "net.ipv4.tcp_tw_reuse_delay";
constexpr std::string_view kUnprivilegedPortStart = "net.ipv4.ip_unprivileged_port_start";
constexpr std::string_view kAutobindReuse = "net.ipv4.ip_autobind_reuse";
constexpr std::string_view kNonlocalBind = "net.ipv4.ip_nonlocal_bind";
constexpr std::string_view kIp6NonlocalBind = "net.ipv6.ip_nonlocal_bind";
constexpr std::string_view kMaxTwBuckets = "net.ipv4.tcp_max_tw_buckets";
constexpr std::string_view kSomaxconn = "net.core.somaxconn";
// /proc/net is /proc/self/net: the namespace of the thread group's leader. A thread that entered
// another namespace with setns() reads its own through thread-self.
constexpr const char* kNetstatPath = "/proc/thread-self/net/netstat";

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && is_space(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

// A whole decimal number, nothing else.
std::optional<long> parse_number(std::string_view s) {
  long value = 0;
  const auto* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, value);
  if (s.empty() || ec != std::errc() || ptr != end) {
    return std::nullopt;
  }
  return value;
}

std::optional<std::uint16_t> parse_port(std::string_view s, long lo) {
  const auto v = parse_number(s);
  if (!v || *v < lo || *v > 65535) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(*v);
}

std::optional<std::string> read_small_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) {
    return std::nullopt;
  }
  std::ostringstream out;
  out << f.rdbuf();
  return out.str();
}

std::string proc_path(std::string_view key) {
  std::string path = "/proc/sys/" + std::string(key);
  std::replace(path.begin() + 10, path.end(), '.', '/');
  return path;
}

std::optional<std::vector<LocalAddress>> read_local_addresses(std::vector<std::string>* problems) {
  ifaddrs* list = nullptr;
  // getifaddrs() asks over a netlink socket of its own: it sees the calling thread's netns.
  if (getifaddrs(&list) != 0) {
    problems->push_back("cannot list local addresses: " + errno_text(errno));
    return std::nullopt;
  }
  std::vector<LocalAddress> out;
  for (const ifaddrs* ifa = list; ifa != nullptr; ifa = ifa->ifa_next) {
    if (ifa->ifa_addr == nullptr || ifa->ifa_netmask == nullptr) {
      continue;
    }
    LocalAddress local;
    std::optional<std::uint8_t> prefix;
    if (ifa->ifa_addr->sa_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(ifa->ifa_addr);
      const auto* mask = reinterpret_cast<const sockaddr_in*>(ifa->ifa_netmask);
      local.address = IpAddress::v4(sin->sin_addr.s_addr);
      prefix = prefix_length(
          std::span(reinterpret_cast<const std::uint8_t*>(&mask->sin_addr), sizeof(in_addr)));
    } else if (ifa->ifa_addr->sa_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(ifa->ifa_addr);
      const auto* mask = reinterpret_cast<const sockaddr_in6*>(ifa->ifa_netmask);
      std::array<std::uint8_t, 16> bytes{};
      std::memcpy(bytes.data(), &sin6->sin6_addr, bytes.size());
      local.address = IpAddress::v6(bytes);
      prefix = prefix_length(
          std::span(reinterpret_cast<const std::uint8_t*>(&mask->sin6_addr), sizeof(in6_addr)));
    } else {
      continue;
    }
    if (!prefix) {
      problems->push_back("address " + local.address.to_string() + " on " + ifa->ifa_name +
                          " has a non-contiguous netmask; taken as a host address");
    }
    local.prefix_len = prefix.value_or(local.address.is_v4() ? 32 : 128);
    local.on_loopback_device = (ifa->ifa_flags & IFF_LOOPBACK) != 0;
    out.push_back(local);
  }
  freeifaddrs(list);
  return out;
}

}  // namespace

std::optional<std::pair<std::uint16_t, std::uint16_t>> parse_port_range(std::string_view text) {
  text = trim(text);
  const auto split = std::find_if(text.begin(), text.end(), is_space);
  if (split == text.end()) {
    return std::nullopt;
  }
  const auto at = static_cast<std::size_t>(split - text.begin());
  const auto lo = parse_port(text.substr(0, at), 1);
  const auto hi = parse_port(trim(text.substr(at)), 1);
  // ipv4_local_port_range() refuses a range whose high end is below its low end.
  if (!lo || !hi || *lo > *hi) {
    return std::nullopt;
  }
  return std::pair{*lo, *hi};
}

std::optional<std::bitset<65536>> parse_port_list(std::string_view text) {
  std::bitset<65536> ports;
  text = trim(text);
  if (text.empty()) {
    return ports;
  }
  // Every comma-separated item must be a port or a range; "8080," is not what the kernel writes.
  for (bool more = true; more;) {
    const std::size_t comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    more = comma != std::string_view::npos;
    text = more ? text.substr(comma + 1) : std::string_view{};
    const std::size_t dash = item.find('-');
    const auto first = parse_port(item.substr(0, dash), 0);
    const auto last = dash == std::string_view::npos ? first : parse_port(item.substr(dash + 1), 0);
    if (!first || !last || *first > *last) {
      return std::nullopt;
    }
    for (std::size_t p = *first; p <= *last; ++p) {
      ports.set(p);
    }
  }
  return ports;
}

std::optional<long> parse_sysctl_int(std::string_view text, long lo, long hi) {
  const auto v = parse_number(trim(text));
  if (!v || *v < lo || *v > hi) {
    return std::nullopt;
  }
  return v;
}

const std::vector<std::string>& port_config_sysctl_keys() {
  static const std::vector<std::string> keys{
      std::string(kPortRange),    std::string(kReservedPorts),         std::string(kTwReuse),
      std::string(kTwReuseDelay), std::string(kUnprivilegedPortStart), std::string(kAutobindReuse),
      std::string(kNonlocalBind), std::string(kIp6NonlocalBind),       std::string(kMaxTwBuckets),
      std::string(kSomaxconn)};
  return keys;
}

NetnsPortConfig port_config_from_sysctls(const std::map<std::string, std::string>& texts,
                                         std::vector<std::string>* problems) {
  NetnsPortConfig config;
  // Each key: how to take its text into config; false when the text is not what the kernel
  // writes (the default then stays).
  using Apply = std::function<bool(std::string_view)>;
  const auto int_field = [](auto* field, long lo, long hi) -> Apply {
    return [field, lo, hi](std::string_view text) {
      const auto v = parse_sysctl_int(text, lo, hi);
      if (v) {
        *field = static_cast<std::remove_pointer_t<decltype(field)>>(*v);
      }
      return v.has_value();
    };
  };
  const auto bool_field = [](bool* field) -> Apply {
    return [field](std::string_view text) {
      const auto v = parse_sysctl_int(text, 0, 255);
      if (v) {
        *field = *v != 0;
      }
      return v.has_value();
    };
  };
  const std::vector<std::pair<std::string_view, Apply>> fields{
      {kPortRange,
       [&config](std::string_view text) {
         const auto range = parse_port_range(text);
         if (range) {
           std::tie(config.port_range_lo, config.port_range_hi) = *range;
         }
         return range.has_value();
       }},
      {kReservedPorts,
       [&config](std::string_view text) {
         const auto ports = parse_port_list(text);
         if (ports) {
           config.reserved_ports = *ports;
         }
         return ports.has_value();
       }},
      {kTwReuse, int_field(&config.tcp_tw_reuse, 0, 2)},
      {kTwReuseDelay,
       [&config](std::string_view text) {
         // A sanity bound, far above the kernel's own maximum (TCP_PAWS_MSL seconds).
         const auto v = parse_sysctl_int(text, 1, 3'600'000);
         if (v) {
           config.tcp_tw_reuse_delay = std::chrono::milliseconds(*v);
         }
         return v.has_value();
       }},
      {kUnprivilegedPortStart, int_field(&config.ip_unprivileged_port_start, 0, 65535)},
      {kAutobindReuse, bool_field(&config.ip_autobind_reuse)},
      {kNonlocalBind, bool_field(&config.ip_nonlocal_bind)},
      {kIp6NonlocalBind, bool_field(&config.ip6_nonlocal_bind)},
      {kMaxTwBuckets,
       [&config](std::string_view text) {
         // proc_dointvec_minmax with extra1 = SYSCTL_ZERO: 0 to INT_MAX.
         const auto v = parse_sysctl_int(text, 0, std::numeric_limits<std::int32_t>::max());
         if (v) {
           config.tcp_max_tw_buckets = static_cast<std::uint32_t>(*v);
         }
         return v.has_value();
       }},
      {kSomaxconn,
       [&config](std::string_view text) {
         // proc_dointvec_minmax with extra1 = SYSCTL_ZERO (net/core/sysctl_net_core.c).
         const auto v = parse_sysctl_int(text, 0, std::numeric_limits<std::int32_t>::max());
         if (v) {
           config.somaxconn = static_cast<std::uint32_t>(*v);
         }
         return v.has_value();
       }},
  };
  // What an unreadable or odd key leaves portlens with.
  const auto fallback = [](std::string_view key) {
    if (key == kMaxTwBuckets) {
      return "TIME_WAITs are inferred without a limit";
    }
    return key == kSomaxconn ? "an accept queue's limit is shown without the clamp"
                             : "the kernel default is assumed";
  };
  for (const auto& [key, apply] : fields) {
    const auto it = texts.find(std::string(key));
    if (it == texts.end()) {
      if (key != kTwReuseDelay) {  // added in 6.14; before it, the delay is about one second
        problems->push_back(std::string(key) + " is not readable; " + fallback(key));
      }
      continue;
    }
    if (!apply(it->second)) {
      problems->push_back(std::string(key) + " = \"" + std::string(trim(it->second)) +
                          "\" is not understood; " + fallback(key));
    }
  }
  return config;
}

std::optional<std::uint8_t> prefix_length(std::span<const std::uint8_t> netmask) {
  int bits = 0;
  bool ended = false;
  for (const std::uint8_t byte : netmask) {
    const int ones = std::countl_one(byte);
    // Contiguous: ones, then only zeros, within each byte and across bytes.
    if ((ended && byte != 0) || (ones < 8 && static_cast<std::uint8_t>(byte << ones) != 0)) {
      return std::nullopt;
    }
    bits += ones;
    ended = ended || ones < 8;
  }
  return static_cast<std::uint8_t>(bits);
}

std::optional<std::uint64_t> parse_netstat_counter(std::string_view text, std::string_view group,
                                                   std::string_view name) {
  // Pairs of lines: "Group: Name1 Name2 ..." then "Group: value1 value2 ...".
  const auto next_line = [&text]() {
    const std::size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    return line;
  };
  const auto words = [](std::string_view line) {
    std::vector<std::string_view> out;
    while (true) {
      line = trim(line);
      if (line.empty()) {
        return out;
      }
      const auto split = std::find_if(line.begin(), line.end(), is_space);
      const auto at = static_cast<std::size_t>(split - line.begin());
      out.push_back(line.substr(0, at));
      line = line.substr(at);
    }
  };
  const std::string prefix = std::string(group) + ":";
  while (!text.empty()) {
    const std::vector<std::string_view> names = words(next_line());
    if (names.empty() || names.front() != prefix) {
      continue;
    }
    const std::vector<std::string_view> values = words(next_line());
    if (values.size() != names.size() || values.front() != prefix) {
      return std::nullopt;
    }
    for (std::size_t i = 1; i < names.size(); ++i) {
      if (names[i] != name) {
        continue;
      }
      std::uint64_t v = 0;
      const std::string_view s = values[i];
      const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec != std::errc() || ptr != s.data() + s.size()) {
        return std::nullopt;
      }
      return v;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

namespace {

// In a namespace of its own (no other socket on the port): [::]:P IPV6_V6ONLY without options,
// then 0.0.0.0:P with SO_REUSEPORT, which goes to the head of the chain, then [::]:P dual-stack
// with SO_REUSEPORT, which contends with both. The head one shares with it, the other does not:
// the bind succeeds only where the first contender decides. Wildcards only: lo may stay down.
std::optional<bool> probe_udp_first_contender_decides() {
  constexpr std::uint16_t kProbePort = 40000;
  const auto udp = [](int family, bool reuseport, std::optional<bool> v6only) {
    Fd fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    const int on = 1;
    if (fd && reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
      return Fd();
    }
    const int v6 = v6only.value_or(false) ? 1 : 0;
    if (fd && v6only && ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6) != 0) {
      return Fd();
    }
    return fd;
  };
  const auto bind_any = [](const Fd& fd, int family) {
    if (family == AF_INET) {
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(kProbePort);
      // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
      return ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0 ? 0 : errno;
    }
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(kProbePort);
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
    return ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0 ? 0 : errno;
  };
  std::optional<bool> result;
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      return;  // the thread's namespace only; it ends with the thread
    }
    const Fd plain = udp(AF_INET6, false, true);
    const Fd shared = udp(AF_INET, true, std::nullopt);
    const Fd probe = udp(AF_INET6, true, false);
    if (!plain || !shared || !probe || bind_any(plain, AF_INET6) != 0 ||
        bind_any(shared, AF_INET) != 0) {
      return;
    }
    const int err = bind_any(probe, AF_INET6);
    if (err == 0 || err == EADDRINUSE) {
      result = err == 0;
    }
  }).join();
  return result;
}

}  // namespace

std::optional<bool> udp_first_contender_decides() {
  static const std::optional<bool> rule = probe_udp_first_contender_decides();
  return rule;
}

NetnsPortConfig read_netns_port_config(std::vector<std::string>* problems) {
  std::map<std::string, std::string> texts;
  // /proc/sys/net shows the netns of the thread that opens the file.
  for (const auto& key : port_config_sysctl_keys()) {
    if (auto text = read_small_file(proc_path(key))) {
      texts.emplace(key, std::move(*text));
    }
  }
  NetnsPortConfig config = port_config_from_sysctls(texts, problems);
  config.local_addresses = read_local_addresses(problems);
  config.udp_first_contender_decides = udp_first_contender_decides();
  if (!config.udp_first_contender_decides) {
    problems->push_back(
        "cannot probe the kernel's UDP bind rule in a private network namespace; a UDP "
        "conflict that depends on it is left undetermined");
  }
  if (const auto netstat = read_small_file(kNetstatPath)) {
    config.tcp_time_wait_overflow =
        parse_netstat_counter(*netstat, "TcpExt", "TCPTimeWaitOverflow");
    config.listen_overflows = parse_netstat_counter(*netstat, "TcpExt", "ListenOverflows");
    config.listen_drops = parse_netstat_counter(*netstat, "TcpExt", "ListenDrops");
  }
  if (!config.tcp_time_wait_overflow) {
    problems->push_back(std::string("TcpExt TCPTimeWaitOverflow is not readable from ") +
                        kNetstatPath + "; refused TIME_WAITs are counted from the limit only");
  }
  return config;
}

}  // namespace portlens
