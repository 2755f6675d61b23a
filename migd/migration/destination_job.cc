#include "migd/migration/destination_job.h"

#include <sys/random.h>

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/migration/commit.h"
#include "migd/migration/device_states.h"
#include "migd/migration/device_steps.h"

namespace migd::migration {
namespace {

using transfer::kMaxStreams;
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
                               std::function<void()> on_done,
                               uint64_t memory_cap_bytes,
                               absl::Duration wait_timeout,
                               std::string source_identity)
    : job_(std::move(job)),
      devices_(std::move(devices)),
      on_done_(std::move(on_done)),
      source_identity_(std::move(source_identity)),
      memory_cap_bytes_(memory_cap_bytes),
      wait_timeout_(wait_timeout) {
  absl::MutexLock lock(&mu_);
  loaded_.assign(devices_.size(), false);
}

DestinationJob::~DestinationJob() { token_timer_.reset(); }

absl::StatusOr<std::shared_ptr<DestinationJob>> DestinationJob::Prepare(
    std::shared_ptr<Job> job, std::vector<device::Device*> devices,
    std::function<void()> on_done, uint64_t memory_cap_bytes,
    absl::Duration wait_timeout, std::string source_identity,
    absl::Duration token_ttl) {
  std::shared_ptr<DestinationJob> dj(new DestinationJob(
      std::move(job), std::move(devices), std::move(on_done), memory_cap_bytes,
      wait_timeout, std::move(source_identity)));
  absl::StatusOr<std::string> token = NewToken();
  if (!token.ok()) return token.status();
  dj->token_ = *std::move(token);

  absl::MutexLock lock(&dj->mu_);
  Job* j = dj->job_.get();
  // Write-ahead: the job is on record before any device moves, so that a
  // restarted agent resets them.
  if (absl::Status s =
          j->EnterPhase(v1::PHASE_PREPARED, "the devices go to RESUMING");
      !s.ok()) {
    dj->stage_ = Stage::kDone;
    j->Finish(s);
    return s;
  }
  for (size_t i = 0; i < dj->devices_.size(); ++i) {
    device::Device* d = dj->devices_[i];
    absl::Status err;
    // The state it is found in decides (device_states.h): RUNNING and STOP
    // are idle and walk to RESUMING; a left-over is reset to RUNNING first.
    absl::StatusOr<MigState> from =
        SettleFoundState(j, i, d, DeviceRole::kDestination);
    if (!from.ok()) {
      err = from.status();
    } else {
      auto stream = MoveDevice(j, i, d, MigState::kResuming);
      if (!stream.ok()) {
        err = stream.status();
      } else if (*stream == nullptr) {
        err = base::Error(
            absl::StatusCode::kInternal, v1::ERROR_REASON_DEVICE_ERROR,
            absl::StrCat("device ", d->name(), ": ", vfio::MigStateName(*from),
                         " -> RESUMING opened no data stream"));
      } else {
        dj->streams_.push_back(*std::move(stream));
        continue;
      }
    }
    // Undo what was done: the devices already in RESUMING need a reset, and
    // so does this one if the walk (or a reset) left it in a left-over state,
    // or somewhere it no longer tells after it moved. An idle device, or one
    // refused in a state the uAPI does not define, is left as it is.
    dj->streams_.clear();
    for (size_t k = 0; k < i; ++k) (void)ResetDevice(j, k, dj->devices_[k]);
    absl::StatusOr<MigState> now = d->GetState();
    if (now.ok() ? IsLeftOverState(*now) : from.ok()) {
      (void)ResetDevice(j, i, d);
    }
    dj->stage_ = Stage::kDone;
    // On record as ended, so that a restart does not reset these devices
    // again, perhaps under a later job.
    j->Finish(err);
    return err;
  }
  j->SetPeerIdentity(dj->source_identity_);
  if (token_ttl != absl::InfiniteDuration()) {
    dj->token_expires_ = absl::Now() + token_ttl;
    DestinationJob* raw = dj.get();
    dj->token_timer_ = std::make_unique<base::Watchdog>(
        token_ttl, [raw] { raw->ExpireToken(); });
  }
  return dj;
}

void DestinationJob::ExpireToken() {
  absl::MutexLock lock(&mu_);
  if (stage_ != Stage::kWaiting) return;  // attached in time, or ended
  stage_ = Stage::kDone;
  absl::Status why = base::Error(
      absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
      absl::StrCat("no source attached before the transfer token expired at ",
                   absl::FormatTime(absl::RFC3339_sec, token_expires_,
                                    absl::UTCTimeZone()),
                   " (prepare the job again)"));
  base::LogWarning("job ", job_->id(), ": ", why.message());
  job_->SetPhase(v1::PHASE_ROLLING_BACK,
                 absl::StrCat("resetting devices: ", why.message()));
  ReleaseDevicesLocked(why);
  EndLocked(why);
}

absl::Status DestinationJob::Attach(const v1::SessionHeader& header,
                                    const std::string& peer_identity,
                                    StreamCanceller cancel_session) {
  absl::MutexLock lock(&mu_);
  if (stage_ != Stage::kWaiting) {
    // A job that ended says why (its token expired, it was cancelled), so
    // that a source that comes late learns what to do.
    const v1::Migration record = job_->Snapshot();
    const std::string why =
        record.failure().message().empty()
            ? std::string()
            : absl::StrCat(": ", record.failure().message());
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_NOT_PREPARED,
        absl::StrCat("job ", job_->id(), " is ", PhaseName(record.phase()), why,
                     "; not waiting for a source (a token is good for one "
                     "session)"));
  }
  if (absl::Status s = CheckToken(header, peer_identity, true); !s.ok()) {
    return s;
  }
  if (header.stream_index() != 0) {
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_PROTOCOL_ERROR,
        absl::StrCat("data stream ", header.stream_index(), " of job ",
                     job_->id(), " came before its control stream"));
  }
  if (header.num_streams() < 1 || header.num_streams() > kMaxStreams) {
    return base::Error(
        absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_PROTOCOL_ERROR,
        absl::StrCat("session of ", header.num_streams(), " data streams; 1..",
                     kMaxStreams, " are supported"));
  }
  // Each stream holds up to two chunks here (transfer_service.cc's
  // ReceiveOptions::max_buffers): refused before anything is held.
  if (const uint64_t most =
          uint64_t{2} * header.num_streams() * header.max_chunk_bytes();
      most > memory_cap_bytes_) {
    return base::Error(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_INCOMPATIBLE,
        absl::StrCat("session of ", header.num_streams(),
                     " data streams of chunks up to ", header.max_chunk_bytes(),
                     " bytes could hold ", most,
                     " bytes of state here (two chunks a stream), above this "
                     "agent's --transfer_memory_cap of ",
                     memory_cap_bytes_,
                     " bytes: use fewer streams or smaller "
                     "chunks"));
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
  if (session_check_) {
    if (absl::Status s = session_check_(header); !s.ok()) {
      // The token is good and the devices are the job's: this job's source
      // can never send a state that loads here. It ends, its devices reset
      // (nothing was loaded), rather than hold them until the token expires.
      AbortLocked(s, /*from_stream=*/-1);
      return s;
    }
  }
  stage_ = Stage::kAttached;
  checker_ = std::make_unique<transfer::StreamChecker>(devices_.size());
  num_streams_ = header.num_streams();
  data_attached_.assign(num_streams_ + 1, false);
  {
    absl::MutexLock w(&write_mu_);
    written_.assign(devices_.size(), 0);
    end_.assign(devices_.size(), std::nullopt);
    data_streams_expected_ = num_streams_;
  }
  AddCanceller(0, std::move(cancel_session));
  DestinationJob* self = this;
  // CancelMigration: the session ends CANCELLED, which is the truth here.
  job_->SetCanceller([self] {
    self->CancelStreams(
        /*except=*/-1,
        base::Error(absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
                    "cancelled by request"));
  });
  // The source's devices run until its STOP_COPY marker (OnMarker).
  job_->SetPhase(v1::PHASE_PRE_COPY, "source attached");
  return absl::OkStatus();
}

