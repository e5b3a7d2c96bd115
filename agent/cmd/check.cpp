#include "agent/cmd/check.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <ostream>
#include <thread>
#include <variant>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "agent/diagnose/diagnoser.hpp"
#include "agent/diagnose/ephemeral.hpp"
#include "agent/kernel/inspector.hpp"
#include "agent/model/error.hpp"
#include "agent/model/fd.hpp"
#include "agent/render/format.hpp"
#include "agent/render/report.hpp"
#include "exporters/local_api.hpp"

namespace portlens {
namespace {

using nlohmann::json;

// A comm is bytes, not always UTF-8: dump() would throw on it; replace keeps the rest valid.
std::string dump_json(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

NetnsRef resolve_or_current(const std::optional<std::string>& spec) {
  return spec ? resolve_netns(*spec) : current_netns();
}

// fn() in ns: on this thread when ns is the caller's own (no setns, so no privilege needed).
template <typename Fn>
auto in_netns(const NetnsRef& ns, Fn&& fn) {
  if (ns.inode == current_netns().inode) {
    return fn();
  }
  return run_in_netns(ns, [&](std::uint64_t /*inode*/) { return fn(); });
}

}  // namespace

int resolve_device(const std::string& device, const NetnsRef& ns) {
  int index = 0;
  const auto [ptr, ec] = std::from_chars(device.data(), device.data() + device.size(), index);
  if (ec == std::errc() && ptr == device.data() + device.size()) {
    if (index <= 0) {
      throw UsageError("--device " + device + ": interface indexes start at 1");
    }
    const bool found = in_netns(ns, [&] {
      std::array<char, IF_NAMESIZE> name{};
      return if_indextoname(static_cast<unsigned>(index), name.data()) != nullptr;
    });
    if (!found) {
      throw UsageError("--device " + device + ": no interface has index " + device +
                       " in that network namespace (`ip link` lists them)");
    }
    return index;
  }
  const unsigned found = in_netns(ns, [&] { return if_nametoindex(device.c_str()); });
  if (found == 0) {
    throw UsageError("--device " + device + ": no such interface in that network namespace " +
                     "(`ip link` lists them)");
  }
  return static_cast<int>(found);
}

namespace {

std::string outcome_name(Outcome o) {
  switch (o) {
    case Outcome::kSucceeds:
      return "succeeds";
    case Outcome::kFails:
      return "fails";
    case Outcome::kUndetermined:
      return "undetermined";
  }
  return "?";
}

std::string option_words(const SocketOptions& o) {
  std::vector<std::string> words;
  if (o.reuseaddr) words.emplace_back("SO_REUSEADDR");
  if (o.reuseport) words.emplace_back("SO_REUSEPORT");
  if (o.v6only) words.emplace_back("IPV6_V6ONLY");
  if (o.bound_dev_if != 0) words.push_back(fmt::format("SO_BINDTODEVICE={}", o.bound_dev_if));
  return words.empty() ? "no options" : fmt::format("{}", fmt::join(words, ", "));
}

json prediction_to_json(const Prediction& p) {
  json j = {{"prediction", outcome_name(p.outcome)}};
  j["failing_syscall"] = p.failing_syscall ? json(to_string(*p.failing_syscall)) : json(nullptr);
  j["errno"] = p.expected_result < 0 ? json(errno_name(p.expected_result)) : json(nullptr);
  j["diagnosis"] = p.diagnosis ? diagnosis_to_json(*p.diagnosis) : json(nullptr);
  j["note"] = p.note.empty() ? json(nullptr) : json(p.note);
  return j;
}

// "would succeed" / "would FAIL: listen() -> EADDRINUSE" and the diagnosis beneath.
std::string prediction_text(const Prediction& p, const std::string& indent) {
  std::string out;
  switch (p.outcome) {
    case Outcome::kSucceeds:
      out = paint("would succeed", Paint::kOk) + "\n";
      break;
    case Outcome::kFails:
      out =
          paint("would FAIL", Paint::kFail) +
          fmt::format(": {}() -> {}\n", p.failing_syscall ? to_string(*p.failing_syscall) : "bind",
                      errno_name(p.expected_result));
      break;
    case Outcome::kUndetermined:
      out = "cannot tell: the sockets that may block have fields portlens cannot see\n";
      break;
  }
  if (p.diagnosis) {
    out += format_diagnosis(*p.diagnosis, indent);
  }
  if (!p.note.empty()) {
    out += indent + "note: " + escape_for_terminal(p.note) + "\n";
  }
  return out;
}

json snapshot_json(const Snapshot& s) {
  return {{"source", to_string(s.source)},
          {"sockets", s.table.sockets.size()},
          {"truncated", s.truncated},
          {"elapsed_us", s.elapsed.count()}};
}

Call bind_call(Proto proto, const Endpoint& local, const SocketOptions& options, std::uint32_t uid,
               std::uint64_t netns) {
  Call c;
  c.syscall = Syscall::kBind;
  c.proto = proto;
  c.family = local.addr.family();
  c.netns = netns;
  c.local = local;
  c.options = options;
  c.uid = uid;
  return c;
}

// The source address routing picks toward a destination in ns: a UDP socket's connect() runs the
// route lookup and sends nothing. An errno when there is no route.
std::variant<IpAddress, int> route_source(const NetnsRef& ns, const Endpoint& destination) {
  return in_netns(ns, [&]() -> std::variant<IpAddress, int> {
    const bool v6 = destination.addr.is_v6();
    const Fd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) {
      return errno;
    }
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (v6) {
      sockaddr_in6 sa{};
      sa.sin6_family = AF_INET6;
      sa.sin6_port = htons(destination.port);
      std::memcpy(&sa.sin6_addr, destination.addr.bytes().data(), 16);
      std::memcpy(&ss, &sa, sizeof sa);
      len = sizeof sa;
    } else {
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(destination.port);
      std::memcpy(&sa.sin_addr, destination.addr.bytes().data(), 4);
      std::memcpy(&ss, &sa, sizeof sa);
      len = sizeof sa;
    }
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
      return errno;
    }
    sockaddr_storage local{};
    socklen_t local_len = sizeof local;
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len) != 0) {
      return errno;
    }
    if (local.ss_family == AF_INET6) {
      sockaddr_in6 sa{};
      std::memcpy(&sa, &local, sizeof sa);
      std::array<std::uint8_t, 16> b{};
      std::memcpy(b.data(), &sa.sin6_addr, b.size());
      return IpAddress::v6(b);
    }
    sockaddr_in sa{};
    std::memcpy(&sa, &local, sizeof sa);
    std::array<std::uint8_t, 4> b{};
    std::memcpy(b.data(), &sa.sin_addr, b.size());
    return IpAddress::v4(b);
  });
}

