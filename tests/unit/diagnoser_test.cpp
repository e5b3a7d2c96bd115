// The diagnoser against hand-built socket tables: every rule of docs/kernel-rules.md sections 1-4
// and 6 that decides bind(), listen() and connect(), the cause precedence and the hints.
#include "agent/diagnose/diagnoser.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/builders.hpp"

namespace portlens {
namespace {

using unit::ep;
using unit::ip;

constexpr std::uint64_t kNetns = unit::kTestNetns;  // the builders' default
constexpr std::uint32_t kUid = 1000;
constexpr std::uint32_t kOtherUid = 33;

bool is_bound_only(TcpState s) { return s == TcpState::kClose || s == TcpState::kBoundInactive; }

// A fully known TCP owner: no reuse flags, uid kUid, PID 812 (nginx); TIME_WAIT entries look as
// the snapshot sees minisockets (no inode, uid or owner; 41.25 s left; timestamps).
SocketEntry tcp(TcpState state, std::string_view local) {
  SocketEntry e;
  e.proto = Proto::kTcp;
  e.state = state;
  e.local = ep(local);
  e.netns = kNetns;
  e.reuseaddr = false;
  e.reuseport = false;
  e.v6only = false;
  e.bound_dev_if = 0;
  if (state != TcpState::kListen && !is_bound_only(state)) {
    e.remote = ep(e.local.addr.is_v4() ? "127.0.0.1:40000" : "[::1]:40000");
  }
  if (state == TcpState::kTimeWait) {
    e.time_wait_substate = TcpState::kTimeWait;
    e.time_wait_remaining = std::chrono::milliseconds{41250};
    e.timestamps = true;
    return e;
  }
  e.uid = kUid;
  e.explicit_port = true;
  e.inode = 5000 + e.local.port;
  e.owner = SocketOwner{812, "nginx"};
  return e;
}

SocketEntry udp(std::string_view local) {
  SocketEntry e = tcp(TcpState::kClose, local);
  e.proto = Proto::kUdp;
  e.state = std::nullopt;
  e.owner = SocketOwner{53, "dnsmasq"};
  return e;
}

SocketTable table_of(std::vector<SocketEntry> sockets) {
  SocketTable t;
  t.sockets = std::move(sockets);
  t.default_config.local_addresses = std::vector<LocalAddress>{
      {ip("127.0.0.1"), 8, true}, {ip("::1"), 128, true},     {ip("10.0.0.1"), 24, false},
      {ip("fd00::1"), 64, false}, {ip("fd00::2"), 64, false},
  };
  return t;
}

Call bind_call(std::string_view local, SocketOptions options = {}, std::uint32_t uid = kUid) {
  Call c;
  c.syscall = Syscall::kBind;
  c.proto = Proto::kTcp;
  c.local = ep(local);
  c.family = c.local.addr.family();
  c.netns = kNetns;
  c.options = options;
  c.uid = uid;
  return c;
}

Call failed(Call c, int error) {
  c.result = -error;
  return c;
}

SocketOptions reuseaddr() { return SocketOptions{.reuseaddr = true}; }
SocketOptions reuseport() { return SocketOptions{.reuseport = true}; }

// ---------------------------------------------------------------------------------------------

TEST(CauseTest, SpellingsAreArchitectureMd) {
  const std::vector<std::pair<Cause, std::string_view>> spellings = {
      {Cause::kTimeWait, "time_wait"},
      {Cause::kMissingReuseaddr, "missing_reuseaddr"},
      {Cause::kWildcardConflict, "wildcard_conflict"},
      {Cause::kPortInUse, "port_in_use"},
      {Cause::kReuseportUidMismatch, "reuseport_uid_mismatch"},
      {Cause::kEphemeralExhausted, "ephemeral_exhausted"},
      {Cause::kFourTupleInUse, "four_tuple_in_use"},
      {Cause::kAddressNotLocal, "address_not_local"},
      {Cause::kPrivilegedPort, "privileged_port"},
      {Cause::kUnknown, "unknown"},
  };
  for (const auto& [cause, text] : spellings) {
    EXPECT_EQ(to_string(cause), text);
    EXPECT_EQ(parse_cause(text), cause);
  }
  EXPECT_EQ(parse_cause("TIME_WAIT"), std::nullopt);
  EXPECT_EQ(parse_cause(""), std::nullopt);
  EXPECT_EQ(to_string(Syscall::kListen), "listen");
}

// ---------------------------------------------------------------------------------------------
// Section 1: E's state x the reuse flags on both sockets, same address.

enum class Flags {
  kReuseaddrBoth,
  kReuseportSameUid,
  kReuseportOtherUid,
  kNone,
  kReuseaddrNewOnly,
  kReuseaddrOwnerOnly,
  kReuseportNewOnly,
};

struct StateFlagsCase {
  TcpState state;
  std::optional<TcpState> substate;
  Flags flags;
  std::optional<Cause> cause;  // nullopt: bind succeeds
};

std::string flags_name(Flags f) {
  switch (f) {
    case Flags::kReuseaddrBoth:
      return "ReuseaddrBoth";
    case Flags::kReuseportSameUid:
      return "ReuseportSameUid";
    case Flags::kReuseportOtherUid:
      return "ReuseportOtherUid";
    case Flags::kNone:
      return "None";
    case Flags::kReuseaddrNewOnly:
      return "ReuseaddrNewOnly";
    case Flags::kReuseaddrOwnerOnly:
      return "ReuseaddrOwnerOnly";
    case Flags::kReuseportNewOnly:
      return "ReuseportNewOnly";
  }
  return "?";
}

class StateFlagsTest : public testing::TestWithParam<StateFlagsCase> {};

TEST_P(StateFlagsTest, BindDecision) {
  const StateFlagsCase& c = GetParam();
  SocketEntry owner = tcp(c.state, "127.0.0.1:8080");
  if (c.substate) {
    owner.time_wait_substate = c.substate;
  }
  SocketOptions options;
  std::uint32_t uid = kUid;
  switch (c.flags) {
    case Flags::kReuseaddrBoth:
      options.reuseaddr = true;
      owner.reuseaddr = true;
      break;
    case Flags::kReuseportSameUid:
      options.reuseport = true;
      owner.reuseport = true;
      break;
    case Flags::kReuseportOtherUid:
      options.reuseport = true;
      owner.reuseport = true;
      uid = kOtherUid;
      break;
    case Flags::kNone:
      break;
    case Flags::kReuseaddrNewOnly:
      options.reuseaddr = true;
      break;
    case Flags::kReuseaddrOwnerOnly:
      owner.reuseaddr = true;
      break;
    case Flags::kReuseportNewOnly:
      options.reuseport = true;
      break;
  }
  const SocketTable table = table_of({owner});
  const Call call = bind_call("127.0.0.1:8080", options, uid);

  const Prediction p = predict(call, false, table);
  if (!c.cause) {
    EXPECT_EQ(p.outcome, Outcome::kSucceeds);
    EXPECT_EQ(p.expected_result, 0);
    EXPECT_EQ(diagnose(failed(call, EADDRINUSE), table).cause, Cause::kUnknown);
    return;
  }
  ASSERT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.failing_syscall, Syscall::kBind);
  EXPECT_EQ(p.expected_result, -EADDRINUSE);
  ASSERT_TRUE(p.diagnosis.has_value());
  EXPECT_EQ(p.diagnosis->cause, *c.cause);