absl::Status DestinationJob::CheckToken(const v1::SessionHeader& header,
                                        const std::string& peer_identity,
                                        bool check_expiry) const {
  if (!TokensEqual(header.transfer_token(), token_)) {
    return base::Error(
        absl::StatusCode::kPermissionDenied, v1::ERROR_REASON_BAD_TOKEN,
        absl::StrCat("transfer token for job ", job_->id(), " does not match"));
  }
  if (peer_identity != source_identity_) {
    return base::Error(
        absl::StatusCode::kPermissionDenied, v1::ERROR_REASON_BAD_TOKEN,
        absl::StrCat(
            "the transfer token of job ", job_->id(), " is bound to source ",
            source_identity_.empty() ? "(no identity)" : source_identity_,
            "; this session comes from ",
            peer_identity.empty() ? "(no identity)" : peer_identity));
  }
  if (check_expiry && absl::Now() >= token_expires_) {
    return base::Error(
        absl::StatusCode::kPermissionDenied, v1::ERROR_REASON_BAD_TOKEN,
        absl::StrCat("the transfer token of job ", job_->id(), " expired at ",
                     absl::FormatTime(absl::RFC3339_sec, token_expires_,
                                      absl::UTCTimeZone())));
  }
  if (header.protocol_version() != v1::PROTOCOL_VERSION_2) {
    return base::Error(
        absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_PROTOCOL_ERROR,
        absl::StrCat("transfer protocol version ", header.protocol_version(),
                     " is not supported (this agent speaks 2, whose data "
                     "streams travel on the data channel)"));
  }
  return absl::OkStatus();
}

