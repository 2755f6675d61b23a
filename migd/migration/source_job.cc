#include "migd/migration/source_job.h"

#include <algorithm>
#include <iterator>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/base/thread_name.h"
#include "migd/base/watchdog.h"
#include "migd/migration/device_steps.h"
#include "migd/transfer/framing.h"

namespace migd::migration {
namespace {

using ::google::protobuf::util::TimeUtil;
using vfio::MigState;

// How long pre-copy waits for new data before it calls a pass idle.
constexpr absl::Duration kQuietBeforeIdle = absl::Milliseconds(50);
// How long a failing source waits for the destination to take its ABORT.
constexpr absl::Duration kAbortGrace = absl::Seconds(2);

// Whether gRPC closed the session's connection because the destination
// stopped answering: a keepalive ping went unanswered ("keepalive watchdog
// timeout"), or TCP gave up on sent data the destination never acknowledged
// (ETIMEDOUT, "Connection timed out", from the TCP_USER_TIMEOUT that the
// keepalive sets; see security::Keepalive). gRPC says so only in words, and
// not always these: when a write sees the dead socket first, "Broken pipe",
// which a destination that died and reset its connections causes too, so
// that one is left as it is.
constexpr char kStoppedAnswering[] =
    "the destination stopped answering (a partition, or its host is down)";
bool StoppedAnswering(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable &&
         (absl::StrContains(s.message(), "keepalive") ||
          absl::StrContains(s.message(), "Connection timed out"));
}

google::protobuf::Duration ToProto(absl::Duration d) {
  return TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

// Rolling bandwidth measurement: bytes over the time spent sending them.
class Meter {
 public:
  void Add(uint64_t bytes, absl::Duration took) {
    bytes_ += bytes;
    time_ += took;
  }
  double rate() const {
    double s = absl::ToDoubleSeconds(time_);
    return s > 0 ? bytes_ / s : 0;
  }

 private:
  uint64_t bytes_ = 0;
  absl::Duration time_;
};

// Records where a job's downtime went: in all (`downtime`, of which the
// stop-copy transfer took `transfer`) and per device (its own stop-copy
// transfer, `stop_copy_time`, then its load and resume as the destination's
// `completion` timed them).
void RecordDowntimeBreakdown(Job& job, absl::Duration downtime,
                             absl::Duration transfer,
                             const std::vector<absl::Duration>& stop_copy_time,
                             const v1::Completion& completion) {
  v1::DowntimeBreakdown total;
  *total.mutable_total() = ToProto(downtime);
  *total.mutable_stop_copy_transfer() = ToProto(transfer);
  *total.mutable_load() = TimeUtil::NanosecondsToDuration(completion.load_ns());
  *total.mutable_resume() =
      TimeUtil::NanosecondsToDuration(completion.resume_ns());
  std::vector<v1::DowntimeBreakdown> per_device(stop_copy_time.size());
  for (size_t i = 0; i < stop_copy_time.size(); ++i) {
    *per_device[i].mutable_stop_copy_transfer() = ToProto(stop_copy_time[i]);
  }
  for (const v1::DeviceTiming& t : completion.devices()) {
    if (t.device() >= per_device.size()) continue;
    v1::DowntimeBreakdown& b = per_device[t.device()];
    *b.mutable_load() = TimeUtil::NanosecondsToDuration(t.load_ns());
    *b.mutable_resume() = TimeUtil::NanosecondsToDuration(t.resume_ns());
    *b.mutable_total() =
        ToProto(stop_copy_time[t.device()] + absl::Nanoseconds(t.load_ns()) +
                absl::Nanoseconds(t.resume_ns()));
  }
  job.SetDowntimeBreakdown(total, per_device);
}

// Records a job's decision to commit (Job::Commit) on a thread of its own,
// so that the durable write overlaps the stop-copy transfer rather than sit
// between its last byte and COMMIT, in the downtime. The thread starts
// before the devices stop (starting one is not free) and waits to be told to
// record; one never told ends without recording.
class CommitRecorder {
 public:
  explicit CommitRecorder(Job* job)
      : thread_([this, job] {
          base::NameThisThread("src-commit");
          Run(job);
        }) {}
  ~CommitRecorder() {
    {
      absl::MutexLock lock(&mu_);
      abandoned_ = true;
    }
    thread_.join();
  }
  CommitRecorder(const CommitRecorder&) = delete;
  CommitRecorder& operator=(const CommitRecorder&) = delete;

  // Starts recording.
  void Record() {
    absl::MutexLock lock(&mu_);
    go_ = true;
  }
  // Waits until recorded: OK when it is on record and COMMIT may go out.
  absl::Status Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return status_;
  }

 private:
  void Run(Job* job) {
    {
      absl::MutexLock lock(&mu_);
      auto told = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return go_ || abandoned_;
      };
      mu_.Await(absl::Condition(&told));
      if (!go_) return;
    }
    absl::Status s = job->Commit();
    absl::MutexLock lock(&mu_);
    status_ = std::move(s);
    done_ = true;
  }

  absl::Mutex mu_;
  bool go_ ABSL_GUARDED_BY(mu_) = false;
  bool abandoned_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: it uses the members above
};

}  // namespace

SourceJob::SourceJob(std::shared_ptr<Job> job,
                     std::vector<device::Device*> devices,
                     SourceJobOptions options, std::function<void()> on_done)
    : job_(std::move(job)),
      devices_(std::move(devices)),
      options_(std::move(options)),
      on_done_(std::move(on_done)) {
  size_t n = devices_.size();
  streams_.resize(n);
  offsets_.assign(n, 0);
  precopy_.assign(n, false);
  initial_end_sent_.assign(n, false);
  stop_copy_time_.assign(n, absl::ZeroDuration());
}