  const Diagnosis d = diagnose(failed(call, EADDRINUSE), table);
  EXPECT_EQ(d.cause, *c.cause);
  ASSERT_EQ(d.blockers.size(), 1U);
  EXPECT_EQ(d.blockers[0].socket.local, owner.local);
  EXPECT_EQ(d.blockers[0].socket.state, c.state);
  EXPECT_EQ(d.blockers[0].cause, *c.cause);
  EXPECT_TRUE(d.blockers[0].definite);
  EXPECT_FALSE(d.hint.empty());
}

std::vector<StateFlagsCase> state_flags_cases() {
  std::vector<StateFlagsCase> cases;
  // LISTEN: only SO_REUSEPORT on both with the same uid shares it.
  const auto kListen = TcpState::kListen;
  cases.push_back({kListen, {}, Flags::kReuseaddrBoth, Cause::kPortInUse});
  cases.push_back({kListen, {}, Flags::kReuseportSameUid, std::nullopt});
  cases.push_back({kListen, {}, Flags::kReuseportOtherUid, Cause::kReuseportUidMismatch});
  cases.push_back({kListen, {}, Flags::kNone, Cause::kPortInUse});
  cases.push_back({kListen, {}, Flags::kReuseaddrNewOnly, Cause::kPortInUse});
  cases.push_back({kListen, {}, Flags::kReuseaddrOwnerOnly, Cause::kPortInUse});
  cases.push_back({kListen, {}, Flags::kReuseportNewOnly, Cause::kPortInUse});
  // Every other full socket state.
  for (const TcpState s : {TcpState::kClose, TcpState::kBoundInactive, TcpState::kSynSent,
                           TcpState::kEstablished, TcpState::kFinWait1, TcpState::kFinWait2,
                           TcpState::kCloseWait, TcpState::kClosing, TcpState::kLastAck}) {
    cases.push_back({s, {}, Flags::kReuseaddrBoth, std::nullopt});
    cases.push_back({s, {}, Flags::kReuseportSameUid, std::nullopt});
    cases.push_back({s, {}, Flags::kReuseportOtherUid, Cause::kReuseportUidMismatch});
    cases.push_back({s, {}, Flags::kNone, Cause::kMissingReuseaddr});
    cases.push_back({s, {}, Flags::kReuseaddrNewOnly, Cause::kMissingReuseaddr});
    cases.push_back({s, {}, Flags::kReuseaddrOwnerOnly, Cause::kMissingReuseaddr});
    cases.push_back({s, {}, Flags::kReuseportNewOnly, Cause::kMissingReuseaddr});
  }
  // TIME_WAIT, either substate: SO_REUSEPORT on both shares it whatever the uid.
  for (const TcpState sub : {TcpState::kTimeWait, TcpState::kFinWait2}) {
    cases.push_back({TcpState::kTimeWait, sub, Flags::kReuseaddrBoth, std::nullopt});
    cases.push_back({TcpState::kTimeWait, sub, Flags::kReuseportSameUid, std::nullopt});
    cases.push_back({TcpState::kTimeWait, sub, Flags::kReuseportOtherUid, std::nullopt});
    cases.push_back({TcpState::kTimeWait, sub, Flags::kNone, Cause::kTimeWait});
    cases.push_back({TcpState::kTimeWait, sub, Flags::kReuseaddrNewOnly, Cause::kTimeWait});
    cases.push_back({TcpState::kTimeWait, sub, Flags::kReuseaddrOwnerOnly, Cause::kTimeWait});
    cases.push_back({TcpState::kTimeWait, sub, Flags::kReuseportNewOnly, Cause::kTimeWait});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(KernelRules1, StateFlagsTest, testing::ValuesIn(state_flags_cases()),
                         [](const testing::TestParamInfo<StateFlagsCase>& case_info) {
                           std::string name =
                               state_name(static_cast<int>(case_info.param.state)) +
                               (case_info.param.substate == TcpState::kFinWait2 ? "_FW2sub_"
                                                                                : "_") +
                               flags_name(case_info.param.flags);
                           for (char& ch : name) {
                             ch = (ch == '-') ? '_' : ch;
                           }
                           return name;
                         });

// ---------------------------------------------------------------------------------------------
// Section 1: the 5x5 address overlap table, every cell, in both directions.

struct AddressColumn {
  std::string_view name;
  std::string_view address;  // without port
  bool v6only;
};

const std::vector<AddressColumn>& address_columns() {
  static const std::vector<AddressColumn> kColumns = {
      {"any4", "0.0.0.0", false}, {"ipv4", "127.0.0.1", false}, {"dual", "[::]", false},
      {"v6only", "[::]", true},   {"ipv6", "[::1]", false},
  };
  return kColumns;
}

// docs/kernel-rules.md section 1, rows the new socket, columns the owner; 2 = only if same address.
constexpr std::array<std::array<int, 5>, 5> kOverlap = {{
    {1, 1, 1, 0, 0},
    {1, 2, 1, 0, 0},
    {1, 1, 1, 1, 1},
    {0, 0, 1, 1, 1},
    {0, 0, 1, 1, 2},
}};

TEST(AddressOverlapTest, EveryCellOfTheTable) {
  for (std::size_t s = 0; s < 5; ++s) {
    for (std::size_t e = 0; e < 5; ++e) {
      const AddressColumn& sc = address_columns()[s];
      const AddressColumn& ec = address_columns()[e];
      SocketEntry owner = tcp(TcpState::kListen, std::string(ec.address) + ":8080");
      owner.v6only = ec.v6only;
      const SocketTable table = table_of({owner});
      const Call call =
          bind_call(std::string(sc.address) + ":8080", SocketOptions{.v6only = sc.v6only});
      const bool expect_conflict = kOverlap[s][e] != 0;
      const Prediction p = predict(call, false, table);
      SCOPED_TRACE(std::string(sc.name) + " binds over " + std::string(ec.name));
      EXPECT_EQ(p.outcome, expect_conflict ? Outcome::kFails : Outcome::kSucceeds);
      if (expect_conflict) {
        // The same literal address is port_in_use; any other overlap is wildcard_conflict.
        const bool same = sc.address == ec.address;
        EXPECT_EQ(p.diagnosis->cause, same ? Cause::kPortInUse : Cause::kWildcardConflict);
      }
    }
  }
}

TEST(AddressOverlapTest, SpecificAddressCellsNeedTheSameAddress) {
  // 127.0.0.1 vs 127.0.0.2 and fd00::1 vs fd00::2: never a conflict, whatever the flags.
  for (const auto& [mine, theirs] : std::vector<std::pair<std::string, std::string>>{
           {"127.0.0.2:8080", "127.0.0.1:8080"}, {"[fd00::2]:8080", "[fd00::1]:8080"}}) {
    SocketEntry owner = tcp(TcpState::kListen, theirs);
    EXPECT_EQ(predict(bind_call(mine), true, table_of({owner})).outcome, Outcome::kSucceeds);
    EXPECT_EQ(predict(bind_call(theirs), false, table_of({owner})).outcome, Outcome::kFails);
  }
}

TEST(AddressOverlapTest, V4MappedBehavesLikeIpv4) {
  // ::ffff:127.0.0.1 as the new socket: exactly row "IPv4 X".
  for (std::size_t e = 0; e < 5; ++e) {
    const AddressColumn& ec = address_columns()[e];
    SocketEntry owner = tcp(TcpState::kListen, std::string(ec.address) + ":8080");
    owner.v6only = ec.v6only;
    Call call = bind_call("[::ffff:127.0.0.1]:8080");
    EXPECT_EQ(call.family, Family::kIpv6);
    const Prediction p = predict(call, false, table_of({owner}));
    SCOPED_TRACE(ec.name);
    EXPECT_EQ(p.outcome, kOverlap[1][e] != 0 ? Outcome::kFails : Outcome::kSucceeds);
  }
  // ::ffff:127.0.0.1 as the owner: exactly column "IPv4 X".
  for (std::size_t s = 0; s < 5; ++s) {
    const AddressColumn& sc = address_columns()[s];
    SocketEntry owner = tcp(TcpState::kListen, "[::ffff:127.0.0.1]:8080");
    const Call call =
        bind_call(std::string(sc.address) + ":8080", SocketOptions{.v6only = sc.v6only});
    SCOPED_TRACE(sc.name);
    EXPECT_EQ(predict(call, false, table_of({owner})).outcome,
              kOverlap[s][1] != 0 ? Outcome::kFails : Outcome::kSucceeds);
  }
  // Mapped and plain are the same address: port_in_use, not a wildcard overlap.
  const Prediction p = predict(bind_call("127.0.0.1:8080"), false,
                               table_of({tcp(TcpState::kListen, "[::ffff:127.0.0.1]:8080")}));
  EXPECT_EQ(p.diagnosis->cause, Cause::kPortInUse);
}

TEST(AddressOverlapTest, SpecificIpv6ImpliesV6only) {
  // The owner's flag says v6only=0 (as set before bind), or is unknown: binding ::1 set it.
  for (const std::optional<bool> flag : {std::optional<bool>(false), std::optional<bool>()}) {
    SocketEntry owner = tcp(TcpState::kListen, "[::1]:8080");
    owner.v6only = flag;
    EXPECT_EQ(predict(bind_call("0.0.0.0:8080"), false, table_of({owner})).outcome,
              Outcome::kSucceeds);
  }
  // And the new socket: ::1 without IPV6_V6ONLY does not overlap an IPv4 wildcard owner.
  EXPECT_EQ(
      predict(bind_call("[::1]:8080"), false, table_of({tcp(TcpState::kListen, "0.0.0.0:8080")}))
          .outcome,
      Outcome::kSucceeds);
}

TEST(AddressOverlapTest, WildcardWhyAndDualStackHint) {
  SocketEntry owner = tcp(TcpState::kListen, "[::]:8080");
  const Diagnosis d = diagnose(failed(bind_call("127.0.0.1:8080"), EADDRINUSE), table_of({owner}));
  EXPECT_EQ(d.cause, Cause::kWildcardConflict);
  ASSERT_EQ(d.blockers.size(), 1U);
  EXPECT_EQ(d.blockers[0].why, "LISTEN on [::] (dual-stack), overlaps 127.0.0.1");
  EXPECT_NE(d.hint.find("IPV6_V6ONLY"), std::string::npos) << d.hint;
  EXPECT_NE(d.hint.find("PID 812 (nginx)"), std::string::npos) << d.hint;

  const Diagnosis d4 = diagnose(failed(bind_call("127.0.0.1:8080"), EADDRINUSE),
                                table_of({tcp(TcpState::kListen, "0.0.0.0:8080")}));
  EXPECT_EQ(d4.blockers[0].why, "LISTEN on 0.0.0.0, overlaps 127.0.0.1");
  // No other address of 127/8 escapes 0.0.0.0: sharing or stopping the listener are the fixes.
  EXPECT_EQ(d4.hint, "set SO_REUSEPORT on this socket and on PID 812 (nginx)'s socket (same uid)");
  ASSERT_EQ(d4.fixes.size(), 2U);
  EXPECT_EQ(d4.fixes[1].kind, Fix::Kind::kStop);
}

// ---------------------------------------------------------------------------------------------
// Section 1: device, netns and protocol-table scope.

TEST(ScopeTest, DeviceRule) {
  struct Case {
    int mine;
    std::optional<int> theirs;
    Outcome outcome;
  };
  for (const Case& c : std::vector<Case>{{0, 0, Outcome::kFails},
                                         {0, 2, Outcome::kFails},
                                         {2, 0, Outcome::kFails},
                                         {2, 2, Outcome::kFails},
                                         {2, 3, Outcome::kSucceeds},
                                         {0, std::nullopt, Outcome::kFails},
                                         {2, std::nullopt, Outcome::kUndetermined}}) {
    SocketEntry owner = tcp(TcpState::kListen, "127.0.0.1:8080");
    owner.bound_dev_if = c.theirs;
    const Prediction p = predict(bind_call("127.0.0.1:8080", SocketOptions{.bound_dev_if = c.mine}),
                                 false, table_of({owner}));
    EXPECT_EQ(p.outcome, c.outcome) << c.mine << " vs " << c.theirs.value_or(-1);
    if (c.outcome == Outcome::kUndetermined) {
      ASSERT_EQ(p.diagnosis->blockers.size(), 1U);
      EXPECT_FALSE(p.diagnosis->blockers[0].definite);
      EXPECT_NE(p.diagnosis->blockers[0].why.find("bound device unknown"), std::string::npos);
    }
  }
}

TEST(ScopeTest, OtherNetnsNeverConflicts) {
  SocketEntry owner = tcp(TcpState::kListen, "0.0.0.0:8080");
  owner.netns = kNetns + 1;
  EXPECT_EQ(predict(bind_call("0.0.0.0:8080"), true, table_of({owner})).outcome,
            Outcome::kSucceeds);
  EXPECT_EQ(diagnose(failed(bind_call("0.0.0.0:8080"), EADDRINUSE), table_of({owner})).cause,
            Cause::kUnknown);
}

TEST(ScopeTest, ProtocolTablesAreSeparate) {
  struct Case {
    Proto mine;
    Proto theirs;
    bool conflict;
  };
  for (const Case& c : std::vector<Case>{{Proto::kTcp, Proto::kUdp, false},
                                         {Proto::kUdp, Proto::kTcp, false},
                                         {Proto::kUdp, Proto::kUdpLite, false},
                                         {Proto::kTcp, Proto::kMptcp, true},
                                         {Proto::kMptcp, Proto::kTcp, true},
                                         {Proto::kTcp, Proto::kTcp, true},
                                         {Proto::kUdp, Proto::kUdp, true}}) {
    SocketEntry owner = tcp(TcpState::kListen, "0.0.0.0:8080");
    owner.proto = c.theirs;
    if (c.theirs == Proto::kUdp || c.theirs == Proto::kUdpLite) {
      owner.state = std::nullopt;
    }
    Call call = bind_call("0.0.0.0:8080");
    call.proto = c.mine;
    const Diagnosis d = diagnose(failed(call, EADDRINUSE), table_of({owner}));
    EXPECT_EQ(d.blockers.size(), c.conflict ? 1U : 0U)
        << to_string(c.mine) << " vs " << to_string(c.theirs);
    EXPECT_EQ(d.cause == Cause::kUnknown, !c.conflict);
  }
}

TEST(ScopeTest, RequestSocketsAreNotOwners) {
  for (const TcpState s : {TcpState::kSynRecv, TcpState::kNewSynRecv}) {
    EXPECT_EQ(
        predict(bind_call("127.0.0.1:8080"), true, table_of({tcp(s, "127.0.0.1:8080")})).outcome,
        Outcome::kSucceeds);
  }
}

// ---------------------------------------------------------------------------------------------
// Section 2: listen().

TEST(ListenTest, TwoReuseaddrSocketsBothBindTheSecondListenFails) {
  SocketEntry first = tcp(TcpState::kClose, "127.0.0.1:7000");
  first.reuseaddr = true;
  // While the other one is only bound, this one binds and listens; the other is warned about.
  const Prediction p = predict(bind_call("127.0.0.1:7000", reuseaddr()), true, table_of({first}));
  EXPECT_EQ(p.outcome, Outcome::kSucceeds);
  EXPECT_NE(p.note.find("listen() fails for the other"), std::string::npos) << p.note;
  EXPECT_NE(p.note.find("PID 812 (nginx)"), std::string::npos) << p.note;

  // Once the first listens, the second listen() fails: it is port_in_use, and the listening
  // socket itself (inode 77, in the table as bound) is never named.
  first.state = TcpState::kListen;
  SocketEntry self = tcp(TcpState::kClose, "127.0.0.1:7000");
  self.reuseaddr = true;
  self.inode = 77;
  self.owner = SocketOwner{900, "app"};
  Call listen_call = bind_call("127.0.0.1:7000", reuseaddr());
  listen_call.syscall = Syscall::kListen;
  listen_call.inode = 77;
  const Diagnosis d = diagnose(failed(listen_call, EADDRINUSE), table_of({self, first}));
  EXPECT_EQ(d.cause, Cause::kPortInUse);
  ASSERT_EQ(d.blockers.size(), 1U);
  EXPECT_EQ(d.blockers[0].socket.inode, first.inode);
  EXPECT_EQ(d.blockers[0].why, "LISTEN on the same address");
}

TEST(ListenTest, TracedListenNeverNamesItsOwnSocketBySockId) {
  // From a traced event portlens knows the socket's kernel identity, not its inode. Without
  // SO_REUSEADDR the bound socket itself would match every rule of a blocker.
  SocketEntry listener = tcp(TcpState::kListen, "127.0.0.1:7000");
  listener.sock_id = 0xffff888000001000;
  SocketEntry self = tcp(TcpState::kClose, "127.0.0.1:7000");
  self.sock_id = 0xffff888000002000;
  Call listen_call = bind_call("127.0.0.1:7000");
  listen_call.syscall = Syscall::kListen;
  listen_call.sock_id = self.sock_id;
  const Diagnosis d = diagnose(failed(listen_call, EADDRINUSE), table_of({self, listener}));
  EXPECT_EQ(d.cause, Cause::kPortInUse);
  ASSERT_EQ(d.blockers.size(), 1U);
  EXPECT_EQ(d.blockers[0].socket.sock_id, listener.sock_id);
  listen_call.sock_id.reset();
  EXPECT_EQ(diagnose(failed(listen_call, EADDRINUSE), table_of({self, listener})).blockers.size(),
            2U);
}

TEST(ListenTest, BoundReuseaddrNeighbourDoesNotExplainAListenFailure) {
  SocketEntry other = tcp(TcpState::kClose, "127.0.0.1:7000");
  other.reuseaddr = true;
  Call listen_call = bind_call("127.0.0.1:7000", reuseaddr());
  listen_call.syscall = Syscall::kListen;
  const Diagnosis d = diagnose(failed(listen_call, EADDRINUSE), table_of({other}));
  EXPECT_EQ(d.cause, Cause::kUnknown);
  EXPECT_TRUE(d.blockers.empty());
}

TEST(ListenTest, ReuseaddrWildcardAndSpecificCoexistOnlyWhileNeitherListens) {
  SocketEntry wildcard = tcp(TcpState::kClose, "0.0.0.0:7000");
  wildcard.reuseaddr = true;
  EXPECT_EQ(predict(bind_call("127.0.0.1:7000", reuseaddr()), false, table_of({wildcard})).outcome,
            Outcome::kSucceeds);
  wildcard.state = TcpState::kListen;
  const Prediction p =
      predict(bind_call("127.0.0.1:7000", reuseaddr()), false, table_of({wildcard}));
  EXPECT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.diagnosis->cause, Cause::kWildcardConflict);

  // Listening overlaps: listen() on the specific socket fails against the wildcard listener.
  Call listen_call = bind_call("127.0.0.1:7000", reuseaddr());
  listen_call.syscall = Syscall::kListen;
  const Diagnosis d = diagnose(failed(listen_call, EADDRINUSE), table_of({wildcard}));
  EXPECT_EQ(d.cause, Cause::kWildcardConflict);
  // SO_REUSEADDR never clears a listener: only SO_REUSEPORT on both, or stopping it.
  EXPECT_EQ(d.hint, "set SO_REUSEPORT on this socket and on PID 812 (nginx)'s socket (same uid)");
}

TEST(ListenTest, ReuseportSameUidListenersCoexistOtherUidDoNot) {
  SocketEntry listener = tcp(TcpState::kListen, "0.0.0.0:7000");
  listener.reuseport = true;
  EXPECT_EQ(predict(bind_call("127.0.0.1:7000", reuseport()), true, table_of({listener})).outcome,
            Outcome::kSucceeds);
  const Prediction p =
      predict(bind_call("0.0.0.0:7000", reuseport(), kOtherUid), true, table_of({listener}));
  EXPECT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.failing_syscall, Syscall::kBind);
  EXPECT_EQ(p.diagnosis->cause, Cause::kReuseportUidMismatch);
  EXPECT_EQ(p.diagnosis->blockers[0].why, "SO_REUSEPORT on both, but uid 1000 vs 33");
  EXPECT_NE(p.diagnosis->hint.find("uid 1000"), std::string::npos);
  EXPECT_NE(p.diagnosis->hint.find("PID 812 (nginx)"), std::string::npos);
}

TEST(ListenTest, ListenAgainstATimeWaitWithReuseaddrSucceeds) {
  SocketEntry tw = tcp(TcpState::kTimeWait, "127.0.0.1:7000");
  tw.reuseaddr = true;
  EXPECT_EQ(predict(bind_call("127.0.0.1:7000", reuseaddr()), true, table_of({tw})).outcome,
            Outcome::kSucceeds);
}

// ---------------------------------------------------------------------------------------------
// Section 3: UDP.

TEST(UdpTest, Rules) {
  struct Case {
    std::string_view name;
    bool mine_addr, theirs_addr, mine_port, theirs_port;
    std::uint32_t uid;
    bool connected;
    std::optional<Cause> cause;
  };
  for (const Case& c : std::vector<Case>{
           {"none", false, false, false, false, kUid, false, Cause::kPortInUse},
           {"reuseaddr both", true, true, false, false, kUid, false, std::nullopt},
           {"reuseaddr both, other uid", true, true, false, false, kOtherUid, false, std::nullopt},
           {"reuseaddr new only", true, false, false, false, kUid, false, Cause::kPortInUse},
           {"reuseaddr owner only", false, true, false, false, kUid, false, Cause::kPortInUse},
           {"reuseport same uid", false, false, true, true, kUid, false, std::nullopt},
           {"reuseport other uid", false, false, true, true, kOtherUid, false,
            Cause::kReuseportUidMismatch},
           {"connected owner", false, false, false, false, kUid, true, Cause::kMissingReuseaddr},
       }) {
    SocketEntry owner = udp("127.0.0.1:5353");
    owner.reuseaddr = c.theirs_addr;
    owner.reuseport = c.theirs_port;
    if (c.connected) {
      owner.remote = ep("127.0.0.1:9999");
    }
    Call call = bind_call("127.0.0.1:5353",
                          SocketOptions{.reuseaddr = c.mine_addr, .reuseport = c.mine_port}, c.uid);
    call.proto = Proto::kUdp;
    const Prediction p = predict(call, false, table_of({owner}));
    SCOPED_TRACE(std::string(c.name));
    if (!c.cause) {
      EXPECT_EQ(p.outcome, Outcome::kSucceeds);
      continue;
    }
    ASSERT_EQ(p.outcome, Outcome::kFails);
    EXPECT_EQ(p.diagnosis->cause, *c.cause);
    EXPECT_EQ(p.diagnosis->blockers.size(), 1U);
  }
}

TEST(UdpTest, StatePlaysNoPartAndWildcardOverlaps) {
  SocketEntry owner = udp("0.0.0.0:5353");
  Call call = bind_call("127.0.0.1:5353");
  call.proto = Proto::kUdp;
  const Diagnosis d = diagnose(failed(call, EADDRINUSE), table_of({owner}));
  EXPECT_EQ(d.cause, Cause::kWildcardConflict);
  EXPECT_EQ(d.blockers[0].why, "bound on 0.0.0.0, overlaps 127.0.0.1");
  const Diagnosis same = diagnose(failed(bind_call("0.0.0.0:5353"), EADDRINUSE), table_of({owner}));
  EXPECT_EQ(same.cause, Cause::kUnknown);  // a TCP bind is never blocked by UDP
  call.local = ep("0.0.0.0:5353");
  const Diagnosis udp_same = diagnose(failed(call, EADDRINUSE), table_of({owner}));
  EXPECT_EQ(udp_same.cause, Cause::kPortInUse);
  EXPECT_NE(udp_same.hint.find("PID 53 (dnsmasq)"), std::string::npos) << udp_same.hint;
  EXPECT_NE(udp_same.hint.find("SO_REUSEADDR"), std::string::npos) << udp_same.hint;
}

// ---------------------------------------------------------------------------------------------
// Section 6 table: bind() EACCES and EADDRNOTAVAIL.

TEST(PrivilegedPortTest, BelowUnprivilegedPortStart) {
  const SocketTable table = table_of({});
  const Prediction p = predict(bind_call("0.0.0.0:80"), false, table);
  EXPECT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.expected_result, -EACCES);
  EXPECT_EQ(p.diagnosis->cause, Cause::kPrivilegedPort);
  EXPECT_EQ(predict(bind_call("0.0.0.0:80", {}, 0), false, table).outcome, Outcome::kSucceeds);
  Call with_cap = bind_call("0.0.0.0:80");
  with_cap.cap_net_bind_service = true;
  EXPECT_EQ(predict(with_cap, false, table).outcome, Outcome::kSucceeds);
  EXPECT_EQ(predict(bind_call("0.0.0.0:1024"), false, table).outcome, Outcome::kSucceeds);
  SocketTable lowered = table;
  lowered.default_config.ip_unprivileged_port_start = 80;
  EXPECT_EQ(predict(bind_call("0.0.0.0:80"), false, lowered).outcome, Outcome::kSucceeds);
  EXPECT_EQ(predict(bind_call("0.0.0.0:79"), false, lowered).outcome, Outcome::kFails);

