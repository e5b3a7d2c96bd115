// SocketTracker against a naive model written from the rules (tests/unit/tracker_model.hpp), on
// random event streams (tests/unit/random_tracker.hpp) with snapshots queued and merged in random
// slices, events applied before and between slices. Compared: the counts, every counter, the
// whole table and each namespace's, table_at() at past moments within the tombstones' lifetime
// (whole and for one port), after every merge and every 200 events. Then the merge cases of the
// reconcile commits as small scenarios run on both. Also the TIME_WAIT table at a size the
// streams do not reach.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "agent/tracker/tracker.hpp"
#include "tests/unit/random_tracker.hpp"
#include "tests/unit/tracker_model.hpp"

namespace portlens {
namespace {

using model::TrackerModel;

void put(std::string& out, const std::string& v) {
  out += v;
  out += ',';
}
template <typename T>
void put(std::string& out, const std::optional<T>& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    put(out, v ? *v : std::string("-"));
  } else {
    put(out, v ? std::to_string(*v) : std::string("-"));
  }
}

std::string endpoint_text(const Endpoint& e) {
  return e.to_string() + (e.addr.is_v4() ? "/4" : "/6");
}

// Every field, so that two tables compare as sorted lists of these.
std::string canonical(const SocketEntry& e) {
  const auto state = [](const std::optional<TcpState>& st) {
    return st ? std::optional<int>(static_cast<int>(*st)) : std::nullopt;
  };
  std::string out;
  put(out, std::to_string(static_cast<int>(e.proto)));
  put(out, state(e.state));
  put(out, state(e.time_wait_substate));
  put(out, endpoint_text(e.local));
  put(out, e.remote ? std::optional<std::string>(endpoint_text(*e.remote)) : std::nullopt);
  put(out, std::to_string(e.netns));
  put(out, e.reuseaddr);
  put(out, e.reuseport);
  put(out, e.v6only);
  put(out, e.bound_dev_if);
  put(out, e.uid);
  put(out, std::to_string(static_cast<int>(e.explicit_port)));
  put(out, std::to_string(e.inode));
  put(out, std::to_string(e.sock_id));
  put(out, e.owner ? std::optional<std::string>(std::to_string(e.owner->pid) + "/" + e.owner->comm)
                   : std::nullopt);
  put(out, e.time_wait_remaining ? std::optional<std::int64_t>(e.time_wait_remaining->count())
                                 : std::nullopt);
  put(out, e.timestamps);
  put(out, std::to_string(static_cast<int>(e.bind_bucket.has_value())));
  put(out, e.v4_rcv_saddr ? std::optional<std::string>(e.v4_rcv_saddr->to_string()) : std::nullopt);
  put(out, e.udp_chain_position);
  put(out, e.udp_slot_count);
  return out;
}

std::vector<std::string> canonical(const SocketTable& table) {
  std::vector<std::string> out;
  out.reserve(table.sockets.size());
  for (const SocketEntry& e : table.sockets) {
    out.push_back(canonical(e));
  }
  std::sort(out.begin(), out.end());
  return out;
}

void expect_same_counters(const TrackerCounters& t, const TrackerCounters& m) {
  EXPECT_EQ(t.sockets_dropped, 0U);
  EXPECT_EQ(t.time_wait_dropped, 0U);
  EXPECT_EQ(t.time_wait_refused, m.time_wait_refused);
  EXPECT_EQ(t.time_wait_inferred, m.time_wait_inferred);
  EXPECT_EQ(t.time_wait_expired, m.time_wait_expired);
  EXPECT_EQ(t.time_wait_reused, m.time_wait_reused);
  EXPECT_EQ(t.resets_seen, m.resets_seen);
  EXPECT_EQ(t.corrections, m.corrections);
}

std::string text(const TrackerCounters& c) {
  std::ostringstream out;
  out << "inferred " << c.time_wait_inferred << ", refused " << c.time_wait_refused << ", expired "
      << c.time_wait_expired << ", reused " << c.time_wait_reused << ", resets " << c.resets_seen;
  for (const auto& [kind, n] : c.corrections) {
    out << ", " << kind << " " << n;
  }
  return out.str();
}

// What the tracker and the model show now: counts, counters and the table of netns (all when
// nullopt).
std::size_t count_time_waits(const SocketTable& table) {
  return static_cast<std::size_t>(
      std::count_if(table.sockets.begin(), table.sockets.end(),
                    [](const SocketEntry& e) { return e.state == TcpState::kTimeWait; }));
}

::testing::AssertionResult same_now(const SocketTracker& t, const TrackerModel& m,
                                    std::uint64_t now, std::optional<std::uint64_t> netns) {
  const auto tracked = canonical(t.table(netns, now));
  const auto modelled = canonical(m.table(netns, now));
  const std::string counters = text(t.counters());
  const std::string model_counters = text(m.counters());
  if (t.socket_count() == m.socket_count() && t.time_wait_count() == m.time_wait_count() &&
      counters == model_counters && tracked == modelled) {
    return ::testing::AssertionSuccess();
  }
  auto failure = ::testing::AssertionFailure()
                 << "sockets " << t.socket_count() << " (model " << m.socket_count()
                 << "), TIME_WAIT " << t.time_wait_count() << " (model " << m.time_wait_count()
                 << ")\n  tracker: " << counters << "\n  model:   " << model_counters;
  std::vector<std::string> only;
  std::set_difference(tracked.begin(), tracked.end(), modelled.begin(), modelled.end(),
                      std::back_inserter(only));
  for (const auto& s : only) {
    failure << "\n  tracker only: " << s;
  }
  only.clear();
  std::set_difference(modelled.begin(), modelled.end(), tracked.begin(), tracked.end(),
                      std::back_inserter(only));
  for (const auto& s : only) {
    failure << "\n  model only:   " << s;
  }
  return failure;
}

// limit: the tcp_max_tw_buckets every snapshot carries, if any; *refused: the tracker's refusals.
void run_seed(std::uint32_t seed, model::KnownTrackerBugs bugs,
              std::optional<std::uint32_t> limit = std::nullopt, std::uint64_t* refused = nullptr,
              bool compact = false) {
  RandomTracker random(seed);
  if (limit) {
    random.limit_time_waits(*limit);
  }
  if (compact) {
    random.compact_merges();
  }
  TrackerModel model(bugs);
  SocketTracker& t = random.tracker();
  int merges_checked = 0;
  std::uint64_t merged_netns = 0;
  random.mirror(
      RandomTracker::Mirror{[&model](const Event& e) { model.apply(e); },
                            [&model](std::uint64_t now) { model.expire(now); },
                            [&model, &merged_netns](std::uint64_t netns, const SocketTable& snap,
                                                    std::uint64_t ts, bool bootstrap) {
                              model.begin_merge(netns, snap, ts, bootstrap);
                              merged_netns = netns;
                            },
                            [&model](std::size_t n) { return model.merge_some(n); },
                            [&]() {
                              ++merges_checked;
                              ASSERT_TRUE(same_now(t, model, random.now(), merged_netns))
                                  << "seed " << seed << ", after merge " << merges_checked;
                            }});
  std::mt19937 rng(seed);
  for (int round = 0; round < 20; ++round) {
    random.run(150);
    if (::testing::Test::HasFatalFailure()) {
      return;
    }
    const std::uint64_t now = random.now();
    SCOPED_TRACE("seed " + std::to_string(seed) + " round " + std::to_string(round));
    ASSERT_TRUE(same_now(t, model, now, std::nullopt));
    expect_same_counters(t.counters(), model.counters());
    for (const std::uint64_t netns : {RandomTracker::kNetnsA, RandomTracker::kNetnsB}) {
      ASSERT_EQ(canonical(t.table(netns, now)), canonical(model.table(netns, now)));
      ASSERT_EQ(t.time_wait_count(netns), count_time_waits(model.table(netns, now)));
      for (int i = 0; i < 3; ++i) {
        // Within the tombstones' lifetime, where table_at() is defined (Q2).
        const std::uint64_t at = now - (rng() % 21) * RandomTracker::kSec / 2;
        ASSERT_EQ(canonical(t.table_at(netns, at, now)), canonical(model.table_at(netns, at, now)))
            << "at " << at << ", now " << now;
        const auto port = static_cast<std::uint16_t>(32760 + rng() % 48);
        ASSERT_EQ(canonical(t.table_at(netns, at, now, port)),
                  canonical(model.table_at(netns, at, now, port)));
      }
    }
    // Capacity given back between rounds (at any size) must change nothing the tracker tells:
    // the next round compares again.
    t.release_memory(0);
  }
  EXPECT_EQ(random.slices_disagreed(), 0);
  EXPECT_GT(random.merges(), 10);
  if (refused != nullptr) {
    *refused = t.counters().time_wait_refused;
  }
}

class TrackerDifferentialTest : public ::testing::TestWithParam<std::uint32_t> {};

// The tracker breaks two rules (KnownTrackerBugs, reported for issue 9): until it is fixed, the
// model does as the tracker does there, and checks every other rule.
TEST_P(TrackerDifferentialTest, AgreesWithTheModelButForKnownBugs) {
  run_seed(GetParam(),
           model::KnownTrackerBugs{.rearms_newer_time_wait = true, .stops_at_older_removal = true});
}

// The agent's reconcile merges snapshots in their compact form (CompactSockets): the same
// merge, entry for entry, so the model of the table's merge must agree all the same
// (under a TIME_WAIT limit, so that the overflow bookkeeping is merged too).
TEST_P(TrackerDifferentialTest, AgreesWithTheModelMergingCompactSnapshots) {
  run_seed(GetParam(),
           model::KnownTrackerBugs{.rearms_newer_time_wait = true, .stops_at_older_removal = true},
           4, nullptr, /*compact=*/true);
}

// With tcp_max_tw_buckets in every snapshot, small enough that namespaces reach it.
TEST_P(TrackerDifferentialTest, AgreesWithTheModelUnderATimeWaitLimit) {
  std::uint64_t refused = 0;
  run_seed(GetParam(),
           model::KnownTrackerBugs{.rearms_newer_time_wait = true, .stops_at_older_removal = true},
           4, &refused);
  EXPECT_GT(refused, 0U) << "the limit was never reached";
}

// Enable once tracker.cpp is fixed (and drop the test above).
TEST_P(TrackerDifferentialTest, DISABLED_AgreesWithTheModelOfItsRules) {
  run_seed(GetParam(), model::KnownTrackerBugs{});
}

INSTANTIATE_TEST_SUITE_P(Seeds, TrackerDifferentialTest, ::testing::Range(1U, 61U));

// ---------------------------------------------------------------------------------------------
// The merge cases of the reconcile commits (events applied before the merge and between its
// slices; tombstones keep the merge from reviving what the events removed), each run on the
// tracker and on the model.

constexpr std::uint64_t kNetns = 4026531840;
constexpr std::uint64_t kSec = 1'000'000'000ULL;

Endpoint ep(const std::string& addr, std::uint16_t port) { return {*IpAddress::parse(addr), port}; }

Event sock_event(EventType type, std::uint64_t sk, std::uint64_t ts) {
  Event e;
  e.type = type;
  e.sock_id = sk;
  e.ts_ns = ts;
  e.netns = kNetns;
  return e;
}

Event bind_event(std::uint64_t sk, std::uint16_t port, std::uint64_t ts) {
  Event e = sock_event(EventType::kBind, sk, ts);
  e.pid = 812;
  e.comm = "nginx";
  e.opts = SocketOptions{};
  e.requested = ep("127.0.0.1", port);
  e.local = e.requested;
  return e;
}

Event state_event(std::uint64_t sk, TcpState from, TcpState to, std::uint16_t port,
                  std::uint64_t ts) {
  Event e = sock_event(EventType::kState, sk, ts);
  e.old_state = static_cast<int>(from);
  e.new_state = static_cast<int>(to);
  e.local = ep("127.0.0.1", port);
  e.remote = ep("127.0.0.1", 80);
  e.timestamps = true;
  return e;
}

// A connection from 127.0.0.1:port to 127.0.0.1:80, up at ts.
template <typename Tracker>
void connection(Tracker& t, std::uint64_t sk, std::uint16_t port, std::uint64_t ts) {
  t.apply(state_event(sk, TcpState::kClose, TcpState::kSynSent, port, ts));
  t.apply(state_event(sk, TcpState::kSynSent, TcpState::kEstablished, port, ts));
}

// The same, closed client first at ts: a TIME_WAIT on its 4-tuple until ts + 60 s.
template <typename Tracker>
void time_wait(Tracker& t, std::uint64_t sk, std::uint16_t port, std::uint64_t ts) {
  connection(t, sk, port, ts);
  t.apply(state_event(sk, TcpState::kEstablished, TcpState::kFinWait1, port, ts));
  t.apply(state_event(sk, TcpState::kFinWait1, TcpState::kFinWait2, port, ts));
  t.apply(state_event(sk, TcpState::kFinWait2, TcpState::kClose, port, ts));
}

SocketEntry snapshot_entry(std::uint64_t sk, TcpState state, std::uint16_t port) {
  SocketEntry s;
  s.state = state;
  s.local = ep("127.0.0.1", port);
  s.netns = kNetns;
  s.sock_id = sk;
  if (state != TcpState::kClose) {
    s.remote = ep("127.0.0.1", 80);
  }
  if (state == TcpState::kTimeWait) {
    s.sock_id = 0;
    s.time_wait_substate = TcpState::kTimeWait;
    s.time_wait_remaining = std::chrono::milliseconds(50'000);
  }
  return s;
}

template <typename Tracker>
void merge_in_slices_of_one(Tracker& t, const SocketTable& snap, std::uint64_t snapshot_ns,
                            const std::function<void(std::size_t slice)>& between) {
  t.begin_merge(kNetns, snap, snapshot_ns, false);
  for (std::size_t slice = 1; !t.merge_some(1); ++slice) {
    between(slice);
  }
}

std::uint64_t corrections(const TrackerCounters& c, const char* kind) {
  const auto it = c.corrections.find(kind);
  return it == c.corrections.end() ? 0 : it->second;
}

bool has_socket(const SocketTable& table, std::uint64_t sk) {
  return std::any_of(table.sockets.begin(), table.sockets.end(),
                     [sk](const SocketEntry& e) { return e.sock_id == sk; });
}

template <typename Tracker>
class MergeCaseTest : public ::testing::Test {};
using Trackers = ::testing::Types<SocketTracker, TrackerModel>;
TYPED_TEST_SUITE(MergeCaseTest, Trackers);

// Events before the merge: a socket closed, and one changed, after the snapshot began.
TYPED_TEST(MergeCaseTest, EventsBeforeTheSlicesAreNotUndone) {
  TypeParam t;
  t.apply(bind_event(0x10, 9000, kSec));
  connection(t, 0x11, 40000, kSec);
  SocketTable snap;  // at 5 s
  snap.sockets.push_back(snapshot_entry(0x10, TcpState::kClose, 9000));
  snap.sockets.push_back(snapshot_entry(0x11, TcpState::kEstablished, 40000));
  t.apply(sock_event(EventType::kDestroy, 0x10, 6 * kSec));
  t.apply(state_event(0x11, TcpState::kEstablished, TcpState::kFinWait1, 40000, 6 * kSec));
  merge_in_slices_of_one(t, snap, 5 * kSec, [](std::size_t) {});
  const SocketTable table = t.table(kNetns, 7 * kSec);
  EXPECT_FALSE(has_socket(table, 0x10)) << "revived";
  ASSERT_TRUE(has_socket(table, 0x11));
  EXPECT_EQ(table.sockets.at(0).state, TcpState::kFinWait1) << "the newer event lost";
  EXPECT_TRUE(t.counters().corrections.empty());
}

// Events between slices: a TIME_WAIT taken over, a socket's state changed, a socket made.
TYPED_TEST(MergeCaseTest, EventsBetweenSlicesAreNotUndone) {
  TypeParam t;
  time_wait(t, 0x20, 41000, kSec);
  connection(t, 0x21, 42000, kSec);
  SocketTable snap;  // at 5 s
  snap.sockets.push_back(snapshot_entry(0x21, TcpState::kEstablished, 42000));
  snap.sockets.push_back(snapshot_entry(0, TcpState::kTimeWait, 43000));  // missing
  snap.sockets.push_back(snapshot_entry(0, TcpState::kTimeWait, 41000));
  merge_in_slices_of_one(t, snap, 5 * kSec, [&t](std::size_t slice) {
    if (slice == 1) {
      connection(t, 0x22, 41000, 6 * kSec);  // takes the TIME_WAIT over
      t.apply(state_event(0x21, TcpState::kEstablished, TcpState::kCloseWait, 42000, 6 * kSec));
    }
  });
  EXPECT_EQ(t.time_wait_count(), 1U);  // 43000's, not 41000's again
  EXPECT_EQ(t.counters().time_wait_reused, 1U);
  const SocketTable table = t.table(kNetns, 7 * kSec);
  EXPECT_TRUE(has_socket(table, 0x22)) << "removed as stale though newer than the snapshot";
  for (const SocketEntry& e : table.sockets) {
    if (e.sock_id == 0x21) {
      EXPECT_EQ(e.state, TcpState::kCloseWait);
    }
  }
  EXPECT_EQ(corrections(t.counters(), "time_wait_missing"), 1U);
  EXPECT_EQ(corrections(t.counters(), "socket_state"), 0U);
  EXPECT_EQ(corrections(t.counters(), "socket_stale"), 0U);
  EXPECT_EQ(corrections(t.counters(), "time_wait_stale"), 0U);
}

// Removed before the snapshot began: the snapshot is right, and the merge brings it back.
TYPED_TEST(MergeCaseTest, RemovedBeforeTheSnapshotIsMissing) {
  TypeParam t;
  t.apply(bind_event(0x30, 9100, kSec));
  t.apply(sock_event(EventType::kDestroy, 0x30, 2 * kSec));
  SocketTable snap;
  snap.sockets.push_back(snapshot_entry(0x30, TcpState::kClose, 9100));
  merge_in_slices_of_one(t, snap, 3 * kSec, [](std::size_t) {});
  EXPECT_EQ(t.socket_count(), 1U);
  EXPECT_EQ(corrections(t.counters(), "socket_missing"), 1U);
}

// The rules the tracker breaks (KnownTrackerBugs), each as a case that the model passes and the
// tracker fails; enable the DISABLED_ ones once tracker.cpp is fixed.

// A snapshot queued behind another (the agent takes them on their own thread): the first
// merge's stale sockets are buried after the events that ran meanwhile, with its older time,
// and the second merge's look back at what the events removed stops there.
template <typename Tracker>
void queued_snapshot_case() {
  Tracker t;
  t.apply(bind_event(0x40, 9200, kSec / 2));  // stale in the first snapshot
  t.apply(bind_event(0x41, 9201, kSec / 2));
  SocketTable first;  // at 1 s, without 0x40
  first.sockets.push_back(snapshot_entry(0x41, TcpState::kClose, 9201));
  const SocketTable second = first;  // at 2 s
  t.apply(sock_event(EventType::kDestroy, 0x41, 3 * kSec));
  t.begin_merge(kNetns, first, kSec, false);
  t.merge_some(100);
  t.begin_merge(kNetns, second, 2 * kSec, false);
  t.merge_some(100);
  EXPECT_EQ(t.socket_count(), 0U) << "0x41, destroyed at 3 s, revived by the 2 s snapshot";
  EXPECT_EQ(corrections(t.counters(), "socket_stale"), 1U);
  EXPECT_EQ(corrections(t.counters(), "socket_missing"), 0U);
}

// A TIME_WAIT taken over and made again on the same 4-tuple while the snapshot ran: the snapshot
// shows the older one, the events know the newer one better.
template <typename Tracker>
void newer_time_wait_case() {
  Tracker t;
  time_wait(t, 0x50, 44000, kSec);  // until 61 s
  SocketTable snap;                 // at 5 s
  snap.sockets.push_back(snapshot_entry(0, TcpState::kTimeWait, 44000));
  snap.sockets.back().time_wait_remaining = std::chrono::milliseconds(56'000);
  snap.sockets.back().timestamps = true;
  connection(t, 0x51, 44000, 6 * kSec);  // takes it over
  t.apply(state_event(0x51, TcpState::kEstablished, TcpState::kFinWait1, 44000, 7 * kSec));
  t.apply(state_event(0x51, TcpState::kFinWait1, TcpState::kFinWait2, 44000, 7 * kSec));
  Event close = state_event(0x51, TcpState::kFinWait2, TcpState::kClose, 44000, 7 * kSec);
  close.timestamps = false;
  t.apply(close);  // until 67 s
  t.begin_merge(kNetns, snap, 5 * kSec, false);
  t.merge_some(100);
  const SocketTable table = t.table(kNetns, 8 * kSec);
  ASSERT_EQ(table.sockets.size(), 1U);
  EXPECT_EQ(table.sockets[0].time_wait_remaining, std::chrono::milliseconds(59'000))
      << "re-armed from the older TIME_WAIT's timer";
  EXPECT_EQ(table.sockets[0].timestamps, false) << "the older TIME_WAIT's flag";
  EXPECT_TRUE(t.counters().corrections.empty());
}

TEST(TrackerKnownBugTest, ModelDoesNotReviveWhatAQueuedSnapshotShows) {
  queued_snapshot_case<TrackerModel>();
}
TEST(TrackerKnownBugTest, DISABLED_TrackerDoesNotReviveWhatAQueuedSnapshotShows) {
  queued_snapshot_case<SocketTracker>();
}
TEST(TrackerKnownBugTest, ModelKeepsATimeWaitNewerThanTheSnapshot) {
  newer_time_wait_case<TrackerModel>();
}
TEST(TrackerKnownBugTest, DISABLED_TrackerKeepsATimeWaitNewerThanTheSnapshot) {
  newer_time_wait_case<SocketTracker>();
}

// ---------------------------------------------------------------------------------------------
// The TIME_WAIT table at sizes that grow its index several times, with erasures in between
// (backward-shift deletion must keep every other entry findable).

// 127.0.0.1:(1024 + i % 60000) -> 10.(i / 60000).x.y:80, distinct for each i.
std::pair<Endpoint, Endpoint> tuple_for(std::uint32_t i) {
  const Endpoint local = ep("127.0.0.1", static_cast<std::uint16_t>(1024 + i % 60000));
  const std::string remote = "10." + std::to_string(i / 60000) + "." +
                             std::to_string((i / 250) % 240) + "." + std::to_string(1 + i % 250);
  return {local, ep(remote, 80)};
}

Event fin_wait2_close(std::uint32_t i, std::uint64_t ts) {
  const auto [local, remote] = tuple_for(i);
  Event e;
  e.type = EventType::kState;
  e.sock_id = 0xffff'8880'0000'0000ULL + i * 64ULL;
  e.ts_ns = ts;
  e.netns = kNetns;
  e.old_state = static_cast<int>(TcpState::kFinWait2);
  e.new_state = static_cast<int>(TcpState::kClose);
  e.local = local;
  e.remote = remote;
  e.timestamps = i % 2 == 0;
  return e;
}

SocketEntry time_wait_entry(std::uint32_t i) {
  SocketEntry e;
  e.netns = kNetns;
  e.state = TcpState::kTimeWait;
  std::tie(e.local, e.remote) = tuple_for(i);
  return e;
}

TEST(TimeWaitTableTest, FindsEveryEntryThroughGrowthAndErasures) {
  constexpr std::uint32_t kCount = 50'000;
  SocketTracker t;
  for (std::uint32_t i = 0; i < kCount; ++i) {
    t.apply(fin_wait2_close(i, kSec + i));
  }
  ASSERT_EQ(t.time_wait_count(), kCount);
  // Every third one taken over by a new connection on its 4-tuple.
  for (std::uint32_t i = 0; i < kCount; i += 3) {
    const auto [local, remote] = tuple_for(i);
    Event c;
    c.type = EventType::kConnect;
    c.sock_id = 0xffff'9990'0000'0000ULL + i * 64ULL;
    c.ts_ns = 2 * kSec;
    c.netns = kNetns;
    c.local = local;
    c.requested = remote;
    t.apply(c);
  }
  const std::uint32_t taken = (kCount + 2) / 3;
  EXPECT_EQ(t.counters().time_wait_reused, taken);
  ASSERT_EQ(t.time_wait_count(), kCount - taken);
  for (std::uint32_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(t.first_seen(time_wait_entry(i)).has_value(), true) << i;  // live or tombstoned
    EXPECT_EQ(*t.first_seen(time_wait_entry(i)), kSec + i);
  }
  std::size_t live = 0;
  for (const SocketEntry& e : t.table(kNetns, 2 * kSec).sockets) {
    live += e.state == TcpState::kTimeWait ? 1 : 0;
  }
  EXPECT_EQ(live, kCount - taken);
  // Reinserted into freed slots: found again, and the table stays consistent.
  for (std::uint32_t i = 0; i < kCount; i += 3) {
    t.apply(fin_wait2_close(i, 3 * kSec));
  }
  EXPECT_EQ(t.time_wait_count(), kCount);
}

TEST(TimeWaitTableTest, ExpiresInOrderOfExpiryWhateverTheOrderOfArrival) {
  SocketTracker t;
  SocketTable snap;
  std::mt19937 rng(3);
  std::vector<std::uint64_t> remaining_ms;
  for (std::uint32_t i = 0; i < 5000; ++i) {
    SocketEntry e = time_wait_entry(i);
    e.time_wait_remaining = std::chrono::milliseconds(rng() % 60000);
    remaining_ms.push_back(e.time_wait_remaining->count());
    snap.sockets.push_back(e);
  }
  t.bootstrap(kNetns, snap, 100 * kSec);
  std::sort(remaining_ms.begin(), remaining_ms.end());
  for (const std::uint64_t at_ms : {0ULL, 1000ULL, 17'500ULL, 30'000ULL, 59'999ULL, 60'000ULL}) {
    t.expire(100 * kSec + at_ms * 1'000'000ULL);
    const auto due = static_cast<std::size_t>(
        std::upper_bound(remaining_ms.begin(), remaining_ms.end(), at_ms) - remaining_ms.begin());
    EXPECT_EQ(t.counters().time_wait_expired, due) << at_ms;
    EXPECT_EQ(t.time_wait_count(), remaining_ms.size() - due);
  }
}

TEST(TimeWaitTableTest, ReArmedByReconcileExpiresAtTheNewTimeOnly) {
  SocketTracker t;
  t.apply(fin_wait2_close(7, kSec));  // expires at 61 s
  SocketTable snap;
  SocketEntry e = time_wait_entry(7);
  e.time_wait_remaining = std::chrono::milliseconds(5000);
  snap.sockets.push_back(e);
  t.reconcile(kNetns, snap, 2 * kSec);  // now expires at 7 s
  t.expire(6 * kSec);
  EXPECT_EQ(t.time_wait_count(), 1U);
  t.expire(7 * kSec);
  EXPECT_EQ(t.time_wait_count(), 0U);
  EXPECT_EQ(t.counters().time_wait_expired, 1U);
  t.expire(61 * kSec);  // the stale item of the first arming expires nothing
  EXPECT_EQ(t.counters().time_wait_expired, 1U);
}

TEST(TimeWaitTableTest, CapIsCountedAsDropsAndFreedRoomIsReused) {
  TrackerLimits limits;
  limits.max_time_wait = 100;
  SocketTracker t(limits);
  for (std::uint32_t i = 0; i < 150; ++i) {
    t.apply(fin_wait2_close(i, kSec));
  }
  EXPECT_EQ(t.time_wait_count(), 100U);
  EXPECT_EQ(t.counters().time_wait_dropped, 50U);
  EXPECT_FALSE(t.owner_of(time_wait_entry(120)).has_value());
  t.expire(61 * kSec);
  EXPECT_EQ(t.time_wait_count(), 0U);
  for (std::uint32_t i = 100; i < 150; ++i) {
    t.apply(fin_wait2_close(i, 62 * kSec));
  }
  EXPECT_EQ(t.time_wait_count(), 50U);
  EXPECT_EQ(t.counters().time_wait_dropped, 50U);
}

TEST(TimeWaitTableTest, MappedAddressesComeBackAsTheyWereGiven) {
  SocketTracker t;
  SocketTable snap;
  SocketEntry e = time_wait_entry(1);
  e.local = ep("::ffff:127.0.0.1", 40000);
  e.remote = ep("10.0.0.9", 80);
  e.time_wait_remaining = std::chrono::milliseconds(30000);
  snap.sockets.push_back(e);
  t.bootstrap(kNetns, snap, kSec);
  const SocketTable table = t.table(kNetns, kSec);
  ASSERT_EQ(table.sockets.size(), 1U);
  EXPECT_EQ(table.sockets[0].local, e.local);
  EXPECT_EQ(table.sockets[0].remote, e.remote);
  // The same 4-tuple, spelled unmapped, is the same TIME_WAIT.
  SocketEntry plain = e;
  plain.local = ep("127.0.0.1", 40000);
  EXPECT_EQ(t.first_seen(plain), kSec);
}

}  // namespace
}  // namespace portlens
