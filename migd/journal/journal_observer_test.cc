// The journal observer with a real journal file and real jobs: write-ahead
// records land before the runner acts, a journal that cannot write stops the
// runner with ERROR_REASON_JOURNAL, and progress alone writes nothing.

#include "migd/journal/journal_observer.h"

#include <stdlib.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "migd/migration/job.h"

namespace migd::journal {
namespace {

std::string TestDir(const std::string& name) {
  const char* tmp = getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
}

std::unique_ptr<Journal> OpenJournal(const std::string& dir,
                                     JournalOptions options = {}) {
  auto j = Journal::Open(dir, options);
  EXPECT_TRUE(j.ok()) << j.status();
  return j.ok() ? *std::move(j) : nullptr;
}

std::vector<v1::Migration> Load(Journal& journal) {
  auto all = journal.LoadAll();
  EXPECT_TRUE(all.ok()) << all.status();
  return all.ok() ? *all : std::vector<v1::Migration>{};
}

TEST(JournalObserver, AWriteAheadPointIsOnDiskBeforeTheRunnerActs) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("write_ahead"));
  ASSERT_NE(journal, nullptr);
  auto observer = std::make_shared<JournalObserver>(journal.get());
  migration::Job job("j1", v1::ROLE_SOURCE, "dst:1", {{"emu0", "dst0"}},
                     {observer});
  ASSERT_TRUE(
      job.EnterPhase(v1::PHASE_CONNECTING, "devices leave RUNNING").ok());
  std::vector<v1::Migration> all = Load(*journal);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].job_id(), "j1");
  EXPECT_EQ(all[0].phase(), v1::PHASE_CONNECTING);
  ASSERT_EQ(all[0].devices_size(), 1);
  EXPECT_EQ(all[0].devices(0).device(), "emu0");
}

TEST(JournalObserver, PhaseNoticeCommitAndEndAreRecordedProgressIsNot) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("changes"));
  ASSERT_NE(journal, nullptr);
  auto observer = std::make_shared<JournalObserver>(journal.get());
  migration::Job job("j1", v1::ROLE_SOURCE, "dst:1", {{"emu0", "dst0"}},
                     {observer});
  ASSERT_TRUE(job.BeforeAct("the devices leave RUNNING").ok());
  job.SetPhase(v1::PHASE_PRE_COPY, "");
  observer->Flush();
  ASSERT_EQ(Load(*journal).at(0).phase(), v1::PHASE_PRE_COPY);
  job.AddDeviceBytes(0, 4096, /*stop_copy=*/false);
  observer->Flush();
  // Progress alone is not journaled: the record still has none.
  EXPECT_EQ(Load(*journal).at(0).bytes_done(), 0u);
  job.SetCommitted();
  observer->Flush();
  EXPECT_TRUE(Load(*journal).at(0).committed());
  EXPECT_EQ(Load(*journal).at(0).bytes_done(), 4096u);  // rode along
  job.SetDeviceState(0, vfio::MigState::kPreCopy);
  observer->Flush();
  ASSERT_EQ(Load(*journal).at(0).state_changes_size(), 1);
  EXPECT_EQ(Load(*journal).at(0).state_changes(0).state(),
            v1::DEVICE_STATE_PRE_COPY);
  job.AddNotice("device emu0: something to know");
  observer->Flush();
  EXPECT_EQ(Load(*journal).at(0).notices_size(), 1);
  // The end is written before Finish returns: no Flush.
  job.Finish(absl::OkStatus());
  EXPECT_EQ(Load(*journal).at(0).phase(), v1::PHASE_SUCCEEDED);
}

TEST(JournalObserver, AJobEntersTheJournalAtItsFirstWriteAheadPoint) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("first"));
  ASSERT_NE(journal, nullptr);
  auto observer = std::make_shared<JournalObserver>(journal.get());
  migration::Job refused("refused", v1::ROLE_SOURCE, "dst:1",
                         {{"emu0", "dst0"}}, {observer});
  refused.SetPhase(v1::PHASE_CONNECTING, "");
  refused.Finish(absl::DeadlineExceededError("no session"));
  observer->Flush();
  EXPECT_TRUE(Load(*journal).empty());
}

