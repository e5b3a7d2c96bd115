#include "exporters/http/gzip.hpp"

#include <random>
#include <string>

#include <gtest/gtest.h>

#include "http_test_support.hpp"

namespace portlens::http {
namespace {

TEST(AcceptsGzip, ReadsTheHeaderLikeRfc9110) {
  EXPECT_TRUE(accepts_gzip("gzip"));
  EXPECT_TRUE(accepts_gzip("GZip"));
  EXPECT_TRUE(accepts_gzip("x-gzip"));
  EXPECT_TRUE(accepts_gzip("gzip, deflate, br"));
  EXPECT_TRUE(accepts_gzip("deflate , gzip ; q=0.5"));
  EXPECT_TRUE(accepts_gzip("gzip;q=1"));
  EXPECT_TRUE(accepts_gzip("gzip;q=1.000"));
  EXPECT_TRUE(accepts_gzip("gzip;q=0.001"));
  EXPECT_TRUE(accepts_gzip("gzip;Q=0.1"));
  EXPECT_TRUE(accepts_gzip("*"));
  EXPECT_TRUE(accepts_gzip("identity;q=0.5, *;q=0.1"));

  EXPECT_FALSE(accepts_gzip(""));
  EXPECT_FALSE(accepts_gzip("identity"));
  EXPECT_FALSE(accepts_gzip("deflate, br"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0"));
  EXPECT_FALSE(accepts_gzip("gzip; q=0.000"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0."));
  EXPECT_FALSE(accepts_gzip("*;q=0"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0, *"));  // gzip named: "*" does not override it
  EXPECT_FALSE(accepts_gzip("gzips"));
  EXPECT_FALSE(accepts_gzip("gzip;q=abc"));
  EXPECT_FALSE(accepts_gzip("gzip;q=1.5"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0.0001"));
}

TEST(Gzip, DecompressesToTheSameBytes) {
  std::mt19937 random(12);
  std::string noise(300000, '\0');
  for (auto& c : noise) c = static_cast<char>(random());
  std::string metrics;
  for (int i = 0; i < 20000; ++i) {
    metrics += "portlens_port_bind_total{port=\"" + std::to_string(i) + "\"} 1\n";
  }
  for (const auto& data : {std::string(), std::string("x"), noise, metrics}) {
    const auto compressed = gzip(data);
    ASSERT_GE(compressed.size(), 18U);  // a gzip header and trailer at least
    EXPECT_EQ(static_cast<unsigned char>(compressed[0]), 0x1f);
    EXPECT_EQ(static_cast<unsigned char>(compressed[1]), 0x8b);
    EXPECT_EQ(testing::gunzip(compressed), data);
  }
  EXPECT_LT(gzip(metrics).size(), metrics.size() / 5);
}

}  // namespace
}  // namespace portlens::http
