// Content coding for responses: whether the client takes gzip, and the compression itself.
#pragma once

#include <string>
#include <string_view>

namespace portlens::http {

// Whether an Accept-Encoding value (RFC 9110 section 12.5.3) lets the response be gzip: "gzip"
// or "x-gzip" listed with a q-value above 0, or, when neither is listed, "*" with one. Codings
// are case-insensitive; an entry whose q-value does not parse counts as refused.
bool accepts_gzip(std::string_view accept_encoding);

// data as one gzip member (RFC 1952). Throws std::runtime_error if zlib fails.
std::string gzip(std::string_view data);

}  // namespace portlens::http
