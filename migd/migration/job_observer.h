// migd/migration/job_observer.h
//
// The one seam through which anything that follows jobs (the journal, and
// later metrics) sees them, so that none of it is written into the runners.
// A Job calls its observers:
//   - BeforeAct, when its runner is about to do something recovery after a
//     crash depends on knowing (devices leave the state they were found in,
//     COMMIT goes out, devices resume): write-ahead. A failure stops the
//     runner before it acts, and the job fails with that cause; so a journal
//     that cannot write (a full disk) fails the job before any device moves.
//     It runs without the job's lock: a durable write takes a while, and the
//     job goes on changing meanwhile (a source's stop-copy adds progress
//     while its decision to commit is recorded). So it may run while
//     AfterChange calls for the same job come in, from other threads.
//   - AfterChange, after every change of the record (phase, progress,
//     notices), in order. It must be quick and must not call back into the
//     job: it runs with the job's lock held, which is what keeps the calls in
//     the order of the changes.
// Both carry the record's revision, which grows with every change of the
// record: an observer that keeps records tells an older one from a newer one
// by it, whatever order the calls reach it in (a write-ahead point's record
// may be older than the one an AfterChange call just brought).

#ifndef MIGD_MIGRATION_JOB_OBSERVER_H_
#define MIGD_MIGRATION_JOB_OBSERVER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::migration {

class JobObserver {
 public:
  virtual ~JobObserver() = default;

  // `record` is the job as it is when its runner is about to act, at
  // `revision`; `what` says what the runner is about to do ("devices leave
  // RUNNING"). OK once a record of the job at least as new as `revision` is
  // kept.
  virtual absl::Status BeforeAct(const v1::Migration& record, uint64_t revision,
                                 absl::string_view what) = 0;

  // `record` is the job after the change `message` describes, at `revision`.
  virtual void AfterChange(const v1::Migration& record, uint64_t revision,
                           absl::string_view message) = 0;
};

using JobObservers = std::vector<std::shared_ptr<JobObserver>>;

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_JOB_OBSERVER_H_
