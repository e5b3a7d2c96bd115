// RAII for what libbpf hands out: a skeleton is destroyed with its owner (detaching and closing
// everything it holds), and so is a link, on every path, errors included.
#pragma once

#include <bpf/libbpf.h>

#include <memory>

#include "agent/kernel/kernel_only.hpp"

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

struct LinkDeleter {
  void operator()(bpf_link* link) const { bpf_link__destroy(link); }
};
using LinkPtr = std::unique_ptr<bpf_link, LinkDeleter>;

}  // namespace portlens
