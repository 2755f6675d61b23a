// migd/journal/journal_observer.h
//
// Keeps the journal in step with the jobs, through the job observer seam.
// A job enters the journal at its first write-ahead point (before any of its
// devices moves); until then nothing of it is recorded, so a request refused
// before that leaves nothing for recovery to act on. From then on:
//   - every write-ahead point (BeforeAct) is recorded before the runner
//     acts, and its failure stops the runner (the job fails with
//     ERROR_REASON_JOURNAL before anything moves). It is durable when it
//     returns, except the destination's RESUMING: written at once (durable
//     against the agent's crash) and synced by the writer thread within
//     `downtime_hold`, as a job's end is (below);
//   - the end of a job is written as it happens, durable at once against
//     the agent's crash, and synced by the writer thread within
//     `downtime_hold` (below), against a power loss;
//   - other phase changes, device state changes, notices and the peer's
//     identity are recorded by a writer thread of the observer's own, latest
//     record per job, so that no fsync sits inside a change on the downtime
//     path (STOP_COPY).
//     Recovery never depends on them: it acts on the write-ahead points.
// A record never goes back in time. Records are ordered by the job's
// revision, not by the order the calls come in (a write-ahead point is
// recorded without the job's lock, while the job goes on changing): a record
// older than one already stored is dropped, and a write-ahead point whose
// record is older than the one queued stores the queued one instead (it says
// all the older one says, and more). Progress counters are not journaled on
// their own: they ride along with the next record. A failure outside
// BeforeAct is logged (the change happened already).
//
// A destination's LOADING and RESUMING are short phases inside the downtime
// that end in a write of their own (the RESUMING write-ahead point, then the
// job's end). The writer holds a record of a job in those phases back for
// `downtime_hold`, so that the write ending the phase finds it still queued
// (and stores the newer record in its place) rather than waiting for the
// writer's write and fsync of it. What such a phase has not written by then
// (a slow load) is written as usual.
//
// Why the destination's RESUMING is not synced before its devices run: that
// sync was the one left in the downtime (0.4-0.5 ms of a 1 ms overhead on
// the disk measured). What the record protects is recovery's choice:
//   - after the agent's crash, roll forward (the devices may run the VM),
//     never reset them: the kernel kept the write, so recovery has it;
//   - after a power loss, the devices hold nothing any more, but the VM may
//     have run on them, so the source must not resume its own. The
//     destination's STOP_COPY write-ahead point, synced as the source's
//     stop-copy begins and so before COMMIT can come, tells recovery that
//     the devices may have run; the journal's boot stamp tells it whether a
//     power loss came between (recovery.h: such a job is held IN_DOUBT).
//
// Why a job's end is not synced as it is written: the destination's end is
// written after its devices run and before its completion goes out, so its
// sync was in the downtime too. What the order protects is the
// destination's answer after a crash: a destination that ran the devices
// and crashed before the completion left answers RUNNING_HERE once
// restarted, from its end record. The agent's crash keeps what it wrote
// (the kernel holds it). A power loss in the `downtime_hold` before the
// sync loses the end: the destination then finds RESUMING on record and its
// devices, powered off, no longer holding the state, so recovery holds the
// job IN_DOUBT, as for any job whose devices may have run: slower to
// settle, never wrong.

#ifndef MIGD_JOURNAL_JOURNAL_OBSERVER_H_
#define MIGD_JOURNAL_JOURNAL_OBSERVER_H_

#include <cstdint>
#include <map>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/journal/journal.h"
#include "migd/migration/job_observer.h"

namespace migd::journal {

class JournalObserver final : public migration::JobObserver {
 public:
  // How long a record of a job in LOADING or RESUMING waits for the write
  // that ends the phase before the writer takes it.
  static constexpr absl::Duration kDowntimeHold = absl::Milliseconds(20);

  // `journal` outlives the observer.
  explicit JournalObserver(Journal* journal,
                           absl::Duration downtime_hold = kDowntimeHold);
  // Writes what is still queued, then stops the writer.
  ~JournalObserver() override;

  absl::Status BeforeAct(const v1::Migration& record, uint64_t revision,
                         absl::string_view what) override;
  void AfterChange(const v1::Migration& record, uint64_t revision,
                   absl::string_view message) override;

  // Waits until every queued record is written, held ones included, and
  // the ends written are synced (tests, shutdown).
  void Flush();

 private:
  // What was last seen of a job: a change of any of these is recorded.
  struct Seen {
    uint64_t revision = 0;
    v1::Phase phase = v1::PHASE_UNSPECIFIED;
    int notices = 0;
    int state_changes = 0;
    bool committed = false;
    std::string peer_identity;
    // The same, but for the revision: nothing to record.
    bool SameAs(const Seen& other) const;
  };
  struct Queued {
    v1::Migration record;
    uint64_t revision = 0;
    absl::Time due;  // when the writer may take it
  };
  using Queue = std::map<std::string, Queued>;

  static Seen Of(const v1::Migration& record, uint64_t revision);
  // The first queued record due at `now` (every one is while flushing or
  // stopping); end() when none is, with *next lowered to when the first
  // held one is due.
  Queue::iterator DueLocked(absl::Time now, absl::Time* next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Whether the ends written are due for their sync (always while flushing
  // or stopping); when not, *next lowered to when they are.
  bool SyncDueLocked(absl::Time now, absl::Time* next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  void WriterLoop();
  // Records `record` and, when it is stored, notes `revision` as the job's
  // newest stored one (and, for Sync::kLater, that the writer syncs it).
  absl::Status Store(const v1::Migration& record, uint64_t revision,
                     Journal::Sync sync)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Has the writer sync what was written without it, within downtime_hold_.
  void SyncLaterLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  void LogFailure(const v1::Migration& record, absl::string_view why,
                  const absl::Status& s);

  Journal* const journal_;
  const absl::Duration downtime_hold_;
  // Held while writing; taken before queue_mu_.
  absl::Mutex write_mu_;
  absl::Mutex queue_mu_;
  std::map<std::string, Seen> seen_ ABSL_GUARDED_BY(queue_mu_);
  Queue queued_ ABSL_GUARDED_BY(queue_mu_);
  // The newest revision stored, per job that has not ended.
  std::map<std::string, uint64_t> stored_ ABSL_GUARDED_BY(queue_mu_);
  // Bumped by what the waiting writer must look at: a record due before it
  // would wake anyway, a Flush, the stop. Waking it for nothing is not
  // free: on a VM, waking an idle vCPU costs the waker.
  uint64_t changes_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // When the writer wakes anyway, while it waits (InfinitePast otherwise:
  // a writer that is not waiting looks at the queue again when it is done).
  absl::Time writer_wakes_ ABSL_GUARDED_BY(queue_mu_) = absl::InfinitePast();
  // Ends written and not synced yet, and when the writer syncs them.
  bool sync_pending_ ABSL_GUARDED_BY(queue_mu_) = false;
  absl::Time sync_due_ ABSL_GUARDED_BY(queue_mu_);
  int writing_ ABSL_GUARDED_BY(queue_mu_) = 0;
  int flushing_ ABSL_GUARDED_BY(queue_mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  std::thread writer_;
};

}  // namespace migd::journal

#endif  // MIGD_JOURNAL_JOURNAL_OBSERVER_H_
