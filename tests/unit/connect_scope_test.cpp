// table_for_call() for a connect() EADDRNOTAVAIL copies only the sockets toward the destination
// and the explicit port owners (ConnectScope). Against the whole-namespace table it replaced
// (merge_for_event of the snapshot and the tracker's whole table_at()), on random trackers and
// snapshots: the same diagnosis, to the last field, and the same rows that diagnosis reads, in
// the same order.
#include <cerrno>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/diagnose/ephemeral.hpp"
#include "agent/live/judge.hpp"
#include "agent/render/report.hpp"
#include "tests/unit/random_tracker.hpp"

namespace portlens {
namespace {

// The rows diagnose_connect() reads: toward the destination, or holding their port explicitly.
std::vector<std::string> read_rows(const SocketTable& table, const Endpoint& remote) {
  std::vector<std::string> out;
  for (const SocketEntry& e : table.sockets) {
    const bool toward = e.remote && e.remote->port == remote.port &&
                        e.remote->addr.unmapped() == remote.addr.unmapped();
    if (toward || holds_port_explicitly(e)) {
      out.push_back(e.local.to_string() + ">" + (e.remote ? e.remote->to_string() : "-") + " " +
                    state_name(e.state ? static_cast<int>(*e.state) : 0) + " " +
                    std::to_string(e.sock_id) + " " + (e.owner ? e.owner->comm : "-") + " " +
                    std::to_string(e.time_wait_remaining ? e.time_wait_remaining->count() : -1) +
                    " " + std::to_string(e.explicit_port) + " " +
                    std::to_string(e.timestamps.value_or(false)));
    }
  }
  return out;
}

// What the kernel would show a little later: some sockets gone, TIME_WAIT timers and substates
// as the kernel has them, sockets the events never showed, owners unknown.
SocketTable snapshot_of(RandomTracker& random, std::uint64_t netns, std::mt19937& rng) {
  SocketTable snap = random.tracker().table(netns, random.now());
  std::vector<SocketEntry> kept;
  for (SocketEntry s : snap.sockets) {
    if (rng() % 8 == 0) {
      continue;
    }
    s.owner.reset();
    if (s.state == TcpState::kTimeWait) {
      s.time_wait_substate = rng() % 5 == 0 ? TcpState::kFinWait2 : TcpState::kTimeWait;
      s.timestamps = rng() % 3 != 0;
    } else if (rng() % 6 == 0) {
      s.explicit_port = !s.explicit_port;  // the bind bucket says otherwise
    }
    kept.push_back(s);
  }
  for (std::size_t i = 0; i + 1 < snap.sockets.size() && i < 6; i += 2) {
    SocketEntry extra = snap.sockets[i];  // an unknown socket on a known one's 4-tuple
    extra.sock_id = 0xdead'0000ULL + i;
    extra.owner.reset();
    kept.push_back(extra);
  }
  snap.sockets = std::move(kept);
  snap.default_config = random.configs().at(netns);
  return snap;
}

class ConnectScopeTest : public ::testing::TestWithParam<std::uint32_t> {};

TEST_P(ConnectScopeTest, SameDiagnosisAsTheWholeNamespace) {
  RandomTracker random(GetParam());
  std::mt19937 rng(GetParam());
  int exhausted = 0;
  int four_tuple = 0;
  for (int round = 0; round < 10; ++round) {
    random.run(400);
    const std::uint64_t now = random.now();
    for (const std::uint64_t netns : {RandomTracker::kNetnsA, RandomTracker::kNetnsB}) {
      const SocketTable snap = snapshot_of(random, netns, rng);
      const SocketTable all = random.tracker().table(netns, now);
      for (int i = 0; i < 8 && !all.sockets.empty(); ++i) {
        const SocketEntry& pick = all.sockets[rng() % all.sockets.size()];
        if (!pick.remote) {
          continue;
        }
        Call call;
        call.syscall = Syscall::kConnect;
        call.proto = Proto::kTcp;
        call.netns = netns;
        call.result = -EADDRNOTAVAIL;
        call.remote = pick.remote;
        call.local = rng() % 3 == 0 ? pick.local : Endpoint{IpAddress::any_v4(), 0};
        const std::uint64_t at = now - (rng() % 16) * RandomTracker::kSec / 2;
        const SocketTable scoped = table_for_call(call, at, now, snap, &random.tracker());
        const SocketTable whole = merge_for_event(
            snap, random.tracker().table_at(netns, at, now), [&random, at](const SocketEntry& s) {
              const auto seen = random.tracker().first_seen(s);
              return seen && *seen > at;
            });
        ASSERT_EQ(read_rows(scoped, *call.remote), read_rows(whole, *call.remote))
            << "seed " << GetParam() << " round " << round;
        const Diagnosis expected = diagnose(call, whole);
        ASSERT_EQ(diagnosis_to_json(diagnose(call, scoped)).dump(),
                  diagnosis_to_json(expected).dump())
            << "seed " << GetParam() << " round " << round;
        exhausted += expected.cause == Cause::kEphemeralExhausted ? 1 : 0;
        four_tuple += expected.cause == Cause::kFourTupleInUse ? 1 : 0;
        EXPECT_LE(scoped.sockets.size(), whole.sockets.size());
      }
    }
  }
  RecordProperty("exhausted", exhausted);
  RecordProperty("four_tuple", four_tuple);
}

INSTANTIATE_TEST_SUITE_P(Seeds, ConnectScopeTest, ::testing::Range(1U, 41U));

// Over every seed, the causes the scoped table must get right do come up.
TEST(ConnectScopeCoverageTest, StreamsReachExhaustionAndFourTupleConflicts) {
  int exhausted = 0;
  int four_tuple = 0;
  for (std::uint32_t seed = 1; seed < 11; ++seed) {
    RandomTracker random(seed);
    random.run(4000);
    for (const std::uint64_t netns : {RandomTracker::kNetnsA, RandomTracker::kNetnsB}) {
      SocketTable table = random.tracker().table(netns, random.now());
      table.default_config = random.configs().at(netns);
      for (const SocketEntry& e : table.sockets) {
        if (!e.remote) {
          continue;
        }
        Call call;
        call.syscall = Syscall::kConnect;
        call.netns = netns;
        call.result = -EADDRNOTAVAIL;
        call.remote = e.remote;
        call.local = Endpoint{IpAddress::any_v4(), 0};
        exhausted += diagnose(call, table).cause == Cause::kEphemeralExhausted ? 1 : 0;
        call.local = e.local;
        four_tuple += diagnose(call, table).cause == Cause::kFourTupleInUse ? 1 : 0;
      }
    }
  }
  EXPECT_GT(exhausted, 0);
  EXPECT_GT(four_tuple, 0);
}

}  // namespace
}  // namespace portlens
