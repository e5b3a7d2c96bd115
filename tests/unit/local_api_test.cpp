#include "exporters/local_api.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/model/error.hpp"
#include "tests/unit/builders.hpp"

namespace portlens {
namespace {

using unit::TempDir;

using nlohmann::json;
using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace fs = std::filesystem;

constexpr milliseconds kTimeout{2000};

sockaddr_un address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  return addr;
}

// A connection that speaks the protocol by hand, to send what api_request never would.
class RawClient {
 public:
  explicit RawClient(const std::string& path)
      : fd_(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    const sockaddr_un addr = address_of(path);
    if (fd_ < 0 || connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      throw std::runtime_error("connect to " + path + ": " + std::strerror(errno));
    }
  }
  ~RawClient() { close(fd_); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  void send_text(const std::string& text) const {
    for (std::size_t sent = 0; sent < text.size();) {
      const ssize_t n = ::send(fd_, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n < 0) {
        throw std::runtime_error(std::string("send: ") + std::strerror(errno));
      }
      sent += static_cast<std::size_t>(n);
    }
  }
  void shut_write() const { shutdown(fd_, SHUT_WR); }

  // The next line without its newline; nullopt at EOF or after kTimeout.
  std::optional<std::string> read_line() {
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    for (;;) {
      if (const auto end = pending_.find('\n'); end != std::string::npos) {
        std::string line = pending_.substr(0, end);
        pending_.erase(0, end + 1);
        return line;
      }
      pollfd pfd{fd_, POLLIN, 0};
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
        return std::nullopt;
      }
      std::array<char, 4096> buf{};
      const ssize_t n = recv(fd_, buf.data(), buf.size(), 0);
      if (n <= 0) {
        return std::nullopt;
      }
      pending_.append(buf.data(), static_cast<std::size_t>(n));
    }
  }
  json ask(const std::string& line) {
    send_text(line + "\n");
    const auto answer = read_line();
    return answer ? json::parse(*answer) : json{{"test", "no answer"}};
  }
  // True when the server closed the connection (EOF or reset) within kTimeout.
  bool closed_by_server() {
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(kTimeout.count())) <= 0) {
      return false;
    }
    std::array<char, 64> buf{};
    return recv(fd_, buf.data(), buf.size(), 0) <= 0;
  }

 private:
  int fd_;
  std::string pending_;
};

// A handler that remembers every request and answers {"ok":true,"echo":request}.
class EchoHandler {
 public:
  ApiHandler handler() {
    return [this](const json& request) {
      const std::lock_guard lock(mutex_);
      requests_.push_back(request);
      return json{{"ok", true}, {"echo", request}};
    };
  }
  std::vector<json> requests() {
    const std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  std::mutex mutex_;
  std::vector<json> requests_;
};

mode_t mode_of(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    return 0;
  }
  return st.st_mode & 07777;
}

// Leaves a socket file at path that nobody listens on, as a killed agent does.
void make_stale_socket(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const sockaddr_un addr = address_of(path);
  ASSERT_EQ(bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);
}

// Runs body in a child whose uids and gids are all 65534 and returns what it returned; nullopt
// when privileges cannot be dropped here (not root, or no CAP_SETUID).
std::optional<std::string> as_nobody(const std::function<std::string()>& body) {
  if (geteuid() != 0) {
    return std::nullopt;
  }
  std::array<int, 2> pipe_fds{};
  if (pipe(pipe_fds.data()) != 0) {
    return std::nullopt;
  }
  const pid_t child = fork();
  if (child == 0) {
    close(pipe_fds[0]);
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) {
      _exit(3);
    }
    std::string out;
    try {
      out = body();
    } catch (const std::exception& e) {
      out = std::string("exception: ") + e.what();
    }
    _exit(write(pipe_fds[1], out.data(), out.size()) == static_cast<ssize_t>(out.size()) ? 0 : 4);
  }
  close(pipe_fds[1]);
  std::string out;
  std::array<char, 512> buf{};
  for (ssize_t n = 0; (n = read(pipe_fds[0], buf.data(), buf.size())) > 0;) {
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  close(pipe_fds[0]);
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
      WEXITSTATUS(status) == 3) {
    return std::nullopt;
  }
  return out;
}

