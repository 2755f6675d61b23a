// InDoubt for a destination job (one recovery left IN_DOUBT): nothing to ask,
// an operator decides, and the devices go where the decision says only when
// they can hold the VM. The source's side (asking the destination) is
// driven through SourceJob in source_job_test.cc.

#include "migd/migration/in_doubt.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "migd/device/emulated_device.h"

namespace migd::migration {
namespace {

using vfio::MigState;

std::unique_ptr<device::EmulatedDevice> Emulated(const std::string& name) {
  device::EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = 64 << 10;
  c.seed = 7;
  c.flags = vfio::kMigStopCopy | vfio::kMigP2P;
  auto d = device::EmulatedDevice::Create(c);
  EXPECT_TRUE(d.ok()) << d.status();
  return *std::move(d);
}

class DestinationInDoubtTest : public testing::Test {
 protected:
  // dst0 and dst1, each moved to `state`, in a destination job IN_DOUBT.
  void SetUpIn(MigState state) {
    for (const char* name : {"dst0", "dst1"}) {
      devices_.push_back(Emulated(name));
      auto s = devices_.back()->SetState(state);
      ASSERT_TRUE(s.ok()) << s.status();
      streams_.push_back(*std::move(s));
    }
    job_ = std::make_shared<Job>(
        "j1", v1::ROLE_DESTINATION, "source",
        std::vector<DevicePair>{{"dst0", "src0"}, {"dst1", "src1"}});
    in_doubt_ = std::make_unique<InDoubt>(
        job_, std::vector<device::Device*>{devices_[0].get(),
                                           devices_[1].get()},
        base::Error(absl::StatusCode::kAborted,
                    v1::ERROR_REASON_AGENT_RESTARTED, "restarted"),
        "the agent restarted after COMMIT", InDoubtOptions{},
        [this] { ++released_; });
  }

  MigState StateOf(int i) { return devices_[i]->GetState().value(); }

  std::vector<std::unique_ptr<device::EmulatedDevice>> devices_;
  std::vector<std::unique_ptr<device::DataStream>> streams_;
  std::shared_ptr<Job> job_;
  std::unique_ptr<InDoubt> in_doubt_;
  int released_ = 0;
};

TEST_F(DestinationInDoubtTest, IsInDoubtAndAsksNoOne) {
  ASSERT_NO_FATAL_FAILURE(SetUpIn(MigState::kStop));
  EXPECT_EQ(job_->phase(), v1::PHASE_IN_DOUBT);
  EXPECT_FALSE(in_doubt_->asks());
  EXPECT_FALSE(in_doubt_->Run());  // at once
  v1::Migration m = job_->Snapshot();
  EXPECT_EQ(m.in_doubt().reason(), "the agent restarted after COMMIT");
  EXPECT_TRUE(absl::StrContains(m.in_doubt().advice(),
                                "migctl resolve j1 --outcome=destination"))
      << m.in_doubt().advice();
  EXPECT_EQ(released_, 0);
}

TEST_F(DestinationInDoubtTest, TheDestinationChosenResumesLoadedDevices) {
  ASSERT_NO_FATAL_FAILURE(SetUpIn(MigState::kStop));
  absl::Status s = in_doubt_->Resolve(v1::RESOLUTION_DESTINATION, "op");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(StateOf(0), MigState::kRunning);
  EXPECT_EQ(StateOf(1), MigState::kRunning);
  v1::Migration m = job_->Snapshot();
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED));
  EXPECT_EQ(m.in_doubt().resolution(), "operator op chose the destination");
  EXPECT_EQ(released_, 1);
  // The P2P barrier: both devices RUNNING_P2P before either RUNNING.
  std::vector<std::string> order;
  for (const v1::StateChange& c : m.state_changes()) {
    order.push_back(c.device() + ":" + v1::DeviceState_Name(c.state()));
  }
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[1], "dst1:DEVICE_STATE_RUNNING_P2P");
}

// Devices that did not load their state cannot run the VM: the decision is
// refused, nothing moves, and the other decision still can be made.
TEST_F(DestinationInDoubtTest, DevicesNotLoadedCannotRunHere) {
  ASSERT_NO_FATAL_FAILURE(SetUpIn(MigState::kResuming));
  absl::Status s = in_doubt_->Resolve(v1::RESOLUTION_DESTINATION, "op");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "device dst0 is RESUMING")) << s;
  EXPECT_EQ(StateOf(0), MigState::kResuming);
  EXPECT_EQ(job_->phase(), v1::PHASE_IN_DOUBT);
  EXPECT_EQ(released_, 0);

  s = in_doubt_->Resolve(v1::RESOLUTION_SOURCE, "op");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(StateOf(0), MigState::kRunning);  // reset
  v1::Migration m = job_->Snapshot();
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(base::ReasonName(m.failure().reason()),
            base::ReasonName(v1::ERROR_REASON_AGENT_RESTARTED));
  EXPECT_EQ(released_, 1);
}

TEST_F(DestinationInDoubtTest, NoDecisionIsRefusedAndOneDecisionIsFinal) {
  ASSERT_NO_FATAL_FAILURE(SetUpIn(MigState::kStop));
  EXPECT_EQ(in_doubt_->Resolve(v1::RESOLUTION_UNSPECIFIED, "op").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(job_->phase(), v1::PHASE_IN_DOUBT);
  ASSERT_TRUE(in_doubt_->Resolve(v1::RESOLUTION_SOURCE, "op").ok());
  absl::Status again = in_doubt_->Resolve(v1::RESOLUTION_DESTINATION, "op");
  EXPECT_EQ(base::ReasonName(base::ReasonOf(again)),
            base::ReasonName(v1::ERROR_REASON_NOT_IN_DOUBT))
      << again;
  EXPECT_EQ(job_->phase(), v1::PHASE_FAILED);
}

}  // namespace
}  // namespace migd::migration
