// What the HTTP server tests share: a raw HTTP/1.1 client over loopback (so a test controls every
// byte and every connection), external commands (curl, openssl, htpasswd), a temporary
// directory, and a throwaway PKI made with openssl.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace portlens::http::testing {

struct Reply {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first header of that name (case-insensitive), or nullopt.
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
};

// Where to connect for a Server::bound() entry: "[::]:P" and "0.0.0.0:P" become loopback.
std::string loopback_of(const std::string& bound);

// One TCP connection to "127.0.0.1:P" or "[::1]:P". Every wait is bounded; a timeout or a
// broken reply throws std::runtime_error.
class Client {
 public:
  explicit Client(const std::string& host_port);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void send(std::string_view bytes) const;
  // Reads one reply: headers, then Content-Length bytes of body (none after a HEAD).
  Reply read_reply(bool head = false, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // A whole request: "GET path HTTP/1.1" with Host and the extra header lines given.
  Reply request(std::string_view method, std::string_view path,
                const std::vector<std::string>& extra_headers = {});
  // Whether the server closes the connection (EOF or reset) within timeout, reading and
  // dropping anything it sends first.
  bool closed_within(std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
  std::string buffered_;
};

// GET over a fresh connection.
Reply get(const std::string& host_port, std::string_view path,
          const std::vector<std::string>& extra_headers = {});

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
CommandResult run(const std::string& command);
bool have_command(const std::string& name);
std::string shell_quote(std::string_view text);

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  // Writes text to name in the directory; returns the full path.
  [[nodiscard]] std::string write(const std::string& name, std::string_view text) const;

 private:
  std::filesystem::path path_;
};

// A CA, a server certificate for 127.0.0.1, ::1 and localhost, a client certificate from the
// same CA, and a client certificate from another CA, each as name.pem with name.key.
struct TestPki {
  explicit TestPki(std::filesystem::path directory);
  std::string file(const std::string& name) const { return (dir / name).string(); }
  std::filesystem::path dir;
};

// A bcrypt hash of password made by htpasswd (apache2-utils), not by the code under test.
std::string bcrypt_hash(const std::string& password);

// gunzip, for checking responses.
std::string gunzip(std::string_view data);

}  // namespace portlens::http::testing