void DestinationJob::SetSessionCheck(
    std::function<absl::Status(const v1::SessionHeader&)> check) {
  absl::MutexLock lock(&mu_);
  session_check_ = std::move(check);
}

absl::Status DestinationJob::AttachData(const v1::SessionHeader& header,
                                        const std::string& peer_identity,
                                        StreamCanceller cancel_stream) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckToken(header, peer_identity, false); !s.ok()) {
    return s;
  }
  if (stage_ != Stage::kAttached) {
    return base::Error(absl::StatusCode::kFailedPrecondition,
                       v1::ERROR_REASON_NOT_PREPARED,
                       absl::StrCat("job ", job_->id(),
                                    " has no attached session for data stream ",
                                    header.stream_index()));
  }
  uint32_t k = header.stream_index();
  if (k < 1 || k > num_streams_ || data_attached_[k]) {
    return base::Error(absl::StatusCode::kInvalidArgument,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       absl::StrCat("data stream ", k, " of job ", job_->id(),
                                    " is out of range (1..", num_streams_,
                                    ") or attached twice"));
  }
  data_attached_[k] = true;
  AddCanceller(k, std::move(cancel_stream));
  return absl::OkStatus();
}

void DestinationJob::AddCanceller(uint32_t stream, StreamCanceller cancel) {
  absl::MutexLock lock(&cancel_mu_);
  cancellers_[stream] = std::move(cancel);
}

void DestinationJob::StreamGone(uint32_t index) {
  absl::MutexLock lock(&cancel_mu_);
  cancellers_.erase(index);
}

void DestinationJob::CancelStreams(int except, const absl::Status& why) {
  absl::MutexLock lock(&cancel_mu_);
  for (const auto& [stream, cancel] : cancellers_) {
    if (static_cast<int>(stream) != except) cancel(why);
  }
}

