#include "migd/migration/destination_job.h"

#include <sys/random.h>

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/migration/device_steps.h"

namespace migd::migration {
namespace {

using vfio::MigState;

absl::StatusOr<std::string> NewToken() {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat("getrandom failed: ", strerror(errno)));
    }
    got += n;
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes)));
}

// Compares without an early exit, so timing says nothing about the token.
bool TokensEqual(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

}  // namespace

DestinationJob::DestinationJob(std::shared_ptr<Job> job,
                               std::vector<device::Device*> devices,
                               std::function<void()> on_done)
    : job_(std::move(job)),
      devices_(std::move(devices)),
      on_done_(std::move(on_done)) {}

absl::StatusOr<std::shared_ptr<DestinationJob>> DestinationJob::Prepare(
    std::shared_ptr<Job> job, std::vector<device::Device*> devices,
    std::function<void()> on_done) {
  std::shared_ptr<DestinationJob> dj(new DestinationJob(
      std::move(job), std::move(devices), std::move(on_done)));
  absl::StatusOr<std::string> token = NewToken();
  if (!token.ok()) return token.status();
  dj->token_ = *std::move(token);

  absl::MutexLock lock(&dj->mu_);
  Job* j = dj->job_.get();
  for (size_t i = 0; i < dj->devices_.size(); ++i) {
    device::Device* d = dj->devices_[i];
    absl::Status err;
    absl::StatusOr<MigState> state = d->GetState();
    if (!state.ok()) {
      err = state.status();
    } else if (*state != MigState::kRunning) {
      j->SetDeviceState(i, *state);
      err = base::Error(
          absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_ERROR,
          absl::StrCat("device ", d->name(), " is ", vfio::MigStateName(*state),
                       "; an incoming device must be RUNNING (idle)"));
    } else {
      auto stream = MoveDevice(j, i, d, MigState::kResuming);
      if (!stream.ok()) {
        err = stream.status();
      } else if (*stream == nullptr) {
        err = base::Error(absl::StatusCode::kInternal,
                          v1::ERROR_REASON_DEVICE_ERROR,
                          absl::StrCat("device ", d->name(),
                                       ": RESUMING opened no data stream"));
      } else {
        dj->streams_.push_back(*std::move(stream));
        continue;
      }
    }
    // Undo what was done: the devices already in RESUMING need a reset, and
    // so does this one if the failed walk left it somewhere other than RUNNING.
    dj->streams_.clear();
    for (size_t k = 0; k < i; ++k) (void)ResetDevice(j, k, dj->devices_[k]);
    absl::StatusOr<MigState> now = d->GetState();
    if (state.ok() && *state == MigState::kRunning &&
        (!now.ok() || *now != MigState::kRunning)) {
      (void)ResetDevice(j, i, d);
    }
    dj->streams_.clear();
    dj->stage_ = Stage::kDone;
    return err;
  }
  j->SetPhase(v1::PHASE_PREPARED, "");
  return dj;
}

