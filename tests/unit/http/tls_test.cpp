// The server behind a web config, scraped the way Prometheus would be: curl (OpenSSL) against
// the server's GnuTLS, with certificates made for the test.
#include <memory>
#include <ostream>
#include <string>

#include <gtest/gtest.h>

#include "exporters/http/server.hpp"
#include "http_test_support.hpp"

namespace portlens::http {
namespace {

using testing::shell_quote;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (const auto* tool : {"openssl", "curl", "htpasswd"}) {
      ASSERT_TRUE(testing::have_command(tool)) << tool << " missing: run scripts/install-deps.sh";
    }
    dir_ = std::make_unique<testing::TempDir>();
    pki_ = std::make_unique<testing::TestPki>(dir_->path());
  }
  static void TearDownTestSuite() {
    pki_.reset();
    dir_.reset();
  }

  void serve(const std::string& config) {
    ServerOptions options;
    options.listen_addresses = {"127.0.0.1:0"};
    options.web_config_file = dir_->write("web.yml", config);
    server_ = std::make_unique<Server>(
        std::move(options),
        std::map<std::string, Handler, std::less<>>{{"/metrics", [](const Request&) {
                                                       Response response;
                                                       response.body = "portlens_up 1\n";
                                                       return response;
                                                     }}});
  }

  [[nodiscard]] std::string url(const std::string& path = "/metrics") const {
    return "https://" + server_->bound().at(0) + path;
  }

  // curl trusting the test CA, with the extra arguments given.
  static testing::CommandResult curl(const std::string& arguments) {
    return testing::run("curl -sS --max-time 5 --cacert " + shell_quote(pki_->file("ca.pem")) +
                        " " + arguments);
  }

  // The HTTP status, or 0 when no HTTP exchange happened (TLS refused the connection).
  static int status(const std::string& arguments) {
    const auto result = curl("-o /dev/null -w '%{http_code}' " + arguments);
    return result.exit_code == 0 ? std::stoi(result.output) : 0;
  }

  static std::string client_cert(const std::string& name) {
    return "--cert " + shell_quote(pki_->file(name + ".pem")) + " --key " +
           shell_quote(pki_->file(name + ".key"));
  }

  static std::string tls_config(const std::string& extra = "") {
    return "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n" + extra;
  }

  static std::unique_ptr<testing::TempDir> dir_;
  static std::unique_ptr<testing::TestPki> pki_;
  std::unique_ptr<Server> server_;
};

std::unique_ptr<testing::TempDir> TlsTest::dir_;
std::unique_ptr<testing::TestPki> TlsTest::pki_;

struct Policy {
  std::string client_auth_type;
  // The status with no client certificate, with one from the trusted CA, with one from another.
  int none;
  int trusted;
  int stranger;
};

void PrintTo(const Policy& policy, std::ostream* out) { *out << policy.client_auth_type; }

class ClientCertificates : public TlsTest, public ::testing::WithParamInterface<Policy> {};

TEST_P(ClientCertificates, FollowTheClientAuthType) {
  const auto& policy = GetParam();
  const bool with_ca = policy.client_auth_type != "NoClientCert";
  serve(tls_config("  client_auth_type: " + policy.client_auth_type + "\n" +
                   (with_ca ? "  client_ca_file: ca.pem\n" : "")));
  // TLS 1.3 refuses a client certificate after the client thinks the handshake done (curl sees
  // an empty reply); TLS 1.2 refuses it inside the handshake. Both must refuse.
  for (const std::string version : {"", "--tls-max 1.2 "}) {
    EXPECT_EQ(status(version + url()), policy.none) << version << "no client certificate";
    EXPECT_EQ(status(version + client_cert("client") + " " + url()), policy.trusted)
        << version << "trusted client";
    EXPECT_EQ(status(version + client_cert("stranger") + " " + url()), policy.stranger)
        << version << "other CA";
  }
}