absl::Status DestinationJob::OnChunk(transfer::DecodedRequest chunk) {
  {
    absl::MutexLock lock(&mu_);
    if (stage_ != Stage::kAttached) {
      return absl::FailedPreconditionError("job is not attached");
    }
  }
  const uint32_t device = chunk.header().device;
  const uint64_t offset = chunk.header().offset;
  const uint64_t size = chunk.payload_size();
  if (device >= devices_.size() || size == 0) {
    // The stream's checker and receiver refuse these first.
    return base::Error(absl::StatusCode::kInvalidArgument,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       absl::StrCat("chunk of ", size, " bytes for device ",
                                    device, " of ", devices_.size()));
  }
  // The chunk is held until it is in the device (or refused).
  const uint64_t held = held_bytes_.fetch_add(size) + size;
  for (uint64_t peak = peak_held_bytes_.load();
       held > peak && !peak_held_bytes_.compare_exchange_weak(peak, held);) {
  }
  absl::Cleanup release = [this, size] { held_bytes_.fetch_sub(size); };
  absl::MutexLock w(&write_mu_);
  if (!aborted_ && written_[device] < offset) {
    // Not its turn: other streams carry the bytes before it. This thread
    // writes it itself once they are in, rather than leave it for the
    // thread that writes its predecessor (which would find it cold in the
    // cache), and reads nothing more meanwhile: this stream's window fills
    // and stalls the source, so the job holds one chunk per stream at most.
    auto turn = [this, device, offset,
                 size]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
      return aborted_ || written_[device] >= offset ||
             (end_[device].has_value() && offset + size > *end_[device]);
    };
    if (!write_mu_.AwaitWithTimeout(absl::Condition(&turn), wait_timeout_)) {
      return base::Error(
          absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
          absl::StrCat("device ", devices_[device]->name(), ": the chunk at ",
                       offset, " waited ", absl::FormatDuration(wait_timeout_),
                       " for the bytes before it; the device holds ",
                       written_[device], " bytes"));
    }
  }
  if (aborted_) return AbortedLocked();
  if (end_[device].has_value() && offset + size > *end_[device]) {
    return base::Error(
        absl::StatusCode::kDataLoss, v1::ERROR_REASON_STREAM_CORRUPTED,
        absl::StrCat("device ", devices_[device]->name(), ": the chunk at ",
                     offset, " (", size, " bytes) runs past the end of its ",
                     *end_[device], "-byte stream"));
  }
  if (written_[device] != offset) {
    return base::Error(
        absl::StatusCode::kDataLoss, v1::ERROR_REASON_STREAM_CORRUPTED,
        absl::StrCat("device ", devices_[device]->name(), ": the chunk at ",
                     offset, " (", size, " bytes) overlaps the ",
                     written_[device], " bytes already written"));
  }
  if (device >= streams_.size() || streams_[device] == nullptr) {
    // Complete took the load sessions once every device ended: a chunk now
    // is one too many (the end checks above refuse it first).
    return absl::FailedPreconditionError(
        absl::StrCat("device ", devices_[device]->name(),
                     ": a chunk after its load session ended"));
  }
  if (!first_chunk_.has_value()) first_chunk_ = absl::Now();
  if (absl::Status s = streams_[device]->WriteAll(chunk.payload()); !s.ok()) {
    return base::WithReason(
        base::Annotate(s, absl::StrCat("loading state at offset ", offset)),
        v1::ERROR_REASON_STATE_REJECTED);
  }
  written_[device] += size;
  if (on_activity_) on_activity_();
  job_->AddDeviceBytes(device, size, stop_copy_started_);
  return absl::OkStatus();
}

absl::Status DestinationJob::AbortedLocked() const {
  if (abort_cause_.ok()) return absl::CancelledError("the job was aborted");
  return base::Annotate(abort_cause_, "the job was aborted");
}

void DestinationJob::DataStreamEnded(uint32_t index) {
  absl::MutexLock w(&write_mu_);
  ++data_streams_ended_;
}

