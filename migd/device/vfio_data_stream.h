// migd/device/vfio_data_stream.h
//
// The DataStream of the kernel VFIO backend: read()/write() on the data fd a
// MIG_DEVICE_STATE arc returned, and VFIO_MIG_GET_PRECOPY_INFO on it, with the
// uAPI's stream semantics:
//   EINTR        retried;
//   EAGAIN       (an O_NONBLOCK fd) poll(2) until ready, then retried;
//   ENOMSG       ReadResult::NoDataNow(), not an error: the temporary end of
//                pre-copy data (more may come; ask GetPrecopyInfo, or move
//                on to STOP_COPY);
//   read() == 0  ReadResult::EndOfStream(): the end of the stream in
//                STOP_COPY (in a PRE_COPY state some drivers use it for the
//                temporary end);
//   other errno  an error mapped by VfioErrnoCode, naming the device and the
//                call (ENODEV, the device went away, is kNotFound).
// The session ends when the device leaves the saving/resuming states, is reset
// or is destroyed (VfioSessionTracker); calls after that fail with
// kFailedPrecondition and never touch the fd.

#ifndef MIGD_DEVICE_VFIO_DATA_STREAM_H_
#define MIGD_DEVICE_VFIO_DATA_STREAM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "migd/base/unique_fd.h"
#include "migd/device/device.h"
#include "migd/device/vfio_syscalls.h"

namespace migd::device {

// Which data session of a device is live. Shared by a device and the streams
// it handed out, so a stream outliving its session (or its device) fails
// cleanly instead of reading a disabled fd. Thread-safe.
class VfioSessionTracker {
 public:
  // Starts a new session (the previous one, if any, ends); returns its id.
  uint64_t Begin();
  // Ends the live session, if any. `why` completes "data session ended: ...".
  void End(absl::string_view why);
  // OK while session `id` is live; kFailedPrecondition saying why it ended.
  absl::Status Check(uint64_t id) const;
  // True while some session is live.
  bool HasLive() const;

 private:
  mutable absl::Mutex mu_;
  uint64_t live_ ABSL_GUARDED_BY(mu_) = 0;  // 0: none
  uint64_t last_ ABSL_GUARDED_BY(mu_) = 0;
  std::string why_ended_ ABSL_GUARDED_BY(mu_);
};

class VfioDataStream final : public DataStream {
 public:
  enum class Direction { kSave, kLoad };

  // `device` names the device in errors. `fd` is the data fd; `session` its
  // id in `sessions`.
  VfioDataStream(std::string device, Direction direction, base::UniqueFd fd,
                 std::shared_ptr<const VfioSessionTracker> sessions,
                 uint64_t session,
                 VfioSyscalls syscalls = VfioSyscalls::Real());

  // An empty `buf` reads nothing and returns Data(0) without a system call.
  // kFailedPrecondition on a load stream.
  absl::StatusOr<ReadResult> Read(absl::Span<uint8_t> buf) override;
  // One write(2) (retried on EINTR/EAGAIN); returns what the kernel took. An
  // empty `data` returns 0. kFailedPrecondition on a save stream.
  absl::StatusOr<size_t> Write(absl::Span<const uint8_t> data) override;
  // writev(2) in batches of up to IOV_MAX pieces, resuming after short writes
  // (retried on EINTR/EAGAIN).
  absl::Status WriteAll(absl::Span<const iovec> data) override;
  // VFIO_MIG_GET_PRECOPY_INFO. The kernel answers EINVAL outside the PRE_COPY
  // states (kFailedPrecondition); drivers without PRE_COPY have no such ioctl
  // (kUnimplemented). kFailedPrecondition on a load stream.
  absl::StatusOr<PrecopyInfo> GetPrecopyInfo() override;

  Direction direction() const { return direction_; }
  int fd() const { return fd_.get(); }

 private:
  absl::Status CheckUsable(Direction wanted, absl::string_view call) const;
  // Waits until the fd is ready for `events` (POLLIN/POLLOUT).
  absl::Status WaitReady(short events, absl::string_view call) const;
  // After write(2) or writev(2) failed with `err`: OK when the call is worth
  // repeating (EINTR, or EAGAIN once the fd is writable), else the error.
  absl::Status AfterFailedWrite(int err) const;

  const std::string device_;
  const Direction direction_;
  const base::UniqueFd fd_;
  const std::shared_ptr<const VfioSessionTracker> sessions_;
  const uint64_t session_;
  const VfioSyscalls sys_;
};

}  // namespace migd::device

#endif  // MIGD_DEVICE_VFIO_DATA_STREAM_H_
