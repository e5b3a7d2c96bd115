// The process_* readings: the /proc/PID/stat parser on lines a command name can make, and the
// live reading judged against what the kernel says elsewhere (/proc/self/status, /proc/self/fd).
#include "agent/kernel/self_stats.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace portlens {
namespace {

// proc(5)'s fields 3..24 after "PID (COMM)": state, ppid ... utime=14 stime=15 ... starttime=22
// vsize=23 rss=24, then more.
std::string stat_line(const std::string& comm) {
  return "4242 (" + comm +
         ") S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 9 0 12345 290435072 6973 "
         "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
}

TEST(ProcessStatTest, ReadsTheFieldsAfterTheLastParenthesis) {
  for (const std::string comm : {"portlens", "a) S 1 2 (b", "with space", ")"}) {
    const auto s = parse_process_stat(stat_line(comm), 1'700'000'000.0, 100, 4096);
    ASSERT_TRUE(s.has_value()) << comm;
    EXPECT_DOUBLE_EQ(s->cpu_seconds, 4.0) << comm;  // (250 + 150) / 100
    EXPECT_DOUBLE_EQ(s->start_time_seconds, 1'700'000'123.45) << comm;
    EXPECT_DOUBLE_EQ(s->virtual_bytes, 290435072.0) << comm;
    EXPECT_DOUBLE_EQ(s->resident_bytes, 6973.0 * 4096) << comm;
  }
}

TEST(ProcessStatTest, RefusesWhatIsNotAStatLine) {
  EXPECT_FALSE(parse_process_stat("", 0, 100, 4096));
  EXPECT_FALSE(parse_process_stat("4242 portlens S 1", 0, 100, 4096));  // no parenthesis
  EXPECT_FALSE(parse_process_stat("4242 (x) S 1 2 3", 0, 100, 4096));   // too few fields
  std::string bad = stat_line("x");
  bad.replace(bad.find(" 250 "), 5, " 2x0 ");
  EXPECT_FALSE(parse_process_stat(bad, 0, 100, 4096));
  EXPECT_FALSE(parse_process_stat(stat_line("x"), 0, 0, 4096));  // no clock rate
}

// VmRSS from /proc/self/status, in bytes: the kernel's own figure, read another way.
double status_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  double kib = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) {
      kib = std::stod(line.substr(6));
    }
  }
  return kib * 1024;
}

TEST(ProcessStatTest, TheLiveReadingAgreesWithTheKernelElsewhere) {
  const auto s = read_process_stats();
  ASSERT_TRUE(s.has_value());
  const double rss = status_rss_bytes();
  ASSERT_GT(rss, 0);
  // The two reads are moments apart; allow the pages touched in between.
  EXPECT_NEAR(s->resident_bytes, rss, 2.0 * 1024 * 1024);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(s->start_time_seconds, now + 1);
  EXPECT_GT(s->start_time_seconds, now - 24 * 3600);  // this test binary started today
  EXPECT_GE(s->cpu_seconds, 0);
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  EXPECT_EQ(s->max_fds, static_cast<double>(limit.rlim_cur));
  std::size_t fds = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++fds;
  }
  // Both counts include the directory being read; nothing else opens a descriptor meanwhile.
  EXPECT_EQ(s->open_fds, static_cast<double>(fds));
}

}  // namespace
}  // namespace portlens