absl::StatusOr<std::unique_ptr<SourceJob>> SourceJob::Start(
    std::shared_ptr<Job> job, std::vector<device::Device*> devices,
    SourceJobOptions options, std::function<void()> on_done) {
  std::unique_ptr<SourceJob> sj(
      new SourceJob(std::move(job), std::move(devices), std::move(options),
                    std::move(on_done)));
  sj->job_->SetPhase(v1::PHASE_CONNECTING, "");
  if (absl::Status s = sj->Check(); !s.ok()) return s;
  SourceJob* raw = sj.get();
  std::optional<TransferGate::Slot> slot;
  const bool now =
      sj->options_.gate == nullptr || (slot = sj->options_.gate->TryTake());
  if (now) {
    if (slot.has_value()) sj->slot_ = *std::move(slot);
    if (absl::Status s = sj->Connect(); !s.ok()) return s;
    sj->job_->SetCanceller([raw] { raw->Interrupt(); });
  } else {
    // Every slot is taken: the job waits its turn on its own thread, and
    // StartMigration returns now. What the session's opening finds then
    // ends the job, as a failure of its own.
    sj->turn_ = sj->options_.gate->Join();
    sj->joined_ = absl::Now();
    sj->job_->SetWaiting(sj->turn_->ahead(), absl::ZeroDuration());
    sj->job_->SetCanceller([raw] {
      raw->turn_->Leave(base::Error(
          absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
          "cancelled by request while waiting for a transfer slot"));
    });
  }
  sj->thread_ = std::thread([raw, now] {
    base::NameThisThread("src-job");
    now ? raw->Run() : raw->RunInLine();
  });
  return sj;
}

absl::Status SourceJob::Check() {
  Job& j = *job_;
  v1::SessionHeader& header = header_;  // what Connect sends
  header.set_job_id(j.id());
  header.set_transfer_token(options_.token);
  header.set_protocol_version(v1::PROTOCOL_VERSION_2);
  header.set_stream_index(0);
  header.set_num_streams(options_.streams);
  v1::Migration record = j.Snapshot();
  std::vector<std::string> without_p2p;
  state_bytes_ = 0;
  for (size_t i = 0; i < devices_.size(); ++i) {
    device::Device* d = devices_[i];
    absl::StatusOr<vfio::MigFlags> flags = d->GetFlags();
    if (!flags.ok()) return flags.status();
    // Only RUNNING is migrated; STOP (idle) and the left-overs are refused,
    // untouched, with what the owner can do (device_states.h).
    absl::StatusOr<MigState> state =
        SettleFoundState(&j, i, d, DeviceRole::kSource);
    if (!state.ok()) return state.status();
    if ((*flags & vfio::kMigP2P) == 0) without_p2p.push_back(d->name());
    precopy_[i] = (*flags & vfio::kMigPreCopy) != 0 &&
                  !options_.convergence.disable_precopy;
    absl::StatusOr<uint64_t> size = d->GetStopCopySize();
    v1::DeviceDescriptor* desc = header.add_devices();
    desc->set_index(i);
    desc->set_source_device(d->name());
    desc->set_destination_device(record.devices(i).peer_device());
    desc->set_kind(d->kind());
    desc->set_migration_flags(*flags);
    desc->set_state_size_bytes(size.ok() ? *size : 0);
    if (i < options_.compat.size()) {
      *desc->mutable_compat() = options_.compat[i];
    }
    if (size.ok()) state_bytes_ += *size;
    if (size.ok()) j.SetDeviceTotal(i, *size);
  }
  // QEMU's rule: with several devices, one without P2P could be stopped
  // while a peer still DMAs into it.
  if (devices_.size() > 1 && !without_p2p.empty() &&
      !options_.convergence.allow_mixed_p2p) {
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_INCOMPATIBLE,
        absl::StrCat("device ", without_p2p.front(),
                     " does not support P2P, which a job of ", devices_.size(),
                     " devices needs (policy.allow_mixed_p2p overrides)"));
  }
  if (!options_.dirty_ranges.empty()) {
    return dirty::ValidateTracking(options_.dirty_page_size,
                                   options_.dirty_ranges);
  }
  return absl::OkStatus();
}