absl::Status DestinationJob::WaitWritten(uint32_t device, uint64_t total,
                                         bool exact) {
  absl::MutexLock w(&write_mu_);
  auto settled = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
    return aborted_ || written_[device] >= total ||
           data_streams_ended_ >= data_streams_expected_;
  };
  if (!write_mu_.AwaitWithTimeout(absl::Condition(&settled), wait_timeout_)) {
    return base::Error(
        absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
        absl::StrCat("device ", devices_[device]->name(), ": ",
                     written_[device], " of ", total, " bytes arrived within ",
                     absl::FormatDuration(wait_timeout_)));
  }
  if (aborted_) return absl::CancelledError("job aborted");
  // Later data (a next pre-copy pass) may already be in the device when an
  // INITIAL_DATA_END is handled; a device's end must match exactly.
  if (written_[device] < total || (exact && written_[device] != total)) {
    return base::Error(
        absl::StatusCode::kDataLoss, v1::ERROR_REASON_STREAM_CORRUPTED,
        absl::StrCat("device ", devices_[device]->name(), ": the source sent ",
                     total, " bytes, ", written_[device], " arrived"));
  }
  return absl::OkStatus();
}

void DestinationJob::SetActivityCallback(std::function<void()> callback) {
  absl::MutexLock w(&write_mu_);
  on_activity_ = std::move(callback);
}

absl::Status DestinationJob::OnMarker(const v1::PhaseMarker& marker) {
  {
    absl::MutexLock lock(&mu_);
    if (stage_ != Stage::kAttached) {
      return absl::FailedPreconditionError("job is not attached");
    }
    if (absl::Status s = checker_->CheckMarker(marker); !s.ok()) return s;
    if (marker.kind() == v1::PhaseMarker::STOP_COPY) {
      downtime_start_ = absl::Now();
    } else if (marker.kind() == v1::PhaseMarker::COMMIT) {
      committed_ = absl::Now();
    }
  }
  switch (marker.kind()) {
    case v1::PhaseMarker::ABORT: {
      v1::ErrorReason reason = base::ReasonFromName(marker.reason());
      return base::Error(
          reason == v1::ERROR_REASON_CANCELLED ? absl::StatusCode::kCancelled
                                               : absl::StatusCode::kAborted,
          reason == v1::ERROR_REASON_UNSPECIFIED ? v1::ERROR_REASON_INTERNAL
                                                 : reason,
          absl::StrCat("source aborted the migration: ", marker.message()));
    }
    case v1::PhaseMarker::STOP_COPY: {
      {
        absl::MutexLock w(&write_mu_);
        stop_copy_started_ = true;
      }
      // Write-ahead: COMMIT may follow, and with it the devices may run
      // here. The destination's RESUMING point is not synced before they do
      // (journal_observer.h): this one, synced while the stop-copy state
      // arrives, is what tells recovery after a power loss that they may
      // have (recovery.h). Not under mu_, which every chunk takes: the data
      // streams go on meanwhile. A failure here ends the job before COMMIT,
      // so the source resumes its devices.
      return job_->EnterPhase(
          v1::PHASE_STOP_COPY,
          "the source's devices stopped: COMMIT may follow");
    }
    case v1::PhaseMarker::INITIAL_DATA_END: {
      // Acknowledged by the session once this returns: the device must hold
      // every byte of the initial data by then.
      if (absl::Status s = WaitWritten(marker.device(), marker.total_bytes(),
                                       /*exact=*/false);
          !s.ok()) {
        return s;
      }
      job_->SetDeviceAcked(marker.device());
      return absl::OkStatus();
    }
    case v1::PhaseMarker::DEVICE_END: {
      {
        // A chunk waiting for its turn past this end wakes and fails.
        absl::MutexLock w(&write_mu_);
        const uint32_t d = marker.device();
        if (written_[d] > marker.total_bytes()) {
          return base::Error(
              absl::StatusCode::kDataLoss, v1::ERROR_REASON_STREAM_CORRUPTED,
              absl::StrCat("device ", devices_[d]->name(), ": the source sent ",
                           marker.total_bytes(), " bytes, ", written_[d],
                           " arrived"));
        }
        end_[d] = marker.total_bytes();
      }
      return WaitWritten(marker.device(), marker.total_bytes(),
                         /*exact=*/true);
    }
    default:
      return absl::OkStatus();
  }
}

