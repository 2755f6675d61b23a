// migd/device/fd_handoff_test.cc
//
// The handoff between two real processes: fd_handoff_helper (a stand-in VMM,
// started with posix_spawn) opens a file itself and hands it over; the test
// checks it received the same open file (same st_dev/st_ino, and one shared
// file offset that each side sees the other move). Malformed messages are
// tested in-process over socketpairs.
//
// Usage: fd_handoff_test PATH_TO_fd_handoff_helper [gtest flags]

#include "migd/device/fd_handoff.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

extern char** environ;

namespace migd::device {
namespace {

std::string g_helper;

// A short directory for socket paths (sun_path holds 107 bytes; Bazel's
// TEST_TMPDIR can be longer).
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TEST_TMPDIR");
    std::string pattern = (base != nullptr && strlen(base) < 60)
                              ? std::string(base) + "/hoXXXXXX"
                              : std::string("/tmp/migd-handoff-XXXXXX");
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    EXPECT_NE(mkdtemp(buf.data()), nullptr) << strerror(errno);
    path_ = buf.data();
  }
  ~TempDir() {
    for (const std::string& f : files_) unlink(f.c_str());
    rmdir(path_.c_str());
  }
  std::string File(const std::string& name) {
    std::string p = path_ + "/" + name;
    files_.push_back(p);
    files_.push_back(p + ".tmp");
    return p;
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

// A running fd_handoff_helper.
class Helper {
 public:
  Helper(const std::string& socket_path, const std::string& file,
         const std::string& name, off_t offset,
         const std::string& type = "stream") {
    int out[2];
    EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    const std::string off = std::to_string(offset);
    std::vector<char*> argv = {const_cast<char*>(g_helper.c_str()),
                               const_cast<char*>(socket_path.c_str()),
                               const_cast<char*>(file.c_str()),
                               const_cast<char*>(name.c_str()),
                               const_cast<char*>(off.c_str()),
                               const_cast<char*>(type.c_str()),
                               nullptr};
    const int err = posix_spawn(&pid_, g_helper.c_str(), &actions, nullptr,
                                argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    EXPECT_EQ(err, 0) << "posix_spawn " << g_helper << ": " << strerror(err);
    if (err != 0) pid_ = -1;
    stdout_ = out[0];
  }
  ~Helper() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(stdout_);
  }

  // Waits (10 s at most) for "ready": the socket is listening.
  bool WaitReady() {
    std::string got;
    while (got.find('\n') == std::string::npos) {
      struct pollfd p = {stdout_, POLLIN, 0};
      if (poll(&p, 1, 10000) <= 0) return false;
      char buf[64];
      const ssize_t n = read(stdout_, buf, sizeof(buf));
      if (n <= 0) return false;
      got.append(buf, static_cast<size_t>(n));
    }
    return got == "ready\n";
  }

  // The helper's exit status (waits for it).
  int Wait() {
    int status = 0;
    EXPECT_EQ(waitpid(pid_, &status, 0), pid_);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int stdout_ = -1;
  bool reaped_ = false;
};

std::string MakeFile(TempDir& dir) {
  const std::string path = dir.File("device-state");
  const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  const std::string content = "0123456789abcdefghijklmnopqrstuvwxyz";
  EXPECT_EQ(write(fd, content.data(), content.size()),
            static_cast<ssize_t>(content.size()));
  close(fd);
  return path;
}

base::UniqueFd Connect(const std::string& path) {
  base::UniqueFd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  EXPECT_EQ(connect(sock.get(), reinterpret_cast<struct sockaddr*>(&addr),
                    sizeof(addr)),
            0)
      << strerror(errno);
  return sock;
}

// Asks the helper for its own offset of the file.
long HelperOffset(int sock) {
  EXPECT_EQ(write(sock, "o", 1), 1);
  std::string line;
  char c;
  while (read(sock, &c, 1) == 1 && c != '\n') line.push_back(c);
  return atol(line.c_str());
}

void ExpectSameFile(int fd, const std::string& path) {
  struct stat a, b;
  ASSERT_EQ(fstat(fd, &a), 0);
  ASSERT_EQ(stat(path.c_str(), &b), 0);
  EXPECT_EQ(a.st_dev, b.st_dev);
  EXPECT_EQ(a.st_ino, b.st_ino);
}

TEST(FdHandoff, AnotherProcessHandsOverTheSameOpenFile) {
  TempDir dir;
  const std::string file = MakeFile(dir);
  const std::string sock_path = dir.File("vmm.sock");
  Helper helper(sock_path, file, "0000:00:04.0", 5);
  ASSERT_TRUE(helper.WaitReady());

  base::UniqueFd sock = Connect(sock_path);
  absl::StatusOr<HandedOverFd> got = ReceiveFd(sock.get(), absl::Seconds(10));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name, "0000:00:04.0");
  ExpectSameFile(got->fd.get(), file);
  // One open file description: the offset the helper set is ours...
  EXPECT_EQ(lseek(got->fd.get(), 0, SEEK_CUR), 5);
  char c;
  ASSERT_EQ(read(got->fd.get(), &c, 1), 1);
  EXPECT_EQ(c, '5');
  // ...and the helper sees where we moved it.
  ASSERT_EQ(lseek(got->fd.get(), 11, SEEK_SET), 11);
  EXPECT_EQ(HelperOffset(sock.get()), 11);
  // The received fd does not leak into exec'd children.
  EXPECT_NE(fcntl(got->fd.get(), F_GETFD) & FD_CLOEXEC, 0);
  sock.reset();
  EXPECT_EQ(helper.Wait(), 0);
}

TEST(FdHandoff, FetchFdConnectsReceivesAndDisconnects) {
  TempDir dir;
  const std::string file = MakeFile(dir);
  const std::string sock_path = dir.File("vmm.sock");
  Helper helper(sock_path, file, "/dev/vfio/devices/vfio3", 0);
  ASSERT_TRUE(helper.WaitReady());
  absl::StatusOr<HandedOverFd> got = FetchFd(sock_path, absl::Seconds(10));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name, "/dev/vfio/devices/vfio3");
  ExpectSameFile(got->fd.get(), file);
  EXPECT_EQ(helper.Wait(), 0);  // saw EOF: FetchFd closed the connection
}

TEST(FdHandoff, FetchFdAlsoSpeaksSeqpacket) {
  TempDir dir;
  const std::string file = MakeFile(dir);
  const std::string sock_path = dir.File("vmm.sock");
  Helper helper(sock_path, file, "edu0", 7, "seqpacket");
  ASSERT_TRUE(helper.WaitReady());
  absl::StatusOr<HandedOverFd> got = FetchFd(sock_path, absl::Seconds(10));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name, "edu0");
  EXPECT_EQ(lseek(got->fd.get(), 0, SEEK_CUR), 7);
  EXPECT_EQ(helper.Wait(), 0);
}

