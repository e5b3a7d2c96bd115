#include "agent/tracker/tracker.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <functional>
#include <iterator>
#include <set>
#include <tuple>
#include <vector>

namespace portlens {
namespace {

bool is_state(const Event& e, TcpState s) { return e.old_state == static_cast<int>(s); }

// Entries from sources without kernel addresses (sock_diag) are identified by inode instead;
// kernel addresses start at 0xffff800000000000, so the tag cannot collide with one.
constexpr std::uint64_t kInodeIdentityTag = 0x7f00'0000'0000'0000ULL;

std::uint64_t identity_of(const SocketEntry& s) {
  if (s.sock_id != 0) {
    return s.sock_id;
  }
  return s.inode != 0 ? (kInodeIdentityTag | s.inode) : 0;
}

bool is_time_wait(const SocketEntry& s) { return s.state == TcpState::kTimeWait; }

std::uint64_t mix64(std::uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::uint64_t endpoint_word(const Endpoint& ep, std::uint64_t seed) {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  std::memcpy(&hi, ep.addr.bytes().data(), sizeof hi);
  std::memcpy(&lo, ep.addr.bytes().data() + sizeof hi, sizeof lo);
  return mix64(seed ^ hi) ^
         mix64(lo + (std::uint64_t{ep.port} << 8U) + static_cast<std::uint64_t>(ep.addr.family()));
}

// ::ffff:a.b.c.d for the IPv4 address a.b.c.d.
IpAddress mapped_v6(const IpAddress& v4) {
  std::array<std::uint8_t, 16> bytes{};
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  std::copy_n(v4.bytes().begin(), 4, bytes.begin() + 12);
  return IpAddress::v6(bytes);
}

template <typename T>
void hash_into(std::size_t& h, const T& value) {
  h = h * 0x100000001b3ULL ^ std::hash<T>{}(value);
}

void hash_address(std::size_t& h, const IpAddress& a) {
  for (const auto b : a.bytes()) {
    h = h * 131 + b;
  }
  hash_into(h, static_cast<int>(a.family()));
}

// What a TIME_WAIT shares with others: every SocketEntry field but the 4-tuple, netns, sock_id and
// timer, which SocketTracker::intern() clears. A new SocketEntry field must be added to both
// functions, or TIME_WAITs that differ in it would share one copy: the size check is a reminder.
static_assert(sizeof(SocketEntry) == 264, "SocketEntry changed: update traits_hash/same_traits");

std::size_t traits_hash(const SocketEntry& e) {
  std::size_t h = 0;
  hash_into(h, static_cast<int>(e.proto));
  hash_into(h, e.state ? static_cast<int>(*e.state) : -1);
  hash_into(h, e.time_wait_substate ? static_cast<int>(*e.time_wait_substate) : -1);
  for (const auto& flag : {e.reuseaddr, e.reuseport, e.v6only, e.timestamps}) {
    hash_into(h, flag ? static_cast<int>(*flag) : -1);
  }
  hash_into(h, e.bound_dev_if.value_or(-1));
  hash_into(h, e.uid ? std::uint64_t{*e.uid} : ~std::uint64_t{0});
  hash_into(h, e.explicit_port);
  hash_into(h, e.inode);
  if (e.owner) {
    hash_into(h, e.owner->pid);
    hash_into(h, e.owner->comm);
  }
  if (e.bind_bucket) {
    hash_into(h, e.bind_bucket->fastreuse);
    hash_into(h, e.bind_bucket->fastreuseport);
    hash_into(h, e.bind_bucket->fastuid);
    hash_address(h, e.bind_bucket->fast_rcv_saddr);
    hash_address(h, e.bind_bucket->fast_v6_rcv_saddr);
  }
  if (e.v4_rcv_saddr) {
    hash_address(h, *e.v4_rcv_saddr);
  }
  hash_into(h, e.udp_chain_position.value_or(0));
  hash_into(h, e.udp_slot_count.value_or(0));
  return h;
}

bool same_owner(const std::optional<SocketOwner>& a, const std::optional<SocketOwner>& b) {
  return a.has_value() == b.has_value() && (!a || (a->pid == b->pid && a->comm == b->comm));
}

bool same_traits(const SocketEntry& a, const SocketEntry& b) {
  return a.proto == b.proto && a.state == b.state && a.time_wait_substate == b.time_wait_substate &&
         a.local == b.local && a.remote == b.remote && a.netns == b.netns &&
         a.reuseaddr == b.reuseaddr && a.reuseport == b.reuseport && a.v6only == b.v6only &&
         a.bound_dev_if == b.bound_dev_if && a.uid == b.uid && a.explicit_port == b.explicit_port &&
         a.inode == b.inode && a.sock_id == b.sock_id && same_owner(a.owner, b.owner) &&
         a.time_wait_remaining == b.time_wait_remaining && a.timestamps == b.timestamps &&
         a.bind_bucket == b.bind_bucket && a.v4_rcv_saddr == b.v4_rcv_saddr &&
         a.udp_chain_position == b.udp_chain_position && a.udp_slot_count == b.udp_slot_count;
}

}  // namespace

std::size_t SocketTracker::FourTupleHash::operator()(const FourTuple& t) const {
  return static_cast<std::size_t>(
      mix64(endpoint_word(t.local, t.netns) ^ (endpoint_word(t.remote, ~t.netns) * 31)));
}

std::optional<SocketTracker::FourTuple> SocketTracker::tuple_of(const SocketEntry& entry) {
  if (!entry.remote || entry.local.port == 0 || entry.remote->port == 0) {
    return std::nullopt;
  }
  // ::ffff:X and X are one address to the kernel's hash tables.
  return FourTuple{entry.netns, Endpoint{entry.local.addr.unmapped(), entry.local.port},
                   Endpoint{entry.remote->addr.unmapped(), entry.remote->port}};
}

// ---------------------------------------------------------------------------------------------
// The TIME_WAIT table.

std::size_t SocketTracker::TimeWaitTable::home(const FourTuple& key) const {
  return FourTupleHash{}(key) & (index_.size() - 1);
}

std::uint32_t SocketTracker::TimeWaitTable::find(const FourTuple& key) const {
  if (index_.empty()) {
    return kNoSlot;
  }
  const std::size_t mask = index_.size() - 1;
  for (std::size_t i = home(key);; i = (i + 1) & mask) {
    const std::uint32_t slot = index_[i];
    if (slot == kNoSlot || slots_[slot].key == key) {
      return slot;
    }
  }
}

void SocketTracker::TimeWaitTable::grow() {
  // At most half full: probe sequences stay short, and 4 bytes per index entry is cheap.
  reindex(std::max<std::size_t>(1024, index_.size() * 2));
}

void SocketTracker::TimeWaitTable::reindex(std::size_t capacity) {
  std::vector<std::uint32_t>(capacity, kNoSlot).swap(index_);
  const std::size_t mask = capacity - 1;
  for (std::uint32_t slot = 0; slot < slots_.size(); ++slot) {
    if (slots_[slot].traits == kNoSlot) {
      continue;
    }
    std::size_t i = home(slots_[slot].key);
    while (index_[i] != kNoSlot) {
      i = (i + 1) & mask;
    }
    index_[i] = slot;
  }
}

std::uint32_t SocketTracker::TimeWaitTable::insert(const FourTuple& key) {
  if ((live_ + 1) * 2 > index_.size()) {
    grow();
  }
  std::uint32_t slot = 0;
  if (free_.empty()) {
    slot = static_cast<std::uint32_t>(slots_.size());
    slots_.emplace_back();
  } else {
    slot = free_.back();
    free_.pop_back();
  }
  slots_[slot] = TimeWaitRecord{};
  slots_[slot].key = key;
  const std::size_t mask = index_.size() - 1;
  std::size_t i = home(key);
  while (index_[i] != kNoSlot) {
    i = (i + 1) & mask;
  }
  index_[i] = slot;
  ++live_;
  return slot;
}

void SocketTracker::TimeWaitTable::erase(std::uint32_t slot) {
  const std::size_t mask = index_.size() - 1;
  std::size_t hole = home(slots_[slot].key);
  while (index_[hole] != slot) {
    hole = (hole + 1) & mask;
  }
  // Backward-shift deletion: move later entries of the probe run into the hole when their home
  // lies at or before it (cyclically), so that no lookup meets an empty slot early.
  for (std::size_t i = (hole + 1) & mask; index_[i] != kNoSlot; i = (i + 1) & mask) {
    const std::size_t h = home(slots_[index_[i]].key);
    if (((i - h) & mask) >= ((i - hole) & mask)) {
      index_[hole] = index_[i];
      hole = i;
    }
  }
  index_[hole] = kNoSlot;
  slots_[slot].traits = kNoSlot;
  free_.push_back(slot);
  --live_;
  compact_expiry();
}

std::size_t SocketTracker::TimeWaitTable::capacity_bytes() const {
  return slots_.capacity() * sizeof(TimeWaitRecord) +
         (free_.capacity() + index_.capacity()) * sizeof(std::uint32_t) +
         expiry_.capacity() * sizeof(ExpiryItem);
}

std::size_t SocketTracker::TimeWaitTable::shrink(std::size_t min_slots) {
  if (slots_.size() <= min_slots || live_ * 4 > slots_.size()) {
    return 0;
  }
  const std::size_t before = capacity_bytes();
  std::vector<std::uint32_t> moved(slots_.size(), kNoSlot);
  std::vector<TimeWaitRecord> kept;
  kept.reserve(live_);
  for (std::uint32_t slot = 0; slot < slots_.size(); ++slot) {
    if (slots_[slot].traits != kNoSlot) {
      moved[slot] = static_cast<std::uint32_t>(kept.size());
      kept.push_back(slots_[slot]);
    }
  }
  std::vector<ExpiryItem> expiry;
  expiry.reserve(live_);
  for (const auto& [expires, slot] : expiry_) {
    if (slots_[slot].traits != kNoSlot && slots_[slot].expires_ns == expires) {
      expiry.emplace_back(expires, moved[slot]);
    }
  }
  std::make_heap(expiry.begin(), expiry.end(), std::greater<>{});
  slots_ = std::move(kept);
  expiry_ = std::move(expiry);
  std::vector<std::uint32_t>().swap(free_);
  reindex(std::bit_ceil(std::max<std::size_t>(1024, 2 * live_ + 2)));
  const std::size_t after = capacity_bytes();
  return before > after ? before - after : 0;
}

void SocketTracker::TimeWaitTable::compact_expiry() {
  // Re-armed (reconcile) or freed TIME_WAITs leave stale heap items: keep the heap proportional.
  if (expiry_.size() > 2 * live_ + 1024) {
    std::erase_if(expiry_, [this](const ExpiryItem& item) {
      const TimeWaitRecord& r = slots_[item.second];
      return r.traits == kNoSlot || r.expires_ns != item.first;
    });
    std::make_heap(expiry_.begin(), expiry_.end(), std::greater<>{});
  }
}

void SocketTracker::TimeWaitTable::arm(std::uint32_t slot) {
  expiry_.emplace_back(slots_[slot].expires_ns, slot);
  std::push_heap(expiry_.begin(), expiry_.end(), std::greater<>{});
  compact_expiry();
}

std::uint32_t SocketTracker::TimeWaitTable::pop_expired(std::uint64_t now_ns) {
  while (!expiry_.empty() && expiry_.front().first <= now_ns) {
    std::pop_heap(expiry_.begin(), expiry_.end(), std::greater<>{});
    const auto [expires, slot] = expiry_.back();
    expiry_.pop_back();
    // Skip items left behind by a re-armed or removed TIME_WAIT. A freed slot reused by a
    // TIME_WAIT that expires at the very same moment is due now all the same.
    if (slots_[slot].traits != kNoSlot && slots_[slot].expires_ns == expires) {
      return slot;
    }
  }
  return kNoSlot;
}

std::uint32_t SocketTracker::intern(const SocketEntry& time_wait) {
  SocketEntry shared = time_wait;
  shared.local = Endpoint{};
  shared.remote.reset();
  shared.netns = 0;
  shared.sock_id = 0;
  shared.time_wait_remaining.reset();
  const std::size_t h = traits_hash(shared);
  auto [first, last] = traits_index_.equal_range(h);
  for (auto it = first; it != last; ++it) {
    if (same_traits(traits_[it->second].entry, shared)) {
      ++traits_[it->second].refs;
      return it->second;
    }
  }
  std::uint32_t id = 0;
  if (free_traits_.empty()) {
    id = static_cast<std::uint32_t>(traits_.size());
    traits_.emplace_back();
  } else {
    id = free_traits_.back();
    free_traits_.pop_back();
  }
  traits_[id] = Traits{std::move(shared), 1};
  traits_index_.emplace(h, id);
  return id;
}

void SocketTracker::release(std::uint32_t traits) {
  if (--traits_[traits].refs > 0) {
    return;
  }
  auto [first, last] = traits_index_.equal_range(traits_hash(traits_[traits].entry));
  for (auto it = first; it != last; ++it) {
    if (it->second == traits) {
      traits_index_.erase(it);
      break;
    }
  }
  traits_[traits] = Traits{};
  free_traits_.push_back(traits);
}

SocketEntry SocketTracker::entry_of(const TimeWaitRecord& record) const {
  SocketEntry e = traits_[record.traits].entry;
  e.netns = record.key.netns;
  e.sock_id = record.sock_id;
  e.local = record.key.local;
  if ((record.mapped & kLocalMapped) != 0) {
    e.local.addr = mapped_v6(e.local.addr);
  }
  e.remote = record.key.remote;
  if ((record.mapped & kRemoteMapped) != 0) {
    e.remote->addr = mapped_v6(e.remote->addr);
  }
  return e;
}

void SocketTracker::count_correction(std::string_view kind, std::uint64_t n) {
  if (n == 0 || !counting_) {
    return;
  }
  const auto it = counters_.corrections.find(kind);
  if (it == counters_.corrections.end()) {
    counters_.corrections.emplace(std::string(kind), n);
  } else {
    it->second += n;
  }
}

SocketTracker::Tracked* SocketTracker::upsert(const Event& event, bool& is_new) {
  auto it = sockets_.find(event.sock_id);
  // The identity is the kernel socket's address, which the allocator hands out again at once.
  // A socket never changes namespace and binds at most once: a call from another namespace,
  // or a successful bind() on a socket that already holds a port, is a new socket at a
  // recycled address, and the tracked one is gone (its destroy went unseen: it predates the
  // trace or the snapshot it came from).
  if (it != sockets_.end() && event.is_call() &&
      (it->second.entry.netns != event.netns ||
       (event.type == EventType::kBind && event.result == 0 && it->second.entry.local.port != 0 &&
        it->second.updated_ns <= event.ts_ns))) {
    erase_socket(it, event.ts_ns);
    it = sockets_.end();
  }
  is_new = it == sockets_.end();
  if (is_new) {
    if (sockets_.size() >= limits_.max_sockets) {
      ++counters_.sockets_dropped;
      return nullptr;
    }
    Tracked fresh;
    fresh.entry.proto = event.proto;
    fresh.entry.netns = event.netns;
    fresh.entry.sock_id = event.sock_id;
    fresh.entry.local =
        Endpoint{event.family == Family::kIpv4 ? IpAddress::any_v4() : IpAddress::any_v6(), 0};
    fresh.first_seen_ns = event.ts_ns;
    it = sockets_.emplace(event.sock_id, std::move(fresh)).first;
    buried_first_seen_ns_.erase(event.sock_id);  // a new socket at a recycled address
  }
  Tracked& t = it->second;
  SocketEntry& e = t.entry;
  t.updated_ns = event.ts_ns;
  if (event.opts) {
    e.reuseaddr = event.opts->reuseaddr;
    e.reuseport = event.opts->reuseport;
    e.v6only = event.opts->v6only;
    e.bound_dev_if = event.opts->bound_dev_if;
  }
  if (event.sock_uid) {
    e.uid = event.sock_uid;
  }
  // Only a system call runs in the owner's context; state changes often run in softirq.
  if (event.is_call()) {
    e.owner = SocketOwner{event.pid, event.comm};
  }
  return &t;
}

void SocketTracker::apply(const Event& event) {
  bool is_new = false;
  switch (event.type) {
    case EventType::kBind: {
      if (event.result != 0 || !event.local) {
        return;
      }
      Tracked* t = upsert(event, is_new);
      if (t == nullptr) {
        return;
      }
      SocketEntry* e = &t->entry;
      e->local = *event.local;
      e->explicit_port = true;  // inet_csk_get_port(): the port now belongs to this socket
      if (e->proto != Proto::kUdp && e->proto != Proto::kUdpLite && !e->state) {
        e->state = TcpState::kClose;
      }
      return;
    }
    case EventType::kListen: {
      if (event.result != 0) {
        return;
      }
      Tracked* t = upsert(event, is_new);
      if (t == nullptr) {
        return;
      }
      SocketEntry* e = &t->entry;
      if (event.local) {
        e->local = *event.local;  // listen() on an unbound socket picks the port itself
      }
      e->state = TcpState::kListen;
      e->explicit_port = true;
      return;
    }
    case EventType::kConnect: {
      if (event.result != 0 && event.result != -EINPROGRESS) {
        return;
      }
      Tracked* t = upsert(event, is_new);
      if (t == nullptr) {
        return;
      }
      SocketEntry* e = &t->entry;
      if (event.local && event.local->port != 0) {
        e->local = *event.local;
      }
      e->remote = event.requested;  // AF_UNSPEC (disconnect) leaves none
      // The port held at entry says whether bind() gave it: set, not only raised, so that a
      // kernel address reused by a new socket does not inherit an old socket's bind.
      e->explicit_port = event.enter_port != 0;
      if (e->proto != Proto::kUdp && e->proto != Proto::kUdpLite) {
        // State events usually arrived first; without them, infer from the result.
        if (!e->state || *e->state == TcpState::kClose) {
          e->state = event.result == 0 ? TcpState::kEstablished : TcpState::kSynSent;
        }
        take_over_time_wait(*e, event.ts_ns);
      }
      return;
    }
    case EventType::kState:
      on_state(event);
      return;
    case EventType::kReset:
      ++counters_.resets_seen;
      if (resets_.size() < limits_.max_resets) {
        resets_.insert(event.sock_id);
      }
      return;
    case EventType::kResetSent:
      if (const auto it = closing_.find(event.sock_id); it != closing_.end()) {
        count_close(it->second, CloseKind::kRstSent);
        closing_.erase(it);
      } else if (resets_sent_.size() < limits_.max_resets) {
        resets_sent_.insert(event.sock_id);  // tcp_abort(): the RST first, its close after
      }
      return;
    case EventType::kDestroy:
      erase_socket(event.sock_id, event.ts_ns);
      if (!resets_.empty()) {
        resets_.erase(event.sock_id);
      }
      if (!resets_sent_.empty()) {
        resets_sent_.erase(event.sock_id);
      }
      if (const auto it = closing_.find(event.sock_id); it != closing_.end()) {
        count_close(it->second, CloseKind::kOther);  // closed open, and no RST went out
        closing_.erase(it);
      }
      return;
  }
}

void SocketTracker::StateHistory::record(std::uint64_t ts_ns, std::optional<TcpState> old_state) {
  if (size == kDepth) {  // keep the newest: older changes matter for older moments only
    std::move(changed_ns.begin() + 1, changed_ns.end(), changed_ns.begin());
    std::move(before.begin() + 1, before.end(), before.begin());
    --size;
  }
  changed_ns[size] = ts_ns;
  before[size] = old_state;
  ++size;
}

std::optional<TcpState> SocketTracker::StateHistory::state_at(std::uint64_t at_ns,
                                                              std::optional<TcpState> now) const {
  for (std::size_t i = 0; i < size; ++i) {
    if (changed_ns[i] > at_ns) {
      return before[i];  // the first change after that moment tells what it was then
    }
  }
  return now;
}

void SocketTracker::record_transition(Tracked& socket, std::uint64_t ts_ns) {
  socket.history.record(ts_ns, socket.entry.state);
}

void SocketTracker::on_state(const Event& event) {
  if (event.new_state == static_cast<int>(TcpState::kClose)) {
    on_close(event);
    return;
  }
  const auto new_state = tcp_state_from_int(event.new_state);
  if (!new_state) {
    return;
  }
  bool is_new = false;
  Tracked* t = upsert(event, is_new);
  if (t == nullptr) {
    return;
  }
  SocketEntry* e = &t->entry;
  const bool was_listening = e->state == TcpState::kListen;
  if (!is_new) {
    record_transition(*t, event.ts_ns);
  }
  e->state = *new_state;
  if (event.local && event.local->port != 0) {
    e->local = *event.local;
  }
  if (*new_state == TcpState::kListen) {
    e->remote.reset();
    e->explicit_port = true;
    listeners_.emplace(listener_key(e->netns, e->local.port), e->sock_id);
    return;
  }
  if (was_listening) {
    forget_listener(*e);
  }
  if (event.remote && event.remote->port != 0) {
    e->remote = *event.remote;
  }
  // inet_csk_clone_lock(): a child of a listener shows LISTEN->SYN_RECV on its own address.
  // It shares the listener's port and, until accept(), its owner.
  if (is_new && is_state(event, TcpState::kListen)) {
    e->explicit_port = false;
    if (!e->owner) {
      e->owner = owner_of_listener(*e);
    }
  }
  // A new connection on a TIME_WAIT's 4-tuple replaced it (tcp_twsk_unique(), or a SYN that
  // tcp_timewait_state_process() accepted on the passive side).
  if (*new_state == TcpState::kEstablished || *new_state == TcpState::kSynRecv) {
    take_over_time_wait(*e, event.ts_ns);
  }
}

void SocketTracker::count_close_of(const Event& event, bool reset, bool reset_sent,
                                   bool time_wait_made) {
  const auto from = tcp_state_from_int(event.old_state);
  if (!from) {
    return;
  }
  if (reset) {
    if (*from != TcpState::kSynSent && *from != TcpState::kSynRecv) {
      count_close(event.netns, CloseKind::kRstReceived);  // a refused connect() is no close
    }
    return;
  }
  switch (*from) {
    case TcpState::kFinWait2:
    case TcpState::kClosing:
      count_close(event.netns,
                  time_wait_made ? CloseKind::kFinTimeWait : CloseKind::kFinNoTimeWait);
      return;
    case TcpState::kLastAck:
      count_close(event.netns, CloseKind::kFinNoTimeWait);
      return;
    case TcpState::kEstablished:
    case TcpState::kCloseWait:
    case TcpState::kFinWait1:
      if (reset_sent) {
        count_close(event.netns, CloseKind::kRstSent);
      } else if (closing_.size() < limits_.max_resets) {
        closing_.emplace(event.sock_id, event.netns);  // its RST, if any, comes next
      } else {
        count_close(event.netns, CloseKind::kOther);
      }
      return;
    default:
      return;  // SYN_SENT, SYN_RECV, LISTEN, CLOSE: no connection ended
  }
}

void SocketTracker::on_close(const Event& event) {
  const bool reset = !resets_.empty() && resets_.erase(event.sock_id) > 0;
  const bool reset_sent = !resets_sent_.empty() && resets_sent_.erase(event.sock_id) > 0;
  const auto it = sockets_.find(event.sock_id);
  bool time_wait_made = false;
  // docs/kernel-rules.md section 5: tcp_time_wait() then tcp_done() shows FIN_WAIT2->CLOSE or
  // CLOSING->CLOSE; an RST received first means no TIME_WAIT was made.
  if ((is_state(event, TcpState::kFinWait2) || is_state(event, TcpState::kClosing)) && !reset &&
      event.local && event.remote) {
    SocketEntry tw = it != sockets_.end() ? it->second.entry : SocketEntry{};
    tw.proto = event.proto;
    tw.netns = event.netns;
    tw.local = *event.local;
    tw.remote = event.remote;
    tw.state = TcpState::kTimeWait;
    tw.time_wait_substate = TcpState::kTimeWait;
    tw.timestamps = event.timestamps;
    tw.inode = 0;
    tw.sock_id = 0;  // the minisocket is a different object
    if (event.opts) {
      tw.reuseaddr = event.opts->reuseaddr;
      tw.reuseport = event.opts->reuseport;
      tw.v6only = event.opts->v6only;
      tw.bound_dev_if = event.opts->bound_dev_if;
    }
    tw.uid.reset();  // timewait sockets keep no uid (R2 ignores it for them)
    if (!refuse_time_wait(tw, event.ts_ns)) {
      add_time_wait(tw, event.ts_ns + kTimeWaitLenNs, event.ts_ns);
      ++counters_.time_wait_inferred;
      time_wait_made = true;
    }
  }
  count_close_of(event, reset, reset_sent, time_wait_made);
  if (it == sockets_.end()) {
    return;
  }
  // tcp_set_state(TCP_CLOSE) releases the port unless bind() locked it (SOCK_BINDPORT_LOCK);
  // a socket holding a locked port stays an owner until it is destroyed.
  Tracked& t = it->second;
  record_transition(t, event.ts_ns);
  if (t.entry.explicit_port) {
    if (t.entry.state == TcpState::kListen) {
      forget_listener(t.entry);
    }
    t.entry.state = TcpState::kClose;
    t.entry.remote.reset();
    t.updated_ns = event.ts_ns;
    return;
  }
  erase_socket(it, event.ts_ns);
}

void SocketTracker::erase_socket(std::uint64_t sock_id, std::uint64_t erased_ns) {
  const auto it = sockets_.find(sock_id);
  if (it != sockets_.end()) {
    erase_socket(it, erased_ns);
  }
}

void SocketTracker::erase_socket(SocketMap::iterator it, std::uint64_t erased_ns) {
  const std::uint64_t sock_id = it->first;
  Tracked& t = it->second;
  if (t.entry.state == TcpState::kListen) {
    forget_listener(t.entry);
  }
  // Kept a while in the state it had until now: a failure diagnosed late still sees it.
  buried_first_seen_ns_[sock_id] = t.first_seen_ns;
  tombstones_.push_back(Tombstone{t.history, std::move(t.entry), t.first_seen_ns, erased_ns, 0});
  ++tombstones_buried_;
  sockets_.erase(it);
  prune_tombstones(erased_ns);
}

void SocketTracker::erase_time_wait(std::uint32_t slot, std::uint64_t erased_ns) {
  const TimeWaitRecord& r = time_wait_.at(slot);
  if (const auto ns = netns_time_wait_.find(r.key.netns); ns != netns_time_wait_.end()) {
    --ns->second.held;
    prune_netns_time_wait(r.key.netns);
  }
  buried_time_wait_first_seen_ns_[r.key] = r.first_seen_ns;
  tombstones_.push_back(Tombstone{{}, entry_of(r), r.created_ns, erased_ns, r.expires_ns});
  ++tombstones_buried_;
  // Pruned while the TIME_WAIT still counts as live: an older tombstone of the same 4-tuple
  // leaving now does not take the 4-tuple's first sight with it.
  prune_tombstones(erased_ns);
  release(r.traits);
  time_wait_.erase(slot);
}

void SocketTracker::prune_tombstones(std::uint64_t now_ns) {
  while (!tombstones_.empty() && (tombstones_.size() > limits_.max_tombstones ||
                                  tombstones_.front().erased_ns + kTombstoneTtlNs < now_ns)) {
    const Tombstone& t = tombstones_.front();
    if (t.entry.state == TcpState::kTimeWait) {
      const auto key = tuple_of(t.entry);
      if (key && time_wait_.find(*key) == kNoSlot) {
        buried_time_wait_first_seen_ns_.erase(*key);
      }
    } else if (t.entry.sock_id != 0 && !sockets_.contains(t.entry.sock_id)) {
      buried_first_seen_ns_.erase(t.entry.sock_id);
    }
    tombstones_.pop_front();
  }
}

std::uint64_t SocketTracker::listener_key(std::uint64_t netns, std::uint16_t port) {
  return (netns << 16) | port;
}

void SocketTracker::forget_listener(const SocketEntry& entry) {
  auto [first, last] = listeners_.equal_range(listener_key(entry.netns, entry.local.port));
  for (auto it = first; it != last; ++it) {
    if (it->second == entry.sock_id) {
      listeners_.erase(it);
      return;
    }
  }
}

std::optional<SocketOwner> SocketTracker::owner_of_listener(const SocketEntry& child) const {
  auto [first, last] = listeners_.equal_range(listener_key(child.netns, child.local.port));
  std::optional<SocketOwner> wildcard;
  for (auto it = first; it != last; ++it) {
    const auto s = sockets_.find(it->second);
    if (s == sockets_.end() || !s->second.entry.owner) {
      continue;
    }
    const SocketEntry& listener = s->second.entry;
    if (listener.local.addr.unmapped() == child.local.addr.unmapped()) {
      return listener.owner;  // the listener on the exact address wins the lookup
    }
    if (listener.local.addr.is_any()) {
      wildcard = listener.owner;
    }
  }
  return wildcard;
}

void SocketTracker::add_time_wait(const SocketEntry& from, std::uint64_t expires_ns,
                                  std::uint64_t created_ns) {
  const auto key = tuple_of(from);
  if (!key) {
    return;
  }
  std::uint32_t slot = time_wait_.find(*key);
  if (slot == kNoSlot) {
    if (time_wait_.size() >= limits_.max_time_wait) {
      ++counters_.time_wait_dropped;
      return;
    }
    slot = time_wait_.insert(*key);
    ++netns_time_wait_[key->netns].held;
    // The 4-tuple's first sight outlives a TIME_WAIT while its tombstone does.
    const auto buried = buried_time_wait_first_seen_ns_.find(*key);
    if (buried == buried_time_wait_first_seen_ns_.end()) {
      time_wait_.at(slot).first_seen_ns = created_ns;
    } else {
      time_wait_.at(slot).first_seen_ns = buried->second;
      buried_time_wait_first_seen_ns_.erase(buried);
    }
  } else {
    release(time_wait_.at(slot).traits);
  }
  TimeWaitRecord& r = time_wait_.at(slot);
  r.traits = intern(from);
  r.sock_id = from.sock_id;
  r.expires_ns = expires_ns;
  r.created_ns = created_ns;
  r.mapped = static_cast<std::uint8_t>((from.local.addr.is_v4_mapped() ? kLocalMapped : 0) |
                                       (from.remote->addr.is_v4_mapped() ? kRemoteMapped : 0));
  time_wait_.arm(slot);
}

std::size_t SocketTracker::time_wait_count(std::uint64_t netns) const {
  const auto it = netns_time_wait_.find(netns);
  return it == netns_time_wait_.end() ? 0 : it->second.held;
}

std::optional<std::uint32_t> SocketTracker::time_wait_limit(std::uint64_t netns) const {
  const auto it = netns_time_wait_.find(netns);
  return it == netns_time_wait_.end() ? std::nullopt : it->second.limit;
}

std::size_t SocketTracker::time_waits_held(const SocketEntry& tw) const {
  std::size_t held = time_wait_count(tw.netns);
  if (const auto key = tuple_of(tw); key && held > 0 && time_wait_.find(*key) != kNoSlot) {
    --held;
  }
  return held;
}

// docs/kernel-rules.md 5.3: inet_twsk_alloc() makes no TIME_WAIT when the namespace already
// holds tcp_max_tw_buckets of them; tcp_time_wait() then counts TCPTimeWaitOverflow and
// tcp_done() closes the socket, with the same FIN_WAIT2 -> CLOSE the tracker infers one from.
bool SocketTracker::refuse_time_wait(const SocketEntry& tw, std::uint64_t ts_ns) {
  const std::optional<std::uint32_t> limit = time_wait_limit(tw.netns);
  if (!limit || !tuple_of(tw) || time_waits_held(tw) < *limit) {
    return false;
  }
  // Those whose TCP_TIMEWAIT_LEN ended by now are gone from the kernel's count too.
  expire(ts_ns);
  if (time_waits_held(tw) < *limit) {
    return false;
  }
  // An older one on this 4-tuple is gone: the connection that now closes had taken it over.
  if (const std::uint32_t slot = time_wait_.find(*tuple_of(tw)); slot != kNoSlot) {
    erase_time_wait(slot, ts_ns);
    ++counters_.time_wait_reused;
  }
  ++counters_.time_wait_refused;
  ++netns_time_wait_[tw.netns].refused_since_base;
  return true;
}

void SocketTracker::prune_netns_time_wait(std::uint64_t netns) {
  const auto it = netns_time_wait_.find(netns);
  if (it != netns_time_wait_.end() && it->second.held == 0 && !it->second.limit &&
      !it->second.overflow_base) {
    netns_time_wait_.erase(it);
  }
}

void SocketTracker::take_time_wait_config(PendingMerge& merge, const NetnsPortConfig& config) {
  merge.overflow = config.tcp_time_wait_overflow;
  if (config.tcp_max_tw_buckets) {
    netns_time_wait_[merge.netns].limit = config.tcp_max_tw_buckets;
  } else if (const auto it = netns_time_wait_.find(merge.netns); it != netns_time_wait_.end()) {
    it->second.limit.reset();
    prune_netns_time_wait(merge.netns);
  }
}

std::uint64_t SocketTracker::overflow_excess(const PendingMerge& merge) {
  const auto it = netns_time_wait_.find(merge.netns);
  if (!merge.overflow && it == netns_time_wait_.end()) {
    return 0;
  }
  NetnsTimeWait& ns = it != netns_time_wait_.end() ? it->second : netns_time_wait_[merge.netns];
  // A first look, no reading, or one below the base (the inode names a new namespace): the
  // reading is a new base, and nothing before it can be compared.
  if (!merge.count || !merge.overflow || !ns.overflow_base || *merge.overflow < *ns.overflow_base) {
    ns.overflow_base = merge.overflow;
    ns.refused_since_base = 0;
    ns.overflow_credited = 0;
    prune_netns_time_wait(merge.netns);
    return 0;
  }
  // Cumulative since the base: a refusal the tracker counted just after the reading is matched
  // by the next reading, not counted twice.
  const std::uint64_t kernel = *merge.overflow - *ns.overflow_base;
  const std::uint64_t known = ns.refused_since_base + ns.overflow_credited;
  if (kernel <= known) {
    return 0;
  }
  const std::uint64_t excess = kernel - known;
  ns.overflow_credited += excess;
  counters_.time_wait_refused += excess;
  return excess;
}

void SocketTracker::take_over_time_wait(const SocketEntry& entry, std::uint64_t ts_ns) {
  if (time_wait_.size() == 0) {
    return;
  }
  const auto key = tuple_of(entry);
  if (!key) {
    return;
  }
  const std::uint32_t slot = time_wait_.find(*key);
  if (slot != kNoSlot) {
    erase_time_wait(slot, ts_ns);
    ++counters_.time_wait_reused;
  }
}

void SocketTracker::expire(std::uint64_t now_ns) {
  for (std::uint32_t slot = time_wait_.pop_expired(now_ns); slot != kNoSlot;
       slot = time_wait_.pop_expired(now_ns)) {
    erase_time_wait(slot, now_ns);
    ++counters_.time_wait_expired;
  }
  // Also when nothing is erased any more: after a burst, the last 10 s of its sockets would
  // otherwise stay tombstoned (up to max_tombstones of them) until the next erase.
  prune_tombstones(now_ns);
}

namespace {

// rehash(0) sizes a hash table's bucket array for what it holds: done when it is at least four
// times that, as after a burst. Returns the bytes of buckets it gave back.
template <typename Table>
std::size_t shrink_buckets(Table& table) {
  const std::size_t before = table.bucket_count();
  if (before <= 64 || static_cast<double>(table.size()) * 4 > table.max_load_factor() * before) {
    return 0;
  }
  table.rehash(0);
  return before > table.bucket_count() ? (before - table.bucket_count()) * sizeof(void*) : 0;
}

}  // namespace

std::size_t SocketTracker::release_memory(std::size_t min_slots) {
  if (pending_merge_) {
    return 0;  // its sets are in use; the next call gives back what this one would have
  }
  std::size_t released = time_wait_.shrink(min_slots);
  released += shrink_buckets(sockets_);
  released += shrink_buckets(listeners_);
  released += shrink_buckets(resets_);
  released += shrink_buckets(resets_sent_);
  released += shrink_buckets(closing_);
  released += shrink_buckets(traits_index_);
  released += shrink_buckets(buried_first_seen_ns_);
  released += shrink_buckets(buried_time_wait_first_seen_ns_);
  if (tombstones_.empty()) {
    tombstones_.shrink_to_fit();
  }
  return released;
}

void SocketTracker::reconcile(std::uint64_t netns, const SocketTable& snapshot,
                              std::uint64_t snapshot_ns) {
  merge_snapshot(netns, snapshot, snapshot_ns, true);
}

void SocketTracker::forget_namespace(std::uint64_t netns, std::uint64_t now_ns) {
  merge_snapshot(netns, SocketTable{}, now_ns, false);
  counters_.closes.erase(netns);  // its series go with it
  std::erase_if(closing_, [netns](const auto& kv) { return kv.second == netns; });
}

void SocketTracker::bootstrap(std::uint64_t netns, const SocketTable& snapshot,
                              std::uint64_t snapshot_ns, std::uint64_t known_since_ns) {
  merge_snapshot(
      netns, snapshot, snapshot_ns, false,
      known_since_ns != 0 && known_since_ns < snapshot_ns ? known_since_ns : snapshot_ns);
}

void SocketTracker::merge_snapshot(std::uint64_t netns, const SocketTable& snapshot,
                                   std::uint64_t snapshot_ns, bool count,
                                   std::optional<std::uint64_t> first_seen_ns) {
  PendingMerge merge;
  merge.netns = netns;
  merge.entries = &snapshot.sockets;
  merge.snapshot_ns = snapshot_ns;
  merge.first_seen_ns = first_seen_ns.value_or(snapshot_ns);
  merge.count = count;
  take_time_wait_config(merge, snapshot.config_for(netns));
  while (!merge_some(merge, snapshot.sockets.size() + 1)) {
  }
}

void SocketTracker::begin_merge(std::uint64_t netns, const SocketTable& snapshot,
                                std::uint64_t snapshot_ns, bool bootstrap) {
  pending_merge_ = std::make_unique<PendingMerge>();
  PendingMerge& merge = *pending_merge_;
  merge.netns = netns;
  merge.entries = &snapshot.sockets;
  merge.snapshot_ns = snapshot_ns;
  merge.first_seen_ns = snapshot_ns;
  merge.count = !bootstrap;
  take_time_wait_config(merge, snapshot.config_for(netns));
}

void SocketTracker::begin_merge(std::uint64_t netns, const CompactSockets& sockets,
                                const NetnsPortConfig& config, std::uint64_t snapshot_ns,
                                bool bootstrap) {
  pending_merge_ = std::make_unique<PendingMerge>();
  PendingMerge& merge = *pending_merge_;
  merge.netns = netns;
  merge.compact = &sockets;
  merge.snapshot_ns = snapshot_ns;
  merge.first_seen_ns = snapshot_ns;
  merge.count = !bootstrap;
  take_time_wait_config(merge, config);
}

bool SocketTracker::merge_some(std::size_t max_entries) {
  if (!pending_merge_ || merge_some(*pending_merge_, max_entries)) {
    pending_merge_.reset();
    return true;
  }
  return false;
}

bool SocketTracker::merge_some(PendingMerge& merge, std::size_t max_entries) {
  counting_ = merge.count;
  note_gone(merge);
  const std::size_t size = merge.compact != nullptr ? merge.compact->size() : merge.entries->size();
  const std::size_t end = merge.next + std::min(max_entries, size - merge.next);
  for (; merge.next < end; ++merge.next) {
    if (merge.compact != nullptr) {
      merge_entry(merge, merge.compact->at(merge.next));
    } else {
      merge_entry(merge, (*merge.entries)[merge.next]);
    }
  }
  if (merge.next < size) {
    counting_ = true;
    return false;
  }
  finish_merge(merge);
  counting_ = true;
  return true;
}

// What the events removed after the snapshot began: the agent applies the events that arrived
// while the snapshot ran (and between slices of the merge), so a socket closed, or a TIME_WAIT
// expired or taken over, since then may still be in the snapshot. It is gone, not missing;
// reviving it would leave a ghost for the next reconcile to count as stale. Tombstones are kept
// in event order: the first look walks back to the snapshot's start, later ones read only what
// was buried since.
void SocketTracker::note_gone(PendingMerge& merge) const {
  const std::uint64_t first_kept = tombstones_buried_ - tombstones_.size();
  std::size_t from = tombstones_.size();
  if (!merge.looked_back) {
    while (from > 0 && tombstones_[from - 1].erased_ns > merge.snapshot_ns) {
      --from;
    }
    merge.looked_back = true;
  } else {
    from = merge.tombstones_read > first_kept
               ? static_cast<std::size_t>(merge.tombstones_read - first_kept)
               : 0;
  }
  for (std::size_t i = from; i < tombstones_.size(); ++i) {
    const Tombstone& t = tombstones_[i];
    if (t.entry.netns != merge.netns) {
      continue;
    }
    if (is_time_wait(t.entry)) {
      if (const auto key = tuple_of(t.entry)) {
        merge.gone_tw.insert(*key);
      }
    } else if (const std::uint64_t id = identity_of(t.entry); id != 0) {
      merge.gone.insert(id);
    }
  }
  merge.tombstones_read = tombstones_buried_;
}

void SocketTracker::merge_entry(PendingMerge& merge, const SocketEntry& s) {
  if (s.netns != merge.netns || s.state == TcpState::kNewSynRecv) {
    return;
  }
  if (is_time_wait(s)) {
    const auto key = tuple_of(s);
    if (!key) {
      return;
    }
    merge.seen_tw.insert(*key);
    const std::uint32_t slot = time_wait_.find(*key);
    if (slot == kNoSlot && merge.gone_tw.contains(*key)) {
      return;
    }
    SocketEntry merged = s;
    if (slot == kNoSlot) {
      count_correction("time_wait_missing");
    } else if (!merged.owner) {
      merged.owner = traits_[time_wait_.at(slot).traits].entry.owner;
    }
    const std::uint64_t left =
        s.time_wait_remaining ? static_cast<std::uint64_t>(std::max<std::int64_t>(
                                    0, std::chrono::nanoseconds(*s.time_wait_remaining).count()))
                              : kTimeWaitLenNs;
    add_time_wait(merged, merge.snapshot_ns + left,
                  slot == kNoSlot ? merge.first_seen_ns : time_wait_.at(slot).created_ns);
    return;
  }
  const std::uint64_t id = identity_of(s);
  if (id == 0) {
    return;
  }
  merge.seen.insert(id);
  const auto it = sockets_.find(id);
  if (it == sockets_.end() && merge.gone.contains(id)) {
    return;
  }
  if (it == sockets_.end()) {
    if (sockets_.size() >= limits_.max_sockets) {
      ++counters_.sockets_dropped;
      return;
    }
    count_correction("socket_missing");
    Tracked fresh;
    fresh.entry = s;
    fresh.entry.sock_id = id;
    fresh.first_seen_ns = merge.first_seen_ns;
    fresh.updated_ns = merge.snapshot_ns;
    if (fresh.entry.state == TcpState::kListen) {
      listeners_.emplace(listener_key(fresh.entry.netns, fresh.entry.local.port), id);
    }
    sockets_.emplace(id, std::move(fresh));
    buried_first_seen_ns_.erase(id);
    return;
  }
  Tracked& t = it->second;
  if (t.updated_ns > merge.snapshot_ns) {
    return;  // events newer than the snapshot know better
  }
  if (t.entry.state != s.state) {
    count_correction("socket_state");
    record_transition(t, merge.snapshot_ns);
  }
  if (t.entry.state == TcpState::kListen) {
    forget_listener(t.entry);
  }
  SocketEntry merged = s;
  merged.sock_id = id;
  if (t.entry.owner) {
    merged.owner = t.entry.owner;  // who made it, from the events
  }
  t.entry = std::move(merged);
  if (t.entry.state == TcpState::kListen) {
    listeners_.emplace(listener_key(t.entry.netns, t.entry.local.port), id);
  }
}

void SocketTracker::finish_merge(PendingMerge& merge) {
  std::vector<std::uint64_t> stale;
  for (const auto& [id, t] : sockets_) {
    if (t.entry.netns == merge.netns && !merge.seen.contains(id) &&
        t.updated_ns <= merge.snapshot_ns) {
      stale.push_back(id);
    }
  }
  for (const auto id : stale) {
    erase_socket(id, merge.snapshot_ns);
  }
  count_correction("socket_stale", stale.size());

  const std::vector<std::uint32_t> stale_tw = time_wait_.slots_where([&](const TimeWaitRecord& r) {
    return r.key.netns == merge.netns && !merge.seen_tw.contains(r.key) &&
           r.created_ns <= merge.snapshot_ns;
  });
  for (const std::uint32_t slot : stale_tw) {
    erase_time_wait(slot, merge.snapshot_ns);
  }
  // Of the stale ones, those the kernel's overflow count accounts for were never made.
  const std::uint64_t overflow = std::min<std::uint64_t>(overflow_excess(merge), stale_tw.size());
  count_correction("time_wait_overflow", overflow);
  count_correction("time_wait_stale", stale_tw.size() - overflow);
}

namespace {

std::chrono::milliseconds remaining_ms(std::uint64_t expires_ns, std::uint64_t now_ns) {
  const std::uint64_t left = expires_ns > now_ns ? expires_ns - now_ns : 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds(left));
}

}  // namespace

SocketTable SocketTracker::table(std::optional<std::uint64_t> netns, std::uint64_t now_ns) const {
  SocketTable out;
  for (const auto& [id, t] : sockets_) {
    if (!netns || t.entry.netns == *netns) {
      out.sockets.push_back(t.entry);
    }
  }
  time_wait_.for_each([&](const TimeWaitRecord& r) {
    if (netns && r.key.netns != *netns) {
      return;
    }
    out.sockets.push_back(entry_of(r));
    out.sockets.back().time_wait_remaining = remaining_ms(r.expires_ns, now_ns);
  });
  return out;
}

std::map<std::uint64_t, std::vector<CloseWaitGroup>> SocketTracker::close_wait_groups() const {
  std::map<std::tuple<std::uint64_t, std::string, std::uint16_t>, CloseWaitGroup> groups;
  for (const auto& [id, t] : sockets_) {
    if (t.entry.state != TcpState::kCloseWait || t.entry.proto == Proto::kUdp) {
      continue;
    }
    // It entered CLOSE_WAIT at its latest recorded change; without one (bootstrapped in
    // CLOSE_WAIT), it has been in it at least since it was first seen.
    std::uint64_t since = t.first_seen_ns;
    for (std::size_t i = 0; i < t.history.size; ++i) {
      since = std::max(since, t.history.changed_ns[i]);
    }
    // An accepted connection whose owner the events did not give: the listener's, as until
    // accept() (docs/kernel-rules.md 12).
    const std::optional<SocketOwner> owner =
        t.entry.owner ? t.entry.owner : owner_of_listener(t.entry);
    const std::string comm = owner ? owner->comm : std::string();
    CloseWaitGroup& g = groups[{t.entry.netns, comm, t.entry.local.port}];
    if (g.count == 0 || since < g.oldest_since_ns) {
      g.oldest_since_ns = since;
    }
    g.comm = comm;
    g.local_port = t.entry.local.port;
    ++g.count;
  }
  std::map<std::uint64_t, std::vector<CloseWaitGroup>> out;
  for (auto& [key, g] : groups) {
    out[std::get<0>(key)].push_back(std::move(g));
  }
  return out;
}

std::unordered_map<std::uint64_t, std::vector<SocketRow>> SocketTracker::rows(
    std::uint64_t now_ns) const {
  std::unordered_map<std::uint64_t, std::vector<SocketRow>> out;
  // Sockets come in runs of one namespace more often than not: look the vector up once per run.
  std::uint64_t last_netns = 0;
  std::vector<SocketRow>* last = nullptr;
  const auto rows_of_netns = [&](std::uint64_t netns) -> std::vector<SocketRow>& {
    if (last == nullptr || netns != last_netns) {
      last = &out[netns];
      last_netns = netns;
      if (last->empty()) {
        last->reserve(sockets_.size() + time_wait_.size());
      }
    }
    return *last;
  };
  for (const auto& [id, t] : sockets_) {
    if (auto row = row_of(t.entry)) {
      rows_of_netns(t.entry.netns).push_back(*row);
    }
  }
  // A TIME_WAIT's row from its record and shared fields, without making its SocketEntry.
  time_wait_.for_each([&](const TimeWaitRecord& r) {
    const SocketEntry& shared = traits_[r.traits].entry;
    SocketRow row;
    row.local = r.key.local;  // unmapped already
    row.remote = r.key.remote;
    row.time_wait_remaining = remaining_ms(r.expires_ns, now_ns);
    row.bound_dev_if = shared.bound_dev_if;
    row.proto = shared.proto;
    row.state = shared.state;
    row.time_wait_substate = shared.time_wait_substate;
    row.timestamps = shared.timestamps;
    row.explicit_port = shared.explicit_port;
    if (row.proto == Proto::kTcp || row.proto == Proto::kMptcp) {
      rows_of_netns(r.key.netns).push_back(row);
    }
  });
  return out;
}

SocketTable SocketTracker::table_at(std::uint64_t netns, std::uint64_t at_ns, std::uint64_t now_ns,
                                    std::optional<std::uint16_t> port) const {
  const auto wanted = [port](const SocketEntry& e) { return !port || e.local.port == *port; };
  SocketTable out;
  for (const auto& [id, t] : sockets_) {
    if (t.entry.netns == netns && wanted(t.entry) && t.first_seen_ns <= at_ns) {
      out.sockets.push_back(t.entry);
      out.sockets.back().state = t.history.state_at(at_ns, t.entry.state);
    }
  }
  time_wait_.for_each([&](const TimeWaitRecord& r) {
    if (r.key.netns == netns && r.created_ns <= at_ns && (!port || r.key.local.port == *port)) {
      out.sockets.push_back(entry_of(r));
      out.sockets.back().time_wait_remaining = remaining_ms(r.expires_ns, now_ns);
    }
  });
  for (const Tombstone& t : tombstones_) {
    if (t.entry.netns == netns && t.first_seen_ns <= at_ns && t.erased_ns > at_ns &&
        wanted(t.entry)) {
      SocketEntry e = t.entry;
      if (e.state == TcpState::kTimeWait) {
        e.time_wait_remaining = remaining_ms(t.expires_ns, now_ns);
      } else {
        e.state = t.history.state_at(at_ns, e.state);
      }
      out.sockets.push_back(std::move(e));
    }
  }
  return out;
}

SocketTable SocketTracker::table_at(std::uint64_t netns, std::uint64_t at_ns, std::uint64_t now_ns,
                                    const ConnectScope& scope) const {
  SocketTable out;
  // TIME_WAITs first: the connections on the 4-tuple of one kept for another reason than its
  // destination (an explicit port) must come along. Their order in the table does not change.
  std::set<std::pair<Endpoint, Endpoint>> kept_time_wait;
  std::vector<SocketEntry> time_waits;
  time_wait_.for_each([&](const TimeWaitRecord& r) {
    if (r.key.netns != netns || r.created_ns > at_ns) {
      return;
    }
    const bool explicit_port = traits_[r.traits].entry.explicit_port;
    const auto tuple = std::pair{r.key.local, r.key.remote};
    if (toward(r.key.remote, scope.remote) || explicit_port ||
        (!scope.four_tuples.empty() && scope.four_tuples.contains(tuple))) {
      if (!toward(r.key.remote, scope.remote)) {
        kept_time_wait.insert(tuple);
      }
      time_waits.push_back(entry_of(r));
      time_waits.back().time_wait_remaining = remaining_ms(r.expires_ns, now_ns);
    }
  });
  std::vector<bool> tombstone_kept(tombstones_.size());
  for (std::size_t i = 0; i < tombstones_.size(); ++i) {
    const Tombstone& t = tombstones_[i];
    if (t.entry.state == TcpState::kTimeWait && t.entry.netns == netns &&
        t.first_seen_ns <= at_ns && t.erased_ns > at_ns && scope.wants(t.entry, t.entry.state)) {
      tombstone_kept[i] = true;
      if (t.entry.remote && !toward(*t.entry.remote, scope.remote)) {
        kept_time_wait.insert(unmapped_tuple(t.entry.local, *t.entry.remote));
      }
    }
  }
  const auto wanted = [&](const SocketEntry& e, std::optional<TcpState> state) {
    return scope.wants(e, state) || (e.remote && !kept_time_wait.empty() &&
                                     kept_time_wait.contains(unmapped_tuple(e.local, *e.remote)));
  };
  for (const auto& [id, t] : sockets_) {
    if (t.entry.netns != netns || t.first_seen_ns > at_ns) {
      continue;
    }
    const std::optional<TcpState> state = t.history.state_at(at_ns, t.entry.state);
    if (wanted(t.entry, state)) {
      out.sockets.push_back(t.entry);
      out.sockets.back().state = state;
    }
  }
  std::move(time_waits.begin(), time_waits.end(), std::back_inserter(out.sockets));
  for (std::size_t i = 0; i < tombstones_.size(); ++i) {
    const Tombstone& t = tombstones_[i];
    if (t.entry.state == TcpState::kTimeWait) {
      if (tombstone_kept[i]) {
        out.sockets.push_back(t.entry);
        out.sockets.back().time_wait_remaining = remaining_ms(t.expires_ns, now_ns);
      }
    } else if (t.entry.netns == netns && t.first_seen_ns <= at_ns && t.erased_ns > at_ns) {
      const std::optional<TcpState> state = t.history.state_at(at_ns, t.entry.state);
      if (wanted(t.entry, state)) {
        out.sockets.push_back(t.entry);
        out.sockets.back().state = state;
      }
    }
  }
  return out;
}

std::optional<std::uint64_t> SocketTracker::first_seen(const SocketEntry& entry) const {
  if (is_time_wait(entry)) {
    const auto key = tuple_of(entry);
    if (!key) {
      return std::nullopt;
    }
    if (const std::uint32_t slot = time_wait_.find(*key); slot != kNoSlot) {
      return time_wait_.at(slot).first_seen_ns;
    }
    const auto it = buried_time_wait_first_seen_ns_.find(*key);
    return it == buried_time_wait_first_seen_ns_.end() ? std::nullopt : std::optional(it->second);
  }
  const std::uint64_t id = identity_of(entry);
  if (const auto it = sockets_.find(id); it != sockets_.end()) {
    return it->second.first_seen_ns;
  }
  const auto it = buried_first_seen_ns_.find(id);
  return it == buried_first_seen_ns_.end() ? std::nullopt : std::optional(it->second);
}

std::optional<SocketOwner> SocketTracker::owner_of(const SocketEntry& entry) const {
  if (is_time_wait(entry)) {
    const auto key = tuple_of(entry);
    if (!key) {
      return std::nullopt;
    }
    const std::uint32_t slot = time_wait_.find(*key);
    return slot == kNoSlot ? std::nullopt : traits_[time_wait_.at(slot).traits].entry.owner;
  }
  const auto it = sockets_.find(identity_of(entry));
  return it == sockets_.end() ? std::nullopt : it->second.entry.owner;
}

void SocketTracker::attribute(SocketTable& table) const {
  for (auto& s : table.sockets) {
    if (!s.owner) {
      s.owner = owner_of(s);
    }
  }
}

}  // namespace portlens
