// SourceJob against an in-process destination: a fake TransferService that
// takes the session as an agent does (accepts the headers, acknowledges each
// INITIAL_DATA_END, answers COMMIT with a Completion) and loads what it is
// sent into an emulated device, so a test can drive a whole job through its
// device faults and see the cause it ends with, on both sides.

#include "migd/migration/source_job.h"

#include <errno.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "migd/device/device.h"
#include "migd/device/emulated_device.h"
#include "migd/device/vfio_errors.h"
#include "migd/migration/device_steps.h"
#include "migd/migration/job.h"
#include "migd/migration/transfer_gate.h"
#include "migd/transfer/data_frame.h"
#include "migd/transfer/data_listener.h"
#include "migd/transfer/data_receiver.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::migration {
namespace {

using ::google::protobuf::util::TimeUtil;

using device::ReadResult;
using vfio::MigState;

constexpr uint64_t kStateBytes = 1 << 20;
constexpr uint32_t kChunkBytes = 64 << 10;
constexpr absl::Duration kJobDeadline = absl::Seconds(60);

// What the fake destination does on COMMIT.
enum class AtCommit {
  kComplete,      // load, answer Completion
  kRunThenDrop,   // load and run the device, then drop the call unanswered
  kDropUnloaded,  // drop the call unanswered, the device never loaded
};

// The names of this process's threads (/proc/self/task/*/comm).
std::vector<std::string> ThreadNames() {
  std::vector<std::string> names;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) names.push_back(name);
  }
  return names;
}

// The destination side of one session, loading device 0 into `device`.
class FakeDestination final : public v1::TransferService::Service {
 public:
  explicit FakeDestination(device::Device* device,
                           AtCommit at_commit = AtCommit::kComplete)
      : device_(device), at_commit_(at_commit) {}

  // What GetOutcome answers from now on.
  void SetOutcome(v1::Outcome outcome) {
    absl::MutexLock l(&mu_);
    outcome_ = outcome;
  }
  int outcome_calls() const {
    absl::MutexLock l(&mu_);
    return outcome_calls_;
  }

  grpc::Status GetOutcome(grpc::ServerContext*,
                          const v1::GetOutcomeRequest* request,
                          v1::GetOutcomeResponse* response) override {
    absl::MutexLock l(&mu_);
    ++outcome_calls_;
    if (request->job_id() != "job-1") {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "which job?");
    }
    response->set_outcome(outcome_);
    response->set_known(true);
    return grpc::Status::OK;
  }

  // Sessions from now on are refused with `message` (PERMISSION_DENIED).
  void Refuse(const std::string& message) {
    absl::MutexLock l(&mu_);
    refusal_ = message;
  }
  int sessions() const {
    absl::MutexLock l(&mu_);
    return sessions_;
  }

  grpc::Status Transfer(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::TransferResponse, v1::TransferRequest>*
          stream) override {
    {
      // Before accepting: the data streams attach once this one is accepted.
      absl::MutexLock l(&mu_);
      ++sessions_;
      if (!refusal_.empty()) {
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, refusal_);
      }
      auto load = device_->SetState(MigState::kResuming);
      if (!load.ok()) {
        return grpc::Status(grpc::StatusCode::INTERNAL,
                            std::string(load.status().message()));
      }
      load_ = *std::move(load);
    }
    if (grpc::Status s = Accept(stream); !s.ok()) return s;
    v1::TransferRequest req;
    while (stream->Read(&req)) {
      if (!req.has_marker()) continue;
      const v1::PhaseMarker& m = req.marker();
      {
        absl::MutexLock l(&mu_);
        markers_.push_back(m);
      }
      v1::TransferResponse resp;
      switch (m.kind()) {
        case v1::PhaseMarker::INITIAL_DATA_END: {
          // The source sent every chunk of the initial data and waits for
          // this answer: its threads are all there.
          std::vector<std::string> names = ThreadNames();
          absl::MutexLock l(&mu_);
          threads_at_initial_end_ = std::move(names);
        }
          resp.mutable_switchover_ack()->set_device(m.device());
          stream->Write(resp);
          break;
        case v1::PhaseMarker::COMMIT: {
          absl::MutexLock l(&mu_);
          if (at_commit_ == AtCommit::kDropUnloaded) {
            return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "destination went away");
          }
          load_.reset();
          auto stop = device_->SetState(MigState::kStop);
          if (!stop.ok()) {
            return grpc::Status(grpc::StatusCode::DATA_LOSS,
                                std::string(stop.status().message()));
          }
          if (at_commit_ == AtCommit::kRunThenDrop) {
            // The devices run here; the Completion never leaves.
            (void)device_->SetState(MigState::kRunning);
            return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "destination went away");
          }
          resp.mutable_completion()->add_devices()->set_device(0);
          stream->Write(resp);
          return grpc::Status::OK;
        }
        case v1::PhaseMarker::ABORT:
          EndSession();
          return grpc::Status(grpc::StatusCode::ABORTED, m.message());
        default:
          break;
      }
    }
    EndSession();
    return grpc::Status(grpc::StatusCode::CANCELLED, "source went away");
  }

  // A data stream, on the data channel: the header, then the chunks into
  // the load session in stream order (a chunk waits for the ones before it,
  // which other streams carry), then the verdict.
  void ServeData(transfer::DataConnection& conn) {
    v1::SessionHeader header;
    if (!transfer::ReadMessage(conn, &header).ok()) return;
    v1::TransferResponse accepted;
    accepted.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_2);
    if (!transfer::WriteMessage(conn, accepted).ok()) return;
    {
      absl::MutexLock l(&mu_);
      ++data_streams_;
    }
    transfer::ReceiveOptions options;
    options.max_chunk_bytes = header.max_chunk_bytes();
    absl::Status s = transfer::ReceiveDataStream(
        conn, options, [this](transfer::DecodedRequest chunk) {
          absl::MutexLock l(&mu_);
          const uint64_t offset = chunk.header().offset;
          auto turn = [this, offset]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return ended_ || load_ == nullptr || loaded_ >= offset;
          };
          mu_.AwaitWithTimeout(absl::Condition(&turn), kJobDeadline);
          if (ended_) return absl::CancelledError("session ended");
          if (load_ == nullptr || offset != loaded_) {
            return absl::InternalError("chunk out of order");
          }
          if (absl::Status s = load_->WriteAll(chunk.payload()); !s.ok()) {
            return s;
          }
          loaded_ += chunk.payload_size();
          return absl::OkStatus();
        });
    (void)transfer::WriteMessage(conn, transfer::StatusMessage(s));
  }

  void set_data_port(uint16_t port) { data_port_ = port; }

  std::vector<v1::PhaseMarker> markers() const {
    absl::MutexLock l(&mu_);
    return markers_;
  }

  // The names of this process's threads when the first INITIAL_DATA_END
  // came (the source's among them), and how many data streams came.
  std::vector<std::string> threads_at_initial_end() const {
    absl::MutexLock l(&mu_);
    return threads_at_initial_end_;
  }
  int data_streams() const {
    absl::MutexLock l(&mu_);
    return data_streams_;
  }

  bool Saw(v1::PhaseMarker::Kind kind) const {
    for (const v1::PhaseMarker& m : markers()) {
      if (m.kind() == kind) return true;
    }
    return false;
  }

 private:
  // The session ended without COMMIT: chunks waiting for their turn give up.
  void EndSession() {
    absl::MutexLock l(&mu_);
    ended_ = true;
  }

  grpc::Status Accept(grpc::ServerReaderWriter<v1::TransferResponse,
                                               v1::TransferRequest>* stream) {
    v1::TransferRequest req;
    if (!stream->Read(&req) || !req.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no header");
    }
    v1::TransferResponse resp;
    resp.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_2);
    resp.mutable_accepted()->set_data_port(data_port_.load());
    stream->Write(resp);
    return grpc::Status::OK;
  }

  device::Device* const device_;
  const AtCommit at_commit_;
  mutable absl::Mutex mu_;
  v1::Outcome outcome_ ABSL_GUARDED_BY(mu_) = v1::OUTCOME_UNKNOWN;
  int outcome_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int sessions_ ABSL_GUARDED_BY(mu_) = 0;
  std::string refusal_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<device::DataStream> load_ ABSL_GUARDED_BY(mu_);
  uint64_t loaded_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::PhaseMarker> markers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> threads_at_initial_end_ ABSL_GUARDED_BY(mu_);
  int data_streams_ ABSL_GUARDED_BY(mu_) = 0;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint16_t> data_port_{0};
};

