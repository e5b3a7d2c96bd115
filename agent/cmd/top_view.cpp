#include "agent/cmd/top_view.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "agent/render/format.hpp"

namespace portlens {
namespace {

using nlohmann::json;

// The ncurses codes the view reacts to, spelled here so that this file needs no curses header
// (<curses.h>: KEY_DOWN 0402, KEY_UP 0403, KEY_LEFT 0404, KEY_RIGHT 0405, KEY_BTAB 0541).
constexpr int kKeyDown = 0402;
constexpr int kKeyUp = 0403;
constexpr int kKeyLeft = 0404;
constexpr int kKeyRight = 0405;
constexpr int kKeyBackTab = 0541;

struct Column {
  std::string_view title;
  std::size_t width = 0;  // the last column takes what is left of the line
  bool right = false;
};

// A table row: its cells, and one key per sort column of its table (larger first).
struct Row {
  std::vector<std::string> cells;
  std::vector<double> keys;
  std::string tie;  // orders equal keys: the row's identity, ascending
};

struct Table {
  std::string_view title;
  std::vector<Column> columns;
  std::vector<std::string_view> sorts;  // the sort columns, by title
  std::vector<Row> rows;
  std::size_t total = 0;  // rows the frame counted, before its own cut
};

std::uint64_t count(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

double number(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

std::string text(const json& j, const char* key, std::string_view none = "-") {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? escape_for_terminal(it->get<std::string>())
                                          : std::string(none);
}

std::string endpoint_text(const json& ep) {
  if (!ep.is_object()) {
    return "-";
  }
  const std::string addr = text(ep, "addr", "?");
  const std::string port = std::to_string(count(ep, "port"));
  return addr.find(':') != std::string::npos ? "[" + addr + "]:" + port : addr + ":" + port;
}

std::string percent(double ratio) {
  return fmt::format("{:.0f}", std::clamp(ratio, 0.0, 1.0) * 100);
}

// A namespace's name as people give it: the `ip netns` name, else the path that leads to it.
std::string netns_name(const json& ns) {
  std::string path = text(ns, "path");
  constexpr std::string_view kRunNetns = "/run/netns/";
  if (path.rfind(kRunNetns, 0) == 0) {
    path.erase(0, kRunNetns.size());
  }
  return path;
}

const json& list(const json& frame, const char* key) {
  static const json kEmpty = json::array();
  const auto it = frame.find(key);
  return it != frame.end() && it->is_array() ? *it : kEmpty;
}

std::size_t total_of(const json& frame, const char* key) {
  const auto it = frame.find("totals");
  return it != frame.end() && it->is_object() ? count(*it, key) : list(frame, key).size();
}

Table namespaces_table(const json& frame) {
  Table t{"NAMESPACES",
          {{"NETNS", 10, true},
           {"TCP", 6, true},
           {"ESTAB", 6, true},
           {"SYN", 5, true},
           {"TIME_WAIT", 9, true},
           {"CLOSE_WAIT", 10, true},
           {"FIN", 5, true},
           {"LISTEN", 6, true},
           {"UTIL%", 5, true},
           {"NAME", 0, false}},
          {"TIME_WAIT", "TCP", "ESTAB", "CLOSE_WAIT", "UTIL%", "NETNS"},
          {},
          total_of(frame, "namespaces")};
  for (const json& ns : list(frame, "namespaces")) {
    const json& states = ns.contains("states") ? ns["states"] : json::object();
    const auto state = [&](std::string_view name) {
      return count(states, std::string(name).c_str());
    };
    const std::uint64_t syn = state("SYN_SENT") + state("SYN_RECV");
    const std::uint64_t fin =
        state("FIN_WAIT1") + state("FIN_WAIT2") + state("CLOSING") + state("LAST_ACK");
    const std::uint64_t inode = count(ns, "netns");
    Row r;
    r.cells = {std::to_string(inode),
               std::to_string(count(ns, "tcp")),
               std::to_string(state("ESTABLISHED")),
               std::to_string(syn),
               std::to_string(count(ns, "time_wait")),
               std::to_string(state("CLOSE_WAIT")),
               std::to_string(fin),
               std::to_string(state("LISTEN")),
               percent(number(ns, "max_utilization")),
               netns_name(ns)};
    r.keys = {static_cast<double>(count(ns, "time_wait")),
              static_cast<double>(count(ns, "tcp")),
              static_cast<double>(state("ESTABLISHED")),
              static_cast<double>(state("CLOSE_WAIT")),
              number(ns, "max_utilization"),
              -static_cast<double>(inode)};
    r.tie = fmt::format("{:020}", inode);
    t.rows.push_back(std::move(r));
  }
  return t;
}

Table listeners_table(const json& frame) {
  Table t{"LISTENERS",
          {{"NETNS", 10, true},
           {"LOCAL", 21, false},
           {"QUEUE", 6, true},
           {"LIMIT", 6, true},
           {"SYNQ", 5, true},
           {"FILL%", 5, true},
           {"PID", 7, true},
           {"COMM", 0, false}},
          {"FILL%", "QUEUE", "LOCAL", "NETNS"},
          {},
          total_of(frame, "listeners")};
  for (const json& l : list(frame, "listeners")) {
    const json& q = l.contains("queue") ? l["queue"] : json();
    const bool has_queue = q.is_object();
    const double length = has_queue ? number(q, "length") : 0;
    const double limit = has_queue ? number(q, "limit") : 0;
    const double fill = limit > 0 ? length / limit : (length > 0 ? 1.0 : 0.0);
    const std::uint64_t inode = count(l, "netns");
    const std::uint64_t port = l.contains("local") ? count(l["local"], "port") : 0;
    const auto pid = l.find("pid");
    Row r;
    r.cells = {std::to_string(inode),
               endpoint_text(l.value("local", json())),
               has_queue ? std::to_string(count(q, "length")) : "-",
               has_queue ? std::to_string(count(q, "limit")) : "-",
               has_queue && q.contains("syn_queue") && q["syn_queue"].is_number()
                   ? std::to_string(count(q, "syn_queue"))
                   : "-",
               has_queue ? percent(fill) : "-",
               pid != l.end() && pid->is_number() ? std::to_string(pid->get<std::uint64_t>()) : "-",
               text(l, "comm")};
    r.keys = {fill, length, -static_cast<double>(port), -static_cast<double>(inode)};
    r.tie = fmt::format("{:020}/{:05}/{}", inode, port, r.cells[1]);
    t.rows.push_back(std::move(r));
  }
  return t;
}

Table ports_table(const json& frame) {
  Table t{"TIME_WAIT BY LOCAL PORT",
          {{"NETNS", 10, true}, {"PORT", 5, true}, {"TIME_WAIT", 9, true}, {"", 0, false}},
          {"TIME_WAIT", "PORT"},
          {},
          total_of(frame, "ports")};
  for (const json& p : list(frame, "ports")) {
    const std::uint64_t inode = count(p, "netns");
    const std::uint64_t port = count(p, "port");
    Row r;
    r.cells = {std::to_string(inode), std::to_string(port), std::to_string(count(p, "time_wait")),
               ""};
    r.keys = {static_cast<double>(count(p, "time_wait")), -static_cast<double>(port)};
    r.tie = fmt::format("{:020}/{:05}", inode, port);
    t.rows.push_back(std::move(r));
  }
  return t;
}

Table destinations_table(const json& frame) {
  Table t{"EPHEMERAL PORTS BY DESTINATION",
          {{"NETNS", 10, true},
           {"DESTINATION", 23, false},
           {"IN_USE", 6, true},
           {"TIME_WAIT", 9, true},
           {"REUSABLE", 8, true},
           {"CAPACITY", 8, true},
           {"UTIL%", 0, true}},
          {"UTIL%", "IN_USE", "TIME_WAIT", "DESTINATION"},
          {},
          total_of(frame, "destinations")};
  for (const json& d : list(frame, "destinations")) {
    const std::uint64_t inode = count(d, "netns");
    Row r;
    const std::string remote = endpoint_text(d.value("remote", json()));
    r.cells = {std::to_string(inode),
               remote,
               std::to_string(count(d, "in_use")),
               std::to_string(count(d, "time_wait")),
               std::to_string(count(d, "time_wait_reusable")),
               std::to_string(count(d, "capacity")),
               percent(number(d, "utilization"))};
    r.keys = {number(d, "utilization"), static_cast<double>(count(d, "in_use")),
              static_cast<double>(count(d, "time_wait")), 0.0};
    r.tie = fmt::format("{:020}/{}", inode, remote);
    t.rows.push_back(std::move(r));
  }
  return t;
}

std::string failure_key(const json& f) {
  return text(f, "call") + "|" + text(f, "proto") + "|" + text(f, "errno") + "|" +
         text(f, "cause") + "|" + text(f, "comm");
}

// The failure counters' growth per second since the previous frame; nothing before a second
// frame (a rate needs two readings).
std::map<std::string, double> failure_rates(const json& frame, const json* previous) {
  std::map<std::string, double> rates;
  if (previous == nullptr) {
    return rates;
  }
  const double seconds = (number(frame, "monotonic_ms") - number(*previous, "monotonic_ms")) / 1e3;
  if (seconds <= 0) {
    return rates;
  }
  std::map<std::string, std::uint64_t> before;
  for (const json& f : list(*previous, "failures")) {
    before[failure_key(f)] = count(f, "total");
  }
  for (const json& f : list(frame, "failures")) {
    const std::string key = failure_key(f);
    const std::uint64_t now = count(f, "total");
    const auto it = before.find(key);
    const std::uint64_t then = it == before.end() ? 0 : std::min(it->second, now);
    rates[key] = static_cast<double>(now - then) / seconds;
  }
  return rates;
}

Table failures_table(const json& frame, const std::map<std::string, double>& rates,
                     bool have_rates) {
  Table t{"FAILURES (all namespaces)",
          {{"CALL", 7, false},
           {"ERRNO", 13, false},
           {"CAUSE", 22, false},
           {"RATE/S", 7, true},
           {"TOTAL", 8, true},
           {"COMM", 0, false}},
          {"RATE/S", "TOTAL", "CAUSE"},
          {},
          list(frame, "failures").size()};
  for (const json& f : list(frame, "failures")) {
    const std::string key = failure_key(f);
    const auto rate = rates.find(key);
    const double per_s = rate == rates.end() ? 0.0 : rate->second;
    Row r;
    r.cells = {text(f, "call"),
               text(f, "errno"),
               text(f, "cause"),
               have_rates ? fmt::format("{:.1f}", per_s) : "-",
               std::to_string(count(f, "total")),
               text(f, "comm")};
    r.keys = {per_s, static_cast<double>(count(f, "total")), 0.0};
    r.tie = r.cells[2] + "|" + key;
    t.rows.push_back(std::move(r));
  }
  return t;
}

void sort_rows(Table& t, std::size_t sort) {
  const std::size_t k = std::min(sort, t.sorts.size() - 1);
  std::stable_sort(t.rows.begin(), t.rows.end(), [k](const Row& a, const Row& b) {
    if (a.keys[k] != b.keys[k]) {
      return a.keys[k] > b.keys[k];
    }
    return a.tie < b.tie;
  });
}

// Columns a text takes: its UTF-8 code points (escaped text has no control bytes).
std::size_t columns_of(const std::string& text) {
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0U) != 0x80U;
  }));
}

