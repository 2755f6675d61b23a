// SourceJob against an in-process destination: a fake TransferService that
// takes the session as an agent does (accepts the headers, acknowledges each
// INITIAL_DATA_END, answers COMMIT with a Completion) and loads what it is
// sent into an emulated device, so a test can drive a whole job through its
// device faults and see the cause it ends with, on both sides.

#include "migd/migration/source_job.h"

#include <errno.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "migd/device/device.h"
#include "migd/device/emulated_device.h"
#include "migd/device/vfio_errors.h"
#include "migd/migration/device_steps.h"
#include "migd/migration/job.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::migration {
namespace {

using device::ReadResult;
using vfio::MigState;

constexpr uint64_t kStateBytes = 1 << 20;
constexpr uint32_t kChunkBytes = 64 << 10;
constexpr absl::Duration kJobDeadline = absl::Seconds(60);

// The destination side of one session, loading device 0 into `device`.
class FakeDestination final : public v1::TransferService::Service {
 public:
  explicit FakeDestination(device::Device* device) : device_(device) {}

  grpc::Status Transfer(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::TransferResponse, v1::TransferRequest>*
          stream) override {
    {
      // Before accepting: the data streams attach once this one is accepted.
      absl::MutexLock l(&mu_);
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
        case v1::PhaseMarker::INITIAL_DATA_END:
          resp.mutable_switchover_ack()->set_device(m.device());
          stream->Write(resp);
          break;
        case v1::PhaseMarker::COMMIT: {
          absl::MutexLock l(&mu_);
          load_.reset();
          auto stop = device_->SetState(MigState::kStop);
          if (!stop.ok()) {
            return grpc::Status(grpc::StatusCode::DATA_LOSS,
                                std::string(stop.status().message()));
          }
          resp.mutable_completion()->add_devices()->set_device(0);
          stream->Write(resp);
          return grpc::Status::OK;
        }
        case v1::PhaseMarker::ABORT:
          return grpc::Status(grpc::StatusCode::ABORTED, m.message());
        default:
          break;
      }
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "source went away");
  }

  grpc::Status TransferData(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::TransferResponse, v1::TransferRequest>*
          stream) override {
    if (grpc::Status s = Accept(stream); !s.ok()) return s;
    v1::TransferRequest req;
    while (stream->Read(&req)) {
      if (!req.has_chunk()) continue;
      // One data stream: chunks arrive in stream order.
      absl::MutexLock l(&mu_);
      const std::string& data = req.chunk().data();
      if (load_ == nullptr || req.chunk().offset() != loaded_) {
        return grpc::Status(grpc::StatusCode::INTERNAL, "chunk out of order");
      }
      iovec v = {const_cast<char*>(data.data()), data.size()};
      if (absl::Status s = load_->WriteAll(absl::MakeConstSpan(&v, 1));
          !s.ok()) {
        return grpc::Status(grpc::StatusCode::INTERNAL,
                            std::string(s.message()));
      }
      loaded_ += data.size();
    }
    return grpc::Status::OK;
  }

  std::vector<v1::PhaseMarker> markers() const {
    absl::MutexLock l(&mu_);
    return markers_;
  }

  bool Saw(v1::PhaseMarker::Kind kind) const {
    for (const v1::PhaseMarker& m : markers()) {
      if (m.kind() == kind) return true;
    }
    return false;
  }

 private:
  static grpc::Status Accept(
      grpc::ServerReaderWriter<v1::TransferResponse, v1::TransferRequest>*
          stream) {
    v1::TransferRequest req;
    if (!stream->Read(&req) || !req.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no header");
    }
    v1::TransferResponse resp;
    resp.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_1);
    stream->Write(resp);
    return grpc::Status::OK;
  }

  device::Device* const device_;
  mutable absl::Mutex mu_;
  std::unique_ptr<device::DataStream> load_ ABSL_GUARDED_BY(mu_);
  uint64_t loaded_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::PhaseMarker> markers_ ABSL_GUARDED_BY(mu_);
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
  // Runs a job migrating `source` (named emu0) into dst0 to its end and
  // returns its record.
  v1::Migration Migrate(device::Device* source) {
    destination_ = std::make_unique<FakeDestination>(dst_.get());
    grpc::ServerBuilder builder;
    builder.RegisterService(destination_.get());
    server_ = builder.BuildAndStart();
    job_ = std::make_shared<Job>(
        "job-1", v1::ROLE_SOURCE, "fake-destination",
        std::vector<DevicePair>{{source->name(), dst_->name()}});
    SourceJobOptions options;
    options.destination = "in-process";
    options.token = "token";
    grpc::Server* server = server_.get();
    options.dial = [server] {
      return server->InProcessChannel(grpc::ChannelArguments());
    };
    options.chunk_bytes = kChunkBytes;
    options.phase_timeout = absl::Seconds(20);
    options.convergence.max_iterations = 1000;
    // Long enough for any pass, short enough that a job stuck waiting for
    // an acknowledgement that cannot come fails the test quickly.
    options.convergence.switchover_ack_timeout = absl::Seconds(5);
    auto sj = SourceJob::Start(job_, {source}, options, nullptr);
    EXPECT_TRUE(sj.ok()) << sj.status();
    if (!sj.ok()) return job_->Snapshot();
    uint64_t seen = Job::kNoVersion;
    const absl::Time deadline = absl::Now() + kJobDeadline;
    while (!job_->terminal() && absl::Now() < deadline) {
      v1::MigrationEvent event;
      (void)job_->WaitForChange(&seen, absl::Seconds(1), &event);
    }
    EXPECT_TRUE(job_->terminal()) << "the job did not end in time";
    if (!job_->terminal()) job_->RequestCancel();
    sj->reset();  // joins the job's thread
    return job_->Snapshot();
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }

  std::unique_ptr<device::EmulatedDevice> dst_ = Emulated("dst0", 99);
  std::unique_ptr<FakeDestination> destination_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<Job> job_;
};

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
