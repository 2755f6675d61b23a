// DestinationJob without gRPC: the session's messages are fed directly, with
// emulated devices on both ends.

#include "migd/migration/destination_job.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "migd/device/emulated_device.h"
#include "migd/migration/commit.h"
#include "migd/transfer/chunk_codec.h"

namespace migd::migration {
namespace {

constexpr uint64_t kStateBytes = 64 << 10;

// The stream canceller of a session fed by hand: there is no call to cancel.
void IgnoreCancel(const absl::Status&) {}

std::unique_ptr<device::EmulatedDevice> Device(const std::string& name,
                                               uint64_t seed) {
  device::EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = kStateBytes;
  c.seed = seed;
  auto d = device::EmulatedDevice::Create(c);
  EXPECT_TRUE(d.ok()) << d.status();
  return *std::move(d);
}

// The source device's whole stop-copy stream.
std::string SaveStream(device::EmulatedDevice* source) {
  auto stream = source->SetState(vfio::MigState::kStopCopy);
  EXPECT_TRUE(stream.ok() && *stream != nullptr);
  std::string out;
  std::vector<uint8_t> buf(4096);
  for (;;) {
    auto n = (*stream)->Read(absl::MakeSpan(buf));
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok() || n->kind != device::ReadResult::Kind::kData) break;
    out.append(reinterpret_cast<char*>(buf.data()), n->bytes);
  }
  return out;
}

transfer::DecodedRequest Chunk(const std::string& stream, uint64_t offset,
                               uint64_t length, uint64_t sequence) {
  std::string bytes = stream.substr(offset, length);
  transfer::ChunkHeader h = transfer::SealChunkHeader(
      0, sequence, offset,
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()),
                          bytes.size()));
  grpc::ByteBuffer buffer =
      transfer::EncodeChunk(h, grpc::Slice(bytes.data(), bytes.size()));
  auto decoded = transfer::DecodeRequest(buffer, nullptr);
  EXPECT_TRUE(decoded.ok()) << decoded.status();
  return *std::move(decoded);
}

v1::PhaseMarker Marker(v1::PhaseMarker::Kind kind, uint64_t sequence,
                       uint64_t total) {
  v1::PhaseMarker m;
  m.set_kind(kind);
  m.set_sequence(sequence);
  m.set_device(0);
  m.set_total_bytes(total);
  return m;
}

// The control stream's header of a session for device src0 -> dst0 of job
// `job_id`, presenting `token`.
v1::SessionHeader ControlHeader(const std::string& job_id,
                                const std::string& token,
                                uint32_t data_streams) {
  v1::SessionHeader h;
  h.set_job_id(job_id);
  h.set_transfer_token(token);
  h.set_protocol_version(v1::PROTOCOL_VERSION_2);
  h.set_stream_index(0);
  h.set_num_streams(data_streams);
  v1::DeviceDescriptor* d = h.add_devices();
  d->set_index(0);
  d->set_source_device("src0");
  d->set_destination_device("dst0");
  d->set_kind("emulated");
  return h;
}

// Attaches a session for device src0 -> dst0 to `dj` (job `job_id`) from
// `identity`: the control stream, then `data_streams` data streams.
void AttachSession(DestinationJob& dj, const std::string& job_id,
                   uint32_t data_streams, const std::string& identity = "") {
  v1::SessionHeader h = ControlHeader(job_id, dj.token(), data_streams);
  ASSERT_TRUE(dj.Attach(h, identity, IgnoreCancel).ok());
  h.clear_devices();
  for (uint32_t k = 1; k <= data_streams; ++k) {
    h.set_stream_index(k);
    ASSERT_TRUE(dj.AttachData(h, identity, IgnoreCancel).ok());
  }
}

// Waits until `dj` holds `bytes` of payload not yet in its device (chunks
// other threads handed it); false after 20 s.
bool WaitUntilHeld(const DestinationJob& dj, uint64_t bytes) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (dj.held_bytes() != bytes) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

class DestinationJobTest : public testing::Test {
 protected:
  void SetUp() override {
    source_ = Device("src0", 1);
    destination_ = Device("dst0", 2);
    job_ = std::make_shared<Job>("j1", v1::ROLE_DESTINATION, "source",
                                 std::vector<DevicePair>{{"dst0", "src0"}});
    auto dj = DestinationJob::Prepare(job_, {destination_.get()}, nullptr,
                                      uint64_t{16} << 20, absl::Seconds(5));
    ASSERT_TRUE(dj.ok()) << dj.status();
    dj_ = *std::move(dj);
    ASSERT_NO_FATAL_FAILURE(AttachSession(*dj_, "j1", 1));
  }

  std::unique_ptr<device::EmulatedDevice> source_, destination_;
  std::shared_ptr<Job> job_;
  std::shared_ptr<DestinationJob> dj_;
};

// With data streams apart from the control stream, bytes past a device's
// initial data (a next pre-copy pass) can reach the device before the
// INITIAL_DATA_END marker is handled: the acknowledgement is still due.
TEST_F(DestinationJobTest, InitialDataEndAcksWhenLaterDataAlreadyArrived) {
  std::string stream = SaveStream(source_.get());
  ASSERT_TRUE(dj_->OnChunk(Chunk(stream, 0, 1000, 0)).ok());
  ASSERT_TRUE(dj_->OnChunk(Chunk(stream, 1000, 1000, 1)).ok());
  absl::Status s =
      dj_->OnMarker(Marker(v1::PhaseMarker::INITIAL_DATA_END, 0, 1000));
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(job_->Snapshot().devices(0).initial_data_acked());
}

// Chunks that arrive out of order are written in order, and the loaded state
// is exactly the source's: the early one waits for its turn.
TEST_F(DestinationJobTest, OutOfOrderChunksLoadTheSourceState) {
  std::string stream = SaveStream(source_.get());
  const uint64_t half = stream.size() / 2;
  absl::Status early;
  std::thread waiter([&] {
    early = dj_->OnChunk(Chunk(stream, half, stream.size() - half, 0));
  });
  ASSERT_TRUE(WaitUntilHeld(*dj_, stream.size() - half));
  EXPECT_EQ(job_->Snapshot().devices(0).bytes_done(), 0u);  // held back
  ASSERT_TRUE(dj_->OnChunk(Chunk(stream, 0, half, 1)).ok());
  waiter.join();
  ASSERT_TRUE(early.ok()) << early;
  EXPECT_EQ(job_->Snapshot().devices(0).bytes_done(), stream.size());
  ASSERT_TRUE(dj_->OnMarker(Marker(v1::PhaseMarker::STOP_COPY, 0, 0)).ok());
  ASSERT_TRUE(
      dj_->OnMarker(Marker(v1::PhaseMarker::DEVICE_END, 1, stream.size()))
          .ok());
  ASSERT_TRUE(dj_->OnMarker(Marker(v1::PhaseMarker::COMMIT, 2, 0)).ok());
  auto completion = dj_->Complete();
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_EQ(*destination_->StateDigest(), *source_->StateDigest());
  // Both chunks were held at once.
  EXPECT_EQ(job_->Snapshot().reorder_peak_bytes(), stream.size());
}

