// RAII for what libbpf hands out: a skeleton is destroyed with its owner (detaching and closing
// everything it holds), and so is a link, on every path, errors included.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <memory>
#include <string>

#include "agent/kernel/kernel_only.hpp"
#include "agent/model/error.hpp"
#include "bpf/events.h"

namespace portlens {

// A bpftool skeleton (portlens_bpf, snapshot_bpf, ...) with its generated destroy function. The
// deleter is a function pointer so that headers can hold one with the skeleton type only
// declared.
template <typename Skel>
using SkeletonPtr = std::unique_ptr<Skel, void (*)(Skel*)>;

template <typename Skel>
SkeletonPtr<Skel> adopt_skeleton(Skel* skel, void (*destroy)(Skel*)) {
  return SkeletonPtr<Skel>(skel, destroy);
}

// Every BPF object records the PL_ABI_VERSION of the bpf/events.h it was built with (rodata
// pl_abi_version); records of another layout would be misread, so such an object is refused.
inline void check_abi(std::uint32_t object_abi, const char* object) {
  if (object_abi != PL_ABI_VERSION) {
    throw Error(std::string("the ") + object + " BPF object was built for events ABI " +
                std::to_string(object_abi) + ", this binary for " + std::to_string(PL_ABI_VERSION) +
                ": rebuild portlens from one source tree");
  }
}

struct LinkDeleter {
  void operator()(bpf_link* link) const { bpf_link__destroy(link); }
};
using LinkPtr = std::unique_ptr<bpf_link, LinkDeleter>;

}  // namespace portlens
