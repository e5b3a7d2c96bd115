#include "exporters/event_log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/model/error.hpp"
#include "tests/unit/builders.hpp"

namespace portlens {
namespace {

using unit::TempDir;

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// {"n":N}\n: 8 bytes for N < 10.
nlohmann::json numbered(int n) { return nlohmann::json{{"n", n}}; }

// Constructs an EventLog for path and returns the Error's message; fails the test if none.
std::string open_error_of(const std::string& path) {
  try {
    const EventLog log(path);
    ADD_FAILURE() << "EventLog(\"" << path << "\") opened";
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

TEST(EventLogTest, AppendsOneJsonObjectPerLine) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  EventLog log(path);
  log.append(nlohmann::json{{"event", "bind"}, {"result", -98}});
  log.append(nlohmann::json{{"event", "listen"}, {"comm", "a\nb"}});
  EXPECT_EQ(contents(path),
            "{\"event\":\"bind\",\"result\":-98}\n{\"comm\":\"a\\nb\",\"event\":\"listen\"}\n");
  const EventLogStats stats = log.stats();
  EXPECT_EQ(stats.lines_written, 2U);
  EXPECT_EQ(stats.bytes_written, contents(path).size());
  EXPECT_EQ(stats.write_failures, 0U);
}

TEST(EventLogTest, AppendsToAnExistingFile) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  std::ofstream(path) << "{\"old\":true}\n";
  EventLog log(path);
  log.append(numbered(1));
  EXPECT_EQ(contents(path), "{\"old\":true}\n{\"n\":1}\n");
}

TEST(EventLogTest, InvalidUtf8IsReplacedNotThrown) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  EventLog log(path);
  log.append(nlohmann::json{{"comm", std::string("x\xff")}});
  EXPECT_EQ(contents(path), "{\"comm\":\"x\xEF\xBF\xBD\"}\n");
  EXPECT_EQ(log.stats().write_failures, 0U);
}

TEST(EventLogTest, RotatesAtTheCapKeepingTheNewestFiles) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  // Two 8-byte lines fit in 20 bytes; the third would exceed it.
  EventLog log(path, /*max_bytes=*/20, /*keep=*/2);
  for (int n = 1; n <= 9; ++n) {
    log.append(numbered(n));
  }
  EXPECT_EQ(contents(path), "{\"n\":9}\n");
  EXPECT_EQ(contents(path + ".1"), "{\"n\":7}\n{\"n\":8}\n");
  EXPECT_EQ(contents(path + ".2"), "{\"n\":5}\n{\"n\":6}\n");
  EXPECT_FALSE(fs::exists(path + ".3"));
  const EventLogStats stats = log.stats();
  EXPECT_EQ(stats.rotations, 4U);
  EXPECT_EQ(stats.lines_written, 9U);
  EXPECT_EQ(stats.bytes_written, 72U);
}

TEST(EventLogTest, ALineExactlyAtTheCapStaysAndALargerOneGetsAFileOfItsOwn) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  EventLog log(path, /*max_bytes=*/16, /*keep=*/3);
  log.append(numbered(1));
  log.append(numbered(2));  // exactly 16 bytes: no rotation
  EXPECT_EQ(log.stats().rotations, 0U);
  const nlohmann::json big{{"text", std::string(40, 'x')}};
  log.append(big);
  log.append(numbered(3));
  EXPECT_EQ(contents(path + ".2"), "{\"n\":1}\n{\"n\":2}\n");
  EXPECT_EQ(contents(path + ".1"), big.dump() + "\n");
  EXPECT_EQ(contents(path), "{\"n\":3}\n");
}

TEST(EventLogTest, KeepZeroTruncatesInPlace) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  EventLog log(path, /*max_bytes=*/10, /*keep=*/0);
  log.append(numbered(1));
  log.append(numbered(2));
  EXPECT_EQ(contents(path), "{\"n\":2}\n");
  EXPECT_FALSE(fs::exists(path + ".1"));
}

TEST(EventLogTest, ReopenAfterAnExternalRenameWritesToAFreshFile) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  EventLog log(path);
  log.append(numbered(1));
  fs::rename(path, path + ".rotated");  // what logrotate does before it sends SIGHUP
  log.append(numbered(2));              // still the old file until reopen()
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(log.reopen(), std::nullopt);
  log.append(numbered(3));
  EXPECT_EQ(contents(path + ".rotated"), "{\"n\":1}\n{\"n\":2}\n");
  EXPECT_EQ(contents(path), "{\"n\":3}\n");
}

