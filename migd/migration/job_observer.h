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
//   - AfterChange, after every change of the record (phase, progress,
//     notices), in order. It must be quick and must not call back into the
//     job: it runs with the job's lock held, which is what keeps the calls in
//     the order of the changes.

#ifndef MIGD_MIGRATION_JOB_OBSERVER_H_
#define MIGD_MIGRATION_JOB_OBSERVER_H_

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::migration {

class JobObserver {
 public:
  virtual ~JobObserver() = default;

  // `record` is the job as it is when its runner is about to act; `what`
  // says what the runner is about to do ("devices leave RUNNING").
  virtual absl::Status BeforeAct(const v1::Migration& record,
                                 absl::string_view what) = 0;

  // `record` is the job after the change `message` describes.
  virtual void AfterChange(const v1::Migration& record,
                           absl::string_view message) = 0;
};

using JobObservers = std::vector<std::shared_ptr<JobObserver>>;

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_JOB_OBSERVER_H_
