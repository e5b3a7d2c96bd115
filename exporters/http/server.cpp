#include "exporters/http/server.hpp"

#include <microhttpd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <unordered_map>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "exporters/http/basic_auth.hpp"
#include "exporters/http/gzip.hpp"
#include "exporters/http/listen_address.hpp"
#include "exporters/http/web_config.hpp"

namespace portlens::http {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

Response text_response(int status, std::string body) {
  Response response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

struct DaemonStop {
  void operator()(MHD_Daemon* daemon) const { MHD_stop_daemon(daemon); }
};
using Daemon = std::unique_ptr<MHD_Daemon, DaemonStop>;

struct ResponseRelease {
  void operator()(MHD_Response* response) const { MHD_destroy_response(response); }
};
using MhdResponse = std::unique_ptr<MHD_Response, ResponseRelease>;

// One request on one connection, from its request line to its completion. libmicrohttpd holds
// it as the request context: created by the URI callback, deleted by the completion callback.
struct Exchange {
  enum class Stage {
    kRequestLine,  // the URI is known, the headers not yet
    kHeaders,      // the headers are in; waiting for the end of any body
    kDispatched,   // suspended, on or waiting for a handler thread
    kAnswered,     // response is ready to queue
    kAbandoned,    // the server is stopping before a handler thread took it: close
  };
  Stage stage = Stage::kRequestLine;
  Request request;
  Response response;
};

// A handler thread's work item: the connection stays suspended, so both pointers stay valid,
// until the job resumes it.
struct Job {
  MHD_Connection* connection;
  Exchange* exchange;
};

// The handler threads, with node_exporter's --web.max-requests admission: at most limit jobs
// running or queued; submit refuses beyond that, and once stopping.
class Dispatcher {
 public:
  using Run = std::function<void(Exchange&)>;

  Dispatcher(unsigned threads, unsigned limit, Run run) : limit_(limit), run_(std::move(run)) {
    for (unsigned i = 0; i < std::max(threads, 1U); ++i) {
      threads_.emplace_back([this](const std::stop_token& stop) { work(stop); });
    }
  }
  // Queued jobs are answered "abandoned" (their connections close); running ones finish first,
  // since their handler cannot be interrupted.
  ~Dispatcher() {
    std::deque<Job> queued;
    {
      const std::scoped_lock lock(mutex_);
      stopping_ = true;
      queued.swap(queue_);
    }
    for (auto& thread : threads_) thread.request_stop();
    for (const auto& job : queued) {
      job.exchange->stage = Exchange::Stage::kAbandoned;
      MHD_resume_connection(job.connection);
    }
    threads_.clear();  // joins
  }
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  bool submit(Job job) {
    {
      const std::scoped_lock lock(mutex_);
      if (stopping_ || (limit_ != 0 && admitted_ >= limit_)) return false;
      ++admitted_;
      queue_.push_back(job);
    }
    ready_.notify_one();
    return true;
  }

 private:
  void work(const std::stop_token& stop) {
    while (true) {
      Job job{};
      {
        std::unique_lock lock(mutex_);
        if (!ready_.wait(lock, stop, [this] { return !queue_.empty(); })) return;
        job = queue_.front();
        queue_.pop_front();
      }
      run_(*job.exchange);
      job.exchange->stage = Exchange::Stage::kAnswered;
      {
        const std::scoped_lock lock(mutex_);
        --admitted_;
      }
      // libmicrohttpd's resume takes its own lock, which orders our writes to the exchange
      // before its event loop reads them.
      MHD_resume_connection(job.connection);
    }
  }

  const unsigned limit_;
  const Run run_;
  std::mutex mutex_;
  std::condition_variable_any ready_;
  std::deque<Job> queue_;
  unsigned admitted_ = 0;
  bool stopping_ = false;
  std::vector<std::jthread> threads_;  // last: joined before the rest is destroyed
};

// libmicrohttpd's connection timeout is an idle timeout: a client sending one header byte a
// second (slowloris) never trips it. This closes any connection that has not delivered a
// request's headers within the timeout of connecting or of its previous response, by shutting
// its socket down; libmicrohttpd then sees the end of the stream and cleans up as usual.
class HeaderDeadlines {
 public:
  using Clock = std::chrono::steady_clock;

  explicit HeaderDeadlines(std::chrono::seconds timeout) : timeout_(timeout) {
    if (timeout_.count() == 0) return;
    // A deadline is missed by at most one tick: a tenth of the timeout, at most a second.
    const auto tick = std::min<Clock::duration>(std::chrono::seconds(1), timeout_ / 10);
    thread_ = std::jthread([this, tick](const std::stop_token& stop) { watch(stop, tick); });
  }
  HeaderDeadlines(const HeaderDeadlines&) = delete;
  HeaderDeadlines& operator=(const HeaderDeadlines&) = delete;
  ~HeaderDeadlines() = default;  // thread_ is declared last, so it stops and joins first

  void opened(MHD_Connection* connection, int fd) {
    const std::scoped_lock lock(mutex_);
    connections_[connection] = {fd, Clock::now() + timeout_};
  }
  void request_started(MHD_Connection* connection) { set(connection, std::nullopt); }
  void request_done(MHD_Connection* connection) { set(connection, Clock::now() + timeout_); }
  // libmicrohttpd reports the close before it closes the fd, so under mutex_ an fd in
  // connections_ is never one the kernel has already handed to someone else.
  void closed(MHD_Connection* connection) {
    const std::scoped_lock lock(mutex_);
    connections_.erase(connection);
  }

 private:
  struct Watched {
    int fd;
    std::optional<Clock::time_point> deadline;
  };

  void set(MHD_Connection* connection, std::optional<Clock::time_point> deadline) {
    const std::scoped_lock lock(mutex_);
    if (const auto found = connections_.find(connection); found != connections_.end()) {
      found->second.deadline = deadline;
    }
  }

  void watch(const std::stop_token& stop, Clock::duration tick) {
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, stop, tick, [] { return false; }) && !stop.stop_requested()) {
      const auto now = Clock::now();
      for (auto& [connection, watched] : connections_) {
        if (watched.deadline && *watched.deadline <= now) {
          ::shutdown(watched.fd, SHUT_RDWR);
          watched.deadline.reset();
        }
      }
    }
  }