TEST(EventLogTest, ReopenCountsTheSizeOfTheFileItFinds) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  EventLog log(path, /*max_bytes=*/20, /*keep=*/1);
  log.append(numbered(1));
  fs::rename(path, path + ".rotated");
  std::ofstream(path) << "{\"n\":8}\n{\"n\":9}\n";
  EXPECT_EQ(log.reopen(), std::nullopt);
  log.append(numbered(2));  // 16 + 8 > 20: rotates the file it found
  EXPECT_EQ(contents(path + ".1"), "{\"n\":8}\n{\"n\":9}\n");
  EXPECT_EQ(contents(path), "{\"n\":2}\n");
}

TEST(EventLogTest, ReopenFailureSaysWhyAndKeepsTheOldFile) {
  const TempDir dir;
  const std::string path = dir.file("sub/events.jsonl");
  fs::create_directory(dir.path() / "sub");
  EventLog log(path);
  log.append(numbered(1));
  fs::rename(dir.path() / "sub", dir.path() / "moved");
  EXPECT_THAT(log.reopen().value_or(""), HasSubstr(dir.file("sub") + " does not exist"));
  log.append(numbered(2));
  EXPECT_EQ(contents(dir.file("moved/events.jsonl")), "{\"n\":1}\n{\"n\":2}\n");
}

TEST(EventLogTest, PathIsADirectory) {
  const TempDir dir;
  const std::string msg = open_error_of(dir.path().string());
  EXPECT_THAT(msg, HasSubstr(dir.path().string()));
  EXPECT_THAT(msg, HasSubstr("is a directory"));
  EXPECT_THAT(msg, HasSubstr("--event-log"));
}

TEST(EventLogTest, MissingDirectory) {
  const TempDir dir;
  const std::string msg = open_error_of(dir.file("no-such-dir/events.jsonl"));
  EXPECT_THAT(msg, HasSubstr(dir.file("no-such-dir") + " does not exist"));
  EXPECT_THAT(msg, HasSubstr("--event-log"));
}

TEST(EventLogTest, ParentIsAFile) {
  const TempDir dir;
  std::ofstream(dir.file("plain")) << "x";
  const std::string msg = open_error_of(dir.file("plain/events.jsonl"));
  EXPECT_THAT(msg, HasSubstr("not a directory"));
}

TEST(EventLogTest, UnwritableDirectory) {
  const TempDir dir;
  const fs::path locked = dir.path() / "locked";
  fs::create_directory(locked);
  ASSERT_EQ(chmod(locked.c_str(), 0555), 0);
  const std::string path = (locked / "events.jsonl").string();
  if (geteuid() != 0) {
    const std::string msg = open_error_of(path);
    EXPECT_THAT(msg, HasSubstr("Permission denied"));
    EXPECT_THAT(msg, HasSubstr("make " + locked.string() + " writable"));
    return;
  }
  // Root writes anywhere; an unprivileged child shows what the agent's user would meet.
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  std::array<int, 2> pipe_fds{};
  ASSERT_EQ(pipe(pipe_fds.data()), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipe_fds[0]);
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) {
      _exit(3);
    }
    std::string msg = "opened";
    try {
      const EventLog log(path);
    } catch (const Error& e) {
      msg = e.what();
    }
    _exit(write(pipe_fds[1], msg.data(), msg.size()) == static_cast<ssize_t>(msg.size()) ? 0 : 4);
  }
  close(pipe_fds[1]);
  std::string msg;
  std::array<char, 512> buf{};
  for (ssize_t n = 0; (n = read(pipe_fds[0], buf.data(), buf.size())) > 0;) {
    msg.append(buf.data(), static_cast<std::size_t>(n));
  }
  close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
    GTEST_SKIP() << "cannot drop privileges here";
  }
  EXPECT_THAT(msg, HasSubstr("cannot open the event log " + path));
  EXPECT_THAT(msg, HasSubstr("Permission denied"));
  EXPECT_THAT(msg, HasSubstr("make " + locked.string() + " writable"));
}

// Regression: each of these said "the directory ... does not exist", of a directory that exists
// (".", "/proc") or that the user never named (the symlink's).
TEST(EventLogTest, EmptyPathSaysItIsEmpty) {
  const std::string msg = open_error_of("");
  EXPECT_THAT(msg, HasSubstr("--event-log: the path is empty"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("does not exist")));
}

