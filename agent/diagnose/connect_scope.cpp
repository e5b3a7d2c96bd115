#include "agent/diagnose/connect_scope.hpp"

namespace portlens {

std::pair<Endpoint, Endpoint> unmapped_tuple(const Endpoint& local, const Endpoint& remote) {
  return {Endpoint{local.addr.unmapped(), local.port},
          Endpoint{remote.addr.unmapped(), remote.port}};
}

bool toward(const Endpoint& remote, const Endpoint& destination) {
  return remote.port == destination.port && remote.addr.unmapped() == destination.addr;
}

bool ConnectScope::wants(const SocketEntry& entry, std::optional<TcpState> state) const {
  // holds_port_explicitly() of the entry in that state.
  if (entry.explicit_port || state == TcpState::kListen || state == TcpState::kClose ||
      state == TcpState::kBoundInactive) {
    return true;
  }
  if (entry.sock_id != 0 && sock_ids.contains(entry.sock_id)) {
    return true;
  }
  return entry.remote && (toward(*entry.remote, remote) ||
                          (!four_tuples.empty() &&
                           four_tuples.contains(unmapped_tuple(entry.local, *entry.remote))));
}

}  // namespace portlens