  const Diagnosis d = diagnose(failed(bind_call("0.0.0.0:80"), EACCES), table);
  EXPECT_EQ(d.cause, Cause::kPrivilegedPort);
  EXPECT_NE(d.hint.find("CAP_NET_BIND_SERVICE"), std::string::npos);
  EXPECT_EQ(diagnose(failed(bind_call("0.0.0.0:8080"), EACCES), table).cause, Cause::kUnknown);
}

TEST(PrivilegedPortTest, CheckOrderFollowsTheFamily) {
  // __inet_bind: address first; __inet6_bind: privilege first.
  const SocketTable table = table_of({});
  EXPECT_EQ(predict(bind_call("192.0.2.1:80"), false, table).expected_result, -EADDRNOTAVAIL);
  EXPECT_EQ(predict(bind_call("[2001:db8::1]:80"), false, table).expected_result, -EACCES);
}

TEST(AddressNotLocalTest, Rules) {
  const SocketTable table = table_of({});
  struct Case {
    std::string_view endpoint;
    SocketOptions options;
    Outcome outcome;
  };
  for (const Case& c : std::vector<Case>{
           {"192.0.2.1:8080", {}, Outcome::kFails},
           {"192.0.2.1:8080", {.freebind = true}, Outcome::kSucceeds},
           {"192.0.2.1:8080", {.transparent = true}, Outcome::kSucceeds},
           {"10.0.0.1:8080", {}, Outcome::kSucceeds},
           {"10.0.0.2:8080", {}, Outcome::kFails},       // same subnet, not ours
           {"10.0.0.255:8080", {}, Outcome::kSucceeds},  // the subnet's broadcast
           {"127.0.0.2:8080", {}, Outcome::kSucceeds},   // 127/8 on lo is all local
           {"224.0.0.1:8080", {}, Outcome::kSucceeds},   // multicast
           {"0.0.0.0:8080", {}, Outcome::kSucceeds},
           {"[fd00::1]:8080", {}, Outcome::kSucceeds},
           {"[fd00::3]:8080", {}, Outcome::kFails},  // IPv6: only configured addresses
           {"[::ffff:192.0.2.1]:8080", {}, Outcome::kFails},
           {"[::ffff:127.0.0.1]:8080", {}, Outcome::kSucceeds},
       }) {
    const Prediction p = predict(bind_call(c.endpoint, c.options), false, table);
    EXPECT_EQ(p.outcome, c.outcome) << c.endpoint;
    if (c.outcome == Outcome::kFails) {
      EXPECT_EQ(p.expected_result, -EADDRNOTAVAIL) << c.endpoint;
      EXPECT_EQ(p.diagnosis->cause, Cause::kAddressNotLocal) << c.endpoint;
    }
  }
  // ip_nonlocal_bind is per family; a v4-mapped address follows the IPv4 one.
  SocketTable nonlocal4 = table;
  nonlocal4.default_config.ip_nonlocal_bind = true;
  EXPECT_EQ(predict(bind_call("192.0.2.1:8080"), false, nonlocal4).outcome, Outcome::kSucceeds);
  EXPECT_EQ(predict(bind_call("[::ffff:192.0.2.1]:8080"), false, nonlocal4).outcome,
            Outcome::kSucceeds);
  EXPECT_EQ(predict(bind_call("[fd00::3]:8080"), false, nonlocal4).outcome, Outcome::kFails);
  SocketTable nonlocal6 = table;
  nonlocal6.default_config.ip6_nonlocal_bind = true;
  EXPECT_EQ(predict(bind_call("[fd00::3]:8080"), false, nonlocal6).outcome, Outcome::kSucceeds);

  // Unknown addresses: never assumed either way.
  SocketTable unknown = table;
  unknown.default_config.local_addresses = std::nullopt;
  const Prediction p = predict(bind_call("192.0.2.1:8080"), false, unknown);
  EXPECT_EQ(p.outcome, Outcome::kUndetermined);
  EXPECT_EQ(p.diagnosis->cause, Cause::kUnknown);
  EXPECT_EQ(predict(bind_call("0.0.0.0:8080"), false, unknown).outcome, Outcome::kSucceeds);
}

TEST(AddressNotLocalTest, Diagnose) {
  const SocketTable table = table_of({});
  const Diagnosis d = diagnose(failed(bind_call("192.0.2.1:8080"), EADDRNOTAVAIL), table);
  EXPECT_EQ(d.cause, Cause::kAddressNotLocal);
  EXPECT_NE(d.hint.find("192.0.2.1"), std::string::npos);
  EXPECT_NE(d.hint.find("IP_FREEBIND"), std::string::npos);
  EXPECT_TRUE(d.blockers.empty());
  const Diagnosis with_freebind = diagnose(
      failed(bind_call("192.0.2.1:8080", SocketOptions{.freebind = true}), EADDRNOTAVAIL), table);
  EXPECT_EQ(with_freebind.cause, Cause::kUnknown);
}

// ---------------------------------------------------------------------------------------------
// Section 6: connect() from an explicitly bound port.

Call connect_call(std::string_view local, std::string_view remote, int error) {
  Call c = bind_call(local);
  c.syscall = Syscall::kConnect;
  c.remote = ep(remote);
  c.result = -error;
  return c;
}

