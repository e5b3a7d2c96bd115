#include "agent/cmd/top.hpp"

#include <curses.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/cmd/top_view.hpp"
#include "agent/diagnose/ephemeral.hpp"
#include "agent/kernel/inspector.hpp"
#include "agent/kernel/netns.hpp"
#include "agent/kernel/preflight.hpp"
#include "agent/live/walker.hpp"
#include "agent/model/clock.hpp"
#include "agent/model/error.hpp"
#include "agent/render/format.hpp"
#include "agent/tracker/tracker.hpp"
#include "exporters/scrape_input.hpp"

namespace portlens {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// The state a TCP row counts under, as `ss` and portlens_tcp_sockets name it
// (exporters/collector.cpp, exported_state): a timewait minisocket under its substate (ss shows
// a FIN_WAIT2-substate one as FIN-WAIT-2 and `ss state time-wait` leaves it out), bound-only
// sockets as CLOSE, request sockets as SYN_RECV.
TcpState shown_state(const SocketRow& row) {
  if (!row.state) {
    return TcpState::kClose;
  }
  switch (*row.state) {
    case TcpState::kTimeWait:
      return row.time_wait_substate == TcpState::kFinWait2 ? TcpState::kFinWait2
                                                           : TcpState::kTimeWait;
    case TcpState::kBoundInactive:
      return TcpState::kClose;
    case TcpState::kNewSynRecv:
      return TcpState::kSynRecv;
    default:
      return *row.state;
  }
}

constexpr std::array<TcpState, 11> kShownStates = {
    TcpState::kEstablished, TcpState::kSynSent,  TcpState::kSynRecv, TcpState::kFinWait1,
    TcpState::kFinWait2,    TcpState::kTimeWait, TcpState::kClose,   TcpState::kCloseWait,
    TcpState::kLastAck,     TcpState::kListen,   TcpState::kClosing};

// One namespace's counts, from the tracker's rows.
struct NetnsCounts {
  std::uint64_t inode = 0;
  std::string path;
  std::array<std::uint64_t, 16> states{};
  std::uint64_t tcp = 0;
  std::uint64_t time_wait = 0;
  std::uint64_t listeners = 0;
  std::map<std::uint16_t, std::uint64_t> time_wait_by_port;
  std::vector<Endpoint> listening;  // TCP LISTEN addresses, for namespaces without a snapshot
  std::optional<std::pair<std::uint16_t, std::uint16_t>> range;
  std::size_t destinations = 0;
  double max_utilization = 0;
};

// A destination's accounting summed over local source addresses, as the metrics fold it
// (exporters/collector.cpp, collect_ephemeral): each source has the whole range toward the
// remote end, so ports add up and the ratio is the worst source's.
struct DestinationCounts {
  std::uint64_t netns = 0;
  Endpoint remote;
  std::uint64_t in_use = 0;
  std::uint64_t capacity = 0;
  std::uint64_t time_wait = 0;
  std::uint64_t reusable = 0;
  double utilization = 0;
};

NetnsCounts count_rows(std::uint64_t inode, const std::vector<SocketRow>& rows) {
  NetnsCounts c;
  c.inode = inode;
  for (const SocketRow& row : rows) {
    if (row.proto != Proto::kTcp) {
      continue;  // as portlens_tcp_sockets and `ss -t`: MPTCP has its own table in ss
    }
    const TcpState state = shown_state(row);
    ++c.states[static_cast<std::size_t>(state)];
    ++c.tcp;
    if (state == TcpState::kTimeWait) {
      ++c.time_wait;
      ++c.time_wait_by_port[row.local.port];
    } else if (state == TcpState::kListen) {
      ++c.listeners;
      c.listening.push_back(row.local);
    }
  }
  return c;
}

std::vector<DestinationCounts> count_destinations(std::uint64_t inode,
                                                  const NetnsPortConfig& config,
                                                  const std::vector<SocketRow>& rows) {
  std::vector<DestinationCounts> out;
  std::map<Endpoint, std::size_t> index;
  for (const EphemeralAccount& a : count_by_destination(inode, config, rows)) {
    if (!a.destination) {
      continue;
    }
    const auto [it, inserted] = index.try_emplace(a.destination->remote, out.size());
    if (inserted) {
      out.push_back(DestinationCounts{inode, a.destination->remote});
    }
    DestinationCounts& d = out[it->second];
    d.in_use += a.in_use;
    d.capacity += a.capacity;
    d.time_wait += a.time_wait;
    d.reusable += a.time_wait_reusable;
    d.utilization = std::max(d.utilization, std::clamp(a.utilization, 0.0, 1.0));
  }
  return out;
}

json states_json(const NetnsCounts& c) {
  json states = json::object();
  for (const TcpState s : kShownStates) {
    states[state_name(static_cast<int>(s))] = c.states[static_cast<std::size_t>(s)];
  }
  return states;
}

// The queue of a snapshot's listener: by socket address when the source gives one, else by
// inode and address (sock_diag).
const ListenQueue* queue_of(const SocketTable& table, const SocketEntry& listener) {
  for (const ListenQueue& q : table.listen_queues) {
    if ((q.sock_id != 0 && q.sock_id == listener.sock_id) ||
        (q.sock_id == 0 && q.inode != 0 && q.inode == listener.inode &&
         q.local == listener.local)) {
      return &q;
    }
  }
  return nullptr;
}

json listener_json(std::uint64_t netns, const SocketEntry* s, const Endpoint& local,
                   const ListenQueue* q) {
  json l = {{"netns", netns}, {"proto", "tcp"}, {"local", endpoint_to_json(local)}};
  l["pid"] = s != nullptr && s->owner ? json(s->owner->pid) : json();
  l["comm"] = s != nullptr && s->owner ? json(s->owner->comm) : json();
  if (q != nullptr) {
    l["queue"] = {{"length", q->length},
                  {"limit", q->limit},
                  {"syn_queue", q->syn_queue ? json(*q->syn_queue) : json()}};
  } else {
    l["queue"] = nullptr;
  }
  return l;
}

double fill_of(const json& listener) {
  const json& q = listener["queue"];
  if (!q.is_object()) {
    return -1;  // unknown sorts below an empty queue
  }
  const double limit = q.value("limit", 0.0);
  const double length = q.value("length", 0.0);
  return limit > 0 ? length / limit : length;
}

template <typename T, typename Better>
void keep_best(std::vector<T>& items, std::size_t limit, Better better) {
  std::sort(items.begin(), items.end(), better);
  if (items.size() > limit) {
    items.resize(limit);
  }
}

// A field that is a whole number >= 0 (JSON parsed from the wire keeps those unsigned; built in
// code, a literal is signed).
std::optional<std::uint64_t> whole_field(const json& request, const char* name) {
  const auto it = request.find(name);
  if (it == request.end() || !it->is_number_integer()) {
    return std::nullopt;
  }
  if (it->is_number_unsigned()) {
    return it->get<std::uint64_t>();
  }
  const auto v = it->get<std::int64_t>();
  return v >= 0 ? std::optional(static_cast<std::uint64_t>(v)) : std::nullopt;
}

}  // namespace

