// migd/migration/source_job.h
//
// The source side of one job: moves the job's devices' state to the
// destination agent while, as far as possible, they keep running.
//
//   Pre-copy (devices advertising PRE_COPY): RUNNING -> PRE_COPY; send the
//   initial bytes (then INITIAL_DATA_END, which the destination acknowledges
//   once loaded), then iterate on the dirty bytes until the estimated
//   remaining bytes / bandwidth fit the downtime limit (or a cap is hit).
//   Switchover (never before every acknowledgement): every device to a P2P
//   state first (a barrier: no device stops before every device stopped
//   initiating peer-to-peer DMA), then STOP_COPY; stream each device to EOF,
//   while the decision to commit is recorded (Job::Commit, on a thread of
//   its own); COMMIT once both are done; the destination loads and runs the
//   devices; STOP_COPY -> STOP here, off the downtime path.
//
// Any failure or cancel before COMMIT cancels the session (the destination
// resets its devices), takes back the decision to commit if it was recorded
// (Job::TakeBackCommit, before any device moves), and puts every source
// device back to RUNNING, resetting the ones in ERROR. After COMMIT the
// destination may run the devices, so the source never resumes them on its own:
// a cancel changes nothing, and when the completion does not arrive (the stream
// broke, the phase timed out) the job goes IN_DOUBT with its devices stopped
// and asks the destination for the outcome until it answers or an operator
// decides (in_doubt.h, commit.h).

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
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grpcpp/channel.h"
#include "migd/base/crew.h"
#include "migd/base/watchdog.h"
#include "migd/device/device.h"
#include "migd/dirty/tracker.h"
#include "migd/migration/in_doubt.h"
#include "migd/migration/job.h"
#include "migd/migration/policy.h"
#include "migd/migration/transfer_gate.h"
#include "migd/transfer/buffer_pool.h"
#include "migd/transfer/stream_sender.h"
#include "migd/transfer/transfer_client.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::migration {

struct SourceJobOptions {
  // Destination agent "host:port" and the token its PrepareIncoming returned
  // (a secret: never logged).
  std::string destination;
  std::string token;
  // Opens the control stream's connection to the destination, with the
  // agent's credentials, checking that the destination is who the request
  // says (see security::Credentials::Dial).
  std::function<std::shared_ptr<grpc::Channel>()> dial;
  // Opens a data channel connection to `port` (SessionAccepted.data_port) on
  // the destination's host, checking that it answers as `identity` (the
  // control stream's verified peer; "" without TLS). Null: plaintext to the
  // host of `destination`.
  std::function<absl::StatusOr<std::unique_ptr<transfer::DataConnection>>(
      uint16_t port, const std::string& identity)>
      open_data;
  // Opens a connection for GetOutcome, the question a job whose completion
  // did not arrive asks the destination (security::ChannelUse::kControl);
  // `dial` when null.
  std::function<std::shared_ptr<grpc::Channel>()> dial_control;
  // How often and how long that question is asked (its `dial` is ignored).
  InDoubtOptions outcome;
  uint32_t chunk_bytes = 1 << 20;
  // Data streams, each its own connection (1..16).
  uint32_t streams = 1;
  // A phase making no progress for this long fails the job.
  absl::Duration phase_timeout = absl::Seconds(60);
  // How long Start waits for the destination to accept each stream's
  // session (kDeadlineExceeded, TIMEOUT, after it). The agent sets it to
  // the job's phase_timeout; the default is for other users of the class.
  absl::Duration handshake_timeout = absl::Seconds(10);
  ConvergencePolicy convergence;
  // DMA dirty tracking over these ranges (none when empty).
  uint64_t dirty_page_size = 4096;
  std::vector<device::IovaRange> dirty_ranges;
  // Each device's compatibility descriptor (what its plugin says of it),
  // sent in the session header for the destination's check; by device
  // index, empty entries (or none) for devices no plugin speaks for.
  std::vector<v1::CompatDescriptor> compat;
  // The agent's transfer slots (transfer_gate.h): the job takes one before
  // it opens its session and gives it back once its data path is over.
  // Null: no limit.
  TransferGate* gate = nullptr;
  // Fault injection for tests: flip a payload byte of the chunk with this
  // sequence number after its CRC32C was computed.
  std::optional<uint64_t> corrupt_chunk_sequence;
  // Fault injection for tests: after this many chunks, the last data stream
  // is dropped (cancelled) as if its connection failed.
  std::optional<uint64_t> drop_stream_after;
};

