#include "migd/migration/job.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "migd/base/reason.h"

namespace migd::migration {
namespace {

using ::google::protobuf::util::TimeUtil;

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

google::protobuf::Duration ToProto(absl::Duration d) {
  return TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

}  // namespace

std::string PhaseName(v1::Phase phase) {
  std::string name = v1::Phase_Name(phase);
  return name.rfind("PHASE_", 0) == 0 ? name.substr(6) : name;
}

bool IsTerminal(v1::Phase phase) {
  return phase == v1::PHASE_SUCCEEDED || phase == v1::PHASE_FAILED ||
         phase == v1::PHASE_CANCELLED;
}

Job::Job(std::string id, v1::Role role, std::string peer,
         std::vector<DevicePair> devices, JobObservers observers)
    : id_(std::move(id)),
      role_(role),
      num_devices_(devices.size()),
      observers_(std::move(observers)) {
  absl::MutexLock lock(&mu_);
  record_.set_job_id(id_);
  record_.set_role(role);
  record_.set_peer(std::move(peer));
  for (DevicePair& d : devices) {
    v1::DeviceProgress* p = record_.add_devices();
    p->set_device(std::move(d.local));
    p->set_host_address(std::move(d.host_address));
    p->set_peer_device(std::move(d.peer));
  }
  *record_.mutable_created() = ToProto(absl::Now());
  last_change_ = absl::Now();
}

std::shared_ptr<Job> Job::Restore(const v1::Migration& record,
                                  JobObservers observers) {
  std::vector<DevicePair> devices;
  for (const v1::DeviceProgress& d : record.devices()) {
    devices.push_back({d.device(), d.peer_device()});
  }
  auto job =
      std::make_shared<Job>(record.job_id(), record.role(), record.peer(),
                            std::move(devices), std::move(observers));
  absl::MutexLock lock(&job->mu_);
  job->record_ = record;
  return job;
}

absl::Status Job::Act(const v1::Migration& record, uint64_t revision,
                      absl::string_view what) const {
  for (const std::shared_ptr<JobObserver>& o : observers_) {
    if (absl::Status s = o->BeforeAct(record, revision, what); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Job::BeforeAct(absl::string_view what) {
  v1::Migration record;
  uint64_t revision;
  {
    absl::MutexLock lock(&mu_);
    if (IsTerminal(record_.phase())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id_, " ended: nothing acts on it (", what, ")"));
    }
    record = record_;
    revision = revision_;
  }
  // Outside the lock: the job keeps changing while the observers write.
  return Act(record, revision, what);
}

absl::Status Job::EnterPhase(v1::Phase phase, absl::string_view what) {
  SetPhase(phase, "");
  return BeforeAct(what);
}

v1::Migration Job::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return record_;
}

void Job::Changed(const std::string& message) {
  ++version_;
  ++revision_;
  last_message_ = message;
  last_change_ = absl::Now();
  for (const std::shared_ptr<JobObserver>& o : observers_) {
    o->AfterChange(record_, revision_, message);
  }
}

void Job::SetPhase(v1::Phase phase, const std::string& message) {
  absl::MutexLock lock(&mu_);
  if (IsTerminal(record_.phase())) return;
  record_.set_phase(phase);
  Changed(message.empty() ? absl::StrCat("phase ", PhaseName(phase)) : message);
}

void Job::SetDeviceState(size_t device, vfio::MigState state) {
  absl::MutexLock lock(&mu_);
  v1::DeviceProgress* p = record_.mutable_devices(device);
  p->set_state(static_cast<v1::DeviceState>(state));
  v1::StateChange* change = record_.add_state_changes();
  change->set_device(p->device());
  change->set_state(p->state());
  *change->mutable_time() = ToProto(absl::Now());
  Changed(absl::StrCat("device ", p->device(), " ", vfio::MigStateName(state)));
}

void Job::SetDeviceTotal(size_t device, uint64_t bytes_total) {
  absl::MutexLock lock(&mu_);
  v1::DeviceProgress* p = record_.mutable_devices(device);
  record_.set_bytes_total(record_.bytes_total() - p->bytes_total() +
                          bytes_total);
  p->set_bytes_total(bytes_total);
  Changed("progress");
}

void Job::AddDeviceBytes(size_t device, uint64_t bytes, bool stop_copy) {
  absl::MutexLock lock(&mu_);
  v1::DeviceProgress* p = record_.mutable_devices(device);
  p->set_bytes_done(p->bytes_done() + bytes);
  record_.set_bytes_done(record_.bytes_done() + bytes);
  if (p->bytes_done() > p->bytes_total()) {
    // Re-sent pre-copy data outgrew the estimate: what arrived is the floor.
    record_.set_bytes_total(record_.bytes_total() + p->bytes_done() -
                            p->bytes_total());
    p->set_bytes_total(p->bytes_done());
  }
  if (stop_copy) {
    p->set_stop_copy_bytes(p->stop_copy_bytes() + bytes);
    record_.set_stop_copy_bytes(record_.stop_copy_bytes() + bytes);
  } else {
    p->set_precopy_bytes(p->precopy_bytes() + bytes);
    record_.set_precopy_bytes(record_.precopy_bytes() + bytes);
  }
  Changed("progress");
}

void Job::SetDeviceAcked(size_t device) {
  absl::MutexLock lock(&mu_);
  v1::DeviceProgress* p = record_.mutable_devices(device);
  p->set_initial_data_acked(true);
  Changed(absl::StrCat("device ", p->device(),
                       ": destination loaded the initial data"));
}

void Job::SetDowntimeBreakdown(
    const v1::DowntimeBreakdown& job,
    const std::vector<v1::DowntimeBreakdown>& devices) {
  absl::MutexLock lock(&mu_);
  *record_.mutable_downtime_breakdown() = job;
  for (size_t i = 0; i < devices.size() && i < num_devices_; ++i) {
    *record_.mutable_devices(i)->mutable_downtime() = devices[i];
  }
  Changed("downtime breakdown");
}

void Job::SetPayloadCopies(uint64_t copies) {
  absl::MutexLock lock(&mu_);
  record_.set_payload_copies(copies);
  Changed("progress");
}

void Job::AddPayloadCopies(uint64_t copies) {
  absl::MutexLock lock(&mu_);
  record_.set_payload_copies(record_.payload_copies() + copies);
  Changed("progress");
}

void Job::SetReorderPeakBytes(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  record_.set_reorder_peak_bytes(bytes);
  Changed("progress");
}

void Job::SetPrecopy(const v1::PrecopyProgress& precopy) {
  absl::MutexLock lock(&mu_);
  *record_.mutable_precopy() = precopy;
  Changed(absl::StrCat("pre-copy iteration ", precopy.iteration()));
}

absl::Status Job::Commit() {
  v1::Migration record;
  uint64_t revision;
  {
    absl::MutexLock lock(&mu_);
    if (IsTerminal(record_.phase())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id_, " ended: it cannot commit"));
    }
    record_.set_committed(true);
    Changed("COMMIT decided");
    record = record_;
    revision = revision_;
  }
  absl::Status s = Act(record, revision, "COMMIT goes out");
  if (!s.ok()) {
    absl::MutexLock lock(&mu_);
    record_.set_committed(false);
    Changed(absl::StrCat("COMMIT not sent: ", s.message()));
  }
  return s;
}