TEST(CheckApiRequestTest, WellFormedRequests) {
  EXPECT_EQ(check_api_request(json{{"op", "ping"}}), std::nullopt);
  EXPECT_EQ(check_api_request(json{{"op", "failures"}}), std::nullopt);
  EXPECT_EQ(check_api_request(json::parse(R"({"op":"failures","port":8080,"pid":1,)"
                                          R"("netns":4026531840,"since_ms":0,"limit":50})")),
            std::nullopt);
  EXPECT_EQ(check_api_request(json{{"op", "holders"}, {"port", 0}, {"proto", "udp"}}),
            std::nullopt);
  EXPECT_EQ(check_api_request(json{{"op", "ping"}, {"future_field", 1}}), std::nullopt);
}

TEST(CheckApiRequestTest, Problems) {
  EXPECT_THAT(check_api_request(json::array()).value_or(""), HasSubstr("one JSON object"));
  EXPECT_THAT(check_api_request(json::object()).value_or(""), HasSubstr("missing \"op\""));
  EXPECT_THAT(check_api_request(json{{"op", 1}}).value_or(""), HasSubstr("missing \"op\""));
  EXPECT_EQ(check_api_request(json{{"op", "frobnicate"}}).value_or(""),
            "unknown op \"frobnicate\": one of failures, holders, ping, top");
  EXPECT_THAT(check_api_request(json{{"op", std::string(1000, 'x')}}).value_or("").size(),
              ::testing::Lt(100U));
  EXPECT_EQ(check_api_request(json{{"op", "failures"}, {"port", 65536}}).value_or(""),
            "\"port\" must be an integer from 0 to 65535");
  EXPECT_THAT(check_api_request(json{{"op", "failures"}, {"pid", -1}}).value_or(""),
              HasSubstr("\"pid\" must be an integer"));
  EXPECT_THAT(check_api_request(json{{"op", "failures"}, {"limit", 1.5}}).value_or(""),
              HasSubstr("\"limit\" must be an integer"));
  EXPECT_THAT(check_api_request(json{{"op", "failures"}, {"netns", "4026531840"}}).value_or(""),
              HasSubstr("\"netns\" must be an integer"));
  EXPECT_EQ(check_api_request(json{{"op", "holders"}, {"proto", "tcp"}}).value_or(""),
            "\"holders\" needs \"port\"");
  EXPECT_THAT(check_api_request(json{{"op", "holders"}, {"port", 80}}).value_or(""),
              HasSubstr("\"proto\": \"tcp\" or \"udp\""));
  EXPECT_THAT(
      check_api_request(json{{"op", "holders"}, {"port", 80}, {"proto", "sctp"}}).value_or(""),
      HasSubstr("\"proto\": \"tcp\" or \"udp\""));
}

// The stream without the socket: what the server and the fuzzer (tests/fuzz) drive.
std::vector<json> answers_of(const std::string& out) {
  std::vector<json> answers;
  std::size_t start = 0;
  for (std::size_t end = out.find('\n'); end != std::string::npos; end = out.find('\n', start)) {
    answers.push_back(json::parse(out.substr(start, end - start)));
    start = end + 1;
  }
  EXPECT_EQ(start, out.size()) << "an answer without its newline";
  return answers;
}

const ApiHandler kEcho = [](const json& request) { return json{{"echo", request.at("op")}}; };

TEST(ApiRequestStreamTest, SplitsLinesAcrossReadsAndSkipsBlankOnes) {
  ApiRequestStream stream(kEcho, 1024, 1 << 20);
  stream.receive(R"({"op":"pi)");
  stream.answer();
  EXPECT_TRUE(stream.out().empty());
  stream.receive(
      "ng\"}\r\n\n\r\n"
      R"({"op":"nope"})"
      "\n");
  stream.answer();
  const auto answers = answers_of(stream.out());
  ASSERT_EQ(answers.size(), 2U);
  EXPECT_EQ(answers[0], (json{{"echo", "ping"}}));
  EXPECT_THAT(answers[1].at("error").get<std::string>(), StartsWith("unknown op \"nope\""));
  EXPECT_EQ(stream.buffered(), 0U);
}