// `check connect ADDR:PORT`: docs/kernel-rules.md section 6. A connect() from an unbound socket
// finds a port when one of the usable ports has no socket on the 4-tuple toward the destination
// from the routed source address, or a TIME_WAIT there that it may take over now.
int run_check_connect(const CheckOptions& o, const Endpoint& destination, std::ostream& out) {
  if (o.listen || o.reuseaddr || o.reuseport || o.v6only || o.device || o.uid) {
    throw UsageError(
        "check connect: takes only --netns, --json and --snapshot (it predicts a connect() "
        "from an unbound TCP socket)");
  }
  if (destination.port == 0 || destination.addr.is_any()) {
    throw UsageError("check connect: '" + o.address +
                     "' is not a destination: give an address and a port, as in 10.0.0.5:6379");
  }
  const NetnsRef ns = resolve_or_current(o.netns);
  const auto routed = route_source(ns, destination);
  if (const int* err = std::get_if<int>(&routed)) {
    const std::string why = fmt::format("connect() -> {}: no route from netns {} toward {}",
                                        errno_name(-*err), ns.inode, destination.to_string());
    if (o.json) {
      out << dump_json(json{{"prediction", "fails"},
                            {"errno", errno_name(-*err)},
                            {"note", why},
                            {"destination", endpoint_to_json(destination)},
                            {"netns", ns.inode}})
          << '\n';
    } else {
      out << "tcp connect " << destination.to_string() << ": " << paint("would FAIL", Paint::kFail)
          << ": " << why << '\n';
    }
    return kCheckFails;
  }
  const IpAddress source = std::get<IpAddress>(routed);
  SnapshotOptions snap_opts;
  snap_opts.mode = o.snapshot_mode;
  LiveInspector inspector(snap_opts);
  const LiveTable live = inspector.inspect(ns);
  const SocketTable& table = live.snapshot.table;
  const EphemeralAccount a = account_destination(
      table,
      Destination{ns.inode, source, Endpoint{destination.addr.unmapped(), destination.port}});
  // The next port to free: the soonest TIME_WAIT toward it to expire.
  std::optional<std::chrono::milliseconds> next_expiry;
  for (const SocketEntry& e : table.sockets) {
    if (e.netns == ns.inode && e.state == TcpState::kTimeWait && e.remote &&
        e.remote->port == destination.port &&
        e.remote->addr.unmapped() == destination.addr.unmapped() &&
        e.local.addr.unmapped() == source.unmapped() && e.time_wait_remaining) {
      next_expiry =
          next_expiry ? std::min(*next_expiry, *e.time_wait_remaining) : *e.time_wait_remaining;
    }
  }
  Outcome outcome = Outcome::kSucceeds;
  if (a.available == 0) {
    outcome = a.undecided > 0 ? Outcome::kUndetermined : Outcome::kFails;
  }
  std::optional<Diagnosis> diagnosis;
  if (outcome != Outcome::kSucceeds) {
    Call call;
    call.syscall = Syscall::kConnect;
    call.proto = Proto::kTcp;
    call.family = destination.addr.is_v6() ? Family::kIpv6 : Family::kIpv4;
    call.netns = ns.inode;
    call.local = Endpoint{source, 0};
    call.remote = destination;
    call.uid = getuid();
    call.result = -EADDRNOTAVAIL;
    diagnosis = diagnose(call, table);
  }
  const NetnsPortConfig& config = table.config_for(ns.inode);
  if (o.json) {
    json j = {
        {"prediction", outcome_name(outcome)},
        {"errno", outcome == Outcome::kFails ? json("EADDRNOTAVAIL") : json(nullptr)},
        {"destination", endpoint_to_json(destination)},
        {"source", source.to_string()},
        {"netns", ns.inode},
        {"ports",
         {{"range", {{"lo", config.port_range_lo}, {"hi", config.port_range_hi}}},
          {"range_size", a.range_size},
          {"reserved", a.reserved},
          {"held_by_bind_listen", a.explicit_owned},
          {"capacity", a.capacity},
          {"in_use", a.in_use},
          {"time_wait", a.time_wait},
          {"time_wait_reusable_now", a.time_wait_reusable},
          {"undecided", a.undecided},
          {"available", a.available}}},
        {"tcp_tw_reuse", config.tcp_tw_reuse},
        {"next_time_wait_expiry_ms", next_expiry ? json(next_expiry->count()) : json(nullptr)},
        {"diagnosis", diagnosis ? diagnosis_to_json(*diagnosis) : json(nullptr)},
        {"snapshot", snapshot_json(live.snapshot)},
    };
    out << dump_json(j) << '\n';
  } else {
    out << fmt::format("tcp connect {} -> {} in netns {}: ", source.to_string(),
                       destination.to_string(), ns.inode);
    switch (outcome) {
      case Outcome::kSucceeds:
        out << paint("would find a port", Paint::kOk) << fmt::format(" ({} free)\n", a.available);
        break;
      case Outcome::kFails:
        out << paint("would FAIL", Paint::kFail) << ": connect() -> EADDRNOTAVAIL\n";
        break;
      case Outcome::kUndetermined:
        out << "cannot tell: some ports' holders have fields portlens cannot see\n";
        break;
    }
    out << fmt::format(
        "  ports {}-{}: {} usable ({} reserved, {} held by bind/listen); toward it {} in use "
        "({} TIME_WAIT, {} of them reusable now), {} free\n",
        config.port_range_lo, config.port_range_hi, a.capacity, a.reserved, a.explicit_owned,
        a.in_use, a.time_wait, a.time_wait_reusable, a.available);
    if (next_expiry) {
      out << fmt::format("  the next TIME_WAIT toward it expires in {:.1f} s\n",
                         static_cast<double>(next_expiry->count()) / 1000.0);
    }
    if (diagnosis) {
      out << format_diagnosis(*diagnosis, "  ");
    }
  }
  return outcome == Outcome::kSucceeds ? kCheckSucceeds : kCheckFails;
}

}  // namespace