TEST(FourTupleTest, BusyTupleFromABoundPort) {
  SocketEntry conn = tcp(TcpState::kEstablished, "127.0.0.1:5000");
  conn.remote = ep("127.0.0.1:9000");
  const SocketTable table = table_of({conn});
  const Diagnosis d =
      diagnose(connect_call("127.0.0.1:5000", "127.0.0.1:9000", EADDRNOTAVAIL), table);
  EXPECT_EQ(d.cause, Cause::kFourTupleInUse);
  ASSERT_EQ(d.blockers.size(), 1U);
  EXPECT_TRUE(d.blockers[0].definite);
  EXPECT_EQ(d.blockers[0].why, "ESTABLISHED on the same 4-tuple");
  EXPECT_NE(d.hint.find("PID 812 (nginx)"), std::string::npos) << d.hint;
  EXPECT_NE(d.hint.find("IP_BIND_ADDRESS_NO_PORT"), std::string::npos) << d.hint;
  // Another destination port, or another source address: nothing explains it.
  EXPECT_EQ(diagnose(connect_call("127.0.0.1:5000", "127.0.0.1:9001", EADDRNOTAVAIL), table).cause,
            Cause::kUnknown);
  EXPECT_EQ(diagnose(connect_call("127.0.0.2:5000", "127.0.0.1:9000", EADDRNOTAVAIL), table).cause,
            Cause::kUnknown);
  // An unknown source address (bound to 0.0.0.0:5000): listed, but not definite.
  const Diagnosis any =
      diagnose(connect_call("0.0.0.0:5000", "127.0.0.1:9000", EADDRNOTAVAIL), table);
  EXPECT_EQ(any.cause, Cause::kFourTupleInUse);
  ASSERT_EQ(any.blockers.size(), 1U);
  EXPECT_FALSE(any.blockers[0].definite);
}

