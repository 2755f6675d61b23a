// migd/server/allocation_recovery.h
//
// What an agent does at start with the devices its allocator gave to
// destination jobs of an earlier run (PrepareIncoming by class: owner = the
// job id, key = the source device, opened as device "alloc-<job>-<n>"; see
// migration_service.h), so that a job the agent died in has its allocation
// treated as the running agent would have treated it at the job's end:
// released when nothing of the VM's can be on the devices, kept otherwise.
//
// An allocation is a job's when the journal has the job as a destination's,
// the allocation's owner is the job id, its key is the source (peer) device
// of one of the job's devices and its host name (PCI address, mdev UUID) is
// that device's host_address (where the record has one). An owner holding
// any allocation that is not its job's in this sense (a libvirt domain's
// UUID that is also a job id, say) is not taken for the job: none of its
// allocations is touched. Nor is an allocation whose owner is no job in the
// journal (AllocateDevices for a libvirt domain).
//
// Three steps, around journal::Recover:
//
// Reopen, before recovery: each allocated device of a job the journal has
// unfinished is opened again (as at run time: "vfio NAME bdf=ADDR" or
// "mdev=UUID") under the name the job's record gives it and added to the
// agent's devices, so that recovery examines and resets it as it does a
// configured device. One that does not open is logged, its allocation is
// kept (what cannot be examined is not released) and recovery's notice for
// the job says why it is missing.
//
// Decide, after recovery: per job with allocations, in the phase it has now
//
//   job                                         | its allocations
//   --------------------------------------------+--------------------------
//   SUCCEEDED                                   | kept: the devices run the
//                                               | VM
//   IN_DOUBT                                    | kept: the devices stay
//                                               | open and held by the job
//                                               | for ResolveMigration
//   FAILED/CANCELLED by recovery now, a device  | kept: it was not examined
//   of it not opened again                      |
//   FAILED/CANCELLED by recovery at an earlier  | kept: that start released
//   start (ERROR_REASON_AGENT_RESTARTED)        | or kept them, and which
//                                               | devices it examined is not
//                                               | on record
//   FAILED/CANCELLED, a device of the job (any  | kept: it may hold the VM's
//   one, as loaded_any counts at run time) last | state, as a device that
//   recorded in STOP (recovery found it there,  | loaded does at run time
//   or the job stood it down there) or that     |
//   ever took RESUMING -> STOP                  |
//   FAILED/CANCELLED otherwise: by recovery     | released: its devices are
//   now, or at run time before the restart     | closed and removed now,
//   (the agent died before it released them)   | released by Release
//
// A device opened again stays open where its allocation is kept, as at run
// time; the owner releases a kept allocation (migctl host release JOB).
//
// Release, once the agent's HostService can release: gives back what Decide
// chose (PCI devices back to their original driver, mdev instances
// removed). Each decision is logged, per device.
//
// Not thread-safe: the agent's start runs it on one thread, before serving.

#ifndef MIGD_SERVER_ALLOCATION_RECOVERY_H_
#define MIGD_SERVER_ALLOCATION_RECOVERY_H_

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migd/device/device.h"
#include "migd/host/allocation_store.h"
#include "migd/migration/device_registry.h"
#include "migd/migration/job_table.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::server {

class AllocationRecovery {
 public:
  // Opens a device as the config line "vfio NAME SOURCE" would
  // (MigrationServiceOptions::open_vfio).
  using OpenFn = std::function<absl::StatusOr<std::unique_ptr<device::Device>>(
      const std::string& name, const std::string& source)>;
  // Releases everything an owner was allocated
  // (MigrationServiceOptions::release_allocations).
  using ReleaseFn = std::function<absl::Status(const std::string& owner)>;

  // `records`: the journal's jobs, read before recovery; `allocations`:
  // every allocation the agent holds (host-allocations).
  AllocationRecovery(const std::vector<v1::Migration>& records,
                     const std::vector<host::Allocation>& allocations);

  // Opens the allocated devices of the unfinished jobs and adds them to
  // `devices`. Returns why each such device that is not there is missing,
  // by device name (journal::Recover's `unavailable`).
  std::map<std::string, std::string> Reopen(const OpenFn& open,
                                            migration::DeviceRegistry& devices);

  // Decides each job's allocations by the jobs in `jobs` (recovered), and
  // closes and removes from `devices` the devices of those to release.
  void Decide(const migration::JobTable& jobs,
              migration::DeviceRegistry& devices);

  // Releases what Decide chose to release, through `release`; a failure is
  // logged (the allocation stays; migctl host release JOB retries).
  void Release(const ReleaseFn& release);

 private:
  // One of a job's devices and the allocation behind it.
  struct Allocated {
    std::string device;  // the name in the job's record
    host::Allocation allocation;
  };
  struct JobAllocations {
    bool unfinished = false;  // in the journal before recovery
    // Every allocation of the owner is one of the job's devices.
    bool whole = false;
    std::vector<Allocated> allocated;
    std::vector<std::string> strays;  // the owner's other keys
    std::string released_why;         // set by Decide: to be released
  };

  std::map<std::string, JobAllocations> jobs_;  // by job id
  std::set<std::string> reopened_;              // device names
};

}  // namespace migd::server

#endif  // MIGD_SERVER_ALLOCATION_RECOVERY_H_
