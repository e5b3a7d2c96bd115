// End to end with a real Prometheus: the agent runs, Debian's prometheus server scrapes it every
// second over loopback with portlens's alert rules loaded, a scenario in a private netns makes
// TIME_WAIT, bind failures and an ephemeral-port exhaustion, and then every panel query of every
// dashboard and every alert expression is evaluated through the Prometheus HTTP API.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/kernel/agent_runner.hpp"
#include "tests/kernel/harness.hpp"
#include "tests/kernel/process.hpp"
#include "tests/support/loopback_http.hpp"
#include "tests/unit/http/http_test_support.hpp"

namespace portlens::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

const std::filesystem::path kSourceDir = PORTLENS_SOURCE_DIR;
const std::filesystem::path kRulesFile = kSourceDir / "dashboards/alerts/portlens.rules.yml";
constexpr const char* kPrometheus = "/usr/bin/prometheus";

std::string url_encode(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((std::isalnum(u) != 0) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4U];
      out += kHex[u & 0xFU];
    }
  }
  return out;
}

// A Prometheus server on a free loopback port, scraping the agent as job "portlens" every
// second and evaluating the project's rules every second; its data lives in a temp dir. The
// target carries cluster="e2e", as a multi-cluster setup's would, for the dashboard's cluster
// variable and the rules' cluster label.
class PrometheusServer {
 public:
  // scrape_extra: more settings of the scrape job (scheme, tls_config, basic_auth), indented as
  // its keys.
  explicit PrometheusServer(std::uint16_t agent_port, const std::string& scrape_extra = "")
      : dir_(std::filesystem::temp_directory_path() /
             ("portlens-prometheus-" + std::to_string(getpid()))),
        port_(free_port()) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "prometheus.yml")
        << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "rule_files:\n  - " << kRulesFile.string() << "\n"
        << "scrape_configs:\n  - job_name: portlens\n"
        << scrape_extra << "    static_configs:\n"
        << "      - targets: ['127.0.0.1:" << agent_port << "']\n"
        << "        labels: {cluster: e2e}\n";
    process_ = std::make_unique<Process>(std::vector<std::string>{
        kPrometheus, "--config.file=" + (dir_ / "prometheus.yml").string(),
        "--storage.tsdb.path=" + (dir_ / "data").string(),
        "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"});
  }
  ~PrometheusServer() {
    process_.reset();  // SIGKILL if it has not exited; reaped either way
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  PrometheusServer(const PrometheusServer&) = delete;
  PrometheusServer& operator=(const PrometheusServer&) = delete;
  PrometheusServer(PrometheusServer&&) = delete;
  PrometheusServer& operator=(PrometheusServer&&) = delete;

  bool ready() {
    return eventually(
        [this] { return http_get(port_, "/-/ready").find("Ready") != std::string::npos; }, 30s);
  }
  // GET /api/v1/<endpoint>?<params>, parsed; a discarded value when the answer is not JSON.
  [[nodiscard]] json api(
      const std::string& endpoint,
      const std::vector<std::pair<std::string, std::string>>& params = {}) const {
    std::string path = "/api/v1/" + endpoint;
    char sep = '?';
    for (const auto& [key, value] : params) {
      path += sep + url_encode(key) + "=" + url_encode(value);
      sep = '&';
    }
    return json::parse(http_get(port_, path), nullptr, false);
  }
  int stop() {
    process_->signal(SIGTERM);
    return process_->wait(10s);
  }
  Process& process() { return *process_; }

 private:
  std::filesystem::path dir_;
  std::uint16_t port_;
  std::unique_ptr<Process> process_;
};

// One query of one dashboard panel, as Grafana would send it.
struct PanelQuery {
  std::string where;  // "dashboard / panel (refId)"
  std::string expr;
  bool instant = false;
};

