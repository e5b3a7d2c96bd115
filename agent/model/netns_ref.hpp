// A network namespace as portlens holds it: a file that refers to it and its inode.
#pragma once

#include <cstdint>
#include <string>

namespace portlens {

struct NetnsRef {
  std::string path;         // a file that refers to the namespace
  std::uint32_t inode = 0;  // what the kernel reports as the netns (ns.inum)
};

}  // namespace portlens