class SourceJob {
 public:
  // Checks that the devices can be migrated together (RUNNING, STOP_COPY;
  // P2P on all of several devices unless the policy allows a mix). With a
  // transfer slot free, opens the transfer session, has the destination
  // accept it, and starts the job on its own thread. On error nothing was
  // changed on either side.
  //
  // With every slot taken, the job waits in line on its own thread, in
  // PHASE_CONNECTING (Job::SetWaiting), and this returns at once. Once the
  // job has its slot it opens the session; what it finds then (the
  // destination unreachable, a token expired during the wait) ends the job,
  // FAILED, with nothing changed on either side. A cancel while it waits
  // ends it CANCELLED.
  // `on_done` runs on the job's thread after the devices reached their final
  // state and before the job is marked terminal (to release them).
  static absl::StatusOr<std::unique_ptr<SourceJob>> Start(
      std::shared_ptr<Job> job, std::vector<device::Device*> devices,
      SourceJobOptions options, std::function<void()> on_done);

  // Waits for the job's thread. Cancel the job first to stop it early.
  ~SourceJob();

  const std::shared_ptr<Job>& job() const { return job_; }

  // The job's dirty-page tracker; nullptr when the job tracks no pages.
  dirty::Tracker* tracker() const { return tracker_.get(); }

  // User-space copies of chunk payload on this side (0 on the data path).
  uint64_t payload_copies() const;

  // An operator's decision for the job while it is IN_DOUBT (see
  // InDoubt::Resolve); kFailedPrecondition (NOT_IN_DOUBT) otherwise.
  absl::Status Resolve(v1::Resolution resolution, const std::string& who);

  // Agent shutdown: a job IN_DOUBT stops asking the destination (now, or as
  // soon as it gets there) and stays IN_DOUBT, its devices stopped, for
  // recovery at the next start. The job's thread then ends.
  void StopResolving();

 private:
  SourceJob(std::shared_ptr<Job> job, std::vector<device::Device*> devices,
            SourceJobOptions options, std::function<void()> on_done);

  // Start's parts: the checks on this side, then the session (the tracker,
  // the buffers, the control stream, the data streams).
  absl::Status Check();
  absl::Status Connect();
  // A job that waits for a transfer slot: waits, connects, then Run.
  void RunInLine();
  void Run();
  absl::Status Transfer();
  absl::Status Precopy();
  // Precopy's steps: every pre-copy device to PRE_COPY, its data stream
  // open (returns the devices whose INITIAL_DATA_END the destination
  // acknowledges); each device's total as far as known after a pass (returns
  // the bytes the devices still hold); the job's record of a pass
  // (`held_after`: what the devices held once it ended).
  absl::StatusOr<std::vector<uint32_t>> EnterPrecopy();
  absl::StatusOr<uint64_t> UpdateTotals();
  void ReportPrecopy(const IterationStats& stats, bool converged,
                     absl::Duration pass_time, uint64_t held_after);
  absl::Status Switchover();
  // Switchover's steps: the destination's acknowledgement of every pre-copy
  // device's initial data; every device to STOP_COPY (through the P2P
  // barrier when `all_p2p`), its data stream open; the STOP_COPY marker,
  // then each device's rest and its DEVICE_END.
  absl::Status AwaitInitialData();
  absl::Status StopDevices(bool all_p2p);
  absl::Status SendStopCopy();
  // One pass over a device's data stream, shared by the threads that send
  // it (one per data stream).
  struct Pass {
    size_t index = 0;  // the device
    bool stop_copy = false;
    uint64_t budget = ~uint64_t{0};
    absl::Mutex mu;
    uint64_t here ABSL_GUARDED_BY(mu) = 0;  // bytes read
    uint64_t sent ABSL_GUARDED_BY(mu) = 0;  // bytes written to a stream
    // The pass is over (the stream's end, the budget, or a failure): no
    // thread reads more.
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::Status error ABSL_GUARDED_BY(mu);  // the first failure

    void Fail(absl::Status s) ABSL_LOCKS_EXCLUDED(mu) {
      absl::MutexLock lock(&mu);
      FailLocked(std::move(s));
    }
    void FailLocked(absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      if (error.ok()) error = std::move(s);
      done = true;
    }
  };