int run_check(const CheckOptions& o, std::ostream& out) {
  const auto endpoint = Endpoint::parse(o.address);
  if (!endpoint) {
    throw UsageError("check: '" + o.address +
                     "' is not ADDR:PORT (examples: 127.0.0.1:8080, [::]:443, *:80)");
  }
  if (o.connect) {
    return run_check_connect(o, *endpoint, out);
  }
  if (o.v6only && !endpoint->addr.is_v6()) {
    throw UsageError("check: --v6only applies to IPv6 addresses only, not " + o.address);
  }
  if (o.listen && o.proto != Proto::kTcp) {
    throw UsageError("check: --listen applies to tcp only");
  }
  const NetnsRef ns = resolve_or_current(o.netns);
  SocketOptions opts;
  opts.reuseaddr = o.reuseaddr;
  opts.reuseport = o.reuseport;
  // inet6_bind(): binding a specific, non-mapped IPv6 address makes the socket v6only.
  opts.v6only = o.v6only || (endpoint->addr.is_v6() && !endpoint->addr.is_any() &&
                             !endpoint->addr.is_v4_mapped());
  if (o.device) {
    opts.bound_dev_if = resolve_device(*o.device, ns);
  }
  const std::uint32_t uid = o.uid.value_or(getuid());

  SnapshotOptions snap_opts;
  snap_opts.mode = o.snapshot_mode;
  LiveInspector inspector(snap_opts);
  const LiveTable live = inspector.inspect(ns);
  const Call call = bind_call(o.proto, *endpoint, opts, uid, ns.inode);
  const Prediction p = predict(call, o.listen, live.snapshot.table);

  if (o.json) {
    json j = prediction_to_json(p);
    j["request"] = {{"proto", to_string(o.proto)},
                    {"local", endpoint_to_json(*endpoint)},
                    {"listen", o.listen},
                    {"reuseaddr", opts.reuseaddr},
                    {"reuseport", opts.reuseport},
                    {"v6only", opts.v6only},
                    {"bound_dev_if", opts.bound_dev_if},
                    {"uid", uid},
                    {"netns", ns.inode}};
    j["snapshot"] = snapshot_json(live.snapshot);
    out << dump_json(j) << '\n';
  } else {
    out << fmt::format("{} {} {}{} with {}, uid {}, netns {}: ", to_string(o.proto), "bind",
                       endpoint->to_string(), o.listen ? " + listen" : "", option_words(opts), uid,
                       ns.inode)
        << prediction_text(p, "  ");
    if (live.snapshot.source == SnapshotSource::kSockDiag) {
      out << "  (from sock_diag: SO_REUSEADDR/SO_REUSEPORT of existing sockets unknown; "
          << escape_for_terminal(inspector.snapshotter().fallback_reason()) << ")\n";
    }
  }
  return p.outcome == Outcome::kSucceeds ? kCheckSucceeds : kCheckFails;
}

