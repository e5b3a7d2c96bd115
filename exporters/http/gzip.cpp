#include "exporters/http/gzip.hpp"

// ZLIB_CONST (set by CMakeLists.txt) makes next_in a pointer to const.
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <optional>
#include <stdexcept>

namespace portlens::http {
namespace {

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

// RFC 9110 qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ); all that matters here
// is whether it is zero. nullopt when it is not a qvalue.
std::optional<bool> qvalue_is_positive(std::string_view text) {
  if (text.empty() || (text[0] != '0' && text[0] != '1')) return std::nullopt;
  const auto fraction = text.substr(1);
  if (!fraction.empty() && (fraction[0] != '.' || fraction.size() > 4)) return std::nullopt;
  const auto digits = fraction.empty() ? fraction : fraction.substr(1);
  if (!std::all_of(digits.begin(), digits.end(),
                   [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; })) {
    return std::nullopt;
  }
  if (text[0] == '1') {
    if (digits.find_first_not_of('0') != std::string_view::npos) return std::nullopt;
    return true;
  }
  return digits.find_first_not_of('0') != std::string_view::npos;
}

// Whether one list member ("gzip;q=0.5") is acceptable: its q-value is above 0.
bool member_accepted(std::string_view parameters) {
  bool accepted = true;
  while (!parameters.empty()) {
    const auto semicolon = parameters.find(';');
    const auto parameter = trim(parameters.substr(0, semicolon));
    parameters =
        semicolon == std::string_view::npos ? std::string_view{} : parameters.substr(semicolon + 1);
    const auto equals = parameter.find('=');
    if (equals == std::string_view::npos || !iequals(trim(parameter.substr(0, equals)), "q")) {
      continue;
    }
    accepted = qvalue_is_positive(trim(parameter.substr(equals + 1))).value_or(false);
  }
  return accepted;
}

// Owns a deflate stream from deflateInit2 to deflateEnd.
struct DeflateStream {
  z_stream stream{};
  DeflateStream() {
    // windowBits 15 + 16 asks zlib for the gzip wrapper. Level 1: metrics text is repetitive
    // enough that higher levels gain little and cost the agent CPU on every scrape.
    if (deflateInit2(&stream, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
      throw std::runtime_error("gzip: deflateInit2 failed");
    }
  }
  ~DeflateStream() { deflateEnd(&stream); }
  DeflateStream(const DeflateStream&) = delete;
  DeflateStream& operator=(const DeflateStream&) = delete;
};

}  // namespace

bool accepts_gzip(std::string_view accept_encoding) {
  std::optional<bool> gzip_listed;
  std::optional<bool> any_listed;
  while (!accept_encoding.empty()) {
    const auto comma = accept_encoding.find(',');
    const auto member = accept_encoding.substr(0, comma);
    accept_encoding =
        comma == std::string_view::npos ? std::string_view{} : accept_encoding.substr(comma + 1);
    const auto semicolon = member.find(';');
    const auto coding = trim(member.substr(0, semicolon));
    const auto parameters =
        semicolon == std::string_view::npos ? std::string_view{} : member.substr(semicolon + 1);
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
      gzip_listed = member_accepted(parameters);
    } else if (coding == "*") {
      any_listed = member_accepted(parameters);
    }
  }
  return gzip_listed.value_or(any_listed.value_or(false));
}

std::string gzip(std::string_view data) {
  DeflateStream deflate_stream;
  auto& stream = deflate_stream.stream;
  // zlib counts in uInt: feed the input in pieces it can count and drain the output in chunks.
  constexpr std::size_t kChunk = std::size_t{64} << 10;
  std::size_t fed = 0;
  std::string out;
  int status = Z_OK;
  while (status != Z_STREAM_END) {
    if (stream.avail_in == 0 && fed < data.size()) {
      const auto piece = std::min<std::size_t>(data.size() - fed, UINT_MAX);
      stream.next_in = reinterpret_cast<const Bytef*>(data.data() + fed);
      stream.avail_in = static_cast<uInt>(piece);
      fed += piece;
    }
    const auto used = out.size();
    out.resize(used + kChunk);
    stream.next_out = reinterpret_cast<Bytef*>(out.data() + used);
    stream.avail_out = kChunk;
    status = deflate(&stream, fed == data.size() ? Z_FINISH : Z_NO_FLUSH);
    if (status == Z_STREAM_ERROR) throw std::runtime_error("gzip: deflate failed");
    out.resize(used + kChunk - stream.avail_out);
  }
  return out;
}

}  // namespace portlens::http
