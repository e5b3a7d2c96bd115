#include "exporters/local_api.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "agent/model/error.hpp"
#include "agent/model/fd.hpp"

namespace portlens {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr std::size_t kReadChunk = std::size_t{64} << 10;
// Answers queued for one connection before its further requests wait: a client that pipelines
// requests without reading cannot make the agent hold unbounded memory.
constexpr std::size_t kOutHighWater = std::size_t{4} << 20;
// The client's cap on one answer; the agent's bounded ring never comes near it.
constexpr std::size_t kMaxAnswerBytes = std::size_t{64} << 20;
constexpr std::chrono::milliseconds kAcceptPause{100};
constexpr std::uint64_t kMaxPort = 65535;
constexpr std::uint64_t kMaxPid = 4194304;  // PID_MAX_LIMIT

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    throw Error("the API socket path \"" + path + "\" is empty or longer than " +
                std::to_string(sizeof(addr.sun_path) - 1) + " bytes; use --api.socket PATH");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

int connect_to(int fd, const sockaddr_un& addr) {
  return ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
}

std::string to_line(const json& value) {
  // replace: a comm with invalid UTF-8 in an answer must not cost the answer (dump would throw).
  std::string line = value.dump(-1, ' ', false, json::error_handler_t::replace);
  line.push_back('\n');
  return line;
}

json error_answer(const std::string& message) { return json{{"error", message}}; }

// text in quotes, cut short: an answer does not echo a whole request back.
std::string in_quotes(std::string_view text) {
  constexpr std::size_t kShown = 40;
  return "\"" + std::string(text.substr(0, kShown)) + (text.size() > kShown ? "...\"" : "\"");
}

// nullopt when field is absent (and optional) or an integer in [0, max].
std::optional<std::string> check_integer(const json& request, const char* field, std::uint64_t max,
                                         bool required) {
  const auto it = request.find(field);
  if (it == request.end()) {
    if (required) {
      return "\"" + request.at("op").get<std::string>() + "\" needs \"" + field + "\"";
    }
    return std::nullopt;
  }
  if (!it->is_number_integer() || (!it->is_number_unsigned() && it->get<std::int64_t>() < 0) ||
      it->get<std::uint64_t>() > max) {
    return "\"" + std::string(field) + "\" must be an integer from 0 to " + std::to_string(max);
  }
  return std::nullopt;
}

// ---- server ----

struct Connection {
  Connection(Fd socket, const ApiHandler& handler, const LocalApiLimits& limits,
             Clock::time_point now)
      : fd(std::move(socket)),
        stream(handler, limits.max_request_bytes, kOutHighWater),
        last_active(now) {}