// Go's crypto/tls semantics, which exporter-toolkit's names stand for.
INSTANTIATE_TEST_SUITE_P(AuthTypes, ClientCertificates,
                         ::testing::Values(Policy{"NoClientCert", 200, 200, 200},
                                           Policy{"RequestClientCert", 200, 200, 200},
                                           Policy{"RequireAnyClientCert", 0, 200, 200},
                                           Policy{"VerifyClientCertIfGiven", 200, 200, 0},
                                           Policy{"RequireAndVerifyClientCert", 0, 200, 0}),
                         [](const ::testing::TestParamInfo<Policy>& policy) {
                           return policy.param.client_auth_type;
                         });

TEST_F(TlsTest, RequireAnyClientCertWorksWithoutACa) {
  serve(tls_config("  client_auth_type: RequireAnyClientCert\n"));
  EXPECT_EQ(status(url()), 0);
  EXPECT_EQ(status(client_cert("stranger") + " " + url()), 200);
}

TEST_F(TlsTest, ServesOnlyTheConfiguredVersions) {
  serve(tls_config("  min_version: TLS13\n"));
  EXPECT_EQ(status(url()), 200);
  EXPECT_EQ(status("--tls-max 1.2 " + url()), 0);
  serve(tls_config("  max_version: TLS12\n"));
  EXPECT_EQ(status("--tls-max 1.2 " + url()), 200);
  EXPECT_EQ(status("--tlsv1.3 " + url()), 0);
}

TEST_F(TlsTest, RefusesPlainHttp) {
  serve(tls_config());
  EXPECT_EQ(status("http://" + server_->bound().at(0) + "/metrics"), 0);
  EXPECT_EQ(status(url()), 200) << "and serves TLS after that";
}

TEST_F(TlsTest, ChecksBasicAuthAndAddsTheHeaders) {
  serve(tls_config() + "basic_auth_users:\n  alice: " + testing::bcrypt_hash("s3cret:x") +
        "\n  bob: " + testing::bcrypt_hash("other") +
        "\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n");
  const auto ok = curl("-D - -u 'alice:s3cret:x' " + url());
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("HTTP/1.1 200"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("X-Frame-Options: deny\r\n"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("Strict-Transport-Security: max-age=31536000\r\n"), std::string::npos);
  EXPECT_NE(ok.output.find("portlens_up 1\n"), std::string::npos);

  const auto wrong = curl("-D - -u alice:other " + url());
  EXPECT_NE(wrong.output.find("HTTP/1.1 401"), std::string::npos) << wrong.output;
  EXPECT_NE(wrong.output.find("WWW-Authenticate: Basic\r\n"), std::string::npos) << wrong.output;
  EXPECT_NE(wrong.output.find("X-Frame-Options: deny\r\n"), std::string::npos) << wrong.output;
  EXPECT_EQ(wrong.output.find("portlens_up"), std::string::npos) << wrong.output;

  EXPECT_EQ(status(url()), 401) << "no credentials";
  EXPECT_EQ(status("-u carol:other " + url()), 401) << "unknown user";
  EXPECT_EQ(status("-u bob:other " + url()), 200);
  EXPECT_EQ(status("-u bob:other " + url("/nope")), 404);
  EXPECT_EQ(status(url("/nope")), 401) << "paths are not revealed without credentials";
  EXPECT_EQ(status("-u bob:other -I " + url()), 200) << "HEAD";
}

TEST(PlainHttpAuth, ChecksBasicAuthWithoutTls) {
  ASSERT_TRUE(testing::have_command("htpasswd")) << "install apache2-utils";
  const testing::TempDir dir;
  ServerOptions options;
  options.listen_addresses = {"127.0.0.1:0"};
  options.web_config_file =
      dir.write("web.yml", "basic_auth_users:\n  alice: " + testing::bcrypt_hash("secret") + "\n");
  const Server server(std::move(options),
                      {{"/metrics", [](const Request&) { return Response{}; }}});
  const auto at = server.bound().at(0);
  EXPECT_EQ(testing::get(at, "/metrics", {"Authorization: Basic YWxpY2U6c2VjcmV0"}).status, 200);
  const auto refused = testing::get(at, "/metrics", {"Authorization: Basic YWxpY2U6d3Jvbmc="});
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.header("WWW-Authenticate"), "Basic");
}

}  // namespace
}  // namespace portlens::http