namespace {

bool same_table(Proto a, Proto b) {
  const auto table = [](Proto p) { return p == Proto::kMptcp ? Proto::kTcp : p; };
  return table(a) == table(b);
}

struct PortHolders {
  std::vector<const SocketEntry*> listeners;
  std::vector<const SocketEntry*> bound;
  std::vector<const SocketEntry*> connections;
  std::vector<const SocketEntry*> time_wait;
};

PortHolders holders_of(const SocketTable& table, std::uint16_t port, Proto proto) {
  PortHolders h;
  for (const auto& s : table.sockets) {
    if (s.local.port != port || !same_table(s.proto, proto) || s.state == TcpState::kNewSynRecv) {
      continue;
    }
    if (s.state == TcpState::kTimeWait) {
      h.time_wait.push_back(&s);
    } else if (s.state == TcpState::kListen) {
      h.listeners.push_back(&s);
    } else if (s.remote) {
      h.connections.push_back(&s);
    } else {
      h.bound.push_back(&s);
    }
  }
  std::sort(h.time_wait.begin(), h.time_wait.end(), [](const auto* a, const auto* b) {
    return a->time_wait_remaining < b->time_wait_remaining;
  });
  return h;
}

constexpr std::size_t kListed = 20;

// The listener's queues in the snapshot: by socket address when the source gives one, else by
// inode (sock_diag).
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

// A connection accept() has not taken yet: handshaken (ESTABLISHED, or CLOSE_WAIT when the peer
// already closed), with no struct socket (inode 0) and so no owner, on a port a listener of the
// table holds at an address covering it. Returns that listener.
const SocketEntry* accepting_listener(const PortHolders& h, const SocketEntry& s) {
  if (s.inode != 0 || s.owner || s.proto != Proto::kTcp ||
      (s.state != TcpState::kEstablished && s.state != TcpState::kCloseWait)) {
    return nullptr;
  }
  for (const SocketEntry* l : h.listeners) {
    if (l->proto == Proto::kTcp && l->local.port == s.local.port &&
        (l->local.addr.is_any() || l->local.addr == s.local.addr)) {
      return l;
    }
  }
  return nullptr;
}

std::string queue_text(const ListenQueue& q, const NetnsPortConfig& config) {
  std::string text = fmt::format("accept queue {} of {}", q.length, q.limit);
  // sk_acceptq_is_full(): sk_ack_backlog > sk_max_ack_backlog, so a queue holds limit + 1.
  if (q.length > q.limit) {
    text += " (full: new handshakes are dropped)";
  }
  if (q.syn_queue) {
    text += fmt::format(", SYN queue {}", *q.syn_queue);
  }
  if (config.somaxconn && q.limit == *config.somaxconn) {
    text += fmt::format(
        "; the limit is net.core.somaxconn ({}): a larger listen() backlog was "
        "clamped to it",
        *config.somaxconn);
  }
  return text;
}

// The listeners of h that share one address and port with SO_REUSEPORT, each such group once
// (docs/kernel-rules.md 7: the kernel spreads new connections over the group's sockets). Sockets
// whose reuseport flag is unknown (sock_diag) form no group.
std::vector<std::vector<const SocketEntry*>> reuseport_groups(const PortHolders& h) {
  std::vector<std::vector<const SocketEntry*>> groups;
  for (const SocketEntry* l : h.listeners) {
    if (l->reuseport != true) {
      continue;
    }
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) {
      return g.front()->local == l->local && g.front()->bound_dev_if == l->bound_dev_if;
    });
    if (it == groups.end()) {
      groups.push_back({l});
    } else {
      it->push_back(l);
    }
  }
  std::erase_if(groups, [](const auto& g) { return g.size() < 2; });
  return groups;
}

