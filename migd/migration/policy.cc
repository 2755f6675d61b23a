#include "migd/migration/policy.h"

#include "absl/strings/str_cat.h"

namespace migd::migration {

absl::Duration ExpectedDowntime(const IterationStats& stats) {
  if (stats.remaining_bytes == 0) return absl::ZeroDuration();
  if (stats.bandwidth <= 0) return absl::InfiniteDuration();
  return absl::Seconds(stats.remaining_bytes / stats.bandwidth);
}

Verdict Decide(const ConvergencePolicy& policy, const IterationStats& stats,
               std::string* why) {
  absl::Duration expected = ExpectedDowntime(stats);
  bool fits = expected <= policy.downtime_limit;
  if (fits && stats.all_acked) {
    *why =
        absl::StrCat("converged at iteration ", stats.iteration,
                     ": expected downtime ", absl::FormatDuration(expected),
                     " <= limit ", absl::FormatDuration(policy.downtime_limit));
    return Verdict::kSwitchOver;
  }
  std::string cap;
  if (stats.iteration >= policy.max_iterations) {
    cap = absl::StrCat(policy.max_iterations, " iterations");
  } else if (stats.elapsed >= policy.max_precopy_time) {
    cap = absl::StrCat(absl::FormatDuration(policy.max_precopy_time),
                       " of pre-copy");
  } else if (stats.idle) {
    cap = "the state pre-copy can move";
  }
  if (cap.empty()) return Verdict::kContinue;
  if (!stats.all_acked) {
    // The acknowledgement wait has its own timeout; keep sending meanwhile.
    return Verdict::kContinue;
  }
  *why = absl::StrCat("pre-copy did not converge within ", cap,
                      ": expected downtime ", absl::FormatDuration(expected),
                      " > limit ", absl::FormatDuration(policy.downtime_limit),
                      " (", stats.remaining_bytes, " bytes remaining at ",
                      static_cast<uint64_t>(stats.bandwidth), " bytes/s)");
  return policy.fail_if_not_converged ? Verdict::kFail
                                      : Verdict::kSwitchOverForced;
}

}  // namespace migd::migration
