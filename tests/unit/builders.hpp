// Small builders the unit tests share: addresses from text, the sockets the exporter and the
// ephemeral accounting are tested with, and a temporary directory removed on destruction.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>  // mkdtemp
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "agent/model/inet.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens::unit {

inline constexpr std::uint64_t kTestNetns = 4026531840;

// "10.0.0.1:80", "[::1]:80": the test fails (and gets a default Endpoint) when it does not parse.
inline Endpoint ep(std::string_view text) {
  auto e = Endpoint::parse(text);
  EXPECT_TRUE(e.has_value()) << text;
  return e.value_or(Endpoint{});
}

inline IpAddress ip(std::string_view text) {
  auto a = IpAddress::parse(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a.value_or(IpAddress{});
}

// A connection that connect() gave its port to; a TIME_WAIT one has a timer and timestamps,
// others an owner (pid 4242, java).
inline SocketEntry connection(std::string_view local, std::string_view remote,
                              TcpState state = TcpState::kEstablished,
                              std::uint64_t netns = kTestNetns) {
  SocketEntry e;
  e.proto = Proto::kTcp;
  e.state = state;
  e.local = ep(local);
  e.remote = ep(remote);
  e.netns = netns;
  e.reuseaddr = e.reuseport = e.v6only = false;
  e.bound_dev_if = 0;
  if (state == TcpState::kTimeWait) {
    e.time_wait_substate = TcpState::kTimeWait;
    e.time_wait_remaining = std::chrono::milliseconds{30000};
    e.timestamps = true;
  } else {
    e.uid = 1000;
    e.inode = 100;
    e.owner = SocketOwner{4242, "java"};
  }
  return e;
}

inline SocketEntry time_wait(std::string_view local, std::string_view remote,
                             std::uint64_t netns = kTestNetns) {
  return connection(local, remote, TcpState::kTimeWait, netns);
}

// A listening socket owned by pid 812 (nginx).
inline SocketEntry listener(std::string_view local, std::uint64_t netns = kTestNetns) {
  SocketEntry e;
  e.proto = Proto::kTcp;
  e.state = TcpState::kListen;
  e.local = ep(local);
  e.netns = netns;
  e.explicit_port = true;
  e.owner = SocketOwner{812, "nginx"};
  return e;
}

// A fresh directory under the system's temp dir, named PREFIX-XXXXXX, removed with its files.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "portlens-unit") {
    std::string pattern =
        (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  TempDir(TempDir&&) = delete;
  TempDir& operator=(TempDir&&) = delete;

  [[nodiscard]] std::string file(const std::string& name) const { return (path_ / name).string(); }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace portlens::unit
