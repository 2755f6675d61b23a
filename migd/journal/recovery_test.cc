// Recovery at start against a real journal file and emulated devices left in
// the states a crash leaves them in: one test per rule of recovery.h.

#include "migd/journal/recovery.h"

#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "migd/device/emulated_device.h"
#include "migd/journal/journal_observer.h"

namespace migd::journal {
namespace {

using vfio::MigState;

std::string TestDir() {
  const char* tmp = getenv("TEST_TMPDIR");
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", info->name());
}

class RecoveryTest : public testing::Test {
 protected:
  void SetUp() override {
    auto j = Journal::Open(TestDir());
    ASSERT_TRUE(j.ok()) << j.status();
    journal_ = *std::move(j);
  }

  // An emulated device `name` in `state` (walked there through the arcs).
  device::EmulatedDevice* AddDevice(const std::string& name, MigState state) {
    device::EmulatedDeviceConfig c;
    c.name = name;
    c.state_size = 64 << 10;
    c.seed = 7;
    c.flags = vfio::kMigStopCopy | vfio::kMigP2P | vfio::kMigPreCopy;
    auto d = device::EmulatedDevice::Create(c);
    EXPECT_TRUE(d.ok()) << d.status();
    device::EmulatedDevice* raw = d->get();
    if (state != MigState::kRunning) {
      auto stream = raw->SetState(state);
      EXPECT_TRUE(stream.ok()) << stream.status();
      streams_.push_back(*std::move(stream));
    }
    EXPECT_TRUE(registry_.Add(*std::move(d)).ok());
    return raw;
  }

  // Journals a job of `role` in `phase` holding device `name`.
  void Journal(const std::string& id, v1::Role role, v1::Phase phase,
               const std::string& name, bool committed = false) {
    v1::Migration m;
    m.set_job_id(id);
    m.set_role(role);
    m.set_phase(phase);
    m.set_committed(committed);
    v1::DeviceProgress* p = m.add_devices();
    p->set_device(name);
    p->set_peer_device("peer-" + name);
    ASSERT_TRUE(journal_->Record(m).ok());
  }

  // Opens the journal again as the agent of boot `boot_id` would.
  void Reopen(const std::string& boot_id) {
    journal_.reset();
    JournalOptions options;
    options.boot_id = boot_id;
    auto j = Journal::Open(TestDir(), options);
    ASSERT_TRUE(j.ok()) << j.status();
    journal_ = *std::move(j);
  }

