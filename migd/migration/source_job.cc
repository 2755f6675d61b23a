#include "migd/migration/source_job.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/base/watchdog.h"
#include "migd/migration/device_steps.h"
#include "migd/transfer/framing.h"

namespace migd::migration {
namespace {

using vfio::MigState;

}  // namespace

SourceJob::SourceJob(std::shared_ptr<Job> job,
                     std::vector<device::Device*> devices,
                     SourceJobOptions options, std::function<void()> on_done)
    : job_(std::move(job)),
      devices_(std::move(devices)),
      options_(std::move(options)),
      on_done_(std::move(on_done)) {}

absl::StatusOr<std::unique_ptr<SourceJob>> SourceJob::Start(
    std::shared_ptr<Job> job, std::vector<device::Device*> devices,
    SourceJobOptions options, std::function<void()> on_done) {
  std::unique_ptr<SourceJob> sj(
      new SourceJob(std::move(job), std::move(devices), std::move(options),
                    std::move(on_done)));
  Job& j = *sj->job_;
  j.SetPhase(v1::PHASE_CONNECTING, "");

  v1::SessionHeader header;
  header.set_job_id(j.id());
  header.set_transfer_token(sj->options_.token);
  header.set_protocol_version(v1::PROTOCOL_VERSION_1);
  v1::Migration record = j.Snapshot();
  for (size_t i = 0; i < sj->devices_.size(); ++i) {
    device::Device* d = sj->devices_[i];
    absl::StatusOr<vfio::MigFlags> flags = d->GetFlags();
    if (!flags.ok()) {
      return flags.status();
    }
    absl::StatusOr<MigState> state = d->GetState();
    if (!state.ok()) {
      return state.status();
    }
    j.SetDeviceState(i, *state);
    if (*state != MigState::kRunning) {
      return base::Error(
          absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_ERROR,
          absl::StrCat("device ", d->name(), " is ", vfio::MigStateName(*state),
                       "; a migration starts from RUNNING"));
    }
    absl::StatusOr<uint64_t> size = d->GetStopCopySize();
    v1::DeviceDescriptor* desc = header.add_devices();
    desc->set_index(i);
    desc->set_source_device(d->name());
    desc->set_destination_device(record.devices(i).peer_device());
    desc->set_kind(d->kind());
    desc->set_migration_flags(*flags);
    desc->set_state_size_bytes(size.ok() ? *size : 0);
    if (size.ok()) j.SetDeviceTotal(i, *size);
  }

  absl::StatusOr<std::unique_ptr<transfer::TransferClient>> client =
      transfer::TransferClient::Open(
          transfer::MakeTransferChannel(sj->options_.destination), header,
          sj->options_.handshake_timeout);
  if (!client.ok()) return client.status();
  sj->client_ = *std::move(client);
  SourceJob* raw = sj.get();
  sj->job_->SetCanceller([raw] { raw->client_->Cancel(); });
  sj->thread_ = std::thread([raw] { raw->Run(); });
  return sj;
}

SourceJob::~SourceJob() {
  if (thread_.joinable()) thread_.join();
}

void SourceJob::Run() {
  absl::Status s = Transfer();
  if (s.ok()) {
    Finalize();
  } else {
    s = Cause(s);
    base::LogWarning("job ", job_->id(), " failed: ", s.ToString());
    job_->SetPhase(v1::PHASE_ROLLING_BACK,
                   absl::StrCat("rolling back: ", s.message()));
    client_->Cancel();
    Rollback();
  }
  job_->SetCanceller(nullptr);
  if (on_done_) on_done_();
  job_->Finish(s);
  base::LogInfo("job ", job_->id(), " ended: ", PhaseName(job_->phase()));
}

absl::Status SourceJob::Cause(const absl::Status& error) const {
  if (job_->cancel_requested()) {
    return base::Error(
        absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
        absl::StrCat("cancelled by request (", error.message(), ")"));
  }
  if (timed_out_) {
    return base::Error(
        absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
        absl::StrCat("no progress for ",
                     absl::FormatDuration(options_.phase_timeout), " (",
                     error.message(), ")"));
  }
  return error;
}

absl::Status SourceJob::Send(v1::TransferRequest& request) {
  if (job_->cancel_requested()) {
    return absl::CancelledError("cancel requested");
  }
  return client_->Send(request);
}

absl::Status SourceJob::Transfer() {
  base::Watchdog watch(options_.phase_timeout, [this] {
    timed_out_ = true;
    client_->Cancel();
  });
  bool all_p2p = true;
  for (device::Device* d : devices_) {
    absl::StatusOr<vfio::MigFlags> flags = d->GetFlags();
    if (!flags.ok()) return flags.status();
    if ((*flags & vfio::kMigP2P) == 0) all_p2p = false;
  }

  job_->SetPhase(v1::PHASE_STOP_COPY, "");
  absl::Time downtime_start = absl::Now();
  if (all_p2p) {
    // Barrier: every device stops initiating P2P DMA before any one stops,
    // so no device DMAs into a peer that is already stopped.
    for (size_t i = 0; i < devices_.size(); ++i) {
      auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kRunningP2P);
      if (!s.ok()) return s.status();
    }
  }
  streams_.resize(devices_.size());
  for (size_t i = 0; i < devices_.size(); ++i) {
    auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kStopCopy);
    if (!s.ok()) return s.status();
    if (*s == nullptr) {
      return base::Error(absl::StatusCode::kInternal,
                         v1::ERROR_REASON_DEVICE_ERROR,
                         absl::StrCat("device ", devices_[i]->name(),
                                      ": STOP_COPY opened no data stream"));
    }
    streams_[i] = *std::move(s);
  }
  watch.Kick();

  uint64_t sequence = 0;
  v1::TransferRequest req;
  req.mutable_marker()->set_kind(v1::PhaseMarker::STOP_COPY);
  req.mutable_marker()->set_sequence(sequence++);
  if (absl::Status s = Send(req); !s.ok()) return s;

  absl::Time transfer_start = absl::Now();
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (absl::Status s = SendDevice(i, streams_[i].get(), &sequence); !s.ok()) {
      return s;
    }
    watch.Kick();
  }
  req.Clear();
  req.mutable_marker()->set_kind(v1::PhaseMarker::COMMIT);
  req.mutable_marker()->set_sequence(sequence++);
  if (absl::Status s = Send(req); !s.ok()) return s;
  absl::Time transfer_end = absl::Now();
  job_->SetTransferTime(transfer_end - transfer_start);

  // The destination loads and resumes every device before completing.
  absl::StatusOr<v1::Completion> completion = client_->Finish();
  if (!completion.ok()) return completion.status();
  job_->SetDowntime(absl::Now() - downtime_start);
  return absl::OkStatus();
}