// What a FaultyDevice does differently from the device it wraps.
struct Faults {
  // SetState(target) fails with `status` (the device does not move).
  std::optional<MigState> fail_target;
  absl::Status fail_status;
  // VFIO_MIG_GET_PRECOPY_INFO fails with this status when not OK.
  absl::Status precopy_info_error;
  // In PRE_COPY states, the read after each read that returned data says
  // "no data now" (ENOMSG): a driver that hands out its state a piece at a
  // time, so every pre-copy pass ends early.
  bool choppy_precopy = false;
};

class FaultyDevice final : public device::Device {
 public:
  FaultyDevice(device::Device* inner, Faults faults)
      : inner_(inner), faults_(std::move(faults)) {}

  const std::string& name() const override { return inner_->name(); }
  std::string kind() const override { return inner_->kind(); }
  absl::StatusOr<vfio::MigFlags> GetFlags() override {
    return inner_->GetFlags();
  }
  absl::StatusOr<MigState> GetState() override { return inner_->GetState(); }
  absl::StatusOr<std::unique_ptr<device::DataStream>> SetState(
      MigState target) override {
    if (faults_.fail_target == target) return faults_.fail_status;
    auto s = inner_->SetState(target);
    if (!s.ok() || *s == nullptr) return s;
    return std::make_unique<Stream>(*std::move(s), this);
  }
  absl::StatusOr<uint64_t> GetStopCopySize() override {
    return inner_->GetStopCopySize();
  }
  absl::Status StartDmaLogging(
      uint64_t page_size,
      const std::vector<device::IovaRange>& ranges) override {
    return inner_->StartDmaLogging(page_size, ranges);
  }
  absl::Status ReportDmaLogging(uint64_t iova, uint64_t length,
                                uint64_t page_size,
                                std::vector<uint64_t>* bitmap) override {
    return inner_->ReportDmaLogging(iova, length, page_size, bitmap);
  }
  absl::Status StopDmaLogging() override { return inner_->StopDmaLogging(); }
  absl::Status Reset() override { return inner_->Reset(); }
  absl::StatusOr<std::string> StateDigest() override {
    return inner_->StateDigest();
  }

