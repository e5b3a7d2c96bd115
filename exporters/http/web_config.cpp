#include "exporters/http/web_config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <string_view>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <yaml-cpp/yaml.h>

#include "exporters/http/basic_auth.hpp"
#include "exporters/http/one_line.hpp"

namespace portlens::http {
namespace {

// exporter-toolkit's extraHTTPHeaders: the only headers a config may set, with the values
// allowed where the header's values are an enumeration.
struct ConfigurableHeader {
  std::string_view name;
  std::vector<std::string_view> allowed;  // empty: any value
};
const std::array<ConfigurableHeader, 5> kConfigurableHeaders = {{
    {"Strict-Transport-Security", {}},
    {"X-Content-Type-Options", {"nosniff"}},
    {"X-Frame-Options", {"deny", "sameorigin"}},
    {"X-XSS-Protection", {}},
    {"Content-Security-Policy", {}},
}};

// Keys exporter-toolkit knows that portlens refuses rather than ignores: each one changes who
// may connect or how, so silently dropping it would serve with weaker security than written.
const std::map<std::string_view, std::string_view> kUnsupportedTlsKeys = {
    {"cipher_suites", "not supported by portlens: GnuTLS's defaults choose the ciphers"},
    {"curve_preferences", "not supported by portlens: GnuTLS's defaults choose the curves"},
    {"client_allowed_sans",
     "not supported by portlens; give a client_ca_file whose CA signs only the allowed clients"},
};

struct CertificateList {
  gnutls_x509_crt_t* certs = nullptr;
  unsigned count = 0;
  CertificateList() = default;
  ~CertificateList() {
    for (unsigned i = 0; i < count; ++i) gnutls_x509_crt_deinit(certs[i]);
    gnutls_free(certs);
  }
  CertificateList(const CertificateList&) = delete;
  CertificateList& operator=(const CertificateList&) = delete;
};

struct PrivateKey {
  gnutls_x509_privkey_t key = nullptr;
  PrivateKey() {
    if (gnutls_x509_privkey_init(&key) != GNUTLS_E_SUCCESS) throw std::bad_alloc();
  }
  ~PrivateKey() { gnutls_x509_privkey_deinit(key); }
  PrivateKey(const PrivateKey&) = delete;
  PrivateKey& operator=(const PrivateKey&) = delete;
};

gnutls_datum_t datum(const std::string& text) {
  // GnuTLS takes input through a non-const datum but does not write to it.
  return {reinterpret_cast<unsigned char*>(const_cast<char*>(text.data())),
          static_cast<unsigned>(text.size())};
}

// A config, certificate or key file is small: a cap keeps a wrong path (a log, /dev/zero) from
// stalling the start or taking the agent's memory.
constexpr std::size_t kMaxFileBytes = std::size_t{1} << 20;

// The whole of a regular file of at most kMaxFileBytes, or why not (strerror's text, or "not a
// regular file", or "larger than 1 MiB"). Opened non-blocking: a FIFO named by mistake is refused,
// not waited on.
std::string read_small_file(const std::filesystem::path& file, std::string* problem) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    *problem = std::strerror(errno);
    return {};
  }
  std::string text;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    *problem = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    *problem = "not a regular file";
  } else {
    std::array<char, 16384> buf{};
    for (;;) {
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        *problem = std::strerror(errno);
        break;
      }
      if (n == 0) break;
      if (text.size() + static_cast<std::size_t>(n) > kMaxFileBytes) {
        *problem = "larger than 1 MiB";
        break;
      }
      text.append(buf.data(), static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return problem->empty() ? text : std::string();
}

std::string line_of(const YAML::Node& node) {
  const auto mark = node.Mark();
  return mark.line >= 0 ? " (line " + std::to_string(mark.line + 1) + ")" : "";
}

// The file being read, for messages that name it, and its directory, for relative paths.
class ConfigReader {
 public:
  explicit ConfigReader(std::string path)
      : path_(std::move(path)), dir_(std::filesystem::path(path_).parent_path()) {}

  // One line whatever the file holds: a key or value with a newline or an ESC in it (YAML
  // allows both in quoted keys) is shown with those bytes as \xNN. Found by
  // tests/fuzz/fuzz_web_config.
  [[noreturn]] void fail(std::string_view key, std::string_view problem) const {
    throw std::invalid_argument(
        one_line("web config " + path_ + ": " + std::string(key) + ": " + std::string(problem)));
  }
  [[noreturn]] void fail(std::string_view key, std::string_view problem,
                         const YAML::Node& where) const {
    fail(key, std::string(problem) + line_of(where));
  }

  YAML::Node parse() const {
    std::string problem;
    const std::string text = read_small_file(path_, &problem);
    if (!problem.empty()) fail("file", "cannot read: " + problem);
    try {
      return YAML::Load(text);
    } catch (const YAML::ParserException& e) {
      fail("file", "not valid YAML: " + e.msg + " (line " + std::to_string(e.mark.line + 1) + ")");
    }
  }

  // Calls visit(key, value, key_node) for each entry of a mapping, refusing anything else and
  // any key given twice (Go's yaml.UnmarshalStrict refuses both).
  template <typename Visit>
  void each_entry(const YAML::Node& map, std::string_view where, Visit visit) const {
    if (!map.IsMap()) fail(where.empty() ? "file" : where, "expected a mapping", map);
    std::set<std::string> seen;
    for (const auto& entry : map) {
      if (!entry.first.IsScalar()) fail(where, "expected a plain key", entry.first);
      const auto key = entry.first.Scalar();
      if (!seen.insert(key).second) fail(join(where, key), "given twice", entry.first);
      visit(key, entry.second, entry.first);
    }
  }

  std::string scalar(const YAML::Node& node, std::string_view key) const {
    if (node.IsNull()) return "";
    if (!node.IsScalar()) fail(key, "expected a string", node);
    return node.Scalar();
  }

  bool boolean(const YAML::Node& node, std::string_view key) const {
    if (node.IsScalar()) {
      try {
        return node.as<bool>();
      } catch (const YAML::BadConversion&) {
        // Reported below with the other wrong shapes.
      }
    }
    fail(key, "expected true or false", node);
  }

  // Relative to the config file's directory, as exporter-toolkit's SetDirectory does.
  std::string read_file(const std::string& name, std::string_view key) const {
    const auto file =
        std::filesystem::path(name).is_absolute() ? std::filesystem::path(name) : dir_ / name;
    std::string problem;
    std::string text = read_small_file(file, &problem);
    if (!problem.empty()) fail(key, "cannot read " + file.string() + ": " + problem);
    return text;
  }

  static std::string join(std::string_view parent, std::string_view key) {
    return parent.empty() ? std::string(key) : std::string(parent) + "." + std::string(key);
  }

 private:
  std::string path_;
  std::filesystem::path dir_;
};

// The PEM text of a file or inline key pair (cert_file or cert): one of them, not both.
struct PemSource {
  std::string inline_text;
  std::string file;
};

std::string pem_from(const ConfigReader& reader, const PemSource& source,
                     std::string_view inline_key, std::string_view file_key) {
  if (!source.inline_text.empty() && !source.file.empty()) {
    reader.fail("tls_server_config",
                "give " + std::string(inline_key) + " or " + std::string(file_key) + ", not both");
  }
  if (!source.file.empty()) {
    return reader.read_file(source.file, ConfigReader::join("tls_server_config", file_key));
  }
  return source.inline_text;
}

void check_certificates(const ConfigReader& reader, const std::string& pem, std::string_view key,
                        CertificateList& list) {
  auto data = datum(pem);
  const int status =
      gnutls_x509_crt_list_import2(&list.certs, &list.count, &data, GNUTLS_X509_FMT_PEM, 0);
  if (status < 0 || list.count == 0) {
    reader.fail(key, std::string("no PEM certificate in it (") +
                         (status < 0 ? gnutls_strerror(status) : "empty") + ")");
  }
}

void check_key_pair(const ConfigReader& reader, const TlsConfig& tls) {
  CertificateList chain;
  check_certificates(reader, tls.cert_pem, "tls_server_config.cert_file", chain);
  PrivateKey key;
  auto key_data = datum(tls.key_pem);
  if (const int status =
          gnutls_x509_privkey_import2(key.key, &key_data, GNUTLS_X509_FMT_PEM, nullptr, 0);
      status < 0) {
    reader.fail("tls_server_config.key_file", std::string("not an unencrypted PEM private key (") +
                                                  gnutls_strerror(status) + ")");
  }
  std::array<unsigned char, 64> cert_id{};
  std::array<unsigned char, 64> key_id{};
  std::size_t cert_id_size = cert_id.size();
  std::size_t key_id_size = key_id.size();
  const bool same =
      gnutls_x509_crt_get_key_id(chain.certs[0], 0, cert_id.data(), &cert_id_size) == 0 &&
      gnutls_x509_privkey_get_key_id(key.key, 0, key_id.data(), &key_id_size) == 0 &&
      cert_id_size == key_id_size &&
      std::equal(cert_id.begin(), cert_id.begin() + static_cast<long>(cert_id_size),
                 key_id.begin());
  if (!same) {
    reader.fail("tls_server_config.key_file",
                "the key does not match the certificate in cert_file (its first certificate)");
  }
}

ClientAuth parse_client_auth(const ConfigReader& reader, const std::string& text) {
  if (text.empty() || text == "NoClientCert") return ClientAuth::kNoClientCert;
  if (text == "RequestClientCert") return ClientAuth::kRequestClientCert;
  // exporter-toolkit keeps "RequireClientCert" as an older name.
  if (text == "RequireAnyClientCert" || text == "RequireClientCert") {
    return ClientAuth::kRequireAnyClientCert;
  }
  if (text == "VerifyClientCertIfGiven") return ClientAuth::kVerifyClientCertIfGiven;
  if (text == "RequireAndVerifyClientCert") return ClientAuth::kRequireAndVerifyClientCert;
  reader.fail("tls_server_config.client_auth_type",
              "unknown value \"" + text +
                  "\"; expected NoClientCert, RequestClientCert, RequireAnyClientCert, "
                  "VerifyClientCertIfGiven or RequireAndVerifyClientCert");
}

TlsVersion parse_version(const ConfigReader& reader, const std::string& text,
                         std::string_view key) {
  if (text == "TLS10") return TlsVersion::kTls10;
  if (text == "TLS11") return TlsVersion::kTls11;
  if (text == "TLS12") return TlsVersion::kTls12;
  if (text == "TLS13") return TlsVersion::kTls13;
  reader.fail(key, "unknown TLS version \"" + text + "\"; expected TLS10, TLS11, TLS12 or TLS13");
}

std::optional<TlsConfig> parse_tls(const ConfigReader& reader, const YAML::Node& node) {
  if (node.IsNull()) return std::nullopt;
  PemSource cert;
  PemSource key;
  PemSource client_ca;
  std::string client_auth;
  TlsConfig tls;
  reader.each_entry(
      node, "tls_server_config",
      [&](const std::string& name, const YAML::Node& value, const YAML::Node& key_node) {
        const auto key_name = ConfigReader::join("tls_server_config", name);
        if (name == "cert") {
          cert.inline_text = reader.scalar(value, key_name);
        } else if (name == "cert_file") {
          cert.file = reader.scalar(value, key_name);
        } else if (name == "key") {
          key.inline_text = reader.scalar(value, key_name);
        } else if (name == "key_file") {
          key.file = reader.scalar(value, key_name);
        } else if (name == "client_ca") {
          client_ca.inline_text = reader.scalar(value, key_name);
        } else if (name == "client_ca_file") {
          client_ca.file = reader.scalar(value, key_name);
        } else if (name == "client_auth_type") {
          client_auth = reader.scalar(value, key_name);
        } else if (name == "min_version") {
          tls.min_version = parse_version(reader, reader.scalar(value, key_name), key_name);
        } else if (name == "max_version") {
          tls.max_version = parse_version(reader, reader.scalar(value, key_name), key_name);
        } else if (name == "prefer_server_cipher_suites") {
          tls.prefer_server_cipher_suites = reader.boolean(value, key_name);
        } else if (const auto unsupported = kUnsupportedTlsKeys.find(name);
                   unsupported != kUnsupportedTlsKeys.end()) {
          reader.fail(key_name, unsupported->second, key_node);
        } else {
          reader.fail(key_name, "unknown key", key_node);
        }
      });
  // exporter-toolkit's TLSConfig.IsEnabled: any of these turns TLS on, and then it needs both
  // the certificate and the key.
  const bool enabled = !cert.inline_text.empty() || !cert.file.empty() ||
                       !key.inline_text.empty() || !key.file.empty() ||
                       !client_ca.inline_text.empty() || !client_ca.file.empty() ||
                       !client_auth.empty();
  if (!enabled) return std::nullopt;
  tls.cert_pem = pem_from(reader, cert, "cert", "cert_file");
  tls.key_pem = pem_from(reader, key, "key", "key_file");
  tls.client_ca_pem = pem_from(reader, client_ca, "client_ca", "client_ca_file");
  if (tls.cert_pem.empty()) reader.fail("tls_server_config", "cert_file (or cert) is missing");
  if (tls.key_pem.empty()) reader.fail("tls_server_config", "key_file (or key) is missing");
  check_key_pair(reader, tls);

  tls.client_auth = parse_client_auth(reader, client_auth);
  if (!tls.client_ca_pem.empty()) {
    CertificateList authorities;
    check_certificates(reader, tls.client_ca_pem, "tls_server_config.client_ca_file", authorities);
    if (tls.client_auth == ClientAuth::kNoClientCert) {
      reader.fail("tls_server_config.client_ca_file",
                  "set, but client_auth_type is NoClientCert, so it would not be used");
    }
  } else if (tls.client_auth == ClientAuth::kVerifyClientCertIfGiven ||
             tls.client_auth == ClientAuth::kRequireAndVerifyClientCert) {
    reader.fail("tls_server_config.client_auth_type",
                client_auth +
                    " verifies client certificates against client_ca_file, which is "
                    "missing");
  }
  if (tls.min_version > tls.max_version) {
    reader.fail("tls_server_config.min_version", "above max_version");
  }
  return tls;
}

void parse_headers(const ConfigReader& reader, const YAML::Node& node, WebConfig& config) {
  if (node.IsNull()) return;
  reader.each_entry(
      node, "http_server_config.headers",
      [&](const std::string& name, const YAML::Node& value, const YAML::Node& key_node) {
        const auto key_name = ConfigReader::join("http_server_config.headers", name);
        const auto* header =
            std::find_if(kConfigurableHeaders.begin(), kConfigurableHeaders.end(),
                         [&name](const ConfigurableHeader& h) { return h.name == name; });
        if (header == kConfigurableHeaders.end()) {
          reader.fail(key_name,
                      "this header cannot be configured; allowed: "
                      "Strict-Transport-Security, X-Content-Type-Options, "
                      "X-Frame-Options, X-XSS-Protection, Content-Security-Policy",
                      key_node);
        }
        auto text = reader.scalar(value, key_name);
        if (text.empty()) return;  // "Unset if blank"
        if (std::any_of(text.begin(), text.end(),
                        [](char c) { return static_cast<unsigned char>(c) < 0x20 && c != '\t'; })) {
          reader.fail(key_name, "control characters are not allowed", value);
        }
        if (!header->allowed.empty() && std::find(header->allowed.begin(), header->allowed.end(),
                                                  text) == header->allowed.end()) {
          std::string allowed;
          for (const auto& a : header->allowed) {
            allowed += (allowed.empty() ? "\"" : ", \"") + std::string(a) + "\"";
          }
          reader.fail(key_name, "\"" + text + "\" is not one of " + allowed, value);
        }
        config.headers.emplace_back(name, std::move(text));
      });
}

void parse_http_server(const ConfigReader& reader, const YAML::Node& node, WebConfig& config) {
  if (node.IsNull()) return;
  reader.each_entry(
      node, "http_server_config",
      [&](const std::string& name, const YAML::Node& value, const YAML::Node& key_node) {
        const auto key_name = ConfigReader::join("http_server_config", name);
        if (name == "headers") {
          parse_headers(reader, value, config);
        } else if (name == "http2") {
          // Accepted so node_exporter's files load; portlens speaks HTTP/1.1 either way, which
          // every HTTP/2 client also speaks.
          reader.boolean(value, key_name);
        } else {
          reader.fail(key_name, "unknown key", key_node);
        }
      });
}

void parse_users(const ConfigReader& reader, const YAML::Node& node, WebConfig& config) {
  if (node.IsNull()) return;
  reader.each_entry(
      node, "basic_auth_users",
      [&](const std::string& user, const YAML::Node& value, const YAML::Node& key_node) {
        const auto key_name = ConfigReader::join("basic_auth_users", user);
        // RFC 7617: the user-id ends at the first colon, so a name with one could never log in.
        if (user.empty() || user.find(':') != std::string::npos) {
          reader.fail(key_name, "a user name must be non-empty and without ':'", key_node);
        }
        auto hash = reader.scalar(value, key_name);
        if (!is_bcrypt_hash(hash)) {
          reader.fail(key_name,
                      "not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31, 60 characters; "
                      "make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')",
                      value);
        }
        config.basic_auth_users.emplace(user, std::move(hash));
      });
}

}  // namespace

