// e2e/testing/journal_probe.h
//
// What an agent's journal holds, read by a test over a read-only SQLite
// connection of its own (the agent keeps writing). The agent journals the
// phases recovery does not act on (PRE_COPY, the destination's STOP_COPY,
// LOADING) from a writer thread, a moment after the API shows them: a test
// that kills an agent in such a phase waits for the journal to show it first.

#ifndef MIGD_E2E_TESTING_JOURNAL_PROBE_H_
#define MIGD_E2E_TESTING_JOURNAL_PROBE_H_

#include <optional>
#include <set>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::e2e {

// The phase the journal in `state_dir` holds for `job`; nullopt when it has
// no record of the job yet. Errors name the file.
absl::StatusOr<std::optional<v1::Phase>> JournaledPhase(
    absl::string_view state_dir, absl::string_view job);

// Waits until the journal in `state_dir` holds `job` in one of `phases`;
// kDeadlineExceeded naming the phase it holds at `deadline`.
absl::Status WaitForJournaledPhase(absl::string_view state_dir,
                                   absl::string_view job,
                                   const std::set<v1::Phase>& phases,
                                   absl::Time deadline);

}  // namespace migd::e2e

#endif  // MIGD_E2E_TESTING_JOURNAL_PROBE_H_
