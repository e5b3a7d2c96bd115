#include "tests/support/loopback_http.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <functional>
#include <stdexcept>
#include <string_view>

namespace portlens::testing {
namespace {

// Calls fn(value) for every series `name` (not a longer name sharing the prefix) that carries
// all of `labels`; stops early when fn returns false.
void for_each_series(const std::string& exposition, const std::string& name, const Labels& labels,
                     const std::function<bool(double)>& fn) {
  std::size_t start = 0;
  while (start < exposition.size()) {
    std::size_t end = exposition.find('\n', start);
    if (end == std::string::npos) {
      end = exposition.size();
    }
    const std::string_view line(exposition.data() + start, end - start);
    start = end + 1;
    if (line.empty() || line[0] == '#' || !line.starts_with(name)) {
      continue;
    }
    const std::size_t after = name.size();
    if (after < line.size() && line[after] != '{' && line[after] != ' ') {
      continue;
    }
    bool all = true;
    for (const auto& [k, v] : labels) {
      all = all && line.find(k + "=\"" + v + "\"") != std::string_view::npos;
    }
    if (all && !fn(std::stod(std::string(line.substr(line.rfind(' ') + 1))))) {
      return;
    }
  }
}

}  // namespace

std::uint16_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sin;
  if (bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len) != 0) {
    close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  close(fd);
  return ntohs(sin.sin_port);
}

std::string http_get(std::uint16_t port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  std::array<char, 65536> buf{};
  for (;;) {
    const ssize_t n = read(fd, buf.data(), buf.size());
    if (n <= 0) {
      break;
    }
    response.append(buf.data(), static_cast<std::size_t>(n));
  }
  close(fd);
  const auto body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

std::optional<double> metric(const std::string& exposition, const std::string& name,
                             const Labels& labels) {
  std::optional<double> first;
  for_each_series(exposition, name, labels, [&first](double v) {
    first = v;
    return false;
  });
  return first;
}

std::optional<double> metric_sum(const std::string& exposition, const std::string& name,
                                 const Labels& labels) {
  std::optional<double> sum;
  for_each_series(exposition, name, labels, [&sum](double v) {
    sum = sum.value_or(0) + v;
    return true;
  });
  return sum;
}

}  // namespace portlens::testing