  Fd fd;
  ApiRequestStream stream;
  bool peer_done = false;  // the client shut its side: answer what it asked, then close
  bool closed = false;
  Clock::time_point last_active;
};

// Best effort, for the one-line refusals sent right before closing.
void send_now(int fd, const json& answer) {
  const std::string line = to_line(answer);
  (void)::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

class Loop {
 public:
  Loop(int listener, int wake, const LocalApiLimits& limits, const ApiHandler& handler)
      : listener_(listener), wake_(wake), limits_(limits), handler_(handler) {}

  void run() {
    std::vector<char> buf(kReadChunk);
    std::vector<pollfd> fds;
    for (;;) {
      fds.clear();
      fds.push_back({wake_, POLLIN, 0});
      // While accepting is paused, the listener stays in the set with no events to wait for.
      fds.push_back({listener_, Clock::now() < accept_paused_until_ ? short{0} : short{POLLIN}, 0});
      for (const Connection& c : conns_) {
        short events = 0;
        if (!c.stream.out().empty()) {
          events |= POLLOUT;
        } else if (!c.peer_done) {
          events |= POLLIN;
        }
        fds.push_back({c.fd.get(), events, 0});
      }
      if (::poll(fds.data(), fds.size(), poll_timeout_ms()) < 0) {
        if (errno == EINTR || errno == ENOMEM) {
          continue;
        }
        return;
      }
      if (fds[0].revents != 0) {
        return;
      }
      const auto now = Clock::now();
      for (std::size_t i = 0; i < conns_.size(); ++i) {
        serve(conns_[i], fds[i + 2].revents, buf, now);
      }
      std::erase_if(conns_, [](const Connection& c) { return c.closed; });
      if ((fds[1].revents & POLLIN) != 0) {
        accept_clients(now);
      }
    }
  }

 private:
  // Until the next idle connection is due, or accepting resumes; -1 (no limit) if neither.
  [[nodiscard]] int poll_timeout_ms() const {
    const auto now = Clock::now();
    std::optional<Clock::time_point> due;
    if (now < accept_paused_until_) {
      due = accept_paused_until_;
    }
    for (const Connection& c : conns_) {
      due = std::min(due.value_or(Clock::time_point::max()), c.last_active + limits_.idle_timeout);
    }
    if (!due) {
      return -1;
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(*due - now);
    return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 60000));
  }

  void accept_clients(Clock::time_point now) {
    for (;;) {
      Fd fd(::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        if (errno == EINTR || errno == ECONNABORTED) {
          continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors or memory: the listener would poll readable at once, so wait a
          // little rather than spin.
          accept_paused_until_ = now + kAcceptPause;
        }
        return;
      }
      ucred peer{};
      socklen_t len = sizeof(peer);
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
          (peer.uid != 0 && peer.uid != ::geteuid())) {
        send_now(fd.get(), error_answer("root only"));
        continue;
      }
      if (conns_.size() >= limits_.max_clients) {
        send_now(fd.get(),
                 error_answer("the agent is serving " + std::to_string(limits_.max_clients) +
                              " clients already; try again"));
        continue;
      }
      conns_.emplace_back(std::move(fd), handler_, limits_, now);
    }
  }

  void serve(Connection& c, short revents, std::vector<char>& buf, Clock::time_point now) {
    if ((revents & (POLLERR | POLLNVAL)) != 0) {
      c.closed = true;
      return;
    }
    // POLLHUP too: a peer gone while answers wait makes send() fail with EPIPE, and we close.
    if ((revents & (POLLOUT | POLLHUP)) != 0 && !c.stream.out().empty() && !flush(c, now)) {
      c.closed = true;
      return;
    }
    if ((revents & (POLLIN | POLLHUP)) != 0 && c.stream.out().empty() && !c.peer_done &&
        !read_requests(c, buf, now)) {
      c.closed = true;
      return;
    }
    c.stream.answer();
    c.closed =
        (c.peer_done && c.stream.out().empty()) || now - c.last_active >= limits_.idle_timeout;
  }

  static bool flush(Connection& c, Clock::time_point now) {
    std::string& out = c.stream.out();
    while (!out.empty()) {
      const ssize_t n = ::send(c.fd.get(), out.data(), out.size(), MSG_NOSIGNAL);
      if (n < 0) {
        return errno == EAGAIN || errno == EINTR;
      }
      out.erase(0, static_cast<std::size_t>(n));
      c.last_active = now;
    }
    return true;
  }

