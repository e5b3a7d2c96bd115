// Where the HTTP server listens: the --web.listen-address forms node_exporter users write, parsed
// strictly (IP literals only, so the agent never depends on a resolver at start), and the
// listening socket itself, bound before the server starts so a failure can be named.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace portlens::http {

struct ListenAddress {
  enum class Family {
    kDualStack,  // ":PORT": [::] with IPV6_V6ONLY off, 0.0.0.0 when the host has no IPv6
    kIpv4,       // "A.B.C.D:PORT"
    kIpv6,       // "[ADDR]:PORT" or "[ADDR%ZONE]:PORT": IPv6 only, so "0.0.0.0:P" may sit beside
  };
  Family family = Family::kDualStack;
  std::string host;  // the address as written, without brackets or zone; "" for kDualStack
  std::string zone;  // the interface after '%' in a link-local address, or ""
  std::uint16_t port = 0;

  // Back in the accepted form: ":10130", "127.0.0.1:10130", "[fe80::1%eth0]:10130".
  [[nodiscard]] std::string to_string() const;
};

// Throws std::invalid_argument with one line naming text and the forms accepted.
ListenAddress parse_listen_address(std::string_view text);

// A bound, listening, non-blocking TCP socket, closed on destruction.
class ListenSocket {
 public:
  // Throws std::runtime_error "cannot listen on ADDRESS: REASON".
  explicit ListenSocket(const ListenAddress& address);
  ~ListenSocket();
  ListenSocket(ListenSocket&& other) noexcept;
  ListenSocket& operator=(ListenSocket&& other) noexcept;
  ListenSocket(const ListenSocket&) = delete;
  ListenSocket& operator=(const ListenSocket&) = delete;

  [[nodiscard]] int fd() const { return fd_; }
  // The address actually bound, with the port the kernel chose for port 0: "[::1]:43121", and
  // "0.0.0.0:P" when ":P" fell back to IPv4.
  [[nodiscard]] const std::string& bound() const { return bound_; }

 private:
  int fd_ = -1;
  std::string bound_;
};

}  // namespace portlens::http
