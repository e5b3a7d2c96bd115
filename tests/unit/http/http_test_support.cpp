#include "http_test_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <utility>

namespace portlens::http::testing {
namespace {

using Clock = std::chrono::steady_clock;

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<std::int64_t>(left.count(), 0));
}

}  // namespace

std::optional<std::string> Reply::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return std::nullopt;
}

std::string loopback_of(const std::string& bound) {
  const auto colon = bound.rfind(':');
  const auto host = bound.substr(0, colon);
  const auto port = bound.substr(colon);
  if (host == "[::]") return "[::1]" + port;
  if (host == "0.0.0.0") return "127.0.0.1" + port;
  return bound;
}

Client::Client(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  auto host = host_port.substr(0, colon);
  const auto port = static_cast<std::uint16_t>(std::stoi(host_port.substr(colon + 1)));
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (host.front() == '[') {
    host = host.substr(1, host.size() - 2);
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&storage);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    inet_pton(AF_INET6, host.c_str(), &sin6->sin6_addr);
    length = sizeof(sockaddr_in6);
  } else {
    auto* sin = reinterpret_cast<sockaddr_in*>(&storage);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    inet_pton(AF_INET, host.c_str(), &sin->sin_addr);
    length = sizeof(sockaddr_in);
  }
  fd_ = ::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    const std::string reason = std::strerror(errno);
    if (fd_ >= 0) ::close(fd_);
    throw std::runtime_error("connect " + host_port + ": " + reason);
  }
}

Client::~Client() { ::close(fd_); }

void Client::send(std::string_view bytes) const {
  while (!bytes.empty()) {
    const auto sent = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent < 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
    bytes.remove_prefix(static_cast<std::size_t>(sent));
  }
}

Reply Client::read_reply(bool head, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const auto fill = [&] {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) != 1) throw std::runtime_error("reply timed out");
    std::array<char, 16384> chunk{};
    const auto got = ::recv(fd_, chunk.data(), chunk.size(), 0);
    if (got <= 0) throw std::runtime_error("connection closed before the reply was complete");
    buffered_.append(chunk.data(), static_cast<std::size_t>(got));
  };
  std::size_t end = 0;
  while ((end = buffered_.find("\r\n\r\n")) == std::string::npos) fill();
  const auto head_text = buffered_.substr(0, end);
  buffered_.erase(0, end + 4);

  Reply reply;
  std::size_t line_end = head_text.find("\r\n");
  const auto status_line = head_text.substr(0, line_end);
  if (status_line.rfind("HTTP/1.", 0) != 0) throw std::runtime_error("bad status line");
  reply.status = std::stoi(status_line.substr(9, 3));
  while (line_end != std::string::npos) {
    const auto start = line_end + 2;
    line_end = head_text.find("\r\n", start);
    const auto line = head_text.substr(
        start, line_end == std::string::npos ? std::string::npos : line_end - start);
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    reply.headers.emplace_back(line.substr(0, colon), value);
  }
  const auto length = reply.header("Content-Length");
  const std::size_t body_size = head || !length ? 0 : std::stoul(*length);
  while (buffered_.size() < body_size) fill();
  reply.body = buffered_.substr(0, body_size);
  buffered_.erase(0, body_size);
  return reply;
}

Reply Client::request(std::string_view method, std::string_view path,
                      const std::vector<std::string>& extra_headers) {
  std::string text = std::string(method) + " " + std::string(path) + " HTTP/1.1\r\n";
  text += "Host: test\r\n";
  for (const auto& header : extra_headers) text += header + "\r\n";
  text += "\r\n";
  send(text);
  return read_reply(method == "HEAD");
}

bool Client::closed_within(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) != 1) return false;
    std::array<char, 4096> chunk{};
    const auto got = ::recv(fd_, chunk.data(), chunk.size(), 0);
    if (got <= 0) return true;
  }
}

Reply get(const std::string& host_port, std::string_view path,
          const std::vector<std::string>& extra_headers) {
  Client client(host_port);
  return client.request("GET", path, extra_headers);
}

