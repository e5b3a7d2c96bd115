// SocketEntry values kept in less than half their size, for the reconcile's snapshots: a busy
// namespace's walk holds a few hundred thousand sockets at once beside the tracker's tables
// (docs/architecture.md, "Memory after a burst"). Plain values, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "agent/model/socket_table.hpp"

namespace portlens {

// A sequence of SocketEntry that gives back, entry by entry, exactly what was put in (every
// field, unknown ones stay unknown). Each entry is one fixed-size row (120 bytes against 264);
// the bind buckets that the sockets of a port share and the rare owners are kept once, apart.
// Rows live in chunks of kChunkRows: growing never copies the chunks already full nor holds two
// copies of the table, as a vector doubling its capacity does.
class CompactSockets {
 public:
  static constexpr std::size_t kChunkRows = 4096;

  void push_back(const SocketEntry& entry);
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] bool empty() const { return size_ == 0; }
  // The i-th entry as it was given to push_back(). i < size().
  [[nodiscard]] SocketEntry at(std::size_t i) const;
  // No more entries will come: drops what only push_back() needs (the buckets' index) and the
  // last chunk's spare capacity.
  void seal();
  // About the bytes held, capacity included.
  [[nodiscard]] std::size_t memory_bytes() const;

 private:
  static constexpr std::uint32_t kNone = 0xffff'ffffU;
  // Which optional fields are set, and explicit_port.
  enum Flag : std::uint16_t {
    kState = 1U << 0U,
    kTimeWaitSubstate = 1U << 1U,
    kRemote = 1U << 2U,
    kBoundDevIf = 1U << 3U,
    kUid = 1U << 4U,
    kExplicitPort = 1U << 5U,
    kTimeWaitRemaining = 1U << 6U,
    kV4RcvSaddr = 1U << 7U,
    kUdpChainPosition = 1U << 8U,
    kUdpSlotCount = 1U << 9U,
  };
  struct Row {
    std::uint64_t sock_id = 0;
    std::uint64_t inode = 0;
    std::uint64_t netns = 0;
    std::int64_t time_wait_remaining_ms = 0;
    IpAddress local_addr;
    IpAddress remote_addr;
    IpAddress v4_rcv_saddr;
    std::uint16_t local_port = 0;
    std::uint16_t remote_port = 0;
    std::int32_t bound_dev_if = 0;
    std::uint32_t uid = 0;
    std::uint32_t udp_chain_position = 0;
    std::uint32_t udp_slot_count = 0;
    std::uint32_t bucket = kNone;  // into buckets_
    std::uint32_t owner = kNone;   // into owners_
    std::uint16_t flags = 0;
    Proto proto = Proto::kTcp;
    TcpState state = TcpState::kClose;
    TcpState time_wait_substate = TcpState::kClose;
    // reuseaddr, reuseport, v6only, timestamps: two bits each, 0 unknown, 1 false, 2 true.
    std::uint8_t tristates = 0;
  };
  struct BucketHash {
    std::size_t operator()(const TcpBindBucket& b) const;
  };

  std::vector<std::vector<Row>> chunks_;
  std::size_t size_ = 0;
  std::vector<TcpBindBucket> buckets_;
  std::unordered_map<TcpBindBucket, std::uint32_t, BucketHash> bucket_ids_;
  std::vector<SocketOwner> owners_;
};

}  // namespace portlens