TopQuery TopQuery::from_request(const json& request) {
  TopQuery q;
  q.netns = whole_field(request, "netns");
  if (const auto limit = whole_field(request, "limit")) {
    q.limit = static_cast<std::size_t>(
        std::clamp<std::uint64_t>(*limit, 1, static_cast<std::uint64_t>(kTopMaxLimit)));
  }
  return q;
}

json top_snapshot(const EventPipeline& pipeline, const AgentFindings& findings,
                  const NamespaceSource* queues, const OwnerSource* owners, const TopQuery& query) {
  const std::uint64_t now = monotonic_ns();
  const auto wanted = [&](std::uint64_t inode) { return !query.netns || *query.netns == inode; };
  std::unordered_map<std::uint64_t, std::vector<SocketRow>> rows;
  std::map<std::uint64_t, NetnsPortConfig> configs;
  std::map<std::uint64_t, NetnsRef> refs;
  json frame = json::object();
  {
    // Copies only: the lock also holds off the event loop.
    const std::lock_guard lock(pipeline.mutex());
    rows = pipeline.tracker().rows(now);
    for (const auto& [inode, config] : pipeline.configs()) {
      if (wanted(inode)) {
        configs.emplace(inode, config);
      }
    }
    for (const auto& [inode, known] : pipeline.namespaces()) {
      if (wanted(inode)) {
        refs.emplace(inode, known.ref);
      }
    }
    frame["events_lost"] = pipeline.counters().lost.total();
    frame["events_malformed"] = pipeline.counters().malformed;
  }
  frame["monotonic_ms"] = now / 1'000'000;
  frame["time_ms"] = WallClock().to_realtime_ns(now) / 1'000'000;
  frame["netns_filter"] = query.netns ? json(*query.netns) : json();
  json notes = json::array();

  std::vector<NetnsCounts> namespaces;
  std::vector<DestinationCounts> destinations;
  std::set<std::uint64_t> inodes;
  for (const auto& [inode, config] : configs) {
    inodes.insert(inode);
  }
  for (const auto& [inode, r] : rows) {
    if (wanted(inode)) {
      inodes.insert(inode);
    }
  }
  if (query.netns && inodes.empty()) {
    notes.push_back(fmt::format("no sockets known in netns {} yet", *query.netns));
  }
  static const std::vector<SocketRow> kNoRows;
  for (const std::uint64_t inode : inodes) {
    const auto r = rows.find(inode);
    const std::vector<SocketRow>& ns_rows = r == rows.end() ? kNoRows : r->second;
    NetnsCounts c = count_rows(inode, ns_rows);
    if (const auto ref = refs.find(inode); ref != refs.end()) {
      c.path = ref->second.path;
    }
    if (const auto cfg = configs.find(inode); cfg != configs.end()) {
      c.range = std::pair{cfg->second.port_range_lo, cfg->second.port_range_hi};
      std::vector<DestinationCounts> d = count_destinations(inode, cfg->second, ns_rows);
      c.destinations = d.size();
      for (const DestinationCounts& one : d) {
        c.max_utilization = std::max(c.max_utilization, one.utilization);
      }
      destinations.insert(destinations.end(), d.begin(), d.end());
    }
    namespaces.push_back(std::move(c));
  }

  // Listeners: those of the namespaces with the most listeners come from a fresh snapshot, with
  // their accept queues; the others as the tracker has them.
  std::vector<const NetnsCounts*> with_listeners;
  for (const NetnsCounts& c : namespaces) {
    if (c.listeners > 0) {
      with_listeners.push_back(&c);
    }
  }
  std::sort(with_listeners.begin(), with_listeners.end(), [](const auto* a, const auto* b) {
    return a->listeners != b->listeners ? a->listeners > b->listeners : a->inode < b->inode;
  });
  std::vector<json> listeners;
  std::set<std::uint64_t> snapshotted;
  for (std::size_t i = 0;
       queues != nullptr && i < with_listeners.size() && snapshotted.size() < kTopQueueNamespaces;
       ++i) {
    const std::uint64_t inode = with_listeners[i]->inode;
    const auto ref = refs.find(inode);
    if (ref == refs.end()) {
      continue;
    }
    Snapshot snapshot;
    try {
      snapshot = queues->take(ref->second);
    } catch (const Error& e) {
      notes.push_back(fmt::format("no accept queues for netns {}: {}", inode, e.what()));
      continue;
    }
    SocketTable listening;
    listening.listen_queues = std::move(snapshot.table.listen_queues);
    for (SocketEntry& s : snapshot.table.sockets) {
      if (s.proto == Proto::kTcp && s.state == TcpState::kListen) {
        listening.sockets.push_back(std::move(s));
      }
    }
    {
      const std::lock_guard lock(pipeline.mutex());
      pipeline.tracker().attribute(listening);  // the tracker remembers who called listen()
    }
    if (owners != nullptr) {
      owners->attribute(listening);
    }
    for (const SocketEntry& s : listening.sockets) {
      listeners.push_back(listener_json(inode, &s, s.local, queue_of(listening, s)));
    }
    snapshotted.insert(inode);
  }
  std::size_t listeners_total = 0;
  for (const NetnsCounts& c : namespaces) {
    listeners_total += c.listeners;
    if (snapshotted.count(c.inode) == 0) {
      for (const Endpoint& local : c.listening) {
        listeners.push_back(listener_json(c.inode, nullptr, local, nullptr));
      }
    }
  }
  if (with_listeners.size() > snapshotted.size() && queues != nullptr) {
    notes.push_back(fmt::format("accept queues read in {} of {} namespaces with listeners",
                                snapshotted.size(), with_listeners.size()));
  }

  json totals = {{"namespaces", namespaces.size()},
                 {"listeners", listeners_total},
                 {"destinations", destinations.size()}};
  std::uint64_t tcp = 0;
  std::uint64_t time_wait = 0;
  std::vector<std::tuple<std::uint64_t, std::uint16_t, std::uint64_t>> ports;
  for (const NetnsCounts& c : namespaces) {
    tcp += c.tcp;
    time_wait += c.time_wait;
    for (const auto& [port, n] : c.time_wait_by_port) {
      ports.emplace_back(c.inode, port, n);
    }
  }
  totals["tcp"] = tcp;
  totals["time_wait"] = time_wait;
  totals["ports"] = ports.size();
  frame["totals"] = totals;

  // Each list cut to the limit by its main column, ties by identity.
  keep_best(namespaces, query.limit, [](const NetnsCounts& a, const NetnsCounts& b) {
    return std::tie(b.time_wait, b.tcp, a.inode) < std::tie(a.time_wait, a.tcp, b.inode);
  });
  json ns_json = json::array();
  for (const NetnsCounts& c : namespaces) {
    ns_json.push_back(
        {{"netns", c.inode},
         {"path", c.path.empty() ? json() : json(c.path)},
         {"tcp", c.tcp},
         {"time_wait", c.time_wait},
         {"listeners", c.listeners},
         {"states", states_json(c)},
         {"port_range", c.range ? json::array({c.range->first, c.range->second}) : json()},
         {"destinations", c.destinations},
         {"max_utilization", c.max_utilization}});
  }
  frame["namespaces"] = std::move(ns_json);

  keep_best(listeners, query.limit, [](const json& a, const json& b) {
    const double fa = fill_of(a);
    const double fb = fill_of(b);
    if (fa != fb) {
      return fa > fb;
    }
    return std::tuple(a["netns"].get<std::uint64_t>(), a["local"]["port"].get<int>()) <
           std::tuple(b["netns"].get<std::uint64_t>(), b["local"]["port"].get<int>());
  });
  frame["listeners"] = listeners;

  keep_best(ports, query.limit, [](const auto& a, const auto& b) {
    return std::tuple(std::get<2>(b), std::get<0>(a), std::get<1>(a)) <
           std::tuple(std::get<2>(a), std::get<0>(b), std::get<1>(b));
  });
  json ports_json = json::array();
  for (const auto& [inode, port, n] : ports) {
    ports_json.push_back({{"netns", inode}, {"port", port}, {"time_wait", n}});
  }
  frame["ports"] = std::move(ports_json);

  keep_best(destinations, query.limit, [](const DestinationCounts& a, const DestinationCounts& b) {
    if (a.utilization != b.utilization) {
      return a.utilization > b.utilization;
    }
    return std::tie(b.in_use, a.netns, a.remote) < std::tie(a.in_use, b.netns, b.remote);
  });
  json dest_json = json::array();
  for (const DestinationCounts& d : destinations) {
    dest_json.push_back({{"netns", d.netns},
                         {"remote", endpoint_to_json(d.remote)},
                         {"in_use", d.in_use},
                         {"capacity", d.capacity},
                         {"time_wait", d.time_wait},
                         {"time_wait_reusable", d.reusable},
                         {"utilization", d.utilization}});
  }
  frame["destinations"] = std::move(dest_json);

  // The failure counters as the metrics export them: host-wide, by call, cause and comm.
  AgentCounters counters;
  findings.fill(counters);
  json failures = json::array();
  for (const auto& [key, n] : counters.bind_failures) {
    const auto& [proto, syscall, cause, comm] = key;
    failures.push_back({{"call", syscall},
                        {"proto", proto},
                        {"errno", nullptr},
                        {"cause", cause},
                        {"comm", comm},
                        {"total", n}});
  }
  for (const auto& [key, n] : counters.connect_failures) {
    const auto& [proto, err, cause, comm] = key;
    failures.push_back({{"call", "connect"},
                        {"proto", proto},
                        {"errno", err},
                        {"cause", cause},
                        {"comm", comm},
                        {"total", n}});
  }
  frame["failures"] = std::move(failures);
  frame["notes"] = std::move(notes);
  return frame;
}