absl::Status SourceJob::Connect() {
  Job& j = *job_;
  if (!options_.dirty_ranges.empty()) {
    tracker_ = std::make_unique<dirty::Tracker>(
        devices_, options_.dirty_page_size, options_.dirty_ranges);
  }

  // A stream's thread (the job's, with one stream) holds one buffer at a
  // time: its chunk's buffer is back before its next read. One more covers
  // the hand-back. Anything more would only be memory the job never fills.
  const size_t buffers = options_.streams + 1;
  absl::StatusOr<std::unique_ptr<transfer::BufferPool>> pool =
      transfer::BufferPool::Create(options_.chunk_bytes, buffers);
  if (!pool.ok()) return pool.status();
  pool_ = *std::move(pool);
  // Map the buffers the state needs now (at most the pool's), while the VM
  // runs, rather than in the first reads of stop-copy, where mmap and page
  // faults are downtime.
  pool_->Reserve(static_cast<size_t>(state_bytes_ / options_.chunk_bytes +
                                     devices_.size() + 1));

  SourceJob* raw = this;
  absl::StatusOr<std::unique_ptr<transfer::TransferClient>> client =
      transfer::TransferClient::Open(options_.dial(), header_,
                                     options_.handshake_timeout,
                                     [raw](uint32_t device) {
                                       if (device < raw->devices_.size())
                                         raw->job_->SetDeviceAcked(device);
                                     });
  if (!client.ok()) return client.status();
  client_ = *std::move(client);
  // The identity the handshake verified: the one the request named, or the
  // one the destination's certificate carries for its host name.
  j.SetPeerIdentity(client_->peer_identity());
  // The data streams: connections of the destination's data channel, on
  // the host this agent reached it at, from the same identity.
  const uint32_t data_port = client_->data_port();
  if (data_port == 0 || data_port > 65535) {
    CancelSession();
    return base::Error(absl::StatusCode::kFailedPrecondition,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       "the destination offered no data channel port");
  }
  auto open_data = options_.open_data;
  if (!open_data) {
    std::string host;
    uint16_t ignored = 0;
    if (absl::Status s =
            transfer::SplitHostPort(options_.destination, &host, &ignored);
        !s.ok()) {
      CancelSession();
      return s;
    }
    open_data = [host, timeout = options_.handshake_timeout,
                 dead = options_.phase_timeout](uint16_t port,
                                                const std::string& identity) {
      return transfer::DataConnection::Dial(host, port, nullptr, identity,
                                            timeout, dead);
    };
  }
  for (uint32_t k = 1; k <= options_.streams; ++k) {
    v1::SessionHeader data_header;
    data_header.set_job_id(j.id());
    data_header.set_transfer_token(options_.token);
    data_header.set_protocol_version(v1::PROTOCOL_VERSION_2);
    data_header.set_stream_index(k);
    data_header.set_num_streams(options_.streams);
    data_header.set_max_chunk_bytes(options_.chunk_bytes);
    absl::StatusOr<std::unique_ptr<transfer::DataConnection>> conn =
        open_data(static_cast<uint16_t>(data_port), client_->peer_identity());
    absl::StatusOr<std::unique_ptr<transfer::StreamSender>> sender =
        conn.ok() ? transfer::StreamSender::Open(*std::move(conn), data_header,
                                                 options_.handshake_timeout)
                  : conn.status();
    if (!sender.ok()) {
      CancelSession();
      return base::Annotate(sender.status(),
                            absl::StrCat("opening data stream ", k));
    }
    senders_.push_back(*std::move(sender));
  }
  if (senders_.size() > 1) {
    crew_ = std::make_unique<base::Crew>(senders_.size(), "src-stream");
  }
  return absl::OkStatus();
}

void SourceJob::RunInLine() {
  absl::StatusOr<TransferGate::Slot> slot = turn_->Wait(
      [&](size_t ahead) { job_->SetWaiting(ahead, absl::Now() - joined_); });
  const absl::Duration waited = absl::Now() - joined_;
  job_->SetWaited(waited);
  absl::Status s = slot.status();
  if (s.ok()) {
    slot_ = *std::move(slot);
    base::LogInfo("job ", job_->id(), ": waited ", absl::FormatDuration(waited),
                  " for a transfer slot");
    s = Connect();
    // The token may have expired meanwhile (--transfer_token_ttl on the
    // destination): the wait is part of the story.
    if (!s.ok()) {
      s = base::Annotate(
          s, absl::StrCat("after waiting ", absl::FormatDuration(waited),
                          " for a transfer slot"));
    }
  }
  if (!s.ok()) {
    // Nothing changed on either side: the devices never left RUNNING, and
    // the destination's prepared job ends when its token expires.
    job_->SetCanceller(nullptr);
    slot_.Reset();
    tracker_.reset();
    pool_.reset();
    base::LogWarning("job ", job_->id(),
                     ": not started: ", base::StatusText(s));
    if (on_done_) on_done_();
    job_->Finish(s);
    return;
  }
  // A cancel that came during the wait's last moments or the session's
  // opening takes effect now (SetCanceller runs it).
  job_->SetCanceller([this] { Interrupt(); });
  Run();
}

SourceJob::~SourceJob() {
  // A job still in line (its cancel did not come) leaves it.
  if (turn_ != nullptr) {
    turn_->Leave(base::Error(absl::StatusCode::kCancelled,
                             v1::ERROR_REASON_CANCELLED,
                             "the agent stopped the job while it waited for "
                             "a transfer slot"));
  }
  StopResolving();
  if (thread_.joinable()) thread_.join();
}

