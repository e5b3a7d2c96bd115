#include "agent/kernel/netns.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/model/error.hpp"

namespace portlens {
namespace {

using ::testing::HasSubstr;

// Runs resolve_netns(spec), which must throw UsageError, and returns its message.
std::string usage_error_of(const std::string& spec) {
  try {
    const NetnsRef ref = resolve_netns(spec);
    ADD_FAILURE() << "resolve_netns(\"" << spec << "\") resolved to " << ref.path;
  } catch (const UsageError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "resolve_netns(\"" << spec << "\") threw something else: " << e.what();
  }
  return {};
}

TEST(ResolveNetnsTest, EmptySpec) { EXPECT_THAT(usage_error_of(""), HasSubstr("empty")); }

TEST(ResolveNetnsTest, BadPidSpecs) {
  for (const char* spec :
       {"pid:", "pid:abc", "pid:0", "pid:-1", "pid:+1", "pid:12x", "pid: 1", "pid:99999999999"}) {
    const std::string msg = usage_error_of(spec);
    EXPECT_THAT(msg, HasSubstr(spec));
    EXPECT_THAT(msg, HasSubstr("pid:PID"));
  }
}

TEST(ResolveNetnsTest, PidOfNoProcess) {
  // Above the kernel's PID_MAX_LIMIT (4194304), so no process can have it.
  const std::string msg = usage_error_of("pid:4194305");
  EXPECT_THAT(msg, HasSubstr("/proc/4194305/ns/net"));
  EXPECT_THAT(msg, HasSubstr("no such process"));
}

TEST(ResolveNetnsTest, UnknownNameMentionsIpNetnsList) {
  const std::string msg = usage_error_of("portlens-unit-test-no-such-netns");
  EXPECT_THAT(msg, HasSubstr("/run/netns/portlens-unit-test-no-such-netns"));
  EXPECT_THAT(msg, HasSubstr("ip netns list"));
}

TEST(ResolveNetnsTest, DotNamesAreNotNamespaceNames) {
  EXPECT_THAT(usage_error_of("."), HasSubstr("not a namespace name"));
  EXPECT_THAT(usage_error_of(".."), HasSubstr("not a namespace name"));
}

TEST(ResolveNetnsTest, MissingPath) {
  const std::string msg = usage_error_of("/nonexistent/portlens/ns");
  EXPECT_THAT(msg, HasSubstr("cannot open /nonexistent/portlens/ns"));
}

TEST(ResolveNetnsTest, RegularFileIsNotANetworkNamespace) {
  struct stat st {};
  ASSERT_EQ(stat("/etc/hostname", &st), 0) << "the test needs a readable regular file";
  EXPECT_THAT(usage_error_of("/etc/hostname"), HasSubstr("is not a network namespace"));
}

TEST(ResolveNetnsTest, DirectoryIsNotANetworkNamespace) {
  EXPECT_THAT(usage_error_of("/proc/self/ns"), HasSubstr("is not a network namespace"));
}

TEST(ResolveNetnsTest, OtherNamespaceKindsAreNotNetworkNamespaces) {
  // Our own UTS namespace file is readable unprivileged and is a namespace, but not a netns.
  EXPECT_THAT(usage_error_of("/proc/self/ns/uts"), HasSubstr("is not a network namespace"));
}

TEST(ResolveNetnsTest, OwnPidAndProcSelfResolveToTheCurrentNamespace) {
  const NetnsRef current = current_netns();
  ASSERT_NE(current.inode, 0U);
  struct stat st {};
  ASSERT_EQ(stat("/proc/self/ns/net", &st), 0);
  EXPECT_EQ(current.inode, static_cast<std::uint32_t>(st.st_ino));

  const std::string own = "pid:" + std::to_string(getpid());
  const NetnsRef by_pid = resolve_netns(own);
  EXPECT_EQ(by_pid.path, "/proc/" + std::to_string(getpid()) + "/ns/net");
  EXPECT_EQ(by_pid.inode, current.inode);

  const NetnsRef by_path = resolve_netns("/proc/self/ns/net");
  EXPECT_EQ(by_path.path, "/proc/self/ns/net");
  EXPECT_EQ(by_path.inode, current.inode);
}

// Regression: without O_NONBLOCK, `--netns /some/fifo` blocked in open() forever instead of
// saying it is not a namespace. The child gets 2 seconds (SIGALRM kills it otherwise).
TEST(ResolveNetnsDeathTest, FifoIsRejectedWithoutBlocking) {
  std::string dir = (std::filesystem::temp_directory_path() / "portlens-netns-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  const std::string fifo = dir + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EXIT(
      {
        alarm(2);
        try {
          resolve_netns(fifo);
        } catch (const UsageError& e) {
          std::fputs(e.what(), stderr);
          std::_Exit(0);
        }
        std::_Exit(1);
      },
      ::testing::ExitedWithCode(0), "is not a network namespace");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace portlens