// A chunk waiting for its turn while a stream fails ends at once, with the
// failure's cause: it does not wait for bytes that will never come.
TEST_F(DestinationJobTest, AWaitingChunkEndsWithTheCauseOfAFailedStream) {
  std::string stream = SaveStream(source_.get());
  absl::Status waited;
  std::thread waiter(
      [&] { waited = dj_->OnChunk(Chunk(stream, 1000, 1000, 0)); });
  ASSERT_TRUE(WaitUntilHeld(*dj_, 1000));
  dj_->Abort(base::Error(absl::StatusCode::kDataLoss,
                         v1::ERROR_REASON_STREAM_CORRUPTED,
                         "data stream 2: chunk 0 fails its CRC32C"),
             /*from_stream=*/2);
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kDataLoss) << waited;
  EXPECT_EQ(base::ReasonOf(waited), v1::ERROR_REASON_STREAM_CORRUPTED);
  EXPECT_TRUE(absl::StrContains(waited.message(), "CRC32C")) << waited;
  EXPECT_EQ(dj_->held_bytes(), 0u);
}

// Bytes that overlap what a device already holds are a broken stream, found
// as soon as the chunk's turn comes (or is past).
TEST_F(DestinationJobTest, AChunkOverlappingWrittenBytesIsDataLoss) {
  std::string stream = SaveStream(source_.get());
  absl::Status waited;
  std::thread waiter(
      [&] { waited = dj_->OnChunk(Chunk(stream, 1500, 500, 0)); });
  ASSERT_TRUE(WaitUntilHeld(*dj_, 500));
  ASSERT_TRUE(dj_->OnChunk(Chunk(stream, 0, 2000, 0)).ok());
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kDataLoss) << waited;
  EXPECT_EQ(base::ReasonOf(waited), v1::ERROR_REASON_STREAM_CORRUPTED);
  absl::Status repeat = dj_->OnChunk(Chunk(stream, 0, 1000, 1));
  EXPECT_EQ(repeat.code(), absl::StatusCode::kDataLoss) << repeat;
  EXPECT_TRUE(absl::StrContains(repeat.message(), "overlaps")) << repeat;
}

// A chunk past its device's end (DEVICE_END) is refused, and one waiting
// for bytes past the end stops waiting when the end comes.
TEST_F(DestinationJobTest, AChunkPastItsDevicesEndIsDataLoss) {
  std::string stream = SaveStream(source_.get());
  absl::Status waited;
  std::thread waiter(
      [&] { waited = dj_->OnChunk(Chunk(stream, 2000, 100, 0)); });
  ASSERT_TRUE(WaitUntilHeld(*dj_, 100));
  ASSERT_TRUE(dj_->OnChunk(Chunk(stream, 0, 1000, 0)).ok());
  ASSERT_TRUE(dj_->OnMarker(Marker(v1::PhaseMarker::DEVICE_END, 0, 1000)).ok());
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kDataLoss) << waited;
  EXPECT_TRUE(absl::StrContains(waited.message(), "runs past")) << waited;
  absl::Status after = dj_->OnChunk(Chunk(stream, 1000, 10, 1));
  EXPECT_EQ(after.code(), absl::StatusCode::kDataLoss) << after;
}

// A chunk whose predecessor never comes waits no longer than the job's wait
// timeout.
TEST(DestinationJobStreams, AChunkWaitsForItsTurnAtMostTheWaitTimeout) {
  auto source = Device("src0", 1);
  auto destination = Device("dst0", 2);
  auto job = std::make_shared<Job>("j3", v1::ROLE_DESTINATION, "source",
                                   std::vector<DevicePair>{{"dst0", "src0"}});
  auto dj =
      DestinationJob::Prepare(job, {destination.get()}, nullptr,
                              uint64_t{16} << 20, absl::Milliseconds(200));
  ASSERT_TRUE(dj.ok()) << dj.status();
  ASSERT_NO_FATAL_FAILURE(AttachSession(**dj, "j3", 2));
  std::string stream = SaveStream(source.get());
  const absl::Time t0 = absl::Now();
  absl::Status s = (*dj)->OnChunk(Chunk(stream, 1000, 1000, 0));
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(200));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ(base::ReasonOf(s), v1::ERROR_REASON_TIMEOUT) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "device dst0")) << s;
  EXPECT_EQ((*dj)->held_bytes(), 0u);
}