  v1::Migration Recovered(const std::string& id) {
    auto report = Recover(*journal_, registry_, jobs_, {});
    EXPECT_TRUE(report.ok()) << report.status();
    auto job = jobs_.Find(id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? (*job)->Snapshot() : v1::Migration();
  }

  std::unique_ptr<journal::Journal> journal_;
  migration::DeviceRegistry registry_;
  migration::JobTable jobs_;
  std::vector<std::unique_ptr<device::DataStream>> streams_;
};

bool HasNotice(const v1::Migration& m, absl::string_view text) {
  for (const std::string& n : m.notices()) {
    if (absl::StrContains(n, text)) return true;
  }
  return false;
}

TEST_F(RecoveryTest, AnUncommittedSourcePutsItsDevicesBackToRunning) {
  device::EmulatedDevice* d = AddDevice("emu0", MigState::kPreCopy);
  Journal("j", v1::ROLE_SOURCE, v1::PHASE_PRE_COPY, "emu0");
  v1::Migration m = Recovered("j");
  EXPECT_EQ(d->GetState().value(), MigState::kRunning);
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_EQ(m.failure().reason(), v1::ERROR_REASON_AGENT_RESTARTED);
  EXPECT_TRUE(HasNotice(m, "back to RUNNING")) << m.ShortDebugString();
  EXPECT_EQ(registry_.Owner("emu0"), "");
}

TEST_F(RecoveryTest, ACommittedSourceIsInDoubtAndNeverResumesItsDevices) {
  device::EmulatedDevice* d = AddDevice("emu0", MigState::kStopCopy);
  Journal("j", v1::ROLE_SOURCE, v1::PHASE_STOP_COPY, "emu0",
          /*committed=*/true);
  v1::Migration m = Recovered("j");
  EXPECT_EQ(d->GetState().value(), MigState::kStopCopy);
  EXPECT_EQ(m.phase(), v1::PHASE_IN_DOUBT);
  EXPECT_TRUE(HasNotice(m, "never resumed")) << m.ShortDebugString();
  // The job still holds its device: no other job may take it.
  EXPECT_EQ(registry_.Owner("emu0"), "j");
}

TEST_F(RecoveryTest,
       ADestinationBeforeCommitResetsAResumingDeviceWithoutAnArc) {
  device::EmulatedDevice* d = AddDevice("dst0", MigState::kResuming);
  Journal("j", v1::ROLE_DESTINATION, v1::PHASE_STOP_COPY, "dst0");
  v1::Migration m = Recovered("j");
  EXPECT_EQ(d->GetState().value(), MigState::kRunning);
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_EQ(m.failure().reason(), v1::ERROR_REASON_AGENT_RESTARTED);
  // The only recorded change is the reset's result: RESUMING -> RUNNING in
  // one step, no arc out of RESUMING (which would pass through STOP).
  ASSERT_GE(m.state_changes_size(), 1) << m.ShortDebugString();
  for (const v1::StateChange& c : m.state_changes()) {
    EXPECT_NE(c.state(), v1::DEVICE_STATE_STOP) << m.ShortDebugString();
  }
}

// LOADING is journaled without waiting: a destination the journal has before
// COMMIT may have loaded the VM's state (RESUMING -> STOP) before the agent
// died. A reset may keep that state and run it while the source, told the
// job failed, resumes its own; the device stays in STOP.
TEST_F(RecoveryTest, ADestinationBeforeCommitLeavesAStoppedDeviceStopped) {
  device::EmulatedDevice* d = AddDevice("dst0", MigState::kStop);
  Journal("j", v1::ROLE_DESTINATION, v1::PHASE_STOP_COPY, "dst0");
  v1::Migration m = Recovered("j");
  EXPECT_EQ(d->GetState().value(), MigState::kStop);
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_TRUE(HasNotice(m, "found in STOP")) << m.ShortDebugString();
  EXPECT_EQ(registry_.Owner("dst0"), "");
}

// The destination's STOP_COPY is synced before COMMIT can come, its
// RESUMING written before the devices run and synced after: a power loss
// between them leaves STOP_COPY on record for devices that may have run
// the VM. The devices, powered off, are found fresh (RUNNING).
TEST_F(RecoveryTest, ADestinationInStopCopyFromBeforeTheHostStartedIsInDoubt) {
  device::EmulatedDevice* d = AddDevice("dst0", MigState::kRunning);
  ASSERT_NO_FATAL_FAILURE(Reopen("boot-a"));
  Journal("j", v1::ROLE_DESTINATION, v1::PHASE_STOP_COPY, "dst0");
  ASSERT_NO_FATAL_FAILURE(Reopen("boot-b"));
  v1::Migration m = Recovered("j");
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_IN_DOUBT));
  EXPECT_EQ(d->GetState().value(), MigState::kRunning);
  EXPECT_TRUE(HasNotice(m, "before the host last started"))
      << m.ShortDebugString();
  EXPECT_TRUE(HasNotice(m, "the VM may have run here")) << m.ShortDebugString();
  EXPECT_EQ(registry_.Owner("dst0"), "j");
}

// The same record in the boot it was written in: the agent crashed, the
// kernel kept its writes, and no RESUMING among them means no device ran.
TEST_F(RecoveryTest, ADestinationInStopCopyFromThisBootIsReset) {
  device::EmulatedDevice* d = AddDevice("dst0", MigState::kResuming);
  ASSERT_NO_FATAL_FAILURE(Reopen("boot-a"));
  Journal("j", v1::ROLE_DESTINATION, v1::PHASE_STOP_COPY, "dst0");
  ASSERT_NO_FATAL_FAILURE(Reopen("boot-a"));
  v1::Migration m = Recovered("j");
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(d->GetState().value(), MigState::kRunning);
  EXPECT_EQ(registry_.Owner("dst0"), "");
}

// Before the source's STOP_COPY marker no COMMIT can come, whatever the
// boot: the devices are reset.
TEST_F(RecoveryTest, ADestinationInPreCopyFromBeforeTheHostStartedIsReset) {
  device::EmulatedDevice* d = AddDevice("dst0", MigState::kResuming);
  ASSERT_NO_FATAL_FAILURE(Reopen("boot-a"));
  Journal("j", v1::ROLE_DESTINATION, v1::PHASE_PRE_COPY, "dst0");
  ASSERT_NO_FATAL_FAILURE(Reopen("boot-b"));
  v1::Migration m = Recovered("j");
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(m.failure().reason(), v1::ERROR_REASON_AGENT_RESTARTED);
  EXPECT_EQ(d->GetState().value(), MigState::kRunning);
}

TEST_F(RecoveryTest, ADestinationWhoseDevicesLoadedResumesThem) {
  device::EmulatedDevice* d = AddDevice("dst0", MigState::kStop);
  Journal("j", v1::ROLE_DESTINATION, v1::PHASE_RESUMING, "dst0");
  v1::Migration m = Recovered("j");
  EXPECT_EQ(d->GetState().value(), MigState::kRunning);
  EXPECT_EQ(m.phase(), v1::PHASE_SUCCEEDED);
  EXPECT_TRUE(HasNotice(m, "resumed")) << m.ShortDebugString();
}

TEST_F(RecoveryTest, ADestinationAfterCommitWithADeviceNotLoadedIsInDoubt) {
  device::EmulatedDevice* d = AddDevice("dst0", MigState::kResuming);
  Journal("j", v1::ROLE_DESTINATION, v1::PHASE_LOADING, "dst0");
  v1::Migration m = Recovered("j");
  EXPECT_EQ(d->GetState().value(), MigState::kResuming);
  EXPECT_EQ(m.phase(), v1::PHASE_IN_DOUBT);
}

// A device found RUNNING may have been reset (or put in RUNNING by a reopen)
// and lost what it loaded: the job cannot claim the VM runs here.
TEST_F(RecoveryTest, ADestinationWithARunningDeviceAfterCommitIsInDoubt) {
  for (v1::Phase phase : {v1::PHASE_LOADING, v1::PHASE_RESUMING}) {
    SCOPED_TRACE(v1::Phase_Name(phase));
    const std::string name = absl::StrCat("dst-", v1::Phase_Name(phase));
    AddDevice(name, MigState::kRunning);
    Journal(name, v1::ROLE_DESTINATION, phase, name);
    v1::Migration m = Recovered(name);
    EXPECT_EQ(m.phase(), v1::PHASE_IN_DOUBT) << m.ShortDebugString();
  }
}

TEST_F(RecoveryTest, ALoadingDestinationIsNotResumedFromRunningP2P) {
  device::EmulatedDevice* d = AddDevice("dst0", MigState::kRunningP2P);
  Journal("j", v1::ROLE_DESTINATION, v1::PHASE_LOADING, "dst0");
  v1::Migration m = Recovered("j");
  EXPECT_EQ(m.phase(), v1::PHASE_IN_DOUBT);
  EXPECT_EQ(d->GetState().value(), MigState::kRunningP2P);
}

TEST_F(RecoveryTest, EndedJobsAreKeptAsTheyWere) {
  AddDevice("emu0", MigState::kStop);
  v1::Migration done;
  done.set_job_id("old");
  done.set_role(v1::ROLE_SOURCE);
  done.set_phase(v1::PHASE_SUCCEEDED);
  done.add_devices()->set_device("emu0");
  ASSERT_TRUE(journal_->Record(done).ok());
  v1::Migration m = Recovered("old");
  EXPECT_EQ(m.SerializeAsString(), done.SerializeAsString());
}

TEST_F(RecoveryTest, TheOutcomeIsJournaled) {
  AddDevice("emu0", MigState::kPreCopy);
  Journal("j", v1::ROLE_SOURCE, v1::PHASE_PRE_COPY, "emu0");
  auto observer = std::make_shared<JournalObserver>(journal_.get());
  auto report = Recover(*journal_, registry_, jobs_, {observer});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->recovered, 1);
  auto all = journal_->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->at(0).phase(), v1::PHASE_FAILED);
  EXPECT_EQ(all->at(0).failure().reason(), v1::ERROR_REASON_AGENT_RESTARTED);
}

TEST_F(RecoveryTest, AMissingDeviceIsLeftAloneAndNamed) {
  Journal("j", v1::ROLE_SOURCE, v1::PHASE_PRE_COPY, "gone0");
  v1::Migration m = Recovered("j");
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_TRUE(HasNotice(m, "gone0")) << m.ShortDebugString();
}

// The caller may know why a device is missing (an allocated device it could
// not open again): the notice says that rather than "not configured".
TEST_F(RecoveryTest, AMissingDeviceTheCallerExplainsIsNamedWithTheReason) {
  Journal("j", v1::ROLE_DESTINATION, v1::PHASE_PREPARED, "alloc-j-0");
  auto report = Recover(*journal_, registry_, jobs_, {},
                        {{"alloc-j-0", "it could not be opened again"}});
  ASSERT_TRUE(report.ok()) << report.status();
  v1::Migration m = (*jobs_.Find("j"))->Snapshot();
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_TRUE(HasNotice(m,
                        "device alloc-j-0 is not on this agent (it could not "
                        "be opened again); left alone"))
      << m.ShortDebugString();
  EXPECT_FALSE(HasNotice(m, "not configured")) << m.ShortDebugString();
}

}  // namespace
}  // namespace migd::journal
