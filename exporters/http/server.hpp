// A small HTTP/1.1 server for /metrics and friends, on libmicrohttpd: one epoll event loop per
// listen address, so slow and idle clients cost a socket each and never a thread; handlers run
// on a few threads of their own, so a slow handler never stalls the event loop. TLS, client
// certificates, basic auth and extra headers come from an exporter-toolkit web config file.
// Knows nothing of the agent: routes are plain functions from a request to a response.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace portlens::http {

struct Request {
  std::string method;  // "GET" or "HEAD": no other method reaches a handler
  std::string path;    // percent-decoded, without the query
  std::string query;   // as sent, after '?', not decoded
  std::vector<std::pair<std::string, std::string>> headers;

  // The first header of that name (case-insensitive), or nullopt.
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Called on a handler thread, possibly on several at once. An exception becomes a 500.
using Handler = std::function<Response(const Request&)>;

struct ServerOptions {
  // ":PORT", "IPv4:PORT", "[IPv6]:PORT" (see parse_listen_address); at least one.
  std::vector<std::string> listen_addresses;
  // node_exporter's --web.max-requests: requests admitted at once, running or waiting for a
  // handler thread; more get 503 at once. 0: no limit. Unknown paths and other methods are
  // answered without a handler thread and do not count, unless basic auth is on: then the
  // password check runs on a handler thread first, for every request.
  unsigned max_requests = 40;
  // A connection must deliver each request's headers within this time of connecting or of the
  // previous response, and may stay silent no longer than this otherwise. 0: no limit.
  std::chrono::seconds connection_timeout{30};
  // Open connections per listen address; more wait in the kernel's listen backlog until one
  // closes.
  std::size_t connection_limit = 256;
  // Threads that run handlers, gzip and basic auth's bcrypt; at least 1.
  unsigned threads = 2;
  // exporter-toolkit web config (TLS, basic auth, headers); see web_config.hpp.
  std::optional<std::string> web_config_file;
  // Where libmicrohttpd's messages and handler exceptions go, from any thread; must not throw.
  // Unset: nowhere.
  std::function<void(std::string_view)> log;
};

class Server {
 public:
  // Binds every address and starts serving; routes map exact paths to handlers, and every route
  // answers GET and HEAD. Throws std::invalid_argument for a bad listen address or web config,
  // std::runtime_error when an address cannot be served ("cannot listen on ...: ...").
  Server(ServerOptions options, std::map<std::string, Handler, std::less<>> routes);
  // Stops accepting, closes every connection and joins every thread within about 100 ms, once
  // the handler calls in progress have returned.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  Server(Server&&) = delete;
  Server& operator=(Server&&) = delete;

  // What each listen address actually bound, in the order given: "127.0.0.1:43121", "[::]:80".
  [[nodiscard]] std::vector<std::string> bound() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace portlens::http
