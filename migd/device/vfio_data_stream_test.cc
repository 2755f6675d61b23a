// migd/device/vfio_data_stream_test.cc
//
// The data stream's errno handling against real fds that behave the way a
// kernel data fd does (a blocking pipe interrupted by a signal for EINTR, an
// O_NONBLOCK pipe for EAGAIN, a closed pipe for EOF); only ENOMSG, which no
// ordinary fd produces, comes from an injected read.

#include "migd/device/vfio_data_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "migd/device/vfio_errors.h"
#include "migd/vfio/uapi.h"

namespace migd::device {
namespace {

using Direction = VfioDataStream::Direction;

struct Pipe {
  base::UniqueFd read_end;
  base::UniqueFd write_end;
};

Pipe MakePipe(int flags = 0) {
  int fds[2];
  EXPECT_EQ(pipe2(fds, O_CLOEXEC | flags), 0) << strerror(errno);
  return Pipe{base::UniqueFd(fds[0]), base::UniqueFd(fds[1])};
}

// Real system calls, counting the errnos they return.
struct Counts {
  std::atomic<int> reads{0};
  std::atomic<int> eintr{0};
  std::atomic<int> eagain{0};
};

VfioSyscalls Counting(std::shared_ptr<Counts> counts) {
  VfioSyscalls real = VfioSyscalls::Real();
  VfioSyscalls s = real;
  s.read = [counts, real](int fd, void* buf, size_t n) {
    ++counts->reads;
    const ssize_t r = real.read(fd, buf, n);
    const int err = errno;
    if (r < 0 && err == EINTR) ++counts->eintr;
    if (r < 0 && err == EAGAIN) ++counts->eagain;
    errno = err;
    return r;
  };
  s.write = [counts, real](int fd, const void* buf, size_t n) {
    const ssize_t r = real.write(fd, buf, n);
    const int err = errno;
    if (r < 0 && err == EINTR) ++counts->eintr;
    if (r < 0 && err == EAGAIN) ++counts->eagain;
    errno = err;
    return r;
  };
  return s;
}

struct StreamAndSession {
  std::shared_ptr<VfioSessionTracker> sessions;
  std::unique_ptr<VfioDataStream> stream;
};

StreamAndSession MakeStream(Direction direction, base::UniqueFd fd,
                            VfioSyscalls sys = VfioSyscalls::Real()) {
  StreamAndSession out;
  out.sessions = std::make_shared<VfioSessionTracker>();
  const uint64_t id = out.sessions->Begin();
  out.stream = std::make_unique<VfioDataStream>(
      "0000:00:04.0", direction, std::move(fd), out.sessions, id, sys);
  return out;
}

void WriteString(int fd, const std::string& s) {
  ASSERT_EQ(write(fd, s.data(), s.size()), static_cast<ssize_t>(s.size()));
}

// The bytes a read returned, as a string; for anything but data, what it
// was ("end of stream", "no data now") or the error.
std::string Got(const absl::StatusOr<ReadResult>& r,
                const std::vector<uint8_t>& buf) {
  if (!r.ok()) return r.status().ToString();
  if (r->kind != ReadResult::Kind::kData) return ReadResultText(*r);
  return std::string(buf.begin(), buf.begin() + r->bytes);
}

// Waits (with a deadline) until `done` holds.
template <typename Pred>
bool WaitFor(Pred done, absl::Duration limit = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + limit;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

TEST(VfioDataStream, ReadReturnsTheBytesAvailable) {
  Pipe p = MakePipe();
  WriteString(p.write_end.get(), "state");
  StreamAndSession s = MakeStream(Direction::kSave, std::move(p.read_end));
  std::vector<uint8_t> buf(64);
  absl::StatusOr<ReadResult> r = s.stream->Read(absl::MakeSpan(buf));
  EXPECT_EQ(Got(r, buf), "state");
}

TEST(VfioDataStream, AZeroReadIsTheEndOfStream) {
  Pipe p = MakePipe();
  p.write_end.reset();
  StreamAndSession s = MakeStream(Direction::kSave, std::move(p.read_end));
  std::vector<uint8_t> buf(64);
  EXPECT_EQ(Got(s.stream->Read(absl::MakeSpan(buf)), buf), "end of stream");
}

extern "C" void IgnoreSignal(int) {}

TEST(VfioDataStream, ReadRetriesWhenASignalInterruptsIt) {
  // A handler without SA_RESTART: a blocked read(2) fails with EINTR.
  struct sigaction sa = {}, old = {};
  sa.sa_handler = IgnoreSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);

  auto counts = std::make_shared<Counts>();
  Pipe p = MakePipe();
  StreamAndSession s =
      MakeStream(Direction::kSave, std::move(p.read_end), Counting(counts));
  std::vector<uint8_t> buf(64);
  absl::StatusOr<ReadResult> n = absl::InternalError("not run");
  std::thread reader([&] { n = s.stream->Read(absl::MakeSpan(buf)); });
  const pthread_t handle = reader.native_handle();
  EXPECT_TRUE(WaitFor([&] {
    pthread_kill(handle, SIGUSR1);
    return counts->eintr.load() > 0;
  })) << "the read was never interrupted";
  WriteString(p.write_end.get(), "after");
  reader.join();
  sigaction(SIGUSR1, &old, nullptr);

  EXPECT_EQ(Got(n, buf), "after");
  EXPECT_GE(counts->eintr.load(), 1);
}

TEST(VfioDataStream, ReadPollsAndRetriesOnEagain) {
  auto counts = std::make_shared<Counts>();
  Pipe p = MakePipe(O_NONBLOCK);
  StreamAndSession s =
      MakeStream(Direction::kSave, std::move(p.read_end), Counting(counts));
  std::vector<uint8_t> buf(64);
  absl::StatusOr<ReadResult> n = absl::InternalError("not run");
  std::thread reader([&] { n = s.stream->Read(absl::MakeSpan(buf)); });
  EXPECT_TRUE(WaitFor([&] { return counts->eagain.load() > 0; }));
  WriteString(p.write_end.get(), "late");
  reader.join();
  EXPECT_EQ(Got(n, buf), "late");
}

TEST(VfioDataStream, WritePollsAndRetriesOnEagain) {
  auto counts = std::make_shared<Counts>();
  Pipe p = MakePipe(O_NONBLOCK);
  // Fill the pipe so the next write would block.
  std::vector<uint8_t> chunk(4096, 0xab);
  while (write(p.write_end.get(), chunk.data(), chunk.size()) > 0) {
  }
  ASSERT_EQ(errno, EAGAIN);
  StreamAndSession s =
      MakeStream(Direction::kLoad, std::move(p.write_end), Counting(counts));
  const std::vector<uint8_t> data(100, 0xcd);
  absl::StatusOr<size_t> n = absl::InternalError("not run");
  std::thread writer([&] { n = s.stream->Write(absl::MakeConstSpan(data)); });
  EXPECT_TRUE(WaitFor([&] { return counts->eagain.load() > 0; }));
  // Make room.
  std::vector<uint8_t> sink(1 << 20);
  ASSERT_GT(read(p.read_end.get(), sink.data(), sink.size()), 0);
  writer.join();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_GT(*n, 0u);
}

// A received chunk arrives as several pieces; WriteAll hands them to the
// kernel with writev and resumes inside a piece after a short write (a pipe
// holds less than the chunk, so the kernel takes it in parts).
TEST(VfioDataStream, WriteAllWritesEveryPieceInOrderThroughShortWrites) {
  Pipe p = MakePipe(O_NONBLOCK);
  StreamAndSession s = MakeStream(Direction::kLoad, std::move(p.write_end));
  std::vector<std::vector<uint8_t>> pieces;
  std::string expected;
  for (size_t len : {size_t{1}, size_t{70000}, size_t{3}, size_t{200000}}) {
    std::vector<uint8_t> piece(len);
    for (size_t i = 0; i < len; ++i) {
      piece[i] = static_cast<uint8_t>((i * 7 + len) & 0xff);
    }
    expected.append(piece.begin(), piece.end());
    pieces.push_back(std::move(piece));
  }
  std::vector<iovec> iov;
  for (auto& piece : pieces) iov.push_back({piece.data(), piece.size()});
  std::string got;
  std::thread reader([&] {
    std::vector<char> buf(1 << 16);
    while (got.size() < expected.size()) {
      ssize_t n = read(p.read_end.get(), buf.data(), buf.size());
      if (n > 0) got.append(buf.data(), n);
      if (n < 0 && errno != EAGAIN) break;
      if (n < 0) absl::SleepFor(absl::Milliseconds(1));
    }
  });
  absl::Status st = s.stream->WriteAll(absl::MakeConstSpan(iov));
  reader.join();
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(got == expected) << got.size() << " of " << expected.size();
}

TEST(VfioDataStream, EnomsgIsTheTemporaryEndOfPreCopyData) {
  Pipe p = MakePipe();
  WriteString(p.write_end.get(), "more");
  VfioSyscalls sys = VfioSyscalls::Real();
  auto calls = std::make_shared<int>(0);
  VfioSyscalls real = VfioSyscalls::Real();
  sys.read = [calls, real](int fd, void* buf, size_t n) -> ssize_t {
    if ((*calls)++ == 0) {
      errno = ENOMSG;
      return -1;
    }
    return real.read(fd, buf, n);
  };
  StreamAndSession s = MakeStream(Direction::kSave, std::move(p.read_end), sys);
  std::vector<uint8_t> buf(64);
  // A result, not an error.
  EXPECT_EQ(Got(s.stream->Read(absl::MakeSpan(buf)), buf), "no data now");
  // Not terminal: data that comes later is read.
  EXPECT_EQ(Got(s.stream->Read(absl::MakeSpan(buf)), buf), "more");
}

// Only ENOMSG itself is the temporary end: a device that went away (ENODEV)
// or is busy (EBUSY) mid pre-copy is a fault, whatever code it maps to.
TEST(VfioDataStream, EveryOtherErrnoIsAnErrorNamingTheDevice) {
  for (int err : {ENODEV, EBUSY, EIO}) {
    SCOPED_TRACE(err);
    Pipe p = MakePipe();
    WriteString(p.write_end.get(), "more");
    VfioSyscalls sys = VfioSyscalls::Real();
    sys.read = [err](int, void*, size_t) -> ssize_t {
      errno = err;
      return -1;
    };
    StreamAndSession s =
        MakeStream(Direction::kSave, std::move(p.read_end), sys);
    std::vector<uint8_t> buf(64);
    absl::StatusOr<ReadResult> r = s.stream->Read(absl::MakeSpan(buf));
    ASSERT_FALSE(r.ok()) << Got(r, buf);
    EXPECT_EQ(r.status().code(), VfioErrnoCode(VfioOp::kDataRead, err));
    EXPECT_EQ(ErrnoOf(r.status()), err);
    EXPECT_TRUE(absl::StartsWith(r.status().message(),
                                 "device 0000:00:04.0: data stream read: "))
        << r.status();
  }
}

TEST(VfioDataStream, OtherReadErrorsKeepTheErrno) {
  Pipe p = MakePipe();
  VfioSyscalls sys = VfioSyscalls::Real();
  sys.read = [](int, void*, size_t) -> ssize_t {
    errno = EIO;
    return -1;
  };
  StreamAndSession s = MakeStream(Direction::kSave, std::move(p.read_end), sys);
  std::vector<uint8_t> buf(8);
  absl::StatusOr<ReadResult> n = s.stream->Read(absl::MakeSpan(buf));
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(n.status().message(),
            "device 0000:00:04.0: data stream read: Input/output error "
            "(errno 5)");
  EXPECT_EQ(ErrnoOf(n.status()), EIO);
}

TEST(VfioDataStream, WriteErrorsSayTheLoadIsLost) {
  Pipe p = MakePipe();
  p.read_end.reset();  // EPIPE (SIGPIPE is ignored by the test below)
  struct sigaction sa = {}, old = {};
  sa.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGPIPE, &sa, &old), 0);
  StreamAndSession s = MakeStream(Direction::kLoad, std::move(p.write_end));
  const std::vector<uint8_t> data(8, 1);
  absl::StatusOr<size_t> n = s.stream->Write(absl::MakeConstSpan(data));
  sigaction(SIGPIPE, &old, nullptr);
  EXPECT_FALSE(n.ok());
  EXPECT_TRUE(absl::StrContains(n.status().message(), "the load is lost"))
      << n.status();
  EXPECT_EQ(ErrnoOf(n.status()), EPIPE);
}

