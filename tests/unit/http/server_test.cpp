#include "exporters/http/server.hpp"

#include <atomic>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "exporters/http/listen_address.hpp"
#include "http_test_support.hpp"

namespace portlens::http {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using testing::get;
using Clock = std::chrono::steady_clock;

Response text(std::string body) {
  Response response;
  response.body = std::move(body);
  return response;
}

ServerOptions loopback(std::vector<std::string> addresses = {"127.0.0.1:0"}) {
  ServerOptions options;
  options.listen_addresses = std::move(addresses);
  return options;
}

std::map<std::string, Handler, std::less<>> hello_routes() {
  return {{"/metrics", [](const Request&) { return text("hello\n"); }}};
}

bool have_ipv6_loopback() {
  try {
    const Server probe(loopback({"[::1]:0"}), hello_routes());
    return true;
  } catch (const std::runtime_error&) {
    return false;
  }
}

TEST(Server, RoutesExactPathsOnly) {
  const Server server(loopback(), hello_routes());
  const auto at = server.bound().at(0);
  const auto ok = get(at, "/metrics");
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "hello\n");
  EXPECT_EQ(ok.header("Content-Type"), "text/plain; charset=utf-8");
  for (const auto* path : {"/nope", "/metricsfoo", "/metrics/", "/", "/Metrics"}) {
    const auto missing = get(at, path);
    EXPECT_EQ(missing.status, 404) << path;
    EXPECT_EQ(missing.body, "404 page not found\n") << path;
  }
}

TEST(Server, AnswersHeadLikeGetWithoutTheBody) {
  const Server server(loopback(), hello_routes());
  Client client(server.bound().at(0));
  const auto head = client.request("HEAD", "/metrics");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("Content-Length"), "6");
  EXPECT_EQ(head.header("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(head.body, "");
  // Had a body followed the HEAD reply, this reply would not parse.
  const auto next = client.request("GET", "/metrics");
  EXPECT_EQ(next.status, 200);
  EXPECT_EQ(next.body, "hello\n");
}

TEST(Server, RefusesOtherMethodsWithAllow) {
  const Server server(loopback(), hello_routes());
  for (const auto* method : {"POST", "PUT", "DELETE", "OPTIONS", "get"}) {
    Client client(server.bound().at(0));
    const auto reply = client.request(method, "/metrics", {"Content-Length: 0"});
    EXPECT_EQ(reply.status, 405) << method;
    EXPECT_EQ(reply.header("Allow"), "GET, HEAD") << method;
  }
}

TEST(Server, KeepsTheConnectionAliveAcrossRequests) {
  std::atomic<int> calls{0};
  const Server server(
      loopback(),
      {{"/metrics", [&calls](const Request&) { return text(std::to_string(++calls)); }}});
  Client client(server.bound().at(0));
  const auto first = client.request("GET", "/metrics");
  const auto second = client.request("GET", "/metrics");
  EXPECT_EQ(first.body, "1");
  EXPECT_EQ(second.body, "2");
  EXPECT_NE(first.header("Connection"), "close");
  EXPECT_NE(second.header("Connection"), "close");
  // An unknown path and a refused body do not end the connection either.
  EXPECT_EQ(client.request("GET", "/nope").status, 404);
  client.send("GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde");
  EXPECT_EQ(client.read_reply().body, "3") << "a body on a GET is read and dropped";
  EXPECT_EQ(client.request("GET", "/metrics").body, "4");
}

TEST(Server, HandsTheHandlerPathQueryAndHeaders) {
  std::promise<Request> seen;
  const Server server(loopback(), {{"/metrics", [&seen](const Request& request) {
                                      seen.set_value(request);
                                      return text("");
                                    }}});
  EXPECT_EQ(get(server.bound().at(0), "/metrics?name%5B%5D=a&x=1", {"X-Test: Value 1"}).status,
            200);
  const auto request = seen.get_future().get();
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.path, "/metrics");
  EXPECT_EQ(request.query, "name%5B%5D=a&x=1");
  EXPECT_EQ(request.header("x-test"), "Value 1");
  EXPECT_EQ(request.header("X-TEST"), "Value 1");
  EXPECT_EQ(request.header("X-Missing"), std::nullopt);
}

