// The local API's request stream (exporters/local_api.hpp), fed the way a hostile local client
// could: the input is cut into reads (the first byte of each chunk says how long it is), sent to
// an ApiRequestStream with a small line cap, then the client shuts its side. The answers must be
// whole lines, each a JSON object, at most one per line sent plus one per cap passed, and the
// stream must hold at most one line's worth of bytes between reads.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "exporters/local_api.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace {

constexpr std::size_t kMaxRequestBytes = 64;
constexpr std::size_t kHighWater = 256;

// What the agent's handler gives back for the ops, in shape; the fields come from the request.
nlohmann::json handle(const nlohmann::json& request) {
  const auto& op = request.at("op").get_ref<const std::string&>();
  if (op == "holders" && request.at("port").get<std::uint64_t>() == 0) {
    throw std::runtime_error("port 0 has no holders");  // becomes {"error": ...}
  }
  return nlohmann::json{{"op", op}, {"request", request}};
}

// Checks and takes the answers out, as the server does once it has sent them.
std::size_t take_answers(portlens::ApiRequestStream& stream) {
  std::string& out = stream.out();
  FUZZ_CHECK(out.empty() || out.back() == '\n');
  std::size_t answers = 0;
  std::size_t start = 0;
  for (std::size_t end = out.find('\n'); end != std::string::npos; end = out.find('\n', start)) {
    const auto answer =
        nlohmann::json::parse(std::string_view(out).substr(start, end - start), nullptr, false);
    FUZZ_CHECK(answer.is_object());
    FUZZ_CHECK(answer.contains("error") || answer.contains("op"));
    ++answers;
    start = end + 1;
  }
  out.clear();
  return answers;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const portlens::ApiHandler handler = handle;
  portlens::ApiRequestStream stream(handler, kMaxRequestBytes, kHighWater);
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto newlines = static_cast<std::size_t>(std::count(input.begin(), input.end(), '\n'));
  std::size_t answers = 0;
  std::size_t offset = 0;
  while (offset < input.size()) {
    const std::size_t length = std::min<std::size_t>(data[offset] % 97 + 1, input.size() - offset);
    stream.receive(input.substr(offset, length));
    offset += length;
    stream.answer();
    // A client that reads only now and then: the answers wait, the lines behind them too.
    if (data[offset - 1] % 3 == 0) {
      answers += take_answers(stream);
      stream.answer();
    }
    FUZZ_CHECK(stream.out().size() < kHighWater + (std::size_t{1} << 12));
  }
  stream.finish();
  for (int round = 0; round < 1 + static_cast<int>(size); ++round) {
    stream.answer();
    const std::size_t taken = take_answers(stream);
    answers += taken;
    if (taken == 0) {
      break;
    }
  }
  FUZZ_CHECK(stream.buffered() == 0);
  // One answer per line, and one more for each line refused for its length while it arrived.
  FUZZ_CHECK(answers <= newlines + 1 + size / kMaxRequestBytes);
  // Every line on its own, as answer_api_line gets it.
  const auto direct = portlens::answer_api_line(input, handler);
  FUZZ_CHECK(direct.is_object());
  return 0;
}