std::string cell_text(const std::string& cell, const Column& c, bool bounded) {
  if (!bounded || c.width == 0) {
    return cell;
  }
  if (c.title == "LOCAL" || c.title == "DESTINATION") {
    return elide_endpoint(cell, c.width);  // keeps the port
  }
  return cell;
}

// One row as a line: each column padded to its width (right-aligned numbers), cut to its width
// on a screen. In a plain print a long cell pushes the rest of the line along, never cut.
std::string row_line(const std::vector<std::string>& cells, const std::vector<Column>& columns,
                     bool bounded) {
  std::string line;
  for (std::size_t i = 0; i < columns.size() && i < cells.size(); ++i) {
    const Column& c = columns[i];
    std::string cell = cell_text(cells[i], c, bounded);
    if (c.width > 0) {
      const std::size_t length = columns_of(cell);
      const std::size_t shown = bounded ? c.width : std::max(c.width, length);
      if (c.right && length < shown) {
        cell = std::string(shown - length, ' ') + cell;
      } else {
        cell = fit_columns(cell, shown);
      }
    }
    if (i > 0) {
      line += ' ';
    }
    line += cell;
  }
  while (!line.empty() && line.back() == ' ') {
    line.pop_back();
  }
  return line;
}

std::vector<std::string> header_cells(const Table& t) {
  std::vector<std::string> cells;
  cells.reserve(t.columns.size());
  for (const Column& c : t.columns) {
    cells.emplace_back(c.title);
  }
  return cells;
}

}  // namespace