void SourceJob::Run() {
  absl::Status s = Transfer();
  bool in_doubt = !s.ok() && committed_;
  // Why the job is in doubt, when it is and the cause does not say.
  std::string doubt;
  if (s.ok()) {
    Finalize();
  } else if (in_doubt) {
    // COMMIT may have reached the destination, which may run the devices
    // now: no ABORT (it would come too late to mean anything), no rollback.
    s = CommittedCause(s);
    base::LogWarning("job ", job_->id(),
                     ": no completion after COMMIT: ", s.ToString());
    CancelSession();
    streams_.clear();
  } else {
    s = Cause(s);
    base::LogWarning("job ", job_->id(), " failed: ", s.ToString());
    job_->SetPhase(v1::PHASE_ROLLING_BACK,
                   absl::StrCat("rolling back: ", s.message()));
    // Tell the destination why (best effort: the session may be gone), so
    // its job ends with the same cause rather than a lost peer.
    v1::TransferRequest abort;
    v1::PhaseMarker* m = abort.mutable_marker();
    m->set_kind(v1::PhaseMarker::ABORT);
    m->set_sequence(sequence_++);
    m->set_reason(base::ReasonName(base::ReasonOf(s)));
    m->set_message(std::string(s.message()));
    if (client_->Send(abort).ok()) {
      // Let the destination take the ABORT and end the session itself
      // before the data streams drop: a data stream that breaks first would
      // end its job as a lost peer instead.
      client_->AwaitEnd(kAbortGrace);
    }
    CancelSession();
    // COMMIT did not go out, but the decision to commit may be on record
    // (it is recorded during the stop-copy): the record says otherwise
    // before a device resumes, so that a restart does not hold them in
    // doubt. When it cannot, the devices stay stopped, as the record says,
    // and the destination's word decides: it never got COMMIT, so it
    // answers NOT_RUN, and they resume then.
    if (absl::Status t = TakeBackCommit(s); !t.ok()) {
      in_doubt = true;
      doubt = absl::StrCat(
          "COMMIT did not go out, but the journal could not record that (",
          t.message(),
          "): the devices stay stopped until the destination says it does "
          "not run them (",
          s.message(), ")");
      base::LogError("job ", job_->id(), ": ", doubt);
      streams_.clear();
    } else {
      Rollback();
    }
  }
  if (tracker_ != nullptr) {
    tracker_->Stop();
    tracker_->Close();
  }
  watch_.reset();
  job_->SetPayloadCopies(payload_copies());
  job_->SetCanceller(nullptr);
  // The data path is over: the job's buffers go back to the system (any
  // gRPC still holds go when it drops them), so that an agent holds buffers
  // for the jobs that run, not for every job it ever ran.
  pool_.reset();
  crew_.reset();
  // The next job in line may start.
  slot_.Reset();
  if (in_doubt) {
    AwaitOutcome(s, doubt);
    return;
  }
  if (on_done_) on_done_();
  job_->Finish(s);
  base::LogInfo("job ", job_->id(), " ended: ", PhaseName(job_->phase()));
}

absl::Status SourceJob::CommittedCause(const absl::Status& error) const {
  if (timed_out_) {
    return base::Error(
        absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
        absl::StrCat("no completion from the destination within ",
                     absl::FormatDuration(options_.phase_timeout),
                     " of COMMIT (", error.message(), ")"));
  }
  absl::Status cause = base::Annotate(
      StoppedAnswering(error) ? base::Annotate(error, kStoppedAnswering)
                              : error,
      "COMMIT went out, the destination's completion did not come");
  // A cancelled stream after COMMIT is not a cancel of the job (a cancel
  // changes nothing after COMMIT): the destination went away.
  if (base::ReasonOf(cause) == v1::ERROR_REASON_CANCELLED) {
    cause = base::WithReason(cause, v1::ERROR_REASON_PEER_UNAVAILABLE);
  }
  return cause;
}

void SourceJob::AwaitOutcome(const absl::Status& cause,
                             const std::string& reason) {
  InDoubtOptions o = options_.outcome;
  o.dial = options_.dial_control ? options_.dial_control : options_.dial;
  auto in_doubt = std::make_shared<InDoubt>(
      job_, devices_, cause,
      reason.empty() ? std::string(cause.message()) : reason, std::move(o),
      on_done_);
  {
    absl::MutexLock lock(&in_doubt_mu_);
    in_doubt_ = in_doubt;
    if (stop_resolving_) in_doubt->Stop();
  }
  if (in_doubt->Run()) {
    base::LogInfo("job ", job_->id(), " ended: ", PhaseName(job_->phase()));
  } else {
    base::LogWarning("job ", job_->id(),
                     ": left IN_DOUBT (the agent stops), devices stopped");
  }
}

absl::Status SourceJob::Resolve(v1::Resolution resolution,
                                const std::string& who) {
  std::shared_ptr<InDoubt> in_doubt;
  {
    absl::MutexLock lock(&in_doubt_mu_);
    in_doubt = in_doubt_;
  }
  if (in_doubt == nullptr) {
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_NOT_IN_DOUBT,
        absl::StrCat("job ", job_->id(), " is ", PhaseName(job_->phase()),
                     ", not IN_DOUBT: only a job whose outcome is in doubt "
                     "is resolved"));
  }
  return in_doubt->Resolve(resolution, who);
}

void SourceJob::StopResolving() {
  absl::MutexLock lock(&in_doubt_mu_);
  stop_resolving_ = true;
  if (in_doubt_ != nullptr) in_doubt_->Stop();
}

absl::Status SourceJob::Cause(const absl::Status& error) const {
  const v1::ErrorReason reason = base::ReasonOf(error);
  if ((reason == v1::ERROR_REASON_CANCELLED ||
       reason == v1::ERROR_REASON_PEER_UNAVAILABLE) &&
      !job_->cancel_requested()) {
    // A destination that gives up says why on the control stream before it
    // ends the session: a data stream it shut down may report that first,
    // as a cancel or as a connection it closed.
    if (absl::Status said = client_->DestinationAbort(kAbortGrace);
        !said.ok()) {
      return said;
    }
    // The destination cancels every stream when one fails; the failing data
    // stream carries the real cause.
    // One bound for all of them: a destination that is gone answers on
    // none, and a job of 16 streams must not wait 16 times.
    const absl::Time deadline = absl::Now() + absl::Seconds(2);
    for (const auto& sender : senders_) {
      absl::Status s = sender->Outcome(
          std::max(absl::ZeroDuration(), deadline - absl::Now()));
      v1::ErrorReason r = base::ReasonOf(s);
      if (!s.ok() && r != v1::ERROR_REASON_CANCELLED &&
          r != v1::ERROR_REASON_PEER_UNAVAILABLE) {
        return s;
      }
    }
  }
  if (job_->cancel_requested()) {
    return base::Error(
        absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
        absl::StrCat("cancelled by request (", error.message(), ")"));
  }
  if (timed_out_) {
    return base::Error(
        absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
        absl::StrCat("no progress for ",
                     absl::FormatDuration(options_.phase_timeout), " (",
                     error.message(), ")"));
  }
  if (StoppedAnswering(error)) return base::Annotate(error, kStoppedAnswering);
  return error;
}

