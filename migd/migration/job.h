// migd/migration/job.h
//
// The record of one migration job on one agent, as the API reports it: phase,
// per-device progress, failure cause, timings. Runners (source and destination)
// update it; the control plane reads snapshots and waits on changes. A Job also
// carries the cancel request, so CancelMigration reaches a runner blocked in a
// gRPC call or a device arc without knowing what kind of runner it is.
//
// Thread-safe.

#ifndef MIGD_MIGRATION_JOB_H_
#define MIGD_MIGRATION_JOB_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/migration/job_observer.h"
#include "migd/vfio/uapi.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::migration {

struct DevicePair {
  std::string local;  // this agent's device
  std::string peer;   // the other agent's device
  // The local device on this host, when known: a PCI address or an mdev
  // UUID (DeviceProgress.host_address).
  std::string host_address = {};
};

// "STOP_COPY" for PHASE_STOP_COPY: the name people read.
std::string PhaseName(v1::Phase phase);

// True for SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(v1::Phase phase);

class Job {
 public:
  Job(std::string id, v1::Role role, std::string peer,
      std::vector<DevicePair> devices, JobObservers observers = {});

  // A job as a journal recorded it (after a restart): the record as it was,
  // with `observers` following it from now on.
  static std::shared_ptr<Job> Restore(const v1::Migration& record,
                                      JobObservers observers = {});

  const std::string& id() const { return id_; }
  v1::Role role() const { return role_; }
  size_t num_devices() const { return num_devices_; }

  // The job as the API reports it.
  v1::Migration Snapshot() const;

  // Write-ahead: the runner is about to `what` (see JobObserver::BeforeAct).
  // OK when every observer recorded the job as it is now (or newer);
  // otherwise the first failure, and the runner must not act (it fails the
  // job with that cause). The observers are called without the job's lock,
  // so the job may change meanwhile (from other threads). kFailedPrecondition
  // for a job that ended: nothing acts on it any more. A runner never ends a
  // job while one of its write-ahead points is under way.
  absl::Status BeforeAct(absl::string_view what);
  // SetPhase, then BeforeAct(what): for a phase whose start is the act.
  absl::Status EnterPhase(v1::Phase phase, absl::string_view what);

  // Mutations. Each one bumps the version, wakes watchers and tells the
  // observers; `message` says what changed, for a person.
  void SetPhase(v1::Phase phase, const std::string& message);
  // Also appends to the job's ordered log of state changes.
  void SetDeviceState(size_t device, vfio::MigState state);
  void SetDeviceTotal(size_t device, uint64_t bytes_total);
  // `stop_copy` tells which share the bytes count towards.
  void AddDeviceBytes(size_t device, uint64_t bytes, bool stop_copy = true);
  void SetDeviceAcked(size_t device);
  void SetDowntime(absl::Duration downtime);
  // Job-wide split; `devices` (optional, per device index) the same per device.
  void SetDowntimeBreakdown(const v1::DowntimeBreakdown& job,
                            const std::vector<v1::DowntimeBreakdown>& devices);
  void SetTransferTime(absl::Duration transfer_time);
  void SetPayloadCopies(uint64_t copies);
  void AddPayloadCopies(uint64_t copies);
  void SetReorderPeakBytes(uint64_t bytes);
  void SetPrecopy(const v1::PrecopyProgress& precopy);
  // Something a person should know that is not a failure.
  void AddNotice(const std::string& notice);
  // Source: the job waits for a transfer slot with `ahead` jobs ahead of
  // it, since `waited` ago (Migration.queue).
  void SetWaiting(size_t ahead, absl::Duration waited);
  // Source: the wait is over (a slot, or the job left the line) after
  // `waited`.
  void SetWaited(absl::Duration waited);
  // The other agent's certificate identity (empty with --insecure).
  void SetPeerIdentity(const std::string& identity);
  // What the record says about the job's doubt (Migration.in_doubt): why,
  // how the outcome is sought, how it was settled. `message` says what
  // changed.
  void SetInDoubt(const v1::InDoubt& in_doubt, const std::string& message);
  // Source: the job decided to commit (its devices stopped); COMMIT goes out
  // once this returned OK and the rest of the state is sent. Marks the record
  // committed and asks the observers to record it (BeforeAct). Meant to run
  // on a thread of its own while the runner sends the state: the record
  // keeps changing meanwhile. When an observer fails, the mark is taken
  // back and COMMIT must not go out (the job fails, rolls back).
  absl::Status Commit();
  // Source: COMMIT did not go out after all (the job failed after Commit):
  // takes the mark back and asks the observers to record that (BeforeAct),
  // before the runner resumes its devices. On failure the mark stays (the
  // journal may still say committed), and the runner must act as if COMMIT
  // had gone out.
  absl::Status TakeBackCommit(absl::string_view why);
  // Marks the record committed without asking (tests, recovery).
  void SetCommitted();

  // Ends the job: SUCCEEDED when `cause` is OK, else CANCELLED when the cause
  // is a cancel, else FAILED with the cause's reason and message. Later calls
  // are ignored (the first outcome stands).
  void Finish(const absl::Status& cause);

  v1::Phase phase() const;
  bool terminal() const;

  // Blocks until the version differs from *seen or `timeout` passes. Returns
  // true and fills `event` (updating *seen) when there is something new to
  // report. Start with *seen = kNoVersion to get the current state at once.
  static constexpr uint64_t kNoVersion = ~uint64_t{0};
  bool WaitForChange(uint64_t* seen, absl::Duration timeout,
                     v1::MigrationEvent* event) const;

  // Cancel plumbing. RequestCancel marks the job and calls the canceller the
  // runner installed (if any), with the job's lock held so the runner can
  // uninstall it safely before destroying what it cancels.
  void RequestCancel();
  bool cancel_requested() const;
  void SetCanceller(std::function<void()> canceller);

 private:
  void Changed(const std::string& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks every observer to record `record` (at `revision`) before `what`.
  absl::Status Act(const v1::Migration& record, uint64_t revision,
                   absl::string_view what) const;

  const std::string id_;
  const v1::Role role_;
  const size_t num_devices_;
  const JobObservers observers_;

  mutable absl::Mutex mu_;
  v1::Migration record_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  // Grows with every change of record_ (version_ only with those watchers
  // are told of): what observers order records by.
  uint64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_message_ ABSL_GUARDED_BY(mu_);
  absl::Time last_change_ ABSL_GUARDED_BY(mu_);
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> canceller_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_JOB_H_