TEST(ApiRequestStreamTest, ALastLineWithoutItsNewlineIsAnsweredAtTheEnd) {
  ApiRequestStream stream(kEcho, 1024, 1 << 20);
  stream.receive(R"({"op":"ping"})");
  stream.answer();
  EXPECT_TRUE(stream.out().empty());
  stream.finish();
  stream.answer();
  EXPECT_EQ(answers_of(stream.out()), (std::vector<json>{{{"echo", "ping"}}}));
}

TEST(ApiRequestStreamTest, AnOversizedLineIsRefusedOnceAndItsRestDropped) {
  ApiRequestStream stream(kEcho, 16, 1 << 20);
  stream.receive(std::string(40, 'x'));
  stream.answer();
  EXPECT_EQ(stream.buffered(), 0U) << "an oversized line is not kept";
  stream.receive(std::string(40, 'y'));
  stream.receive("\n{\"op\":\"ping\"}\n");
  stream.answer();
  const auto answers = answers_of(stream.out());
  ASSERT_EQ(answers.size(), 2U);
  EXPECT_EQ(answers[0], (json{{"error", "request longer than 16 bytes"}}));
  EXPECT_EQ(answers[1], (json{{"echo", "ping"}}));
  // finish() after the dropped tail of a line adds no answer of its own.
  stream.receive(std::string(40, 'z'));
  stream.answer();
  stream.finish();
  stream.answer();
  EXPECT_EQ(answers_of(stream.out()).size(), 3U);
}

TEST(ApiRequestStreamTest, LinesWaitWhileTheAnswersReachTheHighWater) {
  ApiRequestStream stream(kEcho, 1024, 1);  // one answer is already at the high water
  stream.receive("{\"op\":\"ping\"}\n{\"op\":\"ping\"}\n");
  stream.answer();
  EXPECT_EQ(answers_of(stream.out()).size(), 1U);
  EXPECT_GT(stream.buffered(), 0U);
  stream.out().clear();  // what the server does once it has sent them
  stream.answer();
  EXPECT_EQ(answers_of(stream.out()).size(), 1U);
  EXPECT_EQ(stream.buffered(), 0U);
}

TEST(ApiRequestStreamTest, AnswerLineNeverThrows) {
  const ApiHandler throws_int = [](const json&) -> json { throw 7; };
  EXPECT_EQ(answer_api_line("{\"op\":\"ping\"}", throws_int),
            (json{{"error", "the agent could not answer"}}));
  EXPECT_EQ(answer_api_line("[1,", kEcho),
            (json{{"error", "malformed JSON; send one JSON object per line"}}));
  EXPECT_EQ(answer_api_line("\"ping\"", kEcho).count("error"), 1U);
}

TEST(LocalApiTest, PingRoundTrip) {
  const TempDir dir;
  EchoHandler echo;
  const LocalApiServer api(dir.file("api.sock"), echo.handler());
  const auto answer = api_request(api.socket_path(), json{{"op", "ping"}}, kTimeout);
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->at("ok"), true);
  EXPECT_EQ(answer->at("echo"), json({{"op", "ping"}}));
}

TEST(LocalApiTest, FailuresFiltersReachTheHandler) {
  const TempDir dir;
  EchoHandler echo;
  const LocalApiServer api(dir.file("api.sock"), echo.handler());
  const json request = json::parse(
      R"({"op":"failures","port":8080,"pid":1234,"netns":4026531840,"since_ms":60000,"limit":5})");
  const auto answer = api_request(api.socket_path(), request, kTimeout);
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->at("echo"), request);
  ASSERT_EQ(echo.requests().size(), 1U);
  EXPECT_EQ(echo.requests()[0], request);
}