absl::StatusOr<v1::Completion> DestinationJob::Complete() {
  absl::MutexLock lock(&mu_);
  bool all_ended = true;
  for (uint32_t d = 0; d < devices_.size(); ++d) {
    all_ended = all_ended && checker_->device_ended(d);
  }
  if (stage_ != Stage::kAttached || !all_ended) {
    return base::Error(absl::StatusCode::kFailedPrecondition,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       "session ended before every device's state arrived");
  }
  absl::MutexLock w(&write_mu_);
  if (!stop_copy_started_) downtime_start_ = absl::Now();
  job_->SetTransferTime(committed_ - first_chunk_.value_or(committed_));
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
    loaded_[i] = true;
    loaded_any_ = true;
  }
  streams_.clear();
  absl::Time resume_start = absl::Now();
  // Write-ahead: once a device may run, a restarted agent must roll forward
  // (resume the rest), never reset what may be the VM's running device.
  // Written after the loads, not during them: the job is RESUMING only once
  // every device validated its state, and the journal's LOADING record waits
  // for this one (JournalObserver). Written, not synced, before the devices
  // run: an agent's crash keeps it, and against a power loss the STOP_COPY
  // point speaks (OnMarker).
  if (absl::Status s =
          job_->EnterPhase(v1::PHASE_RESUMING, "the devices resume");
      !s.ok()) {
    return s;
  }
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
      if (!s.ok()) return ResumeFailedLocked(i, s.status());
    }
  }
  for (size_t i = 0; i < devices_.size(); ++i) {
    absl::Time t0 = absl::Now();
    auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kRunning);
    resume[i] += absl::Now() - t0;
    if (!s.ok()) return ResumeFailedLocked(i, s.status());
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

void DestinationJob::ReleaseDevicesLocked(const absl::Status& why) {
  // Waits for a write under way; wakes the data streams waiting for their
  // turn, which end with `why`.
  absl::MutexLock w(&write_mu_);
  aborted_ = true;
  abort_cause_ = why;
  streams_.clear();
  for (size_t i = 0; i < devices_.size(); ++i) {
    // A load takes effect at RESUMING -> STOP (after COMMIT): a device that
    // has not taken that arc holds nothing of the VM's, and a reset ends its
    // session (a device whose load was rejected included). One that took it
    // may hold the VM's state, which a reset may keep running.
    (void)(loaded_[i] ? StandDown(job_.get(), i, devices_[i])
                      : ResetDevice(job_.get(), i, devices_[i]));
  }
}

absl::Status DestinationJob::ResumeFailedLocked(size_t index,
                                                const absl::Status& error) {
  // Some devices may run the VM's state here already: neither resuming the
  // source nor standing down here is safe without a person's decision.
  streams_.clear();
  const std::string reason =
      absl::StrCat("device ", devices_[index]->name(),
                   " did not resume after others may have (", error.message(),
                   "): the VM may run here in part");
  in_doubt_ = std::make_shared<InDoubt>(job_, devices_, error, reason,
                                        InDoubtOptions{}, std::move(on_done_));
  on_done_ = nullptr;
  job_->SetCanceller(nullptr);
  stage_ = Stage::kDone;
  return error;
}

absl::Status DestinationJob::Resolve(v1::Resolution resolution,
                                     const std::string& who) {
  std::shared_ptr<InDoubt> in_doubt;
  {
    absl::MutexLock lock(&mu_);
    in_doubt = in_doubt_;
  }
  if (in_doubt == nullptr) {
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_NOT_IN_DOUBT,
        absl::StrCat("job ", job_->id(), " is ", PhaseName(job_->phase()),
                     ", not IN_DOUBT: only a job whose outcome is in doubt "
                     "is resolved"));
  }
  return in_doubt->Resolve(resolution, who);
}