// Each data stream may hold two chunks here: a session that could hold more
// than the job's memory cap is refused at its header, nothing held; one
// within it is accepted.
TEST(DestinationJobStreams, ASessionThatCouldHoldMoreThanTheCapIsRefused) {
  auto destination = Device("dst0", 2);
  auto job = std::make_shared<Job>("j4", v1::ROLE_DESTINATION, "source",
                                   std::vector<DevicePair>{{"dst0", "src0"}});
  auto dj = DestinationJob::Prepare(job, {destination.get()}, nullptr,
                                    uint64_t{16} << 20, absl::Seconds(5));
  ASSERT_TRUE(dj.ok()) << dj.status();
  v1::SessionHeader h = ControlHeader("j4", (*dj)->token(), 2);
  h.set_max_chunk_bytes(8 << 20);
  absl::Status s = (*dj)->Attach(h, "", IgnoreCancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(base::ReasonOf(s), v1::ERROR_REASON_INCOMPATIBLE) << s;
  EXPECT_TRUE(absl::StrContains(
      s.message(),
      "session of 2 data streams of chunks up to 8388608 bytes could hold "
      "33554432 bytes of state here (two chunks a stream), above this "
      "agent's --transfer_memory_cap of 16777216 bytes"))
      << s;
  h.set_num_streams(1);
  EXPECT_TRUE((*dj)->Attach(h, "", IgnoreCancel).ok());
}

// A device whose data streams all ended short of its DEVICE_END total lost
// data: the marker fails instead of waiting.
TEST_F(DestinationJobTest,
       DeviceEndShortOfItsTotalAfterStreamsEndedIsDataLoss) {
  std::string stream = SaveStream(source_.get());
  ASSERT_TRUE(dj_->OnChunk(Chunk(stream, 0, 1000, 0)).ok());
  dj_->DataStreamEnded(1);
  absl::Status s =
      dj_->OnMarker(Marker(v1::PhaseMarker::DEVICE_END, 0, stream.size()));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
}

// A device whose load stream's first write waits for `gate`: a write that
// takes long, as a large one into a real device does. It records which
// thread made each write.
class GatedDevice : public device::Device {
 public:
  GatedDevice(device::Device* inner, absl::Notification* entered,
              absl::Notification* gate)
      : inner_(inner), entered_(entered), gate_(gate) {}

  std::vector<std::thread::id> writers() const {
    absl::MutexLock l(&mu_);
    return writers_;
  }

  const std::string& name() const override { return inner_->name(); }
  std::string kind() const override { return inner_->kind(); }
  absl::StatusOr<vfio::MigFlags> GetFlags() override {
    return inner_->GetFlags();
  }
  absl::StatusOr<vfio::MigState> GetState() override {
    return inner_->GetState();
  }
  absl::StatusOr<std::unique_ptr<device::DataStream>> SetState(
      vfio::MigState target) override {
    auto s = inner_->SetState(target);
    if (!s.ok() || *s == nullptr) return s;
    return std::unique_ptr<device::DataStream>(new Stream(*std::move(s), this));
  }
  absl::StatusOr<uint64_t> GetStopCopySize() override {
    return inner_->GetStopCopySize();
  }
  absl::Status StartDmaLogging(
      uint64_t page_size, const std::vector<device::IovaRange>& r) override {
    return inner_->StartDmaLogging(page_size, r);
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
  class Stream : public device::DataStream {
   public:
    Stream(std::unique_ptr<device::DataStream> inner, GatedDevice* device)
        : inner_(std::move(inner)), device_(device) {}
    absl::StatusOr<device::ReadResult> Read(absl::Span<uint8_t> buf) override {
      return inner_->Read(buf);
    }
    absl::StatusOr<size_t> Write(absl::Span<const uint8_t> data) override {
      {
        absl::MutexLock l(&device_->mu_);
        device_->writers_.push_back(std::this_thread::get_id());
      }
      if (!device_->entered_->HasBeenNotified()) {
        device_->entered_->Notify();
        device_->gate_->WaitForNotification();
      }
      return inner_->Write(data);
    }
    absl::StatusOr<device::PrecopyInfo> GetPrecopyInfo() override {
      return inner_->GetPrecopyInfo();
    }

   private:
    std::unique_ptr<device::DataStream> inner_;
    GatedDevice* device_;
  };

  device::Device* inner_;
  absl::Notification* entered_;
  absl::Notification* gate_;
  mutable absl::Mutex mu_;
  std::vector<std::thread::id> writers_ ABSL_GUARDED_BY(mu_);
};

// While one data stream writes into the device, another stream's chunk that
// comes next waits for that write and then is written by its own stream's
// thread, while it is still warm in that thread's cache, not left for the
// writer to pick up later; the device still loads everything in order.
TEST(DestinationJobStreams, AStreamWritesItsOwnChunkOnceItsTurnComes) {
  auto source = Device("src0", 1);
  auto inner = Device("dst0", 2);
  absl::Notification entered, gate;
  GatedDevice destination(inner.get(), &entered, &gate);
  auto job = std::make_shared<Job>("j2", v1::ROLE_DESTINATION, "source",
                                   std::vector<DevicePair>{{"dst0", "src0"}});
  auto dj = DestinationJob::Prepare(job, {&destination}, nullptr,
                                    uint64_t{16} << 20, absl::Seconds(30));
  ASSERT_TRUE(dj.ok()) << dj.status();
  ASSERT_NO_FATAL_FAILURE(AttachSession(**dj, "j2", 2));

  std::string stream = SaveStream(source.get());
  const uint64_t half = stream.size() / 2;
  absl::Status first;
  std::thread::id first_thread, second_thread;
  std::thread writer([&] {
    first_thread = std::this_thread::get_id();
    first = (*dj)->OnChunk(Chunk(stream, 0, half, 0));
  });
  entered.WaitForNotification();  // the writer is inside the device write

  absl::Notification second_returned;
  absl::Status second;
  std::thread other([&] {
    second_thread = std::this_thread::get_id();
    second = (*dj)->OnChunk(Chunk(stream, half, stream.size() - half, 0));
    second_returned.Notify();
  });
  // It waits for its turn, holding its chunk, while the first write lasts.
  EXPECT_TRUE(WaitUntilHeld(**dj, stream.size()));
  EXPECT_FALSE(second_returned.HasBeenNotified());
  gate.Notify();
  writer.join();
  other.join();
  ASSERT_TRUE(first.ok()) << first;
  ASSERT_TRUE(second.ok()) << second;
  EXPECT_EQ(job->Snapshot().devices(0).bytes_done(), stream.size());
  // Each chunk was written by the thread that received it.
  const std::vector<std::thread::id> writers = destination.writers();
  ASSERT_EQ(writers.size(), 2u);
  EXPECT_EQ(writers[0], first_thread);
  EXPECT_EQ(writers[1], second_thread)
      << "the second chunk was written by another thread than its own";
  ASSERT_TRUE((*dj)->OnMarker(Marker(v1::PhaseMarker::STOP_COPY, 0, 0)).ok());
  ASSERT_TRUE(
      (*dj)
          ->OnMarker(Marker(v1::PhaseMarker::DEVICE_END, 1, stream.size()))
          .ok());
  ASSERT_TRUE((*dj)->OnMarker(Marker(v1::PhaseMarker::COMMIT, 2, 0)).ok());
  auto completion = (*dj)->Complete();
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_EQ(*inner->StateDigest(), *source->StateDigest());
}

// ---- What the streams are told when the job ends ------------------------

// A session of one data stream whose cancellers record the cause each stream
// was cancelled with: the control stream's handler tells it to the source.
class DestinationJobCancelTest : public testing::Test {
 protected:
  void SetUp() override {
    destination_ = Device("dst0", 2);
    job_ = std::make_shared<Job>("j1", v1::ROLE_DESTINATION, "source",
                                 std::vector<DevicePair>{{"dst0", "src0"}});
    auto dj = DestinationJob::Prepare(job_, {destination_.get()}, nullptr,
                                      uint64_t{16} << 20, absl::Seconds(5));
    ASSERT_TRUE(dj.ok()) << dj.status();
    dj_ = *std::move(dj);
    v1::SessionHeader h = ControlHeader("j1", dj_->token(), 1);
    ASSERT_TRUE(dj_->Attach(h, "", Recorder(0)).ok());
    h.clear_devices();
    h.set_stream_index(1);
    ASSERT_TRUE(dj_->AttachData(h, "", Recorder(1)).ok());
  }

  DestinationJob::StreamCanceller Recorder(uint32_t stream) {
    return [this, stream](const absl::Status& why) {
      absl::MutexLock l(&mu_);
      told_[stream].push_back(why);
    };
  }

  // The causes stream `stream` was cancelled with, in order.
  std::vector<absl::Status> Told(uint32_t stream) {
    absl::MutexLock l(&mu_);
    return told_[stream];
  }

  std::unique_ptr<device::EmulatedDevice> destination_;
  std::shared_ptr<Job> job_;
  std::shared_ptr<DestinationJob> dj_;
  absl::Mutex mu_;
  std::map<uint32_t, std::vector<absl::Status>> told_ ABSL_GUARDED_BY(mu_);
};

TEST_F(DestinationJobCancelTest,
       AFailedDataStreamsCauseReachesTheControlStream) {
  const absl::Status cause = base::Error(
      absl::StatusCode::kDataLoss, v1::ERROR_REASON_STREAM_CORRUPTED,
      "data stream 1: chunk 3 fails its CRC32C");
  dj_->Abort(cause, /*from_stream=*/1);
  const std::vector<absl::Status> control = Told(0);
  ASSERT_EQ(control.size(), 1u);
  EXPECT_EQ(control[0], cause) << control[0];
  EXPECT_EQ(base::ReasonOf(control[0]), v1::ERROR_REASON_STREAM_CORRUPTED);
  // The failing stream answers with its cause itself.
  EXPECT_TRUE(Told(1).empty());
  EXPECT_EQ(job_->Snapshot().failure().reason(),
            v1::ERROR_REASON_STREAM_CORRUPTED);
}

TEST_F(DestinationJobCancelTest, TheControlStreamsOwnFailureIsToldTheOthers) {
  const absl::Status cause =
      base::Error(absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
                  "source sent nothing for 3s");
  dj_->Abort(cause, /*from_stream=*/0);
  EXPECT_TRUE(Told(0).empty());
  const std::vector<absl::Status> data = Told(1);
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data[0], cause) << data[0];
}

// CANCELLED is what an operator's CancelMigration says, and only that.
TEST_F(DestinationJobCancelTest, CancelMigrationTellsEveryStreamCancelled) {
  dj_->Cancel();
  for (uint32_t stream : {0u, 1u}) {
    const std::vector<absl::Status> told = Told(stream);
    ASSERT_EQ(told.size(), 1u) << "stream " << stream;
    EXPECT_EQ(told[0].code(), absl::StatusCode::kCancelled) << told[0];
    EXPECT_EQ(base::ReasonOf(told[0]), v1::ERROR_REASON_CANCELLED) << told[0];
  }
}

// ---- The token's binding: identity, expiry, one use -------------------

constexpr char kSource[] = "spiffe://migd.local/agent/agent-a";
constexpr char kOther[] = "spiffe://migd.local/agent/agent-c";

class DestinationJobTokenTest : public testing::Test {
 protected:
  // A job prepared for source kSource whose token lives `ttl`.
  void Prepare(absl::Duration ttl) {
    destination_ = Device("dst0", 2);
    job_ = std::make_shared<Job>("j1", v1::ROLE_DESTINATION, "source",
                                 std::vector<DevicePair>{{"dst0", "src0"}});
    auto dj = DestinationJob::Prepare(
        job_, {destination_.get()}, [this] { released_.Notify(); },
        uint64_t{16} << 20, absl::Seconds(5), kSource, ttl);
    ASSERT_TRUE(dj.ok()) << dj.status();
    dj_ = *std::move(dj);
  }

  std::unique_ptr<device::EmulatedDevice> destination_;
  std::shared_ptr<Job> job_;
  std::shared_ptr<DestinationJob> dj_;
  absl::Notification released_;
};

TEST_F(DestinationJobTokenTest,
       ASessionFromAnotherIdentityIsRefusedAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(Prepare(absl::Minutes(10)));
  absl::Status s =
      dj_->Attach(ControlHeader("j1", dj_->token(), 1), kOther, IgnoreCancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find(kOther), absl::string_view::npos) << s;
  EXPECT_EQ(job_->phase(), v1::PHASE_PREPARED);
  EXPECT_EQ(destination_->GetState().value(), vfio::MigState::kResuming);
  // The right source still gets in with the same token.
  ASSERT_NO_FATAL_FAILURE(AttachSession(*dj_, "j1", 1, kSource));
  EXPECT_EQ(job_->Snapshot().peer_identity(), kSource);
}

TEST_F(DestinationJobTokenTest, ASessionWithoutIdentityIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Prepare(absl::Minutes(10)));
  absl::Status s =
      dj_->Attach(ControlHeader("j1", dj_->token(), 1), "", IgnoreCancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_EQ(job_->phase(), v1::PHASE_PREPARED);
}

TEST_F(DestinationJobTokenTest, ADataStreamFromAnotherIdentityIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Prepare(absl::Minutes(10)));
  ASSERT_TRUE(
      dj_->Attach(ControlHeader("j1", dj_->token(), 1), kSource, IgnoreCancel)
          .ok());
  v1::SessionHeader data = ControlHeader("j1", dj_->token(), 1);
  data.clear_devices();
  data.set_stream_index(1);
  absl::Status s = dj_->AttachData(data, kOther, IgnoreCancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  // The slot is still free for the real source's stream.
  EXPECT_TRUE(dj_->AttachData(data, kSource, IgnoreCancel).ok());
}

TEST_F(DestinationJobTokenTest, AWrongTokenIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Prepare(absl::Minutes(10)));
  std::string wrong = dj_->token();
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  absl::Status s =
      dj_->Attach(ControlHeader("j1", wrong, 1), kSource, IgnoreCancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_EQ(s.message().find(dj_->token()), absl::string_view::npos);
  EXPECT_EQ(job_->phase(), v1::PHASE_PREPARED);
}

TEST_F(DestinationJobTokenTest, ATokenIsUsedOnce) {
  ASSERT_NO_FATAL_FAILURE(Prepare(absl::Minutes(10)));
  ASSERT_NO_FATAL_FAILURE(AttachSession(*dj_, "j1", 1, kSource));
  absl::Status s =
      dj_->Attach(ControlHeader("j1", dj_->token(), 1), kSource, IgnoreCancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

TEST_F(DestinationJobTokenTest, AnUnusedTokenExpiresAndTheJobResetsItsDevices) {
  ASSERT_NO_FATAL_FAILURE(Prepare(absl::Milliseconds(50)));
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  uint64_t seen = Job::kNoVersion;
  v1::MigrationEvent event;
  while (!job_->terminal() && absl::Now() < deadline) {
    job_->WaitForChange(&seen, absl::Milliseconds(100), &event);
  }
  ASSERT_TRUE(job_->terminal());
  EXPECT_TRUE(released_.HasBeenNotified());
  v1::Migration record = job_->Snapshot();
  EXPECT_EQ(record.phase(), v1::PHASE_FAILED);
  EXPECT_EQ(record.failure().reason(), v1::ERROR_REASON_TIMEOUT);
  EXPECT_EQ(destination_->GetState().value(), vfio::MigState::kRunning);
  // A source that comes late (one that waited in line for a transfer slot)
  // learns why the job is gone.
  absl::Status s =
      dj_->Attach(ControlHeader("j1", dj_->token(), 1), kSource, IgnoreCancel);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "transfer token expired at")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "prepare the job again")) << s;
}

