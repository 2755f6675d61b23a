// migd/journal/journal.h
//
// The durable job journal: one SQLite file, <state_dir>/journal.sqlite3, that
// holds the last recorded migd.v1.Migration of every job this agent ran. The
// agent records a job before each phase change that matters for recovery
// (write-ahead: record, then act), and reads the journal back at start to
// recover unfinished jobs and to keep answering GetMigration/ListMigrations for
// finished ones.
//
// Stored: one row per job id: role, phase, the serialized record, when it was
// created, last recorded and finished (terminal phases: SUCCEEDED, FAILED,
// CANCELLED), and the host's boot it was last recorded in. Finished jobs are
// pruned by count and age (JournalOptions); unfinished ones never are.
//
// Durability: WAL mode with synchronous=FULL: when Record returns OK the
// record is on disk and survives a crash or a power cut (Sync::kLater, below,
// leaves the sync to a later call). When it fails (disk
// full, I/O error, read-only file) nothing of it was stored and the previous
// record of the job stands; the caller must not act on the change.
//
// Open refuses, rather than start with an empty journal and forget jobs whose
// devices may need putting back:
//   - a state_dir that exists and is not a directory;
//   - a state_dir that another process (another migd) holds: an exclusive
//     flock on <state_dir>/journal.lock is kept for the Journal's lifetime;
//   - a journal.sqlite3 that is not a SQLite database, fails SQLite's
//     quick_check, or is not a migd journal (kDataLoss: the message says to
//     move the file aside); Open leaves such a file as it found it;
//   - a journal written by a newer migd (a newer schema version).
//
// Thread safety: every method may be called from any thread; calls are
// serialized on one connection. Not a hot path: a few writes per job.

#ifndef MIGD_JOURNAL_JOURNAL_H_
#define MIGD_JOURNAL_JOURNAL_H_

#include <stddef.h>
#include <stdint.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::journal {

struct JournalOptions {
  // Retention of finished jobs (oldest finished go first); jobs not finished
  // are kept whatever their number or age.
  size_t max_finished_jobs = 1000;
  absl::Duration max_finished_age = absl::Hours(24 * 7);
  // How long a statement waits for a lock SQLite itself takes (the journal is
  // not shared, but a `sqlite3` shell reading it takes one).
  absl::Duration busy_timeout = absl::Seconds(5);
  // Fault seam for tests: when > 0, the file may not grow past this many
  // pages (PRAGMA max_page_count) and a write that would grow it fails as a
  // full disk does (SQLITE_FULL). 0: no limit.
  int64_t max_page_count = 0;
  // Fault seam for tests: when > 0, the fail_after_records-th Record call of
  // this Journal (counting from 1, whether or not earlier ones succeeded) and
  // every later one fail as on a full disk (kResourceExhausted, nothing
  // stored), while reads keep working: a disk that fills up at a chosen
  // point, where max_page_count fills it from the start. 0: no fault.
  int64_t fail_after_records = 0;
  // The host's boot this agent runs in, stamped on every record (see
  // JournaledJob). Empty: read from /proc/sys/kernel/random/boot_id. Tests
  // set their own to stand for a host that started again.
  std::string boot_id;
};

// A job as the journal holds it.
struct JournaledJob {
  v1::Migration record;
  // Whether the host has started again since the record was written (its
  // boot differs from this one's), so that what the agent wrote after it
  // without a sync (Journal::Sync::kLater) may have been lost with the
  // power. A crashed agent's writes are not lost: the kernel held them.
  // False for a record of a migd that stamped none, which synced every
  // record it acts on; true when either boot could not be read.
  bool from_earlier_boot = false;
};

// True for PHASE_SUCCEEDED, PHASE_FAILED and PHASE_CANCELLED.
bool IsTerminal(v1::Phase phase);

