// The agent's local API: a root-only Unix stream socket that `portlens why` asks for the recent
// diagnosed failures and the current holders of a port. One JSON object per line each way:
//   {"op":"failures","port":N?,"pid":N?,"netns":N?,"since_ms":N?,"limit":N?}
//   {"op":"holders","port":N,"proto":"tcp"|"udp","netns":N?}
//   {"op":"top","netns":N?,"limit":N?}   (the frame `portlens top` draws, agent/cmd/top.hpp)
//   {"op":"ping"}
// The server checks the form of each request and leaves the answer to the agent's handler.
// Every problem with a request is answered with {"error":"..."} and the connection stays open.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace portlens {

inline constexpr std::string_view kDefaultApiSocket = "/run/portlens/api.sock";

// Answers one well-formed request (checked by check_api_request). Runs on the API's own thread;
// an exception it throws becomes {"error": what()}.
using ApiHandler = std::function<nlohmann::json(const nlohmann::json& request)>;

struct LocalApiLimits {
  std::size_t max_clients = 16;                   // connections beyond are answered and closed
  std::chrono::milliseconds idle_timeout{10000};  // a connection silent this long is closed
  std::size_t max_request_bytes = std::size_t{64} << 10;  // per line, newline excluded
};

// Why request is not one the API takes ("unknown op \"x\" ..."), or nullopt when it is. Unknown
// fields are ignored, so newer clients can ask older agents.
std::optional<std::string> check_api_request(const nlohmann::json& request);

// One request line (its newline and a trailing '\r' taken off) to its answer: the handler's, or
// {"error":"..."} for malformed JSON, a request check_api_request refuses, or a handler that
// throws. Never throws.
nlohmann::json answer_api_line(std::string_view line, const ApiHandler& handler);

// What the server makes of the bytes one connection sends, without the socket (so that tests and
// the fuzzer in tests/fuzz drive it directly): lines split at '\n', a trailing '\r' and blank
// lines ignored, each answered by answer_api_line into out() as one line of JSON. A line longer
// than max_request_bytes is answered with one error as soon as the cap is passed, and the rest of
// it is dropped as it arrives. Lines wait while out() holds out_high_water bytes or more, so a
// client that sends without reading cannot make its answers grow without bound.
class ApiRequestStream {
 public:
  ApiRequestStream(const ApiHandler& handler, std::size_t max_request_bytes,
                   std::size_t out_high_water);

  void receive(std::string_view bytes);  // buffers them; answer() answers
  void finish();  // the client shut its side: a last line without its newline is answered too
  void answer();  // answers the complete lines, while out() stays under the high water
  // The answers not yet sent; the server erases what it sent.
  [[nodiscard]] std::string& out() { return out_; }
  [[nodiscard]] const std::string& out() const { return out_; }
  [[nodiscard]] std::size_t buffered() const { return in_.size(); }

 private:
  [[nodiscard]] nlohmann::json too_large() const;

  const ApiHandler* handler_;  // a pointer, so that a connection holding a stream can move
  std::size_t max_request_bytes_;
  std::size_t out_high_water_;
  std::string in_;
  std::string out_;
  bool discarding_ = false;  // dropping the rest of an oversized line
};

// Only root (and the agent's own user) may ask: the socket file is 0600, and a peer that still
// gets through (a loosened mode) is checked by SO_PEERCRED and answered {"error":"root only"}.
class LocalApiServer {
 public:
  // Binds the socket and starts serving on a thread of its own. Creates a missing parent
  // directory with mode 0700, gives the socket mode 0600 before it listens, and replaces a stale
  // socket file. Throws Error when another agent serves the path, or the path cannot be served.
  LocalApiServer(std::string socket_path, ApiHandler handler, LocalApiLimits limits = {});
  ~LocalApiServer();
  LocalApiServer(const LocalApiServer&) = delete;
  LocalApiServer& operator=(const LocalApiServer&) = delete;
  LocalApiServer(LocalApiServer&&) = delete;
  LocalApiServer& operator=(LocalApiServer&&) = delete;

  // Closes every connection and the socket, and removes the socket file (if it is still ours);
  // returns within about 100 ms, or once a handler call in progress returns. Idempotent; the
  // destructor calls it.
  void stop();

  [[nodiscard]] const std::string& socket_path() const;

 private:
  struct Server;
  std::unique_ptr<Server> server_;
};

// Client side, for `portlens why`: sends request, waits for the one-line answer. nullopt when no
// agent serves socket_path (no socket file, or a stale one). Throws Error for anything else: no
// permission ("run as root"), no answer within timeout, an answer that is not JSON.
std::optional<nlohmann::json> api_request(const std::string& socket_path,
                                          const nlohmann::json& request,
                                          std::chrono::milliseconds timeout);

}  // namespace portlens