TEST(FourTupleTest, TimeWaitOnABoundPortIsReusedWithTimestampsWhateverTcpTwReuse) {
  // Verified on 6.18: tcp_twsk_unique() with twp == NULL ignores tcp_tw_reuse.
  for (const int tw_reuse : {0, 1, 2}) {
    SocketEntry tw = tcp(TcpState::kTimeWait, "127.0.0.1:5000");
    tw.remote = ep("127.0.0.1:9000");
    SocketTable table = table_of({tw});
    table.default_config.tcp_tw_reuse = tw_reuse;
    const Call call = connect_call("127.0.0.1:5000", "127.0.0.1:9000", EADDRNOTAVAIL);
    EXPECT_EQ(diagnose(call, table).cause, Cause::kUnknown) << tw_reuse;

    table.sockets[0].timestamps = false;
    const Diagnosis d = diagnose(call, table);
    EXPECT_EQ(d.cause, Cause::kFourTupleInUse);
    ASSERT_EQ(d.blockers.size(), 1U);
    EXPECT_EQ(d.blockers[0].why,
              "TIME_WAIT on the same 4-tuple without TCP timestamps, expires in 41 s");

    table.sockets[0].timestamps = std::nullopt;
    const Diagnosis u = diagnose(call, table);
    EXPECT_EQ(u.cause, Cause::kFourTupleInUse);
    ASSERT_EQ(u.blockers.size(), 1U);
    EXPECT_FALSE(u.blockers[0].definite);
    EXPECT_NE(u.blockers[0].why.find("TCP timestamps unknown"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------
// Section 6: exhaustion as diagnose() reports it.

SocketTable small_range(std::vector<SocketEntry> sockets) {
  SocketTable t = table_of(std::move(sockets));
  t.default_config.port_range_lo = 5000;
  t.default_config.port_range_hi = 5003;
  t.default_config.reserved_ports.set(5003);
  return t;
}

SocketEntry client(std::uint16_t port, std::string_view remote, TcpState state) {
  SocketEntry e = tcp(state, "10.0.0.1:" + std::to_string(port));
  e.remote = ep(remote);
  e.explicit_port = false;
  if (state != TcpState::kTimeWait) {
    e.owner = SocketOwner{4242, "java"};
  }
  return e;
}

TEST(ExhaustionTest, ConnectWithoutAPortNamesTheDestinationAndHolders) {
  // 5000..5003: 5003 reserved, 5002 held by a listener, 5000 and 5001 connected to the db.
  SocketTable table = small_range({client(5000, "10.0.0.9:5432", TcpState::kEstablished),
                                   client(5001, "10.0.0.9:5432", TcpState::kTimeWait),
                                   tcp(TcpState::kListen, "0.0.0.0:5002")});
  table.default_config.tcp_tw_reuse = 2;
  const Diagnosis d = diagnose(connect_call("0.0.0.0:0", "10.0.0.9:5432", EADDRNOTAVAIL), table);
  EXPECT_EQ(d.cause, Cause::kEphemeralExhausted);
  ASSERT_TRUE(d.ephemeral.has_value());
  EXPECT_EQ(d.ephemeral->destination->remote, ep("10.0.0.9:5432"));
  EXPECT_EQ(d.ephemeral->destination->source, ip("10.0.0.1"));
  EXPECT_EQ(d.ephemeral->capacity, 2U);
  EXPECT_EQ(d.ephemeral->in_use, 2U);
  EXPECT_EQ(d.ephemeral->time_wait, 1U);
  ASSERT_EQ(d.blockers.size(), 2U);
  EXPECT_EQ(d.blockers[0].cause, Cause::kEphemeralExhausted);
  EXPECT_EQ(d.blockers[0].socket.owner->comm, "java");
  EXPECT_EQ(d.blockers[0].why, "holds 1 of 2 ports toward 10.0.0.9:5432");
  EXPECT_EQ(d.blockers[1].why, "TIME_WAIT holds 1 of 2 ports toward 10.0.0.9:5432");
  // tcp_tw_reuse=2 and not loopback: the hint says to enable it, and names the share.
  EXPECT_NE(d.hint.find("tcp_tw_reuse=1"), std::string::npos) << d.hint;
  EXPECT_NE(d.hint.find("50%"), std::string::npos) << d.hint;
  EXPECT_NE(d.hint.find("ip_local_port_range (now 5000-5003)"), std::string::npos) << d.hint;
  EXPECT_NE(d.hint.find("10.0.0.9:5432"), std::string::npos) << d.hint;

  // With tcp_tw_reuse=1 the aged TIME_WAIT is usable: the table no longer explains it.
  table.default_config.tcp_tw_reuse = 1;
  const Diagnosis reusable =
      diagnose(connect_call("0.0.0.0:0", "10.0.0.9:5432", EADDRNOTAVAIL), table);
  EXPECT_EQ(reusable.cause, Cause::kUnknown);
  EXPECT_EQ(reusable.ephemeral->available, 1U);

  // Another destination has both ports free.
  EXPECT_EQ(diagnose(connect_call("0.0.0.0:0", "10.0.0.9:5433", EADDRNOTAVAIL), table).cause,
            Cause::kUnknown);
}

TEST(ExhaustionTest, ExplicitBindOwnersSuggestBindAddressNoPort) {
  // Every port of the range bound explicitly (bind-before-connect without the option).
  std::vector<SocketEntry> sockets;
  for (std::uint16_t p = 5000; p <= 5002; ++p) {
    SocketEntry e = client(p, "10.0.0.8:80", TcpState::kEstablished);
    e.explicit_port = true;
    sockets.push_back(e);
  }
  const SocketTable table = small_range(sockets);
  const Diagnosis d = diagnose(connect_call("10.0.0.1:0", "10.0.0.9:5432", EADDRNOTAVAIL), table);
  EXPECT_EQ(d.cause, Cause::kEphemeralExhausted);
  EXPECT_EQ(d.ephemeral->capacity, 0U);
  EXPECT_EQ(d.ephemeral->explicit_owned, 3U);
  EXPECT_NE(d.hint.find("IP_BIND_ADDRESS_NO_PORT"), std::string::npos) << d.hint;
  ASSERT_EQ(d.blockers.size(), 1U);
  EXPECT_EQ(d.blockers[0].socket.owner->comm, "java");
  EXPECT_EQ(d.blockers[0].why, "bind()/listen() hold 3 ports of the range, closed to connect()");
}

TEST(ExhaustionTest, UdpAutobindEagain) {
  std::vector<SocketEntry> sockets = {udp("0.0.0.0:5000"), udp("127.0.0.1:5001"),
                                      udp("10.0.0.1:5002")};
  Call call = connect_call("0.0.0.0:0", "10.0.0.9:53", EAGAIN);
  call.proto = Proto::kUdp;
  const Diagnosis d = diagnose(call, small_range(sockets));
  EXPECT_EQ(d.cause, Cause::kEphemeralExhausted);
  EXPECT_EQ(d.ephemeral->in_use, 3U);
  EXPECT_FALSE(d.ephemeral->destination.has_value());
  EXPECT_NE(d.hint.find("ip_local_port_range"), std::string::npos);

  // udp_lib_get_port(sk, 0) honours SO_REUSEADDR on both: a port is then free for it.
  sockets[1].reuseaddr = true;
  call.options.reuseaddr = true;
  const Diagnosis shared = diagnose(call, small_range(sockets));
  EXPECT_EQ(shared.cause, Cause::kUnknown);
  EXPECT_EQ(shared.ephemeral->available, 1U);
}

TEST(ExhaustionTest, TcpBindZeroIgnoresReuseFlagsUnlessAutobindReuse) {
  // 127.0.0.1:5000 held by a reuseaddr socket, 5001 by a connection, 5002 on another address.
  SocketEntry a = tcp(TcpState::kClose, "127.0.0.1:5000");
  a.reuseaddr = true;
  SocketEntry b = tcp(TcpState::kEstablished, "127.0.0.1:5001");
  SocketEntry c = tcp(TcpState::kListen, "127.0.0.2:5002");
  SocketTable table = small_range({a, b, c});
  Call call = bind_call("127.0.0.1:0", reuseaddr());
  // 5002 is free for 127.0.0.1 (verified: bind(127.0.0.1:0) got a port 127.0.0.2 held).
  EXPECT_EQ(predict(call, false, table).outcome, Outcome::kSucceeds);

  table.sockets.push_back(tcp(TcpState::kListen, "0.0.0.0:5002"));
  const Prediction p = predict(call, false, table);
  EXPECT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.expected_result, -EADDRINUSE);
  EXPECT_EQ(p.diagnosis->cause, Cause::kEphemeralExhausted);
  EXPECT_EQ(diagnose(failed(call, EADDRINUSE), table).cause, Cause::kEphemeralExhausted);
  EXPECT_NE(p.diagnosis->hint.find("IP_BIND_ADDRESS_NO_PORT"), std::string::npos);

  // ip_autobind_reuse: the relaxed scan lets SO_REUSEADDR on both share a non-listening port.
  table.default_config.ip_autobind_reuse = true;
  EXPECT_EQ(predict(call, false, table).outcome, Outcome::kSucceeds);
  const EphemeralAccount account = account_autobind(call, table);
  EXPECT_EQ(account.available, 1U);
}

TEST(ExhaustionTest, ListenAutobindAndBindAddressNoPort) {
  SocketTable table =
      small_range({tcp(TcpState::kListen, "0.0.0.0:5000"), tcp(TcpState::kListen, "0.0.0.0:5001"),
                   tcp(TcpState::kListen, "0.0.0.0:5002")});
  // IP_BIND_ADDRESS_NO_PORT: bind() takes no port, the listen() after it fails.
  const Call call = bind_call("127.0.0.1:0", SocketOptions{.bind_address_no_port = true});
  EXPECT_EQ(predict(call, false, table).outcome, Outcome::kSucceeds);
  const Prediction p = predict(call, true, table);
  EXPECT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.failing_syscall, Syscall::kListen);
  EXPECT_EQ(p.diagnosis->cause, Cause::kEphemeralExhausted);

  Call listen_call = bind_call("0.0.0.0:0");
  listen_call.syscall = Syscall::kListen;
  const Diagnosis d = diagnose(failed(listen_call, EADDRINUSE), table);
  EXPECT_EQ(d.cause, Cause::kEphemeralExhausted);
  EXPECT_EQ(d.ephemeral->in_use, 3U);
  ASSERT_EQ(d.blockers.size(), 1U);  // one holder: PID 812 (nginx)
  EXPECT_EQ(d.blockers[0].why, "holds 3 of 3 ports of the range");
}

// ---------------------------------------------------------------------------------------------
// Precedence and hints.

TEST(PrecedenceTest, MostSevereBlockerWins) {
  // Each step adds a more severe blocker on 127.0.0.1:8080 or an overlapping address.
  SocketEntry tw = tcp(TcpState::kTimeWait, "127.0.0.1:8080");
  SocketEntry established = tcp(TcpState::kEstablished, "127.0.0.1:8080");
  // A listener: with neither side listening SO_REUSEADDR would clear a different address.
  SocketEntry wildcard = tcp(TcpState::kListen, "0.0.0.0:8080");
  SocketEntry other_uid = tcp(TcpState::kClose, "127.0.0.1:8080");
  other_uid.reuseport = true;
  other_uid.uid = kOtherUid;
  SocketEntry listener = tcp(TcpState::kListen, "127.0.0.1:8080");
  const std::vector<std::pair<SocketEntry, Cause>> steps = {
      {tw, Cause::kTimeWait},
      {established, Cause::kMissingReuseaddr},
      {wildcard, Cause::kWildcardConflict},
      {other_uid, Cause::kReuseportUidMismatch},
      {listener, Cause::kPortInUse},
  };
  std::vector<SocketEntry> sockets;
  for (const auto& [socket, cause] : steps) {
    sockets.push_back(socket);
    const Diagnosis d =
        diagnose(failed(bind_call("127.0.0.1:8080", reuseport()), EADDRINUSE), table_of(sockets));
    EXPECT_EQ(d.cause, cause) << to_string(cause);
    ASSERT_EQ(d.blockers.size(), sockets.size());
    EXPECT_EQ(d.blockers.front().cause, cause);
    EXPECT_EQ(d.blockers.back().cause, Cause::kTimeWait);  // least severe listed last
  }
  // Every blocker keeps its own classification.
  const Diagnosis d =
      diagnose(failed(bind_call("127.0.0.1:8080", reuseport()), EADDRINUSE), table_of(sockets));
  std::vector<Cause> order;
  for (const Blocker& b : d.blockers) {
    order.push_back(b.cause);
  }
  EXPECT_EQ(order, (std::vector<Cause>{Cause::kPortInUse, Cause::kReuseportUidMismatch,
                                       Cause::kWildcardConflict, Cause::kMissingReuseaddr,
                                       Cause::kTimeWait}));
}

TEST(ClassifyTest, DifferentAddressWithoutAListenerIsMissingReuseaddr) {
  // Issue 3, question 7: the old instance's accepted connection holds 127.0.0.1:8080 after its
  // listener closed; the new server binds 0.0.0.0:8080. SO_REUSEADDR on both fixes it (R1).
  SocketEntry old_conn = tcp(TcpState::kEstablished, "127.0.0.1:8080");
  old_conn.remote = ep("127.0.0.1:51000");
  const Diagnosis d = diagnose(failed(bind_call("0.0.0.0:8080"), EADDRINUSE), table_of({old_conn}));
  EXPECT_EQ(d.cause, Cause::kMissingReuseaddr);
  ASSERT_EQ(d.blockers.size(), 1U);
  EXPECT_EQ(d.blockers[0].cause, Cause::kMissingReuseaddr);
  // The same socket against a listen(): R1 never helps a listener, the overlap is the story.
  Call listen_call = bind_call("0.0.0.0:8080", reuseaddr());
  listen_call.syscall = Syscall::kListen;
  SocketEntry old_listener = tcp(TcpState::kListen, "127.0.0.1:8080");
  EXPECT_EQ(diagnose(failed(listen_call, EADDRINUSE), table_of({old_listener})).cause,
            Cause::kWildcardConflict);
  // And a different-address listener blocks a plain bind as an overlap too.
  EXPECT_EQ(diagnose(failed(bind_call("0.0.0.0:8080"), EADDRINUSE), table_of({old_listener})).cause,
            Cause::kWildcardConflict);
}

TEST(HintTest, PortInUseNamesTheOwner) {
  const Diagnosis d = diagnose(failed(bind_call("127.0.0.1:8080"), EADDRINUSE),
                               table_of({tcp(TcpState::kListen, "127.0.0.1:8080")}));
  EXPECT_EQ(d.hint, "set SO_REUSEPORT on this socket and on PID 812 (nginx)'s socket (same uid)");
  ASSERT_EQ(d.fixes.size(), 3U);
  EXPECT_EQ(d.fixes[1].kind, Fix::Kind::kBindAddress);
  EXPECT_EQ(d.fixes[2].text, "stop PID 812 (nginx)");
  SocketEntry anonymous = tcp(TcpState::kListen, "127.0.0.1:8080");
  anonymous.owner = std::nullopt;
  const Diagnosis a =
      diagnose(failed(bind_call("127.0.0.1:8080"), EADDRINUSE), table_of({anonymous}));
  EXPECT_NE(a.hint.find("socket inode 13080"), std::string::npos) << a.hint;
  EXPECT_NE(a.hint.find("process unknown"), std::string::npos) << a.hint;
  // No process to stop.
  for (const Fix& f : a.fixes) {
    EXPECT_NE(f.kind, Fix::Kind::kStop) << f.text;
  }
}

TEST(HintTest, TimeWait) {
  const SocketTable table = table_of({tcp(TcpState::kTimeWait, "127.0.0.1:8080")});
  const Diagnosis d = diagnose(failed(bind_call("127.0.0.1:8080"), EADDRINUSE), table);
  EXPECT_EQ(d.blockers[0].why, "TIME_WAIT, expires in 41 s");
  // The TIME_WAIT kept no SO_REUSEADDR, so setting it here would not help: never said.
  EXPECT_EQ(d.hint, "wait 41.3 s for the TIME_WAIT sockets to expire");
  // The new socket has SO_REUSEADDR; the old socket, whose flags the TIME_WAIT kept, did not.
  const Diagnosis kept =
      diagnose(failed(bind_call("127.0.0.1:8080", reuseaddr()), EADDRINUSE), table);
  EXPECT_EQ(kept.cause, Cause::kTimeWait);
  EXPECT_EQ(kept.blockers[0].why, "TIME_WAIT, expires in 41 s, kept no SO_REUSEADDR");
  EXPECT_EQ(kept.hint, "wait 41.3 s for the TIME_WAIT sockets to expire");
}

TEST(HintTest, MissingReuseaddr) {
  SocketEntry has_it = tcp(TcpState::kEstablished, "127.0.0.1:8080");
  has_it.reuseaddr = true;
  const Diagnosis d = diagnose(failed(bind_call("127.0.0.1:8080"), EADDRINUSE), table_of({has_it}));
  EXPECT_EQ(d.cause, Cause::kMissingReuseaddr);
  EXPECT_EQ(d.hint, "set SO_REUSEADDR before bind()");
  EXPECT_EQ(d.blockers[0].why, "ESTABLISHED on the same address, SO_REUSEADDR missing here");

  const Diagnosis lacks = diagnose(failed(bind_call("127.0.0.1:8080", reuseaddr()), EADDRINUSE),
                                   table_of({tcp(TcpState::kClose, "127.0.0.1:8080")}));
  EXPECT_EQ(lacks.cause, Cause::kMissingReuseaddr);
  EXPECT_EQ(lacks.blockers[0].why, "bound on the same address, SO_REUSEADDR missing on it");
  EXPECT_EQ(lacks.hint,
            "set SO_REUSEADDR on PID 812 (nginx)'s socket too (this socket has it); then only the "
            "first of them to call listen() can listen");
}

TEST(HintTest, UnknownIsSaidPlainly) {
  const Diagnosis d = diagnose(failed(bind_call("127.0.0.1:8080"), EADDRINUSE), table_of({}));
  EXPECT_EQ(d.cause, Cause::kUnknown);
  EXPECT_TRUE(d.blockers.empty());
  EXPECT_NE(d.hint.find("no socket portlens knows of explains EADDRINUSE on tcp 127.0.0.1:8080"),
            std::string::npos)
      << d.hint;
  Call other = failed(bind_call("127.0.0.1:8080"), EINVAL);
  EXPECT_EQ(diagnose(other, table_of({})).cause, Cause::kUnknown);
}

// ---------------------------------------------------------------------------------------------
// Unknown fields stay unknown.

TEST(UnknownFieldsTest, NeverAssumed) {
  struct Case {
    std::string_view name;
    SocketEntry owner;
    Call call;
    Outcome outcome;
    std::string_view unknown;  // what the blocker's why must name
  };
  SocketEntry reuseport_unknown = tcp(TcpState::kListen, "127.0.0.1:8080");
  reuseport_unknown.reuseport = std::nullopt;
  SocketEntry reuseaddr_unknown = tcp(TcpState::kEstablished, "127.0.0.1:8080");
  reuseaddr_unknown.reuseaddr = std::nullopt;
  SocketEntry uid_unknown = tcp(TcpState::kListen, "127.0.0.1:8080");
  uid_unknown.reuseport = true;
  uid_unknown.uid = std::nullopt;
  SocketEntry v6only_unknown = tcp(TcpState::kListen, "[::]:8080");
  v6only_unknown.v6only = std::nullopt;
  SocketEntry state_unknown = tcp(TcpState::kListen, "127.0.0.1:8080");
  state_unknown.state = std::nullopt;
  state_unknown.reuseaddr = true;
  SocketEntry tw_uid_unknown = tcp(TcpState::kTimeWait, "127.0.0.1:8080");
  tw_uid_unknown.reuseport = true;
  SocketEntry all_unknown = tcp(TcpState::kListen, "127.0.0.1:8080");
  all_unknown.reuseaddr = all_unknown.reuseport = std::nullopt;
  all_unknown.uid = std::nullopt;

  for (const Case& c : std::vector<Case>{
           {"reuseport", reuseport_unknown, bind_call("127.0.0.1:8080", reuseport()),
            Outcome::kUndetermined, "SO_REUSEPORT unknown"},
           // Without SO_REUSEPORT here the owner's flag does not matter.
           {"reuseport irrelevant", reuseport_unknown, bind_call("127.0.0.1:8080"), Outcome::kFails,
            ""},
           {"reuseaddr", reuseaddr_unknown, bind_call("127.0.0.1:8080", reuseaddr()),
            Outcome::kUndetermined, "SO_REUSEADDR unknown"},
           {"uid", uid_unknown, bind_call("127.0.0.1:8080", reuseport()), Outcome::kUndetermined,
            "uid unknown"},
           {"v6only vs ipv4", v6only_unknown, bind_call("0.0.0.0:8080"), Outcome::kUndetermined,
            "IPV6_V6ONLY unknown"},
           // [::] overlaps [::] whatever its flag.
           {"v6only irrelevant", v6only_unknown, bind_call("[::1]:8080"), Outcome::kFails, ""},
           {"state", state_unknown, bind_call("127.0.0.1:8080", reuseaddr()),
            Outcome::kUndetermined, "TCP state unknown"},
           // TIME_WAIT owners share with SO_REUSEPORT on both: their uid is not consulted.
           {"time_wait uid", tw_uid_unknown, bind_call("127.0.0.1:8080", reuseport()),
            Outcome::kSucceeds, ""},
           {"everything", all_unknown, bind_call("127.0.0.1:8080", reuseport()),
            Outcome::kUndetermined, "SO_REUSEPORT, uid unknown"},
       }) {
    SCOPED_TRACE(std::string(c.name));
    const SocketTable table = table_of({c.owner});
    const Prediction p = predict(c.call, false, table);
    EXPECT_EQ(p.outcome, c.outcome);
    if (c.outcome != Outcome::kUndetermined) {
      continue;
    }
    EXPECT_EQ(p.expected_result, 0);
    ASSERT_TRUE(p.diagnosis.has_value());
    ASSERT_EQ(p.diagnosis->blockers.size(), 1U);
    EXPECT_FALSE(p.diagnosis->blockers[0].definite);
    EXPECT_NE(p.diagnosis->blockers[0].why.find(c.unknown), std::string::npos)
        << p.diagnosis->blockers[0].why;
    // The call did fail: the possible blocker is listed, and still marked as uncertain.
    const Diagnosis d = diagnose(failed(c.call, EADDRINUSE), table);
    ASSERT_EQ(d.blockers.size(), 1U);
    EXPECT_FALSE(d.blockers[0].definite);
    EXPECT_NE(d.cause, Cause::kUnknown);
  }
}

TEST(UnknownFieldsTest, DefiniteBlockersRankBeforePossibleOnes) {
  SocketEntry possible = tcp(TcpState::kListen, "127.0.0.1:8080");
  possible.reuseport = std::nullopt;
  SocketEntry definite = tcp(TcpState::kTimeWait, "127.0.0.1:8080");
  const Diagnosis d = diagnose(failed(bind_call("127.0.0.1:8080", reuseport()), EADDRINUSE),
                               table_of({possible, definite}));
  ASSERT_EQ(d.blockers.size(), 2U);
  EXPECT_TRUE(d.blockers[0].definite);
  EXPECT_EQ(d.cause, Cause::kTimeWait);
  EXPECT_EQ(d.blockers[1].cause, Cause::kPortInUse);
}

// ---------------------------------------------------------------------------------------------
// inet_csk_get_port()'s fast paths: with owners on the port, a bucket whose fast* state matches
// the new socket skips the conflict check. inet_csk_update_fastreuse() sets that state on every
// bind()/listen(), so the answer depends on the order the owners came in.

TcpBindBucket strict_bucket(std::string_view address, std::uint32_t uid) {
  TcpBindBucket b;
  b.fastreuse = 0;
  b.fastreuseport = TcpBindBucket::kFastreuseportStrict;
  b.fastuid = uid;
  b.fast_rcv_saddr = ip(address);
  return b;
}

// The differential test's case: tcp 127.0.0.2 SO_REUSEADDR bound, tcp 0.0.0.0
// SO_REUSEADDR+SO_REUSEPORT bound, both uid 0, sharing one bucket.
std::vector<SocketEntry> fast_path_owners(const std::optional<TcpBindBucket>& bucket) {
  SocketEntry specific = tcp(TcpState::kClose, "127.0.0.2:9000");
  specific.reuseaddr = true;
  specific.uid = 0;
  SocketEntry wildcard = tcp(TcpState::kClose, "0.0.0.0:9000");
  wildcard.reuseaddr = true;
  wildcard.reuseport = true;
  wildcard.uid = 0;
  specific.bind_bucket = bucket;
  wildcard.bind_bucket = bucket;
  return {specific, wildcard};
}

TEST(TcpFastPathTest, StrictBucketLetsAMatchingReuseportSocketPastTheConflictCheck) {
  // 127.0.0.2 first, then 0.0.0.0: the SO_REUSEPORT socket left STRICT 0.0.0.0 uid 0, which the
  // new 0.0.0.0 SO_REUSEPORT socket matches (sk_reuseport_match): bind() and listen() succeed
  // although 127.0.0.2 (no SO_REUSEPORT, and no SO_REUSEADDR here) overlaps.
  const Call c = bind_call("0.0.0.0:9000", reuseport(), 0);
  const Prediction p = predict(c, true, table_of(fast_path_owners(strict_bucket("0.0.0.0", 0))));
  EXPECT_EQ(p.outcome, Outcome::kSucceeds);
  EXPECT_NE(p.note.find("fast path"), std::string::npos) << p.note;
  // 0.0.0.0 first, then 127.0.0.2: the SO_REUSEPORT-less socket reset fastreuseport to 0, so
  // the conflict check runs and 127.0.0.2 blocks.
  TcpBindBucket reset = strict_bucket("0.0.0.0", 0);
  reset.fastreuseport = 0;
  const Prediction q = predict(c, true, table_of(fast_path_owners(reset)));
  EXPECT_EQ(q.outcome, Outcome::kFails);
  EXPECT_EQ(q.failing_syscall, Syscall::kBind);
  EXPECT_EQ(q.expected_result, -EADDRINUSE);
  ASSERT_TRUE(q.diagnosis.has_value());
  EXPECT_EQ(q.diagnosis->blockers.front().socket.local, ep("127.0.0.2:9000"));
  // STRICT compares the remembered address: 127.0.0.2 matches the wildcard 0.0.0.0 too
  // (ipv4_rcv_saddr_equal with match_sk1_wildcard), a remembered 127.0.0.2 does not match a
  // new 0.0.0.0, and a v6only [::] never matches a remembered IPv4 address.
  EXPECT_EQ(predict(bind_call("127.0.0.2:9000", reuseport(), 0), false,
                    table_of(fast_path_owners(strict_bucket("0.0.0.0", 0))))
                .outcome,
            Outcome::kSucceeds);
  EXPECT_EQ(predict(c, false, table_of(fast_path_owners(strict_bucket("127.0.0.2", 0)))).outcome,
            Outcome::kFails);
  EXPECT_EQ(predict(bind_call("[::]:9000", SocketOptions{.reuseport = true, .v6only = true}, 0),
                    false, table_of(fast_path_owners(strict_bucket("0.0.0.0", 0))))
                .outcome,
            Outcome::kSucceeds);  // no overlap with IPv4 owners anyway
}

TEST(TcpFastPathTest, TheBucketRemembersTheUidOfTheLastReuseportSocket) {
  // tcp 127.0.0.1 SO_REUSEADDR+SO_REUSEPORT uid 1000, then the same with uid 0: STRICT uid 0,
  // and a new SO_REUSEPORT-only socket of uid 0 gets in past the uid-1000 owner.
  SocketEntry first = tcp(TcpState::kClose, "127.0.0.1:9000");
  first.reuseaddr = true;
  first.reuseport = true;
  first.uid = 1000;
  SocketEntry second = first;
  second.uid = 0;
  second.inode = first.inode + 1;
  const Call c = bind_call("127.0.0.1:9000", reuseport(), 0);
  first.bind_bucket = second.bind_bucket = strict_bucket("127.0.0.1", 0);
  EXPECT_EQ(predict(c, true, table_of({first, second})).outcome, Outcome::kSucceeds);
  // The other way round the bucket remembers uid 1000: the conflict check runs.
  first.bind_bucket = second.bind_bucket = strict_bucket("127.0.0.1", 1000);
  const Prediction p = predict(c, true, table_of({first, second}));
  EXPECT_EQ(p.outcome, Outcome::kFails);
  ASSERT_TRUE(p.diagnosis.has_value());
  EXPECT_EQ(p.diagnosis->cause, Cause::kReuseportUidMismatch);
}

TEST(TcpFastPathTest, FastreuseSkipsTheCheckAtBindButNotAtListen) {
  // tb->fastreuse > 0 && reuse: reuse is false once the socket is LISTEN, so listen() runs the
  // check. (A bucket keeps fastreuse > 0 only while every owner bound with SO_REUSEADDR outside
  // LISTEN; here the owner cleared SO_REUSEADDR after its bind().)
  SocketEntry owner = tcp(TcpState::kClose, "127.0.0.1:9000");
  TcpBindBucket bucket;
  bucket.fastreuse = 1;
  bucket.fastreuseport = 0;
  owner.bind_bucket = bucket;
  const Prediction p = predict(bind_call("127.0.0.1:9000", reuseaddr()), true, table_of({owner}));
  EXPECT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.failing_syscall, Syscall::kListen);
  EXPECT_EQ(predict(bind_call("127.0.0.1:9000", reuseaddr()), false, table_of({owner})).outcome,
            Outcome::kSucceeds);
  // Without SO_REUSEADDR on the new socket the fast path does not apply at bind() either.
  EXPECT_EQ(predict(bind_call("127.0.0.1:9000"), false, table_of({owner})).outcome,
            Outcome::kFails);
}

TEST(TcpFastPathTest, UnknownBucketIsUndeterminedOnlyWhenAnOwnerCouldHaveOpenedTheFastPath) {
  const Call c = bind_call("0.0.0.0:9000", reuseport(), 0);
  // The SO_REUSEPORT owner of uid 0 at 0.0.0.0 may have left STRICT 0.0.0.0 uid 0.
  const Prediction p = predict(c, true, table_of(fast_path_owners(std::nullopt)));
  EXPECT_EQ(p.outcome, Outcome::kUndetermined);
  ASSERT_TRUE(p.diagnosis.has_value());
  ASSERT_FALSE(p.diagnosis->blockers.empty());
  EXPECT_FALSE(p.diagnosis->blockers.front().definite);
  EXPECT_NE(p.diagnosis->blockers.front().why.find("bind bucket"), std::string::npos)
      << p.diagnosis->blockers.front().why;
  // No owner of this uid has SO_REUSEPORT, or the new socket has none: the conflict is definite.
  EXPECT_EQ(predict(bind_call("0.0.0.0:9000", reuseport(), 1000), true,
                    table_of(fast_path_owners(std::nullopt)))
                .outcome,
            Outcome::kFails);
  EXPECT_EQ(
      predict(bind_call("0.0.0.0:9000", {}, 0), true, table_of(fast_path_owners(std::nullopt)))
          .outcome,
      Outcome::kFails);
  // The SO_REUSEPORT owner's address does not match this one (STRICT compares it).
  std::vector<SocketEntry> owners = fast_path_owners(std::nullopt);
  owners[1].local = ep("127.0.0.3:9000");
  owners[0].local = ep("0.0.0.0:9000");
  EXPECT_EQ(predict(c, false, table_of(owners)).outcome, Outcome::kFails);
}

TEST(TcpFastPathTest, ListenAfterAReuseportBindSkipsTheCheckWhateverTheBucket) {
  // S's own bind() left the bucket matching S (inet_csk_update_fastreuse), so listen() takes
  // sk_reuseport_match() whenever S has SO_REUSEPORT: known and unknown buckets agree.
  for (const auto& bucket : {std::optional<TcpBindBucket>(strict_bucket("0.0.0.0", 0)),
                             std::optional<TcpBindBucket>()}) {
    SocketEntry owner = tcp(TcpState::kClose, "127.0.0.1:9000");
    owner.reuseaddr = true;
    owner.reuseport = true;
    owner.uid = 0;
    owner.bind_bucket = bucket;
    const Prediction p =
        predict(bind_call("127.0.0.1:9000", SocketOptions{.reuseaddr = true, .reuseport = true}, 0),
                true, table_of({owner}));
    EXPECT_EQ(p.outcome, Outcome::kSucceeds);
  }
}

// ---------------------------------------------------------------------------------------------
// udp_lib_lport_inuse(): the first contending socket in the port's hash chain decides.

SocketEntry udp_at(std::string_view local, bool reuseaddr_flag, bool reuseport_flag,
                   std::uint32_t uid, std::optional<std::uint32_t> position) {
  SocketEntry e = udp(local);
  e.reuseaddr = reuseaddr_flag;
  e.reuseport = reuseport_flag;
  e.uid = uid;
  e.udp_chain_position = position;
  e.udp_slot_count = position ? std::optional<std::uint32_t>(2) : std::nullopt;
  e.inode = 7000 + position.value_or(9);
  return e;
}

Call udp_call(std::string_view local, SocketOptions options, std::uint32_t uid = kUid) {
  Call c = bind_call(local, options, uid);
  c.proto = Proto::kUdp;
  return c;
}

TEST(UdpChainOrderTest, TheFirstContendingSocketDecides) {
  const Call c = udp_call("0.0.0.0:5000", reuseport());
  // udp 0.0.0.0 SO_REUSEADDR, then 0.0.0.0 SO_REUSEADDR+SO_REUSEPORT: the later one is at the
  // head, shares through SO_REUSEPORT, and the walk stops there: bind() succeeds.
  const SocketTable later_shares = table_of(
      {udp_at("0.0.0.0:5000", true, false, kUid, 1), udp_at("0.0.0.0:5000", true, true, kUid, 0)});
  EXPECT_EQ(predict(c, false, later_shares).outcome, Outcome::kSucceeds);
  // Created the other way round, the SO_REUSEADDR-only socket is first: EADDRINUSE.
  const SocketTable first_blocks = table_of(
      {udp_at("0.0.0.0:5000", true, false, kUid, 0), udp_at("0.0.0.0:5000", true, true, kUid, 1)});
  const Prediction p = predict(c, false, first_blocks);
  EXPECT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.expected_result, -EADDRINUSE);
  ASSERT_TRUE(p.diagnosis.has_value());
  ASSERT_EQ(p.diagnosis->blockers.size(), 1U);
  EXPECT_EQ(p.diagnosis->blockers[0].socket.reuseport, false);
  // A socket that does not contend (SO_REUSEADDR on both) is walked past.
  const SocketTable skipped = table_of(
      {udp_at("0.0.0.0:5000", true, false, kUid, 0), udp_at("0.0.0.0:5000", true, true, kUid, 1)});
  EXPECT_EQ(predict(udp_call("0.0.0.0:5000", SocketOptions{.reuseaddr = true, .reuseport = true}),
                    false, skipped)
                .outcome,
            Outcome::kSucceeds);
}

