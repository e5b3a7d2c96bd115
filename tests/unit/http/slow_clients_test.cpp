// Slow and idle clients must not delay a normal scrape: the server's event loop holds them as
// sockets and keeps serving. civetweb, before this server, gave each connection one of four
// threads, so four such clients stopped /metrics.
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <ostream>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "exporters/http/server.hpp"
#include "http_test_support.hpp"

namespace portlens::http {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Crowd {
  int slowloris;
  int idle;
};

void PrintTo(const Crowd& crowd, std::ostream* out) {
  *out << crowd.slowloris << " slowloris, " << crowd.idle << " idle";
}

class SlowClients : public ::testing::TestWithParam<Crowd> {};

// The slowest of a few GETs on fresh connections, in milliseconds.
double worst_get_ms(const std::string& at) {
  double worst = 0;
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    const auto reply = testing::get(at, "/metrics");
    const auto took = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    EXPECT_EQ(reply.status, 200);
    worst = std::max(worst, took);
  }
  return worst;
}

TEST_P(SlowClients, DoNotDelayANormalGet) {
  const auto crowd = GetParam();
  ServerOptions options;
  options.listen_addresses = {"127.0.0.1:0"};
  const std::string body(64 << 10, 'm');
  const Server server(std::move(options), {{"/metrics", [&body](const Request&) {
                                              Response response;
                                              response.body = body;
                                              return response;
                                            }}});
  const auto at = server.bound().at(0);
  const auto baseline_ms = worst_get_ms(at);

  std::vector<std::unique_ptr<testing::Client>> idle;
  std::vector<std::unique_ptr<testing::Client>> slow;
  idle.reserve(crowd.idle);
  slow.reserve(crowd.slowloris);
  for (int i = 0; i < crowd.idle; ++i) idle.push_back(std::make_unique<testing::Client>(at));
  for (int i = 0; i < crowd.slowloris; ++i) slow.push_back(std::make_unique<testing::Client>(at));
  // Slowloris: request headers one byte a second, never finished.
  const std::string headers = "GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Padding: ";
  std::mutex mutex;
  std::condition_variable_any tick;
  std::jthread trickle([&](const std::stop_token& stop) {
    for (std::size_t i = 0; !stop.stop_requested(); ++i) {
      const char byte = i < headers.size() ? headers[i] : 'x';
      for (auto& client : slow) client->send(std::string(1, byte));
      std::unique_lock lock(mutex);
      tick.wait_for(lock, stop, 1s, [] { return false; });
    }
  });
  std::this_thread::sleep_for(1200ms);  // every slow client has sent two bytes

  const auto crowded_ms = worst_get_ms(at);
  std::printf(
      "GET /metrics (64 KiB), worst of 5: %.2f ms alone, %.2f ms beside %d slowloris and "
      "%d idle connections\n",
      baseline_ms, crowded_ms, crowd.slowloris, crowd.idle);
  EXPECT_LT(crowded_ms, 1000.0);
}

INSTANTIATE_TEST_SUITE_P(Crowds, SlowClients,
                         ::testing::Values(Crowd{64, 0}, Crowd{0, 64}, Crowd{32, 32},
                                           Crowd{16, 16}),
                         [](const ::testing::TestParamInfo<Crowd>& crowd) {
                           return std::to_string(crowd.param.slowloris) + "Slowloris" +
                                  std::to_string(crowd.param.idle) + "Idle";
                         });

}  // namespace
}  // namespace portlens::http