CommandResult run(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> chunk{};
  std::size_t got = 0;
  while ((got = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0) {
    result.output.append(chunk.data(), got);
  }
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

bool have_command(const std::string& name) {
  return run("command -v " + shell_quote(name)).exit_code == 0;
}

std::string shell_quote(std::string_view text) {
  std::string quoted = "'";
  for (const char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

TempDir::TempDir() {
  std::random_device random;
  path_ = std::filesystem::temp_directory_path() /
          ("portlens-http-" + std::to_string(::getpid()) + "-" + std::to_string(random()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string TempDir::write(const std::string& name, std::string_view text) const {
  const auto file = path_ / name;
  std::ofstream(file, std::ios::binary) << text;
  return file.string();
}

TestPki::TestPki(std::filesystem::path directory) : dir(std::move(directory)) {
  const auto in_dir = [this](const std::string& name) { return shell_quote(file(name)); };
  const auto must = [](const std::string& command) {
    const auto result = run(command);
    if (result.exit_code != 0) {
      throw std::runtime_error("openssl failed: " + command + "\n" + result.output);
    }
  };
  // P-256 keys: quick to make, and GnuTLS, OpenSSL and curl all take them.
  const std::string new_key = "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes ";
  const auto make_ca = [&](const std::string& name) {
    must(new_key + "-x509 -days 2 -subj /CN=" + name + " -keyout " + in_dir(name + ".key") +
         " -out " + in_dir(name + ".pem"));
  };
  const auto make_leaf = [&](const std::string& name, const std::string& ca,
                             const std::string& extensions) {
    std::ofstream(dir / (name + ".ext")) << extensions << "\n";
    must(new_key + "-subj /CN=" + name + " -keyout " + in_dir(name + ".key") + " -out " +
         in_dir(name + ".csr"));
    must("openssl x509 -req -days 2 -in " + in_dir(name + ".csr") + " -CA " + in_dir(ca + ".pem") +
         " -CAkey " + in_dir(ca + ".key") + " -CAcreateserial -extfile " + in_dir(name + ".ext") +
         " -out " + in_dir(name + ".pem"));
  };
  make_ca("ca");
  make_ca("other-ca");
  make_leaf("server", "ca",
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth");
  make_leaf("client", "ca", "extendedKeyUsage=clientAuth");
  make_leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth");
}

std::string bcrypt_hash(const std::string& password) {
  // Cost 5: the lowest htpasswd takes is 4; a test need not be slow to be real bcrypt.
  const auto result = run("htpasswd -nbBC 5 user " + shell_quote(password));
  const auto colon = result.output.find(':');
  const auto end = result.output.find('\n');
  if (result.exit_code != 0 || colon == std::string::npos) {
    throw std::runtime_error("htpasswd failed: " + result.output);
  }
  return result.output.substr(colon + 1, end - colon - 1);
}

std::string gunzip(std::string_view data) {
  z_stream stream{};
  // 15 + 16: a gzip wrapper only, so a bare zlib stream would not pass for gzip.
  if (inflateInit2(&stream, 15 + 16) != Z_OK) throw std::runtime_error("inflateInit2");
  stream.next_in = reinterpret_cast<const Bytef*>(data.data());
  stream.avail_in = static_cast<uInt>(data.size());
  std::string out;
  int status = Z_OK;
  while (status == Z_OK) {
    std::array<char, 65536> chunk{};
    stream.next_out = reinterpret_cast<Bytef*>(chunk.data());
    stream.avail_out = static_cast<uInt>(chunk.size());
    status = inflate(&stream, Z_NO_FLUSH);
    out.append(chunk.data(), chunk.size() - stream.avail_out);
  }
  inflateEnd(&stream);
  if (status != Z_STREAM_END || stream.avail_in != 0)
    throw std::runtime_error("not one gzip member");
  return out;
}

}  // namespace portlens::http::testing