TEST(FdHandoff, FetchFdWithNothingAtThePathIsNotFound) {
  TempDir dir;
  absl::StatusOr<HandedOverFd> got =
      FetchFd(dir.File("absent.sock"), absl::Seconds(1));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "absent.sock"))
      << got.status();
}

TEST(FdHandoff, FetchFdRefusesABadPath) {
  EXPECT_EQ(FetchFd("relative.sock", absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FetchFd("/run/../etc/x.sock", absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

struct Pair {
  base::UniqueFd a;
  base::UniqueFd b;
};

Pair SocketPair() {
  int fds[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return Pair{base::UniqueFd(fds[0]), base::UniqueFd(fds[1])};
}

// Sends raw bytes with `nfds` copies of stdin's fd attached.
void SendRaw(int sock, const std::string& bytes, int nfds) {
  std::vector<int> fds(nfds, STDIN_FILENO);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (nfds > 0 ? nfds : 1)));
  struct iovec iov = {const_cast<char*>(bytes.data()), bytes.size()};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * nfds);
  }
  ASSERT_EQ(sendmsg(sock, &msg, 0), static_cast<ssize_t>(bytes.size()));
}

std::string Header(uint16_t version, uint16_t len) {
  std::string h = "MGFD";
  h.push_back(static_cast<char>(version & 0xff));
  h.push_back(static_cast<char>(version >> 8));
  h.push_back(static_cast<char>(len & 0xff));
  h.push_back(static_cast<char>(len >> 8));
  return h;
}

TEST(ReceiveFd, RoundTripsInProcess) {
  Pair p = SocketPair();
  ASSERT_TRUE(SendFd(p.a.get(), "dev-1", STDIN_FILENO).ok());
  absl::StatusOr<HandedOverFd> got = ReceiveFd(p.b.get(), absl::Seconds(5));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name, "dev-1");
  EXPECT_TRUE(got->fd.valid());
}