absl::Status SourceJob::Send(v1::TransferRequest& request) {
  if (job_->cancel_requested()) {
    return absl::CancelledError("cancel requested");
  }
  return client_->Send(request);
}

absl::Status SourceJob::SendMarker(v1::PhaseMarker::Kind kind, uint32_t device,
                                   uint64_t total_bytes) {
  v1::TransferRequest req;
  v1::PhaseMarker* m = req.mutable_marker();
  m->set_kind(kind);
  m->set_device(device);
  m->set_total_bytes(total_bytes);
  m->set_sequence(sequence_);
  absl::Status s = Send(req);
  // A marker a cancel kept from going out takes no number: the ABORT that
  // follows must be the next one the destination sees.
  if (s.ok()) ++sequence_;
  return s;
}

absl::Status SourceJob::Transfer() {
  // Write-ahead: the job is on record before any device leaves RUNNING, so
  // that a restarted agent puts them back.
  if (absl::Status s = job_->BeforeAct("the devices leave RUNNING"); !s.ok()) {
    return s;
  }
  watch_ = std::make_unique<base::Watchdog>(options_.phase_timeout, [this] {
    timed_out_ = true;
    CancelSession();
  });
  if (tracker_ != nullptr) {
    if (absl::Status s = tracker_->Start(); !s.ok()) return s;
    std::vector<std::string> notices = tracker_->notices();
    for (const std::string& n : notices) job_->AddNotice(n);
    tracker_notices_ = notices.size();
  }
  bool any_precopy = false;
  for (bool p : precopy_) any_precopy = any_precopy || p;
  if (any_precopy) {
    if (absl::Status s = Precopy(); !s.ok()) return s;
  }
  return Switchover();
}

absl::Span<uint8_t> SourceJob::ReadSpan(absl::Span<uint8_t> buffer,
                                        bool stop_copy) {
  // The link idles from the stop until the first chunk is read and sealed:
  // the first chunks of stop-copy are small so that the wire starts at once,
  // and the reads of the later, full ones overlap with sending.
  static constexpr size_t kRamp[] = {64 << 10, 128 << 10, 256 << 10, 512 << 10};
  if (!stop_copy || stop_copy_chunks_ >= std::size(kRamp)) return buffer;
  return buffer.first(std::min(buffer.size(), kRamp[stop_copy_chunks_++]));
}

absl::Status SourceJob::SendAvailable(size_t index, bool stop_copy,
                                      uint64_t* sent, uint64_t budget) {
  Pass pass;
  pass.index = index;
  pass.stop_copy = stop_copy;
  pass.budget = budget;
  if (crew_ == nullptr) {
    Pump(pass, 0);
  } else {
    crew_->Run([this, &pass](size_t k) { Pump(pass, k); });
  }
  absl::MutexLock lock(&pass.mu);
  *sent += pass.sent;
  return pass.error;
}

void SourceJob::Pump(Pass& pass, size_t k) {
  const size_t index = pass.index;
  const bool stop_copy = pass.stop_copy;
  device::DataStream* stream = streams_[index].get();
  transfer::StreamSender* sender = senders_[k].get();
  for (;;) {
    // Each of the pass's threads holds one buffer at a time (its chunk's,
    // back when the write returned), so this does not wait; it fails once
    // the job is cancelled (Interrupt cancels the pool).
    absl::StatusOr<transfer::PooledBuffer> buffer = pool_->Acquire();
    if (!buffer.ok()) return pass.Fail(buffer.status());
    uint64_t offset = 0;
    size_t n = 0;
    bool corrupt = false;
    {
      // The device's stream is one serial byte stream: the read under the
      // pass's lock pairs the chunk with its offset. The destination writes
      // a device's chunks in offset order whatever stream brings them.
      absl::MutexLock lock(&pass.mu);
      if (pass.done) return;
      if (pass.here >= pass.budget) {
        pass.done = true;
        return;
      }
      absl::StatusOr<device::ReadResult> read =
          stream->Read(ReadSpan(buffer->writable(), stop_copy));
      if (!read.ok()) {
        // A fault, whatever its code (ENODEV, EBUSY, EIO): it fails the
        // job, in pre-copy too.
        return pass.FailLocked(DeviceError(base::Annotate(
            read.status(),
            absl::StrCat("reading state at offset ", offsets_[index]))));
      }
      switch (read->kind) {
        case device::ReadResult::Kind::kData:
          break;
        case device::ReadResult::Kind::kNoDataNow:
          // ENOMSG: the temporary end of pre-copy data ends this pass. In
          // STOP_COPY the stream ends only at EOF: a driver that says "no
          // data now" there would leave the stream unfinished.
          if (!stop_copy) {
            pass.done = true;
            return;
          }
          return pass.FailLocked(DeviceError(absl::InternalError(absl::StrCat(
              "device ", devices_[index]->name(), ": reading state at offset ",
              offsets_[index],
              ": temporary end of data (ENOMSG) in STOP_COPY, where only EOF "
              "ends the stream"))));
        case device::ReadResult::Kind::kEndOfStream:
          // In STOP_COPY the end of the stream; in PRE_COPY some drivers
          // return 0 at the temporary end, and more data comes later.
          pass.done = true;
          return;
      }
      n = read->bytes;
      if (n == 0) {  // an empty span: never here
        pass.done = true;
        return;
      }
      offset = offsets_[index];
      offsets_[index] += n;
      pass.here += n;
      corrupt = options_.corrupt_chunk_sequence == chunks_;
      if (corrupt) {
        base::LogWarning("job ", job_->id(), ": test fault: corrupted chunk ",
                         chunks_);
      }
      if (options_.drop_stream_after == chunks_) {
        base::LogWarning("job ", job_->id(),
                         ": test fault: dropping data stream ",
                         senders_.size());
        senders_.back()->Cancel();
      }
      ++chunks_;
      if (!first_send_.has_value()) first_send_ = absl::Now();
    }
    buffer->set_size(n);
    const transfer::ChunkHeader header =
        transfer::SealChunkHeader(index, 0, offset, buffer->contents());
    if (corrupt) buffer->data()[n / 2] ^= 0x5a;
    if (job_->cancel_requested()) {
      return pass.Fail(absl::CancelledError("cancel requested"));
    }
    // The write blocks while this stream's window is full: a slow
    // destination stalls this thread, and so the device reads.
    if (absl::Status s = sender->Send(header, *std::move(buffer)); !s.ok()) {
      return pass.Fail(s);
    }
    {
      absl::MutexLock lock(&pass.mu);
      pass.sent += n;
    }
    job_->AddDeviceBytes(index, n, stop_copy);
    watch_->Kick();
  }
}

