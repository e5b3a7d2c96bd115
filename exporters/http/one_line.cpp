#include "exporters/http/one_line.hpp"

namespace portlens::http {

std::string one_line(std::string_view message) {
  constexpr std::string_view kHex = "0123456789abcdef";
  std::string shown;
  shown.reserve(message.size());
  for (const char c : message) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      shown += "\\x";
      shown += kHex[byte >> 4];
      shown += kHex[byte & 0xf];
    } else {
      shown += c;
    }
  }
  return shown;
}

}  // namespace portlens::http