// "pid 1 (nginx), pid 2 (nginx)": every distinct owner of the group, escaped for the terminal.
std::string group_owners(const std::vector<const SocketEntry*>& group) {
  std::vector<std::string> names;
  for (const SocketEntry* s : group) {
    const std::string name =
        s->owner ? fmt::format("pid {} ({})", s->owner->pid, escape_for_terminal(s->owner->comm))
                 : std::string("an unknown owner");
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      names.push_back(name);
    }
  }
  return fmt::format("{}", fmt::join(names, ", "));
}

void list_sockets(std::ostream& out, const std::string& title,
                  const std::vector<const SocketEntry*>& sockets) {
  out << title << " (" << sockets.size() << ")\n";
  for (std::size_t i = 0; i < sockets.size() && i < kListed; ++i) {
    out << "  " << format_socket(*sockets[i]) << '\n';
  }
  if (sockets.size() > kListed) {
    out << "  ... and " << sockets.size() - kListed << " more\n";
  }
}

json sockets_json(const std::vector<const SocketEntry*>& sockets, std::size_t limit) {
  json arr = json::array();
  for (std::size_t i = 0; i < sockets.size() && i < limit; ++i) {
    arr.push_back(socket_to_json(*sockets[i]));
  }
  return arr;
}

// Recent failures on the port, from a running agent's local API: {"history": [...] or null,
// "history_note": why there are none, or null}.
json ask_agent(const WhyOptions& o, std::uint64_t netns) {
  json h = {{"history", nullptr}, {"history_note", nullptr}};
  try {
    const auto response = api_request(
        o.api_socket, json{{"op", "failures"}, {"port", o.port}, {"netns", netns}, {"limit", 20}},
        std::chrono::seconds(2));
    if (!response) {
      h["history_note"] = "no agent answers on " + o.api_socket +
                          ": recent failures need `portlens agent`, which keeps a history";
    } else if (response->contains("failures")) {
      h["history"] = (*response)["failures"];
    } else {
      h["history_note"] =
          "the agent answered: " + response->value("error", std::string("no failures"));
    }
  } catch (const Error& e) {
    h["history_note"] = std::string("cannot ask the agent: ") + e.what();
  }
  return h;
}

