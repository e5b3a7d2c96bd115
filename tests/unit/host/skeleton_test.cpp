// The events ABI check every BPF object goes through at load.
#include "agent/kernel/skeleton.hpp"

#include <string>

#include <gtest/gtest.h>

namespace portlens {
namespace {

TEST(AbiCheckTest, AcceptsTheBinarysOwnVersionAndRefusesAnyOther) {
  EXPECT_NO_THROW(check_abi(PL_ABI_VERSION, "tracer"));
  try {
    check_abi(PL_ABI_VERSION + 1, "tracer");
    ADD_FAILURE() << "another ABI version was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("tracer BPF object"), std::string::npos) << what;
    EXPECT_NE(what.find("rebuild"), std::string::npos) << what;
  }
  EXPECT_THROW(check_abi(0, "snapshot"), Error);
}

}  // namespace
}  // namespace portlens
