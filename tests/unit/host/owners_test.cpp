#include "agent/kernel/owners.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace portlens {
namespace {

TEST(ParseSocketLinkTest, AcceptsOnlySocketLinks) {
  EXPECT_EQ(parse_socket_link("socket:[12345]"), 12345U);
  EXPECT_EQ(parse_socket_link("socket:[]"), std::nullopt);
  EXPECT_EQ(parse_socket_link("socket:[12a]"), std::nullopt);
  EXPECT_EQ(parse_socket_link("pipe:[12345]"), std::nullopt);
  EXPECT_EQ(parse_socket_link("/dev/null"), std::nullopt);
  EXPECT_EQ(parse_socket_link("socket:[12345"), std::nullopt);
}

// A fake /proc: pid directories with comm and fd links, so the scan's rules can be checked.
class FakeProc {
 public:
  FakeProc()
      : root_(std::filesystem::temp_directory_path() /
              ("portlens-proc-" + std::to_string(getpid()))) {
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
  }
  ~FakeProc() { std::filesystem::remove_all(root_); }
  FakeProc(const FakeProc&) = delete;
  FakeProc& operator=(const FakeProc&) = delete;
  FakeProc(FakeProc&&) = delete;
  FakeProc& operator=(FakeProc&&) = delete;

  void add(int pid, const std::string& comm, const std::vector<std::string>& links) {
    const auto dir = root_ / std::to_string(pid);
    std::filesystem::create_directories(dir / "fd");
    std::ofstream(dir / "comm") << comm << "\n";
    int fd = 0;
    for (const auto& target : links) {
      std::filesystem::create_symlink(target, dir / "fd" / std::to_string(fd++));
    }
  }
  [[nodiscard]] std::string path() const { return root_.string(); }

 private:
  std::filesystem::path root_;
};

TEST(SocketOwnerMapTest, MapsSocketInodesToTheLowestPid) {
  FakeProc proc;
  proc.add(300, "worker", {"socket:[77]", "socket:[78]"});
  proc.add(200, "master", {"socket:[77]", "/dev/null"});
  proc.add(400, "other", {"pipe:[5]"});
  std::filesystem::create_directories(proc.path() + "/self");  // not a pid: ignored
  SocketOwnerMap owners;
  owners.scan(proc.path());
  EXPECT_EQ(owners.size(), 2U);
  ASSERT_TRUE(owners.find(77).has_value());
  EXPECT_EQ(owners.find(77)->pid, 200U);  // shared after fork: the parent
  EXPECT_EQ(owners.find(77)->comm, "master");
  EXPECT_EQ(owners.find(78)->comm, "worker");
  EXPECT_FALSE(owners.find(5).has_value());
}

TEST(SocketOwnerMapTest, CapIsEnforcedAndCounted) {
  FakeProc proc;
  proc.add(10, "a", {"socket:[1]", "socket:[2]", "socket:[3]"});
  SocketOwnerMap owners(2);
  owners.scan(proc.path());
  EXPECT_EQ(owners.size(), 2U);
  EXPECT_EQ(owners.dropped(), 1U);
}

TEST(SocketOwnerMapTest, FindsThisProcessesRealSocketInRealProc) {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  SocketOwnerMap owners;
  owners.scan();
  const auto owner = owners.find(st.st_ino);
  close(fd);
  ASSERT_TRUE(owner.has_value());
  EXPECT_EQ(owner->pid, static_cast<std::uint32_t>(getpid()));
  SocketTable table;
  SocketEntry e;
  e.inode = st.st_ino;
  table.sockets.push_back(e);
  owners.attribute(table);
  EXPECT_EQ(table.sockets[0].owner->pid, static_cast<std::uint32_t>(getpid()));
}

}  // namespace
}  // namespace portlens
