#include "migd/migration/in_doubt.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/migration/device_steps.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::migration {
namespace {

using vfio::MigState;

std::string Advice(v1::Role role, const std::string& job_id) {
  if (role == v1::ROLE_SOURCE) {
    return absl::StrCat(
        "the devices stay stopped (never resumed here: the destination may "
        "run them) while this agent asks the destination for the outcome. "
        "If it can never answer (its host is gone for good), decide: "
        "`migctl resolve ",
        job_id,
        " --outcome=source` resumes the devices here, `--outcome=destination` "
        "releases them for good (the VM runs there)");
  }
  return absl::StrCat(
      "the devices stay as they are, held by the job; the source asks this "
      "agent and is told UNKNOWN. Decide: `migctl resolve ",
      job_id,
      " --outcome=destination` resumes the devices here (only if the source "
      "does not run the VM), `--outcome=source` resets them");
}

std::string ResolutionName(v1::Resolution r) {
  return r == v1::RESOLUTION_SOURCE        ? "source"
         : r == v1::RESOLUTION_DESTINATION ? "destination"
                                           : "unspecified";
}

}  // namespace

InDoubt::InDoubt(std::shared_ptr<Job> job, std::vector<device::Device*> devices,
                 absl::Status cause, const std::string& reason,
                 InDoubtOptions options, std::function<void()> on_done)
    : job_(std::move(job)),
      devices_(std::move(devices)),
      cause_(std::move(cause)),
      options_(std::move(options)),
      on_done_(std::move(on_done)) {
  absl::MutexLock lock(&mu_);
  info_ = job_->Snapshot().in_doubt();
  info_.set_reason(reason);
  info_.set_advice(Advice(job_->role(), job_->id()));
  if (job_->phase() != v1::PHASE_IN_DOUBT) {
    const std::string notice =
        absl::StrCat("in doubt: ", reason, "; ", info_.advice());
    base::LogWarning("job ", job_->id(), ": ", notice);
    job_->AddNotice(notice);
    job_->SetPhase(v1::PHASE_IN_DOUBT,
                   absl::StrCat("phase IN_DOUBT: ", reason));
  }
  PublishLocked("in doubt");
}

void InDoubt::PublishLocked(const std::string& message) {
  job_->SetInDoubt(info_, message);
}

bool InDoubt::Run() {
  if (!asks()) return false;
  absl::Duration wait = options_.first_retry;
  std::string last;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (ended_ || stopping_) return ended_;
    }
    // A channel per question: one kept across an outage would wait out
    // gRPC's reconnect backoff (up to minutes) after the peer came back.
    std::unique_ptr<v1::TransferService::Stub> stub =
        v1::TransferService::NewStub(options_.dial());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoMilliseconds(options_.call_timeout));
    {
      absl::MutexLock lock(&mu_);
      if (ended_ || stopping_) return ended_;
      call_ = &context;
    }
    v1::GetOutcomeRequest request;
    request.set_job_id(job_->id());
    v1::GetOutcomeResponse response;
    grpc::Status s = stub->GetOutcome(&context, request, &response);

    absl::MutexLock lock(&mu_);
    call_ = nullptr;
    if (ended_ || stopping_) return ended_;
    const v1::Outcome said =
        s.ok() ? response.outcome() : v1::OUTCOME_UNSPECIFIED;
    const std::string answer =
        s.ok()
            ? absl::StrCat(OutcomeName(said),
                           response.message().empty() ? "" : ": ",
                           response.message())
            : absl::StrCat("no answer (",
                           absl::StatusCodeToString(
                               static_cast<absl::StatusCode>(s.error_code())),
                           ": ", s.error_message(), ")");
    info_.set_attempts(info_.attempts() + 1);
    info_.set_last_answer(answer);
    if (answer != last) {
      // Each new answer once, not every retry of the same one.
      base::LogInfo("job ", job_->id(),
                    ": asked the destination for the "
                    "outcome (attempt ",
                    info_.attempts(), "): ", answer);
      last = answer;
    }
    const LocalEnd end = SourceEnd(/*committed=*/true, said);
    if (end != LocalEnd::kStayInDoubt) {
      absl::Status applied = EndLocked(
          end, absl::StrCat("the destination answered ", OutcomeName(said),
                            response.message().empty() ? "" : " (",
                            response.message(),
                            response.message().empty() ? "" : ")"));
      if (applied.ok()) return true;
    }
    PublishLocked(absl::StrCat("in doubt: the destination said ", answer));
    auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return ended_ || stopping_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&woken), wait);
    if (ended_ || stopping_) return ended_;
    wait = std::min(wait * 2, options_.max_retry);
  }
}

absl::Status InDoubt::Resolve(v1::Resolution resolution,
                              const std::string& who) {
  const LocalEnd end = OperatorEnd(job_->role(), resolution);
  if (end == LocalEnd::kStayInDoubt) {
    return base::InvalidRequest(
        "resolution must be RESOLUTION_SOURCE or RESOLUTION_DESTINATION");
  }
  absl::MutexLock lock(&mu_);
  if (ended_) {
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_NOT_IN_DOUBT,
        absl::StrCat("job ", job_->id(), " is not in doubt any more (",
                     PhaseName(job_->phase()), ")"));
  }
  const std::string how =
      absl::StrCat("operator ", who.empty() ? "(no identity)" : who,
                   " chose the ", ResolutionName(resolution));
  base::LogWarning("job ", job_->id(), ": resolved by ", how);
  return EndLocked(end, how);
}