  static bool read_requests(Connection& c, std::vector<char>& buf, Clock::time_point now) {
    const ssize_t n = ::recv(c.fd.get(), buf.data(), buf.size(), 0);
    if (n < 0) {
      return errno == EAGAIN || errno == EINTR;
    }
    if (n == 0) {
      c.stream.finish();
      c.peer_done = true;
      return true;
    }
    c.stream.receive(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    c.last_active = now;
    return true;
  }

  int listener_;
  int wake_;
  const LocalApiLimits& limits_;
  const ApiHandler& handler_;
  std::vector<Connection> conns_;
  Clock::time_point accept_paused_until_;
};

// Creates the missing directories above path, each with mode 0700; leaves existing ones alone.
void prepare_directory(const std::string& path) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) {
    return;
  }
  std::vector<std::filesystem::path> missing;
  for (std::filesystem::path p = dir; !p.empty(); p = p.parent_path()) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        throw Error("cannot create the API socket " + path + ": " + p.string() +
                    " is not a directory; use --api.socket PATH");
      }
      break;
    }
    if (errno != ENOENT) {
      throw Error("cannot create the API socket " + path + ": " + p.string() + ": " +
                  errno_text(errno) + "; run as root or use --api.socket PATH");
    }
    missing.push_back(p);
    if (p == p.parent_path()) {
      break;
    }
  }
  std::reverse(missing.begin(), missing.end());  // outermost first
  for (const std::filesystem::path& p : missing) {
    // chmod after mkdir: the umask may have taken bits from 0700. A directory someone else
    // made meanwhile (EEXIST) is theirs, and left as it is.
    if (::mkdir(p.c_str(), 0700) == 0 ? ::chmod(p.c_str(), 0700) != 0 : errno != EEXIST) {
      throw Error("cannot create the directory " + p.string() + " for the API socket: " +
                  errno_text(errno) + "; run as root or use --api.socket PATH");
    }
  }
}

Error already_served(const std::string& path) {
  return Error("another portlens agent is already serving " + path +
               "; stop it or use --api.socket PATH");
}

// Removes a socket file nobody listens on (an agent that was killed); throws when one does.
void remove_stale_socket(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return;
    }
    throw Error("cannot check the API socket " + path + ": " + errno_text(errno) +
                "; run as root or use --api.socket PATH");
  }
  if (!S_ISSOCK(st.st_mode)) {
    throw Error(path + " exists and is not a socket; remove it or use --api.socket PATH");
  }
  // Non-blocking: a live agent with a full backlog answers EAGAIN instead of making us wait.
  const Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe) {
    throw Error("cannot create a socket: " + errno_text(errno));
  }
  if (connect_to(probe.get(), addr) == 0 || errno == EAGAIN) {
    throw already_served(path);
  }
  if (errno != ECONNREFUSED) {
    throw Error("cannot check the API socket " + path + ": " + errno_text(errno) +
                "; remove it or use --api.socket PATH");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    throw Error("cannot remove the stale API socket " + path + ": " + errno_text(errno) +
                "; remove it or use --api.socket PATH");
  }
}

}  // namespace

std::optional<std::string> check_api_request(const json& request) {
  if (!request.is_object()) {
    return R"(a request is one JSON object per line, such as {"op":"ping"})";
  }
  const auto op_it = request.find("op");
  if (op_it == request.end() || !op_it->is_string()) {
    return "missing \"op\": one of failures, holders, ping, top";
  }
  const auto& op = op_it->get_ref<const std::string&>();
  if (op == "ping") {
    return std::nullopt;
  }
  if (op == "failures") {
    for (const auto& [field, max] :
         {std::pair{"port", kMaxPort}, std::pair{"pid", kMaxPid}, std::pair{"netns", UINT64_MAX},
          std::pair{"since_ms", UINT64_MAX}, std::pair{"limit", UINT64_MAX}}) {
      if (auto problem = check_integer(request, field, max, /*required=*/false)) {
        return problem;
      }
    }
    return std::nullopt;
  }
  if (op == "holders") {
    if (auto problem = check_integer(request, "port", kMaxPort, /*required=*/true)) {
      return problem;
    }
    if (auto problem = check_integer(request, "netns", UINT64_MAX, /*required=*/false)) {
      return problem;
    }
    const auto proto = request.find("proto");
    if (proto == request.end() || !proto->is_string() || (*proto != "tcp" && *proto != "udp")) {
      return R"("holders" needs "proto": "tcp" or "udp")";
    }
    return std::nullopt;
  }
  if (op == "top") {
    for (const char* field : {"netns", "limit"}) {
      if (auto problem = check_integer(request, field, UINT64_MAX, /*required=*/false)) {
        return problem;
      }
    }
    return std::nullopt;
  }
  return "unknown op " + in_quotes(op) + ": one of failures, holders, ping, top";
}