  const Clock::duration timeout_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::unordered_map<MHD_Connection*, Watched> connections_;
  std::jthread thread_;
};

enum MHD_Result collect_header(void* cls, enum MHD_ValueKind /*kind*/, const char* key,
                               const char* value) noexcept {
  static_cast<Request*>(cls)->headers.emplace_back(key, value == nullptr ? "" : value);
  return MHD_YES;
}

void free_body(void* body) noexcept { delete static_cast<std::string*>(body); }

}  // namespace

std::optional<std::string_view> Request::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return std::nullopt;
}

struct Server::State {
  State(ServerOptions server_options, std::map<std::string, Handler, std::less<>> server_routes)
      : options(std::move(server_options)),
        routes(std::move(server_routes)),
        web(options.web_config_file ? load_web_config(*options.web_config_file) : WebConfig{}),
        deadlines(options.connection_timeout),
        dispatcher(options.threads, options.max_requests,
                   [this](Exchange& exchange) { exchange.response = respond(exchange.request); }) {
    if (!web.basic_auth_users.empty()) auth.emplace(web.basic_auth_users);
    if (web.tls) priorities = web.tls->gnutls_priorities();
    if (options.listen_addresses.empty()) {
      throw std::invalid_argument("no listen address given");
    }
    // Parse and bind every address before serving any, so a bad one stops the start cleanly.
    std::vector<ListenAddress> addresses;
    addresses.reserve(options.listen_addresses.size());
    for (const auto& text : options.listen_addresses) {
      addresses.push_back(parse_listen_address(text));
    }
    for (const auto& address : addresses) sockets.emplace_back(address);
    for (std::size_t i = 0; i < sockets.size(); ++i) {
      daemons.push_back(start_daemon(sockets[i], addresses[i]));
    }
  }

  ~State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  void log(std::string_view message) const {
    if (options.log) options.log(message);
  }

