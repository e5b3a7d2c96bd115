// `portlens top` without a kernel: the frame top_snapshot() builds from a real EventPipeline fed a
// fake namespace (the same JSON the agent serves on its local API), and how TopView draws frames.
#include "agent/cmd/top.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/cmd/top_view.hpp"
#include "agent/live/judge.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"
#include "tests/unit/builders.hpp"

namespace portlens::unit {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::uint32_t kNs = 4026532200U;

class Ring final : public RecordSource {
 public:
  void push(const pl_event& e) {
    const auto* p = reinterpret_cast<const std::byte*>(&e);
    records_.emplace_back(p, p + sizeof e);
  }
  int poll(std::chrono::milliseconds /*timeout*/, const Sink& sink,
           std::size_t max_records) override {
    int n = 0;
    while (!records_.empty() && static_cast<std::size_t>(n) < max_records) {
      sink(records_.front());
      records_.pop_front();
      ++n;
    }
    return n;
  }
  [[nodiscard]] DropCounters drops() const override { return {}; }

 private:
  std::deque<std::vector<std::byte>> records_;
};

// One namespace whose every snapshot is the same table.
class OneNamespace final : public NamespaceSource {
 public:
  explicit OneNamespace(SocketTable table) : table_(std::move(table)) {}
  std::vector<NetnsRef> discover() override { return {NetnsRef{"/run/netns/blue", kNs}}; }
  std::optional<NetnsRef> locate(std::uint32_t inode, std::uint32_t /*pid*/) override {
    return inode == kNs ? std::optional(NetnsRef{"/run/netns/blue", kNs}) : std::nullopt;
  }
  [[nodiscard]] bool refers_to(const NetnsRef& /*ns*/) const override { return true; }
  [[nodiscard]] Snapshot take(const NetnsRef& ns) const override {
    if (ns.inode != kNs) {
      throw Error("no such namespace");
    }
    Snapshot s;
    s.table = table_;
    s.netns = kNs;
    s.cookie = 1;
    return s;
  }

