// migd/journal/journal_observer.h
//
// Keeps the journal in step with the jobs, through the job observer seam.
// A job enters the journal at its first write-ahead point (before any of its
// devices moves); until then nothing of it is recorded, so a request refused
// before that leaves nothing for recovery to act on. From then on:
//   - every write-ahead point (BeforeAct) is recorded, durably, before the
//     runner acts, and its failure stops the runner (the job fails with
//     ERROR_REASON_JOURNAL before anything moves);
//   - the end of a job is recorded durably as it happens;
//   - other phase changes, device state changes, notices and the peer's
//     identity are recorded by a writer thread of the observer's own, latest
//     record per job, so that no fsync sits inside a change on the downtime
//     path (STOP_COPY).
//     Recovery never depends on them: it acts on the write-ahead points.
// A record never goes back in time: a queued record older than one written
// by BeforeAct is dropped. Progress counters are not journaled on their own:
// they ride along with the next record. A failure outside BeforeAct is
// logged (the change happened already).

#ifndef MIGD_JOURNAL_JOURNAL_OBSERVER_H_
#define MIGD_JOURNAL_JOURNAL_OBSERVER_H_

#include <map>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "migd/journal/journal.h"
#include "migd/migration/job_observer.h"

namespace migd::journal {

class JournalObserver final : public migration::JobObserver {
 public:
  // `journal` outlives the observer.
  explicit JournalObserver(Journal* journal);
  // Writes what is still queued, then stops the writer.
  ~JournalObserver() override;

  absl::Status BeforeAct(const v1::Migration& record,
                         absl::string_view what) override;
  void AfterChange(const v1::Migration& record,
                   absl::string_view message) override;

  // Waits until every queued record is written (tests, shutdown).
  void Flush();

 private:
  // What was last seen of a job: a change of any of these is recorded.
  struct Seen {
    v1::Phase phase = v1::PHASE_UNSPECIFIED;
    int notices = 0;
    int state_changes = 0;
    bool committed = false;
    std::string peer_identity;
  };
  static Seen Of(const v1::Migration& record);
  void WriterLoop();
  void Write(const v1::Migration& record, absl::string_view why);

  Journal* const journal_;
  // Held while writing; taken before queue_mu_.
  absl::Mutex write_mu_;
  absl::Mutex queue_mu_;
  std::map<std::string, Seen> seen_ ABSL_GUARDED_BY(queue_mu_);
  std::map<std::string, v1::Migration> queued_ ABSL_GUARDED_BY(queue_mu_);
  int writing_ ABSL_GUARDED_BY(queue_mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  std::thread writer_;
};

}  // namespace migd::journal

#endif  // MIGD_JOURNAL_JOURNAL_OBSERVER_H_