// Later 6.18 kernels (seen on 6.18.44) check every contender: a sharing socket at the head no
// longer ends the walk. The kernel layer probes which rule runs (udp_first_contender_decides).
TEST(UdpChainOrderTest, WhereEveryContenderMustShareTheOrderDoesNotMatter) {
  const Call c = udp_call("0.0.0.0:5000", reuseport());
  SocketTable later_shares = table_of(
      {udp_at("0.0.0.0:5000", true, false, kUid, 1), udp_at("0.0.0.0:5000", true, true, kUid, 0)});
  later_shares.default_config.udp_first_contender_decides = false;
  const Prediction p = predict(c, false, later_shares);
  EXPECT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.expected_result, -EADDRINUSE);
  ASSERT_TRUE(p.diagnosis.has_value());
  ASSERT_EQ(p.diagnosis->blockers.size(), 1U);
  EXPECT_EQ(p.diagnosis->blockers[0].socket.reuseport, false);
  EXPECT_EQ(p.diagnosis->blockers[0].socket.inode, 7001U);
  EXPECT_TRUE(p.diagnosis->blockers[0].definite);
  // Only sharers: free under either rule.
  SocketTable sharers = table_of(
      {udp_at("0.0.0.0:5000", true, true, kUid, 1), udp_at("0.0.0.0:5000", false, true, kUid, 0)});
  sharers.default_config.udp_first_contender_decides = false;
  EXPECT_EQ(predict(c, false, sharers).outcome, Outcome::kSucceeds);
  // The rule unknown (the probe could not run): a sharer ahead of a blocker is undetermined,
  // and says what is unknown.
  later_shares.default_config.udp_first_contender_decides = std::nullopt;
  const Prediction unknown = predict(c, false, later_shares);
  EXPECT_EQ(unknown.outcome, Outcome::kUndetermined);
  ASSERT_TRUE(unknown.diagnosis.has_value());
  EXPECT_NE(unknown.diagnosis->blockers.front().why.find("the kernel's UDP rule"),
            std::string::npos)
      << unknown.diagnosis->blockers.front().why;
}