TEST_F(DestinationJobTokenTest, TheExpiryIsReported) {
  const absl::Time before = absl::Now();
  ASSERT_NO_FATAL_FAILURE(Prepare(absl::Minutes(10)));
  EXPECT_GE(dj_->token_expires(), before + absl::Minutes(10));
  EXPECT_LE(dj_->token_expires(), absl::Now() + absl::Minutes(10));
}

// ---- Devices in whatever state they are found (device_states.h) --------

// A device that logs every state change asked of it, with the state it was
// in: "SetState RUNNING -> RESUMING", "Reset from RESUMING".
class RecordingDevice : public device::Device {
 public:
  explicit RecordingDevice(device::Device* inner) : inner_(inner) {}

  std::vector<std::string> calls() const {
    absl::MutexLock l(&mu_);
    return calls_;
  }

  const std::string& name() const override { return inner_->name(); }
  std::string kind() const override { return inner_->kind(); }
  absl::StatusOr<vfio::MigFlags> GetFlags() override {
    return inner_->GetFlags();
  }
  absl::StatusOr<vfio::MigState> GetState() override {
    return inner_->GetState();
  }
  absl::StatusOr<std::unique_ptr<device::DataStream>> SetState(
      vfio::MigState target) override {
    Log(absl::StrCat("SetState ", Now(), " -> ", vfio::MigStateName(target)));
    return inner_->SetState(target);
  }
  absl::StatusOr<uint64_t> GetStopCopySize() override {
    return inner_->GetStopCopySize();
  }
  absl::Status StartDmaLogging(
      uint64_t page_size, const std::vector<device::IovaRange>& r) override {
    return inner_->StartDmaLogging(page_size, r);
  }
  absl::Status ReportDmaLogging(uint64_t iova, uint64_t length,
                                uint64_t page_size,
                                std::vector<uint64_t>* bitmap) override {
    return inner_->ReportDmaLogging(iova, length, page_size, bitmap);
  }
  absl::Status StopDmaLogging() override { return inner_->StopDmaLogging(); }
  absl::Status Reset() override {
    Log(absl::StrCat("Reset from ", Now()));
    return inner_->Reset();
  }
  absl::StatusOr<std::string> StateDigest() override {
    return inner_->StateDigest();
  }

