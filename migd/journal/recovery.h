// migd/journal/recovery.h
//
// What an agent does at start, before it serves, with the jobs its journal
// says it was running when it stopped (crashed, was killed, lost power). One
// rule per case, each chosen so that a VM's devices end up running on exactly
// one side, or stay stopped until that can be known:
//
//   journaled job                            | recovery
//   -----------------------------------------+---------------------------------
//   ended (SUCCEEDED, FAILED, CANCELLED)      | kept for the API as it was
//   source, not committed                    | devices back to RUNNING (arcs
//                                            | back, or a reset from ERROR);
//                                            | FAILED AGENT_RESTARTED. The
//                                            | destination never got COMMIT,
//                                            | so it never runs them.
//   source, committed (the decision is       | IN_DOUBT: devices left as they
//   recorded during the stop-copy, before    | are (never resumed: the
//   COMMIT goes out: it may have)            | destination may run them),
//                                            | still held by the job; a
//                                            | destination that never got
//                                            | COMMIT answers NOT_RUN
//   destination, before COMMIT (PREPARED,    | devices reset (a RESUMING
//   PRE_COPY, ROLLING_BACK; STOP_COPY        | session is never sent through
//   recorded in this boot)                   | an arc), but one in STOP is
//                                            | left there (it may have loaded
//                                            | the VM's state: LOADING is
//                                            | journaled without waiting);
//                                            | FAILED AGENT_RESTARTED
//   destination, STOP_COPY recorded before   | IN_DOUBT: devices left as they
//   the host last started (COMMIT may have   | are (below)
//   come)                                    |
//   destination, after COMMIT (LOADING,      | every device found loaded
//   RESUMING)                                | (STOP; in RESUMING also
//                                            | RUNNING_P2P): resumed to
//                                            | RUNNING, SUCCEEDED. Otherwise
//                                            | (RUNNING included: it cannot
//                                            | be told from a reset device)
//                                            | IN_DOUBT: devices left as
//                                            | they are
//   IN_DOUBT (from an earlier start)         | stays IN_DOUBT
//
// Why the boot matters for a destination in STOP_COPY: its STOP_COPY record
// is synced before COMMIT can be taken, but its RESUMING record, written
// before any device runs, is synced a few milliseconds after (the sync is
// off the downtime, journal_observer.h). A crashed agent's writes survive
// (the kernel holds them), so in the boot it was written in, STOP_COPY on
// record means no device ran. A power loss may take the RESUMING record
// with it: the devices, powered off, hold nothing now, but the VM may have
// run on them before, and a source resuming its own would run it a second
// time from an older state. Only a destination can be in that doubt, from
// its source's STOP_COPY marker until its RESUMING record is synced.
//
// A job left IN_DOUBT is then taken up by the agent (migration/in_doubt.h):
// a source asks its destination for the outcome until it answers, a
// destination waits for an operator's decision (ResolveMigration).
//
// Every recovered job gets a notice saying what was found and done, and the
// outcome is journaled. A device the job names that this agent no longer
// has is left alone, and the notice says so (and why, when the caller
// knows: an allocated device the agent could not open again, say).
//
// The devices a job was allocated (a PrepareIncoming by class) are not in
// the agent's configuration: the agent opens them again before recovery,
// and settles their allocations after it (server/allocation_recovery.h).

#ifndef MIGD_JOURNAL_RECOVERY_H_
#define MIGD_JOURNAL_RECOVERY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "migd/journal/journal.h"
#include "migd/migration/device_registry.h"
#include "migd/migration/job_observer.h"
#include "migd/migration/job_table.h"

namespace migd::journal {

struct RecoveryReport {
  int restored = 0;   // jobs read back (all of them)
  int recovered = 0;  // of which were unfinished and were recovered
  int in_doubt = 0;   // of which are left IN_DOUBT
};

// Reads every job from `journal`, recovers the unfinished ones on `devices`
// (claiming the devices of the jobs left IN_DOUBT), and adds them all to
// `jobs`, followed by `observers` from now on. `unavailable`: why a device
// a job names is missing from `devices`, by device name, for the job's
// notice. Fails (the agent must not serve) when the journal cannot be read.
absl::StatusOr<RecoveryReport> Recover(
    Journal& journal, migration::DeviceRegistry& devices,
    migration::JobTable& jobs, const migration::JobObservers& observers,
    const std::map<std::string, std::string>& unavailable = {});

}  // namespace migd::journal

#endif  // MIGD_JOURNAL_RECOVERY_H_
