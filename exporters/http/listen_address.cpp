#include "exporters/http/listen_address.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "exporters/http/one_line.hpp"

namespace portlens::http {
namespace {

constexpr std::string_view kAcceptedForms =
    R"(expected ":PORT", "IPv4:PORT", "[IPv6]:PORT" or "[IPv6%ZONE]:PORT")";

[[noreturn]] void refuse(std::string_view text, std::string_view problem) {
  throw std::invalid_argument(one_line("invalid listen address \"" + std::string(text) + "\": " +
                                       std::string(problem) + "; " + std::string(kAcceptedForms)));
}

std::uint16_t parse_port(std::string_view text, std::string_view port) {
  if (port.empty()) refuse(text, "the port after ':' is missing");
  unsigned value = 0;
  const auto* end = port.data() + port.size();
  const auto [ptr, ec] = std::from_chars(port.data(), end, value);
  if (ec != std::errc{} || ptr != end || port.size() > 5 || value > 65535) {
    refuse(text, "\"" + std::string(port) + "\" is not a port (0-65535)");
  }
  return static_cast<std::uint16_t>(value);
}

ListenAddress parse_bracketed(std::string_view text) {
  const auto close = text.find(']');
  if (close == std::string_view::npos) refuse(text, "'[' without a closing ']'");
  const auto rest = text.substr(close + 1);
  if (rest.empty() || rest.front() != ':') refuse(text, "the \":PORT\" after ']' is missing");
  ListenAddress address;
  address.family = ListenAddress::Family::kIpv6;
  auto inside = text.substr(1, close - 1);
  if (const auto percent = inside.find('%'); percent != std::string_view::npos) {
    address.zone = std::string(inside.substr(percent + 1));
    inside = inside.substr(0, percent);
    if (address.zone.empty()) refuse(text, "the interface after '%' is missing");
  }
  address.host = std::string(inside);
  in6_addr parsed{};
  if (inet_pton(AF_INET6, address.host.c_str(), &parsed) != 1) {
    refuse(text, "\"" + address.host + "\" is not an IPv6 address");
  }
  address.port = parse_port(text, rest.substr(1));
  return address;
}

// Owns a socket fd while it is being set up, so every early return closes it.
class OwnedFd {
 public:
  explicit OwnedFd(int fd) : fd_(fd) {}
  ~OwnedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

struct Endpoint {
  sockaddr_storage storage{};
  socklen_t length = 0;
  bool v6only = false;
};

Endpoint ipv4_endpoint(const std::string& host, std::uint16_t port) {
  Endpoint endpoint;
  auto* sin = reinterpret_cast<sockaddr_in*>(&endpoint.storage);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  if (!host.empty()) inet_pton(AF_INET, host.c_str(), &sin->sin_addr);
  endpoint.length = sizeof(sockaddr_in);
  return endpoint;
}

// The zone was only checked for form by the parser: the interface must exist now.
Endpoint ipv6_endpoint(const ListenAddress& address) {
  Endpoint endpoint;
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&endpoint.storage);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(address.port);
  sin6->sin6_addr = in6addr_any;
  if (!address.host.empty()) inet_pton(AF_INET6, address.host.c_str(), &sin6->sin6_addr);
  if (!address.zone.empty()) {
    sin6->sin6_scope_id = if_nametoindex(address.zone.c_str());
    if (sin6->sin6_scope_id == 0) {
      throw std::runtime_error("cannot listen on " + address.to_string() + ": no interface named " +
                               address.zone);
    }
  }
  endpoint.length = sizeof(sockaddr_in6);
  // An explicit IPv6 address serves IPv6 only, so "0.0.0.0:P" and "[::]:P" can both be given;
  // only ":P" asks for both families on one socket.
  endpoint.v6only = address.family == ListenAddress::Family::kIpv6;
  return endpoint;
}

// A listening socket, or -1 with error set to the errno of the call that failed (read before
// the half-made socket is closed, which may change errno).
int open_listening(const Endpoint& endpoint, int& error) {
  OwnedFd fd(::socket(endpoint.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const auto failed = [&error] {
    error = errno;
    return -1;
  };
  if (fd.get() < 0) return failed();
  // A restarted agent must not wait out its old connections' TIME_WAIT to bind again.
  const int on = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0) return failed();
  if (endpoint.storage.ss_family == AF_INET6) {
    const int v6only = endpoint.v6only ? 1 : 0;
    if (::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) != 0) {
      return failed();
    }
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&endpoint.storage), endpoint.length) !=
      0) {
    return failed();
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) return failed();
  return fd.release();
}