 private:
  class Stream final : public device::DataStream {
   public:
    Stream(std::unique_ptr<device::DataStream> inner, FaultyDevice* device)
        : inner_(std::move(inner)), device_(device) {}
    absl::StatusOr<ReadResult> Read(absl::Span<uint8_t> buf) override {
      const Faults& f = device_->faults_;
      absl::StatusOr<MigState> state = device_->GetState();
      const bool precopy = state.ok() && (*state == MigState::kPreCopy ||
                                          *state == MigState::kPreCopyP2P);
      if (f.choppy_precopy && precopy && owe_no_data_) {
        owe_no_data_ = false;
        return ReadResult::NoDataNow();
      }
      absl::StatusOr<ReadResult> r = inner_->Read(buf);
      owe_no_data_ = r.ok() && r->kind == ReadResult::Kind::kData;
      return r;
    }
    absl::StatusOr<size_t> Write(absl::Span<const uint8_t> data) override {
      return inner_->Write(data);
    }
    absl::StatusOr<device::PrecopyInfo> GetPrecopyInfo() override {
      if (!device_->faults_.precopy_info_error.ok()) {
        return device_->faults_.precopy_info_error;
      }
      return inner_->GetPrecopyInfo();
    }

   private:
    std::unique_ptr<device::DataStream> inner_;
    FaultyDevice* device_;
    bool owe_no_data_ = false;
  };

  device::Device* const inner_;
  const Faults faults_;
};

std::unique_ptr<device::EmulatedDevice> Emulated(
    const std::string& name, uint64_t seed,
    std::optional<device::ReadFault> fail_read = std::nullopt) {
  device::EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = kStateBytes;
  c.seed = seed;
  c.flags = vfio::kMigStopCopy | vfio::kMigP2P | vfio::kMigPreCopy;
  c.fail_read = fail_read;
  auto d = device::EmulatedDevice::Create(c);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *std::move(d) : nullptr;
}

class SourceJobTest : public ::testing::Test {
 protected:
  // Starts a job migrating `source` (named emu0) into dst0, the destination
  // doing `at_commit` on COMMIT.
  std::unique_ptr<SourceJob> Start(device::Device* source,
                                   AtCommit at_commit = AtCommit::kComplete) {
    destination_ = std::make_unique<FakeDestination>(dst_.get(), at_commit);
    grpc::ServerBuilder builder;
    builder.RegisterService(destination_.get());
    server_ = builder.BuildAndStart();
    transfer::DataListenerOptions data;
    data.address = "127.0.0.1:0";
    FakeDestination* fake = destination_.get();
    auto listener = transfer::DataListener::Start(
        data, [fake](transfer::DataConnection& conn, const absl::Status&) {
          fake->ServeData(conn);
        });
    EXPECT_TRUE(listener.ok()) << listener.status();
    if (!listener.ok()) return nullptr;
    data_listener_ = *std::move(listener);
    destination_->set_data_port(data_listener_->port());
    job_ = std::make_shared<Job>(
        "job-1", v1::ROLE_SOURCE, "fake-destination",
        std::vector<DevicePair>{{source->name(), dst_->name()}}, observers_);
    SourceJobOptions options;
    // The control stream is in-process; the data channel is on loopback.
    options.destination = "127.0.0.1:1";
    options.token = "token";
    grpc::Server* server = server_.get();
    options.dial = [server] {
      return server->InProcessChannel(grpc::ChannelArguments());
    };
    options.chunk_bytes = kChunkBytes;
    options.streams = streams_;
    options.drop_stream_after = drop_stream_after_;
    options.gate = gate_;
    options.phase_timeout = absl::Seconds(20);
    options.convergence.max_iterations = 1000;
    // Long enough for any pass, short enough that a job stuck waiting for
    // an acknowledgement that cannot come fails the test quickly.
    options.convergence.switchover_ack_timeout = absl::Seconds(5);
    options.outcome.first_retry = absl::Milliseconds(10);
    options.outcome.max_retry = absl::Milliseconds(50);
    auto sj =
        SourceJob::Start(job_, {source}, options, [this] { ++released_; });
    EXPECT_TRUE(sj.ok()) << sj.status();
    return sj.ok() ? *std::move(sj) : nullptr;
  }

  // Waits until the job satisfies `done`; false at the deadline.
  bool WaitFor(const std::function<bool(const v1::Migration&)>& done) {
    uint64_t seen = Job::kNoVersion;
    const absl::Time deadline = absl::Now() + kJobDeadline;
    while (absl::Now() < deadline) {
      if (done(job_->Snapshot())) return true;
      v1::MigrationEvent event;
      (void)job_->WaitForChange(&seen, absl::Milliseconds(100), &event);
    }
    return done(job_->Snapshot());
  }

  // Waits for the job's end, then for its thread.
  v1::Migration AwaitEnd(std::unique_ptr<SourceJob> sj) {
    EXPECT_TRUE(WaitFor([](const v1::Migration& m) {
      return IsTerminal(m.phase());
    })) << "the job did not end in time";
    if (!job_->terminal()) job_->RequestCancel();
    if (sj != nullptr) sj->StopResolving();
    sj.reset();  // joins the job's thread
    return job_->Snapshot();
  }

  // Runs a job migrating `source` (named emu0) into dst0 to its end and
  // returns its record.
  v1::Migration Migrate(device::Device* source) {
    std::unique_ptr<SourceJob> sj = Start(source);
    if (sj == nullptr) return job_->Snapshot();
    return AwaitEnd(std::move(sj));
  }

  void TearDown() override {
    data_listener_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }

