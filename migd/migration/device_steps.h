// migd/migration/device_steps.h
//
// The device moves every runner makes, with the bookkeeping they all need: the
// job's record follows the state the device actually reached (also when an arc
// fails half way), and errors name the device and carry DEVICE_ERROR unless a
// more precise reason was already attached.
//
// Every status a runner gets from a device call (an arc, a read, PRECOPY_INFO,
// MIG_DATA_SIZE, ...) goes through DeviceError before it can end a job: the
// code says what the kernel said (ENODEV is kNotFound, EBUSY kUnavailable),
// not whose fault it is, and a code alone would make a busy device a lost
// peer (ReasonOf reads kUnavailable as PEER_UNAVAILABLE).

#ifndef MIGD_MIGRATION_DEVICE_STEPS_H_
#define MIGD_MIGRATION_DEVICE_STEPS_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migd/device/device.h"
#include "migd/migration/device_states.h"
#include "migd/migration/job.h"
#include "migd/vfio/uapi.h"

namespace migd::migration {

// `status` from a call on a device, with reason DEVICE_ERROR whatever its
// code; a reason already attached (base::HasReason) is kept. OK stays OK.
// Device errors name the device already; this adds nothing to the message.
absl::Status DeviceError(const absl::Status& status);

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

// A destination device, after COMMIT, of a job whose devices must not run the
// VM here (the job failed before resuming, or the source was chosen): leaves
// no copy of the VM's state running. A device that loaded the state (STOP)
// stays in STOP; one that runs it (RUNNING, RUNNING_P2P) is stopped (arc to
// STOP); one in ERROR stays there (it runs nothing; the next job to take it
// resets it first); one still RESUMING is reset: a load takes effect only at
// RESUMING -> STOP, so it holds nothing of the VM's. Never a reset of a
// device that may hold the loaded state: whether a device keeps its state
// through VFIO_DEVICE_RESET is its driver's (the reference variant driver
// in kernel/ keeps its memory, as the device it drives does), so a reset
// could leave the VM's state running on both sides. Returns the error of the move (or reset) that
// failed.
absl::Status StandDown(Job* job, size_t index, device::Device* device);

// Before a job's first move: applies the rule for the state device `index` of
// `job` is found in (device_states.h) for `role`. Returns the state the job
// goes on from: the one found (RUNNING; for a destination also STOP), or
// RUNNING after a reset of a left-over, which is logged, noted in the job's
// notices and recorded (the reset is the device's first recorded change).
// FAILED_PRECONDITION (DEVICE_ERROR) naming the device, the state and what
// to do when the rule refuses it (the device is not touched); the reset's
// error when that fails.
absl::StatusOr<vfio::MigState> SettleFoundState(Job* job, size_t index,
                                                device::Device* device,
                                                DeviceRole role);

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_DEVICE_STEPS_H_
