#include "agent/model/compact_sockets.hpp"

#include <functional>

namespace portlens {
namespace {

std::uint8_t tristate_bits(const std::optional<bool>& value) {
  if (!value) {
    return 0;
  }
  return *value ? 2 : 1;
}

std::optional<bool> from_tristate_bits(unsigned bits) {
  if (bits == 0) {
    return std::nullopt;
  }
  return bits == 2;
}

void mix(std::size_t& h, std::size_t value) { h = (h ^ value) * 0x100000001b3ULL; }

void mix_address(std::size_t& h, const IpAddress& a) {
  for (const auto b : a.bytes()) {
    mix(h, b);
  }
  mix(h, static_cast<std::size_t>(a.family()));
}

}  // namespace

// Row stays at 120 bytes: a field added to SocketEntry needs a place here and in at().
static_assert(sizeof(SocketEntry) == 264, "SocketEntry changed: update CompactSockets");

std::size_t CompactSockets::BucketHash::operator()(const TcpBindBucket& b) const {
  std::size_t h = 0xcbf29ce484222325ULL;
  mix(h, std::hash<int>{}(b.fastreuse));
  mix(h, std::hash<int>{}(b.fastreuseport));
  mix(h, b.fastuid);
  mix(h, static_cast<std::size_t>(b.fast_family));
  mix_address(h, b.fast_rcv_saddr);
  mix_address(h, b.fast_v6_rcv_saddr);
  mix(h, b.fast_ipv6_only ? 1 : 0);
  mix(h, std::hash<int>{}(b.l3mdev));
  return h;
}

void CompactSockets::push_back(const SocketEntry& e) {
  static_assert(sizeof(Row) == 120, "CompactSockets::Row grew");
  // A chunk grows as a vector does up to kChunkRows: a namespace of a few sockets holds a few
  // rows, not a whole chunk.
  if (chunks_.empty() || chunks_.back().size() == kChunkRows) {
    chunks_.emplace_back();
  }
  Row& r = chunks_.back().emplace_back();
  ++size_;
  std::uint16_t flags = 0;
  r.proto = e.proto;
  if (e.state) {
    flags |= kState;
    r.state = *e.state;
  }
  if (e.time_wait_substate) {
    flags |= kTimeWaitSubstate;
    r.time_wait_substate = *e.time_wait_substate;
  }
  r.local_addr = e.local.addr;
  r.local_port = e.local.port;
  if (e.remote) {
    flags |= kRemote;
    r.remote_addr = e.remote->addr;
    r.remote_port = e.remote->port;
  }
  r.netns = e.netns;
  r.tristates = static_cast<std::uint8_t>(
      tristate_bits(e.reuseaddr) | (tristate_bits(e.reuseport) << 2U) |
      (tristate_bits(e.v6only) << 4U) | (tristate_bits(e.timestamps) << 6U));
  if (e.bound_dev_if) {
    flags |= kBoundDevIf;
    r.bound_dev_if = *e.bound_dev_if;
  }
  if (e.uid) {
    flags |= kUid;
    r.uid = *e.uid;
  }
  if (e.explicit_port) {
    flags |= kExplicitPort;
  }
  r.inode = e.inode;
  r.sock_id = e.sock_id;
  if (e.owner) {
    r.owner = static_cast<std::uint32_t>(owners_.size());
    owners_.push_back(*e.owner);
  }
  if (e.time_wait_remaining) {
    flags |= kTimeWaitRemaining;
    r.time_wait_remaining_ms = e.time_wait_remaining->count();
  }
  if (e.bind_bucket) {
    const auto [it, added] =
        bucket_ids_.try_emplace(*e.bind_bucket, static_cast<std::uint32_t>(buckets_.size()));
    if (added) {
      buckets_.push_back(*e.bind_bucket);
    }
    r.bucket = it->second;
  }
  if (e.v4_rcv_saddr) {
    flags |= kV4RcvSaddr;
    r.v4_rcv_saddr = *e.v4_rcv_saddr;
  }
  if (e.udp_chain_position) {
    flags |= kUdpChainPosition;
    r.udp_chain_position = *e.udp_chain_position;
  }
  if (e.udp_slot_count) {
    flags |= kUdpSlotCount;
    r.udp_slot_count = *e.udp_slot_count;
  }
  r.flags = flags;
}

SocketEntry CompactSockets::at(std::size_t i) const {
  const Row& r = chunks_[i / kChunkRows][i % kChunkRows];
  const auto has = [&r](Flag flag) { return (r.flags & flag) != 0; };
  SocketEntry e;
  e.proto = r.proto;
  if (has(kState)) {
    e.state = r.state;
  }
  if (has(kTimeWaitSubstate)) {
    e.time_wait_substate = r.time_wait_substate;
  }
  e.local = Endpoint{r.local_addr, r.local_port};
  if (has(kRemote)) {
    e.remote = Endpoint{r.remote_addr, r.remote_port};
  }
  e.netns = r.netns;
  e.reuseaddr = from_tristate_bits(r.tristates & 3U);
  e.reuseport = from_tristate_bits((r.tristates >> 2U) & 3U);
  e.v6only = from_tristate_bits((r.tristates >> 4U) & 3U);
  e.timestamps = from_tristate_bits((r.tristates >> 6U) & 3U);
  if (has(kBoundDevIf)) {
    e.bound_dev_if = r.bound_dev_if;
  }
  if (has(kUid)) {
    e.uid = r.uid;
  }
  e.explicit_port = has(kExplicitPort);
  e.inode = r.inode;
  e.sock_id = r.sock_id;
  if (r.owner != kNone) {
    e.owner = owners_[r.owner];
  }
  if (has(kTimeWaitRemaining)) {
    e.time_wait_remaining = std::chrono::milliseconds(r.time_wait_remaining_ms);
  }
  if (r.bucket != kNone) {
    e.bind_bucket = buckets_[r.bucket];
  }
  if (has(kV4RcvSaddr)) {
    e.v4_rcv_saddr = r.v4_rcv_saddr;
  }
  if (has(kUdpChainPosition)) {
    e.udp_chain_position = r.udp_chain_position;
  }
  if (has(kUdpSlotCount)) {
    e.udp_slot_count = r.udp_slot_count;
  }
  return e;
}

void CompactSockets::seal() {
  decltype(bucket_ids_)().swap(bucket_ids_);
  if (!chunks_.empty()) {
    chunks_.back().shrink_to_fit();
  }
  buckets_.shrink_to_fit();
  owners_.shrink_to_fit();
}

std::size_t CompactSockets::memory_bytes() const {
  std::size_t bytes = chunks_.capacity() * sizeof(std::vector<Row>);
  for (const auto& chunk : chunks_) {
    bytes += chunk.capacity() * sizeof(Row);
  }
  bytes += buckets_.capacity() * sizeof(TcpBindBucket) + owners_.capacity() * sizeof(SocketOwner);
  // A node per bucket (key, id, next pointer, hash) and a bucket pointer.
  bytes += bucket_ids_.size() * (sizeof(TcpBindBucket) + 3 * sizeof(void*)) +
           bucket_ids_.bucket_count() * sizeof(void*);
  return bytes;
}

}  // namespace portlens