TEST(Server, GzipsWhenAskedAndOnlyThen) {
  std::string body;
  for (int i = 0; i < 5000; ++i) body += "portlens_up{n=\"" + std::to_string(i) + "\"} 1\n";
  const Server server(loopback(), {{"/metrics", [&body](const Request&) { return text(body); }}});
  const auto at = server.bound().at(0);

  const auto gzipped = get(at, "/metrics", {"Accept-Encoding: deflate, gzip;q=0.8"});
  EXPECT_EQ(gzipped.header("Content-Encoding"), "gzip");
  EXPECT_EQ(gzipped.header("Vary"), "Accept-Encoding");
  EXPECT_LT(gzipped.body.size(), body.size() / 4);
  EXPECT_EQ(testing::gunzip(gzipped.body), body);

  for (const auto* refusal : {"Accept-Encoding: gzip;q=0", "Accept-Encoding: identity"}) {
    const auto plain = get(at, "/metrics", {refusal});
    EXPECT_EQ(plain.header("Content-Encoding"), std::nullopt) << refusal;
    EXPECT_EQ(plain.body, body) << refusal;
    EXPECT_EQ(plain.header("Vary"), "Accept-Encoding") << refusal;
  }
  EXPECT_EQ(get(at, "/metrics").body, body);

  // HEAD has the headers GET would have, Content-Length included.
  Client client(at);
  const auto head = client.request("HEAD", "/metrics", {"Accept-Encoding: gzip"});
  EXPECT_EQ(head.header("Content-Encoding"), "gzip");
  EXPECT_EQ(head.header("Content-Length"), std::to_string(gzipped.body.size()));
}

TEST(Server, TurnsAThrowingHandlerInto500AndCarriesOn) {
  std::mutex mutex;
  std::vector<std::string> logged;
  auto options = loopback();
  options.log = [&](std::string_view message) {
    const std::scoped_lock lock(mutex);
    logged.emplace_back(message);
  };
  const Server server(
      std::move(options),
      {{"/metrics", [](const Request&) { return text("fine"); }},
       {"/broken",
        [](const Request&) -> Response { throw std::runtime_error("collector exploded"); }},
       {"/worse", [](const Request&) -> Response { throw 42; }}});
  const auto at = server.bound().at(0);
  Client client(at);
  EXPECT_EQ(client.request("GET", "/broken").status, 500);
  EXPECT_EQ(client.request("GET", "/worse").status, 500);
  EXPECT_EQ(client.request("GET", "/metrics").body, "fine");
  EXPECT_EQ(get(at, "/metrics").body, "fine");
  const std::scoped_lock lock(mutex);
  EXPECT_NE(
      std::find(logged.begin(), logged.end(), "handler for /broken failed: collector exploded"),
      logged.end());
}

// A latch the test opens, and a count of handlers waiting on it.
class Gate {
 public:
  void wait_inside() {
    std::unique_lock lock(mutex_);
    ++inside_;
    changed_.notify_all();
    changed_.wait(lock, [this] { return open_; });
  }
  bool wait_for_inside(int count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return inside_ >= count; });
  }
  void open() {
    const std::scoped_lock lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int inside_ = 0;
  bool open_ = false;
};