absl::Status DestinationJob::Attach(const v1::SessionHeader& header,
                                    std::function<void()> cancel_session) {
  absl::MutexLock lock(&mu_);
  if (stage_ != Stage::kWaiting) {
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_NOT_PREPARED,
        absl::StrCat("job ", job_->id(), " is ", PhaseName(job_->phase()),
                     ", not waiting for a source (a token is good for one "
                     "session)"));
  }
  if (!TokensEqual(header.transfer_token(), token_)) {
    return base::Error(
        absl::StatusCode::kPermissionDenied, v1::ERROR_REASON_BAD_TOKEN,
        absl::StrCat("transfer token for job ", job_->id(), " does not match"));
  }
  if (header.protocol_version() != v1::PROTOCOL_VERSION_1) {
    return base::Error(
        absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_PROTOCOL_ERROR,
        absl::StrCat("transfer protocol version ", header.protocol_version(),
                     " is not supported (this agent speaks 1)"));
  }
  v1::Migration record = job_->Snapshot();
  if (header.devices_size() != record.devices_size()) {
    return base::Error(
        absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_INCOMPATIBLE,
        absl::StrCat("source sends ", header.devices_size(), " devices, job ",
                     job_->id(), " was prepared for ", record.devices_size()));
  }
  for (int i = 0; i < header.devices_size(); ++i) {
    const v1::DeviceDescriptor& d = header.devices(i);
    const v1::DeviceProgress& p = record.devices(i);
    if (d.index() != static_cast<uint32_t>(i) ||
        d.destination_device() != p.device() ||
        d.source_device() != p.peer_device()) {
      return base::Error(
          absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_INCOMPATIBLE,
          absl::StrCat("device ", i, " of the session is ", d.source_device(),
                       " -> ", d.destination_device(), ", job ", job_->id(),
                       " was prepared for ", p.peer_device(), " -> ",
                       p.device()));
    }
    if (d.kind() != devices_[i]->kind()) {
      return base::Error(absl::StatusCode::kInvalidArgument,
                         v1::ERROR_REASON_INCOMPATIBLE,
                         absl::StrCat("device ", d.source_device(), " is ",
                                      d.kind(), ", destination device ",
                                      p.device(), " is ", devices_[i]->kind()));
    }
    if (d.state_size_bytes() != 0)
      job_->SetDeviceTotal(i, d.state_size_bytes());
  }
  stage_ = Stage::kAttached;
  checker_ = std::make_unique<transfer::StreamChecker>(devices_.size());
  job_->SetCanceller(std::move(cancel_session));
  job_->SetPhase(v1::PHASE_STOP_COPY, "source attached");
  return absl::OkStatus();
}

absl::Status DestinationJob::OnChunk(const transfer::DecodedRequest& chunk) {
  absl::MutexLock lock(&mu_);
  if (stage_ != Stage::kAttached) {
    return absl::FailedPreconditionError("job is not attached");
  }
  const transfer::ChunkHeader& h = chunk.header();
  if (absl::Status s =
          checker_->CheckChunk(h, chunk.payload_size(), chunk.PayloadCrc32c());
      !s.ok()) {
    return s;
  }
  if (!first_chunk_.has_value()) first_chunk_ = absl::Now();
  if (absl::Status s = streams_[h.device]->WriteAll(chunk.payload()); !s.ok()) {
    return base::WithReason(
        base::Annotate(s, absl::StrCat("loading state at offset ", h.offset)),
        v1::ERROR_REASON_STATE_REJECTED);
  }
  job_->AddDeviceBytes(h.device, chunk.payload_size(), stop_copy_started_);
  return absl::OkStatus();
}

