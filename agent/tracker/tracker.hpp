// The socket table rebuilt from events: bound sockets, listeners, connections and the TIME_WAIT
// sockets inferred from state changes, each attributed to the process that made it. Snapshots
// bootstrap and correct it. Pure logic: no I/O, time comes from the events and the caller.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "agent/diagnose/connect_scope.hpp"
#include "agent/diagnose/ephemeral.hpp"
#include "agent/model/compact_sockets.hpp"
#include "agent/model/event.hpp"
#include "agent/model/socket_table.hpp"

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
//                     created: an RST the events did not show)
//   time_wait_overflow an inferred TIME_WAIT the kernel no longer has because it never made it:
//                     the namespace's TCPTimeWaitOverflow grew by more than the tracker refused
//                     (docs/kernel-rules.md 5.3); taken out of time_wait_stale, at most as many
//                     as it has
// How a TCP connection ended, as portlens_tcp_closes_total{kind} counts it (docs/kernel-rules.md
// 5): a FIN close that left a TIME_WAIT here (the active closer), a FIN close that left none (the
// passive closer's LAST_ACK, or a TIME_WAIT the namespace's tcp_max_tw_buckets refused), an RST
// this side sent (close() with unread data, SO_LINGER 0, tcp_abort()), an RST it received, and
// other (an established connection closed with neither FIN nor RST seen: a retransmission
// timeout, or an RST event lost).
enum class CloseKind : std::uint8_t {
  kFinTimeWait,
  kFinNoTimeWait,
  kRstSent,
  kRstReceived,
  kOther
};
inline constexpr std::array<std::string_view, 5> kCloseKindNames = {
    "fin_time_wait", "fin_no_time_wait", "rst_sent", "rst_received", "other"};
using CloseCounts = std::array<std::uint64_t, kCloseKindNames.size()>;

// The CLOSE_WAIT sockets of one owner on one local port: the peer closed, and the process has
// not (a process that never closes its side leaks them, each holding its port and buffers).
struct CloseWaitGroup {
  std::string comm;  // the owner's, "" when not known
  std::uint16_t local_port = 0;
  std::uint64_t count = 0;
  std::uint64_t oldest_since_ns = 0;  // when the oldest of them entered CLOSE_WAIT (or was seen)
};

struct TrackerCounters {
  std::uint64_t sockets_dropped = 0;    // not tracked: max_sockets reached
  std::uint64_t time_wait_dropped = 0;  // not tracked: max_time_wait reached
  // TIME_WAITs the kernel refused (tcp_max_tw_buckets): not inferred because the namespace held
  // its limit, plus, at each reconcile, what its TCPTimeWaitOverflow counted beyond those.
  std::uint64_t time_wait_refused = 0;
  std::uint64_t time_wait_inferred = 0;
  std::uint64_t time_wait_expired = 0;
  std::uint64_t time_wait_reused = 0;  // a new connection took over the 4-tuple
  std::uint64_t resets_seen = 0;
  std::map<std::uint64_t, CloseCounts> closes;  // by netns; a namespace forgotten drops its own
  std::map<std::string, std::uint64_t, std::less<>> corrections;
};

// TCP_TIMEWAIT_LEN: hard-coded in the kernel (include/net/tcp.h).
inline constexpr std::uint64_t kTimeWaitLenNs = 60ULL * 1'000'000'000ULL;

class SocketTracker {
 public:
  explicit SocketTracker(TrackerLimits limits = {}) : limits_(limits) {}

  // The CLOSE_WAIT sockets by namespace, owner's comm and local port.
  [[nodiscard]] std::map<std::uint64_t, std::vector<CloseWaitGroup>> close_wait_groups() const;

