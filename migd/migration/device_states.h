// migd/migration/device_states.h
//
// What a job does with a device in the state it finds it in. The uAPI does
// not promise RUNNING at open (some drivers keep the migration state across
// close and reopen), and a device outlives the jobs that used it, so a job
// may find a device in any state. This is the one place that says, per role
// and state, what happens; DestinationJob::Prepare and SourceJob::Start apply
// it (through SettleFoundState, device_steps.h).
//
//   found          | source (StartMigration)  | destination (PrepareIncoming)
//   ---------------+--------------------------+------------------------------
//   RUNNING        | use as is                | arc RUNNING -> RESUMING
//   STOP           | refuse: idle             | arc STOP -> RESUMING
//   RUNNING_P2P    | refuse: left-over        | reset, then as RUNNING
//   PRE_COPY       | refuse: left-over        | reset, then as RUNNING
//   PRE_COPY_P2P   | refuse: left-over        | reset, then as RUNNING
//   STOP_COPY      | refuse: left-over        | reset, then as RUNNING
//   RESUMING       | refuse: left-over        | reset, then as RUNNING
//   ERROR          | refuse: left-over        | reset, then as RUNNING
//   (unknown)      | refuse                   | refuse
//
// Why:
// - RUNNING and STOP are idle for a destination: whatever the device holds is
//   replaced by the load, and both have an arc to RESUMING. STOP is where a
//   completed migration leaves its source's devices, so a VM that migrated
//   A -> B can migrate back B -> A.
// - A source migrates a running VM's device. STOP is not running anything
//   (a completed migration may have moved its state away; resuming it could
//   run the VM twice): refused, saying so; its owner decides, by resuming it
//   (RUNNING) when its state is still the VM's.
// - The other states are left over from a migration that did not finish
//   (RUNNING_P2P is a moment of a switchover or a resume; the rest are save,
//   load or failure states). A destination resets them (VFIO_DEVICE_RESET,
//   which lands in RUNNING): whatever they held is not wanted, and a stale
//   RESUMING session must never be sent through an arc (an arc on it can
//   crash the kernel driver). A source refuses them: a reset would destroy
//   the state of a VM that may still be running on the device (PRE_COPY,
//   RUNNING_P2P), and the arcs back to RUNNING could resume a VM whose state
//   a committed migration already runs elsewhere (STOP_COPY); the agent does
//   not know which (crash recovery from the journal, which does, is what puts
//   its own jobs' devices back). Their owner resumes or resets them first.
// - A state the uAPI does not define: refused on both sides.
//
// The agent applies no rule at open, where it does not know the role a device
// will have: it logs the state it found (FoundStateNote).

#ifndef MIGD_MIGRATION_DEVICE_STATES_H_
#define MIGD_MIGRATION_DEVICE_STATES_H_

#include <string>

#include "migd/vfio/uapi.h"

namespace migd::migration {

enum class DeviceRole { kSource, kDestination };

enum class FoundStateAction {
  // Source: the job starts from this state (RUNNING).
  kUse,
  // Destination: the job walks the arcs from this state to RESUMING.
  kArc,
  // VFIO_DEVICE_RESET first (lands in RUNNING), then as if found RUNNING.
  // Never an arc first: from RESUMING an arc may hit a stale session.
  kReset,
  // FAILED_PRECONDITION with `why`.
  kRefuse,
};

struct FoundStateRule {
  FoundStateAction action = FoundStateAction::kRefuse;
  // What the state means here and, for kRefuse, what the owner can do, for a
  // person: follows "device NAME is STATE; ". For kReset, why the reset.
  std::string why;
};

// The rule for a device of `role` found in `found` (the table above).
FoundStateRule RuleForFoundState(DeviceRole role, vfio::MigState found);

// True for the states a migration leaves behind only when it did not finish
// (RUNNING_P2P, PRE_COPY, PRE_COPY_P2P, STOP_COPY, RESUMING, ERROR).
bool IsLeftOverState(vfio::MigState state);

// What `state`, found at open, means for either role, for the agent's log:
// "idle: a destination loads into it, a source refuses it".
std::string FoundStateNote(vfio::MigState state);

// "source" or "destination".
const char* DeviceRoleName(DeviceRole role);

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_DEVICE_STATES_H_