absl::Status Job::TakeBackCommit(absl::string_view why) {
  v1::Migration record;
  uint64_t revision;
  {
    absl::MutexLock lock(&mu_);
    if (IsTerminal(record_.phase())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id_, " ended: its commit stands as recorded"));
    }
    record_.set_committed(false);
    Changed(absl::StrCat("COMMIT did not go out: ", why));
    record = record_;
    revision = revision_;
  }
  absl::Status s = Act(record, revision, "the devices resume, COMMIT not sent");
  if (!s.ok()) {
    // What is on record stands: the job acts as committed.
    absl::MutexLock lock(&mu_);
    record_.set_committed(true);
    Changed(absl::StrCat("COMMIT could not be taken back: ", s.message()));
  }
  return s;
}

void Job::SetCommitted() {
  absl::MutexLock lock(&mu_);
  record_.set_committed(true);
  Changed("COMMIT");
}

void Job::SetWaiting(size_t ahead, absl::Duration waited) {
  absl::MutexLock lock(&mu_);
  v1::TransferQueue* q = record_.mutable_queue();
  q->set_waiting(true);
  q->set_ahead(static_cast<uint32_t>(ahead));
  *q->mutable_waited() = ToProto(waited);
  Changed(ahead == 0 ? std::string("waiting for a transfer slot: next in line")
                     : absl::StrCat("waiting for a transfer slot: ", ahead,
                                    " job(s) ahead"));
}

