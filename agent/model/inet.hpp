// The vocabulary of Internet sockets that every part of portlens speaks: addresses, endpoints,
// protocols and TCP states. Plain value types, no I/O.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace portlens {

enum class Family : std::uint8_t { kIpv4, kIpv6 };

// An IPv4 or IPv6 address. IPv4 addresses are stored in the first four bytes, network order.
class IpAddress {
 public:
  IpAddress() = default;
  static IpAddress v4(std::array<std::uint8_t, 4> bytes);
  static IpAddress v4(std::uint32_t network_order);
  static IpAddress v6(const std::array<std::uint8_t, 16>& bytes);
  static IpAddress any_v4() { return v4(std::array<std::uint8_t, 4>{}); }
  static IpAddress any_v6() { return v6(std::array<std::uint8_t, 16>{}); }

  // Parses "127.0.0.1", "::1", "::ffff:10.0.0.1" (no brackets, no port).
  static std::optional<IpAddress> parse(std::string_view text);

  [[nodiscard]] Family family() const { return family_; }
  [[nodiscard]] const std::array<std::uint8_t, 16>& bytes() const { return bytes_; }
  [[nodiscard]] bool is_v4() const { return family_ == Family::kIpv4; }
  [[nodiscard]] bool is_v6() const { return family_ == Family::kIpv6; }
  // 0.0.0.0 or ::
  [[nodiscard]] bool is_any() const;
  // ::ffff:a.b.c.d
  [[nodiscard]] bool is_v4_mapped() const;
  // 127.0.0.0/8, ::1, or ::ffff:127.x.y.z
  [[nodiscard]] bool is_loopback() const;
  // For a v4-mapped IPv6 address, the IPv4 address it maps; otherwise the address itself.
  // The kernel treats ::ffff:X exactly like X when binding (docs/kernel-rules.md section 1).
  [[nodiscard]] IpAddress unmapped() const;

  [[nodiscard]] std::string to_string() const;

  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  auto operator<=>(const IpAddress&) const = default;
  bool operator==(const IpAddress&) const = default;

 private:
  Family family_ = Family::kIpv4;
  std::array<std::uint8_t, 16> bytes_{};
};

struct Endpoint {
  IpAddress addr;
  std::uint16_t port = 0;  // host order

  // "127.0.0.1:8080", "[::1]:8080"
  [[nodiscard]] std::string to_string() const;
  // Accepts "127.0.0.1:80", "[::1]:80", "[::]:80", "*:80" (0.0.0.0), ":80" (0.0.0.0).
  static std::optional<Endpoint> parse(std::string_view text);

  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  auto operator<=>(const Endpoint&) const = default;
  bool operator==(const Endpoint&) const = default;
};

// Port-bearing protocols portlens follows. Each has its own port table in the kernel
// (docs/kernel-rules.md section 4); MPTCP takes its ports from TCP's table.
enum class Proto : std::uint8_t { kTcp, kUdp, kUdpLite, kMptcp, kSctp };

std::string_view to_string(Proto proto);
std::optional<Proto> proto_from_ipproto(int ipproto);
std::optional<Proto> parse_proto(std::string_view text);

// The kernel's TCP states (include/net/tcp_states.h), numbered as the kernel numbers them.
enum class TcpState : std::uint8_t {
  kEstablished = 1,
  kSynSent = 2,
  kSynRecv = 3,
  kFinWait1 = 4,
  kFinWait2 = 5,
  kTimeWait = 6,
  kClose = 7,
  kCloseWait = 8,
  kLastAck = 9,
  kListen = 10,
  kClosing = 11,
  kNewSynRecv = 12,
  kBoundInactive = 13,  // 6.8+: a bound, not listening socket as seen by iterators
};

// "ESTABLISHED", "TIME_WAIT", ...; "UNKNOWN(n)" for values outside the kernel's set.
std::string state_name(int state);
std::optional<TcpState> tcp_state_from_int(int state);

}  // namespace portlens