void collect_panels(const json& panels, const std::string& dashboard,
                    std::vector<PanelQuery>& out) {
  for (const json& panel : panels) {
    if (panel.contains("panels")) {  // a collapsed row keeps its panels inside
      collect_panels(panel["panels"], dashboard, out);
    }
    for (const json& target : panel.value("targets", json::array())) {
      if (!target.contains("expr")) {
        continue;
      }
      out.push_back(
          {dashboard + " / " + panel.value("title", "?") + " (" + target.value("refId", "?") + ")",
           target["expr"].get<std::string>(),
           target.value("instant", false) || target.value("format", "") == "table"});
    }
  }
}

struct Dashboards {
  std::vector<PanelQuery> queries;
  std::vector<std::pair<std::string, std::string>> variables;  // (name, label_values query)
};

Dashboards load_dashboards() {
  Dashboards out;
  for (const auto& file : std::filesystem::directory_iterator(kSourceDir / "dashboards")) {
    if (file.path().extension() != ".json") {
      continue;
    }
    const json dashboard = json::parse(std::ifstream(file.path()));
    const std::string title = dashboard.value("title", file.path().filename().string());
    collect_panels(dashboard["panels"], title, out.queries);
    for (const json& variable : dashboard["templating"]["list"]) {
      if (variable.value("type", "") == "query") {
        const json& query = variable["query"];
        out.variables.emplace_back(
            variable["name"].get<std::string>(),
            query.is_string() ? query.get<std::string>() : query.value("query", std::string()));
      }
    }
  }
  return out;
}

// Grafana's substitutions: the template variables as this test's single agent sets them, and
// the built-in intervals for a dashboard showing the last few minutes at a 1 s scrape interval.
std::string substitute(std::string expr, const std::map<std::string, std::string>& values) {
  for (const auto& [name, value] : values) {
    for (const std::string& form : {"${" + name + "}", "$" + name}) {
      for (std::size_t at = expr.find(form); at != std::string::npos;
           at = expr.find(form, at + value.size())) {
        expr.replace(at, form.size(), value);
      }
    }
  }
  return expr;
}

// Keeps making the scenario's failures once a second, so that rate() and increase() over the
// last scrapes see them grow: a connect() toward the exhausted destination (EADDRNOTAVAIL) and a
// bind() on a port a live listener holds (EADDRINUSE, port_in_use).
struct ScenarioFailures {
  int connects_refused = 0;
  int binds_refused = 0;
};
ScenarioFailures repeat_failures(const NetnsSandbox& ns, std::uint16_t exhausted_port,
                                 std::uint16_t listener_port, int rounds) {
  return ns.run([&] {
    ScenarioFailures f;
    TestSocket listener(AF_INET, SOCK_STREAM);
    listener.bind("127.0.0.1", listener_port);
    listener.listen();
    for (int i = 0; i < rounds; ++i) {
      TestSocket client(AF_INET, SOCK_STREAM);
      f.connects_refused += client.connect("127.0.0.1", exhausted_port) == EADDRNOTAVAIL ? 1 : 0;
      TestSocket second(AF_INET, SOCK_STREAM);
      f.binds_refused += second.bind("127.0.0.1", listener_port) == EADDRINUSE ? 1 : 0;
      std::this_thread::sleep_for(1s);
    }
    return f;
  });
}

using PrometheusEndToEndTest = KernelTest;