TEST(LocalApiTest, HandlerExceptionBecomesAnErrorAnswer) {
  const TempDir dir;
  int calls = 0;
  const LocalApiServer api(dir.file("api.sock"), [&calls](const json&) -> json {
    if (++calls == 1) {
      throw std::runtime_error("ring not ready");
    }
    return json{{"ok", true}};
  });
  RawClient client(api.socket_path());
  EXPECT_EQ(client.ask(R"({"op":"ping"})"), json({{"error", "ring not ready"}}));
  EXPECT_EQ(client.ask(R"({"op":"ping"})"), json({{"ok", true}}));
}

TEST(LocalApiTest, MalformedAndOversizedRequestsLeaveTheConnectionUsable) {
  const TempDir dir;
  EchoHandler echo;
  LocalApiLimits limits;
  limits.max_request_bytes = 1024;
  const LocalApiServer api(dir.file("api.sock"), echo.handler(), limits);
  RawClient client(api.socket_path());

  EXPECT_THAT(client.ask("{not json").value("error", ""), HasSubstr("malformed JSON"));
  EXPECT_EQ(client.ask(R"({"op":"ping"})").at("ok"), true);

  // One line over the cap, complete in one write.
  EXPECT_THAT(client.ask(std::string(2000, ' ') + R"({"op":"ping"})").value("error", ""),
              HasSubstr("request longer than 1024 bytes"));
  EXPECT_EQ(client.ask(R"({"op":"ping"})").at("ok"), true);

  // One line over the cap, arriving in pieces: answered once, the rest of it dropped.
  client.send_text(std::string(1500, 'x'));
  const auto early = client.read_line();
  ASSERT_TRUE(early.has_value());
  EXPECT_THAT(*early, HasSubstr("request longer than"));
  client.send_text(std::string(3000, 'y'));
  client.send_text(std::string(500, 'z') + "\n");
  EXPECT_EQ(client.ask(R"({"op":"ping"})").at("ok"), true);
  EXPECT_EQ(echo.requests().size(), 3U);
}

TEST(LocalApiTest, DefaultCapIs64KiB) {
  const TempDir dir;
  EchoHandler echo;
  const LocalApiServer api(dir.file("api.sock"), echo.handler());
  RawClient client(api.socket_path());
  const std::string padded = R"({"op":"ping","pad":")" + std::string(60000, 'p') + "\"}";
  EXPECT_EQ(client.ask(padded).at("ok"), true);
  EXPECT_THAT(client.ask(std::string(70000, ' ')).value("error", ""),
              HasSubstr("request longer than 65536 bytes"));
  EXPECT_EQ(client.ask(R"({"op":"ping"})").at("ok"), true);
}

TEST(LocalApiTest, UnknownOpAndBadFields) {
  const TempDir dir;
  EchoHandler echo;
  const LocalApiServer api(dir.file("api.sock"), echo.handler());
  RawClient client(api.socket_path());
  EXPECT_EQ(client.ask(R"({"op":"shutdown"})").value("error", ""),
            "unknown op \"shutdown\": one of failures, holders, ping, top");
  EXPECT_THAT(client.ask(R"([1,2])").value("error", ""), HasSubstr("one JSON object"));
  EXPECT_THAT(client.ask(R"({"op":"holders","port":80})").value("error", ""),
              HasSubstr("\"proto\""));
  EXPECT_EQ(client.ask(R"({"op":"holders","port":80,"proto":"udp"})").at("ok"), true);
  EXPECT_EQ(echo.requests().size(), 1U);
}

TEST(LocalApiTest, PipelinedRequestsAreAnsweredInOrder) {
  const TempDir dir;
  EchoHandler echo;
  const LocalApiServer api(dir.file("api.sock"), echo.handler());
  RawClient client(api.socket_path());
  client.send_text(
      "{\"op\":\"failures\",\"limit\":1}\r\n\n{bad\n{\"op\":\"failures\",\"limit\":2}\n");
  EXPECT_EQ(json::parse(client.read_line().value_or("null")).at("echo").at("limit"), 1);
  EXPECT_TRUE(json::parse(client.read_line().value_or("null")).contains("error"));
  EXPECT_EQ(json::parse(client.read_line().value_or("null")).at("echo").at("limit"), 2);
}

