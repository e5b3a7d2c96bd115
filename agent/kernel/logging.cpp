#include "agent/kernel/logging.hpp"

#include <bpf/libbpf.h>

#include <array>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <memory>
#include <string_view>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "agent/model/error.hpp"
#include "agent/render/format.hpp"

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

// logfmt and JSON need the message escaped; spdlog's %v writes it raw.
class EscapedMessage : public spdlog::custom_flag_formatter {
 public:
  explicit EscapedMessage(bool json) : json_(json) {}
  void format(const spdlog::details::log_msg& msg, const std::tm& /*tm*/,
              spdlog::memory_buf_t& dest) override {
    for (const char c : std::string_view(msg.payload.data(), msg.payload.size())) {
      switch (c) {
        case '"':
          dest.append(std::string_view("\\\""));
          break;
        case '\\':
          dest.append(std::string_view("\\\\"));
          break;
        case '\n':
          dest.append(std::string_view("\\n"));
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            const std::string esc = json_ ? fmt::format("\\u{:04x}", c) : " ";
            dest.append(std::string_view(esc));
          } else {
            dest.push_back(c);
          }
      }
    }
  }
  [[nodiscard]] std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessage>(json_);
  }

 private:
  bool json_;
};

// The plain form's message, escaped as all human output is (escape_for_terminal): a log line
// that names a namespace path or a comm cannot clear the screen or forge a line of its own.
class TerminalMessage : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm& /*tm*/,
              spdlog::memory_buf_t& dest) override {
    const std::string escaped =
        escape_for_terminal(std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(escaped.data(), escaped.data() + escaped.size());
  }
  [[nodiscard]] std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<TerminalMessage>();
  }
};

void install_logger() {
  auto logger = std::make_shared<spdlog::logger>("portlens",
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  spdlog::set_default_logger(logger);
  libbpf_set_print(libbpf_to_spdlog);
}

}  // namespace

void setup_logging(const std::string& level, const std::string& format) {
  const std::map<std::string, spdlog::level::level_enum> levels = {{"debug", spdlog::level::debug},
                                                                   {"info", spdlog::level::info},
                                                                   {"warn", spdlog::level::warn},
                                                                   {"error", spdlog::level::err}};
  const auto it = levels.find(level);
  if (it == levels.end()) {
    throw UsageError("--log.level " + level + ": expected debug, info, warn or error");
  }
  if (format != "logfmt" && format != "json") {
    throw UsageError("--log.format " + format + ": expected logfmt or json");
  }
  install_logger();
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<EscapedMessage>('*', format == "json");
  formatter->set_pattern(format == "json"
                             ? R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","msg":"%*"})"
                             : R"(ts=%Y-%m-%dT%H:%M:%S.%eZ level=%l msg="%*")");
  spdlog::default_logger()->set_formatter(std::move(formatter));
  spdlog::set_level(it->second);
}

void setup_logging(int verbosity) {
  install_logger();
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<TerminalMessage>('*');
  formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %*");
  spdlog::default_logger()->set_formatter(std::move(formatter));
  spdlog::set_level(verbosity >= 2   ? spdlog::level::trace
                    : verbosity == 1 ? spdlog::level::debug
                                     : spdlog::level::warn);
}

}  // namespace portlens
