#include "exporters/http/web_config.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "http_test_support.hpp"

namespace portlens::http {
namespace {

class WebConfigTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(testing::have_command("openssl")) << "install openssl";
    dir_ = std::make_unique<testing::TempDir>();
    pki_ = std::make_unique<testing::TestPki>(dir_->path());
  }
  static void TearDownTestSuite() {
    pki_.reset();
    dir_.reset();
  }

  static std::string write(const std::string& text) { return dir_->write("web.yml", text); }

  // The one line load_web_config throws for text, which must name the file.
  static std::string refusal(const std::string& text) {
    const auto path = write(text);
    try {
      load_web_config(path);
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.rfind("web config " + path + ": ", 0), 0U) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
      return message.substr(("web config " + path + ": ").size());
    }
    ADD_FAILURE() << "accepted:\n" << text;
    return "";
  }

  static std::string tls_with(const std::string& extra) {
    return "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n" + extra;
  }

  static std::unique_ptr<testing::TempDir> dir_;
  static std::unique_ptr<testing::TestPki> pki_;
};

std::unique_ptr<testing::TempDir> WebConfigTest::dir_;
std::unique_ptr<testing::TestPki> WebConfigTest::pki_;

TEST_F(WebConfigTest, AnEmptyFileMeansPlainHttp) {
  const auto config = load_web_config(write(""));
  EXPECT_FALSE(config.tls);
  EXPECT_TRUE(config.basic_auth_users.empty());
  EXPECT_TRUE(config.headers.empty());
  EXPECT_FALSE(load_web_config(write("tls_server_config:\nbasic_auth_users:\n")).tls);
}

TEST_F(WebConfigTest, ReadsEverythingAndResolvesPathsAgainstTheFile) {
  const auto hash = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";
  // Relative names, read from the file's directory, wherever the process runs.
  const auto previous = std::filesystem::current_path();
  std::filesystem::current_path("/");
  const auto config = load_web_config(
      write(tls_with("  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
                     "  min_version: TLS13\n  prefer_server_cipher_suites: false\n"
                     "http_server_config:\n  http2: false\n  headers:\n"
                     "    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
                     "    Content-Security-Policy: \"\"\n"
                     "basic_auth_users:\n  alice: " +
                     std::string(hash) + "\n")));
  std::filesystem::current_path(previous);

  ASSERT_TRUE(config.tls);
  EXPECT_NE(config.tls->cert_pem.find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_NE(config.tls->key_pem.find("PRIVATE KEY"), std::string::npos);
  EXPECT_NE(config.tls->client_ca_pem.find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_EQ(config.tls->client_auth, ClientAuth::kRequireAndVerifyClientCert);
  EXPECT_EQ(config.tls->gnutls_priorities(), "NORMAL:-VERS-ALL:+VERS-TLS1.3");
  EXPECT_EQ(config.basic_auth_users.at("alice"), hash);
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"X-Frame-Options", "deny"}, {"X-Content-Type-Options", "nosniff"}};
  EXPECT_EQ(config.headers, headers) << "a blank header is unset";
}

