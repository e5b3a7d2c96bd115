#include "agent/model/snapshot.hpp"

namespace portlens {

std::string_view to_string(SnapshotSource source) {
  return source == SnapshotSource::kBpfIterator ? "bpf_iterator" : "sock_diag";
}

void make_compact(Snapshot& snapshot) {
  if (snapshot.is_compact) {
    return;
  }
  for (const SocketEntry& entry : snapshot.table.sockets) {
    snapshot.compact.push_back(entry);
  }
  snapshot.compact.seal();
  std::vector<SocketEntry>().swap(snapshot.table.sockets);
  snapshot.is_compact = true;
}

}  // namespace portlens
