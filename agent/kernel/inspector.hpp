// The live sources of the pipeline against the real kernel: namespaces (discovered under /run/netns
// and /proc, snapshotted by the BPF iterators or sock_diag) and socket owners (/proc/PID/fd). And
// the one look `check` and `why` take at a namespace.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "agent/kernel/bpf_tracer.hpp"
#include "agent/kernel/kernel_only.hpp"
#include "agent/kernel/netns.hpp"
#include "agent/kernel/owners.hpp"
#include "agent/kernel/snapshot.hpp"
#include "agent/live/judge.hpp"
#include "agent/live/sources.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens {

// NamespaceSource over the real kernel.
class KernelNamespaces final : public NamespaceSource {
 public:
  explicit KernelNamespaces(SnapshotOptions options = {})
      : snapshotter_(std::make_unique<SocketSnapshotter>(options)) {}
  std::vector<NetnsRef> discover() override { return discover_netns(); }
  std::optional<NetnsRef> locate(std::uint32_t inode, std::uint32_t pid) override {
    return find_netns_of(inode, pid);
  }
  [[nodiscard]] bool refers_to(const NetnsRef& ns) const override { return still_refers_to(ns); }
  [[nodiscard]] Snapshot take(const NetnsRef& ns) const override { return snapshotter_->take(ns); }
  [[nodiscard]] Snapshot take_compact(const NetnsRef& ns) const override {
    return snapshotter_->take(ns, /*compact=*/true);
  }
  [[nodiscard]] const SocketSnapshotter& snapshotter() const { return *snapshotter_; }

 private:
  std::unique_ptr<SocketSnapshotter> snapshotter_;
};

// OwnerSource over /proc. Its drops add up over scans (SocketOwnerMap counts one scan's).
class ProcOwners final : public OwnerSource {
 public:
  void scan() override {
    owners_.scan();
    dropped_ += owners_.dropped();
  }
  void attribute(SocketTable& table) const override { owners_.attribute(table); }
  [[nodiscard]] std::uint64_t dropped() const override { return dropped_; }

 private:
  SocketOwnerMap owners_;
  std::uint64_t dropped_ = 0;
};

// The BPF tracer's ring as the pipeline reads it.
class TracerRecords final : public RecordSource {
 public:
  explicit TracerRecords(BpfTracer& tracer) : tracer_(tracer) {}
  int poll(std::chrono::milliseconds timeout, const Sink& sink, std::size_t max_records) override {
    return tracer_.poll(timeout, sink, max_records);
  }
  [[nodiscard]] DropCounters drops() const override { return tracer_.drops(); }

 private:
  BpfTracer& tracer_;
};

// A snapshot of one namespace with owners attributed, for check and why.
struct LiveTable {
  Snapshot snapshot;
  NetnsRef netns;
};

// The kernel's sources and the judge that reads them, as trace, check, why and the agent use them.
class LiveInspector {
 public:
  explicit LiveInspector(SnapshotOptions options = {})
      : namespaces_(options), judge_(namespaces_, owners_) {}

  // A fresh snapshot of ns with owners: the tracker's memory first (it knows TIME_WAIT
  // owners), then /proc for sockets with an inode.
  LiveTable inspect(const NetnsRef& ns, const SocketTracker* tracker = nullptr);

  [[nodiscard]] KernelNamespaces& namespaces() { return namespaces_; }
  [[nodiscard]] const SocketSnapshotter& snapshotter() const { return namespaces_.snapshotter(); }
  [[nodiscard]] FailureJudge& judge() { return judge_; }
  [[nodiscard]] OwnerSource& owners() { return owners_; }

 private:
  KernelNamespaces namespaces_;
  ProcOwners owners_;
  FailureJudge judge_;
};

}  // namespace portlens
