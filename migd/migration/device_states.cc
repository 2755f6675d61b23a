#include "migd/migration/device_states.h"

#include "absl/strings/str_cat.h"

namespace migd::migration {

using vfio::MigState;

bool IsLeftOverState(MigState state) {
  switch (state) {
    case MigState::kRunningP2P:
    case MigState::kPreCopy:
    case MigState::kPreCopyP2P:
    case MigState::kStopCopy:
    case MigState::kResuming:
    case MigState::kError:
      return true;
    case MigState::kRunning:
    case MigState::kStop:
      return false;
  }
  return false;  // a value the uAPI does not define
}

FoundStateRule RuleForFoundState(DeviceRole role, MigState found) {
  const bool known = found == MigState::kRunning || found == MigState::kStop ||
                     IsLeftOverState(found);
  if (!known) {
    return {FoundStateAction::kRefuse,
            "the VFIO migration uAPI defines no such state; the device or "
            "its driver is not usable by this agent"};
  }
  if (role == DeviceRole::kDestination) {
    if (found == MigState::kRunning || found == MigState::kStop) {
      return {FoundStateAction::kArc, "idle: loads from here"};
    }
    return {FoundStateAction::kReset,
            absl::StrCat("left over from a migration that did not finish; "
                         "reset (VFIO_DEVICE_RESET, to RUNNING) before it "
                         "loads",
                         found == MigState::kResuming
                             ? " (a stale load session is never sent "
                               "through an arc)"
                             : "")};
  }
  switch (found) {
    case MigState::kRunning:
      return {FoundStateAction::kUse, "running: migrates from here"};
    case MigState::kStop:
      return {FoundStateAction::kRefuse,
              "a source must be RUNNING, and a STOP device is idle: it runs "
              "no VM (a completed migration leaves its source there, its "
              "state moved away). Its owner resumes it (RUNNING) if its "
              "state is still the VM's; it can also be prepared as a "
              "destination"};
    default:
      return {FoundStateAction::kRefuse,
              "a source must be RUNNING, and this state is left over from a "
              "migration that did not finish. The agent neither resets a "
              "source device (that would lose a VM's device state) nor "
              "resumes it (its state may already run elsewhere): its owner "
              "resumes it (RUNNING) or resets it, then migrates it"};
  }
}

std::string FoundStateNote(MigState state) {
  if (state == MigState::kRunning) {
    return "running or idle: a source migrates it, a destination loads into "
           "it";
  }
  if (state == MigState::kStop) {
    return "idle: a destination loads into it (STOP -> RESUMING), a source "
           "refuses it until its owner resumes it";
  }
  if (IsLeftOverState(state)) {
    return "left over from a migration that did not finish: a destination "
           "resets it first, a source refuses it until its owner resumes or "
           "resets it";
  }
  return "not a state of the VFIO migration uAPI: every job refuses it";
}

const char* DeviceRoleName(DeviceRole role) {
  return role == DeviceRole::kSource ? "source" : "destination";
}

}  // namespace migd::migration
