// migd/journal/journal_observer.h
//
// Keeps the journal in step with the jobs, through the job observer seam:
// every write-ahead point (BeforeAct) is recorded before the runner acts, and
// its failure stops the runner (the job fails with ERROR_REASON_JOURNAL
// before anything moves); every phase change, notice and the end of a job
// are recorded as they happen (a failure there is logged: the change
// happened already). Progress counters are not journaled on their own: they
// ride along with the next record.

#ifndef MIGD_JOURNAL_JOURNAL_OBSERVER_H_
#define MIGD_JOURNAL_JOURNAL_OBSERVER_H_

#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "migd/journal/journal.h"
#include "migd/migration/job_observer.h"

namespace migd::journal {

class JournalObserver final : public migration::JobObserver {
 public:
  // `journal` outlives the observer.
  explicit JournalObserver(Journal* journal) : journal_(journal) {}

  absl::Status BeforeAct(const v1::Migration& record,
                         absl::string_view what) override;
  void AfterChange(const v1::Migration& record,
                   absl::string_view message) override;

 private:
  // What was last recorded of a job: a change of any of these is recorded.
  struct Seen {
    v1::Phase phase = v1::PHASE_UNSPECIFIED;
    int notices = 0;
    bool committed = false;
    std::string peer_identity;
  };
  static Seen Of(const v1::Migration& record);

  Journal* const journal_;
  absl::Mutex mu_;
  std::map<std::string, Seen> seen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::journal

#endif  // MIGD_JOURNAL_JOURNAL_OBSERVER_H_
