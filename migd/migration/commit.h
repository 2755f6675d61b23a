// migd/migration/commit.h
//
// The end of a migration is a commit: once the source sent COMMIT, the
// destination may run the devices, and from then on exactly one side may run
// them. These are the decisions that keep it so, as pure functions of what
// each side knows, so that every runner (a source whose completion did not
// arrive, an agent recovered from its journal, an operator's decision) takes
// the same one:
//
//   source knows            | destination says | the source
//   ------------------------+------------------+---------------------------
//   COMMIT not sent         | (anything else)  | resumes its devices
//   COMMIT not sent         | RUNNING_HERE     | holds them stopped: that
//                           |                  | cannot be; a person decides
//   COMMIT sent             | RUNNING_HERE     | stops them for good: the
//                           |                  | job succeeded
//   COMMIT sent             | NOT_RUN          | resumes them: the job
//                           |                  | failed with its cause
//   COMMIT sent             | UNKNOWN / none   | holds them stopped, asks
//                           |                  | again (IN_DOUBT)
//
// A destination answers from its job's phase; a job that has not resumed a
// device is first aborted, so that NOT_RUN stays true. A destination job
// that ends without running the VM leaves no device running its state: what
// loaded it stays in STOP (device_steps.h, StandDown), never reset, because
// a device may keep its state through a reset.

#ifndef MIGD_MIGRATION_COMMIT_H_
#define MIGD_MIGRATION_COMMIT_H_

#include <string>

#include "proto/migd/v1/migration.pb.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::migration {

// What one side does with its devices at the end of a job.
enum class LocalEnd {
  // This side's devices run the VM: a source resumes them (the job fails
  // with its cause), a destination resumes them (the job succeeds).
  kRunHere,
  // The other side's do: a source stops its devices for good (the job
  // succeeds), a destination stands them down (the job fails).
  kRunThere,
  // Not known: the devices stay as they are, the job IN_DOUBT.
  kStayInDoubt,
};

// "RUN_HERE", "RUN_THERE", "STAY_IN_DOUBT".
std::string LocalEndName(LocalEnd end);

// The source's end, from whether COMMIT may have gone out (`committed`) and
// the destination's answer (OUTCOME_UNSPECIFIED: no answer).
LocalEnd SourceEnd(bool committed, v1::Outcome destination_says);

// The end an operator's `resolution` means for a job of `role`; kStayInDoubt
// for RESOLUTION_UNSPECIFIED or an unknown role.
LocalEnd OperatorEnd(v1::Role role, v1::Resolution resolution);

// What a destination answers GetOutcome with for a job in `phase`.
struct DestinationAnswer {
  v1::Outcome outcome = v1::OUTCOME_UNKNOWN;
  // The job has not resumed a device but could still: abort it (reset its
  // devices) before answering `outcome` (NOT_RUN).
  bool abort_first = false;
};
// SUCCEEDED and RESUMING: RUNNING_HERE. FAILED and CANCELLED: NOT_RUN (every
// way a destination job fails resets or stops its devices). IN_DOUBT: UNKNOWN. Any
// other phase (PREPARED, STOP_COPY, LOADING, ...): NOT_RUN after an abort.
DestinationAnswer AnswerFor(v1::Phase phase);

// "RUNNING_HERE" for OUTCOME_RUNNING_HERE: the name people read.
std::string OutcomeName(v1::Outcome outcome);

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_COMMIT_H_