  // Sends what `stream` has now: to the temporary end in pre-copy (at most
  // about `budget` bytes, so a device dirtying faster than the link cannot
  // keep one pass going forever), to EOF in stop-copy. Adds the bytes sent to
  // *sent. With several data streams, each stream's thread reads its next
  // chunk from the device, seals and sends it (Pump), and this returns once
  // all of them are done; with one, the job's thread does.
  absl::Status SendAvailable(size_t index, bool stop_copy, uint64_t* sent,
                             uint64_t budget = ~uint64_t{0});
  // Data stream k's part of `pass`: chunks until the pass is done.
  void Pump(Pass& pass, size_t k);
  // The part of a pool buffer the next read fills: the whole buffer, but
  // a ramp of smaller ones for the first chunks after the devices stop.
  absl::Span<uint8_t> ReadSpan(absl::Span<uint8_t> buffer, bool stop_copy);
  // ACK_TIMEOUT naming the first device not acknowledged.
  absl::Status AckTimeout(const std::vector<uint32_t>& ack_devices) const;
  absl::Status SendMarker(v1::PhaseMarker::Kind kind, uint32_t device,
                          uint64_t total_bytes);
  absl::Status Send(v1::TransferRequest& request);
  // Aborts every stream (a write blocked on one returns) and cancels the
  // buffer pool.
  void CancelSession();
  // What a cancel request does: wakes the job thread's waits, leaving the
  // session open for the ABORT marker.
  void Interrupt();
  // Ends every data stream (STREAM_END) and waits for the destination's
  // verdict on each.
  absl::Status CloseDataStreams();
  // Why the job stopped: a cancel or timeout wins over the error it caused;
  // a session the destination cancelled (not asked to by an operator) ends
  // with the cause the destination gave, not as a cancel.
  absl::Status Cause(const absl::Status& error) const;
  void Rollback();
  void Finalize();
  // COMMIT may have gone out and the completion did not come: why, as the
  // job reports it (a timeout, a lost destination).
  absl::Status CommittedCause(const absl::Status& error) const;
  // Holds the devices stopped and asks the destination until the job's
  // outcome is known (or StopResolving); the job ends there. `reason` says
  // why it is in doubt (the cause's message when empty).
  void AwaitOutcome(const absl::Status& cause, const std::string& reason = "");
  // COMMIT did not go out (the job failed with `cause`): takes back the
  // decision to commit the record may hold (Job::TakeBackCommit). An error
  // when the journal could not record it: the record may still say committed.
  absl::Status TakeBackCommit(const absl::Status& cause);
  // Collects the tracker's bitmaps and passes its new notices (a device that
  // turned out unable to report) to the job.
  void CollectDirty(bool final);

  std::shared_ptr<Job> job_;
  std::vector<device::Device*> devices_;
  SourceJobOptions options_;
  std::function<void()> on_done_;
  // The session's header, made by Check for Connect, and the state the
  // devices reported then.
  v1::SessionHeader header_;
  uint64_t state_bytes_ = 0;
  // The place in line, while waiting, and when the job took it (its wait
  // counts from there); the slot, while transferring.
  std::unique_ptr<TransferGate::Turn> turn_;
  absl::Time joined_;
  TransferGate::Slot slot_;
  std::unique_ptr<transfer::BufferPool> pool_;
  // The control stream (header, markers, acknowledgements, completion) and
  // the data streams (chunks).
  std::unique_ptr<transfer::TransferClient> client_;
  std::vector<std::unique_ptr<transfer::StreamSender>> senders_;
  // A thread per data stream when there are several ("src-stream"); none
  // with one.
  std::unique_ptr<base::Crew> crew_;
  // Written under the device pass's lock (Pass::mu).
  uint64_t chunks_ = 0;
  uint64_t stop_copy_chunks_ = 0;  // chunks read since the devices stopped
  std::unique_ptr<dirty::Tracker> tracker_;
  size_t tracker_notices_ = 0;  // notices already passed to the job

  // Per device: its data stream, bytes sent (the stream offset), whether it
  // takes part in pre-copy and whether INITIAL_DATA_END was sent.
  std::vector<std::unique_ptr<device::DataStream>> streams_;
  std::vector<uint64_t> offsets_;
  std::vector<bool> precopy_;
  std::vector<bool> initial_end_sent_;
  std::vector<absl::Duration> stop_copy_time_;
  uint64_t sequence_ = 0;
  // When the first chunk went out: the transfer time starts there.
  std::optional<absl::Time> first_send_;
  uint32_t iteration_ = 0;

  std::unique_ptr<base::Watchdog> watch_;
  std::atomic<bool> timed_out_{false};
  // COMMIT may be out (Job::Commit recorded the decision during the
  // stop-copy, and the job went on to send it): the devices are never
  // resumed without the destination's word (or an operator's).
  bool committed_ = false;

  absl::Mutex in_doubt_mu_;
  std::shared_ptr<InDoubt> in_doubt_ ABSL_GUARDED_BY(in_doubt_mu_);
  bool stop_resolving_ ABSL_GUARDED_BY(in_doubt_mu_) = false;

  std::thread thread_;
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_SOURCE_JOB_H_
