// migd/migration/destination_job.h
//
// The destination side of one job. PrepareIncoming claims the devices, moves
// each to RESUMING (opening its load session: from RUNNING or STOP, both idle;
// a device found in a state a migration left behind is reset first, never
// sent through an arc; device_states.h) and mints a one-time token,
// bound to the source agent's identity and good until it expires (a prepared
// job whose token expires unused ends with TIMEOUT and resets its devices).
// The source's transfer session then attaches with that token: one control
// stream, then its data streams. Each data stream's thread checks its chunks
// (its stream's integrity) and writes each one into its device's load
// session itself, straight from the buffer it was received into, once every
// byte before it is in: a chunk that comes before its turn waits for the
// streams that carry the bytes before it, and its stream reads nothing more
// meanwhile (TCP's window then stalls the source), so the job holds at most
// one chunk per stream. Markers on the control stream wait for the bytes
// they account for. The job is PRE_COPY from the attach (the source's
// devices still run) and STOP_COPY from the source's STOP_COPY marker: a
// write-ahead point, durable before COMMIT can be taken, that tells recovery
// after a power loss that the devices may have run (journal/recovery.h). On
// COMMIT every device goes RESUMING -> STOP (where the device validates what
// it loaded), the job RESUMING (written before any device runs), then
// RUNNING_P2P on all devices (a barrier), then RUNNING.
//
// Any failure, cancel, or loss of the source before completion resets every
// device (aborting RESUMING needs VFIO_DEVICE_RESET) and releases it. The
// source asks for the outcome (AnswerOutcome) when the completion did not
// reach it: a job that has not resumed a device is aborted first, so that it
// never runs the devices of a source that is told it did not.
//
// Thread-safe: the transfer session drives it from one thread; Cancel may
// come from any thread.

#ifndef MIGD_MIGRATION_DESTINATION_JOB_H_
#define MIGD_MIGRATION_DESTINATION_JOB_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/base/watchdog.h"
#include "migd/device/device.h"
#include "migd/migration/in_doubt.h"
#include "migd/migration/job.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/framing.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::migration {

class DestinationJob {
 public:
  // Moves every device to RESUMING and returns the prepared job: a device
  // found in RUNNING or STOP walks there, one found in a left-over state
  // (RUNNING_P2P, PRE_COPY*, STOP_COPY, RESUMING, ERROR) is reset first (a
  // notice in the job says so). On error the
  // devices that already moved are reset and nothing stays claimed (the
  // caller releases the claim through `on_done`, which also runs when the
  // job ends).
  // `memory_cap_bytes` is the memory the agent allows a job for device
  // state in flight (--transfer_memory_cap): each data stream holds at most
  // two chunks here (the one being read and the one waiting for its turn to
  // be written, see OnChunk), and a session whose streams and chunk size
  // could hold more is refused at Attach. `wait_timeout`
  // is how long a marker waits for the bytes it accounts for, and a chunk
  // for its turn. The token is bound to `source_identity` (the identity a
  // session must come from; "" only without TLS) and expires after
  // `token_ttl`.
  static absl::StatusOr<std::shared_ptr<DestinationJob>> Prepare(
      std::shared_ptr<Job> job, std::vector<device::Device*> devices,
      std::function<void()> on_done,
      uint64_t memory_cap_bytes = uint64_t{64} << 20,
      absl::Duration wait_timeout = absl::Seconds(60),
      std::string source_identity = "",
      absl::Duration token_ttl = absl::InfiniteDuration());

  // Stops the token timer first: its callback uses the rest.
  ~DestinationJob();

  const std::shared_ptr<Job>& job() const { return job_; }

  // The one-time transfer token (never log it: security::Redacted).
  const std::string& token() const { return token_; }
  // When the token stops being accepted.
  absl::Time token_expires() const { return token_expires_; }

  // A source session from `peer_identity` presents `header`.
  // PERMISSION_DENIED (BAD_TOKEN) for a wrong token (compared in constant
  // time), a session from another identity than the token is bound to, or
  // an expired token; FAILED_PRECONDITION (NOT_PREPARED) when the job is no
  // longer waiting (attached, ended: a token is used once);
  // INVALID_ARGUMENT (INCOMPATIBLE / PROTOCOL_ERROR) when the devices or
  // protocol do not match. A refused header changes nothing.
  // `cancel_session` is how a later Cancel or abort reaches the session's
  // blocked read; it gets the cause the job ends with (kCancelled with
  // ERROR_REASON_CANCELLED for CancelMigration), which the control stream
  // tells the source before it cancels the call.
  // A header that passes these checks then goes through the session check
  // (SetSessionCheck): when that refuses it, the job ends with its error
  // (its devices reset: nothing was loaded), since this job's source can
  // never send a state that loads here.
  using StreamCanceller = std::function<void(const absl::Status& why)>;
  absl::Status Attach(const v1::SessionHeader& header,
                      const std::string& peer_identity,
                      StreamCanceller cancel_session);