namespace {

// Where frames come from: the agent's local API, or a pipeline of top's own.
class FrameSource {
 public:
  FrameSource() = default;
  virtual ~FrameSource() = default;
  FrameSource(const FrameSource&) = delete;
  FrameSource& operator=(const FrameSource&) = delete;
  FrameSource(FrameSource&&) = delete;
  FrameSource& operator=(FrameSource&&) = delete;

  virtual json frame() = 0;
  // Lets about `slice` pass: a tracer follows its events meanwhile.
  virtual void pass(std::chrono::milliseconds slice) = 0;
};

constexpr std::chrono::seconds kApiTimeout{2};

class AgentFrames final : public FrameSource {
 public:
  AgentFrames(std::string socket, json request, json first)
      : socket_(std::move(socket)), request_(std::move(request)), first_(std::move(first)) {}

  json frame() override {
    json f;
    if (!first_.is_null()) {
      f = std::move(first_);
      first_ = json();
    } else {
      const auto answer = api_request(socket_, request_, kApiTimeout);
      if (!answer) {
        throw Error("the agent on " + socket_ + " stopped answering");
      }
      if (answer->contains("error")) {
        throw Error("the agent on " + socket_ +
                    " answered: " + answer->value("error", std::string("?")));
      }
      f = *answer;
    }
    f["source"] = "agent " + socket_;
    return f;
  }
  void pass(std::chrono::milliseconds slice) override { std::this_thread::sleep_for(slice); }

