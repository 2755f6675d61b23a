// migd/base/reason.h
//
// Attaches a machine-readable cause (migd.v1.ErrorReason) to an absl::Status,
// so the reason travels with the error from where it is known (a device arc, a
// chunk check) to the API edge, which puts it in the "migd-error-reason"
// trailer and in a failed job's record.

#ifndef MIGD_BASE_REASON_H_
#define MIGD_BASE_REASON_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::base {

using ::migd::v1::ErrorReason;

// The trailing-metadata key carrying the reason name on RPC errors.
inline constexpr char kReasonMetadataKey[] = "migd-error-reason";

// Returns `status` with `reason` attached (replacing any earlier one).
// An OK status is returned unchanged.
absl::Status WithReason(absl::Status status, ErrorReason reason);

// Shorthand: a new status with code, message and reason.
absl::Status Error(absl::StatusCode code, ErrorReason reason,
                   absl::string_view message);

// kInvalidArgument with INVALID_REQUEST: a caller sent a bad field.
absl::Status InvalidRequest(absl::string_view message);

// The reason attached to `status`; when none was attached, one derived from
// the status code (e.g. kNotFound -> DEVICE_NOT_FOUND is not guessed: it gives
// ERROR_REASON_INTERNAL for unexpected codes and INVALID_REQUEST for
// kInvalidArgument). The derivation reads codes as the gRPC edge means them:
// kUnavailable is PEER_UNAVAILABLE. A status from elsewhere whose code means
// something else there (a device's EBUSY is kUnavailable too) must carry its
// reason (migration::DeviceError does that for every device call).
ErrorReason ReasonOf(const absl::Status& status);

// True when a reason was attached to `status` (WithReason, Error), as opposed
// to one ReasonOf would derive from the code.
bool HasReason(const absl::Status& status);

// "ERROR_REASON_BAD_TOKEN" <-> enum; unknown names give UNSPECIFIED.
std::string ReasonName(ErrorReason reason);
ErrorReason ReasonFromName(absl::string_view name);

// Prefixes the status message with `context` ("device emu0: ..."), keeping the
// code and the reason.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

// A status for a log line or a person: "FAILED_PRECONDITION: <message>",
// with " (reason: ERROR_REASON_...)" when a reason was attached. Never the
// payloads (absl::Status::ToString() appends them, e.g.
// "[type.googleapis.com/migd.device.Errno='25']"): they are for programs.
// "OK" for an OK status.
std::string StatusText(const absl::Status& status);

}  // namespace migd::base

#endif  // MIGD_BASE_REASON_H_
