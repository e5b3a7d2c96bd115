// The socket table rebuilt from events: bound sockets, listeners, connections and the TIME_WAIT
// sockets inferred from state changes, each attributed to the process that made it. Snapshots
// bootstrap and correct it. Pure logic: no I/O, time comes from the events and the caller.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "agent/event.hpp"
#include "agent/socket_table.hpp"

namespace portlens {

struct TrackerLimits {
  std::size_t max_sockets = 2'000'000;    // full sockets (bound, listening, connected)
  std::size_t max_time_wait = 2'000'000;  // TIME_WAIT minisockets
  std::size_t max_resets = 65'536;        // sockets with a received RST awaiting their CLOSE
  std::size_t max_tombstones = 65'536;    // sockets removed recently, kept for table_at()
};

// How long removed sockets are remembered, so that a failure diagnosed a little after it
// happened is judged against the sockets that existed when it happened.
inline constexpr std::uint64_t kTombstoneTtlNs = 10ULL * 1'000'000'000ULL;

// What the tracker dropped or corrected, by kind. Kinds of correction, found by reconcile():
//   socket_missing    the snapshot has a socket the events did not show (e.g. before start)
//   socket_stale      the tracker had a socket the snapshot no longer has (a missed close)
//   socket_state      both have it, in different TCP states
//   time_wait_missing the snapshot has a TIME_WAIT the tracker did not infer
//   time_wait_stale   an inferred TIME_WAIT the kernel no longer has (killed early, or never
//                     created: tcp_max_tw_buckets reached, or an RST the events did not show)
struct TrackerCounters {
  std::uint64_t sockets_dropped = 0;    // not tracked: max_sockets reached
  std::uint64_t time_wait_dropped = 0;  // not tracked: max_time_wait reached
  std::uint64_t time_wait_inferred = 0;
  std::uint64_t time_wait_expired = 0;
  std::uint64_t time_wait_reused = 0;  // a new connection took over the 4-tuple
  std::uint64_t resets_seen = 0;
  std::map<std::string, std::uint64_t, std::less<>> corrections;
};

// TCP_TIMEWAIT_LEN: hard-coded in the kernel (include/net/tcp.h).
inline constexpr std::uint64_t kTimeWaitLenNs = 60ULL * 1'000'000'000ULL;

class SocketTracker {
 public:
  explicit SocketTracker(TrackerLimits limits = {}) : limits_(limits) {}

  // Applies one event; its timestamp is the tracker's notion of now for what it creates.
  void apply(const Event& event);
  // Forgets TIME_WAIT sockets whose lifetime ended before now_ns (CLOCK_MONOTONIC).
  void expire(std::uint64_t now_ns);
  // Makes what is known of netns match a snapshot taken at snapshot_ns, counting differences.
  // Owners the tracker learned from events are kept: the snapshot cannot know TIME_WAIT owners.
  void reconcile(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns);
  // A namespace that no longer exists: its sockets went with it. Not a correction.
  void forget_namespace(std::uint64_t netns, std::uint64_t now_ns);
  // The first look at a namespace: the same merge, but nothing it adds is a correction.
  void bootstrap(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns);

  // The table the diagnoser reads: every tracked socket of netns (all when nullopt), with
  // TIME_WAIT time left computed at now_ns. Carries no sysctl configuration.
  [[nodiscard]] SocketTable table(std::optional<std::uint64_t> netns, std::uint64_t now_ns) const;
  // The sockets of netns as they were at at_ns: those first seen by then, including ones
  // removed since (kept for kTombstoneTtlNs). TIME_WAIT time left is computed at now_ns.
  // With port, only the sockets on that local port: all a bind()/listen() conflict can involve.
  [[nodiscard]] SocketTable table_at(std::uint64_t netns, std::uint64_t at_ns, std::uint64_t now_ns,
                                     std::optional<std::uint16_t> port = std::nullopt) const;
  // When the tracker first saw this socket (full: by identity; TIME_WAIT: by 4-tuple), if it
  // did. A snapshot socket first seen after a failure did not exist when the call failed.
  [[nodiscard]] std::optional<std::uint64_t> first_seen(const SocketEntry& entry) const;

  // The owner remembered for a socket, full or TIME_WAIT, when the events named one.
  [[nodiscard]] std::optional<SocketOwner> owner_of(const SocketEntry& entry) const;
  // Fills missing owners in a table (e.g. a fresh snapshot) from the tracker's memory.
  void attribute(SocketTable& table) const;