TEST(LocalApiTest, ClientThatShutsItsSideStillGetsItsAnswer) {
  const TempDir dir;
  EchoHandler echo;
  const LocalApiServer api(dir.file("api.sock"), echo.handler());
  RawClient client(api.socket_path());
  client.send_text(R"({"op":"ping"})");  // no newline: the end of the stream ends the line
  client.shut_write();
  const auto answer = client.read_line();
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(json::parse(*answer).at("ok"), true);
  EXPECT_TRUE(client.closed_by_server());
}

TEST(LocalApiTest, IdleConnectionsAreClosed) {
  const TempDir dir;
  EchoHandler echo;
  LocalApiLimits limits;
  limits.idle_timeout = milliseconds(100);
  const LocalApiServer api(dir.file("api.sock"), echo.handler(), limits);
  RawClient client(api.socket_path());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(client.closed_by_server());
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(90));
}

TEST(LocalApiTest, ClientsBeyondTheBoundAreRefused) {
  const TempDir dir;
  EchoHandler echo;
  LocalApiLimits limits;
  limits.max_clients = 2;
  const LocalApiServer api(dir.file("api.sock"), echo.handler(), limits);
  RawClient first(api.socket_path());
  RawClient second(api.socket_path());
  EXPECT_EQ(first.ask(R"({"op":"ping"})").at("ok"), true);
  EXPECT_EQ(second.ask(R"({"op":"ping"})").at("ok"), true);
  RawClient third(api.socket_path());
  EXPECT_THAT(third.read_line().value_or(""), HasSubstr("serving 2 clients already"));
  EXPECT_TRUE(third.closed_by_server());
  EXPECT_EQ(first.ask(R"({"op":"ping"})").at("ok"), true);
}

TEST(LocalApiTest, StaleSocketFileIsReplaced) {
  const TempDir dir;
  const std::string path = dir.file("api.sock");
  make_stale_socket(path);
  ASSERT_EQ(api_request(path, json{{"op", "ping"}}, kTimeout), std::nullopt);
  EchoHandler echo;
  const LocalApiServer api(path, echo.handler());
  const auto answer = api_request(path, json{{"op", "ping"}}, kTimeout);
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->at("ok"), true);
}

TEST(LocalApiTest, SecondServerOnALivePathThrowsTheClearError) {
  const TempDir dir;
  const std::string path = dir.file("api.sock");
  EchoHandler echo;
  const LocalApiServer first(path, echo.handler());
  try {
    const LocalApiServer second(path, echo.handler());
    ADD_FAILURE() << "a second server started on " << path;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "another portlens agent is already serving " + path +
                                         "; stop it or use --api.socket PATH");
  }
  EXPECT_TRUE(api_request(path, json{{"op", "ping"}}, kTimeout).has_value());
}

TEST(LocalApiTest, PathThatIsNotASocketIsLeftAlone) {
  const TempDir dir;
  const std::string path = dir.file("api.sock");
  std::ofstream(path) << "precious";
  EchoHandler echo;
  try {
    const LocalApiServer api(path, echo.handler());
    ADD_FAILURE() << "served over a regular file";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + " exists and is not a socket"));
  }
  EXPECT_TRUE(fs::is_regular_file(path));
}

TEST(LocalApiTest, PathTooLong) {
  EchoHandler echo;
  EXPECT_THROW(LocalApiServer("/tmp/" + std::string(200, 'x'), echo.handler()), Error);
}

TEST(LocalApiTest, CreatesDirectories0700AndSocket0600WhateverTheUmask) {
  const TempDir dir;
  const std::string path = dir.file("run/portlens/api.sock");
  EchoHandler echo;
  const mode_t old_umask = umask(0);
  std::optional<LocalApiServer> api;
  try {
    api.emplace(path, echo.handler());
  } catch (...) {
    umask(old_umask);
    throw;
  }
  umask(old_umask);
  EXPECT_EQ(mode_of(dir.file("run")), 0700U);
  EXPECT_EQ(mode_of(dir.file("run/portlens")), 0700U);
  EXPECT_EQ(mode_of(path), 0600U);
  EXPECT_EQ(fs::symlink_status(path).type(), fs::file_type::socket);
}