  // Applies one event; its timestamp is the tracker's notion of now for what it creates.
  void apply(const Event& event);
  // Forgets TIME_WAIT sockets whose lifetime ended before now_ns (CLOCK_MONOTONIC), and
  // tombstones older than kTombstoneTtlNs.
  void expire(std::uint64_t now_ns);
  // Makes what is known of netns match a snapshot taken at snapshot_ns, counting differences.
  // Owners the tracker learned from events are kept: the snapshot cannot know TIME_WAIT owners.
  void reconcile(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns);
  // A namespace that no longer exists: its sockets went with it. Not a correction.
  void forget_namespace(std::uint64_t netns, std::uint64_t now_ns);
  // The first look at a namespace: the same merge, but nothing it adds is a correction.
  // known_since_ns, when not 0 and earlier than snapshot_ns, is when tracing began: a socket
  // the snapshot shows and no event did existed since then at least, so a failure traced
  // while the snapshot was still being taken is judged against it (first_seen()).
  void bootstrap(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns,
                 std::uint64_t known_since_ns = 0);
  // reconcile() (or bootstrap()) in slices, so that the agent can apply events in between: a
  // merge costs microseconds per snapshot socket, and a busy namespace's would otherwise stall
  // the event loop long enough for the ring to overflow. begin_merge(), then merge_some() until
  // it returns true; the last call also removes what the snapshot no longer has. snapshot must
  // outlive the merge; beginning another drops an unfinished one.
  void begin_merge(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns,
                   bool bootstrap = false);
  // The same over a compact snapshot (Snapshot::compact) and the namespace's config from it:
  // each entry is made whole again only while it is merged. sockets and config must outlive
  // the merge.
  void begin_merge(std::uint64_t netns, const CompactSockets& sockets,
                   const NetnsPortConfig& config, std::uint64_t snapshot_ns,
                   bool bootstrap = false);
  bool merge_some(std::size_t max_entries);

  // The table the diagnoser reads: every tracked socket of netns (all when nullopt), with
  // TIME_WAIT time left computed at now_ns. Carries no sysctl configuration.
  [[nodiscard]] SocketTable table(std::optional<std::uint64_t> netns, std::uint64_t now_ns) const;
  // The TCP-table sockets of every namespace, by netns, as the metrics read them (TIME_WAIT time
  // left computed at now_ns): what a scrape copies while it holds the agent's lock.
  [[nodiscard]] std::unordered_map<std::uint64_t, std::vector<SocketRow>> rows(
      std::uint64_t now_ns) const;
  // The sockets of netns as they were at at_ns: those first seen by then, including ones
  // removed since (kept for kTombstoneTtlNs). TIME_WAIT time left is computed at now_ns.
  // With port, only the sockets on that local port: all a bind()/listen() conflict can involve.
  [[nodiscard]] SocketTable table_at(std::uint64_t netns, std::uint64_t at_ns, std::uint64_t now_ns,
                                     std::optional<std::uint16_t> port = std::nullopt) const;
  // The same, copying only the sockets scope wants; plus the connections on the 4-tuple of a
  // TIME_WAIT it keeps, which merge_for_event() needs to tell a live connection from a TIME_WAIT.
  [[nodiscard]] SocketTable table_at(std::uint64_t netns, std::uint64_t at_ns, std::uint64_t now_ns,
                                     const ConnectScope& scope) const;
  // When the tracker first saw this socket (full: by identity; TIME_WAIT: by 4-tuple), if it
  // did. A snapshot socket first seen after a failure did not exist when the call failed.
  [[nodiscard]] std::optional<std::uint64_t> first_seen(const SocketEntry& entry) const;

  // The owner remembered for a socket, full or TIME_WAIT, when the events named one.
  [[nodiscard]] std::optional<SocketOwner> owner_of(const SocketEntry& entry) const;
  // Fills missing owners in a table (e.g. a fresh snapshot) from the tracker's memory.
  void attribute(SocketTable& table) const;

  [[nodiscard]] std::size_t socket_count() const { return sockets_.size(); }
  [[nodiscard]] std::size_t time_wait_count() const { return time_wait_.size(); }
  // The TIME_WAITs of one namespace, and the tcp_max_tw_buckets its last snapshot gave.
  [[nodiscard]] std::size_t time_wait_count(std::uint64_t netns) const;
  [[nodiscard]] std::optional<std::uint32_t> time_wait_limit(std::uint64_t netns) const;
  [[nodiscard]] const TrackerCounters& counters() const { return counters_; }