  Daemon start_daemon(const ListenSocket& socket, const ListenAddress& address) {
    // libmicrohttpd closes the listening fd it was given when it stops, and on some of its
    // failure paths but not others; a duplicate keeps our own fd's ownership simple.
    const int fd = ::dup(socket.fd());
    if (fd < 0)
      throw std::runtime_error("cannot listen on " + address.to_string() + ": dup failed");
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    std::vector<MHD_OptionItem> items;
    const auto add = [&items](MHD_OPTION option, intptr_t value, void* pointer = nullptr) {
      items.push_back({option, value, pointer});
    };
    if (options.log) {
      flags |= MHD_USE_ERROR_LOG;
      // First, so that libmicrohttpd's start-up messages go there too.
      add(MHD_OPTION_EXTERNAL_LOGGER, reinterpret_cast<intptr_t>(&on_mhd_message), this);
    }
    add(MHD_OPTION_LISTEN_SOCKET, fd);
    add(MHD_OPTION_CONNECTION_TIMEOUT, static_cast<intptr_t>(options.connection_timeout.count()));
    add(MHD_OPTION_CONNECTION_LIMIT, static_cast<intptr_t>(options.connection_limit));
    add(MHD_OPTION_URI_LOG_CALLBACK, reinterpret_cast<intptr_t>(&on_request_line), this);
    add(MHD_OPTION_NOTIFY_COMPLETED, reinterpret_cast<intptr_t>(&on_completed), this);
    add(MHD_OPTION_NOTIFY_CONNECTION, reinterpret_cast<intptr_t>(&on_connection), this);
    if (web.tls) {
      flags |= MHD_USE_TLS;
      // libmicrohttpd reads these into its GnuTLS credentials at start; web outlives it anyway.
      add(MHD_OPTION_HTTPS_MEM_CERT, 0, web.tls->cert_pem.data());
      add(MHD_OPTION_HTTPS_MEM_KEY, 0, web.tls->key_pem.data());
      if (!web.tls->client_ca_pem.empty()) {
        add(MHD_OPTION_HTTPS_MEM_TRUST, 0, web.tls->client_ca_pem.data());
      }
      add(MHD_OPTION_HTTPS_PRIORITIES, 0, priorities.data());
    }
    add(MHD_OPTION_END, 0);
    Daemon daemon(MHD_start_daemon(flags, 0, nullptr, nullptr, &on_request, this, MHD_OPTION_ARRAY,
                                   items.data(), MHD_OPTION_END));
    if (!daemon) {
      throw std::runtime_error("cannot serve " + address.to_string() +
                               ": libmicrohttpd failed to start (set a log to see why)");
    }
    return daemon;
  }

  // Answers that need no handler thread: unknown paths and methods, when no password has to be
  // checked first.
  [[nodiscard]] std::optional<Response> route_error(const Request& request) const {
    if (!routes.contains(request.path)) return text_response(404, "404 page not found\n");
    if (request.method != "GET" && request.method != "HEAD") {
      auto response = text_response(405, "405 method not allowed\n");
      response.headers.emplace_back("Allow", "GET, HEAD");
      return response;
    }
    return std::nullopt;
  }

  // On a handler thread.
  [[nodiscard]] Response respond(const Request& request) const {
    if (auth && !auth->allows(request.header("Authorization"))) {
      auto response = text_response(401, "401 unauthorized\n");
      response.headers.emplace_back("WWW-Authenticate", "Basic");
      return response;
    }
    if (auto error = route_error(request)) return *std::move(error);
    try {
      auto response = routes.find(request.path)->second(request);
      encode(request, response);
      return response;
    } catch (const std::exception& e) {
      log("handler for " + request.path + " failed: " + e.what());
    } catch (...) {
      log("handler for " + request.path + " failed");
    }
    return text_response(500, "500 internal server error\n");
  }

  // Compression depends on Accept-Encoding, so caches must key on it (Vary) either way.
  static void encode(const Request& request, Response& response) {
    response.headers.emplace_back("Vary", "Accept-Encoding");
    const bool encoded =
        std::any_of(response.headers.begin(), response.headers.end(),
                    [](const auto& header) { return iequals(header.first, "Content-Encoding"); });
    const auto accept = request.header("Accept-Encoding");
    if (encoded || response.body.empty() || !accept || !accepts_gzip(*accept)) return;
    response.body = gzip(response.body);
    response.headers.emplace_back("Content-Encoding", "gzip");
  }

