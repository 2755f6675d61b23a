#include "migd/migration/device_steps.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "migd/device/emulated_device.h"

namespace migd::migration {
namespace {

using vfio::MigState;

std::unique_ptr<device::EmulatedDevice> DeviceIn(MigState state) {
  device::EmulatedDeviceConfig c;
  c.name = "emu0";
  c.state_size = 64 << 10;
  c.seed = 1;
  c.flags = vfio::kMigStopCopy | vfio::kMigP2P | vfio::kMigPreCopy;
  auto d = device::EmulatedDevice::Create(c);
  EXPECT_TRUE(d.ok()) << d.status();
  if (!d.ok()) return nullptr;
  if (state != MigState::kRunning) {
    auto moved = (*d)->SetState(state);
    EXPECT_TRUE(moved.ok()) << moved.status();
  }
  return *std::move(d);
}

Job SourceJobRecord() {
  return Job("j1", v1::ROLE_SOURCE, "peer", {{"emu0", "emu0"}});
}

TEST(SettleFoundState, ASourceGoesOnFromRunningUntouched) {
  auto d = DeviceIn(MigState::kRunning);
  ASSERT_NE(d, nullptr);
  Job job = SourceJobRecord();
  absl::StatusOr<MigState> s =
      SettleFoundState(&job, 0, d.get(), DeviceRole::kSource);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, MigState::kRunning);
  EXPECT_EQ(job.Snapshot().state_changes_size(), 0);
}

// Neither a stopped nor a left-over source device is touched: the agent does
// not know whether its state is a running VM's or already runs elsewhere.
TEST(SettleFoundState, ASourceNotRunningIsRefusedUntouchedWithWhatToDo) {
  for (MigState found :
       {MigState::kStop, MigState::kRunningP2P, MigState::kPreCopy,
        MigState::kPreCopyP2P, MigState::kStopCopy, MigState::kResuming}) {
    SCOPED_TRACE(vfio::MigStateName(found));
    auto d = DeviceIn(found);
    ASSERT_NE(d, nullptr);
    const std::string digest = d->StateDigest().value();
    Job job = SourceJobRecord();
    absl::StatusOr<MigState> s =
        SettleFoundState(&job, 0, d.get(), DeviceRole::kSource);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(base::ReasonOf(s.status()), v1::ERROR_REASON_DEVICE_ERROR);
    const std::string message(s.status().message());
    EXPECT_TRUE(absl::StrContains(
        message, absl::StrCat("device emu0 is ", vfio::MigStateName(found))))
        << message;
    EXPECT_TRUE(absl::StrContains(message, "owner resumes it (RUNNING)"))
        << message;
    EXPECT_TRUE(absl::StrContains(
        message, found == MigState::kStop ? "idle" : "left over"))
        << message;
    EXPECT_EQ(d->GetState().value(), found);
    EXPECT_EQ(d->StateDigest().value(), digest);
    EXPECT_EQ(job.Snapshot().notices_size(), 0);
  }
}

TEST(SettleFoundState, ADestinationLeftOverIsResetRecordedAndNoted) {
  auto d = DeviceIn(MigState::kResuming);
  ASSERT_NE(d, nullptr);
  Job job("j1", v1::ROLE_DESTINATION, "peer", {{"emu0", "emu0"}});
  absl::StatusOr<MigState> s =
      SettleFoundState(&job, 0, d.get(), DeviceRole::kDestination);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, MigState::kRunning);
  EXPECT_EQ(d->GetState().value(), MigState::kRunning);
  v1::Migration record = job.Snapshot();
  ASSERT_EQ(record.state_changes_size(), 1);
  EXPECT_EQ(record.state_changes(0).state(), v1::DEVICE_STATE_RUNNING);
  ASSERT_EQ(record.notices_size(), 1);
  EXPECT_TRUE(
      absl::StrContains(record.notices(0), "emu0 was found in RESUMING"))
      << record.notices(0);
}

TEST(SettleFoundState, ADestinationGoesOnFromStopUntouched) {
  auto d = DeviceIn(MigState::kStop);
  ASSERT_NE(d, nullptr);
  Job job("j1", v1::ROLE_DESTINATION, "peer", {{"emu0", "emu0"}});
  absl::StatusOr<MigState> s =
      SettleFoundState(&job, 0, d.get(), DeviceRole::kDestination);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, MigState::kStop);
  EXPECT_EQ(job.Snapshot().state_changes_size(), 0);
  EXPECT_EQ(job.Snapshot().notices_size(), 0);
}

}  // namespace
}  // namespace migd::migration
