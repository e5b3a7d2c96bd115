#include "exporters/http/basic_auth.hpp"

#include <crypt.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <utility>

namespace portlens::http {
namespace {

bool is_bcrypt_base64(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '/';
}

// RFC 4648 base64 with padding; nullopt for anything else.
std::optional<std::string> decode_base64(std::string_view text) {
  std::string out;
  unsigned bits = 0;
  int count = 0;
  std::size_t padding = 0;
  for (const char c : text) {
    if (c == '=') {
      ++padding;
      continue;
    }
    if (padding != 0) return std::nullopt;  // data after padding
    unsigned value = 0;
    if (c >= 'A' && c <= 'Z') {
      value = static_cast<unsigned>(c - 'A');
    } else if (c >= 'a' && c <= 'z') {
      value = static_cast<unsigned>(c - 'a') + 26;
    } else if (c >= '0' && c <= '9') {
      value = static_cast<unsigned>(c - '0') + 52;
    } else if (c == '+') {
      value = 62;
    } else if (c == '/') {
      value = 63;
    } else {
      return std::nullopt;
    }
    bits = (bits << 6) | value;
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<char>((bits >> count) & 0xff));
    }
  }
  if ((text.size() % 4) != 0 || padding > 2) return std::nullopt;
  return out;
}

// Compares every byte whatever the first difference, so the time taken does not say how much
// of a guess was right. The length is no secret: every bcrypt hash has 60 characters.
bool same_bytes(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return difference == 0;
}

bool bcrypt_matches(const std::string& password, const std::string& hash) {
  // struct crypt_data is about 32 KiB: too big for a handler thread's stack. Value
  // initialisation zeroes it, which crypt_r requires before first use.
  const auto data = std::make_unique<crypt_data>();
  const char* computed = crypt_r(password.c_str(), hash.c_str(), data.get());
  return computed != nullptr && same_bytes(computed, hash);
}

}  // namespace

bool is_bcrypt_hash(std::string_view text) {
  if (text.size() != 60 || text.substr(0, 2) != "$2" || text[3] != '$' || text[6] != '$') {
    return false;
  }
  if (text[2] != 'a' && text[2] != 'b' && text[2] != 'y') return false;
  if (std::isdigit(static_cast<unsigned char>(text[4])) == 0 ||
      std::isdigit(static_cast<unsigned char>(text[5])) == 0) {
    return false;
  }
  const int cost = (text[4] - '0') * 10 + (text[5] - '0');
  const auto salt_and_hash = text.substr(7);
  return cost >= 4 && cost <= 31 &&
         std::all_of(salt_and_hash.begin(), salt_and_hash.end(), is_bcrypt_base64);
}

BasicAuth::BasicAuth(std::map<std::string, std::string, std::less<>> users)
    : users_(std::move(users)) {}

bool BasicAuth::allows(std::optional<std::string_view> authorization) const {
  if (!authorization || users_.empty()) return false;
  auto value = *authorization;
  const auto space = value.find(' ');
  if (space == std::string_view::npos) return false;
  const auto scheme = value.substr(0, space);
  // The scheme name is case-insensitive (RFC 9110 section 11.1).
  if (!std::equal(scheme.begin(), scheme.end(), std::string_view("basic").begin(),
                  std::string_view("basic").end(), [](char a, char b) {
                    return std::tolower(static_cast<unsigned char>(a)) == b;
                  })) {
    return false;
  }
  value = value.substr(space + 1);
  value = value.substr(std::min(value.find_first_not_of(' '), value.size()));
  const auto credentials = decode_base64(value);
  if (!credentials) return false;
  const auto colon = credentials->find(':');
  // crypt_r reads the password up to a NUL: one inside would let a longer string pass.
  if (colon == std::string::npos || credentials->find('\0') != std::string::npos) return false;
  const auto user = std::string_view(*credentials).substr(0, colon);
  const std::string password = credentials->substr(colon + 1);

  const auto found = users_.find(user);
  // An unknown name is checked against a real hash too, and then refused, so it costs the same.
  const auto& hash = found != users_.end() ? found->second : users_.begin()->second;
  return bcrypt_matches(password, hash) && found != users_.end();
}

}  // namespace portlens::http