void Job::SetWaited(absl::Duration waited) {
  absl::MutexLock lock(&mu_);
  v1::TransferQueue* q = record_.mutable_queue();
  q->set_waiting(false);
  q->set_ahead(0);
  *q->mutable_waited() = ToProto(waited);
  Changed(absl::StrCat("waited ", absl::FormatDuration(waited),
                       " for a transfer slot"));
}

void Job::SetPeerIdentity(const std::string& identity) {
  absl::MutexLock lock(&mu_);
  record_.set_peer_identity(identity);
  ++revision_;  // not a change watchers are told of; observers see it next
}

void Job::SetInDoubt(const v1::InDoubt& in_doubt, const std::string& message) {
  absl::MutexLock lock(&mu_);
  *record_.mutable_in_doubt() = in_doubt;
  Changed(message);
}

void Job::AddNotice(const std::string& notice) {
  absl::MutexLock lock(&mu_);
  record_.add_notices(notice);
  Changed(notice);
}

void Job::SetDowntime(absl::Duration downtime) {
  absl::MutexLock lock(&mu_);
  *record_.mutable_downtime() = ToProto(downtime);
  Changed(absl::StrCat("downtime ", absl::FormatDuration(downtime)));
}

void Job::SetTransferTime(absl::Duration transfer_time) {
  absl::MutexLock lock(&mu_);
  *record_.mutable_transfer_time() = ToProto(transfer_time);
  double secs = absl::ToDoubleSeconds(transfer_time);
  if (secs > 0) {
    record_.set_throughput_bytes_per_second(record_.bytes_done() / secs);
  }
  Changed(absl::StrCat("transfer time ", absl::FormatDuration(transfer_time)));
}

void Job::Finish(const absl::Status& cause) {
  absl::MutexLock lock(&mu_);
  if (IsTerminal(record_.phase())) return;
  *record_.mutable_finished() = ToProto(absl::Now());
  if (cause.ok()) {
    record_.set_phase(v1::PHASE_SUCCEEDED);
    Changed("phase SUCCEEDED");
    return;
  }
  v1::ErrorReason reason = base::ReasonOf(cause);
  bool cancelled = reason == v1::ERROR_REASON_CANCELLED;
  record_.set_phase(cancelled ? v1::PHASE_CANCELLED : v1::PHASE_FAILED);
  record_.mutable_failure()->set_reason(reason);
  record_.mutable_failure()->set_message(std::string(cause.message()));
  canceller_ = nullptr;
  Changed(absl::StrCat("phase ", PhaseName(record_.phase()), ": ",
                       base::ReasonName(reason), ": ", cause.message()));
}

v1::Phase Job::phase() const {
  absl::MutexLock lock(&mu_);
  return record_.phase();
}

bool Job::terminal() const { return IsTerminal(phase()); }

bool Job::WaitForChange(uint64_t* seen, absl::Duration timeout,
                        v1::MigrationEvent* event) const {
  absl::MutexLock lock(&mu_);
  auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return version_ != *seen;
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  if (version_ == *seen) return false;
  *seen = version_;
  *event->mutable_migration() = record_;
  event->set_message(last_message_);
  *event->mutable_time() = ToProto(last_change_);
  return true;
}

void Job::RequestCancel() {
  absl::MutexLock lock(&mu_);
  if (IsTerminal(record_.phase())) return;
  cancel_requested_ = true;
  Changed("cancel requested");
  if (canceller_) canceller_();
}

bool Job::cancel_requested() const {
  absl::MutexLock lock(&mu_);
  return cancel_requested_;
}

void Job::SetCanceller(std::function<void()> canceller) {
  absl::MutexLock lock(&mu_);
  canceller_ = std::move(canceller);
  // A cancel that arrived before the runner was ready still takes effect.
  if (cancel_requested_ && canceller_) canceller_();
}

}  // namespace migd::migration