absl::Status DestinationJob::OnMarker(const v1::PhaseMarker& marker) {
  absl::MutexLock lock(&mu_);
  if (stage_ != Stage::kAttached) {
    return absl::FailedPreconditionError("job is not attached");
  }
  if (absl::Status s = checker_->CheckMarker(marker); !s.ok()) return s;
  if (marker.kind() == v1::PhaseMarker::ABORT) {
    v1::ErrorReason reason = base::ReasonFromName(marker.reason());
    return base::Error(
        reason == v1::ERROR_REASON_CANCELLED ? absl::StatusCode::kCancelled
                                             : absl::StatusCode::kAborted,
        reason == v1::ERROR_REASON_UNSPECIFIED ? v1::ERROR_REASON_INTERNAL
                                               : reason,
        absl::StrCat("source aborted the migration: ", marker.message()));
  }
  if (marker.kind() == v1::PhaseMarker::STOP_COPY) {
    stop_copy_started_ = true;
    downtime_start_ = absl::Now();
  } else if (marker.kind() == v1::PhaseMarker::INITIAL_DATA_END) {
    // Everything before the marker is already in the device: acknowledged
    // by the session as soon as this returns.
    job_->SetDeviceAcked(marker.device());
  } else if (marker.kind() == v1::PhaseMarker::COMMIT) {
    committed_ = absl::Now();
    job_->SetTransferTime(committed_ - first_chunk_.value_or(committed_));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Completion> DestinationJob::Complete() {
  absl::MutexLock lock(&mu_);
  if (stage_ != Stage::kAttached || !checker_->all_ended()) {
    return base::Error(absl::StatusCode::kFailedPrecondition,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       "session ended before every device's state arrived");
  }
  if (!stop_copy_started_) downtime_start_ = absl::Now();
  job_->SetPhase(v1::PHASE_LOADING, "");
  v1::Completion c;
  for (size_t i = 0; i < devices_.size(); ++i) c.add_devices()->set_device(i);
  absl::Time load_start = absl::Now();
  // RESUMING -> STOP is where a device validates what it loaded.
  for (size_t i = 0; i < devices_.size(); ++i) {
    absl::Time t0 = absl::Now();
    auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kStop);
    c.mutable_devices(i)->set_load_ns(
        absl::ToInt64Nanoseconds(absl::Now() - t0));
    if (!s.ok()) {
      return base::WithReason(s.status(), v1::ERROR_REASON_STATE_REJECTED);
    }
  }
  streams_.clear();
  absl::Time resume_start = absl::Now();
  job_->SetPhase(v1::PHASE_RESUMING, "");
  bool all_p2p = true;
  for (device::Device* d : devices_) {
    absl::StatusOr<vfio::MigFlags> f = d->GetFlags();
    if (!f.ok() || (*f & vfio::kMigP2P) == 0) all_p2p = false;
  }
  std::vector<absl::Duration> resume(devices_.size());
  if (all_p2p) {
    // Barrier: every device can answer peer-to-peer before any one initiates.
    for (size_t i = 0; i < devices_.size(); ++i) {
      absl::Time t0 = absl::Now();
      auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kRunningP2P);
      resume[i] += absl::Now() - t0;
      if (!s.ok()) return s.status();
    }
  }
  for (size_t i = 0; i < devices_.size(); ++i) {
    absl::Time t0 = absl::Now();
    auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kRunning);
    resume[i] += absl::Now() - t0;
    if (!s.ok()) return s.status();
  }
  absl::Time end = absl::Now();
  for (size_t i = 0; i < devices_.size(); ++i) {
    c.mutable_devices(i)->set_resume_ns(absl::ToInt64Nanoseconds(resume[i]));
  }
  c.set_downtime_ns(absl::ToInt64Nanoseconds(end - downtime_start_));
  c.set_load_ns(absl::ToInt64Nanoseconds(resume_start - load_start));
  c.set_resume_ns(absl::ToInt64Nanoseconds(end - resume_start));
  job_->SetDowntime(end - downtime_start_);
  stage_ = Stage::kDone;
  EndLocked(absl::OkStatus());
  return c;
}

void DestinationJob::ResetAllLocked() {
  streams_.clear();
  for (size_t i = 0; i < devices_.size(); ++i) {
    (void)ResetDevice(job_.get(), i, devices_[i]);
  }
}

void DestinationJob::EndLocked(const absl::Status& cause) {
  job_->SetCanceller(nullptr);
  if (on_done_) {
    on_done_();
    on_done_ = nullptr;
  }
  job_->Finish(cause);
}

void DestinationJob::Abort(const absl::Status& cause) {
  absl::MutexLock lock(&mu_);
  if (stage_ == Stage::kDone && job_->terminal()) return;
  stage_ = Stage::kDone;
  absl::Status why = cause;
  if (job_->cancel_requested()) {
    why = base::Error(absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
                      "cancelled by request");
  }
  base::LogWarning("job ", job_->id(),
                   ": aborting incoming migration: ", why.ToString());
  job_->SetPhase(v1::PHASE_ROLLING_BACK,
                 absl::StrCat("resetting devices: ", why.message()));
  ResetAllLocked();
  EndLocked(why);
}

void DestinationJob::Cancel() {
  {
    absl::MutexLock lock(&mu_);
    if (stage_ != Stage::kWaiting) {
      // An attached session: RequestCancel reaches its blocked read, and the
      // session thread aborts the job.
      if (stage_ == Stage::kAttached) job_->RequestCancel();
      return;
    }
  }
  job_->RequestCancel();
  Abort(base::Error(absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
                    "cancelled by request"));
}

}  // namespace migd::migration
