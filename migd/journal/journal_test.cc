#include "migd/journal/journal.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::journal {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

// A fresh directory (not created) for the running test.
std::string TestDir() {
  const char* tmp = getenv("TEST_TMPDIR");
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", info->name());
}

std::string JournalPath(const std::string& dir) {
  return absl::StrCat(dir, "/", Journal::kFileName);
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream bytes;
  bytes << f.rdbuf();
  return bytes.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(absl::ToUnixSeconds(t));
  return ts;
}

// A job created `age` ago (whole seconds), in `phase`, finished `finished_ago`
// ago when terminal.
v1::Migration Job(const std::string& id, v1::Phase phase, absl::Duration age,
                  absl::Duration finished_ago = absl::ZeroDuration()) {
  const absl::Time now = absl::Now();
  v1::Migration job;
  job.set_job_id(id);
  job.set_role(v1::ROLE_SOURCE);
  job.set_phase(phase);
  job.set_peer("dst.example:7001");
  v1::DeviceProgress* device = job.add_devices();
  device->set_device("emu0");
  device->set_peer_device("emu1");
  device->set_state(v1::DEVICE_STATE_RUNNING);
  device->set_bytes_done(4096);
  *job.mutable_created() = ToProto(now - age);
  if (IsTerminal(phase)) *job.mutable_finished() = ToProto(now - finished_ago);
  if (phase == v1::PHASE_FAILED) {
    job.mutable_failure()->set_reason(v1::ERROR_REASON_PEER_UNAVAILABLE);
    job.mutable_failure()->set_message("peer went away");
  }
  job.add_notices("device emu0 has no DMA logging");
  return job;
}

std::unique_ptr<Journal> OpenOrDie(const std::string& dir,
                                   JournalOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Journal>> journal =
      Journal::Open(dir, options);
  EXPECT_TRUE(journal.ok()) << journal.status();
  return journal.ok() ? *std::move(journal) : nullptr;
}

std::vector<std::string> Ids(const std::vector<v1::Migration>& jobs) {
  std::vector<std::string> ids;
  for (const v1::Migration& job : jobs) ids.push_back(job.job_id());
  return ids;
}

// Runs `sql` on the journal file directly, as a person with `sqlite3` would.
void RunSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  EXPECT_EQ(rc, SQLITE_OK) << (error != nullptr ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

// Writes `count` jobs of ~1 KiB each and closes the journal, so that the file
// holds several b-tree pages and no WAL.
void WriteJobsAndClose(const std::string& dir, int count) {
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  for (int i = 0; i < count; ++i) {
    v1::Migration job = Job(absl::StrCat("job-", i), v1::PHASE_STOP_COPY,
                            absl::Minutes(count - i));
    job.add_notices(std::string(1000, 'n'));
    ASSERT_TRUE(journal->Record(job).ok());
  }
}

TEST(Journal, CreatesTheStateDirPrivate) {
  const std::string dir = TestDir();
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  struct stat st;
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700);
  EXPECT_EQ(journal->path(), JournalPath(dir));
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_TRUE(jobs->empty());
}

TEST(Journal, RecordsSurviveReopen) {
  const std::string dir = TestDir();
  const v1::Migration running =
      Job("running", v1::PHASE_STOP_COPY, absl::Minutes(1));
  const v1::Migration failed =
      Job("failed", v1::PHASE_FAILED, absl::Minutes(2), absl::Minutes(1));
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir);
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(journal->Record(running).ok());
    ASSERT_TRUE(journal->Record(failed).ok());
  }
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_TRUE(MessageDifferencer::Equals((*jobs)[0], running))
      << (*jobs)[0].DebugString();
  EXPECT_TRUE(MessageDifferencer::Equals((*jobs)[1], failed))
      << (*jobs)[1].DebugString();
}

off_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

// The log's space is there before the first record, so that a record's sync
// writes over blocks the file has (journal.h: kWalReserveBytes).
TEST(Journal, ReservesTheWriteAheadLogsSpace) {
  const std::string dir = TestDir();
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  const std::string wal = JournalPath(dir) + "-wal";
  EXPECT_GE(FileSize(wal), Journal::kWalReserveBytes);
  // Records go into that space: the log does not grow for them.
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(journal
                    ->Record(Job(absl::StrCat("job-", i), v1::PHASE_STOP_COPY,
                                 absl::Minutes(1)))
                    .ok());
  }
  EXPECT_EQ(FileSize(wal), Journal::kWalReserveBytes);
}