TEST_F(PrometheusEndToEndTest, EveryPanelAndAlertEvaluatesAgainstARealScenario) {
  ASSERT_TRUE(std::filesystem::exists(kPrometheus))
      << kPrometheus << " missing: run scripts/install-deps.sh (Debian package prometheus)";
  const Dashboards dashboards = load_dashboards();
  ASSERT_FALSE(dashboards.queries.empty()) << "no dashboard queries under dashboards/";

  // Ten ephemeral ports and no TIME_WAIT reuse: ten TIME_WAITs toward one destination use
  // them all up, so connect() toward it fails while another destination still works.
  ns().sysctl("net.ipv4.ip_local_port_range", "40000 40009");
  ns().sysctl("net.ipv4.tcp_tw_reuse", "0");
  PORTLENS_START_AGENT(agent);
  PrometheusServer prometheus(agent.port());
  ASSERT_TRUE(prometheus.ready()) << prometheus.process().err();
  // Target discovery hands the first targets to the scrape loop a few seconds after start;
  // the scenario starts once the agent has been scraped, so Prometheus sees every failure.
  ASSERT_TRUE(eventually([&] {
    const json r = prometheus.api("query", {{"query", "up{job=\"portlens\"} == 1"}});
    return r.value("status", "") == "success" && !r["data"]["result"].empty();
  })) << prometheus.process().err();

  constexpr std::uint16_t kExhausted = 7600;
  constexpr std::uint16_t kListener = 7601;
  make_time_waits(ns(), kExhausted, 10);
  ASSERT_EQ(ss_count_time_wait(ns()), "10");
  // One connection its peer closed and this process keeps open: a CLOSE_WAIT for the CLOSE_WAIT
  // panels, held until the test ends.
  struct HeldCloseWait {
    std::unique_ptr<TestSocket> listener;
    int accepted = -1;
    ~HeldCloseWait() {
      if (accepted >= 0) {
        ::close(accepted);
      }
    }
  };
  const std::unique_ptr<HeldCloseWait> close_wait = ns().run([] {
    auto h = std::make_unique<HeldCloseWait>();
    h->listener = std::make_unique<TestSocket>(AF_INET, SOCK_STREAM);
    if (h->listener->bind("127.0.0.1", 7602) == 0 && h->listener->listen() == 0) {
      TestSocket client(AF_INET, SOCK_STREAM);
      if (client.connect("127.0.0.1", 7602) == 0) {
        h->accepted = h->listener->accept_one();
      }
    }  // the client closes here: its FIN puts the accepted socket in CLOSE_WAIT
    return h;
  });
  ASSERT_GE(close_wait->accepted, 0);
  const ScenarioFailures failures = repeat_failures(ns(), kExhausted, kListener, 8);
  ASSERT_EQ(failures.connects_refused, 8);
  ASSERT_EQ(failures.binds_refused, 8);

  const std::string netns = std::to_string(ns().inode());
  const std::string instance = "127.0.0.1:" + std::to_string(agent.port());
  // Prometheus has scraped the scenario once it has the last failure.
  ASSERT_TRUE(eventually([&] {
    const json r = prometheus.api(
        "query",
        {{"query", "portlens_bind_failures_total{job=\"portlens\",cause=\"port_in_use\"}"}});
    return r.value("status", "") == "success" && !r["data"]["result"].empty() &&
           std::stod(r["data"]["result"][0]["value"][1].get<std::string>()) >= 8;
  })) << prometheus.process().err();

  // The template variables resolve to this agent, as Grafana's label_values() would.
  std::map<std::string, std::string> values = {{"__rate_interval", "10s"}, {"__interval", "1s"},
                                               {"__range", "5m"},          {"cluster", "e2e"},
                                               {"job", "portlens"},        {"instance", instance}};
  const std::regex label_values(R"(^\s*label_values\((.*),\s*(\w+)\)\s*$)");
  for (const auto& [name, query] : dashboards.variables) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(query, m, label_values)) << name << ": " << query;
    const json r = prometheus.api("label/" + m[2].str() + "/values",
                                  {{"match[]", substitute(m[1].str(), values)}});
    ASSERT_EQ(r.value("status", ""), "success") << name << ": " << r.dump();
    const auto& got = r["data"];
    EXPECT_TRUE(std::find(got.begin(), got.end(), json(values[name])) != got.end())
        << "variable " << name << " does not offer " << values[name] << ": " << got.dump();
  }

  // Every panel query parses and returns data for this scenario.
  const auto end = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  for (const PanelQuery& q : dashboards.queries) {
    const std::string expr = substitute(q.expr, values);
    ASSERT_EQ(expr.find('$'), std::string::npos) << q.where << ": unsubstituted variable: " << expr;
    const json r = q.instant ? prometheus.api("query", {{"query", expr}})
                             : prometheus.api("query_range", {{"query", expr},
                                                              {"start", std::to_string(end - 60)},
                                                              {"end", std::to_string(end)},
                                                              {"step", "1"}});
    ASSERT_EQ(r.value("status", ""), "success") << q.where << ": " << expr << "\n" << r.dump();
    EXPECT_FALSE(r["data"]["result"].empty()) << q.where << " returns no data: " << expr;
  }

  // Every rule loaded, evaluated without error, and its expression parses on its own.
  const std::string rules_text = [] {
    std::stringstream s;
    s << std::ifstream(kRulesFile).rdbuf();
    return s.str();
  }();
  const std::regex alert_line(R"((^|\n)\s*- alert:)");
  const auto alerts_in_file = static_cast<std::size_t>(
      std::distance(std::sregex_iterator(rules_text.begin(), rules_text.end(), alert_line),
                    std::sregex_iterator()));
  ASSERT_GT(alerts_in_file, 0U);
  json groups;
  ASSERT_TRUE(eventually([&] {
    groups = prometheus.api("rules")["data"]["groups"];
    for (const json& group : groups) {
      for (const json& rule : group["rules"]) {
        if (rule.value("health", "") != "ok") {
          return false;
        }
      }
    }
    return !groups.empty();
  })) << groups.dump(1);
  std::size_t alerts_loaded = 0;
  for (const json& group : groups) {
    for (const json& rule : group["rules"]) {
      alerts_loaded += rule.value("type", "") == "alerting" ? 1 : 0;
      const json r = prometheus.api("query", {{"query", rule["query"].get<std::string>()}});
      EXPECT_EQ(r.value("status", ""), "success") << rule.value("name", "") << ": " << r.dump();
    }
  }
  EXPECT_EQ(alerts_loaded, alerts_in_file);
  std::cout << "evaluated " << dashboards.queries.size() << " panel queries, "
            << dashboards.variables.size() << " variables and " << alerts_loaded
            << " alert expressions\n";

  // The scenario's alerts are active: utilization 1.0 toward the exhausted destination (both
  // severities, pending until their `for`), and connect() failing for lack of ports. The agent
  // is up, so the alerts about it are not.
  std::map<std::string, std::set<std::string>> active;  // alertname -> severities
  ASSERT_TRUE(eventually([&] {
    active.clear();
    const json alerts = prometheus.api("alerts");
    for (const json& alert : alerts["data"]["alerts"]) {
      const json& labels = alert["labels"];
      if (labels.value("netns", netns) == netns &&
          labels.value("remote_port", std::to_string(kExhausted)) == std::to_string(kExhausted)) {
        active[labels.value("alertname", "")].insert(labels.value("severity", ""));
      }
    }
    return active["PortlensEphemeralPortUtilizationHigh"].size() == 2 &&
           active.contains("PortlensEphemeralPortsExhausted") &&
           active.contains("PortlensBindFailuresSustained");
  })) << prometheus.api("alerts").dump(1);
  EXPECT_FALSE(active.contains("PortlensAgentDown"));
  EXPECT_FALSE(active.contains("PortlensAgentAbsent"));
  EXPECT_FALSE(active.contains("PortlensEventsLost"));

  EXPECT_EQ(prometheus.stop(), 0) << prometheus.process().err();
  EXPECT_EQ(agent.stop(), 0);
}