absl::Status SourceJob::AckTimeout(
    const std::vector<uint32_t>& ack_devices) const {
  std::string missing;
  for (uint32_t d : ack_devices) {
    if (!client_->acked(d)) {
      missing = devices_[d]->name();
      break;
    }
  }
  return base::Error(
      absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_ACK_TIMEOUT,
      absl::StrCat(
          "destination did not acknowledge the initial data of device ",
          missing, " within ",
          absl::FormatDuration(options_.convergence.switchover_ack_timeout)));
}

absl::StatusOr<std::vector<uint32_t>> SourceJob::EnterPrecopy() {
  std::vector<uint32_t> ack_devices;
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (!precopy_[i]) continue;
    auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kPreCopy);
    if (!s.ok()) return s.status();
    if (*s == nullptr) {
      return base::Error(absl::StatusCode::kInternal,
                         v1::ERROR_REASON_DEVICE_ERROR,
                         absl::StrCat("device ", devices_[i]->name(),
                                      ": PRE_COPY opened no data stream"));
    }
    streams_[i] = *std::move(s);
    ack_devices.push_back(i);
  }
  return ack_devices;
}

absl::StatusOr<uint64_t> SourceJob::UpdateTotals() {
  uint64_t remaining = 0;
  for (size_t i = 0; i < devices_.size(); ++i) {
    absl::StatusOr<uint64_t> left = devices_[i]->GetStopCopySize();
    if (!left.ok()) return DeviceError(left.status());
    remaining += *left;
    // What this device will have moved in all, as far as we know now.
    job_->SetDeviceTotal(i, offsets_[i] + *left);
  }
  return remaining;
}

void SourceJob::ReportPrecopy(const IterationStats& stats, bool converged,
                              absl::Duration pass_time, uint64_t held_after) {
  v1::PrecopyProgress progress;
  progress.set_iteration(iteration_);
  progress.set_remaining_bytes(stats.remaining_bytes);
  const double secs = absl::ToDoubleSeconds(pass_time);
  progress.set_dirty_rate_bytes_per_second(secs > 0 ? held_after / secs : 0);
  progress.set_bandwidth_bytes_per_second(stats.bandwidth);
  absl::Duration expected = ExpectedDowntime(stats);
  if (expected != absl::InfiniteDuration()) {
    *progress.mutable_expected_downtime() = ToProto(expected);
  }
  progress.set_converged(converged);
  job_->SetPrecopy(progress);
}