 private:
  std::string Now() {
    absl::StatusOr<vfio::MigState> s = inner_->GetState();
    return s.ok() ? vfio::MigStateName(*s) : "?";
  }
  void Log(std::string call) {
    absl::MutexLock l(&mu_);
    calls_.push_back(std::move(call));
  }

  device::Device* inner_;
  mutable absl::Mutex mu_;
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
};

// Destination device dst0 (seed 2) left in `state` the way a job that did
// not finish leaves it: ERROR through a failing arc, the others by an arc
// whose data session is then dropped.
std::unique_ptr<device::EmulatedDevice> DeviceLeftIn(vfio::MigState state) {
  device::EmulatedDeviceConfig c;
  c.name = "dst0";
  c.state_size = kStateBytes;
  c.seed = 2;
  c.flags = vfio::kMigStopCopy | vfio::kMigP2P | vfio::kMigPreCopy;
  if (state == vfio::MigState::kError) {
    c.fail_arc =
        device::MigArc{vfio::MigState::kStop, vfio::MigState::kStopCopy};
  }
  auto d = device::EmulatedDevice::Create(c);
  EXPECT_TRUE(d.ok()) << d.status();
  if (!d.ok()) return nullptr;
  auto moved = (*d)->SetState(
      state == vfio::MigState::kError ? vfio::MigState::kStopCopy : state);
  EXPECT_EQ(moved.ok(), state != vfio::MigState::kError) << moved.status();
  EXPECT_EQ((*d)->GetState().value(), state);
  return *std::move(d);
}

// Loads `source`'s whole stop-copy stream through a prepared and attached
// `dj` and completes the job.
void LoadAndComplete(DestinationJob& dj, device::EmulatedDevice* source) {
  std::string stream = SaveStream(source);
  ASSERT_TRUE(dj.OnChunk(Chunk(stream, 0, stream.size(), 0)).ok());
  ASSERT_TRUE(dj.OnMarker(Marker(v1::PhaseMarker::STOP_COPY, 0, 0)).ok());
  ASSERT_TRUE(
      dj.OnMarker(Marker(v1::PhaseMarker::DEVICE_END, 1, stream.size())).ok());
  ASSERT_TRUE(dj.OnMarker(Marker(v1::PhaseMarker::COMMIT, 2, 0)).ok());
  auto completion = dj.Complete();
  ASSERT_TRUE(completion.ok()) << completion.status();
}

std::vector<std::string> RecordedStates(const v1::Migration& record) {
  std::vector<std::string> out;
  for (const v1::StateChange& c : record.state_changes()) {
    out.push_back(v1::DeviceState_Name(c.state()));
  }
  return out;
}

// A device a completed migration left in STOP (its state moved away) is idle:
// it is prepared by the arc STOP -> RESUMING, with no reset, and loads.
TEST(DestinationJobFoundState, AStoppedDeviceIsPreparedByAnArcAndLoads) {
  auto source = Device("src0", 1);
  auto inner = Device("dst0", 2);
  ASSERT_TRUE(inner->SetState(vfio::MigState::kStop).ok());
  RecordingDevice destination(inner.get());
  auto job = std::make_shared<Job>("j1", v1::ROLE_DESTINATION, "source",
                                   std::vector<DevicePair>{{"dst0", "src0"}});
  auto dj = DestinationJob::Prepare(job, {&destination}, nullptr,
                                    uint64_t{16} << 20, absl::Seconds(5));
  ASSERT_TRUE(dj.ok()) << dj.status();
  EXPECT_EQ(inner->GetState().value(), vfio::MigState::kResuming);
  EXPECT_EQ(destination.calls(),
            std::vector<std::string>{"SetState STOP -> RESUMING"});
  v1::Migration record = job->Snapshot();
  EXPECT_EQ(RecordedStates(record),
            std::vector<std::string>{"DEVICE_STATE_RESUMING"});
  EXPECT_EQ(record.notices_size(), 0);

  ASSERT_NO_FATAL_FAILURE(AttachSession(**dj, "j1", 1));
  ASSERT_NO_FATAL_FAILURE(LoadAndComplete(**dj, source.get()));
  EXPECT_EQ(inner->GetState().value(), vfio::MigState::kRunning);
  EXPECT_EQ(*inner->StateDigest(), *source->StateDigest());
}