json answer_api_line(std::string_view line, const ApiHandler& handler) {
  const json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded()) {
    return error_answer("malformed JSON; send one JSON object per line");
  }
  if (auto problem = check_api_request(request)) {
    return error_answer(*problem);
  }
  try {
    return handler(request);
  } catch (const std::exception& e) {
    return error_answer(e.what());
  } catch (...) {
    return error_answer("the agent could not answer");
  }
}

ApiRequestStream::ApiRequestStream(const ApiHandler& handler, std::size_t max_request_bytes,
                                   std::size_t out_high_water)
    : handler_(&handler), max_request_bytes_(max_request_bytes), out_high_water_(out_high_water) {}

void ApiRequestStream::receive(std::string_view bytes) { in_.append(bytes); }

void ApiRequestStream::finish() {
  // A last request without its newline still gets an answer.
  if (!discarding_ && !in_.empty()) {
    in_.push_back('\n');
  }
}

void ApiRequestStream::answer() {
  std::size_t start = 0;
  while (out_.size() < out_high_water_) {
    const std::size_t end = in_.find('\n', start);
    if (end == std::string::npos) {
      break;
    }
    std::string_view line(in_.data() + start, end - start);
    start = end + 1;
    if (discarding_) {
      discarding_ = false;
      continue;
    }
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.empty()) {
      continue;
    }
    out_ +=
        to_line(line.size() > max_request_bytes_ ? too_large() : answer_api_line(line, *handler_));
  }
  in_.erase(0, start);
  if (discarding_) {
    in_.clear();
  } else if (in_.size() > max_request_bytes_ && in_.find('\n') == std::string::npos) {
    // No newline within the cap: answer now, drop the rest of the line as it arrives.
    out_ += to_line(too_large());
    in_.clear();
    discarding_ = true;
  }
}

json ApiRequestStream::too_large() const {
  return error_answer("request longer than " + std::to_string(max_request_bytes_) + " bytes");
}

struct LocalApiServer::Server {
  std::string path;
  LocalApiLimits limits;
  ApiHandler handler;
  Fd listener;
  Fd wake;        // an eventfd: stop() writes it, the loop wakes and returns
  dev_t dev = 0;  // of the socket file we bound: stop() removes only that one
  ino_t ino = 0;
  std::thread thread;
  std::mutex stop_mutex;
  bool stopped = false;
};

LocalApiServer::LocalApiServer(std::string socket_path, ApiHandler handler, LocalApiLimits limits)
    : server_(std::make_unique<Server>()) {
  Server& s = *server_;
  s.path = std::move(socket_path);
  s.limits = limits;
  s.handler = std::move(handler);
  const std::string& path = s.path;
  const sockaddr_un addr = unix_address(path);

  prepare_directory(path);
  remove_stale_socket(path, addr);
  s.listener = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  s.wake = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s.listener || !s.wake) {
    throw Error("cannot create the API socket: " + errno_text(errno));
  }
  if (::bind(s.listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == EADDRINUSE) {
      throw already_served(path);  // another agent bound it since we looked
    }
    throw Error("cannot create the API socket " + path + ": " + errno_text(errno) +
                "; run as root or use --api.socket PATH");
  }
  // Mode 0600 before listen(): until then nobody can connect, so there is no window in which
  // the umask's mode lets others in. (fchmod on a socket does not reach the file bind made.)
  struct stat st {};
  if (::chmod(path.c_str(), 0600) != 0 || ::lstat(path.c_str(), &st) != 0 ||
      ::listen(s.listener.get(),
               static_cast<int>(std::max<std::size_t>(s.limits.max_clients, 1))) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    throw Error("cannot serve the API socket " + path + ": " + errno_text(err) +
                "; use --api.socket PATH");
  }
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  try {
    s.thread =
        std::thread([&s] { Loop(s.listener.get(), s.wake.get(), s.limits, s.handler).run(); });
  } catch (const std::system_error& e) {
    ::unlink(path.c_str());
    throw Error(std::string("cannot start the API thread: ") + e.what());
  }
}

