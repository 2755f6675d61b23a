// migd/device/vfio_errors.cc

#include "migd/device/vfio_errors.h"

#include <errno.h>
#include <string.h>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace migd::device {
namespace {

constexpr char kErrnoPayloadUrl[] = "type.googleapis.com/migd.device.Errno";

absl::Status WithErrno(absl::Status status, int err) {
  status.SetPayload(kErrnoPayloadUrl, absl::Cord(absl::StrCat(err)));
  return status;
}

}  // namespace

absl::StatusCode VfioErrnoCode(VfioOp op, int err) {
  switch (err) {
    case EINVAL:
      switch (op) {
        case VfioOp::kSetArc:
        case VfioOp::kPrecopyInfo:
        case VfioOp::kDmaLogging:
        case VfioOp::kDmaLoggingReport:
        case VfioOp::kReset:
          return absl::StatusCode::kFailedPrecondition;
        default:
          return absl::StatusCode::kInvalidArgument;
      }
    case ENOTTY:
    case EOPNOTSUPP:
      return absl::StatusCode::kUnimplemented;
    case ENOENT:
    case ENXIO:
    case ENODEV:
      return absl::StatusCode::kNotFound;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case EBUSY:
    case EAGAIN:
    case EINTR:
    case ECONNREFUSED:
      return absl::StatusCode::kUnavailable;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
      return absl::StatusCode::kResourceExhausted;
    case E2BIG:
    case EOVERFLOW:
    case ERANGE:
      return absl::StatusCode::kInvalidArgument;
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      return absl::StatusCode::kInternal;
  }
}

std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r: returns a pointer to the text (maybe not into buf).
  const char* text = strerror_r(err, buf, sizeof(buf));
  return absl::StrCat(text, " (errno ", err, ")");
}

absl::Status VfioErrnoError(absl::string_view device, absl::string_view what,
                            VfioOp op, int err) {
  return WithErrno(absl::Status(VfioErrnoCode(op, err),
                                absl::StrCat("device ", device, ": ", what,
                                             ": ", ErrnoText(err))),
                   err);
}

absl::Status VfioArcError(absl::string_view device, vfio::MigState from,
                          vfio::MigState to, int err) {
  return VfioErrnoError(device,
                        absl::StrCat("SET_STATE ", vfio::MigStateName(from),
                                     " -> ", vfio::MigStateName(to)),
                        VfioOp::kSetArc, err);
}

absl::Status VfioDmaReportError(absl::string_view device, int err) {
  if (err == EOPNOTSUPP) {
    return WithErrno(
        absl::UnimplementedError(absl::StrCat(
            "device ", device,
            ": DMA_LOGGING_REPORT: DMA logging reports are not supported by "
            "this kernel/driver (",
            ErrnoText(err),
            "; the VFIO core cannot fill a user bitmap without "
            "CONFIG_IOMMUFD_DRIVER): treat the range as all dirty")),
        err);
  }
  return AppendToMessage(
      VfioErrnoError(device, "DMA_LOGGING_REPORT", VfioOp::kDmaLoggingReport,
                     err),
      " (the dirty log is unreliable: treat the range as all dirty)");
}

absl::Status AppendToMessage(const absl::Status& status,
                             absl::string_view suffix) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(status.message(), suffix));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, payload);
  });
  return out;
}

absl::Status PrefixMessage(const absl::Status& status,
                           absl::string_view prefix) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(prefix, status.message()));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, payload);
  });
  return out;
}

std::optional<int> ErrnoOf(const absl::Status& status) {
  auto payload = status.GetPayload(kErrnoPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  int err = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &err)) return std::nullopt;
  return err;
}

}  // namespace migd::device