class DestinationJobLeftOverTest
    : public testing::TestWithParam<vfio::MigState> {};

// A device found in a state a migration leaves only when it did not finish is
// reset before anything else (never an arc out of it: from RESUMING that
// could hit a stale load session), the job says so, and it then loads.
TEST_P(DestinationJobLeftOverTest, IsResetFirstThenLoads) {
  const vfio::MigState left = GetParam();
  const std::string name = vfio::MigStateName(left);
  auto source = Device("src0", 1);
  std::unique_ptr<device::EmulatedDevice> inner = DeviceLeftIn(left);
  ASSERT_NE(inner, nullptr);
  RecordingDevice destination(inner.get());
  auto job = std::make_shared<Job>("j1", v1::ROLE_DESTINATION, "source",
                                   std::vector<DevicePair>{{"dst0", "src0"}});
  auto dj = DestinationJob::Prepare(job, {&destination}, nullptr,
                                    uint64_t{16} << 20, absl::Seconds(5));
  ASSERT_TRUE(dj.ok()) << dj.status();
  EXPECT_EQ(inner->GetState().value(), vfio::MigState::kResuming);
  // The device saw a reset from where it was found, then the arcs from
  // RUNNING.
  EXPECT_EQ(destination.calls(),
            (std::vector<std::string>{absl::StrCat("Reset from ", name),
                                      "SetState RUNNING -> RESUMING"}));
  // The record: the reset's RUNNING first, then RESUMING.
  v1::Migration record = job->Snapshot();
  EXPECT_EQ(RecordedStates(record),
            (std::vector<std::string>{"DEVICE_STATE_RUNNING",
                                      "DEVICE_STATE_RESUMING"}));
  ASSERT_EQ(record.notices_size(), 1);
  EXPECT_TRUE(absl::StrContains(record.notices(0), "dst0"))
      << record.notices(0);
  EXPECT_TRUE(
      absl::StrContains(record.notices(0), absl::StrCat("found in ", name)))
      << record.notices(0);
  EXPECT_TRUE(absl::StrContains(record.notices(0), "reset"))
      << record.notices(0);

  ASSERT_NO_FATAL_FAILURE(AttachSession(**dj, "j1", 1));
  ASSERT_NO_FATAL_FAILURE(LoadAndComplete(**dj, source.get()));
  EXPECT_EQ(*inner->StateDigest(), *source->StateDigest());
}

INSTANTIATE_TEST_SUITE_P(
    EveryLeftOver, DestinationJobLeftOverTest,
    testing::Values(vfio::MigState::kResuming, vfio::MigState::kError,
                    vfio::MigState::kStopCopy, vfio::MigState::kPreCopy,
                    vfio::MigState::kPreCopyP2P, vfio::MigState::kRunningP2P),
    [](const testing::TestParamInfo<vfio::MigState>& info) {
      std::string n = vfio::MigStateName(info.param);
      n.erase(std::remove(n.begin(), n.end(), '_'), n.end());
      return n;
    });

// ---- The outcome question (GetOutcome) ----------------------------------

namespace outcome {

// A session from kSource into dst0 that sent every byte of src0's state and
// its DEVICE_END; `commit` sends COMMIT too.
class DestinationJobOutcomeTest : public testing::Test {
 protected:
  void SetUp() override {
    source_ = Device("src0", 1);
    destination_ = Device("dst0", 2);
    job_ = std::make_shared<Job>("j1", v1::ROLE_DESTINATION, "source",
                                 std::vector<DevicePair>{{"dst0", "src0"}});
    auto dj = DestinationJob::Prepare(
        job_, {destination_.get()}, [this] { ++released_; }, uint64_t{16} << 20,
        absl::Seconds(5), kSource);
    ASSERT_TRUE(dj.ok()) << dj.status();
    dj_ = *std::move(dj);
    ASSERT_NO_FATAL_FAILURE(AttachSession(*dj_, "j1", 1, kSource));
    stream_ = SaveStream(source_.get());
    ASSERT_TRUE(dj_->OnChunk(Chunk(stream_, 0, stream_.size(), 0)).ok());
    ASSERT_TRUE(dj_->OnMarker(Marker(v1::PhaseMarker::STOP_COPY, 0, 0)).ok());
    ASSERT_TRUE(
        dj_->OnMarker(Marker(v1::PhaseMarker::DEVICE_END, 1, stream_.size()))
            .ok());
  }

  std::string Outcome() {
    auto a = dj_->AnswerOutcome(kSource);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? OutcomeName(a->outcome()) : "";
  }