 private:
  std::string socket_;
  json request_;
  json first_;
};

// How often the own tracer corrects its table from snapshots, as `trace` does.
constexpr double kReconcileIntervalS = 30.0;
// /proc scans for the listeners' owners, at most this often: a scan reads every process's fds.
constexpr std::chrono::seconds kOwnerScanInterval{5};

class TracerFrames final : public FrameSource {
 public:
  TracerFrames(const std::optional<NetnsRef>& only, const std::atomic<bool>& stop, std::string note)
      : only_(only),
        tracer_(config_for(only)),
        records_(tracer_),
        findings_(kDefaultTopKComms, kHistory, nullptr),
        pipeline_(records_, inspector_.namespaces(), inspector_.judge(), findings_,
                  options_for(stop)),
        note_(std::move(note)) {
    const auto scope = [this] {
      return only_ ? std::vector<NetnsRef>{*only_} : inspector_.namespaces().discover();
    };
    pipeline_.bootstrap(scope(), traced_since_);
    walker_ = std::make_unique<SnapshotWalker>(inspector_.namespaces(), kReconcileIntervalS, scope);
  }

  json frame() override {
    if (Clock::now() >= next_owner_scan_) {
      inspector_.owners().scan();
      next_owner_scan_ = Clock::now() + kOwnerScanInterval;
    }
    TopQuery query;
    if (only_) {
      query.netns = only_->inode;
    }
    json f =
        top_snapshot(pipeline_, findings_, &inspector_.namespaces(), &inspector_.owners(), query);
    f["source"] = "own tracer";
    if (!note_.empty()) {
      f["notes"].push_back(note_);
    }
    return f;
  }

