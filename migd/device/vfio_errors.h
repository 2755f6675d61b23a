// migd/device/vfio_errors.h
//
// Turns what the kernel said (an errno) about what migd asked (an operation
// on a VFIO device, group, container, iommufd or data fd) into an absl::Status
// a caller can act on. Pure functions, so the mapping is tested without
// hardware. Every status keeps the errno twice: in the message
// ("Input/output error (errno 5)") and as a payload (ErrnoOf).
//
// Messages name the device and what was attempted:
//   device 0000:00:04.0: SET_STATE RUNNING_P2P -> STOP: Input/output error
//   (errno 5)

#ifndef MIGD_DEVICE_VFIO_ERRORS_H_
#define MIGD_DEVICE_VFIO_ERRORS_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "migd/vfio/uapi.h"

namespace migd::device {

// What was being attempted; the same errno means different things to
// different operations.
enum class VfioOp {
  kOpen,              // sysfs lookups, open(), container/group/iommufd setup,
                      // GET_DEVICE_FD, BIND/ATTACH, fd handoff
  kGetFeature,        // VFIO_DEVICE_FEATURE GET: MIGRATION, MIG_DEVICE_STATE,
                      // MIG_DATA_SIZE
  kSetArc,            // VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE, one arc
  kDmaLogging,        // DMA_LOGGING_START / DMA_LOGGING_STOP
  kDmaLoggingReport,  // DMA_LOGGING_REPORT
  kPrecopyInfo,       // VFIO_MIG_GET_PRECOPY_INFO on a data fd
  kReset,             // VFIO_DEVICE_RESET
  kDataRead,          // read() on a save data fd
  kDataWrite,         // write() on a load data fd
};

// The code for `err` during `op`:
//   EINVAL          kFailedPrecondition for kSetArc, kPrecopyInfo, kDmaLogging,
//                   kDmaLoggingReport, kReset (the device is not in a state or
//                   mode that allows it: the arguments were checked before the
//                   call); kInvalidArgument otherwise
//   ENOTTY, EOPNOTSUPP  kUnimplemented (no such ioctl/feature here)
//   ENOENT, ENXIO   kNotFound
//   ENODEV          kNotFound (no such device in the group, or the device
//                   went away: unbound, removed, or the data fd was disabled
//                   by a reset; not transient, so not kUnavailable)
//   EPERM, EACCES   kPermissionDenied (includes a wrong or missing VF token)
//   EBUSY, EAGAIN, EINTR, ECONNREFUSED  kUnavailable (try later)
//   ENOMEM, ENOSPC, EMFILE, ENFILE  kResourceExhausted
//   E2BIG, EOVERFLOW, ERANGE  kInvalidArgument
//   ETIMEDOUT       kDeadlineExceeded
//   anything else (EIO, EFAULT, ...)  kInternal
// ENOMSG is not an error where the uAPI uses it: on a save data fd in a
// PRE_COPY state it is the temporary end of the data, which VfioDataStream
// returns as ReadResult::NoDataNow() without consulting this table; anywhere
// else it is unexpected (kInternal).
//
// A code says what a caller can do; it does not say whose fault it is. The
// migration engine attaches ERROR_REASON_DEVICE_ERROR to every status from a
// device call (migration::DeviceError), so a kUnavailable from a busy device
// is never read as a lost peer.
absl::StatusCode VfioErrnoCode(VfioOp op, int err);

// "Input/output error (errno 5)".
std::string ErrnoText(int err);

// "device <device>: <what>: <ErrnoText>", with VfioErrnoCode(op, err) and the
// errno as a payload.
absl::Status VfioErrnoError(absl::string_view device, absl::string_view what,
                            VfioOp op, int err);

// A failed single arc: "device <device>: SET_STATE <from> -> <to>:
// <ErrnoText>".
absl::Status VfioArcError(absl::string_view device, vfio::MigState from,
                          vfio::MigState to, int err);

// DMA_LOGGING_REPORT failed. EOPNOTSUPP (kernels whose VFIO core cannot fill a
// user bitmap, e.g. Debian's 6.12 without CONFIG_IOMMUFD_DRIVER) is
// kUnimplemented and says that DMA logging reports are not supported by this
// kernel/driver, so the caller falls back to treating the range as all dirty.
// Other errors map as VfioErrnoCode(kDmaLoggingReport, err) does; per the uAPI
// the log is then corrupt and the caller must also treat the range as dirty.
absl::Status VfioDmaReportError(absl::string_view device, int err);

// `status` with `suffix` appended to its message, keeping code and payloads.
absl::Status AppendToMessage(const absl::Status& status,
                             absl::string_view suffix);

// `status` with `prefix` put before its message, keeping code and payloads.
absl::Status PrefixMessage(const absl::Status& status,
                           absl::string_view prefix);

// The errno a status from this file carries, if any (kept by base::Annotate
// and anything else that copies payloads).
std::optional<int> ErrnoOf(const absl::Status& status);

}  // namespace migd::device

#endif  // MIGD_DEVICE_VFIO_ERRORS_H_