  std::unique_ptr<device::EmulatedDevice> dst_ = Emulated("dst0", 99);
  JobObservers observers_;  // the job's, from Start on
  std::unique_ptr<FakeDestination> destination_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<transfer::DataListener> data_listener_;
  std::shared_ptr<Job> job_;
  std::atomic<int> released_{0};
  // The job's data streams, and the fault that drops the last one.
  uint32_t streams_ = 1;
  std::optional<uint64_t> drop_stream_after_;
  TransferGate* gate_ = nullptr;  // none: no limit
};

// Every state the record says device `name` passed through, in order.
std::vector<std::string> StatesOf(const v1::Migration& m,
                                  const std::string& name) {
  std::vector<std::string> out;
  for (const v1::StateChange& c : m.state_changes()) {
    if (c.device() == name) out.push_back(v1::DeviceState_Name(c.state()));
  }
  return out;
}

bool HasNotice(const v1::Migration& m, absl::string_view text) {
  for (const std::string& n : m.notices()) {
    if (absl::StrContains(n, text)) return true;
  }
  return false;
}

constexpr char kRunning[] = "DEVICE_STATE_RUNNING";

bool InDoubtAndAsked(const v1::Migration& m) {
  return m.phase() == v1::PHASE_IN_DOUBT && m.in_doubt().attempts() > 0;
}

// The destination ran the devices and went away before its Completion: the
// source does not roll back (both would run the VM) but holds its devices
// stopped, IN_DOUBT, until the destination says it runs them; then the job
// succeeded and its devices stop for good, never having run again.
TEST_F(SourceJobTest, NoCompletionAfterCommitIsInDoubtUntilTheDestinationRuns) {
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get(), AtCommit::kRunThenDrop);
  ASSERT_NE(sj, nullptr);
  ASSERT_TRUE(WaitFor(InDoubtAndAsked)) << job_->Snapshot().DebugString();
  v1::Migration doubt = job_->Snapshot();
  EXPECT_TRUE(doubt.committed());
  EXPECT_EQ(src->GetState().value(), MigState::kStopCopy);
  EXPECT_EQ(released_, 0) << "devices released while in doubt";
  EXPECT_TRUE(absl::StrContains(doubt.in_doubt().last_answer(), "UNKNOWN"))
      << doubt.in_doubt().last_answer();
  EXPECT_TRUE(absl::StrContains(doubt.in_doubt().advice(), "migctl resolve"));

  destination_->SetOutcome(v1::OUTCOME_RUNNING_HERE);
  const v1::Migration m = AwaitEnd(std::move(sj));
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << m.failure().message();
  EXPECT_EQ(src->GetState().value(), MigState::kStop);
  EXPECT_EQ(dst_->GetState().value(), MigState::kRunning);
  EXPECT_EQ(dst_->StateDigest().value(), src->StateDigest().value());
  const std::vector<std::string> states = StatesOf(m, "emu0");
  EXPECT_EQ(std::count(states.begin(), states.end(), kRunning), 0)
      << absl::StrJoin(states, " ");
  EXPECT_TRUE(absl::StrContains(m.in_doubt().resolution(), "RUNNING_HERE"))
      << m.in_doubt().resolution();
  EXPECT_EQ(released_, 1);
}

// The destination went away on COMMIT without loading, and says so: the
// source resumes its devices and the job fails with why it was in doubt.
TEST_F(SourceJobTest, NoCompletionAfterCommitResumesOnlyOnNotRun) {
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get(), AtCommit::kDropUnloaded);
  ASSERT_NE(sj, nullptr);
  ASSERT_TRUE(WaitFor(InDoubtAndAsked)) << job_->Snapshot().DebugString();
  EXPECT_EQ(src->GetState().value(), MigState::kStopCopy);
  {
    const std::vector<std::string> states = StatesOf(job_->Snapshot(), "emu0");
    EXPECT_EQ(std::count(states.begin(), states.end(), kRunning), 0)
        << absl::StrJoin(states, " ");
  }

  destination_->SetOutcome(v1::OUTCOME_NOT_RUN);
  const v1::Migration m = AwaitEnd(std::move(sj));
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(base::ReasonName(m.failure().reason()),
            base::ReasonName(v1::ERROR_REASON_PEER_UNAVAILABLE))
      << m.failure().message();
  EXPECT_TRUE(absl::StrContains(m.failure().message(), "destination went away"))
      << m.failure().message();
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  // RUNNING again only at the very end, once the destination said NOT_RUN.
  const std::vector<std::string> states = StatesOf(m, "emu0");
  ASSERT_FALSE(states.empty());
  EXPECT_EQ(states.back(), kRunning);
  EXPECT_EQ(std::count(states.begin(), states.end(), kRunning), 1)
      << absl::StrJoin(states, " ");
  EXPECT_TRUE(absl::StrContains(m.in_doubt().resolution(), "NOT_RUN"))
      << m.in_doubt().resolution();
  EXPECT_EQ(released_, 1);
}

// A destination that never settles it: the source keeps asking, its devices
// stopped, until an operator decides.
TEST_F(SourceJobTest, AnOperatorDecidesAJobTheDestinationCannotSettle) {
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get(), AtCommit::kDropUnloaded);
  ASSERT_NE(sj, nullptr);
  ASSERT_TRUE(WaitFor([](const v1::Migration& m) {
    return m.phase() == v1::PHASE_IN_DOUBT && m.in_doubt().attempts() >= 3;
  })) << job_->Snapshot().DebugString();
  EXPECT_EQ(src->GetState().value(), MigState::kStopCopy);
  EXPECT_EQ(job_->Snapshot().phase(), v1::PHASE_IN_DOUBT);

  absl::Status s = sj->Resolve(v1::RESOLUTION_SOURCE, "spiffe://x/operator");
  ASSERT_TRUE(s.ok()) << s;
  const v1::Migration m = AwaitEnd(std::move(sj));
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  EXPECT_TRUE(HasNotice(m, "operator spiffe://x/operator chose the source"));
  EXPECT_TRUE(
      absl::StrContains(m.in_doubt().resolution(), "spiffe://x/operator"));
}