void InDoubt::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  if (call_ != nullptr) call_->TryCancel();
}

absl::Status InDoubt::EndLocked(LocalEnd end, const std::string& how) {
  const bool source = job_->role() == v1::ROLE_SOURCE;
  // Does this side's copy of the devices run the VM from now on?
  const bool run_here = end == LocalEnd::kRunHere;
  std::vector<std::string> failed;
  std::string done;
  if (source && run_here) {
    for (size_t i = 0; i < devices_.size(); ++i) {
      if (devices_[i] == nullptr) continue;
      if (absl::Status s = RestoreRunning(job_.get(), i, devices_[i]);
          !s.ok()) {
        failed.push_back(std::string(s.message()));
      }
    }
    done = "the destination never ran the devices: they run here again";
  } else if (source) {
    // The destination runs: STOP_COPY -> STOP, as a completed job leaves
    // them (so the VM may migrate back later).
    for (size_t i = 0; i < devices_.size(); ++i) {
      if (devices_[i] == nullptr) continue;
      auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kStop);
      if (!s.ok()) failed.push_back(std::string(s.status().message()));
    }
    done = "the devices run on the destination: stopped for good here";
  } else if (run_here) {
    bool all_p2p = true;
    for (device::Device* d : devices_) {
      if (d == nullptr) {
        const std::string why =
            "a device of the job is not on this agent any more: it cannot "
            "run here";
        job_->AddNotice(absl::StrCat("resolve (", how, "): ", why));
        return base::Error(absl::StatusCode::kFailedPrecondition,
                           v1::ERROR_REASON_DEVICE_NOT_FOUND, why);
      }
      // Only a device that loaded its state (STOP or later) holds the VM's;
      // a stale RESUMING session is never sent through an arc.
      absl::StatusOr<MigState> state = d->GetState();
      if (!state.ok() ||
          (*state != MigState::kStop && *state != MigState::kRunningP2P &&
           *state != MigState::kRunning)) {
        const std::string why = absl::StrCat(
            "device ", d->name(), " is ",
            state.ok() ? vfio::MigStateName(*state)
                       : std::string(state.status().message()),
            ", not loaded: it cannot run the VM here (choose the source)");
        job_->AddNotice(absl::StrCat("resolve (", how, "): ", why));
        return base::Error(absl::StatusCode::kFailedPrecondition,
                           v1::ERROR_REASON_DEVICE_ERROR, why);
      }
      absl::StatusOr<vfio::MigFlags> f = d->GetFlags();
      if (!f.ok() || (*f & vfio::kMigP2P) == 0) all_p2p = false;
    }
    // The P2P barrier, as a completing destination resumes.
    for (MigState target : {MigState::kRunningP2P, MigState::kRunning}) {
      if (target == MigState::kRunningP2P && !all_p2p) continue;
      for (size_t i = 0; i < devices_.size(); ++i) {
        auto s = MoveDevice(job_.get(), i, devices_[i], target);
        if (!s.ok()) {
          const std::string notice = absl::StrCat(
              "resolve (", how,
              "): the devices cannot be resumed here: ", s.status().message(),
              "; the job stays in doubt");
          base::LogError("job ", job_->id(), ": ", notice);
          job_->AddNotice(notice);
          return s.status();
        }
      }
    }
    done = "the devices run here";
  } else {
    // A destination's devices may hold the VM's loaded state, which a reset
    // may keep: they stop instead (StandDown).
    for (size_t i = 0; i < devices_.size(); ++i) {
      if (devices_[i] == nullptr) continue;
      if (absl::Status s = StandDown(job_.get(), i, devices_[i]); !s.ok()) {
        failed.push_back(std::string(s.message()));
      }
    }
    done =
        "the devices run on the source: stopped here (what loaded the VM's "
        "state stays in STOP, the rest was reset)";
  }
  std::string notice = absl::StrCat("resolved: ", how, "; ", done);
  if (!failed.empty()) {
    absl::StrAppend(&notice, " (but: ", absl::StrJoin(failed, "; "), ")");
  }
  base::LogWarning("job ", job_->id(), ": ", notice);
  info_.set_resolution(how);
  PublishLocked(notice);
  job_->AddNotice(notice);
  ended_ = true;
  if (on_done_) {
    on_done_();
    on_done_ = nullptr;
  }
  // The migration succeeded when the VM runs on the destination now.
  const bool succeeded = source ? !run_here : run_here;
  absl::Status cause = cause_;
  if (cause.ok()) {
    cause = base::Error(absl::StatusCode::kAborted, v1::ERROR_REASON_INTERNAL,
                        "the migration did not complete");
  }
  job_->Finish(succeeded ? absl::OkStatus() : cause);
  return absl::OkStatus();
}

}  // namespace migd::migration