std::string fit_columns(const std::string& text, std::size_t width) {
  if (width == 0) {
    return text;
  }
  std::string out;
  std::size_t columns = 0;
  for (const char c : text) {
    const bool starts = (static_cast<unsigned char>(c) & 0xC0U) != 0x80U;  // not a continuation
    if (starts && columns == width) {
      break;
    }
    columns += starts ? 1 : 0;
    out += c;
  }
  out.append(width - columns, ' ');
  return out;
}

bool TopView::key(int ch) {
  const auto focus_on = [this](TopSection s, std::size_t sort) {
    focus_ = s;
    sort_[static_cast<std::size_t>(s)] = sort;
  };
  const auto step_focus = [this](int by) {
    const auto n = static_cast<int>(kTopSections);
    focus_ = static_cast<TopSection>((static_cast<int>(focus_) + by + n) % n);
  };
  switch (ch) {
    case 'q':
    case 'Q':
      return false;
    case '\t':
    case kKeyDown:
    case kKeyRight:
      step_focus(1);
      break;
    case kKeyBackTab:
    case kKeyUp:
    case kKeyLeft:
      step_focus(-1);
      break;
    case 's': {
      // Every table has at least two sort columns; the count is the table's (render() knows).
      constexpr std::array<std::size_t, kTopSections> kSorts = {6, 4, 2, 4, 3};
      auto& sort = sort_[static_cast<std::size_t>(focus_)];
      sort = (sort + 1) % kSorts[static_cast<std::size_t>(focus_)];
      break;
    }
    case 't':
      focus_on(TopSection::kNamespaces, 0);
      break;
    case 'l':
      focus_on(TopSection::kListeners, 0);
      break;
    case 'p':
      focus_on(TopSection::kPorts, 0);
      break;
    case 'u':
      focus_on(TopSection::kDestinations, 0);
      break;
    case 'f':
      focus_on(TopSection::kFailures, 0);
      break;
    default:
      break;
  }
  return true;
}