  void pass(std::chrono::milliseconds slice) override {
    pipeline_.step(slice);
    if (auto taken = walker_->next_snapshot()) {
      pipeline_.reconcile(*taken);
    }
    if (const auto round = walker_->finished_round()) {
      pipeline_.forget_all_but(*round);
    }
  }

 private:
  static constexpr std::size_t kDefaultTopKComms = 20;
  static constexpr std::size_t kHistory = 1000;

  static TracerConfig config_for(const std::optional<NetnsRef>& only) {
    require_preflight();
    TracerConfig config;
    config.netns_filter = only ? only->inode : 0;
    config.tcp_states = true;  // TIME_WAIT is inferred from state changes
    return config;
  }
  static PipelineOptions options_for(const std::atomic<bool>& stop) {
    PipelineOptions o;
    o.stop = &stop;
    return o;
  }

  std::optional<NetnsRef> only_;
  std::uint64_t traced_since_ = monotonic_ns();  // before the tracer: no event is older
  BpfTracer tracer_;
  TracerRecords records_;
  LiveInspector inspector_;
  AgentFindings findings_;
  EventPipeline pipeline_;
  std::unique_ptr<SnapshotWalker> walker_;
  std::string note_;
  Clock::time_point next_owner_scan_ = Clock::now();
};

// The agent when it answers (and the source allows it), else a tracer of top's own.
std::unique_ptr<FrameSource> open_source(const TopOptions& o, const std::optional<NetnsRef>& only,
                                         const std::atomic<bool>& stop) {
  std::string note;
  if (o.source != "tracer") {
    json request = {{"op", "top"}};
    if (only) {
      request["netns"] = only->inode;
    }
    std::optional<json> answer;
    try {
      answer = api_request(o.api_socket, request, kApiTimeout);
    } catch (const Error& e) {
      if (o.source == "agent") {
        throw;
      }
      note = std::string("cannot ask the agent (") + e.what() + "): running a tracer of its own";
    }
    if (answer && !answer->contains("error")) {
      return std::make_unique<AgentFrames>(o.api_socket, request, std::move(*answer));
    }
    if (o.source == "agent") {
      throw Error(answer ? "the agent on " + o.api_socket +
                               " cannot serve top: " + answer->value("error", std::string("?"))
                         : "no agent answers on " + o.api_socket +
                               " (start `portlens agent`, or use --source tracer)");
    }
    if (answer) {
      note = "the agent on " + o.api_socket + " cannot serve top (" +
             answer->value("error", std::string("?")) + "): running a tracer of its own";
    }
  }
  return std::make_unique<TracerFrames>(only, stop, note);
}

// Lets `total` pass in slices of at most 100 ms, until stop.
void pass_for(FrameSource& source, std::chrono::milliseconds total, const std::atomic<bool>& stop) {
  const auto deadline = Clock::now() + total;
  constexpr std::chrono::milliseconds kSlice{100};
  while (!stop.load(std::memory_order_relaxed) && Clock::now() < deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    source.pass(std::clamp(left, std::chrono::milliseconds(1), kSlice));
  }
}

// The terminal, in curses mode for as long as this lives; left as it was on every way out.
class Screen {
 public:
  Screen() {
    std::setlocale(LC_CTYPE, "");  // UTF-8 comms and paths, drawn by ncursesw
    screen_ = newterm(nullptr, stdout, stdin);
    if (screen_ == nullptr) {
      const char* term = std::getenv("TERM");
      throw Error(std::string("cannot drive this terminal (TERM=") +
                  escape_for_terminal(term != nullptr ? term : "") +
                  "); use --once for one plain frame");
    }
    cbreak();
    noecho();
    keypad(stdscr, TRUE);
    curs_set(0);
    timeout(0);  // getch() never waits: the loop paces itself
  }
  ~Screen() {
    endwin();
    delscreen(screen_);
  }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;
  Screen(Screen&&) = delete;
  Screen& operator=(Screen&&) = delete;

