// The real EventPipeline, driven with recorded ring records and fake sources: what the tracker,
// the pipeline's counters, the agent's findings and the event log end up with.
#include "agent/live/pipeline.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "agent/live/judge.hpp"
#include "agent/live/walker.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"
#include "agent/render/report.hpp"
#include "exporters/event_log.hpp"
#include "exporters/findings.hpp"
#include "tests/unit/builders.hpp"

namespace portlens::unit {
namespace {

constexpr std::uint32_t kNs = 4026532100U;

// Records handed over as the ring would: each poll gives what is queued, up to a batch.
class RecordedRing final : public RecordSource {
 public:
  void push(const pl_event& e) {
    const auto* p = reinterpret_cast<const std::byte*>(&e);
    records_.emplace_back(p, p + sizeof e);
  }
  void push_bytes(std::vector<std::byte> bytes) { records_.push_back(std::move(bytes)); }
  int poll(std::chrono::milliseconds /*timeout*/, const Sink& sink,
           std::size_t max_records) override {
    int n = 0;
    while (!records_.empty() && n < 64 && static_cast<std::size_t>(n) < max_records) {
      sink(records_.front());
      records_.pop_front();
      ++n;
    }
    return n;
  }
  [[nodiscard]] DropCounters drops() const override { return DropCounters{3, 1}; }
  [[nodiscard]] std::size_t size() const { return records_.size(); }

 private:
  std::deque<std::vector<std::byte>> records_;
};

// One namespace whose snapshot is a fixed table; counts the walks.
class FakeNamespaces final : public NamespaceSource {
 public:
  explicit FakeNamespaces(SocketTable table) : table_(std::move(table)) {}
  std::vector<NetnsRef> discover() override { return {NetnsRef{"/fake/ns", kNs}}; }
  std::optional<NetnsRef> locate(std::uint32_t inode, std::uint32_t /*pid*/) override {
    const std::lock_guard lock(mu_);
    if (inode == kNs || late_.contains(inode)) {
      return NetnsRef{"/fake/ns/" + std::to_string(inode), inode};
    }
    return std::nullopt;
  }
  // A namespace born after the bootstrap: only events lead to it.
  void add_late(std::uint32_t inode, SocketTable table, std::uint64_t cookie) {
    const std::lock_guard lock(mu_);
    late_[inode] = {std::move(table), cookie};
  }
  [[nodiscard]] bool refers_to(const NetnsRef& /*ns*/) const override { return true; }
  [[nodiscard]] Snapshot take(const NetnsRef& ns) const override {
    std::unique_lock lock(mu_);
    ++takes_;
    if (const auto it = late_.find(ns.inode); it != late_.end()) {
      Snapshot s;
      s.table = it->second.first;
      s.netns = ns.inode;
      s.cookie = it->second.second;
      return s;
    }
    if (ns.inode != kNs) {
      throw Error("no such namespace");
    }
    cv_.wait(lock, [this] { return !hold_; });
    Snapshot s;
    s.table = table_;
    s.netns = kNs;
    s.cookie = 1;
    return s;
  }
  [[nodiscard]] int takes() const {
    const std::lock_guard lock(mu_);
    return takes_;
  }
  void set_table(SocketTable table) { table_ = std::move(table); }
  // While held, take() blocks: a walk that takes as long as the test wants.
  void hold(bool on) {
    {
      const std::lock_guard lock(mu_);
      hold_ = on;
    }
    cv_.notify_all();
  }