TEST(Server, AnswersBeyondMaxRequestsWith503) {
  Gate gate;
  auto options = loopback();
  options.max_requests = 2;
  options.threads = 2;
  const Server server(std::move(options), {{"/metrics", [&gate](const Request&) {
                                              gate.wait_inside();
                                              return text("late");
                                            }}});
  const auto at = server.bound().at(0);
  Client first(at);
  Client second(at);
  first.send("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  second.send("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT_TRUE(gate.wait_for_inside(2, 5s));

  const auto start = Clock::now();
  const auto refused = get(at, "/metrics");
  EXPECT_EQ(refused.status, 503);
  EXPECT_LT(Clock::now() - start, 1s) << "refused at once, not after a wait";
  EXPECT_EQ(get(at, "/nope").status, 404) << "only handler work is limited";

  gate.open();
  EXPECT_EQ(first.read_reply().body, "late");
  EXPECT_EQ(second.read_reply().body, "late");
  EXPECT_EQ(get(at, "/metrics").status, 200) << "the slots come back";
}

TEST(Server, ReportsWhatItBound) {
  const Server server(loopback({"127.0.0.1:0", "127.0.0.1:0"}), hello_routes());
  const auto bound = server.bound();
  ASSERT_EQ(bound.size(), 2U);
  for (const auto& address : bound) {
    EXPECT_EQ(address.rfind("127.0.0.1:", 0), 0U) << address;
    EXPECT_NE(address, "127.0.0.1:0");
    EXPECT_EQ(get(address, "/metrics").status, 200) << address;
  }
  EXPECT_NE(bound[0], bound[1]);
}

// ":P" for a port free on both families just now (the test binds it again at once).
std::string free_port() {
  while (true) {
    const ListenSocket v4(parse_listen_address("127.0.0.1:0"));
    auto port = v4.bound().substr(v4.bound().rfind(':'));
    try {
      const ListenSocket v6(parse_listen_address("[::]" + port));
      return port;
    } catch (const std::runtime_error&) {
      // taken on IPv6 only: try another
    }
  }
}

TEST(Server, ServesIpv6AndIpv4LoopbackOnOnePort) {
  if (!have_ipv6_loopback()) GTEST_SKIP() << "no ::1 here";
  const auto port = free_port();
  const Server server(loopback({"[::1]" + port, "127.0.0.1" + port}), hello_routes());
  EXPECT_EQ(server.bound(), (std::vector<std::string>{"[::1]" + port, "127.0.0.1" + port}));
  EXPECT_EQ(get("[::1]" + port, "/metrics").status, 200);
  EXPECT_EQ(get("127.0.0.1" + port, "/metrics").status, 200);
}

TEST(Server, ServesBracketedAnyBesideIpv4Any) {
  if (!have_ipv6_loopback()) GTEST_SKIP() << "no ::1 here";
  // "[::]:P" is IPv6 only, so "0.0.0.0:P" can be served beside it.
  const auto port = free_port();
  const Server server(loopback({"[::]" + port, "0.0.0.0" + port}), hello_routes());
  EXPECT_EQ(get("[::1]" + port, "/metrics").status, 200);
  EXPECT_EQ(get("127.0.0.1" + port, "/metrics").status, 200);
}

TEST(Server, PortOnlyMeansBothFamilies) {
  const Server server(loopback({":0"}), hello_routes());
  const auto bound = server.bound().at(0);
  const auto port = bound.substr(bound.rfind(':'));
  EXPECT_EQ(get("127.0.0.1" + port, "/metrics").status, 200);
  if (bound.rfind("[::]:", 0) == 0) {
    EXPECT_EQ(get("[::1]" + port, "/metrics").status, 200);
  } else {
    EXPECT_EQ(bound, "0.0.0.0" + port) << "fell back to IPv4 only";
  }
}

TEST(Server, NamesTheAddressItCannotBind) {
  const Server first(loopback(), hello_routes());
  const auto taken = first.bound().at(0);
  try {
    const Server second(loopback({"127.0.0.1:0", taken}), hello_routes());
    ADD_FAILURE() << "served " << taken << " twice";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot listen on " + taken + ": Address already in use");
  }
  EXPECT_THROW(Server(loopback({"localhost:0"}), hello_routes()), std::invalid_argument);
  EXPECT_THROW(Server(loopback({}), hello_routes()), std::invalid_argument);
}

TEST(Server, StopsQuicklyWithClientsConnected) {
  auto server = std::make_unique<Server>(loopback(), hello_routes());
  const auto at = server->bound().at(0);
  Client idle(at);
  Client kept_alive(at);
  EXPECT_EQ(kept_alive.request("GET", "/metrics").status, 200);
  Client half_sent(at);
  half_sent.send("GET /metr");

  const auto start = Clock::now();
  server.reset();
  const auto took = Clock::now() - start;
  std::printf("server stopped in %.1f ms with 3 clients connected\n",
              std::chrono::duration<double, std::milli>(took).count());
  EXPECT_LT(took, 100ms);
  EXPECT_TRUE(idle.closed_within(1s));
  EXPECT_TRUE(kept_alive.closed_within(1s));
  EXPECT_TRUE(half_sent.closed_within(1s));
  EXPECT_THROW(Client{at}, std::runtime_error) << "the port is closed";
}

TEST(Server, StopsWhileAHandlerRunsAndRequestsWait) {
  Gate gate;
  auto options = loopback();
  options.threads = 1;
  auto server = std::make_unique<Server>(
      std::move(options),
      std::map<std::string, Handler, std::less<>>{{"/metrics", [&gate](const Request&) {
                                                     gate.wait_inside();
                                                     return text("done");
                                                   }}});
  const auto at = server->bound().at(0);
  Client running(at);
  Client queued(at);
  running.send("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT_TRUE(gate.wait_for_inside(1, 5s));
  queued.send("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  std::this_thread::sleep_for(50ms);  // lets the event loop queue it behind the first

  auto stopped = std::async(std::launch::async, [&server] { server.reset(); });
  std::this_thread::sleep_for(50ms);
  gate.open();  // the running handler must be let finish: it cannot be interrupted
  ASSERT_EQ(stopped.wait_for(2s), std::future_status::ready);
  EXPECT_TRUE(queued.closed_within(1s));
}

TEST(Server, ClosesIdleAndSlowConnectionsAfterTheTimeout) {
  auto options = loopback();
  options.connection_timeout = 1s;
  const Server server(std::move(options), hello_routes());
  const auto at = server.bound().at(0);
  Client idle(at);
  Client after_reply(at);
  EXPECT_EQ(after_reply.request("GET", "/metrics").status, 200);
  Client slowloris(at);

  // The slow client sends a header byte every 100 ms: never idle, never done.
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: ";
  const auto start = Clock::now();
  bool closed = false;
  for (std::size_t i = 0; i < 40 && !closed; ++i) {
    try {
      slowloris.send(std::string(1, i < request.size() ? request[i] : 'a'));
    } catch (const std::runtime_error&) {
      closed = true;  // reset by the server
      break;
    }
    closed = slowloris.closed_within(100ms);
  }
  const auto slow_closed_after = Clock::now() - start;
  EXPECT_TRUE(closed) << "a slowloris client kept its connection for 4 s";
  EXPECT_GE(slow_closed_after, 900ms);
  EXPECT_LT(slow_closed_after, 2500ms);
  EXPECT_TRUE(idle.closed_within(2s));
  EXPECT_TRUE(after_reply.closed_within(2s));
  EXPECT_EQ(get(at, "/metrics").status, 200) << "still serving";
}

TEST(Server, KeepsConnectionsBeyondTheLimitWaiting) {
  auto options = loopback();
  options.connection_limit = 2;
  const Server server(std::move(options), hello_routes());
  const auto at = server.bound().at(0);
  auto first = std::make_unique<Client>(at);
  Client second(at);
  EXPECT_EQ(first->request("GET", "/metrics").status, 200);
  EXPECT_EQ(second.request("GET", "/metrics").status, 200);
  Client third(at);  // the kernel accepts it into the backlog; the server leaves it there
  third.send("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_THROW(third.read_reply(false, 300ms), std::runtime_error);
  first.reset();
  EXPECT_EQ(third.read_reply(false, 2s).status, 200) << "served once a slot is free";
}

}  // namespace
}  // namespace portlens::http
