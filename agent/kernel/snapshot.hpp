// The socket snapshot: every port owner of one network namespace, with the namespace's port
// config, as a SocketTable. BPF iterators (bpf/snapshot.bpf.c) where the kernel has them, with
// every socket's reuse flags, uid, identity and TIME_WAIT minisockets; NETLINK_SOCK_DIAG
// otherwise, with the reuse flags unknown.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/kernel/kernel_only.hpp"
#include "agent/kernel/netns.hpp"
#include "agent/kernel/skeleton.hpp"
#include "agent/model/snapshot.hpp"
#include "agent/model/socket_table.hpp"
#include "bpf/events.h"

struct snapshot_bpf;

namespace portlens {

static_assert(sizeof(pl_sock_record) == 168 && alignof(pl_sock_record) == 8,
              "pl_sock_record differs from BPF");

enum class SnapshotMode : std::uint8_t {
  kAuto,         // BPF iterators; sock_diag when they cannot be loaded or attached
  kBpfIterator,  // BPF iterators or an Error
  kSockDiag,     // sock_diag only; no BPF is loaded
};

struct SnapshotOptions {
  SnapshotMode mode = SnapshotMode::kAuto;
  // Entries kept per snapshot; the rest are counted in Snapshot::truncated, never stored.
  std::size_t max_entries = 4'000'000;
};

// Reads an iterator to its end, handing each whole record to sink (records may straddle reads).
// The iterator's fd is closed on every path, a sink that throws included. Throws Error.
void read_iterator(bpf_link* link, const char* what,
                   const std::function<void(const pl_sock_record&)>& sink);

// Decodes one iterator record. Pure. nullopt for records that are not a TCP or UDP socket of
// AF_INET/AF_INET6. hz (jiffies per second) converts the TIME_WAIT timer to milliseconds.
std::optional<SocketEntry> decode_sock_record(const pl_sock_record& record, unsigned hz);

// A TCP listener's queues from its record (PL_SR_F_LISTEN_QUEUE); nullopt for other records.
std::optional<ListenQueue> decode_listen_queue(const pl_sock_record& record);

// Loads the snapshot programs once; each take() runs in a thread of its own that enters the
// namespace, so no other thread's namespace ever changes. take() may run concurrently.
class SocketSnapshotter {
 public:
  // Throws Error (with what to do) in kBpfIterator mode when the iterators cannot be used.
  explicit SocketSnapshotter(SnapshotOptions options = {});
  ~SocketSnapshotter();
  SocketSnapshotter(const SocketSnapshotter&) = delete;
  SocketSnapshotter& operator=(const SocketSnapshotter&) = delete;
  SocketSnapshotter(SocketSnapshotter&&) = delete;
  SocketSnapshotter& operator=(SocketSnapshotter&&) = delete;

  // Every TCP and UDP port owner of ns and ns's NetnsPortConfig. Throws Error.
  [[nodiscard]] Snapshot take(const NetnsRef& ns) const { return take(ns, false); }
  // With compact, the sockets go to Snapshot::compact as they are read (is_compact): the
  // iterators' records never make a table of SocketEntry values.
  [[nodiscard]] Snapshot take(const NetnsRef& ns, bool compact) const;

  [[nodiscard]] SnapshotSource source() const { return source_; }
  // Why the iterators are not in use (kAuto fell back), empty otherwise.
  [[nodiscard]] const std::string& fallback_reason() const { return fallback_reason_; }
  // The kernel's HZ, found at load: tcp_fin_timeout (or tcp_keepalive_time) read in jiffies by
  // BPF, divided by the seconds /proc/sys shows; timed against CLOCK_MONOTONIC only when both
  // are unusable. 0 with sock_diag, which reports milliseconds itself.
  [[nodiscard]] unsigned kernel_hz() const { return hz_; }

 private:
  void load();
  void take_in_netns(Snapshot* out, bool compact) const;
  void read_iterators(Snapshot* out, bool compact) const;
  [[nodiscard]] bpf_link* iterator(std::string_view section) const;

  SnapshotOptions options_;
  SkeletonPtr<snapshot_bpf> skel_{nullptr, nullptr};
  // The iterators' links by section name ("iter/tcp", ...); destroyed before the skeleton.
  std::map<std::string, LinkPtr, std::less<>> iterators_;
  SnapshotSource source_ = SnapshotSource::kSockDiag;
  std::string fallback_reason_;
  unsigned hz_ = 0;
};

// HZ from a sysctl kept in jiffies and shown in whole seconds (tcp_fin_timeout): nullopt unless
// jiffies is an exact multiple of seconds > 0 giving 10..10000. Pure.
std::optional<unsigned> hz_from_sysctl(std::uint64_t jiffies, long seconds);

// HZ from two jiffies readings taken at tick edges, elapsed seconds apart: the nearest of the
// kernel's CONFIG_HZ choices when within 1.2 %, else the rounded measurement. Pure.
unsigned hz_from_measurement(std::uint64_t jiffies_delta, double elapsed_seconds);

}  // namespace portlens
