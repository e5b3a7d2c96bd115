#include "agent/render/report.hpp"

#include <fmt/format.h>

#include "agent/render/format.hpp"

namespace portlens {
namespace {

using nlohmann::json;

json opt_bool(const std::optional<bool>& v) { return v ? json(*v) : json(nullptr); }

std::string flags_text(const SocketEntry& s) {
  std::string out;
  const auto flag = [&out](const std::optional<bool>& v, char letter) {
    if (!v) {
      out += '?';  // unknown (sock_diag cannot see it): never shown as off
    } else if (*v) {
      out += letter;
    }
  };
  flag(s.reuseaddr, 'R');
  flag(s.reuseport, 'P');
  if (s.local.addr.is_v6()) {
    flag(s.v6only, '6');
  }
  if (s.bound_dev_if && *s.bound_dev_if != 0) {
    out += fmt::format("@{}", *s.bound_dev_if);
  }
  return out.empty() ? "-" : out;
}

std::string owner_text(const SocketEntry& s) {
  if (!s.owner) {
    return s.state == TcpState::kTimeWait ? "(no owner: TIME_WAIT)" : "(owner unknown)";
  }
  return fmt::format("pid {} ({})", s.owner->pid, escape_for_terminal(s.owner->comm));
}

}  // namespace

std::string socket_state_name(const SocketEntry& socket) {
  if (socket.proto == Proto::kUdp || socket.proto == Proto::kUdpLite) {
    return socket.remote ? "ESTAB" : "UNCONN";
  }
  if (!socket.state) {
    return "UNKNOWN";
  }
  return state_name(static_cast<int>(*socket.state));
}

json socket_to_json(const SocketEntry& s) {
  json j = {
      {"proto", to_string(s.proto)},
      {"state", socket_state_name(s)},
      {"local", endpoint_to_json(s.local)},
      {"remote", s.remote ? endpoint_to_json(*s.remote) : json(nullptr)},
      {"pid", s.owner ? json(s.owner->pid) : json(nullptr)},
      {"comm", s.owner ? json(s.owner->comm) : json(nullptr)},
      {"expires_in_ms",
       s.time_wait_remaining ? json(s.time_wait_remaining->count()) : json(nullptr)},
      {"reuseaddr", opt_bool(s.reuseaddr)},
      {"reuseport", opt_bool(s.reuseport)},
      {"v6only", opt_bool(s.v6only)},
      {"bound_dev_if", s.bound_dev_if ? json(*s.bound_dev_if) : json(nullptr)},
      {"uid", s.uid ? json(*s.uid) : json(nullptr)},
      {"netns", s.netns},
  };
  if (s.inode != 0) {
    j["inode"] = s.inode;
  }
  return j;
}

json blocker_to_json(const Blocker& b) {
  json j = socket_to_json(b.socket);
  j["cause"] = to_string(b.cause);
  j["why"] = b.why;
  j["definite"] = b.definite;
  return j;
}

json fix_to_json(const Fix& f) {
  json j = {{"kind", to_string(f.kind)}};
  switch (f.kind) {
    case Fix::Kind::kSetOption:
      j["option"] = f.option;
      j["on"] = to_string(f.on);
      break;
    case Fix::Kind::kWait:
      if (f.seconds) {
        j["seconds"] = *f.seconds;
      }
      break;
    case Fix::Kind::kSysctl:
      j["name"] = f.name;
      j["value"] = f.value;
      break;
    case Fix::Kind::kBindAddress:
      if (f.addr) {
        j["addr"] = f.addr->to_string();
      }
      break;
    case Fix::Kind::kStop:
      break;
  }
  if (f.pids.size() == 1) {
    j["pid"] = f.pids.front();
  } else if (f.pids.size() > 1) {
    j["pids"] = f.pids;
  }
  return j;
}

json diagnosis_to_json(const Diagnosis& d) {
  json blockers = json::array();
  for (const auto& b : d.blockers) {
    blockers.push_back(blocker_to_json(b));
  }
  json fixes = json::array();
  for (const Fix& f : d.fixes) {
    fixes.push_back(fix_to_json(f));
  }
  json j = {
      {"cause", to_string(d.cause)}, {"hint", d.hint}, {"fixes", fixes}, {"blockers", blockers}};
  if (d.ephemeral) {
    const EphemeralAccount& a = *d.ephemeral;
    json dest = nullptr;
    if (a.destination) {
      dest = {{"source", a.destination->source.to_string()},
              {"remote", endpoint_to_json(a.destination->remote)}};
    }
    j["ephemeral"] = {{"destination", dest},         {"range_size", a.range_size},
                      {"reserved", a.reserved},      {"explicit_owned", a.explicit_owned},
                      {"capacity", a.capacity},      {"in_use", a.in_use},
                      {"time_wait", a.time_wait},    {"time_wait_reusable", a.time_wait_reusable},
                      {"undecided", a.undecided},    {"available", a.available},
                      {"utilization", a.utilization}};
  }
  return j;
}

std::string format_socket(const SocketEntry& s) { return format_socket(s, owner_text(s)); }

std::string format_socket(const SocketEntry& s, const std::string& owner) {
  std::string line =
      fmt::format("{} {:<11} {}", to_string(s.proto), socket_state_name(s), s.local.to_string());
  if (s.remote) {
    line += " -> " + s.remote->to_string();
  }
  line += fmt::format("  {}  opts {}", owner, flags_text(s));
  if (s.time_wait_remaining) {
    line += fmt::format(", expires in {:.1f} s",
                        static_cast<double>(s.time_wait_remaining->count()) / 1000.0);
  }
  return line;
}

// The hint, the fixes and the blockers' reasons name processes by their comm: every text is
// escaped for the terminal.
std::string format_diagnosis(const Diagnosis& d, const std::string& indent) {
  std::string out = fmt::format("{}cause: {}\n{}fix:   {}\n", indent, to_string(d.cause), indent,
                                escape_for_terminal(d.hint));
  // The hint is the first fix's text (or leads with it): the others, each sufficient alone.
  for (std::size_t i = 0; i < d.fixes.size(); ++i) {
    if (i == 0 && d.hint.find(d.fixes[i].text) != std::string::npos) {
      continue;
    }
    out += fmt::format("{}or:    {}\n", indent, escape_for_terminal(d.fixes[i].text));
  }
  if (d.ephemeral) {
    const EphemeralAccount& a = *d.ephemeral;
    out += fmt::format(
        "{}ports: {} usable of {} in range ({} reserved, {} held by bind/listen); {} in use "
        "({} TIME_WAIT, {} reusable now)\n",
        indent, a.capacity, a.range_size, a.reserved, a.explicit_owned, a.in_use, a.time_wait,
        a.time_wait_reusable);
  }
  constexpr std::size_t kShown = 10;
  for (std::size_t i = 0; i < d.blockers.size() && i < kShown; ++i) {
    const Blocker& b = d.blockers[i];
    out += fmt::format("{}  blocker: {}  [{}{}]\n", indent, format_socket(b.socket),
                       escape_for_terminal(b.why),
                       b.definite ? "" : "; may block: some fields unknown");
  }
  if (d.blockers.size() > kShown) {
    out += fmt::format("{}  ... and {} more blockers\n", indent, d.blockers.size() - kShown);
  }
  return out;
}

}  // namespace portlens
