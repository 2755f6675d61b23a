#include "migd/migration/job.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"

namespace migd::migration {
namespace {

Job MakeJob() {
  return Job("j1", v1::ROLE_SOURCE, "10.0.0.2:7070",
             {{"emu0", "dst0"}, {"emu1", "dst1"}});
}

TEST(Job, SnapshotCarriesDevicesAndTotals) {
  Job job = MakeJob();
  job.SetDeviceTotal(0, 100);
  job.SetDeviceTotal(1, 50);
  job.AddDeviceBytes(0, 30);
  job.SetDeviceState(1, vfio::MigState::kStopCopy);
  v1::Migration m = job.Snapshot();
  EXPECT_EQ(m.job_id(), "j1");
  EXPECT_EQ(m.bytes_total(), 150u);
  EXPECT_EQ(m.bytes_done(), 30u);
  EXPECT_EQ(m.devices(0).peer_device(), "dst0");
  EXPECT_EQ(m.devices(1).state(), v1::DEVICE_STATE_STOP_COPY);
}

TEST(Job, TotalNeverFallsBehindWhatWasMoved) {
  Job job = MakeJob();
  job.SetDeviceTotal(0, 100);
  job.AddDeviceBytes(0, 150, /*stop_copy=*/false);
  v1::Migration m = job.Snapshot();
  EXPECT_EQ(m.devices(0).bytes_total(), 150u);
  EXPECT_EQ(m.bytes_total(), 150u);
  EXPECT_EQ(m.devices(0).precopy_bytes(), 150u);
  EXPECT_EQ(m.precopy_bytes(), 150u);
}

TEST(Job, FailureKeepsReasonAndMessageAndFirstOutcomeStands) {
  Job job = MakeJob();
  job.Finish(base::Error(absl::StatusCode::kDataLoss,
                         v1::ERROR_REASON_STREAM_CORRUPTED, "chunk 3 CRC"));
  job.Finish(absl::OkStatus());
  job.SetPhase(v1::PHASE_STOP_COPY, "");
  v1::Migration m = job.Snapshot();
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_EQ(m.failure().reason(), v1::ERROR_REASON_STREAM_CORRUPTED);
  EXPECT_EQ(m.failure().message(), "chunk 3 CRC");
  EXPECT_TRUE(m.has_finished());
}

TEST(Job, CancelCauseEndsCancelled) {
  Job job = MakeJob();
  job.Finish(base::Error(absl::StatusCode::kCancelled,
                         v1::ERROR_REASON_CANCELLED, "by request"));
  EXPECT_EQ(job.phase(), v1::PHASE_CANCELLED);
}

TEST(Job, CancelRequestedBeforeCancellerInstalledStillCancels) {
  Job job = MakeJob();
  job.RequestCancel();
  int calls = 0;
  job.SetCanceller([&] { ++calls; });
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(job.cancel_requested());
}

TEST(Job, WatcherSeesCurrentStateAtOnceThenWaitsForChange) {
  Job job = MakeJob();
  uint64_t seen = Job::kNoVersion;
  v1::MigrationEvent ev;
  ASSERT_TRUE(job.WaitForChange(&seen, absl::ZeroDuration(), &ev));
  EXPECT_FALSE(job.WaitForChange(&seen, absl::Milliseconds(1), &ev));
  std::thread t([&] { job.SetPhase(v1::PHASE_STOP_COPY, ""); });
  ASSERT_TRUE(job.WaitForChange(&seen, absl::Seconds(30), &ev));
  t.join();
  EXPECT_EQ(ev.migration().phase(), v1::PHASE_STOP_COPY);
  EXPECT_EQ(ev.message(), "phase STOP_COPY");
}

// Records what a job tells its observers.
class Recorder : public JobObserver {
 public:
  absl::Status BeforeAct(const v1::Migration& record, uint64_t,
                         absl::string_view what) override {
    acts.push_back(absl::StrCat(PhaseName(record.phase()), ": ", what));
    return fail;
  }
  void AfterChange(const v1::Migration& record, uint64_t,
                   absl::string_view message) override {
    changes.push_back(std::string(message));
    last_phase = record.phase();
  }
  absl::Status fail;
  std::vector<std::string> acts;
  std::vector<std::string> changes;
  v1::Phase last_phase = v1::PHASE_UNSPECIFIED;
};

TEST(JobObserver, SeesEveryChangeInOrderWithTheRecordAfterIt) {
  auto recorder = std::make_shared<Recorder>();
  Job job("j", v1::ROLE_SOURCE, "peer", {{"a", "b"}}, {recorder});
  job.SetPhase(v1::PHASE_CONNECTING, "");
  job.AddNotice("hello");
  job.Finish(absl::OkStatus());
  EXPECT_EQ(recorder->changes,
            (std::vector<std::string>{"phase CONNECTING", "hello",
                                      "phase SUCCEEDED"}));
  EXPECT_EQ(recorder->last_phase, v1::PHASE_SUCCEEDED);
}

TEST(JobObserver, BeforeActCarriesTheRecordAsItIsAboutToAct) {
  auto recorder = std::make_shared<Recorder>();
  Job job("j", v1::ROLE_SOURCE, "peer", {{"a", "b"}}, {recorder});
  EXPECT_TRUE(job.EnterPhase(v1::PHASE_PRE_COPY, "devices leave RUNNING").ok());
  EXPECT_EQ(recorder->acts,
            (std::vector<std::string>{"PRE_COPY: devices leave RUNNING"}));
}

TEST(JobObserver, AFailedWriteAheadIsReturnedToTheRunner) {
  auto recorder = std::make_shared<Recorder>();
  recorder->fail = absl::ResourceExhaustedError("journal: disk full");
  auto second = std::make_shared<Recorder>();
  Job job("j", v1::ROLE_SOURCE, "peer", {{"a", "b"}}, {recorder, second});
  absl::Status s = job.BeforeAct("devices leave RUNNING");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "journal: disk full");
  // The first failure stops the others being asked.
  EXPECT_TRUE(second->acts.empty());
}

TEST(JobObserver, ACommitThatCannotBeRecordedIsTakenBack) {
  auto recorder = std::make_shared<Recorder>();
  recorder->fail = absl::ResourceExhaustedError("journal: disk full");
  Job job("j", v1::ROLE_SOURCE, "peer", {{"a", "b"}}, {recorder});
  EXPECT_FALSE(job.Commit().ok());
  EXPECT_FALSE(job.Snapshot().committed());
  recorder->fail = absl::OkStatus();
  EXPECT_TRUE(job.Commit().ok());
  EXPECT_TRUE(job.Snapshot().committed());
  EXPECT_EQ(recorder->acts.back(), "UNSPECIFIED: COMMIT goes out");
}

TEST(JobRestore, GivesBackTheRecordAndFollowsItFromThere) {
  Job original("j", v1::ROLE_DESTINATION, "src", {{"d0", "s0"}});
  original.SetPhase(v1::PHASE_PREPARED, "");
  original.AddNotice("n");
  auto recorder = std::make_shared<Recorder>();
  std::shared_ptr<Job> restored = Job::Restore(original.Snapshot(), {recorder});
  EXPECT_EQ(restored->Snapshot().SerializeAsString(),
            original.Snapshot().SerializeAsString());
  EXPECT_EQ(restored->id(), "j");
  EXPECT_EQ(restored->role(), v1::ROLE_DESTINATION);
  EXPECT_EQ(restored->num_devices(), 1u);
  restored->AddNotice("recovered");
  EXPECT_EQ(recorder->changes, std::vector<std::string>{"recovered"});
}

}  // namespace
}  // namespace migd::migration
