#include "agent/model/inet.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace portlens {

IpAddress IpAddress::v4(std::array<std::uint8_t, 4> bytes) {
  IpAddress a;
  a.family_ = Family::kIpv4;
  std::copy(bytes.begin(), bytes.end(), a.bytes_.begin());
  return a;
}

IpAddress IpAddress::v4(std::uint32_t network_order) {
  std::array<std::uint8_t, 4> b{};
  std::memcpy(b.data(), &network_order, sizeof network_order);
  return v4(b);
}

IpAddress IpAddress::v6(const std::array<std::uint8_t, 16>& bytes) {
  IpAddress a;
  a.family_ = Family::kIpv6;
  a.bytes_ = bytes;
  return a;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) {
    return std::nullopt;
  }
  const std::string s(text);
  if (s.find(':') == std::string::npos) {
    std::array<std::uint8_t, 4> b{};
    if (inet_pton(AF_INET, s.c_str(), b.data()) != 1) {
      return std::nullopt;
    }
    return v4(b);
  }
  std::array<std::uint8_t, 16> b{};
  if (inet_pton(AF_INET6, s.c_str(), b.data()) != 1) {
    return std::nullopt;
  }
  return v6(b);
}

bool IpAddress::is_any() const {
  const auto n = is_v4() ? 4 : 16;
  return std::all_of(bytes_.begin(), bytes_.begin() + n, [](std::uint8_t b) { return b == 0; });
}

bool IpAddress::is_v4_mapped() const {
  if (!is_v6()) {
    return false;
  }
  for (int i = 0; i < 10; ++i) {
    if (bytes_[static_cast<std::size_t>(i)] != 0) {
      return false;
    }
  }
  return bytes_[10] == 0xff && bytes_[11] == 0xff;
}

bool IpAddress::is_loopback() const {
  const IpAddress u = unmapped();
  if (u.is_v4()) {
    return u.bytes_[0] == 127;
  }
  for (int i = 0; i < 15; ++i) {
    if (u.bytes_[static_cast<std::size_t>(i)] != 0) {
      return false;
    }
  }
  return u.bytes_[15] == 1;
}

IpAddress IpAddress::unmapped() const {
  if (!is_v4_mapped()) {
    return *this;
  }
  return v4(std::array<std::uint8_t, 4>{bytes_[12], bytes_[13], bytes_[14], bytes_[15]});
}

std::string IpAddress::to_string() const {
  std::array<char, INET6_ADDRSTRLEN> buf{};
  const int af = is_v4() ? AF_INET : AF_INET6;
  if (inet_ntop(af, bytes_.data(), buf.data(), buf.size()) == nullptr) {
    return "?";
  }
  return {buf.data()};
}

std::string Endpoint::to_string() const {
  if (addr.is_v6()) {
    return "[" + addr.to_string() + "]:" + std::to_string(port);
  }
  return addr.to_string() + ":" + std::to_string(port);
}

std::optional<Endpoint> Endpoint::parse(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return std::nullopt;
  }
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto* end = port_text.data() + port_text.size();
  const auto [ptr, ec] = std::from_chars(port_text.data(), end, port);
  if (port_text.empty() || ec != std::errc() || ptr != end || port > 65535) {
    return std::nullopt;
  }
  Endpoint ep;
  ep.port = static_cast<std::uint16_t>(port);
  if (host.empty() || host == "*") {
    ep.addr = IpAddress::any_v4();
    return ep;
  }
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') {
      return std::nullopt;
    }
    host = host.substr(1, host.size() - 2);
    auto a = IpAddress::parse(host);
    if (!a || !a->is_v6()) {
      return std::nullopt;
    }
    ep.addr = *a;
    return ep;
  }
  auto a = IpAddress::parse(host);
  // A bare IPv6 address needs brackets to be told apart from its port.
  if (!a || !a->is_v4()) {
    return std::nullopt;
  }
  ep.addr = *a;
  return ep;
}

std::string_view to_string(Proto proto) {
  switch (proto) {
    case Proto::kTcp:
      return "tcp";
    case Proto::kUdp:
      return "udp";
    case Proto::kUdpLite:
      return "udplite";
    case Proto::kMptcp:
      return "mptcp";
    case Proto::kSctp:
      return "sctp";
  }
  return "?";
}

std::optional<Proto> proto_from_ipproto(int ipproto) {
  switch (ipproto) {
    case IPPROTO_TCP:
      return Proto::kTcp;
    case IPPROTO_UDP:
      return Proto::kUdp;
    case IPPROTO_UDPLITE:
      return Proto::kUdpLite;
    case IPPROTO_MPTCP:
      return Proto::kMptcp;
    case IPPROTO_SCTP:
      return Proto::kSctp;
    default:
      return std::nullopt;
  }
}

std::optional<Proto> parse_proto(std::string_view text) {
  for (const Proto p : {Proto::kTcp, Proto::kUdp, Proto::kUdpLite, Proto::kMptcp, Proto::kSctp}) {
    if (text == to_string(p)) {
      return p;
    }
  }
  return std::nullopt;
}

std::optional<TcpState> tcp_state_from_int(int state) {
  if (state < static_cast<int>(TcpState::kEstablished) ||
      state > static_cast<int>(TcpState::kBoundInactive)) {
    return std::nullopt;
  }
  return static_cast<TcpState>(state);
}

std::string state_name(int state) {
  static constexpr std::array<std::string_view, 14> kNames = {
      "",          "ESTABLISHED", "SYN_SENT",     "SYN_RECV",      "FIN_WAIT1",
      "FIN_WAIT2", "TIME_WAIT",   "CLOSE",        "CLOSE_WAIT",    "LAST_ACK",
      "LISTEN",    "CLOSING",     "NEW_SYN_RECV", "BOUND_INACTIVE"};
  if (!tcp_state_from_int(state)) {
    return "UNKNOWN(" + std::to_string(state) + ")";
  }
  return std::string(kNames[static_cast<std::size_t>(state)]);
}

}  // namespace portlens
