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

// Device errors already name the device; what they lack is a reason.
absl::Status DeviceError(const absl::Status& s) {
  v1::ErrorReason r = base::ReasonOf(s);
  if (r == v1::ERROR_REASON_INTERNAL || r == v1::ERROR_REASON_INVALID_REQUEST) {
    return base::WithReason(s, v1::ERROR_REASON_DEVICE_ERROR);
  }
  return s;
}

}  // namespace

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

}  // namespace migd::migration
