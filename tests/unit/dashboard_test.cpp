// The Grafana dashboard dashboards/portlens-overview.json (rendered from dashboards/mixin),
// checked for structure: provisioning without import placeholders, the cluster/job/instance
// variables, the panel types, grid and rows, and
// queries that filter by cluster, job and instance, use Grafana's intervals and name only the
// metric families the agent exports. Whether the queries run is the end-to-end test's part.
#include <algorithm>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "exporters/collector.hpp"
#include "exporters/scrape_input.hpp"

namespace portlens {
namespace {

using nlohmann::json;

// Every family the collector exports, whatever the input: the names a dashboard query may
// refer to, read from the collector itself so that the two cannot drift apart.
std::set<std::string> exported_families() {
  std::set<std::string> names;
  // The families that exist only with something to report: the process's readings, a program.
  ScrapeInput input;
  input.process = ProcessStats{};
  input.bpf_programs = {BpfProgramStats{"sys_exit_bind", 0, 0}};
  for (const auto& family : PortlensCollector::build(input, 20)) {
    names.insert(family.name);
  }
  return names;
}
const std::set<std::string> kExportedFamilies = exported_families();

// The variables the end-to-end test substitutes before it runs every query.
const std::set<std::string> kAllowedVariables = {"cluster",         "job",     "instance",
                                                 "__rate_interval", "__range", "__interval"};

const json kDatasource = {{"type", "prometheus"}, {"uid", "${datasource}"}};
const std::string kFilter = R"({cluster=~"$cluster", job=~"$job", instance=~"$instance")";
// The agent's own families, and the standard process_* ones it exports beside them.
const std::regex kPortlensMetric(R"(\b(portlens|process)_[a-z_]+)");

std::string dashboard_text() {
  const std::string path = std::string(PORTLENS_SOURCE_DIR) + "/dashboards/portlens-overview.json";
  std::ifstream in(path);
  if (!in) {
    throw std::runtime_error("cannot read " + path);
  }
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

const json& dashboard() {
  static const json parsed = json::parse(dashboard_text());
  return parsed;
}

std::vector<json> panels() { return dashboard().at("panels").get<std::vector<json>>(); }

std::vector<json> graph_panels() {
  std::vector<json> out;
  std::ranges::copy_if(panels(), std::back_inserter(out),
                       [](const json& p) { return p.at("type") != "row"; });
  return out;
}

std::vector<std::string> matches(const std::string& text, const std::regex& re, int group = 0) {
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
       ++it) {
    out.push_back((*it)[group].str());
  }
  return out;
}

const json& variable(const std::string& name) {
  for (const json& v : dashboard().at("templating").at("list")) {
    if (v.at("name") == name) {
      return v;
    }
  }
  throw std::runtime_error("no variable " + name);
}

// Grafana stores a Prometheus variable query as a string, or as an object once re-saved.
std::string variable_query(const json& v) {
  const json& q = v.at("query");
  return q.is_string() ? q.get<std::string>() : q.at("query").get<std::string>();
}

// The portlens metric families a panel's queries read.
std::set<std::string> metrics_of(const json& panel) {
  std::set<std::string> out;
  for (const json& t : panel.at("targets")) {
    for (const std::string& name : matches(t.at("expr"), kPortlensMetric)) {
      out.insert(name);
    }
  }
  return out;
}

bool reads_only(const json& panel, const std::string& suffix) {
  const auto names = metrics_of(panel);
  return !names.empty() &&
         std::ranges::all_of(names, [&](const std::string& n) { return n.ends_with(suffix); });
}

TEST(DashboardTest, HasTheFixedIdentityAndSettings) {
  const json& d = dashboard();
  EXPECT_EQ(d.at("schemaVersion"), 39);
  EXPECT_EQ(d.at("uid"), "portlens-overview");
  EXPECT_EQ(d.at("title"), "portlens / Ports and TIME_WAIT");
  EXPECT_EQ(d.at("tags"), json::array({"portlens"}));
  EXPECT_EQ(d.at("editable"), true);
  EXPECT_EQ(d.at("graphTooltip"), 1);
  EXPECT_EQ(d.at("refresh"), "30s");
  EXPECT_EQ(d.at("time"), json({{"from", "now-1h"}, {"to", "now"}}));
}

TEST(DashboardTest, ProvisionsAsIsWithoutImportPlaceholders) {
  const std::string text = dashboard_text();
  EXPECT_FALSE(dashboard().contains("__inputs"));
  EXPECT_EQ(text.find("__inputs"), std::string::npos);
  EXPECT_EQ(text.find("${DS_"), std::string::npos);
}

TEST(DashboardTest, HasDatasourceClusterJobAndInstanceVariables) {
  const json& ds = variable("datasource");
  EXPECT_EQ(ds.at("type"), "datasource");
  EXPECT_EQ(ds.at("query"), "prometheus");

  // "All" is .*, which also matches series without a cluster label: a Prometheus that has none
  // shows every agent.
  const json& cluster = variable("cluster");
  EXPECT_EQ(cluster.at("type"), "query");
  EXPECT_EQ(cluster.at("datasource"), kDatasource);
  EXPECT_EQ(cluster.at("multi"), true);
  EXPECT_EQ(cluster.at("includeAll"), true);
  EXPECT_EQ(cluster.at("allValue"), ".*");
  EXPECT_EQ(variable_query(cluster), "label_values(portlens_build_info, cluster)");

  const json& job = variable("job");
  EXPECT_EQ(job.at("type"), "query");
  EXPECT_EQ(job.at("datasource"), kDatasource);
  EXPECT_EQ(job.at("multi"), true);
  EXPECT_EQ(job.at("includeAll"), true);
  EXPECT_EQ(variable_query(job), R"(label_values(portlens_build_info{cluster=~"$cluster"}, job))");

  const json& instance = variable("instance");
  EXPECT_EQ(instance.at("type"), "query");
  EXPECT_EQ(instance.at("datasource"), kDatasource);
  EXPECT_EQ(variable_query(instance),
            R"(label_values(portlens_build_info{cluster=~"$cluster", job=~"$job"}, instance))");
}

TEST(DashboardTest, UsesOnlyTimeseriesStatTableAndRowPanels) {
  const std::set<std::string> allowed = {"row", "timeseries", "stat", "table"};
  for (const json& p : panels()) {
    EXPECT_TRUE(allowed.contains(p.at("type").get<std::string>())) << p.at("title");
  }
}

TEST(DashboardTest, EveryPanelIsDescribedAndQueriesTheDatasourceVariable) {
  for (const json& p : graph_panels()) {
    SCOPED_TRACE(p.at("title").get<std::string>());
    EXPECT_FALSE(p.value("description", "").empty());
    EXPECT_EQ(p.at("datasource"), kDatasource);
    ASSERT_FALSE(p.at("targets").empty());
    std::set<std::string> ref_ids;
    for (const json& t : p.at("targets")) {
      EXPECT_EQ(t.at("datasource"), kDatasource);
      EXPECT_FALSE(t.at("expr").get<std::string>().empty());
      EXPECT_TRUE(ref_ids.insert(t.at("refId").get<std::string>()).second);
      if (t.value("format", "time_series") != "table") {
        EXPECT_FALSE(t.value("legendFormat", "").empty() || t.at("legendFormat") == "__auto")
            << "a graph's series need a legend: " << t.at("expr");
      }
    }
  }
}

TEST(DashboardTest, EveryQueryFiltersByClusterJobAndInstance) {
  const std::regex selector(R"(\b((portlens|process)_[a-z_]+|up)\b(\{[^}]*\})?)");
  for (const json& p : graph_panels()) {
    for (const json& t : p.at("targets")) {
      const std::string expr = t.at("expr");
      const auto selectors = matches(expr, selector);
      EXPECT_FALSE(selectors.empty()) << expr;
      for (const std::string& s : selectors) {
        EXPECT_NE(s.find(kFilter), std::string::npos) << s << " in " << expr;
      }
    }
  }
}

TEST(DashboardTest, QueriesUseOnlyTheSubstitutedVariables) {
  const std::regex variable_ref(R"(\$\{?(\w+))");
  for (const json& p : graph_panels()) {
    for (const json& t : p.at("targets")) {
      for (const std::string& name : matches(t.at("expr"), variable_ref, 1)) {
        EXPECT_TRUE(kAllowedVariables.contains(name)) << "$" << name << " in " << t.at("expr");
      }
    }
  }
}

// Graphs take rates over $__rate_interval; only a table's instant query may span the whole
// $__range. A fixed window such as [5m] is wrong at some zoom level, so none is allowed.
TEST(DashboardTest, RangeSelectorsUseGrafanaIntervals) {
  const std::regex range(R"(\[([^\]]*)\])");
  const std::regex counter_function(R"(\b(rate|irate|increase)\()");
  for (const json& p : graph_panels()) {
    for (const json& t : p.at("targets")) {
      const std::string expr = t.at("expr");
      const auto ranges = matches(expr, range, 1);
      EXPECT_EQ(ranges.size(), matches(expr, counter_function).size()) << expr;
      for (const std::string& r : ranges) {
        const bool whole_range_table = r == "$__range" && p.at("type") == "table";
        EXPECT_TRUE(r == "$__rate_interval" || whole_range_table) << "[" << r << "] in " << expr;
      }
    }
  }
}

TEST(DashboardTest, QueriesNameOnlyExportedMetricsAndCoverThemAll) {
  std::set<std::string> used;
  for (const json& p : graph_panels()) {
    for (const std::string& name : metrics_of(p)) {
      EXPECT_TRUE(kExportedFamilies.contains(name)) << name << " in " << p.at("title");
      used.insert(name);
    }
  }
  for (const char* var : {"cluster", "job", "instance"}) {
    for (const std::string& name : matches(variable_query(variable(var)), kPortlensMetric)) {
      EXPECT_TRUE(kExportedFamilies.contains(name)) << name << " in $" << var;
    }
  }
  // Every portlens family is on the dashboard; of the standard process_* families, what an
  // agent's health needs (memory and CPU), the rest being for generic process dashboards.
  std::set<std::string> shown;
  for (const std::string& name : kExportedFamilies) {
    if (name.starts_with("portlens_") || name == "process_resident_memory_bytes" ||
        name == "process_cpu_seconds_total") {
      shown.insert(name);
    }
  }
  EXPECT_EQ(used, shown);
}

TEST(DashboardTest, RatiosArePercentWithUtilizationThresholds) {
  const json thresholds = {{"mode", "absolute"},
                           {"steps",
                            {{{"color", "green"}, {"value", nullptr}},
                             {{"color", "orange"}, {"value", 0.8}},
                             {{"color", "red"}, {"value", 0.95}}}}};
  int ratio_panels = 0;
  for (const json& p : graph_panels()) {
    if (reads_only(p, "_ratio")) {
      ++ratio_panels;
      const json& defaults = p.at("fieldConfig").at("defaults");
      EXPECT_EQ(defaults.at("unit"), "percentunit") << p.at("title");
      EXPECT_EQ(defaults.at("thresholds"), thresholds) << p.at("title");
    }
  }
  EXPECT_GE(ratio_panels, 3);
}

TEST(DashboardTest, RatesAndDurationsHaveFittingUnits) {
  for (const json& p : graph_panels()) {
    const std::string unit = p.at("fieldConfig").at("defaults").at("unit");
    const bool all_rates = std::ranges::all_of(p.at("targets"), [](const json& t) {
      return t.at("expr").get<std::string>().find("rate(") != std::string::npos;
    });
    // A rate over a rate (time per run) is a mean, in the unit of what was summed.
    const bool all_means = std::ranges::all_of(p.at("targets"), [](const json& t) {
      const std::string expr = t.at("expr");
      return expr.find("rate(") != expr.rfind("rate(") && expr.find(" / sum") != std::string::npos;
    });
    if (all_rates && !all_means) {
      EXPECT_TRUE(unit == "short" || unit == "ops") << p.at("title") << ": " << unit;
    }
    if (all_means) {
      EXPECT_TRUE(unit == "ns" || unit == "s") << p.at("title") << ": " << unit;
    }
    if (reads_only(p, "_seconds")) {
      EXPECT_EQ(unit, "s") << p.at("title");
    }
  }
}

TEST(DashboardTest, PanelIdsAreUnique) {
  std::set<int> ids;
  for (const json& p : panels()) {
    EXPECT_TRUE(ids.insert(p.at("id").get<int>()).second) << "duplicate id " << p.at("id");
  }
}

TEST(DashboardTest, GridPositionsFitTheGridAndDoNotOverlap) {
  struct Box {
    int x, y, w, h;
    std::string title;
  };
  std::vector<Box> boxes;
  for (const json& p : panels()) {
    const json& g = p.at("gridPos");
    boxes.push_back({g.at("x"), g.at("y"), g.at("w"), g.at("h"), p.at("title")});
  }
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    const Box& a = boxes[i];
    EXPECT_TRUE(a.x >= 0 && a.y >= 0 && a.w > 0 && a.h > 0 && a.x + a.w <= 24) << a.title;
    for (std::size_t j = i + 1; j < boxes.size(); ++j) {
      const Box& b = boxes[j];
      const bool apart =
          a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y;
      EXPECT_TRUE(apart) << a.title << " overlaps " << b.title;
    }
  }
}

// Each row's panels follow it in the panel list and sit below it (the grid test keeps them
// above the next row, which spans the full width).
TEST(DashboardTest, HasTheFiveRowsInOrderEachAboveItsPanels) {
  std::vector<std::string> rows;
  int row_y = -1;
  for (const json& p : panels()) {
    const int y = p.at("gridPos").at("y");
    if (p.at("type") == "row") {
      EXPECT_EQ(p.at("collapsed"), false);
      EXPECT_GT(y, row_y);
      rows.push_back(p.at("title"));
      row_y = y;
    } else {
      EXPECT_FALSE(rows.empty()) << p.at("title") << " is above the first row";
      EXPECT_GT(y, row_y) << p.at("title") << " is not below its row " << rows.back();
    }
  }
  EXPECT_EQ(rows,
            (std::vector<std::string>{"Port exhaustion", "TIME_WAIT", "Failures",
                                      "TCP state transitions", "Accept queues", "Agent health"}));
}

}  // namespace
}  // namespace portlens