  // What Attach asks of a header whose token and devices are right: whether
  // the source devices' states can load into this job's devices (the
  // plugins' compatibility checks, in the server). Set before the job is
  // registered.
  void SetSessionCheck(
      std::function<absl::Status(const v1::SessionHeader&)> check);

  // A data stream (header.stream_index 1..num_streams) of the attached
  // session presents itself: same token, same identity; each index once.
  absl::Status AttachData(const v1::SessionHeader& header,
                          const std::string& peer_identity,
                          StreamCanceller cancel_stream);

  // The cap Prepare was given (see there).
  uint64_t memory_cap_bytes() const { return memory_cap_bytes_; }

  // Payload the data streams hold now: received, not yet in its device
  // (waiting for its turn, or being written). Its peak is the job's
  // reorder peak.
  uint64_t held_bytes() const { return held_bytes_.load(); }

  // A chunk that passed its stream's checks, on that stream's thread: waits
  // until every byte of its device before it is in the device (other
  // streams' threads write those), then writes it. Each stream carries its
  // chunks in the order the source read them, so the next bytes a device
  // needs are always the first unwritten chunk of some stream, whose thread
  // waits for no other chunk: no wait is circular. The wait ends with the job:
  // an abort (a stream or the control stream that failed, a cancel) wakes
  // it with the abort's cause; and it lasts at most `wait_timeout`
  // (kDeadlineExceeded, TIMEOUT). kDataLoss (STREAM_CORRUPTED) for a chunk
  // that overlaps bytes already written or runs past its device's end
  // (DEVICE_END); the device's error (STATE_REJECTED) when the write fails.
  absl::Status OnChunk(transfer::DecodedRequest chunk);

  // Data stream `index` ended cleanly (the source half-closed it).
  void DataStreamEnded(uint32_t index);

  // A stream's handler is returning: its canceller (which points into the
  // call) must not run any more. 0 is the control stream.
  void StreamGone(uint32_t index);

  // The next control-stream marker. INITIAL_DATA_END and DEVICE_END return
  // once the device holds every byte they account for (so an
  // acknowledgement is true when it is sent).
  absl::Status OnMarker(const v1::PhaseMarker& marker);

  // Called after data reached a device (from data stream threads): the
  // control stream's idle watchdog counts it as the session being alive.
  void SetActivityCallback(std::function<void()> callback);

  // After COMMIT: load and resume every device. Returns the timings. A
  // failure before the devices resume (a rejected load, a journal that
  // cannot record RESUMING) fails the job: Abort stands the devices that
  // loaded down (device_steps.h, StandDown: they stay in STOP) and resets
  // the rest (the rejected one included). A device that
  // fails to resume once others may run leaves the job IN_DOUBT (neither
  // side may run the VM without an operator's decision, Resolve), devices
  // as they are; the error is returned all the same.
  absl::StatusOr<v1::Completion> Complete();

  // True once any device took RESUMING -> STOP: it holds the VM's state
  // (and may run it), so nothing may reset or give it away without a
  // person's word. Safe to call from the job's own end callback.
  bool loaded_any() const { return loaded_any_.load(); }

  // ResolveMigration for a job Complete left IN_DOUBT (InDoubt::Resolve):
  // the destination resumes every device, or stands them down for the
  // source. kFailedPrecondition (NOT_IN_DOUBT) for a job that is not.
  absl::Status Resolve(v1::Resolution resolution, const std::string& who);

  // The session ended before completion (error, source gone, cancel): resets
  // every device that has not loaded the VM's state (RESUMING -> STOP, only
  // after COMMIT), stands down the ones that have (StandDown: they stay
  // stopped, never reset), and ends the job
  // with the cause (a pending cancel request wins, so a cancelled job reads
  // CANCELLED). Nothing for a job IN_DOUBT.
  // `from_stream` is the stream whose own thread aborts (0 = control): it
  // ends that stream with the cause itself, so every other stream is
  // cancelled but not that one, and the source reads the real cause there.
  void Abort(const absl::Status& cause, int from_stream = -1);

  // CancelMigration: a waiting (prepared) job is aborted at once; an attached
  // one has its session cancelled, and the session thread aborts it.
  void Cancel();

  // TransferService.GetOutcome from `peer_identity`: PERMISSION_DENIED
  // (BAD_TOKEN) unless it is the identity the job's token is bound to.
  // Answers from the job's phase (commit.h, AnswerFor), taken under the lock
  // Complete holds from LOADING to the end: RUNNING_HERE once it resumed
  // (or is resuming) the devices; NOT_RUN once it failed or was cancelled;
  // a job that has not resumed a device yet (prepared, attached, before
  // COMMIT or before Complete took over) is aborted first, its devices
  // reset, so that NOT_RUN stays true: it will never resume them.
  absl::StatusOr<v1::GetOutcomeResponse> AnswerOutcome(
      const std::string& peer_identity);

