#include "migd/journal/recovery.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/migration/device_steps.h"

namespace migd::journal {
namespace {

using migration::Job;
using vfio::MigState;

absl::Status Restarted(const std::string& what) {
  return base::Error(absl::StatusCode::kAborted,
                     v1::ERROR_REASON_AGENT_RESTARTED, what);
}

// The devices of `job` this agent has, by index; missing ones are named in
// `missing`.
std::vector<device::Device*> DevicesOf(const Job& job,
                                       migration::DeviceRegistry& registry,
                                       std::vector<std::string>* missing) {
  v1::Migration record = job.Snapshot();
  std::vector<device::Device*> out;
  for (const v1::DeviceProgress& p : record.devices()) {
    device::Device* d = registry.Find(p.device());
    if (d == nullptr) missing->push_back(p.device());
    out.push_back(d);
  }
  return out;
}

// Whether a device found in `s` after a restart holds what the job loaded,
// and nothing else, in `phase`. In LOADING the job moves no device past STOP:
// STOP is loaded (validated), anything else was reset or reopened. In
// RESUMING the job also walks them through RUNNING_P2P; RUNNING cannot be
// told from a device that was reset (or that a reopen put in RUNNING), so it
// does not count: such a job stays in doubt for its source or an operator.
bool Loaded(v1::Phase phase, MigState s) {
  if (s == MigState::kStop) return true;
  return phase == v1::PHASE_RESUMING && s == MigState::kRunningP2P;
}

// Source, COMMIT not sent: every device back to RUNNING.
std::string PutBackSource(Job& job, const std::vector<device::Device*>& devs) {
  std::vector<std::string> failed;
  for (size_t i = 0; i < devs.size(); ++i) {
    if (devs[i] == nullptr) continue;
    if (absl::Status s = migration::RestoreRunning(&job, i, devs[i]); !s.ok()) {
      failed.push_back(absl::StrCat(devs[i]->name(), ": ", s.message()));
    }
  }
  return failed.empty() ? "its devices are back to RUNNING"
                        : absl::StrCat("some devices could not be put back (",
                                       absl::StrJoin(failed, "; "), ")");
}

// Destination before COMMIT (as far as the journal knows): every device
// reset, never an arc; but one found in STOP is left there. LOADING is
// journaled without waiting, so a device may have loaded the VM's state
// (RESUMING -> STOP, after COMMIT) in a job the journal still has before
// COMMIT; a reset may keep that state running while the source, told this
// job failed, resumes its own. STOP is idle (device_states.h) either way.
std::string ResetDestination(Job& job,
                             const std::vector<device::Device*>& devs) {
  std::vector<std::string> failed;
  int stopped = 0;
  for (size_t i = 0; i < devs.size(); ++i) {
    if (devs[i] == nullptr) continue;
    absl::StatusOr<MigState> state = devs[i]->GetState();
    if (state.ok() && *state == MigState::kStop) {
      job.SetDeviceState(i, *state);
      ++stopped;
      continue;
    }
    if (absl::Status s = migration::ResetDevice(&job, i, devs[i]); !s.ok()) {
      failed.push_back(absl::StrCat(devs[i]->name(), ": ", s.message()));
    }
  }
  std::string done = stopped == 0
                         ? "its devices were reset"
                         : absl::StrCat("its devices were reset, but ", stopped,
                                        " found in STOP (which may hold the "
                                        "VM's loaded state) left there");
  return failed.empty() ? done
                        : absl::StrCat(done, "; some could not be reset (",
                                       absl::StrJoin(failed, "; "), ")");
}

// Destination after COMMIT: true when every device was resumed.
bool ResumeDestination(Job& job, v1::Phase phase,
                       const std::vector<device::Device*>& devs) {
  for (device::Device* d : devs) {
    if (d == nullptr) return false;
    absl::StatusOr<MigState> s = d->GetState();
    if (!s.ok() || !Loaded(phase, *s)) return false;
  }
  for (size_t i = 0; i < devs.size(); ++i) {
    if (!migration::MoveDevice(&job, i, devs[i], MigState::kRunning).ok()) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<RecoveryReport> Recover(
    Journal& journal, migration::DeviceRegistry& devices,
    migration::JobTable& jobs, const migration::JobObservers& observers,
    const std::map<std::string, std::string>& unavailable) {
  absl::StatusOr<std::vector<JournaledJob>> journaled = journal.LoadJobs();
  if (!journaled.ok()) return journaled.status();
  RecoveryReport report;
  // Oldest first, so the table lists them newest first.
  for (auto it = journaled->rbegin(); it != journaled->rend(); ++it) {
    const v1::Migration& record = it->record;
    std::shared_ptr<Job> job = Job::Restore(record, observers);
    ++report.restored;
    const v1::Phase phase = record.phase();
    if (migration::IsTerminal(phase)) {
      jobs.AddRestored(std::move(job));
      continue;
    }
    ++report.recovered;
    // Write-ahead, like any runner: on record (and the journal writable)
    // before a device is touched.
    if (absl::Status s = job->BeforeAct("recovery acts on its devices");
        !s.ok()) {
      return s;
    }
    std::vector<std::string> missing;
    std::vector<device::Device*> devs = DevicesOf(*job, devices, &missing);
    const std::string found = absl::StrCat(
        "the agent restarted with this job in ", migration::PhaseName(phase),
        record.committed() ? ", committed (COMMIT may have gone out)" : "",
        it->from_earlier_boot ? ", recorded before the host last started" : "");
    std::vector<std::string> unconfigured;
    for (const std::string& name : missing) {
      auto it = unavailable.find(name);
      if (it == unavailable.end()) {
        unconfigured.push_back(name);
        continue;
      }
      job->AddNotice(absl::StrCat("recovery: device ", name,
                                  " is not on this agent (", it->second,
                                  "); left alone"));
    }
    if (!unconfigured.empty()) {
      job->AddNotice(absl::StrCat(
          "recovery: device(s) ", absl::StrJoin(unconfigured, ", "),
          " are not configured on this agent any more; left alone"));
    }
    std::string outcome;
    bool in_doubt = false;
    if (phase == v1::PHASE_IN_DOUBT) {
      in_doubt = true;
      outcome = "still in doubt: devices left as they are";
    } else if (record.role() == v1::ROLE_SOURCE && !record.committed()) {
      outcome = PutBackSource(*job, devs);
    } else if (record.role() == v1::ROLE_SOURCE) {
      in_doubt = true;
      outcome =
          "the destination may run the devices: they stay as they are "
          "(never resumed here) until the outcome is known";
    } else if (phase == v1::PHASE_STOP_COPY && it->from_earlier_boot) {
      in_doubt = true;
      outcome =
          "COMMIT may have come, and the record of resuming the devices, "
          "written before they run and synced just after, may have been lost "
          "with the power: the VM may have run here. Devices left as they "
          "are until an operator decides";
    } else if (phase == v1::PHASE_LOADING || phase == v1::PHASE_RESUMING) {
      if (ResumeDestination(*job, phase, devs)) {
        outcome = "every device had loaded its state and was resumed";
      } else {
        in_doubt = true;
        outcome =
            "not every device is found holding its loaded state (STOP, or "
            "RUNNING_P2P while resuming): devices left as they are until "
            "the outcome is known";
      }
    } else {
      outcome = ResetDestination(*job, devs);
    }
    const std::string notice = absl::StrCat("recovery: ", found, "; ", outcome);
    base::LogWarning("job ", record.job_id(), ": ", notice);
    job->AddNotice(notice);
    if (in_doubt) {
      ++report.in_doubt;
      job->SetPhase(v1::PHASE_IN_DOUBT, notice);
      std::vector<std::string> names;
      for (device::Device* d : devs) {
        if (d != nullptr) names.push_back(d->name());
      }
      if (absl::StatusOr<std::vector<device::Device*>> claimed =
              devices.Claim(names, record.job_id());
          !claimed.ok()) {
        base::LogError("job ", record.job_id(), ": cannot hold its devices: ",
                       claimed.status().message());
      }
    } else if (record.role() == v1::ROLE_DESTINATION &&
               (phase == v1::PHASE_LOADING || phase == v1::PHASE_RESUMING)) {
      job->Finish(absl::OkStatus());
    } else {
      job->Finish(Restarted(absl::StrCat(found, "; ", outcome)));
    }
    jobs.AddRestored(std::move(job));
  }
  return report;
}

}  // namespace migd::journal