std::string describe_bound(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return "?";
  char text[INET6_ADDRSTRLEN] = {};
  if (storage.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    return std::string(text) + ":" + std::to_string(ntohs(sin->sin_port));
  }
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&storage);
  inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
  std::string host = text;
  char name[IF_NAMESIZE] = {};
  if (sin6->sin6_scope_id != 0 && if_indextoname(sin6->sin6_scope_id, name) != nullptr) {
    host += std::string("%") + name;
  }
  return "[" + host + "]:" + std::to_string(ntohs(sin6->sin6_port));
}

}  // namespace

std::string ListenAddress::to_string() const {
  auto port_text = ":" + std::to_string(port);
  switch (family) {
    case Family::kDualStack:
      return port_text;
    case Family::kIpv4:
      return host + port_text;
    case Family::kIpv6:
      return "[" + host + (zone.empty() ? "" : "%" + zone) + "]" + port_text;
  }
  return port_text;
}

ListenAddress parse_listen_address(std::string_view text) {
  if (text.empty()) refuse(text, "it is empty");
  if (text.find(',') != std::string_view::npos) {
    // The forms would not help (each item may well be one): say how to give several.
    std::string flags;
    for (std::string_view rest = text; !rest.empty();) {
      const auto comma = rest.find(',');
      const auto item = rest.substr(0, comma);
      if (!item.empty()) {
        flags +=
            (flags.empty() ? "" : " ") + std::string("--web.listen-address ") + std::string(item);
      }
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
    throw std::invalid_argument(
        one_line("invalid listen address \"" + std::string(text) +
                 "\": a list is not an address; give one address per flag: " + flags));
  }
  if (std::any_of(text.begin(), text.end(),
                  [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; })) {
    refuse(text, "it contains white space");
  }
  if (text.front() == '[') return parse_bracketed(text);

  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) refuse(text, "the \":PORT\" is missing");
  if (text.find(':') != colon) refuse(text, "an IPv6 address needs brackets, as in [::1]:10130");
  ListenAddress address;
  address.port = parse_port(text, text.substr(colon + 1));
  address.host = std::string(text.substr(0, colon));
  if (address.host.empty()) return address;

  in_addr parsed{};
  if (inet_pton(AF_INET, address.host.c_str(), &parsed) != 1) {
    refuse(text, "\"" + address.host + "\" is not an IP address (host names are not accepted)");
  }
  address.family = ListenAddress::Family::kIpv4;
  return address;
}

ListenSocket::ListenSocket(const ListenAddress& address) {
  int error = 0;
  if (address.family == ListenAddress::Family::kIpv4) {
    fd_ = open_listening(ipv4_endpoint(address.host, address.port), error);
  } else {
    fd_ = open_listening(ipv6_endpoint(address), error);
    // A kernel without IPv6 (ipv6.disable=1) refuses the socket; one with IPv6 switched off on
    // every interface refuses the bind. Either way ":P" still means "every address".
    if (fd_ < 0 && address.family == ListenAddress::Family::kDualStack &&
        (error == EAFNOSUPPORT || error == EADDRNOTAVAIL)) {
      fd_ = open_listening(ipv4_endpoint("", address.port), error);
    }
  }
  if (fd_ < 0) {
    throw std::runtime_error("cannot listen on " + address.to_string() + ": " +
                             std::strerror(error));
  }
  bound_ = describe_bound(fd_);
}

ListenSocket::~ListenSocket() {
  if (fd_ >= 0) ::close(fd_);
}

ListenSocket::ListenSocket(ListenSocket&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), bound_(std::move(other.bound_)) {}

ListenSocket& ListenSocket::operator=(ListenSocket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    bound_ = std::move(other.bound_);
  }
  return *this;
}

}  // namespace portlens::http
