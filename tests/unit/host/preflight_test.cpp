#include "agent/kernel/preflight.hpp"

#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace portlens {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A fake /sys/kernel: a BTF file and a tracefs with every required tracepoint, which each test
// then breaks the way it needs. The tracefs always has events/, so run_preflight never tries to
// mount anything.
class PreflightTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "portlens-preflight-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    root_ = templ;
    paths_.btf = (root_ / "btf" / "vmlinux").string();
    paths_.tracefs = (root_ / "tracing").string();
    paths_.debugfs_tracing = (root_ / "debug" / "tracing").string();  // absent
    fs::create_directories(root_ / "btf");
    std::ofstream(paths_.btf) << "BTF";
    for (const auto& tp : required_tracepoints()) {
      fs::create_directories(fs::path(paths_.tracefs) / "events" / tp);
    }
  }

  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  std::vector<std::string> problems() const {
    std::vector<std::string> out;
    for (const auto& p : run_preflight(paths_)) {
      out.push_back(p.what);
    }
    return out;
  }

  // Problems other than the one about privileges, which depends on who runs the test.
  std::vector<std::string> host_problems() const {
    std::vector<std::string> out = problems();
    std::erase_if(out, [](const std::string& p) { return p.find("CAP_BPF") != std::string::npos; });
    return out;
  }

  fs::path root_;
  PreflightPaths paths_;
};

// Whether this process can load BPF without root: CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON.
bool has_bpf_caps() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("CapEff:")) {
      const std::uint64_t eff = std::strtoull(line.c_str() + 7, nullptr, 16);
      const auto has = [eff](int cap) { return (eff >> cap & 1U) != 0; };
      return has(21) || (has(38) && has(39));
    }
  }
  return false;
}

TEST_F(PreflightTest, RequiredTracepoints) {
  const auto& tps = required_tracepoints();
  for (const char* tp :
       {"syscalls/sys_enter_bind", "syscalls/sys_exit_bind", "syscalls/sys_enter_listen",
        "syscalls/sys_exit_listen", "syscalls/sys_enter_connect", "syscalls/sys_exit_connect",
        "sock/inet_sock_set_state"}) {
    EXPECT_NE(std::find(tps.begin(), tps.end(), tp), tps.end()) << tp;
  }
}

TEST_F(PreflightTest, AllPresentHasNoHostProblems) {
  EXPECT_THAT(host_problems(), ::testing::IsEmpty());
}

TEST_F(PreflightTest, PrivilegeProblemDependsOnWhoRuns) {
  const std::vector<std::string> all = problems();
  const bool has_priv_problem = std::any_of(all.begin(), all.end(), [](const std::string& p) {
    return p.find("CAP_BPF") != std::string::npos && p.find("CAP_PERFMON") != std::string::npos;
  });
  if (geteuid() == 0) {
    EXPECT_FALSE(has_priv_problem);
    EXPECT_THAT(all, ::testing::IsEmpty());
  } else {
    EXPECT_EQ(has_priv_problem, !has_bpf_caps());
  }
}

TEST_F(PreflightTest, MissingBtf) {
  fs::remove(paths_.btf);
  const auto found = host_problems();
  ASSERT_EQ(found.size(), 1U);
  EXPECT_THAT(found[0], HasSubstr("BTF"));
  EXPECT_THAT(found[0], HasSubstr("CONFIG_DEBUG_INFO_BTF"));
  EXPECT_THAT(found[0], HasSubstr(paths_.btf));
}

TEST_F(PreflightTest, EachMissingTracepointIsNamed) {
  for (const auto& tp : required_tracepoints()) {
    SCOPED_TRACE(tp);
    const fs::path dir = fs::path(paths_.tracefs) / "events" / tp;
    fs::remove(dir);
    const auto found = host_problems();
    ASSERT_EQ(found.size(), 1U);
    EXPECT_THAT(found[0], HasSubstr(tp));
    EXPECT_THAT(found[0], HasSubstr(paths_.tracefs));
    if (tp.starts_with("syscalls/")) {
      EXPECT_THAT(found[0], HasSubstr("CONFIG_FTRACE_SYSCALLS"));
    }
    fs::create_directories(dir);
  }
}

TEST_F(PreflightTest, SeveralProblemsAreAllReported) {
  fs::remove(paths_.btf);
  fs::remove_all(fs::path(paths_.tracefs) / "events" / "syscalls");
  const auto found = host_problems();
  const auto syscall_tps =
      std::count_if(required_tracepoints().begin(), required_tracepoints().end(),
                    [](const std::string& tp) { return tp.starts_with("syscalls/"); });
  ASSERT_EQ(found.size(), static_cast<std::size_t>(1 + syscall_tps));
  EXPECT_THAT(found[0], HasSubstr("CONFIG_DEBUG_INFO_BTF"));
  for (std::size_t i = 1; i < found.size(); ++i) {
    EXPECT_THAT(found[i], HasSubstr("syscalls/"));
  }
}