  enum MHD_Result queue(MHD_Connection* connection, Response response) const {
    auto body = std::make_unique<std::string>(std::move(response.body));
    MhdResponse mhd(MHD_create_response_from_buffer_with_free_callback_cls(
        body->size(), body->data(), &free_body, body.get()));
    if (!mhd) return MHD_NO;
    static_cast<void>(body.release());  // the response owns it now, and frees it
    const auto add = [&](const std::string& name, const std::string& value) {
      if (MHD_add_response_header(mhd.get(), name.c_str(), value.c_str()) != MHD_YES) {
        log("header " + name + " refused by libmicrohttpd (not allowed, or bad characters)");
      }
    };
    if (!response.content_type.empty()) add("Content-Type", response.content_type);
    for (const auto& [name, value] : response.headers) add(name, value);
    // The web config's headers, unless the handler set its own.
    for (const auto& configured : web.headers) {
      if (std::none_of(response.headers.begin(), response.headers.end(), [&](const auto& header) {
            return iequals(header.first, configured.first);
          })) {
        add(configured.first, configured.second);
      }
    }
    return MHD_queue_response(connection, static_cast<unsigned>(response.status), mhd.get());
  }

  enum MHD_Result dispatch(MHD_Connection* connection, Exchange& exchange) {
    if (!auth) {
      if (auto error = route_error(exchange.request)) return queue(connection, *std::move(error));
    }
    // Suspend first: the handler thread may finish, and resume, before submit returns.
    MHD_suspend_connection(connection);
    exchange.stage = Exchange::Stage::kDispatched;
    if (!dispatcher.submit({connection, &exchange})) {
      exchange.response = text_response(503, "503 too many requests in flight\n");
      exchange.stage = Exchange::Stage::kAnswered;
      MHD_resume_connection(connection);
    }
    return MHD_YES;
  }

  // libmicrohttpd's callbacks are noexcept: no exception may unwind through its C frames. The
  // only ones they can meet are std::bad_alloc and std::system_error from a mutex, after which
  // terminating is the honest outcome. Handler exceptions are caught in respond().
  static enum MHD_Result on_request(void* cls, MHD_Connection* connection, const char* url,
                                    const char* method, const char* /*version*/,
                                    const char* /*upload_data*/, std::size_t* upload_data_size,
                                    void** request_context) noexcept {
    auto& state = *static_cast<State*>(cls);
    auto* exchange = static_cast<Exchange*>(*request_context);
    if (exchange == nullptr) return MHD_NO;  // libmicrohttpd runs on_request_line first
    switch (exchange->stage) {
      case Exchange::Stage::kRequestLine:
        exchange->request.method = method;
        exchange->request.path = url;
        MHD_get_connection_values(connection, MHD_HEADER_KIND, &collect_header, &exchange->request);
        exchange->stage = Exchange::Stage::kHeaders;
        state.deadlines.request_started(connection);
        return MHD_YES;
      case Exchange::Stage::kHeaders:
        // No route takes a body: read and drop it, so the connection stays usable.
        if (*upload_data_size != 0) {
          *upload_data_size = 0;
          return MHD_YES;
        }
        return state.dispatch(connection, *exchange);
      case Exchange::Stage::kDispatched:
        return MHD_YES;  // cannot happen: a suspended connection is not processed
      case Exchange::Stage::kAnswered:
        return state.queue(connection, std::move(exchange->response));
      case Exchange::Stage::kAbandoned:
        return MHD_NO;
    }
    return MHD_NO;
  }

  // Runs before the URI is decoded and split, so the query is seen exactly as sent.
  static void* on_request_line(void* /*cls*/, const char* uri,
                               MHD_Connection* /*connection*/) noexcept {
    auto exchange = std::make_unique<Exchange>();
    const std::string_view text = uri;
    if (const auto question = text.find('?'); question != std::string_view::npos) {
      exchange->request.query = std::string(text.substr(question + 1));
    }
    return exchange.release();  // deleted by on_completed
  }

  static void on_completed(void* cls, MHD_Connection* connection, void** request_context,
                           enum MHD_RequestTerminationCode /*code*/) noexcept {
    const std::unique_ptr<Exchange> exchange(static_cast<Exchange*>(*request_context));
    *request_context = nullptr;
    static_cast<State*>(cls)->deadlines.request_done(connection);
  }