  std::unique_ptr<device::EmulatedDevice> source_, destination_;
  std::shared_ptr<Job> job_;
  std::shared_ptr<DestinationJob> dj_;
  std::string stream_;
  int released_ = 0;
};

TEST_F(DestinationJobOutcomeTest, ACompletedJobRunsTheDevicesHere) {
  ASSERT_TRUE(dj_->OnMarker(Marker(v1::PhaseMarker::COMMIT, 2, 0)).ok());
  ASSERT_TRUE(dj_->Complete().ok());
  EXPECT_EQ(Outcome(), "RUNNING_HERE");
  EXPECT_EQ(job_->phase(), v1::PHASE_SUCCEEDED);
  EXPECT_EQ(destination_->GetState().value(), vfio::MigState::kRunning);
}

// Asked before it resumed anything (here: every byte in, COMMIT not yet),
// the job answers NOT_RUN only once it can never run: it is aborted, its
// devices reset, and a COMMIT that comes after resumes nothing.
TEST_F(DestinationJobOutcomeTest, AJobNotResumedIsAbortedBeforeItSaysNotRun) {
  EXPECT_EQ(Outcome(), "NOT_RUN");
  v1::Migration m = job_->Snapshot();
  EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_NE(m.failure().message().find("asked for the outcome"),
            std::string::npos)
      << m.failure().message();
  EXPECT_EQ(released_, 1);
  EXPECT_NE(*destination_->StateDigest(), *source_->StateDigest());
  // The COMMIT that was on its way.
  EXPECT_FALSE(dj_->OnMarker(Marker(v1::PhaseMarker::COMMIT, 2, 0)).ok());
  EXPECT_FALSE(dj_->Complete().ok());
  EXPECT_NE(*destination_->StateDigest(), *source_->StateDigest());
  // Asked again: the same answer, nothing more done.
  EXPECT_EQ(Outcome(), "NOT_RUN");
  EXPECT_EQ(released_, 1);
}

// COMMIT arrived, Complete not started yet: still nothing resumed.
TEST_F(DestinationJobOutcomeTest, ACommittedJobNotYetCompletingIsAborted) {
  ASSERT_TRUE(dj_->OnMarker(Marker(v1::PhaseMarker::COMMIT, 2, 0)).ok());
  EXPECT_EQ(Outcome(), "NOT_RUN");
  EXPECT_FALSE(dj_->Complete().ok());
  EXPECT_EQ(job_->phase(), v1::PHASE_FAILED);
  EXPECT_NE(*destination_->StateDigest(), *source_->StateDigest());
}

TEST_F(DestinationJobOutcomeTest, AFailedJobNeverRan) {
  dj_->Abort(absl::UnavailableError("source went away"));
  EXPECT_EQ(Outcome(), "NOT_RUN");
  EXPECT_EQ(job_->Snapshot().failure().message(), "source went away");
}

TEST_F(DestinationJobOutcomeTest,
       OnlyTheJobsSourceMayAskAndAskingChangesNothing) {
  auto a = dj_->AnswerOutcome(kOther);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kPermissionDenied)
      << a.status();
  EXPECT_NE(a.status().message().find(kOther), absl::string_view::npos);
  EXPECT_EQ(job_->phase(), v1::PHASE_STOP_COPY);
  // The session goes on to its end.
  ASSERT_TRUE(dj_->OnMarker(Marker(v1::PhaseMarker::COMMIT, 2, 0)).ok());
  ASSERT_TRUE(dj_->Complete().ok());
  EXPECT_EQ(*destination_->StateDigest(), *source_->StateDigest());
}

}  // namespace outcome

// ---- After COMMIT, a destination that does not run the VM ----------------

// Fails the write-ahead of one phase, as a journal that cannot grow does.
class FailingObserver : public JobObserver {
 public:
  explicit FailingObserver(v1::Phase phase) : phase_(phase) {}
  absl::Status BeforeAct(const v1::Migration& record, uint64_t,
                         absl::string_view what) override {
    if (record.phase() != phase_) return absl::OkStatus();
    return absl::ResourceExhaustedError(
        absl::StrCat("journal full before: ", what));
  }
  void AfterChange(const v1::Migration& /*record*/, uint64_t /*revision*/,
                   absl::string_view /*message*/) override {}

 private:
  const v1::Phase phase_;
};

// A session into `dj` that sent every byte of `source`'s state, then COMMIT.
void SendAllAndCommit(DestinationJob& dj, device::EmulatedDevice* source) {
  ASSERT_NO_FATAL_FAILURE(AttachSession(dj, "j1", 1, kSource));
  std::string stream = SaveStream(source);
  ASSERT_TRUE(dj.OnChunk(Chunk(stream, 0, stream.size(), 0)).ok());
  ASSERT_TRUE(dj.OnMarker(Marker(v1::PhaseMarker::STOP_COPY, 0, 0)).ok());
  ASSERT_TRUE(
      dj.OnMarker(Marker(v1::PhaseMarker::DEVICE_END, 1, stream.size())).ok());
  ASSERT_TRUE(dj.OnMarker(Marker(v1::PhaseMarker::COMMIT, 2, 0)).ok());
}