TEST(EventLogTest, KernelFileSystemsAreNamed) {
  for (const auto& [path, fs_name] : {std::pair<std::string, std::string>{"/proc/x", "proc"},
                                      {"/proc/self/portlens.jsonl", "proc"},
                                      {"/sys/x", "sysfs"}}) {
    if (!fs::is_directory(fs::path(path).parent_path())) {
      continue;
    }
    const std::string msg = open_error_of(path);
    EXPECT_THAT(msg, HasSubstr("cannot open the event log " + path)) << msg;
    EXPECT_THAT(msg, HasSubstr("kernel's " + fs_name + " file system")) << msg;
    EXPECT_THAT(msg, ::testing::Not(HasSubstr("does not exist"))) << msg;
    EXPECT_THAT(msg, ::testing::Not(HasSubstr("writable"))) << msg;
  }
}

TEST(EventLogTest, DanglingSymlinkNamesItsTarget) {
  const TempDir dir;
  const std::string link = dir.file("events.jsonl");
  const std::string target = dir.file("gone/events.jsonl");
  fs::create_symlink(target, link);
  const std::string msg = open_error_of(link);
  EXPECT_THAT(msg, HasSubstr("cannot open the event log " + link));
  EXPECT_THAT(msg, HasSubstr("it is a symbolic link to " + target));
  EXPECT_THAT(msg, HasSubstr("the directory " + dir.file("gone") + " does not exist"));
  // The link's own directory exists: it is not the one called missing.
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("directory " + dir.path().string() + " does")));
}

TEST(EventLogTest, RelativeSymlinkIsResolvedFromItsDirectory) {
  const TempDir dir;
  fs::create_directory(dir.path() / "logs");
  const std::string link = dir.file("logs/events.jsonl");
  fs::create_symlink("../missing/events.jsonl", link);
  const std::string msg = open_error_of(link);
  EXPECT_THAT(msg, HasSubstr("symbolic link to ../missing/events.jsonl"));
  EXPECT_THAT(msg, HasSubstr("missing does not exist"));
}

TEST(EventLogTest, DanglingSymlinkToWhereItCanBeMadeIsFollowed) {
  const TempDir dir;
  const std::string link = dir.file("events.jsonl");
  fs::create_symlink(dir.file("real.jsonl"), link);
  {
    EventLog log(link);
    log.append(numbered(1));
  }
  EXPECT_EQ(contents(dir.file("real.jsonl")), "{\"n\":1}\n");
}

TEST(EventLogTest, SymlinkLoopIsNamed) {
  const TempDir dir;
  fs::create_symlink(dir.file("b"), dir.file("a"));
  fs::create_symlink(dir.file("a"), dir.file("b"));
  const std::string msg = open_error_of(dir.file("a"));
  EXPECT_THAT(msg, HasSubstr("too many symbolic links"));
}

TEST(EventLogTest, WriteFailuresAreCountedNotThrown) {
  // /dev/full: every write fails with ENOSPC, as on a full disk; not a regular file, so never
  // rotated either.
  EventLog log("/dev/full", /*max_bytes=*/1);
  EXPECT_NO_THROW(log.append(numbered(1)));
  EXPECT_NO_THROW(log.append(numbered(2)));
  const EventLogStats stats = log.stats();
  EXPECT_EQ(stats.write_failures, 2U);
  EXPECT_EQ(stats.lines_written, 0U);
  EXPECT_EQ(stats.rotations, 0U);
}