TEST_F(PreflightTest, DebugfsTracingIsPreferredWhenItHasEvents) {
  // An empty debugfs tracing dir with events/ is used first, so every tracepoint is missing there.
  fs::create_directories(fs::path(paths_.debugfs_tracing) / "events");
  const auto found = host_problems();
  EXPECT_EQ(found.size(), required_tracepoints().size());
  for (const auto& p : found) {
    EXPECT_THAT(p, HasSubstr(paths_.debugfs_tracing));
  }
  EXPECT_EQ(ensure_tracefs(paths_), paths_.debugfs_tracing);
}

TEST_F(PreflightTest, EnsureTracefsFindsAnExistingTracefs) {
  EXPECT_EQ(ensure_tracefs(paths_), paths_.tracefs);
}

TEST_F(PreflightTest, RequirePreflightNamesTheFirstProblemAndCountsTheRest) {
  // The privilege problem, when there is one, comes first.
  const bool unprivileged = geteuid() != 0 && !has_bpf_caps();
  fs::remove(paths_.btf);
  fs::remove(fs::path(paths_.tracefs) / "events" / "sock" / "inet_sock_set_state");
  fs::remove(fs::path(paths_.tracefs) / "events" / "tcp" / "tcp_receive_reset");
  try {
    require_preflight(paths_);
    ADD_FAILURE() << "require_preflight did not throw";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    if (unprivileged) {
      EXPECT_THAT(msg, HasSubstr("CAP_BPF"));
      EXPECT_THAT(msg, HasSubstr("(and 3 more problems"));
    } else {
      EXPECT_THAT(msg, HasSubstr("CONFIG_DEBUG_INFO_BTF"));
      EXPECT_THAT(msg, HasSubstr("(and 2 more problems"));
    }
  }
}

TEST_F(PreflightTest, RequirePreflightWithOneProblemCountsNoOthers) {
  const bool unprivileged = geteuid() != 0 && !has_bpf_caps();
  if (!unprivileged) {
    fs::remove(paths_.btf);
  }
  try {
    require_preflight(paths_);
    ADD_FAILURE() << "require_preflight did not throw";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    EXPECT_THAT(msg, HasSubstr(unprivileged ? "CAP_BPF" : "CONFIG_DEBUG_INFO_BTF"));
    EXPECT_THAT(msg, ::testing::Not(HasSubstr("more problem")));
  }
}

// fn() as the agent's unprivileged user would meet it: in a child that drops to nobody when this
// runs as root (root reads every directory whatever its mode). nullopt when privileges cannot be
// dropped here.
std::optional<std::string> as_unprivileged(const std::function<std::string()>& fn) {
  if (geteuid() != 0) {
    return fn();
  }
  std::array<int, 2> pipe_fds{};
  if (pipe(pipe_fds.data()) != 0) {
    return std::nullopt;
  }
  const pid_t child = fork();
  if (child < 0) {
    return std::nullopt;
  }
  if (child == 0) {
    close(pipe_fds[0]);
    if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0) {
      _exit(3);
    }
    const std::string out = fn();
    _exit(write(pipe_fds[1], out.data(), out.size()) == static_cast<ssize_t>(out.size()) ? 0 : 4);
  }
  close(pipe_fds[1]);
  std::string out;
  std::array<char, 4096> buf{};
  for (ssize_t n = 0; (n = read(pipe_fds[0], buf.data(), buf.size())) > 0;) {
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  close(pipe_fds[0]);
  int status = 0;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return std::nullopt;
  }
  return out;
}

// What ensure_tracefs throws (or "" when it finds a tracing directory), as the unprivileged user.
std::optional<std::string> tracefs_error_unprivileged(const PreflightPaths& paths) {
  return as_unprivileged([paths]() -> std::string {
    try {
      static_cast<void>(ensure_tracefs(paths));
      return "";
    } catch (const std::exception& e) {
      return e.what();
    }
  });
}