 private:
  DestinationJob(std::shared_ptr<Job> job, std::vector<device::Device*> devices,
                 std::function<void()> on_done, uint64_t memory_cap_bytes,
                 absl::Duration wait_timeout, std::string source_identity);
  // Resets the devices that did not load, stands down those that did, and
  // wakes every data stream waiting for its turn with `why`.
  void ReleaseDevicesLocked(const absl::Status& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Device `index` failed to resume (`error`) once others may run: the job
  // goes IN_DOUBT, devices as they are. Returns `error`.
  absl::Status ResumeFailedLocked(size_t index, const absl::Status& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AbortLocked(const absl::Status& cause, int from_stream)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndLocked(const absl::Status& cause) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The token, the identity it is bound to, and (for the control stream,
  // which uses the token; data streams join a session already attached) its
  // expiry.
  absl::Status CheckToken(const v1::SessionHeader& header,
                          const std::string& peer_identity,
                          bool check_expiry) const;
  // The token expired: a job still waiting for its source ends (TIMEOUT)
  // and resets its devices.
  void ExpireToken();
  void AddCanceller(uint32_t stream, StreamCanceller cancel);
  // Cancels every stream of the session but `except`, telling each `why`.
  void CancelStreams(int except, const absl::Status& why);
  // Why a data stream's wait or write ended because the job aborted.
  absl::Status AbortedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Waits until `device` holds at least `total` bytes (exactly `total` when
  // `exact`: its end); kDataLoss when every data stream ended short of it.
  absl::Status WaitWritten(uint32_t device, uint64_t total, bool exact);

  enum class Stage { kWaiting, kAttached, kDone };

  const std::shared_ptr<Job> job_;
  const std::vector<device::Device*> devices_;
  std::function<void()> on_done_;
  std::string token_;
  const std::string source_identity_;
  absl::Time token_expires_ = absl::InfiniteFuture();
  // Fires ExpireToken; after Attach it finds nothing to do.
  std::unique_ptr<base::Watchdog> token_timer_;
  const uint64_t memory_cap_bytes_;
  const absl::Duration wait_timeout_;

  mutable absl::Mutex mu_;
  Stage stage_ ABSL_GUARDED_BY(mu_) = Stage::kWaiting;
  std::function<absl::Status(const v1::SessionHeader&)> session_check_
      ABSL_GUARDED_BY(mu_);
  std::unique_ptr<transfer::StreamChecker> checker_ ABSL_GUARDED_BY(mu_);
  uint32_t num_streams_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<bool> data_attached_ ABSL_GUARDED_BY(mu_);
  // Cancels the session's streams. Its own lock: Job::RequestCancel calls in
  // with the job's lock held, and mu_ is held while calling into the job.
  absl::Mutex cancel_mu_;
  std::map<uint32_t, StreamCanceller> cancellers_ ABSL_GUARDED_BY(cancel_mu_);
  absl::Time downtime_start_ ABSL_GUARDED_BY(mu_);
  absl::Time committed_ ABSL_GUARDED_BY(mu_);
  // Which devices took RESUMING -> STOP (loaded the VM's state): those are
  // stood down, never reset, when the job ends without running them.
  std::vector<bool> loaded_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> loaded_any_{false};
  // Set when a failed resume left the job IN_DOUBT (Complete).
  std::shared_ptr<InDoubt> in_doubt_ ABSL_GUARDED_BY(mu_);

  // Device writes, taken after mu_ when both are held. The load sessions are
  // written by the data streams under write_mu_ and replaced only with both
  // locks held. A data stream's thread waits for its chunk's turn on it
  // (Await releases it meanwhile); every change of written_, end_ or
  // aborted_ is made under it, which wakes the waiters whose turn came.
  mutable absl::Mutex write_mu_;
  std::vector<std::unique_ptr<device::DataStream>> streams_;
  std::vector<uint64_t> written_ ABSL_GUARDED_BY(write_mu_);
  // Each device's stream length, once its DEVICE_END came.
  std::vector<std::optional<uint64_t>> end_ ABSL_GUARDED_BY(write_mu_);
  uint32_t data_streams_ended_ ABSL_GUARDED_BY(write_mu_) = 0;
  uint32_t data_streams_expected_ ABSL_GUARDED_BY(write_mu_) = 0;
  bool aborted_ ABSL_GUARDED_BY(write_mu_) = false;
  absl::Status abort_cause_ ABSL_GUARDED_BY(write_mu_);
  // held_bytes() and the most at once. Atomic: a chunk counts from the
  // moment it arrives, before its thread can take write_mu_, which a write
  // in progress holds.
  std::atomic<uint64_t> held_bytes_{0};
  std::atomic<uint64_t> peak_held_bytes_{0};
  std::function<void()> on_activity_ ABSL_GUARDED_BY(write_mu_);
  bool stop_copy_started_ ABSL_GUARDED_BY(write_mu_) = false;
  // First chunk to COMMIT: the transfer time the job reports.
  std::optional<absl::Time> first_chunk_ ABSL_GUARDED_BY(write_mu_);
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_DESTINATION_JOB_H_