TEST(JournalObserver, AQueuedRecordNeverOverwritesANewerWriteAhead) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("order"));
  ASSERT_NE(journal, nullptr);
  auto observer = std::make_shared<JournalObserver>(journal.get());
  migration::Job job("j1", v1::ROLE_SOURCE, "dst:1", {{"emu0", "dst0"}},
                     {observer});
  for (int i = 0; i < 50; ++i) {
    job.SetPhase(i % 2 ? v1::PHASE_PRE_COPY : v1::PHASE_CONNECTING, "");
    job.AddNotice(absl::StrCat("n", i));
    ASSERT_TRUE(job.BeforeAct("step").ok());
    observer->Flush();
    v1::Migration last = Load(*journal).at(0);
    ASSERT_EQ(last.notices_size(), i + 1) << "record went back in time";
  }
}

// ---- Records in the order of the job's revisions -------------------------

// A record of job j1 in `phase` with `notices` notices.
v1::Migration Record(v1::Phase phase, int notices) {
  v1::Migration m;
  m.set_job_id("j1");
  m.set_role(v1::ROLE_DESTINATION);
  m.set_phase(phase);
  for (int i = 0; i < notices; ++i) m.add_notices(absl::StrCat("n", i));
  return m;
}

// A write-ahead point whose record is older than one queued meanwhile (the
// job changed while it waited to be written) stores the newer one: it says
// all the older one says, and dropping it would lose a change.
TEST(JournalObserver, AWriteAheadPointNeverDropsANewerQueuedRecord) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("newer_queued"));
  ASSERT_NE(journal, nullptr);
  // Held for an hour: the newer record is still queued when the write-ahead
  // point comes.
  JournalObserver observer(journal.get(), absl::Hours(1));
  ASSERT_TRUE(
      observer.BeforeAct(Record(v1::PHASE_STOP_COPY, 0), 1, "enter").ok());
  observer.AfterChange(Record(v1::PHASE_LOADING, 2), 5, "newer");
  ASSERT_TRUE(
      observer.BeforeAct(Record(v1::PHASE_LOADING, 1), 3, "older").ok());
  // On disk when the write-ahead point returns, without a Flush.
  EXPECT_EQ(Load(*journal).at(0).notices_size(), 2);
  observer.Flush();
  EXPECT_EQ(Load(*journal).at(0).notices_size(), 2);
}

// A record older than one a write-ahead point stored is never written after
// it, whatever order the calls came in.
TEST(JournalObserver, ARecordOlderThanAWriteAheadPointIsNeverWrittenAfterIt) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("older_after"));
  ASSERT_NE(journal, nullptr);
  JournalObserver observer(journal.get(), absl::ZeroDuration());
  ASSERT_TRUE(
      observer.BeforeAct(Record(v1::PHASE_STOP_COPY, 2), 7, "newer").ok());
  observer.AfterChange(Record(v1::PHASE_ROLLING_BACK, 1), 6, "older");
  observer.Flush();
  v1::Migration last = Load(*journal).at(0);
  EXPECT_EQ(last.notices_size(), 2);
  EXPECT_EQ(v1::Phase_Name(last.phase()), v1::Phase_Name(v1::PHASE_STOP_COPY));
}