 private:
  SocketTable table_;
};

class NoOwners final : public OwnerSource {
 public:
  void scan() override {}
  void attribute(SocketTable& /*table*/) const override {}
  [[nodiscard]] std::uint64_t dropped() const override { return 0; }
};

// The namespace: a listener on 8080 with 3 of 5 in its accept queue; 3 TIME_WAITs toward
// 10.0.0.5:6379 from ephemeral ports, one FIN_WAIT2-substate minisocket (which `ss state
// time-wait` leaves out), and one connection.
SocketTable blue() {
  SocketTable t;
  SocketEntry l = listener("0.0.0.0:8080", kNs);
  l.owner = SocketOwner{812, "ngin\x1b[2Jx"};  // a comm that would clear the screen
  l.sock_id = 0x5000;
  t.sockets.push_back(l);
  t.listen_queues.push_back(ListenQueue{0x5000, 0, kNs, l.local, 3, 5, 1});
  for (const char* local : {"10.0.0.1:40001", "10.0.0.1:40002", "10.0.0.1:40003"}) {
    t.sockets.push_back(time_wait(local, "10.0.0.5:6379", kNs));
  }
  SocketEntry fin_wait2 = time_wait("10.0.0.1:40004", "10.0.0.5:6379", kNs);
  fin_wait2.time_wait_substate = TcpState::kFinWait2;
  t.sockets.push_back(fin_wait2);
  t.sockets.push_back(connection("10.0.0.1:40005", "10.0.0.6:443", TcpState::kEstablished, kNs));
  t.netns_config[kNs] = NetnsPortConfig{};
  return t;
}

pl_event failed_bind(const char* addr_port_comm) {
  pl_event e{};
  e.type = PL_EV_BIND;
  e.ts_ns = monotonic_ns();
  e.sk = 0xb000;
  e.pid = e.tid = 901;
  e.netns = kNs;
  e.ret = -EADDRINUSE;
  e.fd = 3;
  e.sock_family = AF_INET;
  e.sock_type = SOCK_STREAM;
  e.protocol = IPPROTO_TCP;
  e.flags = PL_F_OPTS_VALID | PL_F_REQ_VALID;
  e.req.family = PL_AF_INET;
  e.req.port = 8080;
  std::strncpy(e.comm, addr_port_comm, sizeof e.comm - 1);
  return e;
}

struct Rig {
  Ring ring;
  OneNamespace namespaces{blue()};
  NoOwners owners;
  FailureJudge judge{namespaces, owners};
  AgentFindings findings{5, 100, nullptr};
  EventPipeline pipeline{ring, namespaces, judge, findings, unpaused()};
  static PipelineOptions unpaused() {
    PipelineOptions o;
    o.batch_pause = std::chrono::milliseconds(0);
    return o;
  }
  json frame(std::optional<std::uint64_t> netns = std::nullopt) {
    TopQuery q;
    q.netns = netns;
    return top_snapshot(pipeline, findings, &namespaces, &owners, q);
  }
};

TEST(TopSnapshotTest, CountsAsSsDoesAndReadsTheQueueFromASnapshot) {
  Rig rig;
  ASSERT_EQ(rig.pipeline.bootstrap(rig.namespaces.discover()), 1U);
  const json f = rig.frame();
  ASSERT_EQ(f["namespaces"].size(), 1U) << f.dump();
  const json& ns = f["namespaces"][0];
  EXPECT_EQ(ns["netns"], kNs);
  EXPECT_EQ(ns["path"], "/run/netns/blue");
  EXPECT_EQ(ns["time_wait"], 3);  // the FIN_WAIT2-substate one counts as FIN_WAIT2
  EXPECT_EQ(ns["states"]["FIN_WAIT2"], 1);
  EXPECT_EQ(ns["states"]["ESTABLISHED"], 1);
  EXPECT_EQ(ns["states"]["LISTEN"], 1);
  EXPECT_EQ(ns["tcp"], 6);
  EXPECT_EQ(f["totals"]["time_wait"], 3);

  ASSERT_EQ(f["listeners"].size(), 1U);
  const json& l = f["listeners"][0];
  EXPECT_EQ(l["local"]["port"], 8080);
  EXPECT_EQ(l["queue"]["length"], 3);
  EXPECT_EQ(l["queue"]["limit"], 5);
  EXPECT_EQ(l["queue"]["syn_queue"], 1);
  EXPECT_EQ(l["pid"], 812);

  // Every port toward 10.0.0.5:6379 is held, TIME_WAIT or not; 10.0.0.6:443 has one.
  ASSERT_EQ(f["destinations"].size(), 2U);
  bool found = false;
  for (const json& d : f["destinations"]) {
    if (d["remote"]["port"] == 6379) {
      found = true;
      EXPECT_EQ(d["in_use"], 4);
      EXPECT_EQ(d["capacity"], 60999 - 32768 + 1);  // the listener's 8080 is not in the range
    }
  }
  EXPECT_TRUE(found) << f["destinations"].dump();
  EXPECT_EQ(f["ports"].size(), 3U);

  // Another namespace than the one known: nothing, and a note that says so.
  const json other = rig.frame(12345);
  EXPECT_TRUE(other["namespaces"].empty());
  EXPECT_THAT(other["notes"].dump(), HasSubstr("12345"));
}

TEST(TopSnapshotTest, FailuresAreTheAgentsCountersByCallCauseAndComm) {
  Rig rig;
  ASSERT_EQ(rig.pipeline.bootstrap(rig.namespaces.discover()), 1U);
  rig.ring.push(failed_bind("nginx2"));
  rig.ring.push(failed_bind("nginx2"));
  for (int i = 0; i < 100; ++i) {
    rig.pipeline.step(std::chrono::milliseconds(0));
  }
  rig.pipeline.finish();
  const json f = rig.frame();
  ASSERT_EQ(f["failures"].size(), 1U) << f.dump();
  EXPECT_EQ(f["failures"][0]["call"], "bind");
  EXPECT_EQ(f["failures"][0]["cause"], "port_in_use");
  EXPECT_EQ(f["failures"][0]["comm"], "nginx2");
  EXPECT_EQ(f["failures"][0]["total"], 2);
}

TEST(TopViewTest, FitsTheScreenEscapesKernelStringsAndSorts) {
  Rig rig;
  ASSERT_EQ(rig.pipeline.bootstrap(rig.namespaces.discover()), 1U);
  const json f = rig.frame();
  TopView view;
  const std::vector<TopLine> lines = view.render(f, nullptr, 80, 24);
  ASSERT_LE(lines.size(), 24U);
  std::string screen;
  for (const TopLine& line : lines) {
    EXPECT_EQ(line.text.size(), 80U) << line.text;  // every byte here is ASCII
    screen += line.text + "\n";
  }
  for (const char* title : {"NAMESPACES (1)", "LISTENERS (1)", "TIME_WAIT BY LOCAL PORT (3)",
                            "EPHEMERAL PORTS BY DESTINATION (2)", "FAILURES (all namespaces)"}) {
    EXPECT_THAT(screen, HasSubstr(title));
  }
  EXPECT_THAT(screen, Not(HasSubstr("\x1b")));
  EXPECT_THAT(screen, HasSubstr("ngin\\e[2Jx"));
  EXPECT_THAT(screen, HasSubstr(" blue"));

  // s cycles the focused table's column; u jumps to the destinations by utilization.
  EXPECT_EQ(view.sort_name(), "TIME_WAIT");
  EXPECT_TRUE(view.key('s'));
  EXPECT_EQ(view.sort_name(), "TCP");
  EXPECT_TRUE(view.key('u'));
  EXPECT_EQ(view.focus(), TopSection::kDestinations);
  EXPECT_EQ(view.sort_name(), "UTIL%");
  EXPECT_FALSE(view.key('q'));

  // On a tiny screen nothing is longer or taller than it.
  for (const TopLine& line : view.render(f, nullptr, 20, 5)) {
    EXPECT_EQ(line.text.size(), 20U);
  }
  EXPECT_EQ(view.render(f, nullptr, 20, 5).size(), 5U);
}

TEST(TopViewTest, FailuresPerSecondAreTheGrowthBetweenFrames) {
  const auto frame = [](std::uint64_t ms, std::uint64_t total) {
    return json{{"monotonic_ms", ms},
                {"failures", json::array({json{{"call", "connect"},
                                               {"proto", "tcp"},
                                               {"errno", "EADDRNOTAVAIL"},
                                               {"cause", "ephemeral_exhausted"},
                                               {"comm", "redis-benchmark"},
                                               {"total", total}}})}};
  };
  const json before = frame(1000, 10);
  const json after = frame(3000, 30);
  std::string text;
  for (const TopLine& line : TopView().render(after, &before, 0, 0)) {
    text += line.text + "\n";
  }
  EXPECT_THAT(text, HasSubstr("failures 10.0/s"));
  EXPECT_THAT(text, HasSubstr("connect EADDRNOTAVAIL ephemeral_exhausted       10.0       30 "
                              "redis-benchmark"));
}

TEST(TopQueryTest, FromARequestClampsTheLimit) {
  EXPECT_EQ(TopQuery::from_request(json{{"op", "top"}}).limit, kTopDefaultLimit);
  EXPECT_EQ(TopQuery::from_request(json{{"limit", 0}}).limit, 1U);
  EXPECT_EQ(TopQuery::from_request(json{{"limit", 1'000'000}}).limit, kTopMaxLimit);
  EXPECT_EQ(TopQuery::from_request(json{{"netns", 7}}).netns, 7U);
  EXPECT_FALSE(TopQuery::from_request(json{{"netns", "x"}}).netns.has_value());
}

}  // namespace
}  // namespace portlens::unit
