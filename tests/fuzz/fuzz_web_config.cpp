// --web.config.file (exporters/http/web_config.hpp): the input is the YAML, written to a file in
// a private directory so that relative names stay there, then loaded. Checks that every refusal
// is std::invalid_argument with one line naming the file, and that what is accepted holds
// together: a bcrypt hash per user, no blank header, versions in order.
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "exporters/http/web_config.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace {

// One directory for the whole run, removed at exit; the fuzzer is a single process.
const std::string& config_path() {
  static const std::string path = [] {
    std::string dir = "/tmp/portlens-fuzz-web-config.XXXXXX";
    FUZZ_CHECK(::mkdtemp(dir.data()) != nullptr);
    static const std::string kept = dir;
    std::atexit([] {
      (void)::unlink((kept + "/web.yml").c_str());
      (void)::rmdir(kept.c_str());
    });
    return dir + "/web.yml";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = config_path();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    FUZZ_CHECK(out.good());
  }
  try {
    const portlens::http::WebConfig config = portlens::http::load_web_config(path);
    for (const auto& [user, hash] : config.basic_auth_users) {
      FUZZ_CHECK(hash.starts_with("$2"));
    }
    for (const auto& [name, value] : config.headers) {
      FUZZ_CHECK(!name.empty() && !value.empty());
    }
    if (config.tls) {
      FUZZ_CHECK(config.tls->min_version <= config.tls->max_version);
      FUZZ_CHECK(!config.tls->cert_pem.empty() && !config.tls->key_pem.empty());
      FUZZ_CHECK(!config.tls->gnutls_priorities().empty());
    }
  } catch (const std::invalid_argument& e) {
    const std::string_view message = e.what();
    FUZZ_CHECK(message.starts_with("web config " + path + ": "));
    FUZZ_CHECK(std::none_of(message.begin(), message.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    }));
  }
  return 0;
}