TEST(EventLogTest, ConcurrentAppendsStayWholeLinesAcrossRotations) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  constexpr std::uint64_t kCap = std::uint64_t{16} << 10;
  EventLog log(path, kCap, /*keep=*/100);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&log, t] {
      for (int i = 0; i < kPerThread; ++i) {
        log.append(nlohmann::json{{"thread", t}, {"i", i}, {"pad", std::string(64, 'a' + t)}});
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  std::set<std::pair<int, int>> seen;
  std::vector<std::string> files{path};
  for (int k = 1; fs::exists(path + "." + std::to_string(k)); ++k) {
    files.push_back(path + "." + std::to_string(k));
  }
  EXPECT_GT(files.size(), 2U);
  for (const auto& file : files) {
    const std::string text = contents(file);
    EXPECT_LE(text.size(), kCap) << file;
    ASSERT_FALSE(text.empty()) << file;
    EXPECT_EQ(text.back(), '\n') << file;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      const auto event = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      ASSERT_FALSE(event.is_discarded()) << file << ": " << line;
      const int t = event.at("thread");
      EXPECT_EQ(event.at("pad"), std::string(64, static_cast<char>('a' + t)));
      EXPECT_TRUE(seen.emplace(t, event.at("i")).second) << line;
    }
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kThreads * kPerThread));
  const EventLogStats stats = log.stats();
  EXPECT_EQ(stats.lines_written, static_cast<std::uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(stats.rotations, files.size() - 1);
  EXPECT_EQ(stats.write_failures, 0U);
}

}  // namespace
TEST(EventLogTest, TheWriterThreadWritesEveryQueuedLine) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  EventLog log(path);
  log.start_writer();
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&log, t] {
      for (int i = 0; i < kPerThread; ++i) {
        log.append(nlohmann::json{{"thread", t}, {"i", i}});
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  ASSERT_TRUE(log.flush(std::chrono::seconds(10)));
  std::istringstream lines(contents(path));
  std::set<std::pair<int, int>> seen;
  for (std::string line; std::getline(lines, line);) {
    const auto event = nlohmann::json::parse(line);
    seen.emplace(event.at("thread"), event.at("i"));
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kThreads * kPerThread));
  const EventLogStats stats = log.stats();
  EXPECT_EQ(stats.lines_written, static_cast<std::uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(stats.dropped, 0U);
  EXPECT_EQ(stats.write_failures, 0U);
}

TEST(EventLogTest, AFifoThatNoOneReadsIsRefusedAtOnce) {
  const TempDir dir;
  const std::string fifo = dir.file("events.fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // Opened blocking, this would wait for a reader for ever; the agent would never start.
  EXPECT_THAT(open_error_of(fifo), HasSubstr("no process has open for reading"));
}

TEST(EventLogTest, AStalledFifoReaderNeverHoldsUpAppendAndDropsAreCounted) {
  const TempDir dir;
  const std::string fifo = dir.file("events.fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  constexpr int kLines = 20000;  // ~2 MB: far beyond the pipe (64 KiB) and the queue
  EventLogStats stats;
  const auto start = std::chrono::steady_clock::now();
  {
    EventLog log(fifo);
    log.start_writer(std::size_t{64} << 10);
    for (int i = 0; i < kLines; ++i) {
      log.append(nlohmann::json{{"i", i}, {"pad", std::string(80, 'x')}});
    }
    EXPECT_FALSE(log.flush(std::chrono::milliseconds(200))) << "no one reads: it cannot drain";
    stats = log.stats();
  }  // the destructor leaves the stalled reader within about half a second
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 5.0);
  EXPECT_GT(stats.dropped, 0U);
  EXPECT_LT(stats.lines_written, static_cast<std::uint64_t>(kLines));
  // What did get through is whole lines, in order.
  std::string got(std::size_t{1} << 20, '\0');
  const ssize_t n = ::read(reader, got.data(), got.size());
  ::close(reader);
  ASSERT_GT(n, 0);
  got.resize(static_cast<std::size_t>(n));
  EXPECT_EQ(got.back(), '\n');
  std::istringstream lines(got);
  int last = -1;
  for (std::string line; std::getline(lines, line);) {
    const int i = nlohmann::json::parse(line).at("i");
    EXPECT_GT(i, last);
    last = i;
  }
}

TEST(EventLogTest, WriteFailuresOfTheWriterThreadAreCountedWithTheirReason) {
  EventLog log("/dev/full");
  log.start_writer();
  log.append(numbered(1));
  log.append(numbered(2));
  ASSERT_TRUE(log.flush(std::chrono::seconds(10)));
  const EventLogStats stats = log.stats();
  EXPECT_EQ(stats.write_failures, 2U);
  EXPECT_THAT(stats.last_write_error, HasSubstr("No space left"));
}

TEST(EventLogTest, ReopenWithTheWriterThreadHandsTheNewFileOver) {
  const TempDir dir;
  const std::string path = dir.file("events.jsonl");
  EventLog log(path);
  log.start_writer();
  log.append(numbered(1));
  ASSERT_TRUE(log.flush(std::chrono::seconds(10)));
  fs::rename(path, path + ".1");
  EXPECT_EQ(log.reopen(), std::nullopt);
  log.append(numbered(2));
  ASSERT_TRUE(log.flush(std::chrono::seconds(10)));
  EXPECT_EQ(contents(path + ".1"), "{\"n\":1}\n");
  EXPECT_EQ(contents(path), "{\"n\":2}\n");
}

}  // namespace portlens