 private:
  SocketTable table_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable int takes_ = 0;
  bool hold_ = false;
  std::map<std::uint32_t, std::pair<SocketTable, std::uint64_t>> late_;
};

class NoOwners final : public OwnerSource {
 public:
  void scan() override { ++scans; }
  void attribute(SocketTable& /*table*/) const override {}
  [[nodiscard]] std::uint64_t dropped() const override { return 0; }
  int scans = 0;
};

pl_endpoint v4(std::string_view text) {
  const Endpoint e = ep(text);
  pl_endpoint out{};
  out.family = PL_AF_INET;
  out.port = e.port;
  std::memcpy(out.addr, e.addr.bytes().data(), 4);
  return out;
}

// A TCP/IPv4 call record made now: after the bootstrap, before the snapshot its diagnosis takes.
pl_event call(std::uint16_t type, std::uint64_t sk, std::string_view req, int ret, const char* comm,
              bool reuseaddr = false) {
  pl_event e{};
  e.type = type;
  e.ts_ns = monotonic_ns();
  e.sk = sk;
  e.pid = 900;
  e.tid = 900;
  e.uid = 0;
  e.sock_uid = 0;
  e.netns = kNs;
  e.ret = ret;
  e.fd = 3;
  e.sock_family = AF_INET;
  e.sock_type = SOCK_STREAM;
  e.protocol = IPPROTO_TCP;
  e.flags = PL_F_OPTS_VALID | (req.empty() ? 0U : PL_F_REQ_VALID);
  e.opts.reuseaddr = reuseaddr ? 1 : 0;
  if (!req.empty()) {
    e.req = v4(req);
    if (type != PL_EV_CONNECT) {
      e.local = ret == 0 ? v4(req) : pl_endpoint{};
    }
  }
  std::strncpy(e.comm, comm, sizeof e.comm - 1);
  return e;
}

SocketTable namespace_table() {
  SocketTable t;
  SocketEntry l = listener("0.0.0.0:8080", kNs);
  l.reuseaddr = true;
  l.reuseport = false;
  l.v6only = false;
  l.bound_dev_if = 0;
  l.uid = 0;
  l.inode = 5000;
  l.sock_id = 0xffff'0000'0000'5000ULL;
  t.sockets.push_back(l);
  SocketEntry tw = time_wait("127.0.0.1:9090", "127.0.0.1:40000", kNs);
  tw.reuseaddr = false;  // left by a server without SO_REUSEADDR
  t.sockets.push_back(tw);
  t.netns_config[kNs] = NetnsPortConfig{};
  return t;
}

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) {
    out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

struct Rig {
  explicit Rig(PipelineOptions options = unpaused())
      : pipeline{ring, namespaces, judge, findings, options} {}
  RecordedRing ring;
  FakeNamespaces namespaces{namespace_table()};
  NoOwners owners;
  FailureJudge judge{namespaces, owners};
  TempDir dir{"portlens-pipeline"};
  EventLog log{dir.file("events.jsonl")};
  AgentFindings findings{5, 100, &log};
  EventPipeline pipeline;
  static PipelineOptions unpaused() {
    PipelineOptions o;
    o.batch_pause = std::chrono::milliseconds(0);
    return o;
  }
  [[nodiscard]] PipelineCounters counters() const {
    const std::lock_guard lock(pipeline.mutex());
    return pipeline.counters();
  }
  // Steps until the ring and the diagnosis queue are empty (bounded).
  void settle() {
    for (int i = 0; i < 1000 && (ring.size() > 0 || counters().pending > 0); ++i) {
      pipeline.step(std::chrono::milliseconds(0));
    }
  }
};

std::uint64_t failures_counted(const AgentFindings& findings) {
  AgentCounters counters;
  findings.fill(counters);
  std::uint64_t n = 0;
  for (const auto& [key, count] : counters.bind_failures) {
    n += count;
  }
  return n;
}

TEST(EventPipelineTest, RecordedEventsReachTheTrackerCountersFindingsAndEventLog) {
  Rig rig;
  ASSERT_EQ(rig.pipeline.bootstrap(rig.namespaces.discover()), 1U);
  EXPECT_EQ(rig.namespaces.takes(), 1);

  rig.ring.push(call(PL_EV_BIND, 0xa000, "127.0.0.1:7000", 0, "redis"));
  rig.ring.push(call(PL_EV_LISTEN, 0xa000, "", 0, "redis"));
  rig.ring.push(call(PL_EV_BIND, 0xb000, "0.0.0.0:8080", -EADDRINUSE, "nginx2", true));
  rig.ring.push(call(PL_EV_BIND, 0xc000, "127.0.0.1:9090", -EADDRINUSE, "server"));
  rig.ring.push_bytes(std::vector<std::byte>(7));  // shorter than any record
  rig.ring.push(call(PL_EV_CONNECT, 0xd000, "127.0.0.1:8080", -ECONNREFUSED, "curl"));
  ASSERT_EQ(rig.pipeline.step(std::chrono::milliseconds(0)), 6U);

  {
    const std::lock_guard lock(rig.pipeline.mutex());
    const PipelineCounters& c = rig.pipeline.counters();
    EXPECT_EQ(c.records, 6U);
    EXPECT_EQ(c.malformed, 1U);
    EXPECT_EQ(c.diagnosed, 2U);  // ECONNREFUSED is not a failure portlens explains
    EXPECT_EQ(c.lost.total(), 4U);
    // The listener from the snapshot and redis's from the events; the TIME_WAIT from the snapshot.
    EXPECT_EQ(rig.pipeline.tracker().socket_count(), 2U);
    EXPECT_EQ(rig.pipeline.tracker().time_wait_count(), 1U);
    EXPECT_TRUE(rig.pipeline.configs().contains(kNs));
  }
  // One snapshot for the first failure, reused by the second (taken after both calls).
  EXPECT_EQ(rig.namespaces.takes(), 2);

  AgentCounters counters;
  rig.findings.fill(counters);
  const auto key = [](const char* cause, const char* comm) {
    return std::tuple<std::string, std::string, std::string, std::string>{"tcp", "bind", cause,
                                                                          comm};
  };
  EXPECT_EQ(counters.bind_failures.size(), 2U);
  EXPECT_EQ(counters.bind_failures[key("port_in_use", "nginx2")], 1U);
  EXPECT_EQ(counters.bind_failures[key("time_wait", "server")], 1U);
  EXPECT_EQ(counters.events_by_type["bind"], 3U);
  EXPECT_EQ(counters.events_by_type["listen"], 1U);
  EXPECT_EQ(counters.events_by_type["connect"], 1U);

  const auto lines = read_lines(rig.dir.file("events.jsonl"));
  ASSERT_EQ(lines.size(), 2U);
  EXPECT_EQ(lines[0]["comm"], "nginx2");
  EXPECT_EQ(lines[0]["diagnosis"]["cause"], "port_in_use");
  EXPECT_EQ(lines[0]["diagnosis"]["blockers"][0]["pid"], 812);
  EXPECT_EQ(lines[1]["diagnosis"]["cause"], "time_wait");
  EXPECT_EQ(lines[1]["local"]["port"], 9090);

  const nlohmann::json recent = rig.findings.failures({{"port", 9090}});
  ASSERT_EQ(recent.size(), 1U);
  EXPECT_EQ(recent[0]["comm"], "server");
  EXPECT_EQ(rig.findings.failures(nlohmann::json::object()).size(), 2U);
}

TEST(EventPipelineTest, ReconcileCountsWhatTheSnapshotShowsAndForgetsGoneNamespaces) {
  Rig rig;
  rig.pipeline.bootstrap(rig.namespaces.discover());
  SocketTable more = namespace_table();
  more.sockets.push_back(
      connection("127.0.0.1:50000", "127.0.0.1:8080", TcpState::kEstablished, kNs));
  more.sockets.back().sock_id = 0xe000;
  TakenSnapshot taken{NetnsRef{"/fake/ns", kNs}, {}, monotonic_ns()};
  taken.snapshot.table = more;
  // Events that arrived during the walk are applied before the merge.
  rig.ring.push(call(PL_EV_BIND, 0xa000, "127.0.0.1:7000", 0, "redis"));
  rig.pipeline.reconcile(taken);
  {
    const std::lock_guard lock(rig.pipeline.mutex());
    EXPECT_EQ(rig.pipeline.counters().records, 1U);
    const auto& corrections = rig.pipeline.tracker().counters().corrections;
    ASSERT_TRUE(corrections.contains("socket_missing"));
    EXPECT_EQ(corrections.at("socket_missing"), 1U);
    EXPECT_EQ(rig.pipeline.tracker().socket_count(), 3U);
  }
  rig.pipeline.forget_all_but({});
  const std::lock_guard lock(rig.pipeline.mutex());
  EXPECT_EQ(rig.pipeline.tracker().socket_count(), 0U);
  EXPECT_EQ(rig.pipeline.tracker().time_wait_count(), 0U);
  EXPECT_TRUE(rig.pipeline.configs().empty());
}

// The walker hands over snapshots in their compact form: the reconcile of one corrects the
// tracker exactly as the same snapshot as a table does.
TEST(EventPipelineTest, ACompactSnapshotReconcilesAsItsTableDoes) {
  SocketTable more = namespace_table();
  more.sockets.push_back(
      connection("127.0.0.1:50000", "127.0.0.1:8080", TcpState::kEstablished, kNs));
  more.sockets.back().sock_id = 0xe000;
  more.sockets.push_back(time_wait("127.0.0.1:50001", "127.0.0.1:8080", kNs));
  std::vector<SocketTable> tables;
  std::vector<TrackerCounters> counters;
  for (const bool compact : {false, true}) {
    Rig rig;
    rig.pipeline.bootstrap(rig.namespaces.discover());
    TakenSnapshot taken{NetnsRef{"/fake/ns", kNs}, {}, monotonic_ns()};
    taken.snapshot.table = more;
    if (compact) {
      make_compact(taken.snapshot);
      ASSERT_TRUE(taken.snapshot.table.sockets.empty());
    }
    rig.ring.push(call(PL_EV_BIND, 0xa000, "127.0.0.1:7000", 0, "redis"));
    rig.pipeline.reconcile(taken);
    const std::lock_guard lock(rig.pipeline.mutex());
    tables.push_back(rig.pipeline.tracker().table(kNs, taken.taken_ns));
    counters.push_back(rig.pipeline.tracker().counters());
    EXPECT_EQ(rig.pipeline.tracker().socket_count(), 3U);
    EXPECT_EQ(rig.pipeline.tracker().time_wait_count(), 2U);
    EXPECT_EQ(rig.pipeline.configs().count(kNs), 1U);
  }
  EXPECT_EQ(counters[0].corrections, counters[1].corrections);
  EXPECT_EQ(counters[1].corrections.at("socket_missing"), 1U);
  EXPECT_EQ(counters[1].corrections.at("time_wait_missing"), 1U);
  ASSERT_EQ(tables[0].sockets.size(), tables[1].sockets.size());
  const auto text = [](const SocketTable& t) {
    std::vector<std::string> out;
    for (const SocketEntry& e : t.sockets) {
      out.push_back(socket_to_json(e).dump());
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(text(tables[0]), text(tables[1]));
}

// A diagnosis that needs a fresh snapshot takes it without the pipeline's lock: a reader (a
// scrape, the local API) gets the lock while the walk is still running.
TEST(EventPipelineTest, ReadersDoNotWaitForTheSnapshotADiagnosisTakes) {
  Rig rig;
  rig.pipeline.bootstrap(rig.namespaces.discover());
  rig.namespaces.hold(true);
  rig.ring.push(call(PL_EV_BIND, 0xb000, "0.0.0.0:8080", -EADDRINUSE, "nginx2", true));
  std::thread loop([&] { rig.pipeline.step(std::chrono::milliseconds(0)); });
  // Wait (bounded) until the diagnosis is inside take().
  for (int i = 0; i < 2000 && rig.namespaces.takes() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(rig.namespaces.takes(), 2) << "the diagnosis never asked for a snapshot";
  const bool locked = rig.pipeline.mutex().try_lock();
  if (locked) {
    EXPECT_EQ(rig.pipeline.tracker().socket_count(), 1U);
    rig.pipeline.mutex().unlock();
  }
  rig.namespaces.hold(false);
  loop.join();
  EXPECT_TRUE(locked) << "the pipeline held its lock during the snapshot walk";
  AgentCounters counters;
  rig.findings.fill(counters);
  EXPECT_EQ(counters.bind_failures.size(), 1U);
}

// The walker hands snapshots over one at a time and reports the round's namespaces.
TEST(SnapshotWalkerTest, HandsOverEachSnapshotThenTheRound) {
  FakeNamespaces namespaces(namespace_table());
  SnapshotWalker walker(namespaces, 0.01, [&] { return namespaces.discover(); });
  std::optional<TakenSnapshot> taken;
  for (int i = 0; i < 2000 && !taken; ++i) {
    taken = walker.next_snapshot();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->ns.inode, kNs);
  // In the compact form the reconcile merges, table.sockets left empty.
  ASSERT_TRUE(taken->snapshot.is_compact);
  EXPECT_EQ(taken->snapshot.compact.size(), 2U);
  EXPECT_TRUE(taken->snapshot.table.sockets.empty());
  std::optional<std::vector<NetnsRef>> round;
  for (int i = 0; i < 2000 && !round; ++i) {
    round = walker.finished_round();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(round.has_value());
  ASSERT_EQ(round->size(), 1U);
  EXPECT_EQ(round->front().inode, kNs);
}

// A namespace created after the start is loaded at its first event, before that event's batch
// is diagnosed: its failure is judged against its own sockets, not "unknown".
TEST(EventPipelineTest, ANamespaceBornAfterTheStartIsLoadedAtItsFirstEvent) {
  Rig rig;
  rig.pipeline.bootstrap(rig.namespaces.discover());
  constexpr std::uint32_t kLate = 4026532200U;
  SocketTable late;
  SocketEntry l = listener("0.0.0.0:6379", kLate);
  l.reuseaddr = false;
  l.reuseport = false;
  l.v6only = false;
  l.bound_dev_if = 0;
  l.uid = 0;
  l.inode = 7000;
  l.owner = SocketOwner{1300, "redis-server"};
  late.sockets.push_back(l);
  late.sockets.push_back(time_wait("127.0.0.1:40001", "10.0.0.5:6379", kLate));
  late.netns_config[kLate] = NetnsPortConfig{};
  rig.namespaces.add_late(kLate, late, 77);
  pl_event failed = call(PL_EV_BIND, 0xf000, "0.0.0.0:6379", -EADDRINUSE, "redis-server");
  failed.netns = kLate;
  rig.ring.push(failed);
  rig.pipeline.step(std::chrono::milliseconds(0));
  {
    const std::lock_guard lock(rig.pipeline.mutex());
    EXPECT_EQ(rig.pipeline.counters().namespaces_loaded, 1U);
    EXPECT_TRUE(rig.pipeline.configs().contains(kLate));
    ASSERT_TRUE(rig.pipeline.namespaces().contains(kLate));
    EXPECT_EQ(rig.pipeline.namespaces().at(kLate).cookie, 77U);
    EXPECT_EQ(rig.pipeline.tracker().time_wait_count(), 2U);  // its own and kNs's
  }
  const auto lines = read_lines(rig.dir.file("events.jsonl"));
  ASSERT_EQ(lines.size(), 1U);
  EXPECT_EQ(lines[0]["diagnosis"]["cause"], "port_in_use");
  ASSERT_FALSE(lines[0]["diagnosis"]["blockers"].empty());
  EXPECT_EQ(lines[0]["diagnosis"]["blockers"][0]["pid"], 1300);
}

// An inode that comes back as another namespace (a new cookie) starts from a fresh first look:
// nothing of the old one carries over, and it is not counted as corrections.
TEST(EventPipelineTest, ARecycledInodeStartsFromAFreshBootstrap) {
  Rig rig;
  rig.pipeline.bootstrap(rig.namespaces.discover());
  SocketTable fresh;
  fresh.netns_config[kNs] = NetnsPortConfig{};
  TakenSnapshot taken{NetnsRef{"/fake/ns", kNs}, {}, monotonic_ns()};
  taken.snapshot.table = fresh;
  taken.snapshot.cookie = 2;  // the bootstrap saw cookie 1
  rig.pipeline.reconcile(taken);
  const std::lock_guard lock(rig.pipeline.mutex());
  EXPECT_EQ(rig.pipeline.counters().namespaces_recycled, 1U);
  EXPECT_EQ(rig.pipeline.tracker().socket_count(), 0U);
  EXPECT_EQ(rig.pipeline.tracker().time_wait_count(), 0U);
  EXPECT_TRUE(rig.pipeline.tracker().counters().corrections.empty());
  EXPECT_EQ(rig.pipeline.namespaces().at(kNs).cookie, 2U);
}

// The same first look when the snapshot is compact, as the walker hands it over: the tracker
// ends as the table's first look leaves it, with no corrections.
TEST(EventPipelineTest, ARecycledInodeStartsFromAFreshBootstrapOfACompactSnapshot) {
  std::vector<std::size_t> sockets;
  std::vector<std::size_t> time_waits;
  for (const bool compact : {false, true}) {
    Rig rig;
    rig.pipeline.bootstrap(rig.namespaces.discover());
    TakenSnapshot taken{NetnsRef{"/fake/ns", kNs}, {}, monotonic_ns()};
    taken.snapshot.table = namespace_table();
    taken.snapshot.table.sockets.push_back(time_wait("127.0.0.1:9091", "127.0.0.1:40001", kNs));
    if (compact) {
      make_compact(taken.snapshot);
    }
    taken.snapshot.cookie = 2;  // the bootstrap saw cookie 1
    rig.pipeline.reconcile(taken);
    const std::lock_guard lock(rig.pipeline.mutex());
    EXPECT_EQ(rig.pipeline.counters().namespaces_recycled, 1U);
    EXPECT_TRUE(rig.pipeline.tracker().counters().corrections.empty());
    EXPECT_EQ(rig.pipeline.namespaces().at(kNs).cookie, 2U);
    sockets.push_back(rig.pipeline.tracker().socket_count());
    time_waits.push_back(rig.pipeline.tracker().time_wait_count());
  }
  EXPECT_EQ(sockets[0], sockets[1]);
  EXPECT_EQ(time_waits[0], time_waits[1]);
  EXPECT_GE(time_waits[1], 1U);  // the TIME_WAIT no event showed
}

// A failure traced while the bootstrap snapshot was still being taken (the agent's first
// moments) is judged against the sockets that snapshot shows: they existed since tracing began.
TEST(EventPipelineTest, AFailureTracedDuringTheBootstrapSeesTheSocketsItShows) {
  Rig rig;
  const std::uint64_t traced_since = monotonic_ns();
  const pl_event failed = call(PL_EV_BIND, 0xb000, "0.0.0.0:8080", -EADDRINUSE, "early", true);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(rig.pipeline.bootstrap(rig.namespaces.discover(), traced_since), 1U);
  rig.ring.push(failed);
  rig.pipeline.step(std::chrono::milliseconds(0));
  const auto lines = read_lines(rig.dir.file("events.jsonl"));
  ASSERT_EQ(lines.size(), 1U);
  EXPECT_EQ(lines[0]["diagnosis"]["cause"], "port_in_use") << lines[0].dump();
}

// A flood of one identical failure is judged once: one snapshot walk, one record, and every
// call counted under the judged cause; the window's close says how many repeats it covered.
TEST(EventPipelineTest, AFloodOfIdenticalFailuresIsJudgedOnceAndCountedInFull) {
  PipelineOptions options = Rig::unpaused();
  options.coalesce_window = std::chrono::milliseconds(200);
  Rig rig(options);
  rig.pipeline.bootstrap(rig.namespaces.discover());
  constexpr int kFlood = 3000;
  for (int i = 0; i < kFlood; ++i) {
    rig.ring.push(call(PL_EV_BIND, 0xb000 + i, "0.0.0.0:8080", -EADDRINUSE, "flood", true));
  }
  rig.settle();
  EXPECT_EQ(rig.namespaces.takes(), 2) << "the bootstrap and one walk for the first failure";
  PipelineCounters c = rig.counters();
  EXPECT_EQ(c.diagnosed, 1U);
  EXPECT_EQ(c.coalesced, static_cast<std::uint64_t>(kFlood - 1));
  EXPECT_EQ(c.shed, 0U);
  EXPECT_EQ(failures_counted(rig.findings), static_cast<std::uint64_t>(kFlood));
  ASSERT_EQ(read_lines(rig.dir.file("events.jsonl")).size(), 1U);

  // The window closes (bounded wait): the log gets the summary, the local API the count.
  for (int i = 0; i < 100 && read_lines(rig.dir.file("events.jsonl")).size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    rig.pipeline.step(std::chrono::milliseconds(0));
  }
  const auto lines = read_lines(rig.dir.file("events.jsonl"));
  ASSERT_EQ(lines.size(), 2U);
  EXPECT_EQ(lines[1]["repeats"], kFlood - 1);
  EXPECT_EQ(lines[1]["diagnosis"]["cause"], "port_in_use");
  const nlohmann::json recent = rig.findings.failures({{"port", 8080}});
  ASSERT_EQ(recent.size(), 1U);
  EXPECT_EQ(recent[0]["repeats"], kFlood - 1);

  // After the window, the same failure is judged again.
  rig.ring.push(call(PL_EV_BIND, 0xc000, "0.0.0.0:8080", -EADDRINUSE, "flood", true));
  rig.settle();
  EXPECT_EQ(rig.counters().diagnosed, 2U);
}

// The failing process's /proc/PID/ns/net is where the judge looks first; that process may exit
// between the lookup and the walk (the last call of a flood). The judge looks again by the
// namespace's inode alone instead of calling the failure unexplained.
class VanishingPidPath final : public NamespaceSource {
 public:
  std::vector<NetnsRef> discover() override { return {NetnsRef{"/run/netns/stable", kNs}}; }
  std::optional<NetnsRef> locate(std::uint32_t inode, std::uint32_t pid) override {
    if (inode != kNs) {
      return std::nullopt;
    }
    return pid != 0 ? NetnsRef{"/proc/" + std::to_string(pid) + "/ns/net", kNs}
                    : NetnsRef{"/run/netns/stable", kNs};
  }
  [[nodiscard]] bool refers_to(const NetnsRef& /*ns*/) const override { return true; }
  [[nodiscard]] Snapshot take(const NetnsRef& ns) const override {
    if (ns.path.starts_with("/proc/") || gone) {
      throw Error("cannot open network namespace " + ns.path + ": No such file or directory");
    }
    Snapshot s;
    s.table = namespace_table();
    s.netns = kNs;
    s.cookie = 1;
    return s;
  }
  bool gone = false;
};

DecodeResult decoded_call(std::uint64_t sk) {
  const pl_event e = call(PL_EV_BIND, sk, "0.0.0.0:8080", -EADDRINUSE, "server");
  return decode_event(std::as_bytes(std::span(&e, 1)));
}

TEST(FailureJudgeTest, AFailingProcessThatExitsMidLookIsNotAnUnexplainedFailure) {
  VanishingPidPath namespaces;
  NoOwners owners;
  FailureJudge judge(namespaces, owners);
  const DecodeResult decoded = decoded_call(0xd000);
  ASSERT_TRUE(decoded.event);
  const Event& e = *decoded.event;
  const auto c = call_from_event(e);
  ASSERT_TRUE(c);
  const Diagnosis d = judge.diagnose(e, *c, nullptr, nullptr);
  EXPECT_TRUE(d.inspected);
  EXPECT_EQ(d.cause, Cause::kPortInUse) << d.hint;
  ASSERT_FALSE(d.blockers.empty());
  EXPECT_EQ(d.blockers[0].socket.inode, 5000U);

  // Gone for good: said so, and marked as judged without a look (so it is not coalesced).
  namespaces.gone = true;
  const DecodeResult later = decoded_call(0xd001);
  ASSERT_TRUE(later.event);
  const Diagnosis blind = judge.diagnose(*later.event, *c, nullptr, nullptr);
  EXPECT_FALSE(blind.inspected);
  EXPECT_EQ(blind.cause, Cause::kUnknown);
  EXPECT_NE(blind.hint.find("cannot inspect the namespace"), std::string::npos) << blind.hint;
}

// Distinct failures cost a judgment each: a turn judges within its budget (at least one), the
// rest wait in order, and beyond the queue's bound they are shed, counted, never lost.
TEST(EventPipelineTest, DistinctFailuresWaitWithinTheBudgetAndBeyondTheQueueAreShed) {
  PipelineOptions options = Rig::unpaused();
  options.diagnosis_budget = std::chrono::milliseconds(0);  // one judgment per turn
  options.max_pending = 10;
  Rig rig(options);
  rig.pipeline.bootstrap(rig.namespaces.discover());
  constexpr int kDistinct = 40;  // fits one poll of the recorded ring
  for (int i = 0; i < kDistinct; ++i) {
    rig.ring.push(call(PL_EV_BIND, 0xb000 + i, "127.0.0.1:" + std::to_string(20000 + i),
                       -EADDRINUSE, "many"));
  }
  rig.pipeline.step(std::chrono::milliseconds(0));
  // The first is judged as it comes; the next ten wait; the rest find the queue full.
  PipelineCounters c = rig.counters();
  EXPECT_EQ(c.diagnosed, 1U);
  EXPECT_EQ(c.pending, 10U);
  EXPECT_EQ(c.shed, static_cast<std::uint64_t>(kDistinct - 11));
  rig.settle();
  c = rig.counters();
  EXPECT_EQ(c.diagnosed, 11U);
  EXPECT_EQ(c.pending, 0U);
  EXPECT_EQ(c.diagnosed + c.coalesced + c.shed, static_cast<std::uint64_t>(kDistinct));
  EXPECT_EQ(failures_counted(rig.findings), static_cast<std::uint64_t>(kDistinct));
  AgentCounters counters;
  rig.findings.fill(counters);
  EXPECT_EQ((counters.bind_failures[{"tcp", "bind", "not_judged", "many"}]),
            static_cast<std::uint64_t>(kDistinct - 11));
  // Judged in the order they failed.
  const auto lines = read_lines(rig.dir.file("events.jsonl"));
  ASSERT_EQ(lines.size(), 11U);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["local"]["port"], 20000 + static_cast<int>(i));
  }
}

// A failure after the namespace's last walk waits for the snapshot interval instead of walking
// again at once: a flood of distinct failures walks a namespace at most once per interval.
TEST(EventPipelineTest, ANamespaceIsWalkedForDiagnosisAtMostOncePerInterval) {
  Rig rig;
  rig.judge.set_snapshot_interval(std::chrono::milliseconds(300));
  rig.pipeline.bootstrap(rig.namespaces.discover());
  rig.ring.push(call(PL_EV_BIND, 0xb000, "127.0.0.1:21000", -EADDRINUSE, "a"));
  rig.pipeline.step(std::chrono::milliseconds(0));
  EXPECT_EQ(rig.namespaces.takes(), 2);
  rig.ring.push(call(PL_EV_BIND, 0xb001, "127.0.0.1:21001", -EADDRINUSE, "b"));
  rig.pipeline.step(std::chrono::milliseconds(0));
  EXPECT_EQ(rig.namespaces.takes(), 2) << "walked again within the interval";
  EXPECT_EQ(rig.counters().pending, 1U);
  for (int i = 0; i < 100 && rig.counters().pending > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    rig.pipeline.step(std::chrono::milliseconds(0));
  }
  EXPECT_EQ(rig.counters().pending, 0U);
  EXPECT_EQ(rig.namespaces.takes(), 3);
  EXPECT_EQ(rig.counters().diagnosed, 2U);
}

// A stop is not held up by the queue or a reconcile under a flood.
TEST(EventPipelineTest, AStopLeavesTheQueueAndTheReconcile) {
  std::atomic<bool> stop{false};
  PipelineOptions options = Rig::unpaused();
  options.stop = &stop;
  options.diagnosis_budget = std::chrono::milliseconds(0);
  options.merge_slice = 1;
  Rig rig(options);
  rig.pipeline.bootstrap(rig.namespaces.discover());
  for (int i = 0; i < 20; ++i) {
    rig.ring.push(
        call(PL_EV_BIND, 0xb000 + i, "127.0.0.1:" + std::to_string(22000 + i), -EADDRINUSE, "s"));
  }
  stop = true;
  rig.pipeline.step(std::chrono::milliseconds(0));
  EXPECT_EQ(rig.counters().diagnosed, 0U);
  EXPECT_EQ(rig.counters().pending, 20U);
  for (int i = 0; i < 200; ++i) {
    rig.ring.push(call(PL_EV_BIND, 0xd000 + i, "127.0.0.1:7000", 0, "s"));
  }
  TakenSnapshot taken{NetnsRef{"/fake/ns", kNs}, {}, monotonic_ns()};
  taken.snapshot.table = namespace_table();
  taken.snapshot.cookie = 1;
  rig.pipeline.reconcile(taken);  // returns: catch-up and merge slices stop at once
  EXPECT_GT(rig.ring.size(), 0U);
}

}  // namespace
}  // namespace portlens::unit
