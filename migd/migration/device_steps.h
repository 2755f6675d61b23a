// migd/migration/device_steps.h
//
// The device moves every runner makes, with the bookkeeping they all need: the
// job's record follows the state the device actually reached (also when an arc
// fails half way), and errors name the device and carry DEVICE_ERROR unless a
// more precise reason was already attached.

#ifndef MIGD_MIGRATION_DEVICE_STEPS_H_
#define MIGD_MIGRATION_DEVICE_STEPS_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migd/device/device.h"
#include "migd/migration/job.h"
#include "migd/vfio/uapi.h"

namespace migd::migration {

// SetState(target) on device `index` of `job`, recording the state reached.
absl::StatusOr<std::unique_ptr<device::DataStream>> MoveDevice(
    Job* job, size_t index, device::Device* device, vfio::MigState target);

// Puts a source device back to RUNNING after a failed or cancelled job: the
// arcs back when the device is healthy, VFIO_DEVICE_RESET when it is in ERROR
// or the arcs back fail. Returns the last error if even the reset failed.
absl::Status RestoreRunning(Job* job, size_t index, device::Device* device);

// VFIO_DEVICE_RESET, recording the state reached (destination abort: a device
// in RESUMING can only be aborted by a reset).
absl::Status ResetDevice(Job* job, size_t index, device::Device* device);

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_DEVICE_STEPS_H_