TEST_F(SourceJobTest, AResolutionAfterTheEndIsRefused) {
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get(), AtCommit::kDropUnloaded);
  ASSERT_NE(sj, nullptr);
  ASSERT_TRUE(WaitFor(InDoubtAndAsked));
  ASSERT_TRUE(sj->Resolve(v1::RESOLUTION_DESTINATION, "op").ok());
  EXPECT_EQ(src->GetState().value(), MigState::kStop);
  absl::Status again = sj->Resolve(v1::RESOLUTION_SOURCE, "op");
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
  EXPECT_EQ(base::ReasonName(base::ReasonOf(again)),
            base::ReasonName(v1::ERROR_REASON_NOT_IN_DOUBT));
  EXPECT_EQ(src->GetState().value(), MigState::kStop);
  const v1::Migration m = AwaitEnd(std::move(sj));
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED));
}

// A job that succeeded was never in doubt: nothing to resolve.
TEST_F(SourceJobTest, AJobNotInDoubtIsNotResolved) {
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get());
  ASSERT_NE(sj, nullptr);
  ASSERT_TRUE(
      WaitFor([](const v1::Migration& m) { return IsTerminal(m.phase()); }));
  absl::Status s = sj->Resolve(v1::RESOLUTION_SOURCE, "op");
  EXPECT_EQ(base::ReasonName(base::ReasonOf(s)),
            base::ReasonName(v1::ERROR_REASON_NOT_IN_DOUBT))
      << s;
  EXPECT_EQ(AwaitEnd(std::move(sj)).phase(), v1::PHASE_SUCCEEDED);
  EXPECT_EQ(src->GetState().value(), MigState::kStop);
  EXPECT_EQ(destination_->outcome_calls(), 0);
}

// Agent shutdown: the job stops asking and stays IN_DOUBT, its devices
// stopped and held, for recovery at the next start.
TEST_F(SourceJobTest, StoppingLeavesTheJobInDoubtWithItsDevicesStopped) {
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get(), AtCommit::kDropUnloaded);
  ASSERT_NE(sj, nullptr);
  ASSERT_TRUE(WaitFor(InDoubtAndAsked));
  sj->StopResolving();
  sj.reset();  // the job's thread ends
  EXPECT_EQ(job_->Snapshot().phase(), v1::PHASE_IN_DOUBT);
  EXPECT_EQ(src->GetState().value(), MigState::kStopCopy);
  EXPECT_EQ(released_, 0);
}

// ---- The decision to commit, recorded during the stop-copy ---------------

// Follows a job as its journal does, noting each write-ahead point, and
// whether device 0 ever ran again while the last one recorded said the job
// committed. `on_commit` runs in the write-ahead point of the decision to
// commit (without the job's lock: it may call the job); `fail` says which
// write-ahead points fail, as a journal that cannot write.
class CommitWatcher final : public JobObserver {
 public:
  struct Act {
    std::string what;
    bool committed = false;
    v1::DeviceState state = v1::DeviceState();
  };

  std::function<void()> on_commit;
  std::function<bool(absl::string_view what)> fail;

  absl::Status BeforeAct(const v1::Migration& record, uint64_t,
                         absl::string_view what) override {
    const bool failing = fail && fail(what);
    {
      absl::MutexLock l(&mu_);
      acts_.push_back(
          {std::string(what), record.committed(), record.devices(0).state()});
      if (!failing) recorded_committed_ = record.committed();
    }
    if (failing) return absl::ResourceExhaustedError("journal full");
    if (record.committed() && on_commit) on_commit();
    return absl::OkStatus();
  }
  void AfterChange(const v1::Migration& record, uint64_t,
                   absl::string_view) override {
    absl::MutexLock l(&mu_);
    const v1::DeviceState state = record.devices(0).state();
    stopped_ = stopped_ || state == v1::DEVICE_STATE_STOP_COPY;
    if (stopped_ && state == v1::DEVICE_STATE_RUNNING && recorded_committed_) {
      resumed_while_committed_ = true;
    }
  }