// An agent that died (no checkpoint, no close) leaves its records in a log
// followed by the zeros Open wrote: the next Open reads the records and
// stops at the zeros.
TEST(Journal, RecordsInAReservedLogSurviveACrash) {
  const std::string dir = TestDir();
  const std::string copy = dir + "-after-crash";
  const v1::Migration running =
      Job("running", v1::PHASE_STOP_COPY, absl::Minutes(1));
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir);
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(journal->Record(running).ok());
    // The files as a crash at this point leaves them (the journal is still
    // open: nothing was checkpointed into the main file).
    ASSERT_EQ(mkdir(copy.c_str(), 0700), 0);
    const std::string wal = ReadFile(JournalPath(dir) + "-wal");
    ASSERT_GE(static_cast<int64_t>(wal.size()), Journal::kWalReserveBytes);
    WriteFile(JournalPath(copy), ReadFile(JournalPath(dir)));
    WriteFile(JournalPath(copy) + "-wal", wal);
  }
  std::unique_ptr<Journal> journal = OpenOrDie(copy);
  ASSERT_NE(journal, nullptr);
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals((*jobs)[0], running))
      << (*jobs)[0].DebugString();
}

// A record written to be synced later reads back at once; SyncNow, or a
// record synced now, leaves nothing unsynced.
TEST(Journal, ARecordSyncedLaterReadsBackAndWaitsForItsSync) {
  const std::string dir = TestDir();
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  EXPECT_FALSE(journal->unsynced());
  const v1::Migration ended =
      Job("ended", v1::PHASE_SUCCEEDED, absl::Minutes(1), absl::Seconds(1));
  ASSERT_TRUE(journal->Record(ended, Journal::Sync::kLater).ok());
  EXPECT_TRUE(journal->unsynced());
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals((*jobs)[0], ended));
  ASSERT_TRUE(journal->SyncNow().ok());
  EXPECT_FALSE(journal->unsynced());
  ASSERT_TRUE(journal->SyncNow().ok());  // nothing to sync: OK

  ASSERT_TRUE(journal
                  ->Record(Job("a", v1::PHASE_FAILED, absl::Minutes(1)),
                           Journal::Sync::kLater)
                  .ok());
  ASSERT_TRUE(
      journal->Record(Job("b", v1::PHASE_STOP_COPY, absl::Minutes(1))).ok());
  EXPECT_FALSE(journal->unsynced());
  // Reopened: every record is there.
  journal.reset();
  journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(jobs->size(), 3u);
}

TEST(Journal, RecordReplacesTheJobsEarlierRecord) {
  const std::string dir = TestDir();
  v1::Migration job = Job("job", v1::PHASE_CONNECTING, absl::Minutes(1));
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir);
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(journal->Record(job).ok());
    job.set_phase(v1::PHASE_SUCCEEDED);
    *job.mutable_finished() = ToProto(absl::Now());
    job.mutable_devices(0)->set_state(v1::DEVICE_STATE_STOP);
    ASSERT_TRUE(journal->Record(job).ok());
  }
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals((*jobs)[0], job))
      << (*jobs)[0].DebugString();
}

TEST(Journal, LoadAllIsNewestFirstThenLastInserted) {
  const std::string dir = TestDir();
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  v1::Migration twin_a = Job("twin-a", v1::PHASE_PREPARED, absl::Minutes(5));
  v1::Migration twin_b = twin_a;
  twin_b.set_job_id("twin-b");
  ASSERT_TRUE(
      journal->Record(Job("old", v1::PHASE_PREPARED, absl::Hours(1))).ok());
  ASSERT_TRUE(journal->Record(twin_a).ok());
  ASSERT_TRUE(
      journal->Record(Job("new", v1::PHASE_PREPARED, absl::Minutes(1))).ok());
  ASSERT_TRUE(journal->Record(twin_b).ok());
  // Re-recording a job keeps its place.
  ASSERT_TRUE(journal->Record(twin_a).ok());
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_THAT(Ids(*jobs),
              ::testing::ElementsAre("new", "twin-b", "twin-a", "old"));
}

