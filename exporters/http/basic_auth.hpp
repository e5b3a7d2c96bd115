// HTTP Basic authentication (RFC 7617) against exporter-toolkit's basic_auth_users: bcrypt
// hashes, checked with libcrypt's crypt_r.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace portlens::http {

// "$2a$", "$2b$" or "$2y$", a two-digit cost 04-31, "$", then 53 characters of bcrypt's base64.
bool is_bcrypt_hash(std::string_view text);

class BasicAuth {
 public:
  // users: name -> bcrypt hash (checked by is_bcrypt_hash); empty means nobody may log in.
  explicit BasicAuth(std::map<std::string, std::string, std::less<>> users);

  // Whether an Authorization header value ("Basic dXNlcjpwYXNz") names a user and that user's
  // password. Takes as long for an unknown user as for a wrong password (one bcrypt either way),
  // so timing does not tell which names exist.
  [[nodiscard]] bool allows(std::optional<std::string_view> authorization) const;

 private:
  std::map<std::string, std::string, std::less<>> users_;
};

}  // namespace portlens::http