// The agent behind TLS with a required client certificate and basic auth, as a production
// --web.config.file sets it up, and Prometheus scraping it with the matching tls_config and
// basic_auth: the scrape succeeds and carries the agent's series. The agent itself refuses a
// wrong password (401), no password (401), and a client without a certificate (no TLS session).
TEST_F(PrometheusEndToEndTest, ScrapesTheAgentOverHttpsWithBasicAuthAndAClientCertificate) {
  ASSERT_TRUE(std::filesystem::exists(kPrometheus))
      << kPrometheus << " missing: run scripts/install-deps.sh (Debian package prometheus)";
  ASSERT_TRUE(http::testing::have_command("htpasswd")) << "run scripts/install-deps.sh";
  const http::testing::TempDir dir;
  const http::testing::TestPki pki(dir.path());
  const std::string config = dir.write(
      "web-config.yml", "tls_server_config:\n  cert_file: " + pki.file("server.pem") +
                            "\n  key_file: " + pki.file("server.key") +
                            "\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: " +
                            pki.file("ca.pem") + "\nbasic_auth_users:\n  prometheus: " +
                            http::testing::bcrypt_hash("scrape-secret") + "\n");
  PORTLENS_START_AGENT(agent, {"--web.config.file", config});
  const std::string url = "https://127.0.0.1:" + std::to_string(agent.port()) + "/metrics";
  const std::string tls = "--cacert " + pki.file("ca.pem") + " --cert " + pki.file("client.pem") +
                          " --key " + pki.file("client.key") + " ";
  const auto status = [](const std::string& args) {
    return run_command("curl -s -o /dev/null -w '%{http_code}' --max-time 5 " + args + " 2>&1")
        .output;
  };
  EXPECT_EQ(status(tls + "-u prometheus:scrape-secret " + url), "200");
  EXPECT_EQ(status(tls + "-u prometheus:wrong " + url), "401");
  EXPECT_EQ(status(tls + url), "401") << "no credentials";
  // Without a client certificate the TLS handshake fails: no HTTP status at all.
  EXPECT_EQ(status("--cacert " + pki.file("ca.pem") + " -u prometheus:scrape-secret " + url),
            "000");
  // A client certificate from another CA is refused the same way.
  EXPECT_EQ(status("--cacert " + pki.file("ca.pem") + " --cert " + pki.file("stranger.pem") +
                   " --key " + pki.file("stranger.key") + " -u prometheus:scrape-secret " + url),
            "000");

  PrometheusServer prometheus(
      agent.port(), "    scheme: https\n    tls_config:\n      ca_file: " + pki.file("ca.pem") +
                        "\n      cert_file: " + pki.file("client.pem") +
                        "\n      key_file: " + pki.file("client.key") +
                        "\n    basic_auth:\n      username: prometheus\n"
                        "      password: scrape-secret\n");
  ASSERT_TRUE(prometheus.ready()) << prometheus.process().err();
  json result;
  ASSERT_TRUE(eventually(
      [&] {
        const json r = prometheus.api(
            "query", {{"query", "portlens_build_info{job=\"portlens\"} * on (instance) up"}});
        if (r.value("status", "") != "success" || r["data"]["result"].empty()) {
          return false;
        }
        result = r["data"]["result"][0];
        return true;
      },
      30s))
      << prometheus.api("targets").dump(1);
  // up is 1 (the product with build_info's 1), and the series came over HTTPS from this agent.
  EXPECT_EQ(result["value"][1], "1") << result.dump();
  EXPECT_EQ(result["metric"].value("instance", ""), "127.0.0.1:" + std::to_string(agent.port()));
  const json targets = prometheus.api("targets")["data"]["activeTargets"];
  ASSERT_EQ(targets.size(), 1U) << targets.dump(1);
  EXPECT_EQ(targets[0].value("scrapeUrl", ""), url);
  EXPECT_EQ(targets[0].value("health", ""), "up") << targets[0].value("lastError", "");
  EXPECT_EQ(prometheus.stop(), 0) << prometheus.process().err();
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace portlens::testing