JournalOptions InBoot(const std::string& boot_id) {
  JournalOptions options;
  options.boot_id = boot_id;
  return options;
}

// Recovery reads whether the host started again since a record was written
// (what was written after it unsynced may be gone).
TEST(Journal, ARecordKnowsWhetherTheHostStartedAgainSinceItWasWritten) {
  const std::string dir = TestDir();
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir, InBoot("boot-a"));
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(
        journal->Record(Job("a", v1::PHASE_STOP_COPY, absl::Minutes(2))).ok());
    ASSERT_TRUE(
        journal->Record(Job("b", v1::PHASE_STOP_COPY, absl::Minutes(1))).ok());
    absl::StatusOr<std::vector<JournaledJob>> jobs = journal->LoadJobs();
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    ASSERT_EQ(jobs->size(), 2u);
    EXPECT_FALSE(jobs->at(0).from_earlier_boot);
    EXPECT_FALSE(jobs->at(1).from_earlier_boot);
  }
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir, InBoot("boot-a"));
    ASSERT_NE(journal, nullptr);
    absl::StatusOr<std::vector<JournaledJob>> jobs = journal->LoadJobs();
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    EXPECT_FALSE(jobs->at(0).from_earlier_boot) << "the same boot";
  }
  std::unique_ptr<Journal> journal = OpenOrDie(dir, InBoot("boot-b"));
  ASSERT_NE(journal, nullptr);
  ASSERT_TRUE(
      journal->Record(Job("b", v1::PHASE_FAILED, absl::Minutes(1))).ok());
  absl::StatusOr<std::vector<JournaledJob>> jobs = journal->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ(jobs->at(0).record.job_id(), "b");
  EXPECT_FALSE(jobs->at(0).from_earlier_boot) << "recorded again in boot-b";
  EXPECT_EQ(jobs->at(1).record.job_id(), "a");
  EXPECT_TRUE(jobs->at(1).from_earlier_boot) << "recorded in boot-a";
}

// Without a boot given, the kernel's boot id: the same for two opens.
TEST(Journal, TheBootIsTheKernelsByDefault) {
  const std::string dir = TestDir();
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir);
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(
        journal->Record(Job("a", v1::PHASE_STOP_COPY, absl::Minutes(1))).ok());
  }
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  absl::StatusOr<std::vector<JournaledJob>> jobs = journal->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_FALSE(jobs->at(0).from_earlier_boot);
  journal.reset();
  journal = OpenOrDie(dir, InBoot("another-boot"));
  ASSERT_NE(journal, nullptr);
  jobs = journal->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_TRUE(jobs->at(0).from_earlier_boot);
}

// A journal made before records were stamped gets the column; its rows were
// written by a migd that synced every record it acted on, so nothing after
// them can have been lost.
TEST(Journal, AJournalFromBeforeTheBootStampKeepsItsRecords) {
  const std::string dir = TestDir();
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir, InBoot("boot-a"));
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(
        journal->Record(Job("old", v1::PHASE_STOP_COPY, absl::Minutes(2)))
            .ok());
  }
  RunSql(JournalPath(dir), "ALTER TABLE jobs DROP COLUMN boot_id");
  std::unique_ptr<Journal> journal = OpenOrDie(dir, InBoot("boot-b"));
  ASSERT_NE(journal, nullptr);
  ASSERT_TRUE(
      journal->Record(Job("new", v1::PHASE_STOP_COPY, absl::Minutes(1))).ok());
  journal.reset();
  journal = OpenOrDie(dir, InBoot("boot-c"));
  ASSERT_NE(journal, nullptr);
  absl::StatusOr<std::vector<JournaledJob>> jobs = journal->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ(jobs->at(0).record.job_id(), "new");
  EXPECT_TRUE(jobs->at(0).from_earlier_boot);
  EXPECT_EQ(jobs->at(1).record.job_id(), "old");
  EXPECT_FALSE(jobs->at(1).from_earlier_boot);
}