  std::vector<Act> acts() const {
    absl::MutexLock l(&mu_);
    return acts_;
  }
  bool resumed_while_committed() const {
    absl::MutexLock l(&mu_);
    return resumed_while_committed_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<Act> acts_ ABSL_GUARDED_BY(mu_);
  bool recorded_committed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool resumed_while_committed_ ABSL_GUARDED_BY(mu_) = false;
};

constexpr char kCommitAct[] = "COMMIT goes out";

// The decision to commit is recorded once the devices stopped, while the
// state goes out, and COMMIT waits for it: a job that succeeds recorded it
// with its devices in STOP_COPY, before COMMIT.
TEST_F(SourceJobTest, TheDecisionToCommitIsRecordedWithTheDevicesStopped) {
  auto watcher = std::make_shared<CommitWatcher>();
  observers_ = {watcher};
  auto src = Emulated("emu0", 1);
  const v1::Migration m = Migrate(src.get());
  ASSERT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << m.failure().message();
  EXPECT_TRUE(m.committed());
  const std::vector<CommitWatcher::Act> acts = watcher->acts();
  ASSERT_EQ(acts.size(), 2u);  // the devices leave RUNNING; COMMIT
  EXPECT_EQ(acts[1].what, kCommitAct);
  EXPECT_TRUE(acts[1].committed);
  EXPECT_EQ(v1::DeviceState_Name(acts[1].state),
            v1::DeviceState_Name(v1::DEVICE_STATE_STOP_COPY));
  EXPECT_TRUE(destination_->Saw(v1::PhaseMarker::COMMIT));
}

// The job fails after its decision to commit was recorded but before COMMIT
// went out (a cancel comes in while the decision is recorded): it rolls back,
// and the record says it did not commit before the device runs again, so
// that a restart would not hold it in doubt.
TEST_F(SourceJobTest, ARollbackAfterTheDecisionToCommitTakesItBackFirst) {
  auto watcher = std::make_shared<CommitWatcher>();
  watcher->on_commit = [this] { job_->RequestCancel(); };
  observers_ = {watcher};
  auto src = Emulated("emu0", 1);
  const v1::Migration m = Migrate(src.get());
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_CANCELLED))
      << m.failure().message();
  EXPECT_FALSE(m.committed());
  EXPECT_FALSE(destination_->Saw(v1::PhaseMarker::COMMIT));
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  EXPECT_FALSE(watcher->resumed_while_committed())
      << "the device ran again while the record said the job committed";
  const std::vector<CommitWatcher::Act> acts = watcher->acts();
  ASSERT_EQ(acts.size(), 3u);
  EXPECT_EQ(acts[1].what, kCommitAct);
  EXPECT_TRUE(acts[1].committed);
  EXPECT_FALSE(acts[2].committed) << acts[2].what;
  EXPECT_EQ(v1::DeviceState_Name(acts[2].state),
            v1::DeviceState_Name(v1::DEVICE_STATE_STOP_COPY))
      << "taken back after the device moved";
  EXPECT_EQ(released_, 1);
}

// The decision to commit cannot be recorded: COMMIT does not go out, the job
// fails with why and its device runs again.
TEST_F(SourceJobTest, ADecisionToCommitThatCannotBeRecordedRollsBack) {
  auto watcher = std::make_shared<CommitWatcher>();
  watcher->fail = [](absl::string_view what) { return what == kCommitAct; };
  observers_ = {watcher};
  auto src = Emulated("emu0", 1);
  const v1::Migration m = Migrate(src.get());
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_TRUE(absl::StrContains(m.failure().message(), "journal full"))
      << m.failure().message();
  EXPECT_FALSE(m.committed());
  EXPECT_FALSE(destination_->Saw(v1::PhaseMarker::COMMIT));
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  EXPECT_FALSE(watcher->resumed_while_committed());
}

// The decision to commit was recorded, COMMIT did not go out, and taking it
// back cannot be recorded: the device stays stopped, as the record says,
// until the destination (which never got COMMIT) says it does not run it.
TEST_F(SourceJobTest, ACommitThatCannotBeTakenBackWaitsForTheDestination) {
  auto watcher = std::make_shared<CommitWatcher>();
  watcher->on_commit = [this] { job_->RequestCancel(); };
  watcher->fail = [](absl::string_view what) {
    return absl::StrContains(what, "COMMIT not sent");
  };
  observers_ = {watcher};
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get());
  ASSERT_NE(sj, nullptr);
  ASSERT_TRUE(WaitFor(InDoubtAndAsked)) << job_->Snapshot().DebugString();
  EXPECT_EQ(src->GetState().value(), MigState::kStopCopy);
  EXPECT_TRUE(job_->Snapshot().committed());
  EXPECT_TRUE(absl::StrContains(job_->Snapshot().in_doubt().reason(),
                                "could not record"))
      << job_->Snapshot().in_doubt().reason();
  EXPECT_FALSE(destination_->Saw(v1::PhaseMarker::COMMIT));

  destination_->SetOutcome(v1::OUTCOME_NOT_RUN);
  const v1::Migration m = AwaitEnd(std::move(sj));
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_CANCELLED))
      << m.failure().message();
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  EXPECT_EQ(released_, 1);
}

// A device that goes away in pre-copy (read() fails with ENODEV) fails the
// job there, as a device error naming it: not the temporary end of the
// pass, after which pre-copy would go on, switch over and fail later (or
// wait for an acknowledgement that never comes).
TEST_F(SourceJobTest, ADeviceGoneInPreCopyFailsTheJobAsADeviceError) {
  auto src = Emulated("emu0", 1, device::ReadFault{300 << 10, ENODEV});
  const v1::Migration m = Migrate(src.get());
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(base::ReasonName(m.failure().reason()),
            base::ReasonName(v1::ERROR_REASON_DEVICE_ERROR))
      << m.failure().message();
  EXPECT_TRUE(absl::StrContains(m.failure().message(), "device emu0"))
      << m.failure().message();
  EXPECT_TRUE(absl::StrContains(m.failure().message(), "No such device"))
      << m.failure().message();
  // Failed in pre-copy: the destination never heard of a switchover, and
  // was told why.
  EXPECT_FALSE(destination_->Saw(v1::PhaseMarker::STOP_COPY));
  ASSERT_TRUE(destination_->Saw(v1::PhaseMarker::ABORT));
  EXPECT_EQ(destination_->markers().back().reason(),
            base::ReasonName(v1::ERROR_REASON_DEVICE_ERROR));
  // The source device runs again.
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
}

