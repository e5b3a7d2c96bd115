#include "agent/model/call.hpp"

namespace portlens {

std::string_view to_string(Syscall syscall) {
  switch (syscall) {
    case Syscall::kBind:
      return "bind";
    case Syscall::kListen:
      return "listen";
    case Syscall::kConnect:
      return "connect";
  }
  return "?";
}

}  // namespace portlens