TEST(Journal, RecordWithoutJobIdIsInvalid) {
  std::unique_ptr<Journal> journal = OpenOrDie(TestDir());
  ASSERT_NE(journal, nullptr);
  EXPECT_EQ(journal->Record(v1::Migration()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Journal, GarbageFileIsRefusedAndLeftUntouched) {
  const std::string dir = TestDir();
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  const std::string path = JournalPath(dir);
  std::string garbage;
  for (int i = 0; i < 8192; ++i) garbage.push_back(static_cast<char>(i * 7));
  WriteFile(path, garbage);

  absl::StatusOr<std::unique_ptr<Journal>> journal = Journal::Open(dir, {});
  ASSERT_FALSE(journal.ok());
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(journal.status().message(), HasSubstr(path));
  EXPECT_THAT(journal.status().message(), HasSubstr("is corrupt"));
  EXPECT_THAT(journal.status().message(), HasSubstr("move it aside"));
  EXPECT_EQ(ReadFile(path), garbage);
}

TEST(Journal, ShortGarbageFileIsRefused) {
  const std::string dir = TestDir();
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  WriteFile(JournalPath(dir), "not a database\n");
  absl::StatusOr<std::unique_ptr<Journal>> journal = Journal::Open(dir, {});
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kDataLoss);
}

TEST(Journal, DamagedBtreePageIsRefused) {
  const std::string dir = TestDir();
  WriteJobsAndClose(dir, 60);
  const std::string path = JournalPath(dir);
  std::string bytes = ReadFile(path);
  ASSERT_EQ(bytes.compare(0, 16, std::string("SQLite format 3\0", 16)), 0);
  const size_t page_size = (static_cast<unsigned char>(bytes[16]) << 8) |
                           static_cast<unsigned char>(bytes[17]);
  const size_t pages = bytes.size() / page_size;
  ASSERT_GE(pages, 8u) << "the jobs should span several pages";
  // A page in the middle of the file (a b-tree page of the jobs table or an
  // index: no page is free, nothing was deleted) overwritten with garbage.
  const size_t page = pages / 2;
  for (size_t i = 0; i < page_size; ++i) bytes[page * page_size + i] = '\xab';
  WriteFile(path, bytes);

  absl::StatusOr<std::unique_ptr<Journal>> journal = Journal::Open(dir, {});
  ASSERT_FALSE(journal.ok()) << "opened a damaged journal";
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kDataLoss)
      << journal.status();
  EXPECT_THAT(journal.status().message(), HasSubstr(path));
  EXPECT_THAT(journal.status().message(), HasSubstr("is corrupt (quick_check"));
  EXPECT_EQ(ReadFile(path), bytes);
}

TEST(Journal, TruncatedJournalIsRefused) {
  const std::string dir = TestDir();
  WriteJobsAndClose(dir, 60);
  const std::string path = JournalPath(dir);
  const std::string bytes = ReadFile(path);
  WriteFile(path, bytes.substr(0, bytes.size() / 2));

  absl::StatusOr<std::unique_ptr<Journal>> journal = Journal::Open(dir, {});
  ASSERT_FALSE(journal.ok()) << "opened a truncated journal";
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kDataLoss)
      << journal.status();
  EXPECT_THAT(journal.status().message(), HasSubstr(path));
  EXPECT_THAT(journal.status().message(), HasSubstr("is corrupt"));
}

TEST(Journal, RecordThatDoesNotParseFailsLoadAllNamingTheJob) {
  const std::string dir = TestDir();
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir);
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(
        journal->Record(Job("mangled", v1::PHASE_LOADING, absl::Minutes(1)))
            .ok());
  }
  // A record that is not a Migration (a field 1 of length 100 in 2 bytes).
  RunSql(JournalPath(dir),
         "UPDATE jobs SET record = x'0a64ffff' WHERE job_id = 'mangled'");
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_FALSE(jobs.ok());
  EXPECT_EQ(jobs.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(jobs.status().message(), HasSubstr("\"mangled\""));
  EXPECT_THAT(jobs.status().message(), HasSubstr(JournalPath(dir)));
}