// Records the phases of the write-ahead points, in order.
class RecordingObserver : public JobObserver {
 public:
  absl::Status BeforeAct(const v1::Migration& record, uint64_t,
                         absl::string_view) override {
    absl::MutexLock lock(&mu_);
    phases_.push_back(v1::Phase_Name(record.phase()));
    return absl::OkStatus();
  }
  void AfterChange(const v1::Migration& /*record*/, uint64_t /*revision*/,
                   absl::string_view /*message*/) override {}
  std::vector<std::string> phases() {
    absl::MutexLock lock(&mu_);
    return phases_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> phases_;
};

// The job is PRE_COPY while the source's devices run and STOP_COPY from the
// source's STOP_COPY marker, a write-ahead point made before the marker is
// taken (so before any COMMIT): recovery reads a power loss from it.
TEST(DestinationJobWriteAhead, TheSourcesStopCopyIsRecordedBeforeCommit) {
  auto source = Device("src0", 1);
  auto destination = Device("dst0", 2);
  auto recorder = std::make_shared<RecordingObserver>();
  auto job = std::make_shared<Job>("j1", v1::ROLE_DESTINATION, "source",
                                   std::vector<DevicePair>{{"dst0", "src0"}},
                                   JobObservers{recorder});
  auto dj = DestinationJob::Prepare(
      job, {destination.get()}, [] {}, uint64_t{16} << 20, absl::Seconds(5),
      kSource);
  ASSERT_TRUE(dj.ok()) << dj.status();
  ASSERT_NO_FATAL_FAILURE(AttachSession(**dj, "j1", 1, kSource));
  EXPECT_EQ(v1::Phase_Name(job->phase()), v1::Phase_Name(v1::PHASE_PRE_COPY));
  std::string stream = SaveStream(source.get());
  ASSERT_TRUE((*dj)->OnChunk(Chunk(stream, 0, stream.size(), 0)).ok());
  EXPECT_EQ(recorder->phases(), std::vector<std::string>{"PHASE_PREPARED"});
  ASSERT_TRUE((*dj)->OnMarker(Marker(v1::PhaseMarker::STOP_COPY, 0, 0)).ok());
  EXPECT_EQ(v1::Phase_Name(job->phase()), v1::Phase_Name(v1::PHASE_STOP_COPY));
  EXPECT_EQ(recorder->phases(),
            (std::vector<std::string>{"PHASE_PREPARED", "PHASE_STOP_COPY"}));
  ASSERT_TRUE(
      (*dj)
          ->OnMarker(Marker(v1::PhaseMarker::DEVICE_END, 1, stream.size()))
          .ok());
  ASSERT_TRUE((*dj)->OnMarker(Marker(v1::PhaseMarker::COMMIT, 2, 0)).ok());
  ASSERT_TRUE((*dj)->Complete().ok());
  EXPECT_EQ(recorder->phases(),
            (std::vector<std::string>{"PHASE_PREPARED", "PHASE_STOP_COPY",
                                      "PHASE_RESUMING"}));
  EXPECT_EQ(*destination->StateDigest(), *source->StateDigest());
}

// A journal that cannot record STOP_COPY fails the job before COMMIT: the
// devices, which loaded nothing yet, are reset, and the source is told
// NOT_RUN (it resumes its own).
TEST(DestinationJobWriteAhead, AStopCopyThatCannotBeRecordedFailsBeforeCommit) {
  auto source = Device("src0", 1);
  auto destination = Device("dst0", 2);
  const std::string own = *destination->StateDigest();
  auto job = std::make_shared<Job>(
      "j1", v1::ROLE_DESTINATION, "source",
      std::vector<DevicePair>{{"dst0", "src0"}},
      JobObservers{std::make_shared<FailingObserver>(v1::PHASE_STOP_COPY)});
  int released = 0;
  auto dj = DestinationJob::Prepare(
      job, {destination.get()}, [&] { ++released; }, uint64_t{16} << 20,
      absl::Seconds(5), kSource);
  ASSERT_TRUE(dj.ok()) << dj.status();
  ASSERT_NO_FATAL_FAILURE(AttachSession(**dj, "j1", 1, kSource));
  std::string stream = SaveStream(source.get());
  ASSERT_TRUE((*dj)->OnChunk(Chunk(stream, 0, stream.size(), 0)).ok());
  absl::Status s = (*dj)->OnMarker(Marker(v1::PhaseMarker::STOP_COPY, 0, 0));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "journal full")) << s;
  (*dj)->Abort(s, 0);  // as the control stream does
  EXPECT_EQ(v1::Phase_Name(job->phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(vfio::MigStateName(destination->GetState().value()),
            vfio::MigStateName(vfio::MigState::kRunning));
  EXPECT_EQ(*destination->StateDigest(), own);
  EXPECT_EQ(released, 1);
  auto a = (*dj)->AnswerOutcome(kSource);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(OutcomeName(a->outcome()), "NOT_RUN");
}

// The RESUMING write-ahead point fails after the device loaded the VM's
// state: the job fails and says NOT_RUN, so the source resumes its own. The
// loaded device must not run too: it stays in STOP, never reset (a reset
// may keep the loaded state and run it: QEMU's edu keeps its memory).
TEST(DestinationJobStandDown, AJobThatMayNotResumeLeavesTheLoadedStateStopped) {
  auto source = Device("src0", 1);
  auto destination = Device("dst0", 2);
  auto job = std::make_shared<Job>(
      "j1", v1::ROLE_DESTINATION, "source",
      std::vector<DevicePair>{{"dst0", "src0"}},
      JobObservers{std::make_shared<FailingObserver>(v1::PHASE_RESUMING)});
  int released = 0;
  auto dj = DestinationJob::Prepare(
      job, {destination.get()}, [&] { ++released; }, uint64_t{16} << 20,
      absl::Seconds(5), kSource);
  ASSERT_TRUE(dj.ok()) << dj.status();
  ASSERT_NO_FATAL_FAILURE(SendAllAndCommit(**dj, source.get()));

  auto completion = (*dj)->Complete();
  ASSERT_FALSE(completion.ok());
  EXPECT_TRUE(absl::StrContains(completion.status().message(), "journal full"))
      << completion.status();
  (*dj)->Abort(completion.status(), 0);  // as the control stream does

  EXPECT_EQ(v1::Phase_Name(job->phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(vfio::MigStateName(destination->GetState().value()),
            vfio::MigStateName(vfio::MigState::kStop));
  EXPECT_EQ(*destination->StateDigest(), *source->StateDigest());
  EXPECT_EQ(released, 1);
  auto a = (*dj)->AnswerOutcome(kSource);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(OutcomeName(a->outcome()), "NOT_RUN");
}

// A device that fails to resume (after the RESUMING write-ahead point, when
// others may run): neither side may run the VM without a decision. The job
// is IN_DOUBT and says UNKNOWN; an abort of the session changes nothing; an
// operator who chooses the destination is refused while the device cannot
// run; one who chooses the source ends it: the device runs nothing here.
TEST(DestinationJobStandDown, ADeviceThatFailsToResumeLeavesTheJobInDoubt) {
  auto source = Device("src0", 1);
  device::EmulatedDeviceConfig c;
  c.name = "dst0";
  c.state_size = kStateBytes;
  c.seed = 2;
  c.flags = vfio::kMigStopCopy;  // no P2P: STOP -> RUNNING is the resume
  c.fail_arc = device::MigArc{vfio::MigState::kStop, vfio::MigState::kRunning};
  auto destination = device::EmulatedDevice::Create(c);
  ASSERT_TRUE(destination.ok()) << destination.status();
  auto job = std::make_shared<Job>("j1", v1::ROLE_DESTINATION, "source",
                                   std::vector<DevicePair>{{"dst0", "src0"}});
  int released = 0;
  auto dj = DestinationJob::Prepare(
      job, {destination->get()}, [&] { ++released; }, uint64_t{16} << 20,
      absl::Seconds(5), kSource);
  ASSERT_TRUE(dj.ok()) << dj.status();
  ASSERT_NO_FATAL_FAILURE(SendAllAndCommit(**dj, source.get()));

  auto completion = (*dj)->Complete();
  ASSERT_FALSE(completion.ok());
  (*dj)->Abort(completion.status(), 0);
  EXPECT_EQ(v1::Phase_Name(job->phase()), v1::Phase_Name(v1::PHASE_IN_DOUBT));
  EXPECT_TRUE(
      absl::StrContains(job->Snapshot().in_doubt().reason(), "did not resume"))
      << job->Snapshot().in_doubt().reason();
  EXPECT_EQ(released, 0);
  auto a = (*dj)->AnswerOutcome(kSource);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(OutcomeName(a->outcome()), "UNKNOWN");

  absl::Status here = (*dj)->Resolve(v1::RESOLUTION_DESTINATION, "operator");
  EXPECT_EQ(here.code(), absl::StatusCode::kFailedPrecondition) << here;
  EXPECT_EQ(v1::Phase_Name(job->phase()), v1::Phase_Name(v1::PHASE_IN_DOUBT));

  ASSERT_TRUE((*dj)->Resolve(v1::RESOLUTION_SOURCE, "operator").ok());
  EXPECT_EQ(v1::Phase_Name(job->phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(released, 1);
  EXPECT_NE((*destination)->GetState().value(), vfio::MigState::kRunning);
  a = (*dj)->AnswerOutcome(kSource);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(OutcomeName(a->outcome()), "NOT_RUN");
  EXPECT_EQ((*dj)->Resolve(v1::RESOLUTION_SOURCE, "operator").code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace migd::migration
