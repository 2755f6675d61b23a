#include "migd/base/reason.h"

#include "absl/strings/cord.h"
#include "gtest/gtest.h"

namespace migd::base {
namespace {

TEST(Reason, TravelsWithTheStatusThroughAnnotate) {
  absl::Status s = Error(absl::StatusCode::kPermissionDenied,
                         v1::ERROR_REASON_BAD_TOKEN, "token mismatch");
  absl::Status a = Annotate(s, "job j1");
  EXPECT_EQ(a.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(a.message(), "job j1: token mismatch");
  EXPECT_EQ(ReasonOf(a), v1::ERROR_REASON_BAD_TOKEN);
}

TEST(Reason, DerivedFromCodeWhenNoneAttached) {
  EXPECT_EQ(ReasonOf(absl::InvalidArgumentError("x")),
            v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_EQ(ReasonOf(absl::DataLossError("x")),
            v1::ERROR_REASON_STREAM_CORRUPTED);
  EXPECT_EQ(ReasonOf(absl::InternalError("x")), v1::ERROR_REASON_INTERNAL);
  EXPECT_EQ(ReasonOf(absl::OkStatus()), v1::ERROR_REASON_UNSPECIFIED);
}

TEST(Reason, HasReasonOnlyWhenAttached) {
  EXPECT_FALSE(HasReason(absl::UnavailableError("x")));
  EXPECT_FALSE(HasReason(absl::OkStatus()));
  EXPECT_TRUE(HasReason(Error(absl::StatusCode::kUnavailable,
                              v1::ERROR_REASON_DEVICE_ERROR, "x")));
  EXPECT_TRUE(HasReason(
      Annotate(WithReason(absl::InternalError("x"), v1::ERROR_REASON_TIMEOUT),
               "job j")));
}

TEST(Reason, NamesRoundTrip) {
  EXPECT_EQ(ReasonName(v1::ERROR_REASON_NOT_PREPARED),
            "ERROR_REASON_NOT_PREPARED");
  EXPECT_EQ(ReasonFromName("ERROR_REASON_NOT_PREPARED"),
            v1::ERROR_REASON_NOT_PREPARED);
  EXPECT_EQ(ReasonFromName("bogus"), v1::ERROR_REASON_UNSPECIFIED);
}

TEST(StatusText, IsTheCodeAndMessageAndReasonWithoutPayloads) {
  absl::Status s = Error(absl::StatusCode::kFailedPrecondition,
                         v1::ERROR_REASON_DEVICE_ERROR, "device nvf0: no");
  s.SetPayload("type.googleapis.com/migd.device.Errno", absl::Cord("25"));
  EXPECT_EQ(StatusText(s),
            "FAILED_PRECONDITION: device nvf0: no (reason: "
            "ERROR_REASON_DEVICE_ERROR)");
  EXPECT_EQ(StatusText(absl::NotFoundError("gone")), "NOT_FOUND: gone");
  EXPECT_EQ(StatusText(absl::OkStatus()), "OK");
}

TEST(Reason, OkStaysOk) {
  EXPECT_TRUE(WithReason(absl::OkStatus(), v1::ERROR_REASON_INTERNAL).ok());
}

}  // namespace
}  // namespace migd::base