void DestinationJob::EndLocked(const absl::Status& cause) {
  job_->SetReorderPeakBytes(peak_held_bytes_.load());
  job_->SetCanceller(nullptr);
  {
    absl::MutexLock c(&cancel_mu_);
    cancellers_.clear();
  }
  if (on_done_) {
    on_done_();
    on_done_ = nullptr;
  }
  job_->Finish(cause);
}

void DestinationJob::Abort(const absl::Status& cause, int from_stream) {
  absl::MutexLock lock(&mu_);
  AbortLocked(cause, from_stream);
}

void DestinationJob::AbortLocked(const absl::Status& cause, int from_stream) {
  if (stage_ == Stage::kDone && job_->terminal()) return;
  if (in_doubt_ != nullptr) {
    // Complete left it IN_DOUBT: only Resolve ends it. The session ends.
    CancelStreams(/*except=*/from_stream, cause);
    return;
  }
  stage_ = Stage::kDone;
  absl::Status why = cause;
  if (job_->cancel_requested()) {
    why = base::Error(absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
                      "cancelled by request");
  }
  base::LogWarning("job ", job_->id(),
                   ": aborting incoming migration: ", why.ToString());
  // The session ends with the job; the control stream tells the source why.
  CancelStreams(/*except=*/from_stream, why);
  const bool any_loaded =
      std::find(loaded_.begin(), loaded_.end(), true) != loaded_.end();
  job_->SetPhase(
      v1::PHASE_ROLLING_BACK,
      absl::StrCat(any_loaded ? "releasing devices (what loaded the VM's "
                                "state stays stopped): "
                              : "resetting devices: ",
                   why.message()));
  ReleaseDevicesLocked(why);
  EndLocked(why);
}

void DestinationJob::Cancel() {
  Stage stage;
  {
    absl::MutexLock lock(&mu_);
    stage = stage_;
  }
  if (stage != Stage::kWaiting) {
    // An attached session: RequestCancel reaches its streams' blocked reads,
    // and the session threads abort the job.
    if (stage == Stage::kAttached) job_->RequestCancel();
    return;
  }
  job_->RequestCancel();
  Abort(base::Error(absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
                    "cancelled by request"));
}

}  // namespace migd::migration

namespace migd::migration {

absl::StatusOr<v1::GetOutcomeResponse> DestinationJob::AnswerOutcome(
    const std::string& peer_identity) {
  if (peer_identity != source_identity_) {
    return base::Error(
        absl::StatusCode::kPermissionDenied, v1::ERROR_REASON_BAD_TOKEN,
        absl::StrCat(
            "the outcome of job ", job_->id(), " is for its source ",
            source_identity_.empty() ? "(no identity)" : source_identity_,
            "; asked by ",
            peer_identity.empty() ? "(no identity)" : peer_identity));
  }
  // Complete holds mu_ from LOADING until the job ended: the phase read
  // here cannot move on while the answer is made.
  absl::MutexLock lock(&mu_);
  const v1::Phase phase = job_->phase();
  DestinationAnswer a = AnswerFor(phase);
  v1::GetOutcomeResponse response;
  response.set_known(true);
  if (a.abort_first) {
    const std::string why = absl::StrCat(
        "the source asked for the outcome in ", PhaseName(phase),
        ", before any device resumed: aborted so that it never runs them");
    AbortLocked(base::Error(absl::StatusCode::kAborted,
                            v1::ERROR_REASON_PEER_UNAVAILABLE, why),
                /*from_stream=*/-1);
    response.set_message(absl::StrCat("job ", job_->id(), " ", why));
  } else {
    response.set_message(
        absl::StrCat("job ", job_->id(), " is ", PhaseName(phase), " here"));
  }
  response.set_outcome(a.outcome);
  base::LogInfo("job ", job_->id(),
                ": the source asked for the outcome: ", OutcomeName(a.outcome),
                " (", response.message(), ")");
  return response;
}

}  // namespace migd::migration
