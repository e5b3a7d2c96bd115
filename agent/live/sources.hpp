// What the event pipeline reads, behind interfaces: the ring buffer's records, the network
// namespaces and their snapshots, and the processes that own sockets. agent/kernel/ implements
// them against the real kernel; tests and the benchmark plug in recorded events and fake
// snapshots, so the whole loop runs without privileges.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "agent/model/netns_ref.hpp"
#include "agent/model/snapshot.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

// What the BPF side had to drop, summed over CPUs. Never silent.
struct DropCounters {
  std::uint64_t ringbuf_full = 0;   // events lost: the ring buffer had no room
  std::uint64_t inflight_full = 0;  // calls lost: too many threads inside bind/listen/connect
  [[nodiscard]] std::uint64_t total() const { return ringbuf_full + inflight_full; }
};

// The kernel-to-user ring: records in the layout of bpf/events.h.
class RecordSource {
 public:
  using Sink = std::function<void(std::span<const std::byte>)>;
  RecordSource() = default;
  virtual ~RecordSource() = default;
  RecordSource(const RecordSource&) = delete;
  RecordSource& operator=(const RecordSource&) = delete;
  RecordSource(RecordSource&&) = delete;
  RecordSource& operator=(RecordSource&&) = delete;

  // Waits up to timeout for records and hands each to sink, at most max_records (at least 1).
  // Returns how many were handed over; 0 also when a signal interrupted the wait.
  virtual int poll(std::chrono::milliseconds timeout, const Sink& sink,
                   std::size_t max_records) = 0;
  [[nodiscard]] virtual DropCounters drops() const = 0;
};

// The network namespaces this process can look into, and a snapshot of each.
class NamespaceSource {
 public:
  NamespaceSource() = default;
  virtual ~NamespaceSource() = default;
  NamespaceSource(const NamespaceSource&) = delete;
  NamespaceSource& operator=(const NamespaceSource&) = delete;
  NamespaceSource(NamespaceSource&&) = delete;
  NamespaceSource& operator=(NamespaceSource&&) = delete;

  // Every namespace reachable now, one reference each.
  virtual std::vector<NetnsRef> discover() = 0;
  // A file that refers to the namespace with this inode; nullopt when none is left. pid, when
  // not 0, made an event there: its /proc/PID/ns/net is the first place to look.
  virtual std::optional<NetnsRef> locate(std::uint32_t inode, std::uint32_t pid) = 0;
  // Whether ns.path still refers to that namespace (it may have been deleted since, and the
  // path reused).
  [[nodiscard]] virtual bool refers_to(const NetnsRef& ns) const = 0;
  // Every TCP and UDP port owner of ns, with its port config. Throws Error when ns cannot be
  // inspected (it may be gone). May run on another thread than the pipeline's.
  [[nodiscard]] virtual Snapshot take(const NetnsRef& ns) const = 0;
  // The same, with the sockets in Snapshot::compact (is_compact): what the reconcile's walk
  // takes, a busy namespace's table in less than half the memory. By default take(), made
  // compact afterwards; a source that can fill the compact form as it reads should.
  [[nodiscard]] virtual Snapshot take_compact(const NetnsRef& ns) const {
    Snapshot snapshot = take(ns);
    make_compact(snapshot);
    return snapshot;
  }
};

// Which process holds a socket, by its inode.
class OwnerSource {
 public:
  OwnerSource() = default;
  virtual ~OwnerSource() = default;
  OwnerSource(const OwnerSource&) = delete;
  OwnerSource& operator=(const OwnerSource&) = delete;
  OwnerSource(OwnerSource&&) = delete;
  OwnerSource& operator=(OwnerSource&&) = delete;

  // Looks at the processes again.
  virtual void scan() = 0;
  // Fills SocketEntry::owner for the entries with an inode and no owner yet.
  virtual void attribute(SocketTable& table) const = 0;
  // Sockets whose owner could not be recorded since start (the owner map was full).
  [[nodiscard]] virtual std::uint64_t dropped() const = 0;
};

}  // namespace portlens