// Write-ahead points on one thread (recorded without the job's lock), while
// another thread keeps changing the job: the journal never goes back in
// time, and ends with the job as it is.
TEST(JournalObserver,
     WriteAheadPointsRacingChangesNeverLeaveAnOlderRecordLast) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("race"));
  ASSERT_NE(journal, nullptr);
  auto observer = std::make_shared<JournalObserver>(journal.get());
  migration::Job job("j1", v1::ROLE_SOURCE, "dst:1", {{"emu0", "dst0"}},
                     {observer});
  ASSERT_TRUE(job.BeforeAct("the devices leave RUNNING").ok());
  constexpr int kChanges = 300;
  std::atomic<bool> changing{true};
  std::thread changes([&] {
    for (int i = 0; i < kChanges; ++i) {
      job.AddNotice(absl::StrCat("n", i));
      job.AddDeviceBytes(0, 4096);  // progress: rides along
    }
    changing = false;
  });
  std::thread acts([&] {
    while (changing) ASSERT_TRUE(job.BeforeAct("step").ok());
  });
  // What the journal holds only grows.
  int last = 0;
  while (changing) {
    std::vector<v1::Migration> all = Load(*journal);
    ASSERT_EQ(all.size(), 1u);
    ASSERT_GE(all[0].notices_size(), last) << "the journal went back in time";
    last = all[0].notices_size();
  }
  changes.join();
  acts.join();
  observer->Flush();
  v1::Migration stored = Load(*journal).at(0);
  EXPECT_EQ(stored.notices_size(), kChanges);
  EXPECT_EQ(stored.notices_size(), job.Snapshot().notices_size());
}

// ---- The destination's downtime -------------------------------------------

// The stored record of `id`.
v1::Migration Stored(Journal& journal, const std::string& id) {
  for (const v1::Migration& m : Load(journal)) {
    if (m.job_id() == id) return m;
  }
  ADD_FAILURE() << "no record of " << id;
  return {};
}

// Has the writer take what is due: job z1's change, queued after what j1
// queued, and written after it (the writer goes in job order) unless j1's
// is held.
void WaitForTheWriter(Journal& journal, migration::Job& z1) {
  z1.AddNotice("written when due");
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Stored(journal, "z1").notices_size() == 0) {
    ASSERT_LT(absl::Now(), deadline) << "the writer never wrote z1";
    absl::SleepFor(absl::Milliseconds(1));
  }
}

// A record of a job in LOADING waits for the RESUMING write-ahead point,
// which stores the newer record in its place: that write is not queued
// behind one of LOADING, inside the downtime.
TEST(JournalObserver, TheDestinationsLoadingWaitsForTheWriteThatEndsIt) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("downtime_hold"));
  ASSERT_NE(journal, nullptr);
  auto observer =
      std::make_shared<JournalObserver>(journal.get(), absl::Hours(1));
  migration::Job job("j1", v1::ROLE_DESTINATION, "src:1", {{"dst0", "emu0"}},
                     {observer});
  migration::Job z1("z1", v1::ROLE_SOURCE, "dst:1", {{"emu0", "dst0"}},
                    {observer});
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_PREPARED, "devices to RESUMING").ok());
  ASSERT_TRUE(z1.BeforeAct("the devices leave RUNNING").ok());
  job.SetPhase(v1::PHASE_LOADING, "");
  job.SetDeviceState(0, vfio::MigState::kStop);
  ASSERT_NO_FATAL_FAILURE(WaitForTheWriter(*journal, z1));
  EXPECT_EQ(v1::Phase_Name(Stored(*journal, "j1").phase()),
            v1::Phase_Name(v1::PHASE_PREPARED))
      << "LOADING was not held";
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_RESUMING, "the devices resume").ok());
  v1::Migration stored = Stored(*journal, "j1");
  EXPECT_EQ(v1::Phase_Name(stored.phase()), v1::Phase_Name(v1::PHASE_RESUMING));
  EXPECT_EQ(stored.state_changes_size(), 1);
}