absl::Status SourceJob::Precopy() {
  const ConvergencePolicy& policy = options_.convergence;
  job_->SetPhase(v1::PHASE_PRE_COPY, "");
  absl::StatusOr<std::vector<uint32_t>> entered = EnterPrecopy();
  if (!entered.ok()) return entered.status();
  const std::vector<uint32_t>& ack_devices = *entered;

  absl::Time start = absl::Now();
  absl::Time acks_requested = start;
  absl::Time quiet_since = start;
  Meter meter;
  for (;;) {
    if (job_->cancel_requested()) {
      return absl::CancelledError("cancel requested");
    }
    absl::Time iter_start = absl::Now();
    uint64_t sent = 0;
    uint64_t dirty_after = 0;
    for (size_t i = 0; i < devices_.size(); ++i) {
      if (!precopy_[i]) continue;
      // This pass moves what the device holds now, no more.
      absl::StatusOr<device::PrecopyInfo> at_start =
          streams_[i]->GetPrecopyInfo();
      if (!at_start.ok()) return DeviceError(at_start.status());
      uint64_t budget = at_start->initial_bytes + at_start->dirty_bytes;
      absl::Time t0 = absl::Now();
      uint64_t before = sent;
      if (absl::Status s = SendAvailable(i, /*stop_copy=*/false, &sent, budget);
          !s.ok()) {
        return s;
      }
      meter.Add(sent - before, absl::Now() - t0);
      absl::StatusOr<device::PrecopyInfo> info = streams_[i]->GetPrecopyInfo();
      if (!info.ok()) return DeviceError(info.status());
      dirty_after += info->dirty_bytes + info->initial_bytes;
      if (info->initial_bytes == 0 && !initial_end_sent_[i]) {
        if (absl::Status s =
                SendMarker(v1::PhaseMarker::INITIAL_DATA_END, i, offsets_[i]);
            !s.ok()) {
          return s;
        }
        initial_end_sent_[i] = true;
        acks_requested = absl::Now();
      }
    }
    absl::Duration iter_time = absl::Now() - iter_start;
    if (sent > 0) ++iteration_;
    CollectDirty(/*final=*/false);

    IterationStats stats;
    stats.iteration = iteration_;
    absl::StatusOr<uint64_t> remaining = UpdateTotals();
    if (!remaining.ok()) return remaining.status();
    stats.remaining_bytes = *remaining;
    stats.bandwidth = policy.bandwidth_override > 0
                          ? static_cast<double>(policy.bandwidth_override)
                          : meter.rate();
    stats.all_acked = true;
    for (uint32_t d : ack_devices) {
      stats.all_acked = stats.all_acked && client_->acked(d);
    }
    stats.elapsed = absl::Now() - start;
    // A pass that found nothing is idle only once the devices stayed quiet
    // for a while: a running workload may just not have dirtied anything yet.
    if (sent > 0) {
      quiet_since = absl::Now();
    } else if (absl::Now() - quiet_since < kQuietBeforeIdle) {
      absl::SleepFor(absl::Milliseconds(5));
    } else {
      stats.idle = true;
    }

    std::string why;
    Verdict verdict = Decide(policy, stats, &why);
    ReportPrecopy(stats, verdict == Verdict::kSwitchOver, iter_time,
                  dirty_after);

    switch (verdict) {
      case Verdict::kSwitchOver:
        base::LogInfo("job ", job_->id(), ": ", why);
        return absl::OkStatus();
      case Verdict::kSwitchOverForced:
        job_->AddNotice(absl::StrCat(why, "; switching over anyway"));
        return absl::OkStatus();
      case Verdict::kFail:
        return base::Error(absl::StatusCode::kFailedPrecondition,
                           v1::ERROR_REASON_NOT_CONVERGED, why);
      case Verdict::kContinue:
        break;
    }
    if (!stats.all_acked) {
      // Keep the wait for acknowledgements bounded even while data flows.
      if (absl::Now() - acks_requested > policy.switchover_ack_timeout) {
        return AckTimeout(ack_devices);
      }
      if (sent == 0) {
        // Nothing new to send: wait for the acknowledgements, not a spin.
        absl::Status s = client_->AwaitAcks(ack_devices, absl::Milliseconds(5));
        if (!s.ok() && base::ReasonOf(s) != v1::ERROR_REASON_ACK_TIMEOUT) {
          return s;
        }
        watch_->Kick();
      }
    }
  }
}

absl::Status SourceJob::AwaitInitialData() {
  std::vector<uint32_t> ack_devices;
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (precopy_[i]) ack_devices.push_back(i);
  }
  if (ack_devices.empty()) return absl::OkStatus();
  absl::Status s = client_->AwaitAcks(
      ack_devices, options_.convergence.switchover_ack_timeout);
  if (base::ReasonOf(s) == v1::ERROR_REASON_ACK_TIMEOUT) {
    return AckTimeout(ack_devices);
  }
  return s;
}

absl::Status SourceJob::StopDevices(bool all_p2p) {
  if (all_p2p) {
    // Barrier: every device stops initiating P2P DMA before any one stops,
    // so no device DMAs into a peer that is already stopped.
    for (size_t i = 0; i < devices_.size(); ++i) {
      MigState target =
          precopy_[i] ? MigState::kPreCopyP2P : MigState::kRunningP2P;
      auto s = MoveDevice(job_.get(), i, devices_[i], target);
      if (!s.ok()) return s.status();
    }
  }
  for (size_t i = 0; i < devices_.size(); ++i) {
    auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kStopCopy);
    if (!s.ok()) return s.status();
    if (*s != nullptr) {
      streams_[i] = *std::move(s);
    } else if (streams_[i] == nullptr) {
      return base::Error(absl::StatusCode::kInternal,
                         v1::ERROR_REASON_DEVICE_ERROR,
                         absl::StrCat("device ", devices_[i]->name(),
                                      ": STOP_COPY opened no data stream"));
    }
  }
  return absl::OkStatus();
}

absl::Status SourceJob::SendStopCopy() {
  if (absl::Status s = SendMarker(v1::PhaseMarker::STOP_COPY, 0, 0); !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < devices_.size(); ++i) {
    absl::Time t0 = absl::Now();
    uint64_t sent = 0;
    if (absl::Status s = SendAvailable(i, /*stop_copy=*/true, &sent); !s.ok()) {
      return s;
    }
    if (absl::Status s =
            SendMarker(v1::PhaseMarker::DEVICE_END, i, offsets_[i]);
        !s.ok()) {
      return s;
    }
    stop_copy_time_[i] = absl::Now() - t0;
    job_->SetDeviceTotal(i, offsets_[i]);
  }
  return absl::OkStatus();
}