  static void on_connection(void* cls, MHD_Connection* connection, void** /*socket_context*/,
                            enum MHD_ConnectionNotificationCode code) noexcept {
    auto& state = *static_cast<State*>(cls);
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
      state.deadlines.closed(connection);
      return;
    }
    const auto* fd_info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (fd_info != nullptr) state.deadlines.opened(connection, fd_info->connect_fd);
    if (state.web.tls) state.require_client_certificate(connection);
  }

  // libmicrohttpd only knows "ask for a client certificate when a trust list is set". The GnuTLS
  // session exists before its first handshake byte is read, so each session gets the policy
  // here, and a certificate that fails verification fails the handshake, as in Go.
  void require_client_certificate(MHD_Connection* connection) const {
    const auto* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (info == nullptr || info->tls_session == nullptr) return;
    auto* session = static_cast<gnutls_session_t>(info->tls_session);
    bool verify = false;
    gnutls_certificate_request_t request = GNUTLS_CERT_IGNORE;
    switch (web.tls->client_auth) {
      case ClientAuth::kNoClientCert:
        break;
      case ClientAuth::kRequestClientCert:
        request = GNUTLS_CERT_REQUEST;
        break;
      case ClientAuth::kRequireAnyClientCert:
        request = GNUTLS_CERT_REQUIRE;
        break;
      case ClientAuth::kVerifyClientCertIfGiven:
        request = GNUTLS_CERT_REQUEST;
        verify = true;
        break;
      case ClientAuth::kRequireAndVerifyClientCert:
        request = GNUTLS_CERT_REQUIRE;
        verify = true;
        break;
    }
    gnutls_certificate_server_set_request(session, request);
    if (verify) gnutls_session_set_verify_function(session, &verify_client_certificate);
  }

  // Called by GnuTLS in the handshake; non-zero fails it. GnuTLS's own verification
  // (gnutls_session_set_verify_cert) also fails when no certificate came, which
  // VerifyClientCertIfGiven allows; GNUTLS_CERT_REQUIRE already refuses that case for
  // RequireAndVerifyClientCert.
  static int verify_client_certificate(gnutls_session_t session) noexcept {
    unsigned count = 0;
    if (gnutls_certificate_get_peers(session, &count) == nullptr || count == 0) return 0;
    // Against client_ca (MHD_OPTION_HTTPS_MEM_TRUST), for TLS client use, as Go checks
    // ExtKeyUsageClientAuth; a certificate without extended key usage passes in both.
    gnutls_typed_vdata_st purpose{};
    purpose.type = GNUTLS_DT_KEY_PURPOSE_OID;
    purpose.data = reinterpret_cast<unsigned char*>(const_cast<char*>(GNUTLS_KP_TLS_WWW_CLIENT));
    unsigned status = 0;
    if (gnutls_certificate_verify_peers(session, &purpose, 1, &status) < 0 || status != 0) {
      return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
    }
    return 0;
  }

  static void on_mhd_message(void* cls, const char* format, va_list arguments) noexcept {
    std::array<char, 512> text{};
    std::vsnprintf(text.data(), text.size(), format, arguments);
    std::string_view message = text.data();
    while (!message.empty() && message.back() == '\n') message.remove_suffix(1);
    static_cast<const State*>(cls)->log(message);
  }

  // Declaration order is destruction order reversed: the dispatcher stops (resuming what it
  // holds) before the daemons stop, and they before the deadlines and sockets they use.
  ServerOptions options;
  std::map<std::string, Handler, std::less<>> routes;
  WebConfig web;
  std::optional<BasicAuth> auth;
  std::string priorities;
  std::vector<ListenSocket> sockets;
  HeaderDeadlines deadlines;
  std::vector<Daemon> daemons;
  Dispatcher dispatcher;
};

Server::Server(ServerOptions options, std::map<std::string, Handler, std::less<>> routes)
    : state_(std::make_unique<State>(std::move(options), std::move(routes))) {}

Server::~Server() = default;

std::vector<std::string> Server::bound() const {
  std::vector<std::string> bound;
  bound.reserve(state_->sockets.size());
  for (const auto& socket : state_->sockets) bound.push_back(socket.bound());
  return bound;
}

}  // namespace portlens::http