TEST(Journal, SecondOpenOfTheSameDirIsRefused) {
  const std::string dir = TestDir();
  std::unique_ptr<Journal> first = OpenOrDie(dir);
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<Journal>> second = Journal::Open(dir, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(),
              HasSubstr(absl::StrCat("another migd uses ", dir, " (pid ",
                                     getpid(), ")")));
  // Once the first is gone, the dir is free again.
  first.reset();
  EXPECT_NE(OpenOrDie(dir), nullptr);
}

TEST(Journal, FullDiskFailsRecordAndKeepsEarlierRecords) {
  const std::string dir = TestDir();
  const v1::Migration early =
      Job("early", v1::PHASE_STOP_COPY, absl::Minutes(2));
  v1::Migration big = Job("big", v1::PHASE_STOP_COPY, absl::Minutes(1));
  for (int i = 0; i < 64; ++i) big.add_notices(std::string(1024, 'x'));
  {
    JournalOptions options;
    options.max_page_count = 16;  // 64 KiB with 4 KiB pages
    std::unique_ptr<Journal> journal = OpenOrDie(dir, options);
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(journal->Record(early).ok());
    absl::Status full = journal->Record(big);
    EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
    EXPECT_THAT(full.message(), HasSubstr(JournalPath(dir)));
    EXPECT_THAT(full.message(), HasSubstr("job big"));
    EXPECT_THAT(full.message(), HasSubstr("full"));
    // The journal still works for what fits.
    v1::Migration early_done = early;
    early_done.set_phase(v1::PHASE_SUCCEEDED);
    EXPECT_TRUE(journal->Record(early_done).ok());
    EXPECT_TRUE(journal->Record(early).ok());
  }
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals((*jobs)[0], early))
      << (*jobs)[0].DebugString();
}

TEST(Journal, FailAfterRecordsFailsThatRecordAndEveryLaterOne) {
  const std::string dir = TestDir();
  const v1::Migration first =
      Job("first", v1::PHASE_STOP_COPY, absl::Minutes(2));
  v1::Migration second = first;
  second.set_phase(v1::PHASE_LOADING);
  {
    JournalOptions options;
    options.fail_after_records = 2;
    std::unique_ptr<Journal> journal = OpenOrDie(dir, options);
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(journal->Record(first).ok());
    for (int i = 0; i < 2; ++i) {
      absl::Status full = journal->Record(second);
      EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
      EXPECT_THAT(full.message(), HasSubstr(JournalPath(dir)));
      EXPECT_THAT(full.message(), HasSubstr("job first"));
      EXPECT_THAT(full.message(), HasSubstr("full"));
    }
    // Reads keep working, and see the record before the fault.
    absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    ASSERT_EQ(jobs->size(), 1u);
    EXPECT_EQ((*jobs)[0].phase(), v1::PHASE_STOP_COPY);
  }
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  EXPECT_TRUE(journal->Record(second).ok());
}

TEST(Journal, PruneDropsTheOldestFinishedBeyondTheCount) {
  JournalOptions options;
  options.max_finished_jobs = 2;
  std::unique_ptr<Journal> journal = OpenOrDie(TestDir(), options);
  ASSERT_NE(journal, nullptr);
  // Unfinished jobs older than every finished one.
  ASSERT_TRUE(
      journal->Record(Job("prepared", v1::PHASE_PREPARED, absl::Hours(9)))
          .ok());
  ASSERT_TRUE(
      journal
          ->Record(Job("rolling-back", v1::PHASE_ROLLING_BACK, absl::Hours(8)))
          .ok());
  // Finished 5, 4, 3, 2, 1 hours ago (created in another order).
  ASSERT_TRUE(journal
                  ->Record(Job("done-5h", v1::PHASE_SUCCEEDED, absl::Hours(6),
                               absl::Hours(5)))
                  .ok());
  ASSERT_TRUE(journal
                  ->Record(Job("done-1h", v1::PHASE_CANCELLED, absl::Hours(7),
                               absl::Hours(1)))
                  .ok());
  ASSERT_TRUE(journal
                  ->Record(Job("done-3h", v1::PHASE_FAILED, absl::Hours(4),
                               absl::Hours(3)))
                  .ok());
  ASSERT_TRUE(journal
                  ->Record(Job("done-2h", v1::PHASE_SUCCEEDED, absl::Hours(3),
                               absl::Hours(2)))
                  .ok());
  ASSERT_TRUE(journal
                  ->Record(Job("done-4h", v1::PHASE_FAILED, absl::Hours(5),
                               absl::Hours(4)))
                  .ok());

  ASSERT_TRUE(journal->Prune(absl::Now()).ok());
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_THAT(Ids(*jobs), ::testing::ElementsAre("done-2h", "done-1h",
                                                 "rolling-back", "prepared"));
}