absl::Status SourceJob::Switchover() {
  // Never stop a device before the destination loaded every device's initial
  // data: that is what keeps the stop-copy (and the downtime) short.
  if (absl::Status s = AwaitInitialData(); !s.ok()) return s;
  bool all_p2p = true;
  for (device::Device* d : devices_) {
    absl::StatusOr<vfio::MigFlags> flags = d->GetFlags();
    if (!flags.ok()) return DeviceError(flags.status());
    if ((*flags & vfio::kMigP2P) == 0) all_p2p = false;
  }

  // Write-ahead, overlapped with the stop-copy transfer: once COMMIT may
  // have gone out, the destination may run the devices, and neither this job
  // nor a restarted agent resumes them here without the destination's word.
  // The decision is recorded once the devices stopped, while the rest of the
  // state goes out, and COMMIT waits for it. A job that fails before COMMIT
  // went out takes it back before its devices resume (Run).
  CommitRecorder decision(job_.get());
  job_->SetPhase(v1::PHASE_STOP_COPY, "");
  absl::Time downtime_start = absl::Now();
  if (absl::Status s = StopDevices(all_p2p); !s.ok()) return s;
  // The devices stopped: nothing is dirtied after this collection.
  CollectDirty(/*final=*/true);
  decision.Record();
  watch_->Kick();
  if (absl::Status s = SendStopCopy(); !s.ok()) return s;
  // Every byte is on the wire before the destination is told to commit.
  if (absl::Status s = CloseDataStreams(); !s.ok()) return s;
  if (absl::Status s = decision.Wait(); !s.ok()) return s;
  // A cancel that came before COMMIT still rolls back; one that comes after
  // this changes nothing.
  if (job_->cancel_requested()) {
    return absl::CancelledError("cancel requested");
  }
  committed_ = true;
  v1::TransferRequest commit;
  commit.mutable_marker()->set_kind(v1::PhaseMarker::COMMIT);
  commit.mutable_marker()->set_sequence(sequence_++);
  if (absl::Status s = client_->Send(commit); !s.ok()) return s;
  absl::Time transfer_end = absl::Now();

  // The destination loads and resumes every device before completing.
  absl::StatusOr<v1::Completion> completion = client_->Finish();
  if (!completion.ok()) return completion.status();
  // The downtime ends when the destination said its devices run, not when
  // the call finished closing after that. That answer can even arrive before
  // the thread sending COMMIT got back from the send.
  const absl::Time done = std::min(client_->completion_received(), absl::Now());
  transfer_end = std::min(transfer_end, done);
  job_->SetTransferTime(transfer_end - first_send_.value_or(transfer_end));
  job_->SetDowntime(done - downtime_start);
  RecordDowntimeBreakdown(*job_, done - downtime_start,
                          transfer_end - downtime_start, stop_copy_time_,
                          *completion);
  return absl::OkStatus();
}

void SourceJob::Interrupt() {
  // Wakes the job thread where it waits (a buffer, acknowledgements); it
  // notices the request and fails with CANCELLED, which its ABORT marker
  // tells the destination. The streams stay open for that. A request that
  // comes after COMMIT changes nothing: the destination may already run the
  // devices, so the source waits for its answer (and asks for it when it
  // does not come: IN_DOUBT). A send blocked on a destination that stopped
  // reading ends at the phase timeout, as CANCELLED before COMMIT.
  if (pool_ != nullptr) pool_->Cancel(absl::CancelledError("cancel requested"));
  client_->Interrupt();
}

void SourceJob::CancelSession() {
  client_->Cancel();
  for (const auto& sender : senders_) sender->Cancel();
  if (pool_ != nullptr) pool_->Cancel();
}

absl::Status SourceJob::CloseDataStreams() {
  for (const auto& sender : senders_) {
    if (absl::Status s = sender->Close(); !s.ok()) return s;
    watch_->Kick();
  }
  return absl::OkStatus();
}

uint64_t SourceJob::payload_copies() const {
  uint64_t n = client_->copies().copies();
  return n;
}

void SourceJob::CollectDirty(bool final) {
  if (tracker_ == nullptr) return;
  tracker_->Collect(iteration_, final);
  // A report can fail long after logging started (EOPNOTSUPP on kernels
  // without the IOVA-bitmap helpers): say so in the job as soon as it does.
  std::vector<std::string> notices = tracker_->notices();
  for (size_t i = tracker_notices_; i < notices.size(); ++i) {
    job_->AddNotice(notices[i]);
  }
  tracker_notices_ = notices.size();
}

void SourceJob::Finalize() {
  // The destination runs: stopping here is off the downtime path.
  for (size_t i = 0; i < devices_.size(); ++i) {
    auto s = MoveDevice(job_.get(), i, devices_[i], MigState::kStop);
    if (!s.ok()) {
      base::LogWarning("job ", job_->id(), ": ", s.status().ToString());
    }
  }
  streams_.clear();
}

absl::Status SourceJob::TakeBackCommit(const absl::Status& cause) {
  if (!job_->Snapshot().committed()) return absl::OkStatus();
  return job_->TakeBackCommit(cause.message());
}

void SourceJob::Rollback() {
  streams_.clear();
  for (size_t i = 0; i < devices_.size(); ++i) {
    absl::Status s = RestoreRunning(job_.get(), i, devices_[i]);
    if (!s.ok()) {
      base::LogError("job ", job_->id(), ": device ", devices_[i]->name(),
                     " could not be restored: ", s.ToString());
    }
  }
}

}  // namespace migd::migration