TEST_F(WebConfigTest, TakesInlinePemAndOlderNames) {
  const auto read = [](const std::string& name) {
    std::ifstream in(pki_->file(name));
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const auto indent = [](const std::string& pem) {
    std::string out;
    for (const char c : pem) out += c == '\n' ? std::string("\n    ") : std::string(1, c);
    return out;
  };
  const auto config = load_web_config(write(
      "tls_server_config:\n  cert: |\n    " + indent(read("server.pem")) + "\n  key: |\n    " +
      indent(read("server.key")) + "\n  client_auth_type: RequireClientCert\n"));
  ASSERT_TRUE(config.tls);
  EXPECT_EQ(config.tls->client_auth, ClientAuth::kRequireAnyClientCert);
  EXPECT_EQ(config.tls->gnutls_priorities(),
            "NORMAL:-VERS-ALL:+VERS-TLS1.2:+VERS-TLS1.3:%SERVER_PRECEDENCE");
}

TEST_F(WebConfigTest, RefusesWithTheFileTheKeyAndTheProblem) {
  struct Case {
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"tls_server_config: [", "file: not valid YAML"},
      {"- a\n- b\n", "file: expected a mapping"},
      {"tls_config:\n  cert_file: x\n", "tls_config: unknown key (line 1)"},
      {"basic_auth_users:\nbasic_auth_users:\n", "basic_auth_users: given twice (line 2)"},
      {"rate_limit:\n  burst: 1\n", "rate_limit: not supported by portlens"},
      {tls_with("  cert_fil: x\n"), "tls_server_config.cert_fil: unknown key (line 4)"},
      {tls_with("  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
       "tls_server_config.cipher_suites: not supported by portlens"},
      {tls_with("  client_allowed_sans: [a]\n"),
       "tls_server_config.client_allowed_sans: not supported by portlens; give a client_ca_file"},
      {"tls_server_config:\n  key_file: server.key\n",
       "tls_server_config: cert_file (or cert) is missing"},
      {"tls_server_config:\n  cert_file: server.pem\n",
       "tls_server_config: key_file (or key) is missing"},
      {"tls_server_config:\n  cert_file: nope.pem\n  key_file: server.key\n",
       "tls_server_config.cert_file: cannot read " + pki_->file("nope.pem") +
           ": No such file or directory"},
      {"tls_server_config:\n  cert_file: server.pem\n  key_file: nope.key\n",
       "tls_server_config.key_file: cannot read " + pki_->file("nope.key")},
      {"tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n",
       "tls_server_config.cert_file: no PEM certificate in it"},
      {"tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n",
       "tls_server_config.key_file: not an unencrypted PEM private key"},
      {"tls_server_config:\n  cert_file: server.pem\n  key_file: client.key\n",
       "tls_server_config.key_file: the key does not match the certificate in cert_file"},
      {tls_with("  cert: x\n"), "tls_server_config: give cert or cert_file, not both"},
      {tls_with("  client_auth_type: Sometimes\n"),
       "tls_server_config.client_auth_type: unknown value \"Sometimes\"; expected NoClientCert"},
      {tls_with("  client_ca_file: ca.pem\n"),
       "tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert"},
      {tls_with("  client_ca_file: server.key\n  client_auth_type: RequestClientCert\n"),
       "tls_server_config.client_ca_file: no PEM certificate in it"},
      {tls_with("  client_auth_type: RequireAndVerifyClientCert\n"),
       "tls_server_config.client_auth_type: RequireAndVerifyClientCert verifies client "
       "certificates against client_ca_file, which is missing"},
      {tls_with("  min_version: TLS14\n"),
       "tls_server_config.min_version: unknown TLS version \"TLS14\""},
      {tls_with("  min_version: TLS13\n  max_version: TLS12\n"),
       "tls_server_config.min_version: above max_version"},
      {tls_with("  prefer_server_cipher_suites: maybe\n"),
       "tls_server_config.prefer_server_cipher_suites: expected true or false (line 4)"},
      {tls_with("  cert_file: [a]\n"), "tls_server_config.cert_file: given twice"},
      {"tls_server_config:\n  cert_file: [a]\n", "tls_server_config.cert_file: expected a string"},
      {"http_server_config:\n  headers:\n    Server: portlens\n",
       "http_server_config.headers.Server: this header cannot be configured"},
      {"http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
       "http_server_config.headers.X-Frame-Options: \"allow\" is not one of \"deny\", "
       "\"sameorigin\""},
      {"http_server_config:\n  headers:\n    X-XSS-Protection: \"1\\r\\nSet-Cookie: a\"\n",
       "http_server_config.headers.X-XSS-Protection: control characters are not allowed"},
      {"http_server_config:\n  http3: true\n", "http_server_config.http3: unknown key"},
      {"http_server_config:\n  http2: yes please\n", "http_server_config.http2: expected true"},
      {"basic_auth_users:\n  alice: secret\n", "basic_auth_users.alice: not a bcrypt hash"},
      {"basic_auth_users:\n  \"a:b\": "
       "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG\n",
       "basic_auth_users.a:b: a user name must be non-empty and without ':'"},
      {"basic_auth_users: [alice]\n", "basic_auth_users: expected a mapping"},
  };
  for (const auto& c : cases) {
    const auto message = refusal(c.text);
    EXPECT_NE(message.find(c.expected), std::string::npos)
        << "for:\n"
        << c.text << "\ngot:      " << message << "\nexpected: " << c.expected;
  }
}

TEST_F(WebConfigTest, RefusesAFileItCannotRead) {
  const auto missing = (dir_->path() / "absent.yml").string();
  try {
    load_web_config(missing);
    ADD_FAILURE() << "loaded a missing file";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "web config " + missing + ": file: cannot read: No such file or directory");
  }
}

// Found by tests/fuzz/fuzz_web_config: a quoted key may hold a newline or an ESC, and the
// refusal that names it was two lines (or a terminal escape).
TEST_F(WebConfigTest, AKeyWithControlBytesIsNamedInOneLine) {
  EXPECT_EQ(refusal("\"tls_\\nserver\\e[2J\": {}\n"),
            "tls_\\x0aserver\\x1b[2J: unknown key (line 1)");
}

// A wrong path must not stall the start or fill the memory: a FIFO (which would block the read
// until a writer came) and a device are refused at once, and so is a file over 1 MiB.
TEST_F(WebConfigTest, RefusesFifosDevicesAndHugeFilesWithoutWaiting) {
  const auto fifo = (dir_->path() / "fifo.pem").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(refusal(tls_with("").replace(tls_with("").find("server.pem"), 10, "fifo.pem")),
            "tls_server_config.cert_file: cannot read " + fifo + ": not a regular file");
  EXPECT_EQ(refusal(tls_with("").replace(tls_with("").find("server.key"), 10, "/dev/zero")),
            "tls_server_config.key_file: cannot read /dev/zero: not a regular file");
  const auto huge = dir_->write("huge.pem", std::string((std::size_t{1} << 20) + 1, 'A'));
  EXPECT_EQ(refusal(tls_with("").replace(tls_with("").find("server.pem"), 10, huge)),
            "tls_server_config.cert_file: cannot read " + huge + ": larger than 1 MiB");
  try {
    load_web_config(fifo);
    ADD_FAILURE() << "loaded a FIFO";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "web config " + fifo + ": file: cannot read: not a regular file");
  }
}

}  // namespace
}  // namespace portlens::http