// One line per failure the agent kept; every field came from the kernel by way of the agent, so
// the whole line is escaped for the terminal.
std::string failure_line(const json& f) {
  const auto endpoint = [](const json& ep) {
    return ep.is_object()
               ? ep.value("addr", std::string("?")) + ":" + std::to_string(ep.value("port", 0))
               : std::string("-");
  };
  return "  " + escape_for_terminal(fmt::format(
                    "{} {} pid {} {} {} {}: {}", f.value("time", std::string("?")),
                    f.value("comm", std::string("?")), f.value("pid", 0),
                    f.value("event", std::string("?")), endpoint(f["local"]),
                    f.value("errno", std::string("?")),
                    f.contains("diagnosis") ? f["diagnosis"].value("cause", std::string("?"))
                                            : std::string("?")));
}

}  // namespace

int run_why(const WhyOptions& o, std::ostream& out) {
  if (o.port == 0) {
    throw UsageError("why: port 0 is not a port anything holds; give 1-65535");
  }
  const NetnsRef ns = resolve_or_current(o.netns);
  SnapshotOptions snap_opts;
  snap_opts.mode = o.snapshot_mode;
  LiveInspector inspector(snap_opts);
  const LiveTable live = inspector.inspect(ns);
  const SocketTable& table = live.snapshot.table;
  const PortHolders h = holders_of(table, o.port, o.proto);

  // What a server starting now would meet: bind to 0.0.0.0:PORT (then listen, for TCP).
  const Endpoint any{IpAddress::any_v4(), o.port};
  SocketOptions plain;
  SocketOptions reuse;
  reuse.reuseaddr = true;
  const bool then_listen = o.proto == Proto::kTcp;
  const Prediction p_plain =
      predict(bind_call(o.proto, any, plain, getuid(), ns.inode), then_listen, table);
  const Prediction p_reuse =
      predict(bind_call(o.proto, any, reuse, getuid(), ns.inode), then_listen, table);

  const json history = ask_agent(o, ns.inode);
  std::optional<std::chrono::milliseconds> soonest;
  std::optional<std::chrono::milliseconds> latest;
  for (const auto* s : h.time_wait) {
    if (s->time_wait_remaining) {
      soonest = soonest ? std::min(*soonest, *s->time_wait_remaining) : *s->time_wait_remaining;
      latest = latest ? std::max(*latest, *s->time_wait_remaining) : *s->time_wait_remaining;
    }
  }

  const NetnsPortConfig& config = table.config_for(ns.inode);
  const auto groups = reuseport_groups(h);
  std::size_t queued = 0;
  for (const auto* s : h.connections) {
    queued += accepting_listener(h, *s) != nullptr ? 1 : 0;
  }

  if (o.json) {
    const auto ms = [](const std::optional<std::chrono::milliseconds>& v) {
      return v ? json(v->count()) : json(nullptr);
    };
    const auto opt = [](const auto& v) { return v ? json(*v) : json(nullptr); };
    json listeners_json = json::array();
    for (const auto* l : h.listeners) {
      json j = socket_to_json(*l);
      const ListenQueue* q = queue_of(table, *l);
      std::size_t group_size = 0;
      for (const auto& g : groups) {
        if (std::find(g.begin(), g.end(), l) != g.end()) {
          group_size = g.size();
        }
      }
      j["reuseport_group_size"] = group_size;  // 0: not in a shared group
      j["accept_queue"] =
          q == nullptr
              ? json(nullptr)
              : json{{"length", q->length},
                     {"limit", q->limit},
                     {"full", q->length > q->limit},
                     {"syn_queue", opt(q->syn_queue)},
                     {"somaxconn", opt(config.somaxconn)},
                     {"limit_is_somaxconn", config.somaxconn && q->limit == *config.somaxconn}};
      listeners_json.push_back(std::move(j));
    }
    json connections_json = json::array();
    for (std::size_t i = 0; i < h.connections.size() && i < 1000; ++i) {
      json j = socket_to_json(*h.connections[i]);
      const SocketEntry* l = accepting_listener(h, *h.connections[i]);
      j["in_accept_queue_of"] = l == nullptr || !l->owner
                                    ? json(nullptr)
                                    : json{{"pid", l->owner->pid}, {"comm", l->owner->comm}};
      j["in_accept_queue"] = l != nullptr;
      connections_json.push_back(std::move(j));
    }
    json j = {
        {"port", o.port},
        {"proto", to_string(o.proto)},
        {"netns", ns.inode},
        {"listeners", listeners_json},
        {"bound", sockets_json(h.bound, SIZE_MAX)},
        {"connections",
         {{"count", h.connections.size()},
          {"in_accept_queues", queued},
          {"sockets", connections_json}}},
        {"listen_overflows", opt(config.listen_overflows)},
        {"listen_drops", opt(config.listen_drops)},
        {"time_wait",
         {{"count", h.time_wait.size()},
          {"soonest_expiry_ms", ms(soonest)},
          {"latest_expiry_ms", ms(latest)},
          {"sockets", sockets_json(h.time_wait, 1000)}}},
        {"predictions",
         {{"bind", prediction_to_json(p_plain)}, {"bind_reuseaddr", prediction_to_json(p_reuse)}}},
        {"listen_after_bind", then_listen},
        {"history", history["history"]},
        {"history_note", history["history_note"]},
        {"snapshot", snapshot_json(live.snapshot)},
        {"privileged", geteuid() == 0},
    };
    out << dump_json(j) << '\n';
    return 0;
  }

  out << fmt::format("{} port {} in netns {} ({} sockets seen via {})\n", to_string(o.proto),
                     o.port, ns.inode, table.sockets.size(), to_string(live.snapshot.source));
  // What an unprivileged run cannot see, said before what it shows.
  if (live.snapshot.source == SnapshotSource::kSockDiag) {
    out << "(sock_diag shows no SO_REUSEADDR/SO_REUSEPORT flags: they read '?')\n";
  }
  if (geteuid() != 0) {
    out << "(not root: the owners of other users' sockets are unknown, and only this namespace "
           "can be read)\n";
  }
  out << '\n';
  out << "listening (" << h.listeners.size() << ")\n";
  for (std::size_t i = 0; i < h.listeners.size() && i < kListed; ++i) {
    out << "  " << format_socket(*h.listeners[i]) << '\n';
    if (const ListenQueue* q = queue_of(table, *h.listeners[i])) {
      out << "    " << queue_text(*q, config) << '\n';
    }
  }
  if (h.listeners.size() > kListed) {
    out << "  ... and " << h.listeners.size() - kListed << " more\n";
  }
  for (const auto& g : groups) {
    out << fmt::format(
        "  {} listeners share {} with SO_REUSEPORT (new connections are spread over them): {}\n",
        g.size(), g.front()->local.to_string(), group_owners(g));
  }
  if (o.proto == Proto::kTcp && config.listen_overflows && *config.listen_overflows > 0) {
    out << fmt::format(
        "  handshakes this namespace dropped with an accept queue full: {} since it was made "
        "(TcpExtListenOverflows; all listeners)\n",
        *config.listen_overflows);
  }
  list_sockets(out, "bound, not listening", h.bound);
  out << "connections (" << h.connections.size() << ")";
  if (queued > 0) {
    out << ", " << queued << " waiting for accept()";
  }
  out << '\n';
  for (std::size_t i = 0; i < h.connections.size() && i < kListed; ++i) {
    const SocketEntry* l = accepting_listener(h, *h.connections[i]);
    if (l == nullptr) {
      out << "  " << format_socket(*h.connections[i]) << '\n';
      continue;
    }
    out << "  "
        << format_socket(*h.connections[i],
                         "in the accept queue of " +
                             (l->owner ? fmt::format("pid {} ({})", l->owner->pid,
                                                     escape_for_terminal(l->owner->comm))
                                       : std::string("its listener (owner unknown)")))
        << '\n';
  }
  if (h.connections.size() > kListed) {
    out << "  ... and " << h.connections.size() - kListed << " more\n";
  }
  out << "TIME_WAIT (" << h.time_wait.size() << ")";
  if (soonest && latest) {
    out << fmt::format(": expiring in {:.1f} s to {:.1f} s",
                       static_cast<double>(soonest->count()) / 1000.0,
                       static_cast<double>(latest->count()) / 1000.0);
  }
  out << '\n';
  if (!h.time_wait.empty()) {
    std::map<std::string, std::size_t> peers;
    for (const auto* s : h.time_wait) {
      ++peers[s->remote ? s->remote->addr.to_string() : "?"];
    }
    std::vector<std::pair<std::string, std::size_t>> top(peers.begin(), peers.end());
    std::sort(top.begin(), top.end(),
              [](const auto& a, const auto& b) { return a.second > b.second; });
    out << "  peers:";
    for (std::size_t i = 0; i < top.size() && i < 5; ++i) {
      out << ' ' << top[i].first << " (" << top[i].second << ")";
    }
    out << '\n';
  }
  const std::string call =
      fmt::format("bind({}){}", any.to_string(), then_listen ? " + listen()" : "");
  out << '\n' << call << " now: " << prediction_text(p_plain, "  ");
  out << call << " with SO_REUSEADDR: " << prediction_text(p_reuse, "  ");
  if (history["history"].is_array()) {
    out << "\nrecent failures on port " << o.port
        << " (from the agent): " << history["history"].size() << '\n';
    for (const auto& f : history["history"]) {
      out << failure_line(f) << '\n';
    }
  } else {
    out << '\n' << escape_for_terminal(history["history_note"].get<std::string>()) << '\n';
  }
  return 0;
}

}  // namespace portlens
