// CommLabels: the comm labels of the failure counters go to the comms failing most lately.
#include "exporters/comm_labels.hpp"

#include <string>

#include <gtest/gtest.h>

namespace portlens {
namespace {

constexpr std::uint64_t kMin = 60'000'000'000ULL;

TEST(CommLabelsTest, TheFirstComeKeepTheirLabelsUntilABusierOneArrives) {
  CommLabels labels(2, 10 * kMin);
  EXPECT_EQ(labels.label("boot-job", 0), "boot-job");
  EXPECT_EQ(labels.label("cron", 0), "cron");
  // A third comm fails once: no room, and not busier than either.
  EXPECT_EQ(labels.label("nginx", kMin), "other");
  // An hour later the two first ones have decayed to almost nothing; nginx failing again
  // takes the place of the quietest.
  const std::string taken = labels.label("nginx", 60 * kMin);
  EXPECT_EQ(taken, "nginx");
  EXPECT_EQ(labels.label("nginx", 61 * kMin), "nginx");
  // One of the first two lost its label; the other kept it.
  const bool boot_kept = labels.label("boot-job", 62 * kMin) == "boot-job";
  const bool cron_kept = labels.label("cron", 62 * kMin) == "cron";
  EXPECT_NE(boot_kept, cron_kept);
}

TEST(CommLabelsTest, CommsOfTheSameRateDoNotSwapBackAndForth) {
  CommLabels labels(1, 10 * kMin);
  int swaps = 0;
  std::string holder = labels.label("a", 0);
  for (std::uint64_t t = 1; t < 2000; ++t) {
    const std::string comm = t % 2 == 0 ? "a" : "b";
    const std::string got = labels.label(comm, t * 1'000'000'000ULL);
    if (got != "other" && got != holder) {
      ++swaps;
      holder = got;
    }
  }
  EXPECT_EQ(swaps, 0) << "a label changed hands between two comms failing alike";
}

TEST(CommLabelsTest, ARealCommNamedOtherNeverMergesIntoTheAggregate) {
  CommLabels labels(3);
  EXPECT_EQ(labels.label("other", 0), "other_");
  EXPECT_EQ(labels.label("other_", 0), "other__");
  EXPECT_EQ(labels.label("others", 0), "others");
  EXPECT_EQ(labels.label("late", 0), "other") << "the aggregate, for the fourth comm";
  EXPECT_EQ(CommLabels::spelled("other__"), "other___");
  EXPECT_EQ(CommLabels::spelled("xother"), "xother");
}

TEST(CommLabelsTest, RetiredLabelsAreDroppedOnceTopKMoreAreRetired) {
  CommLabels labels(1, kMin);
  EXPECT_EQ(labels.label("c0", 0), "c0");
  // Each new comm, an hour after the last, is far busier than the decayed holder.
  for (int i = 1; i <= 3; ++i) {
    EXPECT_EQ(labels.label("c" + std::to_string(i), static_cast<std::uint64_t>(i) * 60 * kMin),
              "c" + std::to_string(i));
  }
  // c0, c1 and c2 were retired in turn; with top_k 1, all but the last retired are dropped.
  EXPECT_EQ(labels.take_dropped(), (std::vector<std::string>{"c0", "c1"}));
  EXPECT_TRUE(labels.take_dropped().empty());
}

}  // namespace
}  // namespace portlens