TEST(UdpChainOrderTest, UidVariant) {
  // udp 0.0.0.0 SO_REUSEADDR of another uid, then 127.0.0.1 SO_REUSEADDR+SO_REUSEPORT: the
  // later one is first and shares with a new 127.0.0.1 SO_REUSEPORT socket of its uid.
  const Call c = udp_call("127.0.0.1:5000", reuseport());
  EXPECT_EQ(predict(c, false,
                    table_of({udp_at("0.0.0.0:5000", true, false, kOtherUid, 1),
                              udp_at("127.0.0.1:5000", true, true, kUid, 0)}))
                .outcome,
            Outcome::kSucceeds);
  EXPECT_EQ(predict(c, false,
                    table_of({udp_at("0.0.0.0:5000", true, false, kOtherUid, 0),
                              udp_at("127.0.0.1:5000", true, true, kUid, 1)}))
                .outcome,
            Outcome::kFails);
  // Same order, but the sharer is of another uid than the new socket: it blocks itself.
  EXPECT_EQ(predict(udp_call("127.0.0.1:5000", reuseport(), kOtherUid), false,
                    table_of({udp_at("0.0.0.0:5000", true, false, kOtherUid, 1),
                              udp_at("127.0.0.1:5000", true, true, kUid, 0)}))
                .outcome,
            Outcome::kFails);
}

TEST(UdpChainOrderTest, UnknownOrderIsUndeterminedOnlyWhenItMatters) {
  const Call c = udp_call("0.0.0.0:5000", reuseport());
  // A sharer and a blocker, order unknown (sock_diag, hand-built tables).
  const Prediction p = predict(c, false,
                               table_of({udp_at("0.0.0.0:5000", true, false, kUid, std::nullopt),
                                         udp_at("0.0.0.0:5000", true, true, kUid, std::nullopt)}));
  EXPECT_EQ(p.outcome, Outcome::kUndetermined);
  ASSERT_TRUE(p.diagnosis.has_value());
  EXPECT_NE(p.diagnosis->blockers.front().why.find("hash chain order"), std::string::npos);
  // Only blockers, or only sharers: any order gives the same answer.
  EXPECT_EQ(predict(c, false,
                    table_of({udp_at("0.0.0.0:5000", true, false, kUid, std::nullopt),
                              udp_at("0.0.0.0:5000", false, false, kUid, std::nullopt)}))
                .outcome,
            Outcome::kFails);
  EXPECT_EQ(predict(c, false,
                    table_of({udp_at("0.0.0.0:5000", true, true, kUid, std::nullopt),
                              udp_at("0.0.0.0:5000", false, true, kUid, std::nullopt)}))
                .outcome,
            Outcome::kSucceeds);
}

TEST(UdpChainOrderTest, OverTenSocketsInTheSlotTheHash2LookupMayDecide) {
  // udp_lib_get_port() with hslot->count > 10 may walk the hash2 slots (S's address, then the
  // wildcard) instead, in an order the snapshot does not record.
  const auto crowded = [](SocketEntry e) {
    e.udp_slot_count = 11;
    return e;
  };
  const Call c = udp_call("0.0.0.0:5000", reuseport());
  EXPECT_EQ(predict(c, false,
                    table_of({crowded(udp_at("0.0.0.0:5000", true, false, kUid, 1)),
                              crowded(udp_at("0.0.0.0:5000", true, true, kUid, 0))}))
                .outcome,
            Outcome::kUndetermined);
  // Only blockers, one on the wildcard slot: both lookups see it.
  EXPECT_EQ(
      predict(c, false, table_of({crowded(udp_at("0.0.0.0:5000", true, false, kUid, 0))})).outcome,
      Outcome::kFails);
  // A 0.0.0.0 bind and a 127.0.0.1 owner: only the primary walk sees it.
  EXPECT_EQ(predict(c, false, table_of({crowded(udp_at("127.0.0.1:5000", false, false, kUid, 0))}))
                .outcome,
            Outcome::kUndetermined);
}

// ---------------------------------------------------------------------------------------------
// A [::] dual-stack socket that connect()ed over IPv6 keeps LOOPBACK4_IPV6 as its IPv4 receive
// address (tcp_v6_connect, ip6_datagram_dst_update).

SocketEntry connected_dual_stack(Proto proto, TcpState state = TcpState::kEstablished) {
  SocketEntry e = proto == Proto::kTcp ? tcp(state, "[::1]:9000") : udp("[::1]:9000");
  e.remote = ep("[::1]:9100");
  e.v6only = false;
  e.v4_rcv_saddr = ip("127.0.0.6");
  return e;
}

TEST(DualStackConnectedTest, Ipv4WildcardOverlapsLoopback4Ipv6) {
  for (const TcpState state : {TcpState::kEstablished, TcpState::kTimeWait}) {
    const SocketTable t = table_of({connected_dual_stack(Proto::kTcp, state)});
    const Prediction p = predict(bind_call("0.0.0.0:9000"), false, t);
    EXPECT_EQ(p.outcome, Outcome::kFails);
    EXPECT_EQ(p.expected_result, -EADDRINUSE);
    EXPECT_EQ(predict(bind_call("127.0.0.1:9000"), false, t).outcome, Outcome::kSucceeds);
    // TCP binds a specific address through bhash2: 127.0.0.6 never meets the [::1] bucket.
    EXPECT_EQ(predict(bind_call("127.0.0.6:9000"), false, t).outcome, Outcome::kSucceeds);
    // An AF_INET6 socket compares IPv6 addresses: ::ffff:0.0.0.0 is not [::].
    EXPECT_EQ(predict(bind_call("[::ffff:0.0.0.0]:9000"), false, t).outcome, Outcome::kSucceeds);
    // IPv6 binds: unchanged.
    EXPECT_EQ(predict(bind_call("[::]:9000"), false, t).outcome, Outcome::kFails);
  }
  const SocketTable u = table_of({connected_dual_stack(Proto::kUdp)});
  EXPECT_EQ(predict(udp_call("0.0.0.0:9000", {}), false, u).outcome, Outcome::kFails);
  // udp_lib_lport_inuse() compares every socket of the port: 127.0.0.6 is its address.
  EXPECT_EQ(predict(udp_call("127.0.0.6:9000", {}), false, u).outcome, Outcome::kFails);
  EXPECT_EQ(predict(udp_call("127.0.0.1:9000", {}), false, u).outcome, Outcome::kSucceeds);
  EXPECT_EQ(predict(udp_call("[::ffff:127.0.0.6]:9000", {}), false, u).outcome, Outcome::kSucceeds);
}

TEST(DualStackConnectedTest, BoundToASpecificIpv6AddressIsV6only) {
  // bind() to ::1 sets sk_ipv6only (__inet6_bind): its 127.0.0.6 covers nothing.
  SocketEntry bound = connected_dual_stack(Proto::kTcp);
  bound.v6only = true;
  EXPECT_EQ(predict(bind_call("0.0.0.0:9000"), false, table_of({bound})).outcome,
            Outcome::kSucceeds);
  // Live v6only unknown beside a live receive address: undecided.
  bound.v6only = std::nullopt;
  EXPECT_EQ(predict(bind_call("0.0.0.0:9000"), false, table_of({bound})).outcome,
            Outcome::kUndetermined);
}

// ---------------------------------------------------------------------------------------------
// Fixes: each one sufficient alone (replayed through predict), least disruptive first.

// "kind option on pids" / "wait 41.3" / "bind_address 127.0.0.2": a fix's data in one word list.
std::string fix_key(const Fix& f) {
  std::string out(to_string(f.kind));
  if (f.kind == Fix::Kind::kSetOption) {
    out += " " + f.option + " " + std::string(to_string(f.on));
  }
  for (const std::uint32_t pid : f.pids) {
    out += " " + std::to_string(pid);
  }
  if (f.seconds) {
    const auto tenths = std::lround(*f.seconds * 10);
    out += " " + std::to_string(tenths / 10) + "." + std::to_string(tenths % 10);
  }
  if (f.kind == Fix::Kind::kSysctl) {
    out += " " + f.name + "=" + f.value;
  }
  if (f.addr) {
    out += " " + f.addr->to_string();
  }
  return out;
}

std::vector<std::string> fix_keys(const Diagnosis& d) {
  std::vector<std::string> keys;
  for (const Fix& f : d.fixes) {
    keys.push_back(fix_key(f));
  }
  return keys;
}

using Keys = std::vector<std::string>;

// Every fix of d, applied to the table or the call the way its kind says, lets the call through.
void expect_each_fix_suffices(const Diagnosis& d, const Call& call, bool then_listen,
                              const SocketTable& table) {
  for (const Fix& f : d.fixes) {
    Call c = call;
    c.syscall = Syscall::kBind;
    c.result = 0;
    SocketTable t = table;
    const auto blocker_of = [&](const SocketEntry& e) {
      return std::any_of(d.blockers.begin(), d.blockers.end(), [&](const Blocker& b) {
        return b.socket.local == e.local && b.socket.remote == e.remote &&
               b.socket.state == e.state && b.socket.inode == e.inode;
      });
    };
    switch (f.kind) {
      case Fix::Kind::kSetOption:
        if (f.on != Fix::On::kBlocker) {
          (f.option == "SO_REUSEADDR"   ? c.options.reuseaddr
           : f.option == "SO_REUSEPORT" ? c.options.reuseport
           : f.option == "IPV6_V6ONLY"  ? c.options.v6only
                                        : c.options.bind_address_no_port) = true;
        }
        if (f.on != Fix::On::kNew) {
          for (SocketEntry& e : t.sockets) {
            if (blocker_of(e) && e.state != TcpState::kTimeWait) {
              (f.option == "SO_REUSEADDR"   ? e.reuseaddr
               : f.option == "SO_REUSEPORT" ? e.reuseport
                                            : e.v6only) = true;
            }
          }
        }
        break;
      case Fix::Kind::kWait:
        std::erase_if(t.sockets, [&](const SocketEntry& e) {
          return blocker_of(e) && e.state == TcpState::kTimeWait;
        });
        break;
      case Fix::Kind::kBindAddress:
        c.local.addr = *f.addr;
        break;
      case Fix::Kind::kStop:
        std::erase_if(t.sockets, [&](const SocketEntry& e) {
          return e.owner && std::find(f.pids.begin(), f.pids.end(), e.owner->pid) != f.pids.end();
        });
        break;
      case Fix::Kind::kSysctl:
        continue;
    }
    EXPECT_EQ(predict(c, then_listen, t).outcome, Outcome::kSucceeds) << fix_key(f);
  }
}

TEST(FixTest, TimeWaitThatKeptReuseaddrIsPassedBySoReuseaddrHere) {
  SocketEntry tw = tcp(TcpState::kTimeWait, "127.0.0.1:8080");
  tw.reuseaddr = true;
  const Call call = bind_call("127.0.0.1:8080");
  const Diagnosis d = diagnose(failed(call, EADDRINUSE), table_of({tw}));
  EXPECT_EQ(d.cause, Cause::kTimeWait);
  EXPECT_EQ(fix_keys(d),
            (Keys{"set_option SO_REUSEADDR new", "wait 41.3", "bind_address 127.0.0.2"}));
  EXPECT_EQ(d.hint, "set SO_REUSEADDR before bind() (these TIME_WAIT sockets kept it)");
  EXPECT_EQ(d.fixes[1].seconds, 41.3);
  expect_each_fix_suffices(d, call, false, table_of({tw}));
}