// ENOMSG ends a pass, not the job: with a driver that says "no data now"
// after every chunk, pre-copy goes on pass after pass and the destination
// ends with exactly the source's state.
TEST_F(SourceJobTest, TheTemporaryEndOfPreCopyDataEndsOnlyThePass) {
  auto src = Emulated("emu0", 1);
  FaultyDevice choppy(src.get(), Faults{.choppy_precopy = true});
  const v1::Migration m = Migrate(&choppy);
  ASSERT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << m.failure().message();
  // Each pass moved one chunk of the initial data.
  EXPECT_GE(m.precopy().iteration(), kStateBytes / kChunkBytes);
  EXPECT_EQ(dst_->StateDigest().value(), src->StateDigest().value());
}

// A device call failing with a code that also means "peer unreachable" at the
// gRPC edge (EBUSY is kUnavailable) is still the device's fault.
TEST_F(SourceJobTest, ABusyDeviceIsADeviceErrorNotAnUnavailablePeer) {
  auto src = Emulated("emu0", 1);
  Faults f;
  f.precopy_info_error = device::VfioErrnoError(
      "emu0", "VFIO_MIG_GET_PRECOPY_INFO", device::VfioOp::kPrecopyInfo, EBUSY);
  ASSERT_EQ(f.precopy_info_error.code(), absl::StatusCode::kUnavailable);
  FaultyDevice busy(src.get(), std::move(f));
  const v1::Migration m = Migrate(&busy);
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(base::ReasonName(m.failure().reason()),
            base::ReasonName(v1::ERROR_REASON_DEVICE_ERROR))
      << m.failure().message();
  EXPECT_TRUE(absl::StrContains(m.failure().message(), "device emu0"))
      << m.failure().message();
}

TEST_F(SourceJobTest, ABusyArcIsADeviceErrorNotAnUnavailablePeer) {
  auto src = Emulated("emu0", 1);
  Faults f;
  f.fail_target = MigState::kPreCopy;
  f.fail_status = device::VfioArcError("emu0", MigState::kRunning,
                                       MigState::kPreCopy, EBUSY);
  FaultyDevice busy(src.get(), std::move(f));
  const v1::Migration m = Migrate(&busy);
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(base::ReasonName(m.failure().reason()),
            base::ReasonName(v1::ERROR_REASON_DEVICE_ERROR))
      << m.failure().message();
  EXPECT_TRUE(absl::StrContains(m.failure().message(), "RUNNING -> PRE_COPY"))
      << m.failure().message();
}

// An agent with one transfer slot, which another job holds (other_): a job
// started now waits in line.
class SourceJobInLineTest : public SourceJobTest {
 protected:
  void SetUp() override {
    gate_ = &line_;
    other_ = line_.TryTake();
    ASSERT_TRUE(other_.has_value());
  }

  TransferGate line_{1};
  std::optional<TransferGate::Slot> other_;
};

// Every transfer slot is taken: the job waits in line, CONNECTING, without
// opening its session or touching its device; it starts when a slot comes
// back, and gives that slot back when it ends.
TEST_F(SourceJobInLineTest, WaitsInLineForATransferSlotThenStarts) {
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get());
  ASSERT_NE(sj, nullptr);
  v1::Migration m = job_->Snapshot();
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_CONNECTING));
  EXPECT_TRUE(m.queue().waiting());
  EXPECT_EQ(m.queue().ahead(), 0u);
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(destination_->sessions(), 0);
  EXPECT_EQ(v1::Phase_Name(job_->phase()),
            v1::Phase_Name(v1::PHASE_CONNECTING));
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  EXPECT_EQ(line_.waiting(), 1u);

  other_->Reset();
  m = AwaitEnd(std::move(sj));
  ASSERT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << m.failure().message();
  EXPECT_EQ(dst_->StateDigest().value(), src->StateDigest().value());
  EXPECT_FALSE(m.queue().waiting());
  EXPECT_GE(TimeUtil::DurationToMilliseconds(m.queue().waited()), 100);
  EXPECT_EQ(destination_->sessions(), 1);
  EXPECT_EQ(line_.held(), 0u);
  EXPECT_EQ(line_.waiting(), 0u);
}

// A slot free at once: the session opens before Start returns, and the
// record shows no wait.
TEST_F(SourceJobInLineTest, AFreeSlotStartsTheJobAtOnce) {
  other_->Reset();  // the other job ended
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get());
  ASSERT_NE(sj, nullptr);
  EXPECT_EQ(destination_->sessions(), 1);
  const v1::Migration m = AwaitEnd(std::move(sj));
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED));
  EXPECT_FALSE(m.has_queue());
  EXPECT_EQ(line_.held(), 0u);
}

TEST_F(SourceJobInLineTest, ACancelWhileWaitingEndsTheJobWithItsDeviceRunning) {
  auto src = Emulated("emu0", 1);
  const std::string before = src->StateDigest().value();
  std::unique_ptr<SourceJob> sj = Start(src.get());
  ASSERT_NE(sj, nullptr);
  job_->RequestCancel();
  const v1::Migration m = AwaitEnd(std::move(sj));
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_CANCELLED));
  EXPECT_TRUE(
      absl::StrContains(m.failure().message(), "waiting for a transfer slot"))
      << m.failure().message();
  EXPECT_FALSE(m.queue().waiting());
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  EXPECT_EQ(src->StateDigest().value(), before);
  EXPECT_EQ(released_.load(), 1);
  EXPECT_EQ(destination_->sessions(), 0);
  EXPECT_EQ(line_.waiting(), 0u);
  EXPECT_EQ(line_.held(), 1u);  // the other job's
}

