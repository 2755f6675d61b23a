// migd/device/vfio_errors_test.cc

#include "migd/device/vfio_errors.h"

#include <errno.h>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"

namespace migd::device {
namespace {

using absl::StatusCode;
using vfio::MigState;

TEST(VfioArcError, NamesDeviceArcStrerrorAndErrno) {
  absl::Status s =
      VfioArcError("0000:00:04.0", MigState::kRunningP2P, MigState::kStop, EIO);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(),
            "device 0000:00:04.0: SET_STATE RUNNING_P2P -> STOP: "
            "Input/output error (errno 5)");
}

TEST(VfioArcError, EinvalOnAnArcIsFailedPrecondition) {
  EXPECT_EQ(
      VfioArcError("d", MigState::kResuming, MigState::kStop, EINVAL).code(),
      StatusCode::kFailedPrecondition);
}

TEST(VfioArcError, KeepsTheErrnoAsAPayload) {
  absl::Status s =
      VfioArcError("d", MigState::kStop, MigState::kStopCopy, ENOMEM);
  ASSERT_TRUE(ErrnoOf(s).has_value());
  EXPECT_EQ(*ErrnoOf(s), ENOMEM);
}

TEST(ErrnoOf, SurvivesAnnotation) {
  absl::Status s = base::Annotate(
      VfioErrnoError("d", "GET_STATE", VfioOp::kGetFeature, ENODEV), "job j");
  ASSERT_TRUE(ErrnoOf(s).has_value());
  EXPECT_EQ(*ErrnoOf(s), ENODEV);
}

TEST(ErrnoOf, AbsentOnOtherStatuses) {
  EXPECT_FALSE(ErrnoOf(absl::InternalError("x")).has_value());
  EXPECT_FALSE(ErrnoOf(absl::OkStatus()).has_value());
}

TEST(VfioErrnoCode, NotSupportedIsUnimplementedForEveryOperation) {
  for (VfioOp op :
       {VfioOp::kOpen, VfioOp::kGetFeature, VfioOp::kSetArc,
        VfioOp::kDmaLogging, VfioOp::kDmaLoggingReport, VfioOp::kPrecopyInfo,
        VfioOp::kReset, VfioOp::kDataRead, VfioOp::kDataWrite}) {
    EXPECT_EQ(VfioErrnoCode(op, ENOTTY), StatusCode::kUnimplemented);
    EXPECT_EQ(VfioErrnoCode(op, EOPNOTSUPP), StatusCode::kUnimplemented);
  }
}

TEST(VfioErrnoCode, EinvalIsAStateProblemWhereArgumentsWereChecked) {
  EXPECT_EQ(VfioErrnoCode(VfioOp::kSetArc, EINVAL),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kPrecopyInfo, EINVAL),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kDmaLogging, EINVAL),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kDmaLoggingReport, EINVAL),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kReset, EINVAL),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kOpen, EINVAL), StatusCode::kInvalidArgument);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kDataWrite, EINVAL),
            StatusCode::kInvalidArgument);
}

TEST(VfioErrnoCode, MissingThingsAndVanishedDevicesAreNotFound) {
  EXPECT_EQ(VfioErrnoCode(VfioOp::kOpen, ENOENT), StatusCode::kNotFound);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kGetFeature, ENOENT), StatusCode::kNotFound);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kOpen, ENODEV), StatusCode::kNotFound);
  // A device that went away is not coming back: not kUnavailable.
  EXPECT_EQ(VfioErrnoCode(VfioOp::kSetArc, ENODEV), StatusCode::kNotFound);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kDataRead, ENODEV), StatusCode::kNotFound);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kPrecopyInfo, ENODEV), StatusCode::kNotFound);
}

// ENOMSG on a pre-copy read is a ReadResult (VfioDataStream), not an error;
// the table gives it no code a transient error has, so nothing can take a
// busy device for the temporary end of pre-copy data or the reverse.
TEST(VfioErrnoCode, EnomsgIsNotATransientError) {
  for (VfioOp op :
       {VfioOp::kOpen, VfioOp::kGetFeature, VfioOp::kSetArc,
        VfioOp::kDmaLogging, VfioOp::kDmaLoggingReport, VfioOp::kPrecopyInfo,
        VfioOp::kReset, VfioOp::kDataRead, VfioOp::kDataWrite}) {
    EXPECT_EQ(VfioErrnoCode(op, ENOMSG), StatusCode::kInternal);
  }
}

TEST(VfioErrnoCode, PermissionErrorsArePermissionDenied) {
  EXPECT_EQ(VfioErrnoCode(VfioOp::kOpen, EACCES),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kSetArc, EPERM),
            StatusCode::kPermissionDenied);
}

TEST(VfioErrnoCode, TransientAndResourceErrors) {
  EXPECT_EQ(VfioErrnoCode(VfioOp::kOpen, EBUSY), StatusCode::kUnavailable);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kDataRead, EBUSY), StatusCode::kUnavailable);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kOpen, EMFILE),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kDmaLogging, E2BIG),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kOpen, ETIMEDOUT),
            StatusCode::kDeadlineExceeded);
}

TEST(VfioErrnoCode, AnythingElseIsInternal) {
  EXPECT_EQ(VfioErrnoCode(VfioOp::kSetArc, EIO), StatusCode::kInternal);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kDataWrite, EFAULT), StatusCode::kInternal);
  EXPECT_EQ(VfioErrnoCode(VfioOp::kReset, ESPIPE), StatusCode::kInternal);
}

TEST(VfioErrnoError, FormatsWhatWasAttempted) {
  absl::Status s = VfioErrnoError("0000:00:04.0", "VFIO_DEVICE_RESET",
                                  VfioOp::kReset, EINVAL);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "device 0000:00:04.0: VFIO_DEVICE_RESET: Invalid argument "
            "(errno 22)");
}

TEST(VfioDmaReportError, EopnotsuppSaysReportsAreUnsupportedSoCallersFallBack) {
  absl::Status s = VfioDmaReportError("0000:00:04.0", EOPNOTSUPP);
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(absl::StrContains(
      s.message(),
      "DMA logging reports are not supported by this kernel/driver"))
      << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "errno 95")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "all dirty")) << s;
  EXPECT_EQ(ErrnoOf(s), EOPNOTSUPP);
}

TEST(VfioDmaReportError, OtherErrorsSayTheLogIsUnreliable) {
  absl::Status s = VfioDmaReportError("d", EINVAL);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "treat the range as all dirty"))
      << s;
  EXPECT_EQ(ErrnoOf(s), EINVAL);
}

TEST(AppendToMessage, KeepsCodeAndPayload) {
  absl::Status s = AppendToMessage(
      VfioErrnoError("d", "x", VfioOp::kOpen, EACCES), " (hint)");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::EndsWith(s.message(), "(errno 13) (hint)")) << s;
  EXPECT_EQ(ErrnoOf(s), EACCES);
}

TEST(PrefixMessage, KeepsCodeAndPayload) {
  absl::Status s = PrefixMessage(
      VfioErrnoError("0000:00:04.0", "open /dev/vfio/7", VfioOp::kOpen, EBUSY),
      "vfio device edu0: ");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_TRUE(
      absl::StartsWith(s.message(), "vfio device edu0: device 0000:00:04.0: "))
      << s;
  EXPECT_EQ(ErrnoOf(s), EBUSY);
}

}  // namespace
}  // namespace migd::device