TEST(LocalApiTest, StopIsPromptAndRemovesTheSocket) {
  const TempDir dir;
  const std::string path = dir.file("api.sock");
  EchoHandler echo;
  LocalApiServer api(path, echo.handler());
  RawClient idle(path);
  EXPECT_EQ(idle.ask(R"({"op":"ping"})").at("ok"), true);
  const auto start = std::chrono::steady_clock::now();
  api.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(100));
  EXPECT_FALSE(fs::exists(fs::symlink_status(path)));
  EXPECT_TRUE(idle.closed_by_server());
  EXPECT_EQ(api_request(path, json{{"op", "ping"}}, kTimeout), std::nullopt);
  api.stop();  // idempotent
}

TEST(LocalApiTest, StopLeavesAnotherAgentsSocketAlone) {
  const TempDir dir;
  const std::string path = dir.file("api.sock");
  EchoHandler echo;
  LocalApiServer api(path, echo.handler());
  ASSERT_EQ(unlink(path.c_str()), 0);
  make_stale_socket(path);  // a new file at the path, not ours
  api.stop();
  EXPECT_TRUE(fs::exists(fs::symlink_status(path)));
}

TEST(ApiRequestTest, NulloptWhenNothingListens) {
  const TempDir dir;
  EXPECT_EQ(api_request(dir.file("api.sock"), json{{"op", "ping"}}, kTimeout), std::nullopt);
  EXPECT_EQ(api_request(dir.file("no-dir/api.sock"), json{{"op", "ping"}}, kTimeout), std::nullopt);
}

TEST(ApiRequestTest, SlowAgentTimesOut) {
  const TempDir dir;
  const LocalApiServer api(dir.file("api.sock"), [](const json&) {
    std::this_thread::sleep_for(milliseconds(300));
    return json{{"ok", true}};
  });
  try {
    api_request(api.socket_path(), json{{"op", "ping"}}, milliseconds(50));
    ADD_FAILURE() << "no timeout";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("did not answer within 50 ms"));
  }
}

TEST(LocalApiTest, NonRootPeerIsRefused) {
  const TempDir dir;
  const std::string path = dir.file("api.sock");
  EchoHandler echo;
  const LocalApiServer api(path, echo.handler());
  // Open the file modes up, so only the peer-credential check stands between the peer and the
  // handler.
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  ASSERT_EQ(chmod(path.c_str(), 0666), 0);
  // The refusal comes at accept, before any request is read: the peer may not get to send.
  const auto answer = as_nobody([&path] {
    RawClient client(path);
    const std::string line = client.read_line().value_or("no answer");
    return line + (client.closed_by_server() ? " closed" : " open");
  });
  if (!answer) {
    GTEST_SKIP() << "needs root and the right to drop privileges";
  }
  EXPECT_EQ(*answer, R"({"error":"root only"} closed)");
  // api_request shows the refusal even when the agent closed before the request went out.
  const auto via_client = as_nobody([&path] {
    return api_request(path, json{{"op", "ping"}}, kTimeout).value_or(json("nullopt")).dump();
  });
  EXPECT_EQ(via_client, R"({"error":"root only"})");
  EXPECT_TRUE(echo.requests().empty());
}

TEST(ApiRequestTest, NonRootCallerIsToldToRunAsRoot) {
  const TempDir dir;
  const std::string path = dir.file("api.sock");
  EchoHandler echo;
  const LocalApiServer api(path, echo.handler());
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);  // the socket itself stays 0600
  const auto answer = as_nobody([&path] {
    try {
      api_request(path, json{{"op", "ping"}}, kTimeout);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  if (!answer) {
    GTEST_SKIP() << "needs root and the right to drop privileges";
  }
  EXPECT_THAT(*answer, StartsWith("cannot ask the portlens agent at " + path));
  EXPECT_THAT(*answer, HasSubstr("run as root"));
}

}  // namespace
}  // namespace portlens