  [[nodiscard]] std::size_t socket_count() const { return sockets_.size(); }
  [[nodiscard]] std::size_t time_wait_count() const { return time_wait_.size(); }
  [[nodiscard]] const TrackerCounters& counters() const { return counters_; }

 private:
  struct FourTuple {
    std::uint64_t netns = 0;
    Endpoint local;
    Endpoint remote;
    bool operator==(const FourTuple&) const = default;
  };
  struct FourTupleHash {
    std::size_t operator()(const FourTuple& t) const;
  };
  struct TimeWait {
    SocketEntry entry;
    std::uint64_t expires_ns = 0;
    std::uint64_t created_ns = 0;  // when the tracker learned of it (event or snapshot time)
  };
  using ExpiryItem = std::pair<std::uint64_t, FourTuple>;  // (expires_ns, key)
  struct ExpiryOrder {
    bool operator()(const ExpiryItem& a, const ExpiryItem& b) const { return a.first > b.first; }
  };
  using ExpiryQueue = std::priority_queue<ExpiryItem, std::vector<ExpiryItem>, ExpiryOrder>;

  static std::optional<FourTuple> tuple_of(const SocketEntry& entry);
  static std::uint64_t listener_key(std::uint64_t netns, std::uint16_t port);
  SocketEntry* upsert(const Event& event);
  void on_state(const Event& event);
  void on_close(const Event& event);
  void erase_socket(std::uint64_t sock_id, std::uint64_t erased_ns);
  void bury_time_wait(const FourTuple& key, const TimeWait& tw, std::uint64_t erased_ns);
  void prune_tombstones(std::uint64_t now_ns);
  void forget_listener(const SocketEntry& entry);
  void add_time_wait(const SocketEntry& from, std::uint64_t expires_ns, std::uint64_t created_ns);
  void rebuild_expiry_queue();
  void take_over_time_wait(const SocketEntry& entry, std::uint64_t ts_ns);
  std::optional<SocketOwner> owner_of_listener(const SocketEntry& child) const;
  void count_correction(std::string_view kind, std::uint64_t n = 1);
  void merge_snapshot(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns,
                      bool count);

  bool counting_ = true;  // false while bootstrapping
  TrackerLimits limits_;
  std::unordered_map<std::uint64_t, SocketEntry> sockets_;  // by sock_id
  // When each socket was last touched: a snapshot older than that cannot correct it.
  std::unordered_map<std::uint64_t, std::uint64_t> updated_ns_;
  // Listening sockets by (netns, port), to attribute accepted children to their listener.
  std::unordered_multimap<std::uint64_t, std::uint64_t> listeners_;
  std::unordered_map<FourTuple, TimeWait, FourTupleHash> time_wait_;
  ExpiryQueue expiry_queue_;
  std::unordered_set<std::uint64_t> resets_;  // sock_ids that received an RST
  // First sight of each socket, live or tombstoned (by identity, and TIME_WAIT by 4-tuple).
  std::unordered_map<std::uint64_t, std::uint64_t> first_seen_ns_;
  std::unordered_map<FourTuple, std::uint64_t, FourTupleHash> time_wait_first_seen_ns_;
  // The last few state changes of a socket, so that table_at() can tell the state it had at a
  // moment already past: (when it changed, what it was before).
  struct StateHistory {
    static constexpr std::size_t kDepth = 4;
    std::array<std::uint64_t, kDepth> changed_ns{};
    std::array<std::optional<TcpState>, kDepth> before{};
    std::size_t size = 0;
    void record(std::uint64_t ts_ns, std::optional<TcpState> old_state);
    [[nodiscard]] std::optional<TcpState> state_at(std::uint64_t at_ns,
                                                   std::optional<TcpState> now) const;
  };
  void record_transition(const SocketEntry& entry, std::uint64_t ts_ns);
  struct Tombstone {
    StateHistory history;
    SocketEntry entry;
    std::uint64_t first_seen_ns = 0;
    std::uint64_t erased_ns = 0;
    std::uint64_t expires_ns = 0;  // TIME_WAIT only
  };
  std::deque<Tombstone> tombstones_;
  std::unordered_map<std::uint64_t, StateHistory> history_;  // by sock_id
  TrackerCounters counters_;
};

}  // namespace portlens
