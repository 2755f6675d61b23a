// migd/migration/policy.h
//
// When pre-copy has done enough: the convergence rule of a job, kept apart
// from the mechanics so it can be tested on numbers alone. Switch over when
// the state that would still have to move with the devices stopped, at the
// bandwidth the job sees, fits the downtime limit, and never before the
// destination acknowledged every device's initial data. When the caps are hit
// first, the policy says whether to switch over anyway or fail.

#ifndef MIGD_MIGRATION_POLICY_H_
#define MIGD_MIGRATION_POLICY_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace migd::migration {

struct ConvergencePolicy {
  absl::Duration downtime_limit = absl::Milliseconds(300);
  // Bytes per second to assume; 0 = use the measured bandwidth.
  uint64_t bandwidth_override = 0;
  uint32_t max_iterations = 30;
  absl::Duration max_precopy_time = absl::Seconds(300);
  // When a cap is hit before convergence: false = switch over anyway.
  bool fail_if_not_converged = false;
  absl::Duration switchover_ack_timeout = absl::Seconds(60);
  bool allow_mixed_p2p = false;
  bool disable_precopy = false;
};

// What one pre-copy iteration saw.
struct IterationStats {
  uint32_t iteration = 0;        // 1-based
  uint64_t remaining_bytes = 0;  // estimated stop-copy bytes, all devices
  double bandwidth = 0;          // bytes/s used for the estimate
  bool all_acked = false;
  // The pass sent nothing: the devices have nothing more until they stop, so
  // waiting cannot make the estimate better.
  bool idle = false;
  absl::Duration elapsed;  // since pre-copy started
};

enum class Verdict {
  kContinue,          // iterate again
  kSwitchOver,        // converged
  kSwitchOverForced,  // a cap was hit; the policy says go anyway
  kFail,              // a cap was hit; the policy says fail
};

// Estimated downtime for `stats` (infinite when the bandwidth is unknown).
absl::Duration ExpectedDowntime(const IterationStats& stats);

// The decision after an iteration; `why` says which rule decided, for the
// job's record.
Verdict Decide(const ConvergencePolicy& policy, const IterationStats& stats,
               std::string* why);

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_POLICY_H_
