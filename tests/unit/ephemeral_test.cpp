// Per-destination ephemeral-port accounting (docs/kernel-rules.md section 6): range, reserved
// ports, explicit owners, 4-tuples toward a destination and TIME_WAIT reuse under tcp_tw_reuse.
#include "agent/diagnose/ephemeral.hpp"

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/builders.hpp"

namespace portlens {
namespace {

using unit::connection;
using unit::ep;
using unit::ip;
using unit::listener;

using std::chrono::milliseconds;

constexpr std::uint64_t kNetns = unit::kTestNetns;  // the builders' default

Destination db(std::string_view source = "10.0.0.1") {
  return Destination{kNetns, ip(source), ep("10.0.0.9:5432")};
}

// ---------------------------------------------------------------------------------------------

TEST(RangeTest, DefaultRangeReservedAndExplicitOwners) {
  SocketTable table;
  table.default_config.reserved_ports.set(40000);
  table.default_config.reserved_ports.set(40001);
  table.default_config.reserved_ports.set(1000);  // outside the range: not counted
  SocketEntry bound_only = listener("10.0.0.1:40002");
  bound_only.state = TcpState::kClose;
  bound_only.explicit_port = false;  // bound-only sockets always own their port explicitly
  SocketEntry bound_then_connected = connection("10.0.0.1:40003", "10.0.0.8:80");
  bound_then_connected.explicit_port = true;
  SocketEntry udp_socket = listener("0.0.0.0:40004");
  udp_socket.proto = Proto::kUdp;  // UDP ports never take TCP ports away
  udp_socket.state = std::nullopt;
  SocketEntry other_netns = listener("0.0.0.0:40005");
  other_netns.netns = kNetns + 1;
  SocketEntry mptcp = listener("0.0.0.0:40006");
  mptcp.proto = Proto::kMptcp;                 // MPTCP binds through TCP's table
  table.sockets = {listener("0.0.0.0:40000"),  // reserved and listened: counted once, reserved
                   listener("[::]:45000"),     // any address takes the port away
                   bound_only,
                   bound_then_connected,
                   udp_socket,
                   other_netns,
                   mptcp,
                   listener("0.0.0.0:8080")};  // outside the range
  const EphemeralAccount a = account_destination(table, db());
  EXPECT_EQ(a.range_size, 28232U);
  EXPECT_EQ(a.reserved, 2U);
  EXPECT_EQ(a.explicit_owned, 4U);  // 45000, 40002, 40003, 40006
  EXPECT_EQ(a.capacity, 28232U - 2U - 4U);
  EXPECT_EQ(a.in_use, 0U);
  EXPECT_EQ(a.available, a.capacity);
  EXPECT_DOUBLE_EQ(a.utilization, 0.0);
}

TEST(RangeTest, ConfigIsPerNetns) {
  SocketTable table;
  NetnsPortConfig narrow;
  narrow.port_range_lo = 50000;
  narrow.port_range_hi = 50009;
  table.netns_config[kNetns + 1] = narrow;
  Destination other = db();
  other.netns = kNetns + 1;
  EXPECT_EQ(account_destination(table, other).range_size, 10U);
  EXPECT_EQ(account_destination(table, db()).range_size, 28232U);
}

TEST(InUseTest, CountsFourTuplesTowardTheDestinationOnly) {
  SocketTable table;
  table.sockets = {
      connection("10.0.0.1:40000", "10.0.0.9:5432"),
      connection("10.0.0.1:40001", "10.0.0.9:5432", TcpState::kSynSent),
      connection("10.0.0.1:40002", "10.0.0.9:5432", TcpState::kTimeWait),
      connection("10.0.0.1:40003", "10.0.0.9:5432", TcpState::kCloseWait),
      connection("10.0.0.1:40004", "10.0.0.9:5433"),  // other destination port
      connection("10.0.0.1:40005", "10.0.0.8:5432"),  // other destination address
      connection("10.0.0.2:40006", "10.0.0.9:5432"),  // other source address
      connection("10.0.0.1:8080", "10.0.0.9:5432"),   // outside the range
  };
  SocketEntry closed = connection("10.0.0.1:40007", "10.0.0.9:5432", TcpState::kClose);
  table.sockets.push_back(closed);  // not hashed: owns no 4-tuple (and is an explicit owner)
  SocketEntry other_netns = connection("10.0.0.1:40008", "10.0.0.9:5432");
  other_netns.netns = kNetns + 1;
  table.sockets.push_back(other_netns);
  // The same port toward another destination: shared, it does not count here.
  table.sockets.push_back(connection("10.0.0.1:40000", "10.0.0.8:80"));

  table.default_config.tcp_tw_reuse = 0;
  const EphemeralAccount a = account_destination(table, db());
  EXPECT_EQ(a.in_use, 4U);
  EXPECT_EQ(a.time_wait, 1U);
  EXPECT_EQ(a.time_wait_reusable, 0U);
  EXPECT_EQ(a.explicit_owned, 1U);
  EXPECT_EQ(a.capacity, 28232U - 1U);
  EXPECT_EQ(a.available, a.capacity - 4U);
  EXPECT_EQ(a.destination, db());
}

TEST(InUseTest, V4MappedConnectionsCountTowardTheIpv4Destination) {
  SocketTable table;
  table.sockets = {connection("[::ffff:10.0.0.1]:40000", "[::ffff:10.0.0.9]:5432"),
                   connection("10.0.0.1:40001", "10.0.0.9:5432")};
  EXPECT_EQ(account_destination(table, db()).in_use, 2U);
  Destination mapped = db("::ffff:10.0.0.1");
  mapped.remote = ep("[::ffff:10.0.0.9]:5432");
  const EphemeralAccount a = account_destination(table, mapped);
  EXPECT_EQ(a.in_use, 2U);
  EXPECT_EQ(a.destination->source, ip("10.0.0.1"));
}

TEST(InUseTest, AvailableAndUtilization) {
  SocketTable table;
  table.default_config.port_range_lo = 40000;
  table.default_config.port_range_hi = 40003;
  table.default_config.tcp_tw_reuse = 1;
  table.sockets = {connection("10.0.0.1:40000", "10.0.0.9:5432"),
                   connection("10.0.0.1:40001", "10.0.0.9:5432"),
                   connection("10.0.0.1:40002", "10.0.0.9:5432", TcpState::kTimeWait)};
  const EphemeralAccount a = account_destination(table, db());
  EXPECT_EQ(a.capacity, 4U);
  EXPECT_EQ(a.in_use, 3U);
  EXPECT_EQ(a.time_wait_reusable, 1U);
  EXPECT_EQ(a.available, 2U);
  EXPECT_DOUBLE_EQ(a.utilization, 0.5);

  // Everything reserved or owned: capacity 0 means fully used, not "0/0".
  for (std::uint16_t p = 40000; p <= 40003; ++p) {
    table.default_config.reserved_ports.set(p);
  }
  const EphemeralAccount none = account_destination(table, db());
  EXPECT_EQ(none.capacity, 0U);
  EXPECT_EQ(none.available, 0U);
  EXPECT_DOUBLE_EQ(none.utilization, 1.0);
}

// ---------------------------------------------------------------------------------------------
// tcp_twsk_unique(): when connect() may take over a TIME_WAIT 4-tuple.

struct TwCase {
  std::string_view name;
  int tw_reuse;
  std::string_view local;
  std::string_view remote;
  std::optional<bool> timestamps;
  std::optional<TcpState> substate;
  std::optional<milliseconds> remaining;
  std::optional<int> bound_dev_if;
  milliseconds delay;
  bool bound_port;
  Tristate expected;
};

class TimeWaitReuseTest : public testing::TestWithParam<TwCase> {};

TEST_P(TimeWaitReuseTest, Decision) {
  const TwCase& c = GetParam();
  SocketEntry tw = connection(c.local, c.remote, TcpState::kTimeWait);
  tw.timestamps = c.timestamps;
  tw.time_wait_substate = c.substate;
  tw.time_wait_remaining = c.remaining;
  tw.bound_dev_if = c.bound_dev_if;
  NetnsPortConfig config;
  config.tcp_tw_reuse = c.tw_reuse;
  config.tcp_tw_reuse_delay = c.delay;
  EXPECT_EQ(time_wait_reusable_by_connect(tw, config, c.bound_port), c.expected);
}

constexpr auto kTw = TcpState::kTimeWait;
constexpr auto kFw2 = TcpState::kFinWait2;
constexpr milliseconds kOld{30000};    // 30 s left: 30 s old
constexpr milliseconds kYoung{59500};  // 0.5 s old
constexpr milliseconds kSecond{1000};

INSTANTIATE_TEST_SUITE_P(
    KernelRules6, TimeWaitReuseTest,
    testing::Values(
        TwCase{"Reuse0", 0, "10.0.0.1:40000", "10.0.0.9:80", true, kTw, kOld, 0, kSecond, false,
               Tristate::kNo},
        TwCase{"Reuse1Old", 1, "10.0.0.1:40000", "10.0.0.9:80", true, kTw, kOld, 0, kSecond, false,
               Tristate::kYes},
        TwCase{"Reuse1Young", 1, "10.0.0.1:40000", "10.0.0.9:80", true, kTw, kYoung, 0, kSecond,
               false, Tristate::kNo},
        // time_after32(): strictly older than the delay.
        TwCase{"Reuse1ExactlyTheDelay", 1, "10.0.0.1:40000", "10.0.0.9:80", true, kTw,
               milliseconds{59000}, 0, kSecond, false, Tristate::kNo},
        TwCase{"Reuse1LongDelay", 1, "10.0.0.1:40000", "10.0.0.9:80", true, kTw, kOld, 0,
               milliseconds{45000}, false, Tristate::kNo},
        TwCase{"Reuse2NotLoopback", 2, "10.0.0.1:40000", "10.0.0.9:80", true, kTw, kOld, 0, kSecond,
               false, Tristate::kNo},
        TwCase{"Reuse2LoopbackSource", 2, "127.0.0.1:40000", "10.0.0.9:80", true, kTw, kOld, 0,
               kSecond, false, Tristate::kYes},
        TwCase{"Reuse2LoopbackDestination", 2, "10.0.0.1:40000", "127.0.0.53:80", true, kTw, kOld,
               0, kSecond, false, Tristate::kYes},
        TwCase{"Reuse2Ipv6Loopback", 2, "[::1]:40000", "[::1]:80", true, kTw, kOld, 0, kSecond,
               false, Tristate::kYes},
        TwCase{"Reuse2MappedLoopback", 2, "[::ffff:127.0.0.1]:40000", "[::ffff:127.0.0.1]:80", true,
               kTw, kOld, 0, kSecond, false, Tristate::kYes},
        TwCase{"Reuse2BoundToLo", 2, "10.0.0.1:40000", "10.0.0.9:80", true, kTw, kOld, 1, kSecond,
               false, Tristate::kYes},
        TwCase{"Reuse2DeviceUnknown", 2, "10.0.0.1:40000", "10.0.0.9:80", true, kTw, kOld,
               std::nullopt, kSecond, false, Tristate::kUnknown},
        TwCase{"NoTimestamps", 1, "10.0.0.1:40000", "10.0.0.9:80", false, kTw, kOld, 0, kSecond,
               false, Tristate::kNo},
        TwCase{"TimestampsUnknown", 1, "10.0.0.1:40000", "10.0.0.9:80", std::nullopt, kTw, kOld, 0,
               kSecond, false, Tristate::kUnknown},
        TwCase{"FinWait2Substate", 1, "10.0.0.1:40000", "10.0.0.9:80", true, kFw2, kOld, 0, kSecond,
               false, Tristate::kNo},
        TwCase{"SubstateUnknown", 1, "10.0.0.1:40000", "10.0.0.9:80", true, std::nullopt, kOld, 0,
               kSecond, false, Tristate::kUnknown},
        TwCase{"AgeUnknown", 1, "10.0.0.1:40000", "10.0.0.9:80", true, kTw, std::nullopt, 0,
               kSecond, false, Tristate::kUnknown},
        // A known "no" wins over unknowns.
        TwCase{"Reuse0WithUnknowns", 0, "10.0.0.1:40000", "10.0.0.9:80", std::nullopt, std::nullopt,
               std::nullopt, std::nullopt, kSecond, false, Tristate::kNo},
        // Explicitly bound port: twp == NULL, only timestamps matter (verified on 6.18).
        TwCase{"BoundPortReuse0", 0, "10.0.0.1:40000", "10.0.0.9:80", true, kTw, kYoung, 0, kSecond,
               true, Tristate::kYes},
        TwCase{"BoundPortFinWait2", 0, "10.0.0.1:40000", "10.0.0.9:80", true, kFw2, kYoung, 0,
               kSecond, true, Tristate::kYes},
        TwCase{"BoundPortNoTimestamps", 2, "127.0.0.1:40000", "127.0.0.1:80", false, kTw, kOld, 0,
               kSecond, true, Tristate::kNo},
        TwCase{"BoundPortTimestampsUnknown", 2, "127.0.0.1:40000", "127.0.0.1:80", std::nullopt,
               kTw, kOld, 0, kSecond, true, Tristate::kUnknown}),
    [](const testing::TestParamInfo<TwCase>& case_info) {
      return std::string(case_info.param.name);
    });

TEST(TimeWaitAccountTest, ReuseSettingsChangeWhatIsAvailable) {
  SocketTable table;
  table.default_config.port_range_lo = 40000;
  table.default_config.port_range_hi = 40009;
  for (std::uint16_t p = 40000; p < 40010; ++p) {
    table.sockets.push_back(
        connection("10.0.0.1:" + std::to_string(p), "10.0.0.9:5432", TcpState::kTimeWait));
  }
  table.sockets[0].time_wait_substate = TcpState::kFinWait2;   // never reused
  table.sockets[1].timestamps = false;                         // never reused
  table.sockets[2].time_wait_remaining = milliseconds{59900};  // too young
  table.sockets[3].timestamps = std::nullopt;                  // undecided

  table.default_config.tcp_tw_reuse = 0;
  EphemeralAccount a = account_destination(table, db());
  EXPECT_EQ(a.in_use, 10U);
  EXPECT_EQ(a.time_wait, 10U);
  EXPECT_EQ(a.time_wait_reusable, 0U);
  EXPECT_EQ(a.available, 0U);
  EXPECT_DOUBLE_EQ(a.utilization, 1.0);

  table.default_config.tcp_tw_reuse = 2;  // not loopback
  EXPECT_EQ(account_destination(table, db()).time_wait_reusable, 0U);

  table.default_config.tcp_tw_reuse = 1;
  a = account_destination(table, db());
  EXPECT_EQ(a.time_wait_reusable, 6U);
  EXPECT_EQ(a.undecided, 1U);
  EXPECT_EQ(a.available, 6U);
  ASSERT_EQ(a.holders.size(), 1U);
  EXPECT_TRUE(a.holders[0].time_wait);
  EXPECT_EQ(a.holders[0].ports, 10U);
  EXPECT_FALSE(a.holders[0].owner.has_value());
}

TEST(TimeWaitAccountTest, ALivePortIsNotReusableBecauseOfAnOldTimeWait) {
  SocketTable table;
  table.default_config.tcp_tw_reuse = 1;
  table.sockets = {connection("10.0.0.1:40000", "10.0.0.9:5432", TcpState::kTimeWait),
                   connection("10.0.0.1:40000", "10.0.0.9:5432")};
  const EphemeralAccount a = account_destination(table, db());
  EXPECT_EQ(a.in_use, 1U);
  EXPECT_EQ(a.time_wait, 0U);
  EXPECT_EQ(a.time_wait_reusable, 0U);
  ASSERT_EQ(a.holders.size(), 1U);
  EXPECT_EQ(a.holders[0].owner->comm, "java");
}

TEST(HolderTest, RankedByPortsAndCapped) {
  SocketTable table;
  std::uint16_t port = 40000;
  for (std::uint32_t pid = 1; pid <= 7; ++pid) {
    for (std::uint32_t n = 0; n < pid; ++n) {
      SocketEntry e = connection("10.0.0.1:" + std::to_string(port++), "10.0.0.9:5432");
      e.owner = SocketOwner{pid, "worker" + std::to_string(pid)};
      table.sockets.push_back(e);
    }
  }
  const EphemeralAccount a = account_destination(table, db());
  EXPECT_EQ(a.in_use, 28U);
  ASSERT_EQ(a.holders.size(), EphemeralAccount::kMaxHolders);
  EXPECT_EQ(a.holders[0].owner->pid, 7U);
  EXPECT_EQ(a.holders[0].ports, 7U);
  EXPECT_EQ(a.holders[4].owner->pid, 3U);
  EXPECT_EQ(a.holders[0].example.owner->comm, "worker7");
}

// ---------------------------------------------------------------------------------------------

TEST(ByDestinationTest, GroupsAndMatchesSingleAccounts) {
  SocketTable table;
  table.default_config.tcp_tw_reuse = 1;
  table.sockets = {
      connection("10.0.0.1:40000", "10.0.0.9:5432"),
      connection("10.0.0.1:40001", "10.0.0.9:5432", TcpState::kTimeWait),
      connection("10.0.0.1:40000", "10.0.0.8:80"),
      connection("10.0.0.2:40000", "10.0.0.9:5432"),
      connection("[::ffff:10.0.0.1]:40002", "[::ffff:10.0.0.9]:5432"),
      connection("10.0.0.1:8080", "10.0.0.50:51000"),  // a server's accepted connection
      listener("0.0.0.0:8080"),
  };
  SocketEntry other_netns = connection("10.0.0.1:40000", "10.0.0.9:5432");
  other_netns.netns = kNetns + 1;
  table.sockets.push_back(other_netns);

  const std::vector<EphemeralAccount> all = account_by_destination(table);
  ASSERT_EQ(all.size(), 4U);
  for (std::size_t i = 1; i < all.size(); ++i) {
    EXPECT_LT(*all[i - 1].destination, *all[i].destination);
  }
  std::uint32_t total = 0;
  for (const EphemeralAccount& a : all) {
    const EphemeralAccount single = account_destination(table, *a.destination);
    EXPECT_EQ(a.in_use, single.in_use);
    EXPECT_EQ(a.time_wait, single.time_wait);
    EXPECT_EQ(a.time_wait_reusable, single.time_wait_reusable);
    EXPECT_EQ(a.capacity, single.capacity);
    EXPECT_DOUBLE_EQ(a.utilization, single.utilization);
    total += a.in_use;
  }
  EXPECT_EQ(total, 6U);  // the accepted connection on 8080 forms no destination
  const auto db_account = std::find_if(
      all.begin(), all.end(), [](const EphemeralAccount& a) { return *a.destination == db(); });
  ASSERT_NE(db_account, all.end());
  EXPECT_EQ(db_account->in_use, 3U);
  EXPECT_EQ(db_account->time_wait, 1U);
  EXPECT_EQ(db_account->time_wait_reusable, 1U);
}

TEST(ByDestinationTest, ScalesTo200kSocketsOver10kDestinations) {
  SocketTable table;
  constexpr std::uint32_t kDestinations = 10000;
  constexpr std::uint32_t kPerDestination = 20;
  table.sockets.reserve(std::size_t{kDestinations} * kPerDestination);
  for (std::uint32_t d = 0; d < kDestinations; ++d) {
    const std::string remote = "10." + std::to_string(d / 256) + "." + std::to_string(d % 256) +
                               ".1:" + std::to_string(1000 + d % 7);
    for (std::uint32_t i = 0; i < kPerDestination; ++i) {
      table.sockets.push_back(
          connection("10.255.0.1:" + std::to_string(32768 + (d * 3 + i) % 28000), remote,
                     i % 2 == 0 ? TcpState::kEstablished : TcpState::kTimeWait));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<EphemeralAccount> all = account_by_destination(table);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(all.size(), kDestinations);
  std::uint64_t in_use = 0;
  for (const EphemeralAccount& a : all) {
    in_use += a.in_use;
  }
  EXPECT_EQ(in_use, std::uint64_t{kDestinations} * kPerDestination);
  // Quadratic grouping would take minutes here; O(n log n) takes well under a second.
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), 5000);
}

}  // namespace
}  // namespace portlens