TEST(ReceiveFd, AMessageWithoutAnFdIsRefused) {
  Pair p = SocketPair();
  SendRaw(p.a.get(), Header(1, 3) + "abc", 0);
  EXPECT_EQ(ReceiveFd(p.b.get(), absl::Seconds(5)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ReceiveFd, MoreThanOneFdIsRefused) {
  Pair p = SocketPair();
  SendRaw(p.a.get(), Header(1, 3) + "abc", 2);
  absl::StatusOr<HandedOverFd> got = ReceiveFd(p.b.get(), absl::Seconds(5));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "more than one fd"))
      << got.status();
}

TEST(ReceiveFd, BadMagicVersionOrNameAreRefused) {
  {
    Pair p = SocketPair();
    SendRaw(p.a.get(),
            std::string("XXXX\x01\x00\x03\x00"
                        "abc",
                        11),
            1);
    EXPECT_EQ(ReceiveFd(p.b.get(), absl::Seconds(5)).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    Pair p = SocketPair();
    SendRaw(p.a.get(), Header(2, 3) + "abc", 1);
    EXPECT_EQ(ReceiveFd(p.b.get(), absl::Seconds(5)).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    Pair p = SocketPair();
    SendRaw(p.a.get(), Header(1, 3) + "a b", 1);
    EXPECT_EQ(ReceiveFd(p.b.get(), absl::Seconds(5)).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    Pair p = SocketPair();
    SendRaw(p.a.get(), Header(1, 0), 1);
    EXPECT_EQ(ReceiveFd(p.b.get(), absl::Seconds(5)).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(ReceiveFd, ANameSplitAcrossWritesIsReassembled) {
  Pair p = SocketPair();
  SendRaw(p.a.get(), Header(1, 6) + "ab", 1);
  SendRaw(p.a.get(), "cdef", 0);
  absl::StatusOr<HandedOverFd> got = ReceiveFd(p.b.get(), absl::Seconds(5));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name, "abcdef");
}

TEST(ReceiveFd, APeerThatLeavesEarlyIsUnavailable) {
  Pair p = SocketPair();
  SendRaw(p.a.get(), Header(1, 6) + "ab", 1);
  p.a.reset();
  EXPECT_EQ(ReceiveFd(p.b.get(), absl::Seconds(5)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(ReceiveFd, SilenceTimesOut) {
  Pair p = SocketPair();
  EXPECT_EQ(ReceiveFd(p.b.get(), absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(SendFd, RefusesBadNamesAndFds) {
  Pair p = SocketPair();
  EXPECT_EQ(SendFd(p.a.get(), "", 0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SendFd(p.a.get(), std::string(129, 'a'), 0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SendFd(p.a.get(), "ok", -1).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace migd::device

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH_TO_fd_handoff_helper\n", argv[0]);
    return 2;
  }
  migd::device::g_helper = argv[1];
  if (migd::device::g_helper.find('/') != std::string::npos &&
      migd::device::g_helper[0] != '/') {
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) != nullptr) {
      migd::device::g_helper = std::string(cwd) + "/" + migd::device::g_helper;
    }
  }
  return RUN_ALL_TESTS();
}