// The same for the resume's device changes and the job's end.
TEST(JournalObserver, TheDestinationsResumeWaitsForTheJobsEnd) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("downtime_hold_end"));
  ASSERT_NE(journal, nullptr);
  auto observer =
      std::make_shared<JournalObserver>(journal.get(), absl::Hours(1));
  migration::Job job("j1", v1::ROLE_DESTINATION, "src:1", {{"dst0", "emu0"}},
                     {observer});
  migration::Job z1("z1", v1::ROLE_SOURCE, "dst:1", {{"emu0", "dst0"}},
                    {observer});
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_PREPARED, "devices to RESUMING").ok());
  ASSERT_TRUE(z1.BeforeAct("the devices leave RUNNING").ok());
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_RESUMING, "the devices resume").ok());
  job.SetDeviceState(0, vfio::MigState::kRunningP2P);
  job.SetDeviceState(0, vfio::MigState::kRunning);
  ASSERT_NO_FATAL_FAILURE(WaitForTheWriter(*journal, z1));
  EXPECT_EQ(Stored(*journal, "j1").state_changes_size(), 0)
      << "the resume's changes were not held";
  job.Finish(absl::OkStatus());  // the end: written before Finish returns
  v1::Migration stored = Stored(*journal, "j1");
  EXPECT_EQ(v1::Phase_Name(stored.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED));
  EXPECT_EQ(stored.state_changes_size(), 2);
}

// A job's end is written before Finish returns and synced by the writer
// afterwards (here: by the Flush, the hold being an hour), not on the
// thread that ends the job, whose completion waits for it.
TEST(JournalObserver, AJobsEndIsWrittenAtOnceAndSyncedAfter) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("end_synced_after"));
  ASSERT_NE(journal, nullptr);
  auto observer =
      std::make_shared<JournalObserver>(journal.get(), absl::Hours(1));
  migration::Job job("j1", v1::ROLE_DESTINATION, "src:1", {{"dst0", "emu0"}},
                     {observer});
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_PREPARED, "devices to RESUMING").ok());
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_RESUMING, "the devices resume").ok());
  observer->Flush();  // RESUMING's own sync (the next test)
  ASSERT_FALSE(journal->unsynced());
  job.Finish(absl::OkStatus());
  EXPECT_EQ(v1::Phase_Name(Stored(*journal, "j1").phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED));
  EXPECT_TRUE(journal->unsynced()) << "the end was synced as it was written";
  observer->Flush();
  EXPECT_FALSE(journal->unsynced()) << "the writer did not sync the end";
}

// The destination's STOP_COPY write-ahead point is synced before it returns
// (COMMIT may follow); its RESUMING point is written before it returns,
// not synced, and the writer syncs it.
TEST(JournalObserver, TheDestinationsResumingIsSyncedAfterItsStopCopyBefore) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("resuming_later"));
  ASSERT_NE(journal, nullptr);
  auto observer =
      std::make_shared<JournalObserver>(journal.get(), absl::Hours(1));
  migration::Job job("j1", v1::ROLE_DESTINATION, "src:1", {{"dst0", "emu0"}},
                     {observer});
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_PREPARED, "devices to RESUMING").ok());
  job.SetPhase(v1::PHASE_PRE_COPY, "source attached");
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_STOP_COPY, "COMMIT may follow").ok());
  EXPECT_EQ(v1::Phase_Name(Stored(*journal, "j1").phase()),
            v1::Phase_Name(v1::PHASE_STOP_COPY));
  EXPECT_FALSE(journal->unsynced()) << "STOP_COPY was left for the writer";
  job.SetPhase(v1::PHASE_LOADING, "");
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_RESUMING, "the devices resume").ok());
  EXPECT_EQ(v1::Phase_Name(Stored(*journal, "j1").phase()),
            v1::Phase_Name(v1::PHASE_RESUMING));
  EXPECT_TRUE(journal->unsynced())
      << "RESUMING was synced before the devices run";
  observer->Flush();
  EXPECT_FALSE(journal->unsynced()) << "the writer did not sync RESUMING";
}

