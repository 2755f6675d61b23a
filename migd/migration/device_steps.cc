#include "migd/migration/device_steps.h"

#include "absl/strings/str_cat.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"

namespace migd::migration {
namespace {

void RecordState(Job* job, size_t index, device::Device* device) {
  absl::StatusOr<vfio::MigState> s = device->GetState();
  job->SetDeviceState(index, s.ok() ? *s : vfio::MigState::kError);
}

}  // namespace

absl::Status DeviceError(const absl::Status& status) {
  if (status.ok() || base::HasReason(status)) return status;
  return base::WithReason(status, v1::ERROR_REASON_DEVICE_ERROR);
}

absl::StatusOr<std::unique_ptr<device::DataStream>> MoveDevice(
    Job* job, size_t index, device::Device* device, vfio::MigState target) {
  auto stream = device->SetState(target);
  RecordState(job, index, device);
  if (!stream.ok()) return DeviceError(stream.status());
  return stream;
}

absl::Status RestoreRunning(Job* job, size_t index, device::Device* device) {
  absl::StatusOr<vfio::MigState> state = device->GetState();
  if (state.ok() && *state == vfio::MigState::kRunning) {
    RecordState(job, index, device);
    return absl::OkStatus();
  }
  if (state.ok() && *state != vfio::MigState::kError &&
      *state != vfio::MigState::kResuming) {
    auto back = device->SetState(vfio::MigState::kRunning);
    if (back.ok()) {
      RecordState(job, index, device);
      return absl::OkStatus();
    }
    base::LogWarning("job ", job->id(), ": device ", device->name(),
                     ": returning to RUNNING failed (",
                     back.status().ToString(), "); resetting it");
  }
  return ResetDevice(job, index, device);
}

absl::Status ResetDevice(Job* job, size_t index, device::Device* device) {
  absl::Status s = device->Reset();
  RecordState(job, index, device);
  if (!s.ok()) {
    base::LogError("job ", job->id(), ": device ", device->name(),
                   ": reset failed: ", s.ToString());
    return DeviceError(s);
  }
  return absl::OkStatus();
}

absl::Status StandDown(Job* job, size_t index, device::Device* device) {
  absl::StatusOr<vfio::MigState> state = device->GetState();
  if (!state.ok()) {
    RecordState(job, index, device);
    return DeviceError(state.status());
  }
  if (*state == vfio::MigState::kStop || *state == vfio::MigState::kError) {
    RecordState(job, index, device);
    return absl::OkStatus();
  }
  if (*state == vfio::MigState::kRunning ||
      *state == vfio::MigState::kRunningP2P) {
    auto stopped = device->SetState(vfio::MigState::kStop);
    RecordState(job, index, device);
    if (!stopped.ok()) {
      base::LogError("job ", job->id(), ": device ", device->name(),
                     ": stopping it failed: ", stopped.status().ToString());
    }
    return DeviceError(stopped.status());
  }
  return ResetDevice(job, index, device);
}

absl::StatusOr<vfio::MigState> SettleFoundState(Job* job, size_t index,
                                                device::Device* device,
                                                DeviceRole role) {
  absl::StatusOr<vfio::MigState> found = device->GetState();
  if (!found.ok()) return DeviceError(found.status());
  FoundStateRule rule = RuleForFoundState(role, *found);
  switch (rule.action) {
    case FoundStateAction::kUse:
    case FoundStateAction::kArc:
      return *found;
    case FoundStateAction::kRefuse:
      job->SetDeviceState(index, *found);
      return base::Error(
          absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_ERROR,
          absl::StrCat("device ", device->name(), " is ",
                       vfio::MigStateName(*found), "; ", rule.why));
    case FoundStateAction::kReset:
      break;
  }
  const std::string what =
      absl::StrCat("device ", device->name(), " was found in ",
                   vfio::MigStateName(*found), ", ", rule.why);
  base::LogWarning("job ", job->id(), " (", DeviceRoleName(role), "): ", what);
  job->AddNotice(what);
  if (absl::Status s = ResetDevice(job, index, device); !s.ok()) {
    return base::Annotate(
        s, absl::StrCat("resetting device ", device->name(), ", found in ",
                        vfio::MigStateName(*found)));
  }
  absl::StatusOr<vfio::MigState> now = device->GetState();
  if (!now.ok()) return DeviceError(now.status());
  if (*now != vfio::MigState::kRunning) {
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_ERROR,
        absl::StrCat("device ", device->name(), " is ",
                     vfio::MigStateName(*now), " after a reset from ",
                     vfio::MigStateName(*found), "; a reset lands in RUNNING"));
  }
  return *now;
}

}  // namespace migd::migration
