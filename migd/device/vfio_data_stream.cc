// migd/device/vfio_data_stream.cc

#include "migd/device/vfio_data_stream.h"

#include <errno.h>
#include <poll.h>

#include <algorithm>
#include <climits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "migd/device/vfio_errors.h"
#include "migd/vfio/uapi.h"

namespace migd::device {

// ---- VfioSessionTracker. ----

uint64_t VfioSessionTracker::Begin() {
  absl::MutexLock l(&mu_);
  live_ = ++last_;
  why_ended_.clear();
  return live_;
}

void VfioSessionTracker::End(absl::string_view why) {
  absl::MutexLock l(&mu_);
  if (live_ == 0) return;
  live_ = 0;
  why_ended_ = std::string(why);
}

absl::Status VfioSessionTracker::Check(uint64_t id) const {
  absl::MutexLock l(&mu_);
  if (id != 0 && id == live_) return absl::OkStatus();
  if (live_ != 0) {
    return absl::FailedPreconditionError(
        "data session ended: a newer session replaced it");
  }
  return absl::FailedPreconditionError(
      absl::StrCat("data session ended: ", why_ended_));
}

bool VfioSessionTracker::HasLive() const {
  absl::MutexLock l(&mu_);
  return live_ != 0;
}

// ---- VfioDataStream. ----

VfioDataStream::VfioDataStream(
    std::string device, Direction direction, base::UniqueFd fd,
    std::shared_ptr<const VfioSessionTracker> sessions, uint64_t session,
    VfioSyscalls syscalls)
    : device_(std::move(device)),
      direction_(direction),
      fd_(std::move(fd)),
      sessions_(std::move(sessions)),
      session_(session),
      sys_(std::move(syscalls)) {}

absl::Status VfioDataStream::CheckUsable(Direction wanted,
                                         absl::string_view call) const {
  if (absl::Status s = sessions_->Check(session_); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device_, ": data stream ", call, ": ", s.message()));
  }
  if (direction_ != wanted) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device_, ": data stream ", call, " on a ",
        direction_ == Direction::kSave ? "save (STOP_COPY/PRE_COPY)"
                                       : "load (RESUMING)",
        " stream"));
  }
  return absl::OkStatus();
}

absl::Status VfioDataStream::WaitReady(short events,
                                       absl::string_view call) const {
  for (;;) {
    struct pollfd p = {fd_.get(), events, 0};
    const int r = ::poll(&p, 1, -1);
    if (r >= 0) return absl::OkStatus();  // ready, or HUP/ERR: retry the call
    if (errno == EINTR) continue;
    return VfioErrnoError(
        device_, absl::StrCat("data stream ", call, ": poll"),
        direction_ == Direction::kSave ? VfioOp::kDataRead : VfioOp::kDataWrite,
        errno);
  }
}

absl::StatusOr<ReadResult> VfioDataStream::Read(absl::Span<uint8_t> buf) {
  if (absl::Status s = CheckUsable(Direction::kSave, "read"); !s.ok()) return s;
  if (buf.empty()) return ReadResult::Data(0);
  for (;;) {
    const ssize_t n = sys_.read(fd_.get(), buf.data(), buf.size());
    if (n > 0) return ReadResult::Data(static_cast<size_t>(n));
    if (n == 0) return ReadResult::EndOfStream();
    const int err = errno;
    switch (err) {
      case EINTR:
        continue;
      case EAGAIN:
#if EWOULDBLOCK != EAGAIN
      case EWOULDBLOCK:
#endif
        if (absl::Status s = WaitReady(POLLIN, "read"); !s.ok()) return s;
        continue;
      case ENOMSG:
        // The uAPI's signal, not a fault: exactly this errno, nothing that
        // merely shares its status code.
        return ReadResult::NoDataNow();
      default:
        return VfioErrnoError(device_, "data stream read", VfioOp::kDataRead,
                              err);
    }
  }
}

absl::StatusOr<size_t> VfioDataStream::Write(absl::Span<const uint8_t> data) {
  if (absl::Status s = CheckUsable(Direction::kLoad, "write"); !s.ok()) {
    return s;
  }
  if (data.empty()) return 0;
  for (;;) {
    const ssize_t n = sys_.write(fd_.get(), data.data(), data.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (absl::Status s = AfterFailedWrite(errno); !s.ok()) return s;
  }
}

absl::Status VfioDataStream::AfterFailedWrite(int err) const {
  if (err == EINTR) return absl::OkStatus();
  if (err == EAGAIN || err == EWOULDBLOCK) return WaitReady(POLLOUT, "write");
  return VfioErrnoError(
      device_,
      "data stream write (the load is lost: RESUMING -> STOP will fail; "
      "reset the device)",
      VfioOp::kDataWrite, err);
}

absl::Status VfioDataStream::WriteAll(absl::Span<const iovec> data) {
  if (!sys_.writev) return DataStream::WriteAll(data);
  if (absl::Status s = CheckUsable(Direction::kLoad, "write"); !s.ok()) {
    return s;
  }
  std::vector<iovec> left(data.begin(), data.end());
  size_t first = 0;
  while (first < left.size()) {
    if (left[first].iov_len == 0) {
      ++first;
      continue;
    }
    int count =
        static_cast<int>(std::min<size_t>(left.size() - first, IOV_MAX));
    const ssize_t n = sys_.writev(fd_.get(), &left[first], count);
    if (n < 0) {
      if (absl::Status s = AfterFailedWrite(errno); !s.ok()) return s;
      continue;
    }
    if (n == 0) {
      return VfioErrnoError(device_, "data stream write took no bytes",
                            VfioOp::kDataWrite, EIO);
    }
    // Skip what the kernel took, possibly ending inside a piece.
    size_t taken = static_cast<size_t>(n);
    while (taken > 0) {
      size_t step = std::min(taken, left[first].iov_len);
      left[first].iov_base = static_cast<char*>(left[first].iov_base) + step;
      left[first].iov_len -= step;
      taken -= step;
      if (left[first].iov_len == 0) ++first;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PrecopyInfo> VfioDataStream::GetPrecopyInfo() {
  if (absl::Status s = CheckUsable(Direction::kSave, "precopy info"); !s.ok()) {
    return s;
  }
  struct vfio_precopy_info info = {};
  info.argsz = sizeof(info);
  info.flags = 0;
  for (;;) {
    if (sys_.ioctl(fd_.get(), VFIO_MIG_GET_PRECOPY_INFO, &info) == 0) break;
    const int err = errno;
    if (err == EINTR) continue;
    absl::Status s = VfioErrnoError(device_, "VFIO_MIG_GET_PRECOPY_INFO",
                                    VfioOp::kPrecopyInfo, err);
    if (err == EINVAL) return AppendToMessage(s, " (only in PRE_COPY states)");
    if (err == ENOTTY) {
      return AppendToMessage(s, " (the driver has no PRE_COPY support)");
    }
    return s;
  }
  PrecopyInfo out;
  out.initial_bytes = info.initial_bytes;
  out.dirty_bytes = info.dirty_bytes;
  return out;
}

}  // namespace migd::device
