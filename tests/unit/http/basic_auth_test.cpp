#include "exporters/http/basic_auth.hpp"

#include <string>

#include <gtest/gtest.h>

#include "http_test_support.hpp"

namespace portlens::http {
namespace {

// "Basic " + base64(user:password), computed by hand so the decoder is checked, not trusted.
constexpr const char* kAliceSecret = "Basic YWxpY2U6c2VjcmV0";  // alice:secret
constexpr const char* kAliceWrong = "Basic YWxpY2U6d3Jvbmc=";   // alice:wrong
constexpr const char* kBobSecret = "Basic Ym9iOnNlY3JldA==";    // bob:secret
constexpr const char* kAliceColons = "Basic YWxpY2U6YTpiOmM=";  // alice:a:b:c
constexpr const char* kAliceEmpty = "Basic YWxpY2U6";           // alice:

TEST(BasicAuth, ChecksHtpasswdHashes) {
  ASSERT_TRUE(testing::have_command("htpasswd")) << "install apache2-utils";
  const auto hash = testing::bcrypt_hash("secret");
  ASSERT_TRUE(is_bcrypt_hash(hash)) << hash;
  const BasicAuth auth({{"alice", hash}, {"carol", testing::bcrypt_hash("a:b:c")}});

  EXPECT_TRUE(auth.allows(kAliceSecret));
  EXPECT_TRUE(auth.allows("basic YWxpY2U6c2VjcmV0"));
  EXPECT_FALSE(auth.allows(kAliceWrong));
  EXPECT_FALSE(auth.allows(kBobSecret));  // same password, unknown user
  EXPECT_FALSE(auth.allows(kAliceColons));
  EXPECT_FALSE(auth.allows(kAliceEmpty));
  EXPECT_FALSE(auth.allows(std::nullopt));
  EXPECT_FALSE(auth.allows(""));
  EXPECT_FALSE(auth.allows("Bearer YWxpY2U6c2VjcmV0"));
  EXPECT_FALSE(auth.allows("Basic"));
  EXPECT_FALSE(auth.allows("Basic !!!!"));
  EXPECT_FALSE(auth.allows("Basic YWxpY2U6c2VjcmV0="));  // bad padding
  // carol's password has colons: only the first one ends the user name.
  EXPECT_TRUE(auth.allows("Basic Y2Fyb2w6YTpiOmM="));  // carol:a:b:c
}

TEST(BasicAuth, KnowsABcryptHashWhenItSeesOne) {
  const std::string good = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";
  EXPECT_TRUE(is_bcrypt_hash(good));
  EXPECT_TRUE(is_bcrypt_hash("$2a$" + good.substr(4)));
  EXPECT_TRUE(is_bcrypt_hash("$2b$" + good.substr(4)));
  EXPECT_FALSE(is_bcrypt_hash("$2x$" + good.substr(4)));
  EXPECT_FALSE(is_bcrypt_hash("$2y$03$" + good.substr(7)));
  EXPECT_FALSE(is_bcrypt_hash("$2y$32$" + good.substr(7)));
  EXPECT_FALSE(is_bcrypt_hash(good.substr(0, 59)));
  EXPECT_FALSE(is_bcrypt_hash(good + "x"));
  EXPECT_FALSE(is_bcrypt_hash("secret"));
  EXPECT_FALSE(is_bcrypt_hash("$6$salt$" + std::string(52, 'a')));
}

}  // namespace
}  // namespace portlens::http
