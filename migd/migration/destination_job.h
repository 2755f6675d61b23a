// migd/migration/destination_job.h
//
// The destination side of one job. PrepareIncoming claims the devices, moves
// each to RESUMING (opening its load session) and mints a one-time token. The
// source's transfer session then attaches with that token; chunks go straight
// into the devices' load sessions as they arrive, after the session's
// integrity checks. On COMMIT every device goes RESUMING -> STOP (where the
// device validates what it loaded), then RUNNING_P2P on all devices (a
// barrier), then RUNNING.
//
// Any failure, cancel, or loss of the source before completion resets every
// device (aborting RESUMING needs VFIO_DEVICE_RESET) and releases it.
//
// Thread-safe: the transfer session drives it from one thread; Cancel may
// come from any thread.

#ifndef MIGD_MIGRATION_DESTINATION_JOB_H_
#define MIGD_MIGRATION_DESTINATION_JOB_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/device/device.h"
#include "migd/migration/job.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/framing.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::migration {

class DestinationJob {
 public:
  // Moves every device to RESUMING and returns the prepared job. On error the
  // devices that already moved are reset and nothing stays claimed (the
  // caller releases the claim through `on_done`, which also runs when the
  // job ends).
  static absl::StatusOr<std::shared_ptr<DestinationJob>> Prepare(
      std::shared_ptr<Job> job, std::vector<device::Device*> devices,
      std::function<void()> on_done);

  const std::shared_ptr<Job>& job() const { return job_; }

  // The one-time transfer token (never log it).
  const std::string& token() const { return token_; }

  // A source session presents `header`. PERMISSION_DENIED (BAD_TOKEN) for a
  // wrong token, FAILED_PRECONDITION (NOT_PREPARED) when the job is no longer
  // waiting (attached, ended), INVALID_ARGUMENT (INCOMPATIBLE /
  // PROTOCOL_ERROR) when the devices or protocol do not match. A refused
  // header changes nothing. `cancel_session` is how a later Cancel reaches the
  // session's blocked read.
  absl::Status Attach(const v1::SessionHeader& header,
                      std::function<void()> cancel_session);

  // The next message of the attached session. A chunk's payload goes to the
  // device straight from the received buffers.
  absl::Status OnChunk(const transfer::DecodedRequest& chunk);
  absl::Status OnMarker(const v1::PhaseMarker& marker);

  // After COMMIT: load and resume every device. Returns the timings.
  absl::StatusOr<v1::Completion> Complete();

  // The session ended before completion (error, source gone, cancel): resets
  // every device and ends the job with the cause (a pending cancel request
  // wins, so a cancelled job reads CANCELLED).
  void Abort(const absl::Status& cause);

  // CancelMigration: a waiting (prepared) job is aborted at once; an attached
  // one has its session cancelled, and the session thread aborts it.
  void Cancel();

 private:
  DestinationJob(std::shared_ptr<Job> job, std::vector<device::Device*> devices,
                 std::function<void()> on_done);
  void ResetAllLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndLocked(const absl::Status& cause) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  enum class Stage { kWaiting, kAttached, kDone };

  const std::shared_ptr<Job> job_;
  const std::vector<device::Device*> devices_;
  std::function<void()> on_done_;
  std::string token_;

  absl::Mutex mu_;
  Stage stage_ ABSL_GUARDED_BY(mu_) = Stage::kWaiting;
  std::vector<std::unique_ptr<device::DataStream>> streams_
      ABSL_GUARDED_BY(mu_);
  std::unique_ptr<transfer::StreamChecker> checker_ ABSL_GUARDED_BY(mu_);
  absl::Time downtime_start_ ABSL_GUARDED_BY(mu_);
  bool stop_copy_started_ ABSL_GUARDED_BY(mu_) = false;
  // First chunk to COMMIT: the transfer time the job reports.
  std::optional<absl::Time> first_chunk_ ABSL_GUARDED_BY(mu_);
  absl::Time committed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_DESTINATION_JOB_H_
