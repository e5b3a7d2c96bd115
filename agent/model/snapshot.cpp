#include "agent/model/snapshot.hpp"

namespace portlens {

std::string_view to_string(SnapshotSource source) {
  return source == SnapshotSource::kBpfIterator ? "bpf_iterator" : "sock_diag";
}

}  // namespace portlens