TEST(FixTest, TimeWaitWithoutReuseaddrIsNeverToldToSetSoReuseaddr) {
  // inet_bind_conflict(): R1 reads the TIME_WAIT's own sk_reuse, which it kept from a socket
  // without SO_REUSEADDR: no SO_REUSEADDR here passes it, with or without --listen.
  const SocketTable table = table_of({tcp(TcpState::kTimeWait, "127.0.0.1:8080")});
  for (const bool listen : {false, true}) {
    for (const bool here : {false, true}) {
      const Call call = bind_call("127.0.0.1:8080", SocketOptions{.reuseaddr = here});
      const Prediction p = predict(call, listen, table);
      ASSERT_EQ(p.outcome, Outcome::kFails);
      EXPECT_EQ(fix_keys(*p.diagnosis), (Keys{"wait 41.3", "bind_address 127.0.0.2"}));
      EXPECT_EQ(p.diagnosis->hint, "wait 41.3 s for the TIME_WAIT sockets to expire");
      for (const Fix& f : p.diagnosis->fixes) {
        EXPECT_NE(f.option, "SO_REUSEADDR");
        EXPECT_NE(f.kind, Fix::Kind::kStop);  // no process holds a TIME_WAIT
      }
      expect_each_fix_suffices(*p.diagnosis, call, listen, table);
    }
  }
}

TEST(FixTest, TimeWaitThatKeptReuseportIsPassedBySoReuseportWhateverTheUid) {
  // R2: SO_REUSEPORT on both, and a TIME_WAIT's uid is not compared (kernel-rules.md 5.1).
  SocketEntry tw = tcp(TcpState::kTimeWait, "127.0.0.1:8080");
  tw.reuseport = true;
  const Call call = bind_call("127.0.0.1:8080", reuseaddr(), kOtherUid);
  const Diagnosis d = diagnose(failed(call, EADDRINUSE), table_of({tw}));
  EXPECT_EQ(fix_keys(d),
            (Keys{"set_option SO_REUSEPORT new", "wait 41.3", "bind_address 127.0.0.2"}));
  EXPECT_EQ(d.hint,
            "set SO_REUSEPORT before bind() (these TIME_WAIT sockets kept it, and their uid does "
            "not matter)");
  expect_each_fix_suffices(d, call, true, table_of({tw}));
}

TEST(FixTest, WaitIsForTheLastBlockingTimeWait) {
  SocketEntry a = tcp(TcpState::kTimeWait, "127.0.0.1:8080");
  SocketEntry b = tcp(TcpState::kTimeWait, "127.0.0.1:8080");
  b.remote = ep("127.0.0.1:40001");
  b.time_wait_remaining = std::chrono::milliseconds{59001};
  const Diagnosis d = diagnose(failed(bind_call("0.0.0.0:8080"), EADDRINUSE), table_of({a, b}));
  // 127.0.0.2 is not 127.0.0.1: binding it instead of the wildcard passes both.
  EXPECT_EQ(fix_keys(d), (Keys{"wait 59.1", "bind_address 127.0.0.2"}));
  EXPECT_EQ(d.hint, "wait 59.1 s for the TIME_WAIT sockets to expire");
}

TEST(FixTest, BoundWildcardBesideASpecificBindIsWordedExactly) {
  // Beside a bound, not listening 0.0.0.0:P, a 127.0.0.1:P bind then listen: SO_REUSEADDR on
  // both lets the new one bind AND listen; only the bound one may then not listen.
  const SocketEntry wildcard = tcp(TcpState::kClose, "0.0.0.0:8080");
  const SocketTable table = table_of({wildcard});
  const Call call = bind_call("127.0.0.1:8080");
  const Prediction p = predict(call, true, table);
  ASSERT_EQ(p.outcome, Outcome::kFails);
  const Diagnosis& d = *p.diagnosis;
  EXPECT_EQ(d.cause, Cause::kMissingReuseaddr);
  EXPECT_EQ(d.blockers[0].why, "bound on 0.0.0.0, overlaps 127.0.0.1, SO_REUSEADDR on neither");
  EXPECT_EQ(fix_keys(d), (Keys{"set_option SO_REUSEADDR both 812",
                               "set_option SO_REUSEPORT both 812", "stop 812"}));
  EXPECT_EQ(d.hint,
            "set SO_REUSEADDR on this socket and on PID 812 (nginx)'s socket; once this socket "
            "listens, the bound one can no longer listen()");
  expect_each_fix_suffices(d, call, true, table);

  // A traced bind() (no listen asked): the same fix, said for bind() alone.
  const Diagnosis traced = diagnose(failed(call, EADDRINUSE), table);
  EXPECT_EQ(traced.hint,
            "set SO_REUSEADDR on this socket and on PID 812 (nginx)'s socket; then only the first "
            "of them to call listen() can listen");
  for (const Diagnosis* x : {&d, &traced}) {
    EXPECT_EQ(x->hint.find("neither may listen"), std::string::npos) << x->hint;
    EXPECT_EQ(x->blockers[0].why.find("same address"), std::string::npos) << x->blockers[0].why;
  }
}

TEST(FixTest, MissingReuseaddrOnAConnectionNeedsBothSides) {
  // An old instance's connection (Q07): stopping its process would leave a TIME_WAIT with the
  // same flags (tcp_close -> tcp_time_wait), so "stop" alone is not offered.
  SocketEntry conn = tcp(TcpState::kEstablished, "127.0.0.1:8080");
  const SocketTable table = table_of({conn});
  const Call call = bind_call("0.0.0.0:8080");
  const Diagnosis d = diagnose(failed(call, EADDRINUSE), table);
  EXPECT_EQ(d.cause, Cause::kMissingReuseaddr);
  EXPECT_EQ(fix_keys(d), (Keys{"set_option SO_REUSEADDR both 812",
                               "set_option SO_REUSEPORT both 812", "bind_address 127.0.0.2"}));
  EXPECT_EQ(d.hint, "set SO_REUSEADDR on this socket and on PID 812 (nginx)'s socket");
  expect_each_fix_suffices(d, call, false, table);
}

TEST(FixTest, PortInUseByAListener) {
  const SocketTable table = table_of({tcp(TcpState::kListen, "0.0.0.0:8080")});
  const Call call = bind_call("0.0.0.0:8080", reuseaddr());
  const Prediction p = predict(call, true, table);
  ASSERT_EQ(p.outcome, Outcome::kFails);
  EXPECT_EQ(p.diagnosis->cause, Cause::kPortInUse);
  // Never SO_REUSEADDR against a listener (R1 excludes LISTEN); no other IPv4 address escapes
  // 0.0.0.0.
  EXPECT_EQ(fix_keys(*p.diagnosis), (Keys{"set_option SO_REUSEPORT both 812", "stop 812"}));
  expect_each_fix_suffices(*p.diagnosis, call, true, table);
}

TEST(FixTest, ReuseportUidMismatchSaysOneUidThenTheFirstFix) {
  SocketEntry listener = tcp(TcpState::kListen, "127.0.0.1:8080");
  listener.reuseport = true;
  const Call call = bind_call("127.0.0.1:8080", reuseport(), kOtherUid);
  const Diagnosis d = diagnose(failed(call, EADDRINUSE), table_of({listener}));
  EXPECT_EQ(d.cause, Cause::kReuseportUidMismatch);
  EXPECT_EQ(fix_keys(d), (Keys{"bind_address 127.0.0.2", "stop 812"}));
  EXPECT_EQ(d.hint.rfind("run both under one uid (PID 812 (nginx) runs as uid 1000, this socket "
                         "as uid 33), or bind 127.0.0.2 instead of 127.0.0.1",
                         0),
            0U)
      << d.hint;
  expect_each_fix_suffices(d, call, false, table_of({listener}));
}

TEST(FixTest, DualStackWildcardConflict) {
  // An IPv4 bind under a dual-stack [::] listener: IPV6_V6ONLY on that listener comes first.
  const SocketTable v6 = table_of({tcp(TcpState::kListen, "[::]:8080")});
  const Call call4 = bind_call("127.0.0.1:8080");
  const Diagnosis d = diagnose(failed(call4, EADDRINUSE), v6);
  EXPECT_EQ(d.cause, Cause::kWildcardConflict);
  EXPECT_EQ(fix_keys(d), (Keys{"set_option IPV6_V6ONLY blocker 812",
                               "set_option SO_REUSEPORT both 812", "stop 812"}));
  EXPECT_EQ(d.hint,
            "set IPV6_V6ONLY on PID 812 (nginx)'s socket, so that its [::] stops covering IPv4");
  expect_each_fix_suffices(d, call4, true, v6);

  // A dual-stack [::] bind over an IPv4 listener: IPV6_V6ONLY on the new socket.
  const SocketTable v4 = table_of({tcp(TcpState::kListen, "0.0.0.0:8080")});
  const Call call6 = bind_call("[::]:8080");
  const Diagnosis n = diagnose(failed(call6, EADDRINUSE), v4);
  ASSERT_FALSE(n.fixes.empty());
  EXPECT_EQ(fix_key(n.fixes[0]), "set_option IPV6_V6ONLY new");
  EXPECT_EQ(n.hint, "set IPV6_V6ONLY on this socket so that [::] stops covering IPv4");
  expect_each_fix_suffices(n, call6, true, v4);
}

TEST(FixTest, UdpPortInUse) {
  const SocketTable table = table_of({udp("127.0.0.1:5353")});
  Call call = bind_call("127.0.0.1:5353");
  call.proto = Proto::kUdp;
  const Diagnosis d = diagnose(failed(call, EADDRINUSE), table);
  EXPECT_EQ(d.cause, Cause::kPortInUse);
  EXPECT_EQ(fix_keys(d), (Keys{"set_option SO_REUSEADDR both 53", "set_option SO_REUSEPORT both 53",
                               "bind_address 127.0.0.2", "stop 53"}));
  expect_each_fix_suffices(d, call, false, table);
}

TEST(FixTest, UnknownFlagsGiveNoOptionFix) {
  // sock_diag cannot see the flags: no option can be shown to work; waiting out the timer (its
  // length unknown: at most 60 s) or another address still can.
  SocketEntry tw = tcp(TcpState::kTimeWait, "127.0.0.1:8080");
  tw.reuseaddr = std::nullopt;
  tw.reuseport = std::nullopt;
  tw.time_wait_remaining = std::nullopt;
  const Diagnosis d = diagnose(failed(bind_call("0.0.0.0:8080"), EADDRINUSE), table_of({tw}));
  EXPECT_EQ(d.cause, Cause::kTimeWait);
  EXPECT_EQ(fix_keys(d), (Keys{"wait 60.0", "bind_address 127.0.0.2"}));
  EXPECT_EQ(d.hint, "wait up to 60 s for the TIME_WAIT sockets to expire");
}

TEST(FixTest, OtherCauses) {
  // Exhaustion toward one destination: tcp_tw_reuse=1 takes over the aged TIME_WAIT; a wider
  // range gives new ports.
  SocketTable table = small_range({client(5000, "10.0.0.9:5432", TcpState::kEstablished),
                                   client(5001, "10.0.0.9:5432", TcpState::kTimeWait),
                                   tcp(TcpState::kListen, "0.0.0.0:5002")});
  const Diagnosis e = diagnose(connect_call("0.0.0.0:0", "10.0.0.9:5432", EADDRNOTAVAIL), table);
  EXPECT_EQ(fix_keys(e), (Keys{"sysctl net.ipv4.tcp_tw_reuse=1",
                               "sysctl net.ipv4.ip_local_port_range=4996 5007"}));

  // bind(addr, 0) exhaustion: IP_BIND_ADDRESS_NO_PORT (bind() alone), or a wider range.
  const Diagnosis b = diagnose(
      failed(bind_call("10.0.0.1:0"), EADDRINUSE),
      small_range({tcp(TcpState::kListen, "0.0.0.0:5000"), tcp(TcpState::kListen, "0.0.0.0:5001"),
                   tcp(TcpState::kListen, "0.0.0.0:5002")}));
  EXPECT_EQ(b.cause, Cause::kEphemeralExhausted);
  EXPECT_EQ(fix_keys(b), (Keys{"set_option IP_BIND_ADDRESS_NO_PORT new",
                               "sysctl net.ipv4.ip_local_port_range=4996 5007"}));

  const Diagnosis a = diagnose(failed(bind_call("192.0.2.1:8080"), EADDRNOTAVAIL), table_of({}));
  EXPECT_EQ(fix_keys(a),
            (Keys{"set_option IP_FREEBIND new", "sysctl net.ipv4.ip_nonlocal_bind=1"}));

  const Diagnosis priv = diagnose(failed(bind_call("0.0.0.0:80"), EACCES), table_of({}));
  EXPECT_EQ(fix_keys(priv), (Keys{"sysctl net.ipv4.ip_unprivileged_port_start=80"}));

  const Diagnosis none = diagnose(failed(bind_call("127.0.0.1:8080"), EADDRINUSE), table_of({}));
  EXPECT_TRUE(none.fixes.empty());
}

}  // namespace
}  // namespace portlens