std::string TopView::sort_name() const {
  static constexpr std::array<std::array<std::string_view, 6>, kTopSections> kNames = {{
      {"TIME_WAIT", "TCP", "ESTAB", "CLOSE_WAIT", "UTIL%", "NETNS"},
      {"FILL%", "QUEUE", "LOCAL", "NETNS"},
      {"TIME_WAIT", "PORT"},
      {"UTIL%", "IN_USE", "TIME_WAIT", "DESTINATION"},
      {"RATE/S", "TOTAL", "CAUSE"},
  }};
  const auto s = static_cast<std::size_t>(focus_);
  return std::string(kNames[s][sort_[s]]);
}

std::vector<TopLine> TopView::render(const json& frame, const json* previous, std::size_t width,
                                     std::size_t height) const {
  const bool bounded = height > 0;
  const auto rates = failure_rates(frame, previous);
  const bool have_rates = previous != nullptr && !rates.empty();
  std::array<Table, kTopSections> tables = {namespaces_table(frame), listeners_table(frame),
                                            ports_table(frame), destinations_table(frame),
                                            failures_table(frame, rates, previous != nullptr)};
  for (std::size_t i = 0; i < kTopSections; ++i) {
    sort_rows(tables[i], sort_[i]);
  }

  std::vector<TopLine> head;
  std::string title = "portlens top";
  if (frame.contains("source") && frame["source"].is_string()) {
    title += "  source: " + escape_for_terminal(frame["source"].get<std::string>());
  }
  if (frame.contains("time_ms") && frame["time_ms"].is_number()) {
    title += "  " + format_clock_time(frame["time_ms"].get<std::int64_t>() * 1'000'000, false);
  }
  head.push_back({title, TopLine::Style::kStatus});
  double failures_per_s = 0;
  for (const auto& [key, rate] : rates) {
    failures_per_s += rate;
  }
  double max_utilization = 0;
  for (const json& ns : list(frame, "namespaces")) {
    max_utilization = std::max(max_utilization, number(ns, "max_utilization"));
  }
  const json totals = frame.value("totals", json::object());
  std::string summary =
      fmt::format("namespaces {}  tcp {}  TIME_WAIT {}  listeners {}  failures {}  max util {}%",
                  total_of(frame, "namespaces"), count(totals, "tcp"), count(totals, "time_wait"),
                  count(totals, "listeners"),
                  have_rates || previous != nullptr ? fmt::format("{:.1f}/s", failures_per_s)
                                                    : std::string("-/s"),
                  percent(max_utilization));
  if (count(frame, "events_lost") > 0) {
    summary += fmt::format("  events lost {}", count(frame, "events_lost"));
  }
  head.push_back({summary, TopLine::Style::kPlain});
  for (const json& note : list(frame, "notes")) {
    if (note.is_string()) {
      head.push_back(
          {"note: " + escape_for_terminal(note.get<std::string>()), TopLine::Style::kStatus});
    }
  }

  // Rows per table. A plain print shows up to kTopPlainRows of each. A screen gives each table
  // with rows one row first, then the focused table what it needs, then the others in order.
  std::array<std::size_t, kTopSections> shown{};
  const auto focus = static_cast<std::size_t>(focus_);
  if (!bounded) {
    for (std::size_t i = 0; i < kTopSections; ++i) {
      shown[i] = std::min(tables[i].rows.size(), kTopPlainRows);
    }
  } else {
    std::size_t fixed = head.size() + 1;  // the key help at the bottom
    for (const Table& t : tables) {
      fixed += t.rows.empty() ? 1 : 2;  // the title, and the column header when there are rows
    }
    std::size_t budget = height > fixed ? height - fixed : 0;
    const auto give = [&](std::size_t i, std::size_t want) {
      const std::size_t n = std::min({want, budget, tables[i].rows.size() - shown[i]});
      shown[i] += n;
      budget -= n;
    };
    for (std::size_t k = 0; k < kTopSections; ++k) {
      give((focus + k) % kTopSections, 1);
    }
    give(focus, tables[focus].rows.size());
    for (std::size_t k = 1; k < kTopSections; ++k) {
      give((focus + k) % kTopSections, tables[(focus + k) % kTopSections].rows.size());
    }
  }

  std::vector<TopLine> lines = std::move(head);
  for (std::size_t i = 0; i < kTopSections; ++i) {
    const Table& t = tables[i];
    const bool focused = bounded && i == focus;
    std::string heading = std::string(focused ? "> " : "") + std::string(t.title);
    if (t.rows.empty()) {
      heading += ": none";
    } else {
      heading += fmt::format(" ({}", t.total);
      if (shown[i] < t.total) {
        heading += fmt::format(", {} shown", shown[i]);
      }
      heading += "), by " + std::string(t.sorts[std::min(sort_[i], t.sorts.size() - 1)]);
    }
    lines.push_back({heading, focused ? TopLine::Style::kFocusedTitle : TopLine::Style::kTitle});
    if (t.rows.empty()) {
      continue;
    }
    lines.push_back({row_line(header_cells(t), t.columns, bounded), TopLine::Style::kHeader});
    for (std::size_t r = 0; r < shown[i]; ++r) {
      lines.push_back({row_line(t.rows[r].cells, t.columns, bounded), TopLine::Style::kPlain});
    }
  }
  if (bounded) {
    lines.push_back({"q quit  Tab next  s sort (" + sort_name() +
                         ")  t TIME_WAIT  l queues  p ports  u util  f failures",
                     TopLine::Style::kStatus});
    if (lines.size() > height) {
      lines.resize(height);
    }
  }
  if (width > 0) {
    for (TopLine& line : lines) {
      line.text = fit_columns(line.text, width);
    }
  }
  return lines;
}

}  // namespace portlens