absl::Status SourceJob::SendDevice(size_t index, device::DataStream* stream,
                                   uint64_t* sequence) {
  device::Device* d = devices_[index];
  uint64_t offset = 0;
  v1::TransferRequest req;
  for (;;) {
    v1::DataChunk* chunk = req.mutable_chunk();
    std::string* data = chunk->mutable_data();
    data->resize(options_.chunk_bytes);
    absl::StatusOr<size_t> n = stream->Read(absl::Span<uint8_t>(
        reinterpret_cast<uint8_t*>(data->data()), data->size()));
    if (!n.ok()) {
      return base::WithReason(
          base::Annotate(n.status(),
                         absl::StrCat("reading state at offset ", offset)),
          v1::ERROR_REASON_DEVICE_ERROR);
    }
    if (*n == 0) break;  // STOP_COPY: end of stream
    data->resize(*n);
    transfer::SealChunk(index, *sequence, offset, chunk);
    if (options_.corrupt_chunk_sequence == *sequence) {
      (*data)[*n / 2] ^= 0x5a;
      base::LogWarning("job ", job_->id(), ": test fault: corrupted chunk ",
                       *sequence);
    }
    ++*sequence;
    if (absl::Status s = Send(req); !s.ok()) return s;
    offset += *n;
    job_->AddDeviceBytes(index, *n);
  }
  req.Clear();
  v1::PhaseMarker* end = req.mutable_marker();
  end->set_kind(v1::PhaseMarker::DEVICE_END);
  end->set_device(index);
  end->set_total_bytes(offset);
  end->set_sequence((*sequence)++);
  return Send(req);
}

void SourceJob::Finalize() {
  // The destination runs: stopping here is off the downtime path.
  for (size_t i = 0; i < devices_.size(); ++i) {
    auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kStop);
    if (!s.ok()) {
      base::LogWarning("job ", job_->id(), ": ", s.status().ToString());
    }
  }
  streams_.clear();
}

void SourceJob::Rollback() {
  streams_.clear();
  for (size_t i = 0; i < devices_.size(); ++i) {
    absl::Status s = RestoreRunning(job_.get(), i, devices_[i]);
    if (!s.ok()) {
      base::LogError("job ", job_->id(), ": device ", devices_[i]->name(),
                     " could not be restored: ", s.ToString());
    }
  }
}

}  // namespace migd::migration