// The session's opening fails once the job has its slot (here the
// destination refuses it, as it refuses a token that expired meanwhile):
// the job fails with the destination's word and the wait it came after,
// its device untouched, and the slot goes back.
TEST_F(SourceJobInLineTest, ASessionRefusedAfterTheWaitFailsTheJobAndSaysSo) {
  auto src = Emulated("emu0", 1);
  const std::string before = src->StateDigest().value();
  std::unique_ptr<SourceJob> sj = Start(src.get());
  ASSERT_NE(sj, nullptr);
  destination_->Refuse("transfer token expired");
  other_->Reset();
  const v1::Migration m = AwaitEnd(std::move(sj));
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_TRUE(absl::StrContains(m.failure().message(), "token expired"))
      << m.failure().message();
  EXPECT_TRUE(absl::StrContains(m.failure().message(), "for a transfer slot"))
      << m.failure().message();
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  EXPECT_EQ(src->StateDigest().value(), before);
  EXPECT_EQ(released_.load(), 1);
  EXPECT_EQ(line_.held(), 0u);
}

// The agent drops a job still in line (no cancel came): it leaves the line
// and ends, its device untouched.
TEST_F(SourceJobInLineTest, AJobDroppedWhileWaitingLeavesTheLine) {
  auto src = Emulated("emu0", 1);
  std::unique_ptr<SourceJob> sj = Start(src.get());
  ASSERT_NE(sj, nullptr);
  sj.reset();  // joins the job's thread
  EXPECT_EQ(v1::Phase_Name(job_->phase()), v1::Phase_Name(v1::PHASE_CANCELLED));
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  EXPECT_EQ(line_.waiting(), 0u);
  EXPECT_EQ(released_.load(), 1);
}

// Jobs of several data streams.
class SourceJobStreamsTest : public SourceJobTest,
                             public ::testing::WithParamInterface<uint32_t> {
 protected:
  void SetUp() override { streams_ = GetParam(); }
};

// Each data stream has a thread of its own ("src-stream") that reads its
// next chunk from the device, seals and sends it: no chunk crosses a thread
// on its way out, none waits for the job's thread, and the state arrives
// whole over every stream, in order, whichever stream brings a chunk.
TEST_P(SourceJobStreamsTest, SendsEachStreamOnAThreadOfItsOwn) {
  auto src = Emulated("emu0", 1);
  const v1::Migration m = Migrate(src.get());
  ASSERT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << m.failure().message();
  EXPECT_EQ(dst_->StateDigest().value(), src->StateDigest().value());
  EXPECT_EQ(destination_->data_streams(), static_cast<int>(GetParam()));
  const std::vector<std::string> threads =
      destination_->threads_at_initial_end();
  ASSERT_FALSE(threads.empty()) << "no INITIAL_DATA_END came";
  EXPECT_EQ(std::count(threads.begin(), threads.end(), "src-stream"),
            static_cast<int>(GetParam()))
      << absl::StrJoin(threads, ", ");
  EXPECT_EQ(std::count(threads.begin(), threads.end(), "src-send"), 0)
      << absl::StrJoin(threads, ", ");
}

// One of the streams fails midway (its connection shut down, as a network
// failure would): the job's next write to it fails the job, which tells the
// destination why, and the device runs again with its state.
TEST_P(SourceJobStreamsTest, AStreamThatFailsFailsTheJobAndTheDeviceRuns) {
  auto src = Emulated("emu0", 1);
  const std::string before = src->StateDigest().value();
  drop_stream_after_ = 5;
  const v1::Migration m = Migrate(src.get());
  // The fault shuts the connection down here, which reads as CANCELLED
  // (data_connection.h), where a real failure reads PEER_UNAVAILABLE: the
  // phase says which, this test that the job ended without its state.
  EXPECT_NE(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED));
  EXPECT_TRUE(absl::StrContains(m.failure().message(), "data channel"))
      << m.failure().message();
  EXPECT_TRUE(destination_->Saw(v1::PhaseMarker::ABORT));
  EXPECT_EQ(src->GetState().value(), MigState::kRunning);
  EXPECT_EQ(src->StateDigest().value(), before);
  EXPECT_EQ(released_.load(), 1);
}

INSTANTIATE_TEST_SUITE_P(Streams, SourceJobStreamsTest,
                         ::testing::Values(2u, 4u), [](const auto& info) {
                           return absl::StrCat(info.param, "Streams");
                         });

TEST(DeviceError, AttachesDeviceErrorWhateverTheCode) {
  for (absl::StatusCode code :
       {absl::StatusCode::kUnavailable, absl::StatusCode::kNotFound,
        absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kDataLoss,
        absl::StatusCode::kInternal}) {
    absl::Status s = DeviceError(absl::Status(code, "device emu0: x"));
    EXPECT_EQ(s.code(), code);
    EXPECT_EQ(s.message(), "device emu0: x");
    EXPECT_EQ(base::ReasonName(base::ReasonOf(s)),
              base::ReasonName(v1::ERROR_REASON_DEVICE_ERROR));
  }
}

TEST(DeviceError, KeepsAReasonAlreadyAttachedAndOk) {
  absl::Status s = DeviceError(base::Error(absl::StatusCode::kDataLoss,
                                           v1::ERROR_REASON_STATE_REJECTED,
                                           "device emu0: bad state"));
  EXPECT_EQ(base::ReasonName(base::ReasonOf(s)),
            base::ReasonName(v1::ERROR_REASON_STATE_REJECTED));
  EXPECT_TRUE(DeviceError(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace migd::migration