TEST(VfioDataStream, CallsAfterTheSessionEndedFailWithoutTouchingTheFd) {
  auto counts = std::make_shared<Counts>();
  Pipe p = MakePipe();
  WriteString(p.write_end.get(), "stale");
  StreamAndSession s =
      MakeStream(Direction::kSave, std::move(p.read_end), Counting(counts));
  s.sessions->End("the device moved PRE_COPY -> RUNNING");
  std::vector<uint8_t> buf(8);
  absl::StatusOr<ReadResult> n = s.stream->Read(absl::MakeSpan(buf));
  EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(n.status().message(),
                                "the device moved PRE_COPY -> RUNNING"))
      << n.status();
  EXPECT_EQ(counts->reads.load(), 0);
  EXPECT_EQ(s.stream->GetPrecopyInfo().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(VfioDataStream, ANewSessionEndsTheOldStream) {
  Pipe p = MakePipe();
  StreamAndSession s = MakeStream(Direction::kSave, std::move(p.read_end));
  s.sessions->Begin();
  std::vector<uint8_t> buf(8);
  EXPECT_EQ(s.stream->Read(absl::MakeSpan(buf)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(VfioDataStream, WrongDirectionIsFailedPrecondition) {
  Pipe save = MakePipe();
  StreamAndSession s = MakeStream(Direction::kSave, std::move(save.read_end));
  const std::vector<uint8_t> data(4, 0);
  EXPECT_EQ(s.stream->Write(absl::MakeConstSpan(data)).status().code(),
            absl::StatusCode::kFailedPrecondition);

  Pipe load = MakePipe();
  StreamAndSession l = MakeStream(Direction::kLoad, std::move(load.write_end));
  std::vector<uint8_t> buf(4);
  EXPECT_EQ(l.stream->Read(absl::MakeSpan(buf)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(l.stream->GetPrecopyInfo().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(VfioDataStream, PrecopyInfoPassesTheKernelStructure) {
  Pipe p = MakePipe();
  const int data_fd = p.read_end.get();
  VfioSyscalls sys = VfioSyscalls::Real();
  sys.ioctl = [data_fd](int fd, unsigned long request, void* arg) {
    EXPECT_EQ(fd, data_fd);
    EXPECT_EQ(request, static_cast<unsigned long>(VFIO_MIG_GET_PRECOPY_INFO));
    auto* info = static_cast<struct vfio_precopy_info*>(arg);
    EXPECT_EQ(info->argsz, sizeof(struct vfio_precopy_info));
    EXPECT_EQ(info->flags, 0u);
    info->initial_bytes = 1000;
    info->dirty_bytes = 24;
    return 0;
  };
  StreamAndSession s = MakeStream(Direction::kSave, std::move(p.read_end), sys);
  absl::StatusOr<PrecopyInfo> info = s.stream->GetPrecopyInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->initial_bytes, 1000u);
  EXPECT_EQ(info->dirty_bytes, 24u);
}

TEST(VfioDataStream, PrecopyInfoOutsidePreCopyIsFailedPrecondition) {
  Pipe p = MakePipe();
  VfioSyscalls sys = VfioSyscalls::Real();
  sys.ioctl = [](int, unsigned long, void*) {
    errno = EINVAL;
    return -1;
  };
  StreamAndSession s = MakeStream(Direction::kSave, std::move(p.read_end), sys);
  absl::StatusOr<PrecopyInfo> info = s.stream->GetPrecopyInfo();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(info.status().message(), "PRE_COPY"))
      << info.status();
}

TEST(VfioDataStream, PrecopyInfoWithoutDriverSupportIsUnimplemented) {
  Pipe p = MakePipe();
  VfioSyscalls sys = VfioSyscalls::Real();
  sys.ioctl = [](int, unsigned long, void*) {
    errno = ENOTTY;
    return -1;
  };
  StreamAndSession s = MakeStream(Direction::kSave, std::move(p.read_end), sys);
  EXPECT_EQ(s.stream->GetPrecopyInfo().status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(VfioDataStream, EmptyBuffersAreNoOps) {
  auto counts = std::make_shared<Counts>();
  Pipe p = MakePipe();
  StreamAndSession s =
      MakeStream(Direction::kSave, std::move(p.read_end), Counting(counts));
  absl::StatusOr<ReadResult> n = s.stream->Read(absl::Span<uint8_t>());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(ReadResultText(*n), "data(0)");
  EXPECT_EQ(counts->reads.load(), 0);
}

}  // namespace
}  // namespace migd::device
