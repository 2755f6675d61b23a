#include "migd/server/allocation_recovery.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "migd/base/log.h"
#include "migd/migration/job.h"

namespace migd::server {
namespace {

// "0000:5e:01.1", "mdev 0b5e4c3a-...".
std::string Describe(const host::Allocation& a) {
  return a.kind == host::Allocation::Kind::kPci
             ? a.address
             : absl::StrCat("mdev ", a.mdev_uuid);
}

// What the config line of an allocated device names it by.
std::string SourceOf(const host::Allocation& a) {
  return a.kind == host::Allocation::Kind::kPci
             ? absl::StrCat("bdf=", a.address)
             : absl::StrCat("mdev=", a.mdev_uuid);
}

// Why a device of `record` may hold the VM's state, "" when none may. The
// record's history, not DeviceProgress.state (which reads ERROR when never
// set): a device that took RESUMING -> STOP loaded it (what loaded_any
// counts at run time); one last recorded in STOP may have (recovery leaves
// one it finds there, a job stands a loaded one down there).
std::string MayHoldVmState(const v1::Migration& record) {
  std::map<std::string, v1::DeviceState> last;
  std::string loaded;
  for (const v1::StateChange& c : record.state_changes()) {
    auto it = last.find(c.device());
    if (loaded.empty() && it != last.end() &&
        it->second == v1::DEVICE_STATE_RESUMING &&
        c.state() == v1::DEVICE_STATE_STOP) {
      loaded = c.device();
    }
    last[c.device()] = c.state();
  }
  for (const auto& [device, state] : last) {
    if (state == v1::DEVICE_STATE_STOP) {
      return absl::StrCat("device ", device,
                          " is in STOP, where it may hold the VM's state");
    }
  }
  if (!loaded.empty()) {
    return absl::StrCat("device ", loaded,
                        " took RESUMING -> STOP: it loaded the VM's state");
  }
  return "";
}

}  // namespace

AllocationRecovery::AllocationRecovery(
    const std::vector<v1::Migration>& records,
    const std::vector<host::Allocation>& allocations) {
  std::map<std::string, std::vector<const host::Allocation*>> by_owner;
  for (const host::Allocation& a : allocations) by_owner[a.owner].push_back(&a);
  for (const v1::Migration& record : records) {
    if (record.role() != v1::ROLE_DESTINATION) continue;
    auto owned = by_owner.find(record.job_id());
    if (owned == by_owner.end()) continue;
    JobAllocations& job = jobs_[record.job_id()];
    job.unfinished = !migration::IsTerminal(record.phase());
    for (const host::Allocation* a : owned->second) {
      const v1::DeviceProgress* device = nullptr;
      for (const v1::DeviceProgress& d : record.devices()) {
        if (d.peer_device() == a->key &&
            (d.host_address().empty() || d.host_address() == a->host_name())) {
          device = &d;
          break;
        }
      }
      if (device == nullptr) {
        job.strays.push_back(a->key);
      } else {
        job.allocated.push_back({device->device(), *a});
      }
    }
    job.whole = job.strays.empty();
  }
}

std::map<std::string, std::string> AllocationRecovery::Reopen(
    const OpenFn& open, migration::DeviceRegistry& devices) {
  std::map<std::string, std::string> unavailable;
  for (const auto& [id, job] : jobs_) {
    if (!job.unfinished) continue;
    for (const Allocated& a : job.allocated) {
      const std::string what = Describe(a.allocation);
      if (!job.whole) {
        unavailable[a.device] =
            absl::StrCat("allocated device ", what, " not opened: its owner ",
                         id, " also holds allocations the job does not name");
        continue;
      }
      if (devices.Find(a.device) != nullptr) {
        // Recovery examines the configured device of that name instead; the
        // allocated one stays as it is, and so does its allocation.
        base::LogError("job ", id, ": its allocated device ", what,
                       " is not opened again: a configured device is named ",
                       a.device, " too; its allocation is kept");
        continue;
      }
      absl::Status s;
      if (!open) {
        s = absl::FailedPreconditionError("this agent opens no VFIO devices");
      } else if (absl::StatusOr<std::unique_ptr<device::Device>> opened =
                     open(a.device, SourceOf(a.allocation));
                 !opened.ok()) {
        s = opened.status();
      } else {
        s = devices.Add(*std::move(opened));
      }
      if (!s.ok()) {
        base::LogError("job ", id, ": cannot open its allocated device ", what,
                       " again as ", a.device, " for recovery (", s.message(),
                       "): recovery cannot examine it, so its allocation is "
                       "kept (migctl host release ",
                       id, " once it holds nothing of the VM's)");
        unavailable[a.device] =
            absl::StrCat("allocated device ", what,
                         " could not be opened again: ", s.message(),
                         "; its allocation is kept");
        continue;
      }
      reopened_.insert(a.device);
      base::LogInfo("job ", id, ": opened its allocated device ", what,
                    " again as ", a.device, " for recovery");
    }
  }
  return unavailable;
}

void AllocationRecovery::Decide(const migration::JobTable& jobs,
                                migration::DeviceRegistry& devices) {
  for (auto& [id, job] : jobs_) {
    if (!job.whole) {
      base::LogWarning("job ", id, ": owner ", id,
                       " holds allocations the job's record does not name "
                       "(key(s) ",
                       absl::StrJoin(job.strays, ", "),
                       "), so none of its allocations is taken for the "
                       "job's: all are left as they are");
      continue;
    }
    absl::StatusOr<std::shared_ptr<migration::Job>> found = jobs.Find(id);
    if (!found.ok()) continue;  // recovery restores every journaled job
    const v1::Migration record = (*found)->Snapshot();
    const v1::Phase phase = record.phase();
    std::string not_reopened;
    for (const Allocated& a : job.allocated) {
      if (reopened_.count(a.device) == 0) not_reopened = a.device;
    }
    std::string kept;  // why the allocations stay
    if (phase == v1::PHASE_SUCCEEDED) {
      kept = "the job succeeded: the device runs the VM";
    } else if (phase == v1::PHASE_IN_DOUBT) {
      kept =
          "the job is in doubt: its devices stay as they are, held for "
          "ResolveMigration";
    } else if (phase != v1::PHASE_FAILED && phase != v1::PHASE_CANCELLED) {
      kept = absl::StrCat("the job is ", migration::PhaseName(phase));
    } else if (job.unfinished && !not_reopened.empty()) {
      kept = absl::StrCat("device ", not_reopened,
                          " could not be opened again, so recovery could not "
                          "examine it");
    } else if (!job.unfinished &&
               record.failure().reason() == v1::ERROR_REASON_AGENT_RESTARTED) {
      // The start that ended it settled its allocations: what stays was
      // kept then (or the agent died before releasing it), and which of
      // its devices that start examined is not on record.
      kept =
          "recovery ended the job at an earlier start, and what it found of "
          "the device then is not known now";
    } else if (std::string why = MayHoldVmState(record); !why.empty()) {
      kept = why;
    }
    if (!kept.empty()) {
      // Its owner gives it back, as at run time; a job in doubt is settled
      // first (releasing may take the VM's only copy away).
      const std::string then =
          phase == v1::PHASE_IN_DOUBT
              ? absl::StrCat("migctl resolve ", id, " settles the job first")
              : absl::StrCat("migctl host release ", id,
                             " gives it back once it is not needed");
      for (const Allocated& a : job.allocated) {
        base::LogInfo("job ", id, ": kept its allocated device ",
                      Describe(a.allocation), " (", a.device, ") because ",
                      kept, " (", then, ")");
      }
      continue;
    }
    // As the job's end at run time: closed, removed, then released.
    std::string not_removed;
    for (const Allocated& a : job.allocated) {
      if (reopened_.count(a.device) == 0) continue;
      if (absl::Status s = devices.Remove(a.device); !s.ok()) {
        base::LogError("job ", id, ": its allocated device ", a.device, " (",
                       Describe(a.allocation),
                       ") cannot be closed: ", s.message());
        not_removed = a.device;
      }
    }
    if (!not_removed.empty()) {
      base::LogError("job ", id, ": kept its allocated device(s), since ",
                     not_removed, " is still open (migctl host release ", id,
                     " gives them back)");
      continue;
    }
    job.released_why =
        job.unfinished
            ? "the job failed at restart"
            : absl::StrCat("the job had ended ", migration::PhaseName(phase),
                           " before the restart, and the agent died before "
                           "releasing it");
  }
}

void AllocationRecovery::Release(const ReleaseFn& release) {
  for (auto& [id, job] : jobs_) {
    if (job.released_why.empty()) continue;
    const absl::Status s = release ? release(id)
                                   : absl::FailedPreconditionError(
                                         "this agent releases no allocations");
    if (!s.ok()) {
      base::LogError("job ", id, ": releasing its allocated device(s) failed: ",
                     s.message(), " (migctl host release ", id, ")");
      continue;
    }
    for (const Allocated& a : job.allocated) {
      base::LogInfo("job ", id, ": released its allocated device ",
                    Describe(a.allocation), ", which held no VM state (",
                    job.released_why, ")");
    }
    job.released_why.clear();
  }
}

}  // namespace migd::server
