#include "migd/base/reason.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/types/optional.h"

namespace migd::base {
namespace {

constexpr char kPayloadUrl[] = "type.migd.dev/migd.v1.ErrorReason";

}  // namespace

absl::Status WithReason(absl::Status status, ErrorReason reason) {
  if (status.ok()) return status;
  status.SetPayload(kPayloadUrl, absl::Cord(ReasonName(reason)));
  return status;
}

absl::Status Error(absl::StatusCode code, ErrorReason reason,
                   absl::string_view message) {
  return WithReason(absl::Status(code, message), reason);
}

absl::Status InvalidRequest(absl::string_view message) {
  return Error(absl::StatusCode::kInvalidArgument,
               v1::ERROR_REASON_INVALID_REQUEST, message);
}

ErrorReason ReasonOf(const absl::Status& status) {
  if (status.ok()) return v1::ERROR_REASON_UNSPECIFIED;
  absl::optional<absl::Cord> payload = status.GetPayload(kPayloadUrl);
  if (payload.has_value()) {
    ErrorReason r = ReasonFromName(std::string(*payload));
    if (r != v1::ERROR_REASON_UNSPECIFIED) return r;
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return v1::ERROR_REASON_INVALID_REQUEST;
    case absl::StatusCode::kCancelled:
      return v1::ERROR_REASON_CANCELLED;
    case absl::StatusCode::kDeadlineExceeded:
      return v1::ERROR_REASON_TIMEOUT;
    case absl::StatusCode::kUnavailable:
      return v1::ERROR_REASON_PEER_UNAVAILABLE;
    case absl::StatusCode::kDataLoss:
      return v1::ERROR_REASON_STREAM_CORRUPTED;
    default:
      return v1::ERROR_REASON_INTERNAL;
  }
}

bool HasReason(const absl::Status& status) {
  if (status.ok()) return false;
  absl::optional<absl::Cord> payload = status.GetPayload(kPayloadUrl);
  return payload.has_value() &&
         ReasonFromName(std::string(*payload)) != v1::ERROR_REASON_UNSPECIFIED;
}

std::string ReasonName(ErrorReason reason) {
  return v1::ErrorReason_Name(reason);
}

ErrorReason ReasonFromName(absl::string_view name) {
  ErrorReason r = v1::ERROR_REASON_UNSPECIFIED;
  if (!v1::ErrorReason_Parse(std::string(name), &r)) {
    return v1::ERROR_REASON_UNSPECIFIED;
  }
  return r;
}

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  absl::Status out(status.code(),
                   absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, payload);
  });
  return out;
}

std::string StatusText(const absl::Status& status) {
  if (status.ok()) return "OK";
  std::string out = absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                                 status.message());
  if (HasReason(status)) {
    absl::StrAppend(&out, " (reason: ", ReasonName(ReasonOf(status)), ")");
  }
  return out;
}

}  // namespace migd::base
