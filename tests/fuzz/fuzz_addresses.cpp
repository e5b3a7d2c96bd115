// Addresses as users type them: IpAddress/Endpoint::parse and parse_proto (check, why, trace
// filters) and parse_listen_address (--web.listen-address). Each input is tried whole and, split
// at its first newline, as a protocol and an address. Checks that anything accepted prints back
// to a form that parses to the same value, and that the listen-address parser refuses only with
// std::invalid_argument.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "agent/model/inet.hpp"
#include "exporters/http/listen_address.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace {

void try_address(std::string_view text) {
  if (const auto addr = portlens::IpAddress::parse(text)) {
    const auto again = portlens::IpAddress::parse(addr->to_string());
    FUZZ_CHECK(again && *again == *addr);
    FUZZ_CHECK(addr->unmapped().unmapped() == addr->unmapped());
    FUZZ_CHECK(!addr->is_v4_mapped() || addr->unmapped().is_v4());
  }
  if (const auto endpoint = portlens::Endpoint::parse(text)) {
    const auto again = portlens::Endpoint::parse(endpoint->to_string());
    FUZZ_CHECK(again && *again == *endpoint);
  }
  try {
    const auto listen = portlens::http::parse_listen_address(text);
    const auto again = portlens::http::parse_listen_address(listen.to_string());
    FUZZ_CHECK(again.family == listen.family && again.host == listen.host &&
               again.zone == listen.zone && again.port == listen.port);
  } catch (const std::invalid_argument& e) {
    FUZZ_CHECK(std::string_view(e.what()).find('\n') == std::string_view::npos);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  try_address(input);
  const std::size_t newline = input.find('\n');
  if (newline != std::string_view::npos) {
    const std::string_view proto_text = input.substr(0, newline);
    if (const auto proto = portlens::parse_proto(proto_text)) {
      FUZZ_CHECK(portlens::parse_proto(portlens::to_string(*proto)) == proto);
    }
    try_address(input.substr(newline + 1));
  }
  return 0;
}