TEST(Journal, PruneDropsFinishedOlderThanTheAge) {
  JournalOptions options;
  options.max_finished_age = absl::Hours(1);
  std::unique_ptr<Journal> journal = OpenOrDie(TestDir(), options);
  ASSERT_NE(journal, nullptr);
  ASSERT_TRUE(
      journal->Record(Job("stuck", v1::PHASE_STOP_COPY, absl::Hours(24 * 30)))
          .ok());
  ASSERT_TRUE(journal
                  ->Record(Job("old", v1::PHASE_SUCCEEDED, absl::Hours(3),
                               absl::Hours(2)))
                  .ok());
  ASSERT_TRUE(journal
                  ->Record(Job("recent", v1::PHASE_FAILED, absl::Hours(3),
                               absl::Minutes(30)))
                  .ok());

  ASSERT_TRUE(journal->Prune(absl::Now()).ok());
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_THAT(Ids(*jobs), ::testing::UnorderedElementsAre("stuck", "recent"));
}

TEST(Journal, OpenPrunes) {
  const std::string dir = TestDir();
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir);
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(journal
                    ->Record(Job("ancient", v1::PHASE_SUCCEEDED,
                                 absl::Hours(24 * 30), absl::Hours(24 * 29)))
                    .ok());
    ASSERT_TRUE(
        journal
            ->Record(Job("running", v1::PHASE_PRE_COPY, absl::Hours(24 * 30)))
            .ok());
  }
  std::unique_ptr<Journal> journal = OpenOrDie(dir);
  ASSERT_NE(journal, nullptr);
  absl::StatusOr<std::vector<v1::Migration>> jobs = journal->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_THAT(Ids(*jobs), ::testing::ElementsAre("running"));
}

TEST(Journal, StateDirThatIsAFileIsRefused) {
  const std::string dir = TestDir();
  WriteFile(dir, "a file\n");
  absl::StatusOr<std::unique_ptr<Journal>> journal = Journal::Open(dir, {});
  ASSERT_FALSE(journal.ok());
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(journal.status().message(),
              HasSubstr(absl::StrCat(dir, " exists and is not a directory")));
  EXPECT_EQ(ReadFile(dir), "a file\n");
}

TEST(Journal, NewerSchemaVersionIsRefused) {
  const std::string dir = TestDir();
  {
    std::unique_ptr<Journal> journal = OpenOrDie(dir);
    ASSERT_NE(journal, nullptr);
    ASSERT_TRUE(
        journal->Record(Job("job", v1::PHASE_PREPARED, absl::Minutes(1))).ok());
  }
  RunSql(JournalPath(dir),
         absl::StrCat("UPDATE meta SET value = ", Journal::kSchemaVersion + 1,
                      " WHERE key = 'schema_version'"));
  absl::StatusOr<std::unique_ptr<Journal>> journal = Journal::Open(dir, {});
  ASSERT_FALSE(journal.ok());
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(journal.status().message(), HasSubstr(JournalPath(dir)));
  EXPECT_THAT(
      journal.status().message(),
      HasSubstr(absl::StrCat("schema version ", Journal::kSchemaVersion + 1)));
  EXPECT_THAT(journal.status().message(), HasSubstr("newer migd"));
}

TEST(Journal, OtherSqliteDatabaseIsRefused) {
  const std::string dir = TestDir();
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  RunSql(JournalPath(dir), "CREATE TABLE photos (id INTEGER PRIMARY KEY)");
  absl::StatusOr<std::unique_ptr<Journal>> journal = Journal::Open(dir, {});
  ASSERT_FALSE(journal.ok());
  EXPECT_EQ(journal.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(journal.status().message(), HasSubstr("not a migd journal"));
}

}  // namespace
}  // namespace migd::journal