class Journal {
 public:
  // The journal file's name inside state_dir.
  static constexpr char kFileName[] = "journal.sqlite3";
  // The lock file's name inside state_dir.
  static constexpr char kLockFileName[] = "journal.lock";
  // The schema this migd writes (and the newest it reads).
  static constexpr int kSchemaVersion = 1;
  // Space Open writes into the write-ahead log (journal.sqlite3-wal) ahead
  // of its records, as zeros: more than SQLite's log holds between two
  // checkpoints (1000 pages), after which it starts again from the top.
  // Why: a record is durable once the log is synced (fdatasync), and a sync
  // that grows the file must also commit its new size to the filesystem's
  // own journal. On ext4 here that took 250 us a record where a sync over
  // blocks the file already had took 130 us, and two of those syncs are in
  // every migration's downtime (journal_observer.h). A long-running agent
  // gets there anyway once its log has wrapped; this gets there from the
  // start. SQLite reads a log up to its last valid frame: the zeros after
  // it are not records.
  static constexpr int64_t kWalReserveBytes = int64_t{8} << 20;

  // Opens (creating if missing) the journal in `state_dir`, itself created
  // with mode 0700 if missing (its parent must exist), checks it and prunes
  // it once (Prune(absl::Now())). Errors name the path and the problem:
  // kFailedPrecondition for a state_dir that is not a directory, one another
  // process holds ("another migd uses <dir> (pid N)") or a newer schema;
  // kDataLoss for a corrupt file or one that is not a migd journal; others
  // as the system or SQLite reported them.
  static absl::StatusOr<std::unique_ptr<Journal>> Open(
      const std::string& state_dir, JournalOptions options = {});

  // Closes the file and releases the lock.
  ~Journal();

  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // How far a record is durable when Record returns OK.
  enum class Sync {
    // Synced to the disk: it survives the agent's crash and a power loss.
    kNow,
    // Written to the file (the kernel holds it): it survives the agent's
    // crash at once, and a power loss once SyncNow (or a later kNow record)
    // returned. The sync is the slow part of a record, so this is for a
    // write whose sync may follow, off the path the caller is timing.
    kLater,
  };

  // Stores `record` as the job's record (by job_id), replacing any earlier
  // one, in one transaction, durable as `sync` says when it returns OK.
  // created_time is
  // record.created (or the time of the job's first Record when unset);
  // a job in a terminal phase gets a finished time (record.finished, else
  // the time it was first recorded terminal). kInvalidArgument for an empty
  // job_id; kResourceExhausted when the disk (or max_page_count) is full;
  // other errors as SQLite reported them; each names the file.
  absl::Status Record(const v1::Migration& record, Sync sync = Sync::kNow);

  // Syncs what Sync::kLater records left unsynced (the log's file, one
  // sync). OK at once when nothing waits for a sync.
  absl::Status SyncNow();

  // Whether a Sync::kLater record waits for its sync.
  bool unsynced() const;

  // Every recorded job, newest first (by created time, then by order of first
  // Record). kDataLoss naming the job for a record that does not parse, and
  // for a file SQLite finds corrupt.
  absl::StatusOr<std::vector<JournaledJob>> LoadJobs();
  // The same, the records alone.
  absl::StatusOr<std::vector<v1::Migration>> LoadAll();

  // Deletes finished jobs beyond the options' limits, oldest finished first:
  // those finished before now - max_finished_age, then all but the newest
  // max_finished_jobs. Never deletes a job that is not finished. Returns the
  // error of the delete, naming the file.
  absl::Status Prune(absl::Time now);

  // <state_dir>/journal.sqlite3.
  const std::string& path() const { return path_; }

 private:
  struct Connection;  // The SQLite handle and the lock file, owned.

  Journal(std::string path, JournalOptions options, std::string boot_id,
          std::unique_ptr<Connection> connection);

  const std::string path_;
  const JournalOptions options_;
  // This boot's id, stamped on each record; empty when it cannot be read.
  const std::string boot_id_;
  mutable absl::Mutex mu_;
  std::unique_ptr<Connection> connection_ ABSL_GUARDED_BY(mu_);
  bool unsynced_ ABSL_GUARDED_BY(mu_) = false;
  int64_t records_ ABSL_GUARDED_BY(mu_) = 0;  // Record calls so far
};

}  // namespace migd::journal

#endif  // MIGD_JOURNAL_JOURNAL_H_