  [[nodiscard]] static std::size_t width() { return static_cast<std::size_t>(std::max(COLS, 0)); }
  [[nodiscard]] static std::size_t height() { return static_cast<std::size_t>(std::max(LINES, 0)); }

  // repaint: redraw every cell, not only those that changed, so that a log line written to
  // the terminal meanwhile (warnings go to stderr) is gone by the next frame.
  static void draw(const std::vector<TopLine>& lines, bool repaint) {
    if (repaint) {
      clearok(curscr, TRUE);
    }
    erase();
    for (std::size_t i = 0; i < lines.size(); ++i) {
      attr_t attr = A_NORMAL;
      switch (lines[i].style) {
        case TopLine::Style::kTitle:
        case TopLine::Style::kStatus:
          attr = A_BOLD;
          break;
        case TopLine::Style::kFocusedTitle:
          attr = A_BOLD | A_UNDERLINE;
          break;
        case TopLine::Style::kHeader:
          attr = A_REVERSE;
          break;
        case TopLine::Style::kPlain:
          break;
      }
      attrset(attr);
      // The bottom-right cell cannot be written without scrolling: ERR there is expected.
      mvaddstr(static_cast<int>(i), 0, lines[i].text.c_str());
    }
    attrset(A_NORMAL);
    refresh();
  }