TEST_F(PreflightTest, TracefsMountedButUnreadableIsNotCalledUnmounted) {
  // The mount table lists a tracefs at paths_.tracefs, whose directory this user cannot enter.
  paths_.mounts = (root_ / "mounts").string();
  std::ofstream(paths_.mounts) << "sysfs /sys sysfs rw 0 0\n"
                               << "tracefs " << paths_.tracefs << " tracefs rw,relatime 0 0\n";
  ASSERT_EQ(chmod(root_.c_str(), 0755), 0);  // so that nobody reaches it
  ASSERT_EQ(chmod(paths_.mounts.c_str(), 0644), 0);
  ASSERT_EQ(chmod(paths_.tracefs.c_str(), 0000), 0);
  const auto msg = tracefs_error_unprivileged(paths_);
  ASSERT_EQ(chmod(paths_.tracefs.c_str(), 0755), 0);  // so that TearDown can remove it
  if (!msg) {
    GTEST_SKIP() << "cannot drop privileges here";
  }
  EXPECT_THAT(*msg, HasSubstr("tracefs is mounted at " + paths_.tracefs +
                              " but this process cannot read it"));
  EXPECT_THAT(*msg, HasSubstr("Permission denied"));
  EXPECT_THAT(*msg, ::testing::Not(HasSubstr("not mounted")));
}

TEST_F(PreflightTest, UnreadableEventsDirectoryIsNamedEvenWhenTheMountTableIsSilent) {
  // events/ itself closed (0700, another owner or no x bit): the mount table lists nothing.
  paths_.mounts = (root_ / "mounts").string();
  std::ofstream(paths_.mounts) << "";
  ASSERT_EQ(chmod(root_.c_str(), 0755), 0);
  ASSERT_EQ(chmod(paths_.tracefs.c_str(), 0755), 0);
  const std::string events = paths_.tracefs + "/events";
  ASSERT_EQ(chmod(events.c_str(), 0000), 0);
  const auto msg = tracefs_error_unprivileged(paths_);
  ASSERT_EQ(chmod(events.c_str(), 0755), 0);
  if (!msg) {
    GTEST_SKIP() << "cannot drop privileges here";
  }
  EXPECT_THAT(*msg, HasSubstr("cannot read " + events));
  EXPECT_THAT(*msg, ::testing::Not(HasSubstr("not mounted")));
}

TEST_F(PreflightTest, MountedTracefsWithoutEventsIsNotMountedAgain) {
  paths_.mounts = (root_ / "mounts").string();
  std::ofstream(paths_.mounts) << "tracefs " << paths_.tracefs << " tracefs rw 0 0\n";
  fs::remove_all(fs::path(paths_.tracefs) / "events");
  try {
    ensure_tracefs(paths_);
    ADD_FAILURE() << "ensure_tracefs found a tracing directory";
  } catch (const std::exception& e) {
    EXPECT_THAT(std::string(e.what()),
                HasSubstr("tracefs mounted at " + paths_.tracefs + " has no events/ directory"));
  }
}

TEST_F(PreflightTest, NotMountedAndUnmountableSaysNotMounted) {
  // Nothing at either place and the mount table empty: ensure_tracefs tries to mount, which only
  // root can; as nobody the mount fails and the message says tracefs is not mounted.
  paths_.mounts = (root_ / "mounts").string();
  std::ofstream(paths_.mounts) << "";
  ASSERT_EQ(chmod(root_.c_str(), 0755), 0);
  ASSERT_EQ(chmod(paths_.mounts.c_str(), 0644), 0);
  fs::remove_all(fs::path(paths_.tracefs) / "events");
  ASSERT_EQ(chmod(paths_.tracefs.c_str(), 0755), 0);
  const auto msg = tracefs_error_unprivileged(paths_);
  if (!msg) {
    GTEST_SKIP() << "cannot drop privileges here";
  }
  EXPECT_THAT(*msg, HasSubstr("tracefs is not mounted"));
  EXPECT_THAT(*msg, HasSubstr("mounting it at " + paths_.tracefs + " failed"));
  EXPECT_THAT(*msg, ::testing::Not(HasSubstr("cannot read")));
}

TEST_F(PreflightTest, RequirePreflightCarriesEveryProblemForVerbose) {
  fs::remove(paths_.btf);
  fs::remove(fs::path(paths_.tracefs) / "events" / "sock" / "inet_sock_set_state");
  const std::vector<std::string> expected = problems();
  ASSERT_GE(expected.size(), 2U);
  try {
    require_preflight(paths_);
    ADD_FAILURE() << "require_preflight did not throw";
  } catch (const PreflightError& e) {
    std::vector<std::string> carried;
    for (const auto& p : e.problems()) {
      carried.push_back(p.what);
    }
    EXPECT_EQ(carried, expected);
    EXPECT_THAT(std::string(e.what()), HasSubstr(expected.front()));
  }
}

}  // namespace
}  // namespace portlens
