// What the agent reads from /proc and sysctl files, and --netns specs: the parsers of
// agent/kernel/netns_config.hpp, owners.hpp and netns.hpp. In a container a file under /proc/sys
// may hold what a tenant wrote into its own namespace, so nothing in them is trusted. The input's
// first byte picks the parser; the rest is the text. Checks the bounds each parser promises.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agent/kernel/netns.hpp"
#include "agent/kernel/netns_config.hpp"
#include "agent/kernel/owners.hpp"
#include "agent/model/error.hpp"
#include "tests/fuzz/fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0:
      if (const auto range = portlens::parse_port_range(text)) {
        FUZZ_CHECK(range->first >= 1 && range->first <= range->second);
      }
      break;
    case 1:
      (void)portlens::parse_port_list(text);
      break;
    case 2:
      if (const auto value = portlens::parse_sysctl_int(text, -5, 70000)) {
        FUZZ_CHECK(*value >= -5 && *value <= 70000);
      }
      break;
    case 3: {
      // /proc/net/netstat: two lines per group; the name and group come from the text itself.
      const std::size_t space = text.find(' ');
      const std::string_view name = text.substr(0, std::min(space, text.size()));
      (void)portlens::parse_netstat_counter(text, "TcpExt", name);
      (void)portlens::parse_netstat_counter(text, "TcpExt", "TCPTimeWaitOverflow");
      break;
    }
    case 4:
      (void)portlens::parse_socket_link(text);
      break;
    case 5: {
      // Every sysctl the port config reads, each given this text.
      std::map<std::string, std::string> texts;
      for (const std::string& key : portlens::port_config_sysctl_keys()) {
        texts[key] = std::string(text);
      }
      std::vector<std::string> problems;
      const auto config = portlens::port_config_from_sysctls(texts, &problems);
      (void)config;
      break;
    }
    default:
      try {
        const std::string path = portlens::netns_spec_to_path(text);
        FUZZ_CHECK(!path.empty());
        FUZZ_CHECK(path.find('/') != std::string::npos);
      } catch (const portlens::UsageError& e) {
        FUZZ_CHECK(std::string_view(e.what()).starts_with("--netns"));
      }
      break;
  }
  return 0;
}
