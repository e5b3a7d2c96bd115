#include "agent/logging.hpp"

#include <bpf/libbpf.h>

#include <array>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <string_view>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace portlens {
namespace {

// libbpf prints through this; its messages are debugging detail (verifier logs, relocations),
// so they only show with -v. Errors that matter reach the user through our own messages.
int libbpf_to_spdlog(enum libbpf_print_level /*level*/, const char* format, va_list args) {
  if (!spdlog::should_log(spdlog::level::debug)) {
    return 0;
  }
  std::array<char, 1024> buf{};
  const int n = std::vsnprintf(buf.data(), buf.size(), format, args);
  std::string_view msg(buf.data(), n < 0 ? 0 : std::min<std::size_t>(n, buf.size() - 1));
  while (!msg.empty() && msg.back() == '\n') {
    msg.remove_suffix(1);
  }
  spdlog::debug("libbpf: {}", msg);
  return n;
}

}  // namespace

void setup_logging(int verbosity) {
  auto logger = std::make_shared<spdlog::logger>("portlens",
                                                 std::make_shared<spdlog::sinks::stderr_sink_st>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(verbosity >= 2   ? spdlog::level::trace
                    : verbosity == 1 ? spdlog::level::debug
                                     : spdlog::level::warn);
  libbpf_set_print(libbpf_to_spdlog);
}

}  // namespace portlens
