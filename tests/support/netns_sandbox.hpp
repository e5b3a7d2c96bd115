// A private network namespace for tests and benchmarks: `ip netns add`, loopback up, removed on
// destruction. Code runs inside it on a thread that setns()es; sockets made there stay there.
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>

namespace portlens::testing {

class NetnsSandbox {
 public:
  // The namespace is named PREFIX-PID-N, unique within the process.
  explicit NetnsSandbox(std::string_view prefix = "portlens-test");
  ~NetnsSandbox();
  NetnsSandbox(const NetnsSandbox&) = delete;
  NetnsSandbox& operator=(const NetnsSandbox&) = delete;
  NetnsSandbox(NetnsSandbox&&) = delete;
  NetnsSandbox& operator=(NetnsSandbox&&) = delete;

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::string path() const { return "/run/netns/" + name_; }
  [[nodiscard]] std::uint32_t inode() const { return inode_; }

  // setns() the calling thread into this namespace; throws std::runtime_error.
  void enter() const;
  // Writes /proc/sys/<key with dots as slashes> inside the namespace.
  void sysctl(const std::string& key, const std::string& value) const;

  // Runs fn on a fresh thread that has entered this namespace; rethrows what fn throws.
  template <class F>
  auto run(F&& fn) const -> decltype(fn()) {
    using R = decltype(fn());
    std::exception_ptr error;
    std::optional<std::conditional_t<std::is_void_v<R>, int, R>> result;
    std::thread worker([&] {
      try {
        enter();
        if constexpr (std::is_void_v<R>) {
          fn();
          result = 0;
        } else {
          result = fn();
        }
      } catch (...) {
        error = std::current_exception();
      }
    });
    worker.join();
    if (error) {
      std::rethrow_exception(error);
    }
    if constexpr (!std::is_void_v<R>) {
      return std::move(*result);
    }
  }

 private:
  std::string name_;
  std::uint32_t inode_ = 0;
};

}  // namespace portlens::testing