LocalApiServer::~LocalApiServer() { stop(); }

void LocalApiServer::stop() {
  Server& s = *server_;
  const std::lock_guard lock(s.stop_mutex);
  if (s.stopped) {
    return;
  }
  s.stopped = true;
  const std::uint64_t one = 1;
  // An eventfd write fails only when its counter would overflow, which one write per stop
  // cannot make happen: there is nothing to do with the result.
  [[maybe_unused]] const ssize_t woken = ::write(s.wake.get(), &one, sizeof(one));
  if (s.thread.joinable()) {
    s.thread.join();
  }
  const std::string& path = s.path;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && st.st_dev == s.dev && st.st_ino == s.ino) {
    ::unlink(path.c_str());
  }
  s.listener.reset();
}

const std::string& LocalApiServer::socket_path() const { return server_->path; }

std::optional<json> api_request(const std::string& socket_path, const json& request,
                                std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string agent = "the portlens agent at " + socket_path;
  const auto no_answer = [&] {
    return Error(agent + " did not answer within " + std::to_string(timeout.count()) +
                 " ms; check that it is healthy");
  };
  const sockaddr_un addr = unix_address(socket_path);
  const Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    throw Error("cannot create a socket: " + errno_text(errno));
  }
  // Bounds connect() waiting on a full backlog, and send().
  const auto whole_ms = std::max<std::int64_t>(timeout.count(), 1);
  const timeval tv{.tv_sec = whole_ms / 1000, .tv_usec = (whole_ms % 1000) * 1000};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect_to(fd.get(), addr) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ECONNREFUSED) {
      return std::nullopt;
    }
    if (err == EACCES || err == EPERM) {
      throw Error("cannot ask " + agent + ": " + errno_text(err) + "; run as root");
    }
    if (err == EAGAIN) {
      throw no_answer();
    }
    throw Error("cannot ask " + agent + ": " + errno_text(err));
  }

  const std::string line = to_line(request);
  for (std::size_t sent = 0; sent < line.size();) {
    const ssize_t n = ::send(fd.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN) {
        throw no_answer();
      }
      if (errno == EPIPE || errno == ECONNRESET) {
        break;  // the agent refused us ({"error":"root only"}): its answer is waiting to be read
      }
      throw Error("cannot ask " + agent + ": " + errno_text(errno));
    }
    sent += static_cast<std::size_t>(n);
  }

  std::string answer;
  std::vector<char> buf(kReadChunk);
  for (;;) {
    const std::size_t end = answer.find('\n');
    if (end != std::string::npos) {
      answer.resize(end);
      break;
    }
    if (answer.size() > kMaxAnswerBytes) {
      throw Error(agent + " answered with more than " + std::to_string(kMaxAnswerBytes) + " bytes");
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      throw no_answer();
    }
    pollfd pfd{fd.get(), POLLIN, 0};
    const int ready =
        ::poll(&pfd, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 60000)));
    if (ready < 0 && errno != EINTR) {
      throw Error("cannot read the answer of " + agent + ": " + errno_text(errno));
    }
    if (ready <= 0) {
      continue;
    }
    const ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      throw Error("cannot read the answer of " + agent + ": " + errno_text(errno));
    }
    if (n == 0) {
      throw Error(agent + " closed the connection without answering");
    }
    answer.append(buf.data(), static_cast<std::size_t>(n));
  }
  json parsed = json::parse(answer, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    throw Error(agent + " answered with something that is not JSON");
  }
  return parsed;
}

}  // namespace portlens
