#include "agent/error.hpp"

#include <array>
#include <cstring>

namespace portlens {

std::string errno_text(int err) {
  std::array<char, 128> buf{};
  // GNU strerror_r returns the message, which may or may not live in buf.
  return strerror_r(err < 0 ? -err : err, buf.data(), buf.size());
}

}  // namespace portlens
