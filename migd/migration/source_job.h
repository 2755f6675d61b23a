// migd/migration/source_job.h
//
// The source side of one job: moves the job's devices from RUNNING through the
// stop-copy path and streams their state to the destination agent.
//
//   RUNNING -> RUNNING_P2P (every device, when all support P2P: no device stops
//   before every device stopped initiating peer-to-peer DMA) -> STOP_COPY ->
//   stream each device to EOF -> COMMIT -> destination loads and runs ->
//   STOP_COPY -> STOP here (off the downtime path).
//
// Any failure or cancel before the destination reports completion cancels the
// session (the destination resets its devices) and puts every source device
// back to RUNNING, resetting the ones in ERROR. Pre-copy comes in a later
// change; the structure leaves room for it before the stop.

#ifndef MIGD_MIGRATION_SOURCE_JOB_H_
#define MIGD_MIGRATION_SOURCE_JOB_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migd/device/device.h"
#include "migd/migration/job.h"
#include "migd/transfer/transfer_client.h"

namespace migd::migration {

struct SourceJobOptions {
  // Destination agent "host:port" and the token its PrepareIncoming returned.
  std::string destination;
  std::string token;
  uint32_t chunk_bytes = 1 << 20;
  // A phase making no progress for this long fails the job.
  absl::Duration phase_timeout = absl::Seconds(60);
  absl::Duration handshake_timeout = absl::Seconds(10);
  // Fault injection for tests: flip a payload byte of the chunk with this
  // sequence number after its CRC32C was computed.
  std::optional<uint64_t> corrupt_chunk_sequence;
};

class SourceJob {
 public:
  // Checks that every device can be migrated (RUNNING, advertises STOP_COPY),
  // opens the transfer session and has the destination accept it, then starts
  // the job on its own thread. On error nothing was changed on either side.
  // `on_done` runs on the job's thread after the devices reached their final
  // state and before the job is marked terminal (to release them).
  static absl::StatusOr<std::unique_ptr<SourceJob>> Start(
      std::shared_ptr<Job> job, std::vector<device::Device*> devices,
      SourceJobOptions options, std::function<void()> on_done);

  // Waits for the job's thread. Cancel the job first to stop it early.
  ~SourceJob();

  const std::shared_ptr<Job>& job() const { return job_; }

 private:
  SourceJob(std::shared_ptr<Job> job, std::vector<device::Device*> devices,
            SourceJobOptions options, std::function<void()> on_done);

  void Run();
  // The stop-copy transfer up to the destination's completion.
  absl::Status Transfer();
  absl::Status SendDevice(size_t index, device::DataStream* stream,
                          uint64_t* sequence);
  absl::Status Send(v1::TransferRequest& request);
  // Why the job stopped: a cancel or timeout wins over the error it caused.
  absl::Status Cause(const absl::Status& error) const;
  void Rollback();
  void Finalize();

  std::shared_ptr<Job> job_;
  std::vector<device::Device*> devices_;
  SourceJobOptions options_;
  std::function<void()> on_done_;
  std::unique_ptr<transfer::TransferClient> client_;
  std::vector<std::unique_ptr<device::DataStream>> streams_;
  std::atomic<bool> timed_out_{false};
  std::thread thread_;
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_SOURCE_JOB_H_
