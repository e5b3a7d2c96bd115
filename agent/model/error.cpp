#include "agent/model/error.hpp"

#include <array>
#include <cstring>

namespace portlens {

std::string errno_text(int err) {
  std::array<char, 128> buf{};
  // GNU strerror_r returns the message, which may or may not live in buf.
  const long positive = err < 0 ? -static_cast<long>(err) : err;
  if (positive > 4095) {  // MAX_ERRNO: nothing larger is an errno
    return "error " + std::to_string(err);
  }
  return strerror_r(static_cast<int>(positive), buf.data(), buf.size());
}

}  // namespace portlens
