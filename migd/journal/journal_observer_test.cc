// The journal observer with a real journal file and real jobs: write-ahead
// records land before the runner acts, a journal that cannot write stops the
// runner with ERROR_REASON_JOURNAL, and progress alone writes nothing.

#include "migd/journal/journal_observer.h"

#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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