 private:
  SCREEN* screen_ = nullptr;
};

int run_screen(FrameSource& source, const TopOptions& o, const std::atomic<bool>& stop) {
  Screen screen;
  TopView view;
  const auto interval =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.interval_s));
  json previous;
  json frame = source.frame();
  auto next = Clock::now() + interval;
  bool dirty = true;
  bool new_frame = true;
  while (!stop.load(std::memory_order_relaxed)) {
    if (dirty) {
      Screen::draw(view.render(frame, previous.is_null() ? nullptr : &previous, Screen::width(),
                               Screen::height()),
                   new_frame);
      dirty = false;
      new_frame = false;
    }
    // Every key waiting, at most a screenful of them per turn.
    for (int i = 0; i < 64; ++i) {
      const int ch = getch();
      if (ch == ERR) {
        break;
      }
      if (!view.key(ch)) {
        return 0;
      }
      dirty = true;  // a key, or KEY_RESIZE: ncurses has taken the new size already
    }
    if (Clock::now() >= next) {
      previous = std::move(frame);
      frame = source.frame();
      next += interval;
      if (next < Clock::now()) {
        next = Clock::now() + interval;  // a slow frame: no burst of catching up
      }
      dirty = true;
      new_frame = true;
    }
    source.pass(std::chrono::milliseconds(50));
  }
  return 0;
}

}  // namespace

int run_top(const TopOptions& o, std::ostream& out, const std::atomic<bool>& stop) {
  if (o.source != "auto" && o.source != "agent" && o.source != "tracer") {
    throw UsageError("--source " + o.source + ": auto, agent or tracer");
  }
  std::optional<NetnsRef> only;
  if (o.netns) {
    only = resolve_netns(*o.netns);
  }
  const bool plain = o.once || isatty(STDOUT_FILENO) == 0;
  std::unique_ptr<FrameSource> source = open_source(o, only, stop);
  if (!plain) {
    return run_screen(*source, o, stop);
  }
  // Two frames an interval apart, so that failures have a rate.
  const json first = source->frame();
  pass_for(*source,
           std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::duration<double>(o.interval_s)),
           stop);
  const json second = source->frame();
  for (const TopLine& line : TopView().render(second, &first, 0, 0)) {
    out << line.text << '\n';
  }
  out.flush();
  return 0;
}

}  // namespace portlens
