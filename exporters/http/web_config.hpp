// --web.config.file: the Prometheus exporter-toolkit's YAML format (docs/web-configuration.md
// in github.com/prometheus/exporter-toolkit), so one file serves portlens and node_exporter.
// Read once, when the server starts; every problem is refused there with one line.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace portlens::http {

// Go's crypto/tls ClientAuthType, under exporter-toolkit's names.
enum class ClientAuth {
  kNoClientCert,
  kRequestClientCert,           // asked for, not required, not verified
  kRequireAnyClientCert,        // required, not verified
  kVerifyClientCertIfGiven,     // not required; verified against client_ca when sent
  kRequireAndVerifyClientCert,  // required and verified: the only one that authenticates
};

enum class TlsVersion { kTls10, kTls11, kTls12, kTls13 };

struct TlsConfig {
  std::string cert_pem;       // the server's chain, leaf first
  std::string key_pem;        // its key, checked to match the leaf
  std::string client_ca_pem;  // "" unless client_ca_file or client_ca is set
  ClientAuth client_auth = ClientAuth::kNoClientCert;
  TlsVersion min_version = TlsVersion::kTls12;
  TlsVersion max_version = TlsVersion::kTls13;
  bool prefer_server_cipher_suites = true;

  // The GnuTLS priority string for these versions and cipher preference.
  [[nodiscard]] std::string gnutls_priorities() const;
};

struct WebConfig {
  std::optional<TlsConfig> tls;  // nullopt: plain HTTP
  // user -> bcrypt hash; empty: no authentication.
  std::map<std::string, std::string, std::less<>> basic_auth_users;
  // http_server_config.headers without the blank ones, added to every response.
  std::vector<std::pair<std::string, std::string>> headers;
};

// Reads path and checks everything in it, the certificate and keys included. Relative file names
// in it are taken from path's directory. Throws std::invalid_argument with one line, "web config
// PATH: KEY: PROBLEM".
WebConfig load_web_config(const std::string& path);

}  // namespace portlens::http
