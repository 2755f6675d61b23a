// migd/migration/in_doubt.h
//
// A job whose outcome is in doubt (PHASE_IN_DOUBT): COMMIT went out, and this
// side cannot tell whether the other side runs the devices. Until it can, the
// devices stay as they are (a source's stopped, never resumed here) and the
// job holds them. A source asks the destination (TransferService.GetOutcome)
// for as long as it takes, waiting first_retry, then twice as long each time
// up to max_retry; an answer that settles it decides (commit.h). An operator
// may decide instead (Resolve). Whichever comes first ends the job; the other
// finds it ended.
//
// Used by a source whose completion did not arrive (SourceJob) and by the
// agent for the jobs recovery left IN_DOUBT at its start.
//
// Thread-safe.

#ifndef MIGD_MIGRATION_IN_DOUBT_H_
#define MIGD_MIGRATION_IN_DOUBT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "migd/device/device.h"
#include "migd/migration/commit.h"
#include "migd/migration/job.h"

namespace migd::migration {

struct InDoubtOptions {
  // Opens a connection to the destination for GetOutcome. Null: nothing to
  // ask (a destination job): only an operator ends the job.
  std::function<std::shared_ptr<grpc::Channel>()> dial;
  // The wait between two questions: first_retry, doubling up to max_retry.
  absl::Duration first_retry = absl::Milliseconds(500);
  absl::Duration max_retry = absl::Seconds(30);
  // The deadline of one GetOutcome call.
  absl::Duration call_timeout = absl::Seconds(10);
};

class InDoubt {
 public:
  // Puts `job` IN_DOUBT (when it is not already), saying `reason` and what
  // happens next in the record (Migration.in_doubt) and a notice. `devices`:
  // the job's devices by index (nullptr for one this agent does not have
  // any more). `cause`: what the job ends FAILED with when this side's
  // devices do not run the VM in the end (a source that resumes them, a
  // destination that resets them). `on_done` runs once the devices reached
  // their end, before the job is marked ended (to release them).
  InDoubt(std::shared_ptr<Job> job, std::vector<device::Device*> devices,
          absl::Status cause, const std::string& reason,
          InDoubtOptions options, std::function<void()> on_done);

  InDoubt(const InDoubt&) = delete;
  InDoubt& operator=(const InDoubt&) = delete;

  // Asks the destination until an answer settles the job (then applies it),
  // an operator resolved it, or Stop. True when the job ended; false at once
  // without options.dial, and after Stop.
  bool Run();

  // An operator's decision, `who` being the caller's identity (for the log
  // and the record). kInvalidArgument for RESOLUTION_UNSPECIFIED;
  // kFailedPrecondition (NOT_IN_DOUBT) when the job ended already; a device
  // error when a destination's devices cannot be resumed: one that has not
  // loaded its state (not STOP or later: a stale RESUMING session is never
  // sent through an arc), one missing, or an arc that fails (the job stays
  // IN_DOUBT, a notice says which).
  absl::Status Resolve(v1::Resolution resolution, const std::string& who);

  // Makes Run return soon (a call in flight is cancelled), leaving the job
  // IN_DOUBT and its devices held (agent shutdown: recovery takes it up at
  // the next start).
  void Stop();

  const std::shared_ptr<Job>& job() const { return job_; }
  // True when Run asks someone (a source job with somewhere to dial).
  bool asks() const { return options_.dial != nullptr; }

 private:
  // Applies `end` (not kStayInDoubt), `how` saying who settled it. Ends the
  // job unless a destination's devices cannot be resumed.
  absl::Status EndLocked(LocalEnd end, const std::string& how)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records info_ in the job.
  void PublishLocked(const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<Job> job_;
  const std::vector<device::Device*> devices_;
  const absl::Status cause_;
  const InDoubtOptions options_;

  mutable absl::Mutex mu_;
  std::function<void()> on_done_ ABSL_GUARDED_BY(mu_);
  v1::InDoubt info_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* call_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_IN_DOUBT_H_