std::string TlsConfig::gnutls_priorities() const {
  constexpr std::array<std::string_view, 4> kVersions = {"+VERS-TLS1.0", "+VERS-TLS1.1",
                                                         "+VERS-TLS1.2", "+VERS-TLS1.3"};
  std::string priorities = "NORMAL:-VERS-ALL";
  for (auto v = static_cast<std::size_t>(min_version); v <= static_cast<std::size_t>(max_version);
       ++v) {
    priorities += ":" + std::string(kVersions.at(v));
  }
  // Go's prefer_server_cipher_suites; GnuTLS follows the client's order unless told otherwise.
  if (prefer_server_cipher_suites) priorities += ":%SERVER_PRECEDENCE";
  return priorities;
}

WebConfig load_web_config(const std::string& path) {
  const ConfigReader reader(path);
  const auto root = reader.parse();
  WebConfig config;
  if (root.IsNull()) return config;  // an empty file: plain HTTP, no authentication
  reader.each_entry(
      root, "", [&](const std::string& name, const YAML::Node& value, const YAML::Node& key_node) {
        if (name == "tls_server_config") {
          config.tls = parse_tls(reader, value);
        } else if (name == "http_server_config") {
          parse_http_server(reader, value, config);
        } else if (name == "basic_auth_users") {
          parse_users(reader, value, config);
        } else if (name == "rate_limit") {
          reader.fail(name, "not supported by portlens", key_node);
        } else {
          reader.fail(name, "unknown key", key_node);
        }
      });
  return config;
}

}  // namespace portlens::http