// Without a Flush the writer syncs the end once its hold is over, and an
// observer that stops syncs what is left.
TEST(JournalObserver, TheWriterSyncsAJobsEndAfterItsHold) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("end_hold_over"));
  ASSERT_NE(journal, nullptr);
  auto observer =
      std::make_shared<JournalObserver>(journal.get(), absl::Milliseconds(10));
  migration::Job job("j1", v1::ROLE_SOURCE, "dst:1", {{"emu0", "dst0"}},
                     {observer});
  ASSERT_TRUE(job.BeforeAct("the devices leave RUNNING").ok());
  job.Finish(absl::OkStatus());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (journal->unsynced()) {
    ASSERT_LT(absl::Now(), deadline) << "the end was never synced";
    absl::SleepFor(absl::Milliseconds(1));
  }

  {
    auto stopping =
        std::make_shared<JournalObserver>(journal.get(), absl::Hours(1));
    migration::Job j2("j2", v1::ROLE_SOURCE, "dst:1", {{"emu1", "dst1"}},
                      {stopping});
    ASSERT_TRUE(j2.BeforeAct("the devices leave RUNNING").ok());
    j2.Finish(absl::OkStatus());
    EXPECT_TRUE(journal->unsynced());
  }  // the job and the observer go
  EXPECT_FALSE(journal->unsynced()) << "the stopping writer left it unsynced";
}

// A held record is written once its hold is over (a slow load), and at once
// by a Flush; records of other phases are not held.
TEST(JournalObserver, AHeldRecordIsWrittenAfterItsHold) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("hold_over"));
  ASSERT_NE(journal, nullptr);
  auto observer =
      std::make_shared<JournalObserver>(journal.get(), absl::Milliseconds(10));
  migration::Job job("j1", v1::ROLE_DESTINATION, "src:1", {{"dst0", "emu0"}},
                     {observer});
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_PREPARED, "devices to RESUMING").ok());
  job.SetPhase(v1::PHASE_LOADING, "");
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Load(*journal).at(0).phase() != v1::PHASE_LOADING) {
    ASSERT_LT(absl::Now(), deadline) << "LOADING never written";
    absl::SleepFor(absl::Milliseconds(1));
  }
}

TEST(JournalObserver, OnlyTheDestinationsDowntimeIsHeld) {
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("not_held"));
  ASSERT_NE(journal, nullptr);
  auto observer =
      std::make_shared<JournalObserver>(journal.get(), absl::Hours(1));
  migration::Job job("j1", v1::ROLE_DESTINATION, "src:1", {{"dst0", "emu0"}},
                     {observer});
  ASSERT_TRUE(job.EnterPhase(v1::PHASE_PREPARED, "devices to RESUMING").ok());
  job.SetPhase(v1::PHASE_PRE_COPY, "source attached");
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Load(*journal).at(0).phase() != v1::PHASE_PRE_COPY) {
    ASSERT_LT(absl::Now(), deadline) << "PRE_COPY held";
    absl::SleepFor(absl::Milliseconds(1));
  }
  job.SetPhase(v1::PHASE_LOADING, "");
  observer->Flush();  // writes what is held
  EXPECT_EQ(v1::Phase_Name(Load(*journal).at(0).phase()),
            v1::Phase_Name(v1::PHASE_LOADING));
}

TEST(JournalObserver, AJournalThatCannotWriteStopsTheRunnerWithReasonJournal) {
  JournalOptions tiny;
  tiny.max_page_count = 8;  // SQLite says SQLITE_FULL past this
  std::unique_ptr<Journal> journal = OpenJournal(TestDir("full"), tiny);
  ASSERT_NE(journal, nullptr);
  auto observer = std::make_shared<JournalObserver>(journal.get());
  // A record too large for the file's limit, as on a full disk.
  std::vector<migration::DevicePair> devices;
  for (int i = 0; i < 400; ++i) {
    devices.push_back({absl::StrCat("device-with-a-long-name-", i),
                       absl::StrCat("peer-device-with-a-long-name-", i)});
  }
  migration::Job job("big", v1::ROLE_SOURCE, "dst:1", devices, {observer});
  absl::Status s = job.BeforeAct("devices leave RUNNING");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(base::ReasonOf(s), v1::ERROR_REASON_JOURNAL) << s;
  EXPECT_NE(s.message().find("devices leave RUNNING"), absl::string_view::npos)
      << s;
  EXPECT_NE(s.message().find(journal->path()), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace migd::journal