  // Hands back the memory a burst grew the tables to, once they hold far less: the TIME_WAIT
  // table (when more than min_slots slots and at most a quarter in use) and the hash tables'
  // bucket arrays. Returns about how many bytes of capacity it released, for the caller to
  // decide whether to return them to the system (malloc_trim). Not during a merge in slices.
  std::size_t release_memory(std::size_t min_slots = 16'384);

 private:
  // A 4-tuple as the kernel's established hash sees it: addresses unmapped.
  struct FourTuple {
    std::uint64_t netns = 0;
    Endpoint local;
    Endpoint remote;
    bool operator==(const FourTuple&) const = default;
  };
  struct FourTupleHash {
    std::size_t operator()(const FourTuple& t) const;
  };

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

  // A full socket and everything the tracker keeps about it, in one node.
  struct Tracked {
    SocketEntry entry;
    std::uint64_t first_seen_ns = 0;
    // When it was last touched: a snapshot older than that cannot correct it.
    std::uint64_t updated_ns = 0;
    StateHistory history;
  };

  // A TIME_WAIT in the compact table: the 4-tuple (unmapped, bit flags say which side was
  // ::ffff:-mapped), its timers, and an id into the interned SocketEntry fields it shares with
  // other TIME_WAITs (owner, flags, bind bucket).
  struct TimeWaitRecord {
    std::uint64_t sock_id = 0;
    std::uint64_t expires_ns = 0;
    std::uint64_t created_ns = 0;     // when the tracker learned of it (event or snapshot time)
    std::uint64_t first_seen_ns = 0;  // of the 4-tuple: kept across re-arms (first_seen())
    FourTuple key;
    std::uint32_t traits = kNoSlot;  // kNoSlot: a free slot
    std::uint8_t mapped = 0;         // kLocalMapped | kRemoteMapped
  };
  static constexpr std::uint32_t kNoSlot = 0xffff'ffffU;
  static constexpr std::uint8_t kLocalMapped = 1;
  static constexpr std::uint8_t kRemoteMapped = 2;
  // The SocketEntry of a TIME_WAIT without its 4-tuple, sock_id and timer, shared by refcount.
  struct Traits {
    SocketEntry entry;
    std::uint32_t refs = 0;
  };

  // TIME_WAITs in a slot vector with an open-addressing index (linear probing, backward-shift
  // deletion) and an expiry heap of (expires_ns, slot): ~100 bytes per TIME_WAIT where a
  // node-based map of SocketEntry, a first-seen map and a heap of 4-tuples took ~530.
  class TimeWaitTable {
   public:
    [[nodiscard]] std::size_t size() const { return live_; }
    [[nodiscard]] std::uint32_t find(const FourTuple& key) const;
    // A free slot for key, indexed; the caller fills the rest of the record.
    std::uint32_t insert(const FourTuple& key);
    void erase(std::uint32_t slot);
    [[nodiscard]] TimeWaitRecord& at(std::uint32_t slot) { return slots_[slot]; }
    [[nodiscard]] const TimeWaitRecord& at(std::uint32_t slot) const { return slots_[slot]; }
    // Every record in use, in slot order.
    template <typename Visit>
    void for_each(Visit visit) const {
      for (const TimeWaitRecord& r : slots_) {
        if (r.traits != kNoSlot) {
          visit(r);
        }
      }
    }
    // Slots of records in use whose key satisfies pred, so that the caller may erase them.
    template <typename Pred>
    [[nodiscard]] std::vector<std::uint32_t> slots_where(Pred pred) const {
      std::vector<std::uint32_t> out;
      for (std::uint32_t i = 0; i < slots_.size(); ++i) {
        if (slots_[i].traits != kNoSlot && pred(slots_[i])) {
          out.push_back(i);
        }
      }
      return out;
    }

    // What a burst left behind: once at most a quarter of more than min_slots slots are in use,
    // the records move down (in the same order), the index is rebuilt at the smallest size that
    // holds them and the expiry heap keeps only live items. Returns the bytes of capacity given
    // back. Slot numbers change: nothing may hold one across this call.
    std::size_t shrink(std::size_t min_slots);
    [[nodiscard]] std::size_t capacity_bytes() const;

    void arm(std::uint32_t slot);  // queues slots_[slot].expires_ns
    // Pops the next slot whose record expires at or before now_ns; kNoSlot when none.
    std::uint32_t pop_expired(std::uint64_t now_ns);

   private:
    [[nodiscard]] std::size_t home(const FourTuple& key) const;
    void grow();
    void reindex(std::size_t capacity);  // capacity: a power of two above 2 * live_
    void compact_expiry();

    std::vector<TimeWaitRecord> slots_;
    std::vector<std::uint32_t> free_;
    std::vector<std::uint32_t> index_;  // slot numbers; kNoSlot: empty
    std::size_t live_ = 0;
    using ExpiryItem = std::pair<std::uint64_t, std::uint32_t>;  // (expires_ns, slot)
    std::vector<ExpiryItem> expiry_;  // a min-heap; items of re-armed or freed slots are stale
  };

  static std::optional<FourTuple> tuple_of(const SocketEntry& entry);
  static std::uint64_t listener_key(std::uint64_t netns, std::uint16_t port);
  Tracked* upsert(const Event& event, bool& is_new);
  void on_state(const Event& event);
  void on_close(const Event& event);
  using SocketMap = std::unordered_map<std::uint64_t, Tracked>;  // by sock_id
  void erase_socket(std::uint64_t sock_id, std::uint64_t erased_ns);
  void erase_socket(SocketMap::iterator it, std::uint64_t erased_ns);
  void erase_time_wait(std::uint32_t slot, std::uint64_t erased_ns);
  void prune_tombstones(std::uint64_t now_ns);
  void forget_listener(const SocketEntry& entry);
  void add_time_wait(const SocketEntry& from, std::uint64_t expires_ns, std::uint64_t created_ns);
  // Whether inet_twsk_alloc() refused the TIME_WAIT tw would be (the namespace at its limit);
  // counts the refusal.
  bool refuse_time_wait(const SocketEntry& tw, std::uint64_t ts_ns);
  // The namespace's TIME_WAITs on the books, less one on tw's own 4-tuple (the connection that
  // closes took that 4-tuple, so the kernel no longer has it).
  [[nodiscard]] std::size_t time_waits_held(const SocketEntry& tw) const;
  void take_over_time_wait(const SocketEntry& entry, std::uint64_t ts_ns);
  std::optional<SocketOwner> owner_of_listener(const SocketEntry& child) const;
  void count_correction(std::string_view kind, std::uint64_t n = 1);
  // A merge under way: where it is in the snapshot and what of the tracker it has seen.
  struct PendingMerge {
    std::uint64_t netns = 0;
    // The snapshot's sockets: a table's, or a compact snapshot's.
    const std::vector<SocketEntry>* entries = nullptr;
    const CompactSockets* compact = nullptr;
    std::uint64_t snapshot_ns = 0;
    std::uint64_t first_seen_ns = 0;  // given to what it adds: snapshot_ns, or bootstrap's floor
    bool count = true;                // false for bootstrap and forgotten namespaces
    std::size_t next = 0;             // the next snapshot entry to merge
    std::unordered_set<std::uint64_t> seen;
    std::unordered_set<FourTuple, FourTupleHash> seen_tw;
    // What the events removed since the snapshot began (from the tombstones), and how many
    // tombstones had been buried when it last looked.
    std::unordered_set<std::uint64_t> gone;
    std::unordered_set<FourTuple, FourTupleHash> gone_tw;
    bool looked_back = false;
    std::uint64_t tombstones_read = 0;
    std::optional<std::uint64_t> overflow;  // the snapshot's TCPTimeWaitOverflow reading
  };
  void merge_snapshot(std::uint64_t netns, const SocketTable& snapshot, std::uint64_t snapshot_ns,
                      bool count, std::optional<std::uint64_t> first_seen_ns = std::nullopt);
  bool merge_some(PendingMerge& merge, std::size_t max_entries);
  void note_gone(PendingMerge& merge) const;
  void merge_entry(PendingMerge& merge, const SocketEntry& s);
  void finish_merge(PendingMerge& merge);
  // Takes the snapshot's tcp_max_tw_buckets for its namespace, and its overflow reading.
  void take_time_wait_config(PendingMerge& merge, const NetnsPortConfig& config);
  // What the overflow reading shows the kernel refused beyond what the tracker did (see
  // time_wait_refused); the reading becomes the base of the next when it cannot be compared.
  std::uint64_t overflow_excess(const PendingMerge& merge);
  void prune_netns_time_wait(std::uint64_t netns);
  void record_transition(Tracked& socket, std::uint64_t ts_ns);
  std::uint32_t intern(const SocketEntry& time_wait);
  void release(std::uint32_t traits);
  // The SocketEntry a TIME_WAIT record stands for (time_wait_remaining not set).
  [[nodiscard]] SocketEntry entry_of(const TimeWaitRecord& record) const;

  bool counting_ = true;  // false while bootstrapping
  // A pointer rather than std::optional: clang cannot tell, inside SocketTracker, that the
  // nested PendingMerge with default member initializers is default-constructible.
  std::unique_ptr<PendingMerge> pending_merge_;
  TrackerLimits limits_;
  SocketMap sockets_;
  // Listening sockets by (netns, port), to attribute accepted children to their listener.
  std::unordered_multimap<std::uint64_t, std::uint64_t> listeners_;
  TimeWaitTable time_wait_;
  std::vector<Traits> traits_;
  std::vector<std::uint32_t> free_traits_;
  std::unordered_multimap<std::size_t, std::uint32_t> traits_index_;  // by hash
  std::unordered_set<std::uint64_t> resets_;  // sock_ids that received an RST
  // sock_ids that sent an RST before their close (tcp_abort()), and those closed from an open
  // state whose RST may still come (tcp_disconnect() sets CLOSE first, then sends it): the
  // close is counted rst_sent when it does, other at the socket's destroy. Both bounded by
  // max_resets; beyond it a close counts as other.
  std::unordered_set<std::uint64_t> resets_sent_;
  std::unordered_map<std::uint64_t, std::uint64_t> closing_;  // sock_id -> netns
  void count_close_of(const Event& event, bool reset, bool reset_sent, bool time_wait_made);
  void count_close(std::uint64_t netns, CloseKind kind) {
    ++counters_.closes[netns][static_cast<std::size_t>(kind)];
  }
  // Per namespace: its TIME_WAITs on the books, the limit its last snapshot gave, and the
  // bookkeeping that compares the kernel's TCPTimeWaitOverflow with the tracker's refusals.
  struct NetnsTimeWait {
    std::size_t held = 0;
    std::optional<std::uint32_t> limit;
    std::optional<std::uint64_t> overflow_base;  // the reading the next ones are compared with
    std::uint64_t refused_since_base = 0;        // by the tracker, since that reading
    std::uint64_t overflow_credited = 0;         // kernel refusals beyond those, already counted
  };
  std::unordered_map<std::uint64_t, NetnsTimeWait> netns_time_wait_;
  // First sight of sockets and TIME_WAIT 4-tuples that are gone but still tombstoned (live
  // ones keep theirs in their record).
  std::unordered_map<std::uint64_t, std::uint64_t> buried_first_seen_ns_;
  std::unordered_map<FourTuple, std::uint64_t, FourTupleHash> buried_time_wait_first_seen_ns_;
  struct Tombstone {
    StateHistory history;
    SocketEntry entry;
    std::uint64_t first_seen_ns = 0;
    std::uint64_t erased_ns = 0;
    std::uint64_t expires_ns = 0;  // TIME_WAIT only
  };
  std::deque<Tombstone> tombstones_;
  std::uint64_t tombstones_buried_ = 0;  // ever pushed to tombstones_
  TrackerCounters counters_;
};

}  // namespace portlens
