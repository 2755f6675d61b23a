// e2e/loopback/precopy_test.cc
//
// Loopback tier for live migration proper: pre-copy convergence and its caps,
// the switchover acknowledgement, the P2P barrier on both sides, the refusal
// of mixed P2P jobs, the dirty-page service against the emulated device's own
// record of its DMA writes, and the downtime accounting.
//
// Real migd agents on 127.0.0.1 with emulated devices described by a
// --devices_config file (e2e/testing/agent_process.h), serving mutual TLS;
// the destination that never acknowledges is a TransferService served by
// this test process, with a harness agent certificate of its own. Each
// test starts its own agents and waits on conditions with deadlines, never on
// sleeps. Timing assertions carry the tolerance they allow and why; none of
// them asserts a speed.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/device_checks.h"
#include "e2e/testing/run_pki.h"
#include "e2e/testing/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/security/authorizer.h"
#include "migd/security/credentials.h"
#include "migd/security/testing/test_pki.h"
#include "migd/security/tls_context.h"
#include "migd/security/tls_files.h"
#include "migd/transfer/data_frame.h"
#include "migd/transfer/data_listener.h"
#include "proto/migd/v1/migration.grpc.pb.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::e2e {
namespace {

using ::migd::v1::Device;
using ::migd::v1::Migration;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// Deadlines: generous for a shared, loaded 2-core machine; a healthy run
// takes a small fraction of each.
constexpr absl::Duration kRpcTimeout = absl::Seconds(30);
constexpr absl::Duration kJobTimeout = absl::Seconds(90);

constexpr absl::string_view kAllFlags = "STOP_COPY|P2P|PRE_COPY";

std::string PhaseName(v1::Phase phase) { return v1::Phase_Name(phase); }
std::string ReasonName(v1::ErrorReason reason) {
  return v1::ErrorReason_Name(reason);
}

// ---- Device configuration --------------------------------------------------

// One "emulated ..." line of an agent's --devices_config.
struct EmuSpec {
  std::string name;
  std::string size = "16MiB";
  uint64_t seed = 1;
  std::string flags = std::string(kAllFlags);
  // Further key=value words: the workload (dirty_rate, dma_rate,
  // dma_write_log) or other knobs.
  std::string extra;
};

// `count` devices emu0.. of `size`, seeds seed_base + i, all flags, `extra`.
std::vector<EmuSpec> Emus(int count, absl::string_view size, uint64_t seed_base,
                          absl::string_view extra = "") {
  std::vector<EmuSpec> specs;
  for (int i = 0; i < count; ++i) {
    EmuSpec s;
    s.name = absl::StrCat("emu", i);
    s.size = std::string(size);
    s.seed = seed_base + i;
    s.extra = std::string(extra);
    specs.push_back(std::move(s));
  }
  return specs;
}

std::string DevicesConfig(const std::vector<EmuSpec>& specs) {
  std::string out;
  for (const EmuSpec& s : specs) {
    absl::StrAppend(&out, "emulated ", s.name, " size=", s.size,
                    " seed=", s.seed, " flags=", s.flags,
                    s.extra.empty() ? "" : " ", s.extra, "\n");
  }
  return out;
}

std::vector<std::string> NamesOf(const std::vector<EmuSpec>& specs) {
  std::vector<std::string> names;
  for (const EmuSpec& s : specs) names.push_back(s.name);
  return names;
}

// The destination's counterpart of a source device: same name, size and
// flags, other content, no workload (so its digest stays put once it runs
// with the source's state).
std::vector<EmuSpec> Mirror(const std::vector<EmuSpec>& source) {
  std::vector<EmuSpec> out = source;
  for (EmuSpec& s : out) {
    s.seed += 1000;
    s.extra.clear();
  }
  return out;
}

// ---- Requests
// ----------------------------------------------------------------

void FillPairs(const std::vector<std::string>& names,
               google::protobuf::RepeatedPtrField<v1::DevicePair>* out) {
  for (const std::string& name : names) {
    v1::DevicePair* pair = out->Add();
    pair->set_source_device(name);
    pair->set_destination_device(name);
  }
}

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

// The destination holds exactly the source's state, device by device.
void ExpectSameDigests(const DeviceMapT& source, const DeviceMapT& destination,
                       const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    SCOPED_TRACE(absl::StrCat("device ", name));
    ASSERT_TRUE(source.count(name) && destination.count(name));
    EXPECT_FALSE(source.at(name).state_digest().empty());
    EXPECT_EQ(destination.at(name).state_digest(),
              source.at(name).state_digest())
        << "the destination does not hold the source's state";
  }
}

bool HasNotice(const Migration& m, absl::string_view a, absl::string_view b) {
  for (const std::string& n : m.notices()) {
    if (absl::StrContains(n, a) && absl::StrContains(n, b)) return true;
  }
  return false;
}

// ---- Fixture -------------------------------------------------------------

class PrecopyTest : public AgentTest {
 protected:
  // Starts an agent named "<Test>.<role>" with `devices`; nullptr (and a test
  // failure) when it does not come up.
  AgentProcess* StartAgent(absl::string_view role,
                           const std::vector<EmuSpec>& devices) {
    return AgentTest::StartAgent(role, {}, DevicesConfig(devices));
  }

  // A source agent with `source` devices and a destination with Mirror(source).
  void StartPair(const std::vector<EmuSpec>& source) {
    source_ = StartAgent("source", source);
    ASSERT_NE(source_, nullptr);
    destination_ = StartAgent("destination", Mirror(source));
    ASSERT_NE(destination_, nullptr);
  }

  // PrepareIncoming on the destination; returns the transfer token.
  std::string PrepareOk(absl::string_view job,
                        const std::vector<std::string>& names) {
    v1::PrepareIncomingRequest request;
    request.set_job_id(std::string(job));
    FillPairs(names, request.mutable_devices());
    request.set_source("precopy-test");
    request.set_source_identity(source_->identity());
    v1::PrepareIncomingResponse response;
    CallResult r = CallPrepareIncoming(destination_->stub(), request, &response,
                                       kRpcTimeout);
    EXPECT_TRUE(r.status.ok())
        << "PrepareIncoming " << job << ": " << DescribeCall(r);
    EXPECT_EQ(PhaseName(response.migration().phase()),
              PhaseName(v1::PHASE_PREPARED));
    return response.transfer_token();
  }

  // A StartMigration request to `destination` (the destination agent, by
  // address and identity, when empty) with a 30 s phase timeout; tests add
  // their policy.
  v1::StartMigrationRequest Request(absl::string_view job,
                                    const std::vector<std::string>& names,
                                    absl::string_view token,
                                    absl::string_view destination = "") {
    v1::StartMigrationRequest request;
    request.set_job_id(std::string(job));
    FillPairs(names, request.mutable_devices());
    if (destination.empty()) {
      request.set_destination(destination_->address());
      request.set_destination_identity(destination_->identity());
    } else {
      request.set_destination(std::string(destination));
    }
    request.set_transfer_token(std::string(token));
    request.mutable_policy()->mutable_phase_timeout()->set_seconds(30);
    return request;
  }

  CallResult Start(const v1::StartMigrationRequest& request) {
    Migration started;
    return CallStartMigration(source_->stub(), request, &started, kRpcTimeout);
  }

  // Prepares the destination and starts the job; fails the test if either
  // is refused.
  void Migrate(v1::StartMigrationRequest request) {
    const std::vector<std::string> names = [&] {
      std::vector<std::string> n;
      for (const v1::DevicePair& p : request.devices()) {
        n.push_back(p.source_device());
      }
      return n;
    }();
    std::string token = PrepareOk(request.job_id(), names);
    ASSERT_FALSE(token.empty());
    request.set_transfer_token(token);
    CallResult r = Start(request);
    ASSERT_TRUE(r.status.ok())
        << "StartMigration " << request.job_id() << ": " << DescribeCall(r);
  }

  absl::StatusOr<Migration> WaitEnd(AgentProcess* agent,
                                    absl::string_view job) {
    return WaitForEnd(agent->stub(), job, absl::Now() + kJobTimeout);
  }

  // Both ends of `job`, which must both succeed.
  void ExpectBothSucceeded(absl::string_view job, Migration* source_end,
                           Migration* destination_end) {
    ASSERT_OK_AND_ASSIGN(*source_end, WaitEnd(source_, job));
    ASSERT_OK_AND_ASSIGN(*destination_end, WaitEnd(destination_, job));
    EXPECT_EQ(PhaseName(source_end->phase()), PhaseName(v1::PHASE_SUCCEEDED))
        << source_end->ShortDebugString();
    EXPECT_EQ(PhaseName(destination_end->phase()),
              PhaseName(v1::PHASE_SUCCEEDED))
        << destination_end->ShortDebugString();
  }

  // After a successful job: source devices STOP, destination devices RUNNING
  // with the source's state.
  void ExpectMigrated(const std::vector<std::string>& names) {
    ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
    ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                         DeviceMap(destination_->stub()));
    ExpectDevices("source", source_after, names, v1::DEVICE_STATE_STOP);
    ExpectDevices("destination", destination_after, names,
                  v1::DEVICE_STATE_RUNNING);
    ExpectSameDigests(source_after, destination_after, names);
  }
};

// ---- 1. Convergence
// ----------------------------------------------------------

TEST_F(PrecopyTest, WorkloadBelowTheBandwidthConvergesWithinTheDowntimeLimit) {
  // 4 MiB/s of state changes per device is far below what loopback moves
  // (hundreds of MiB/s even on a loaded machine): pre-copy must converge.
  constexpr uint64_t kStateBytes = 64 * kMiB;
  constexpr absl::Duration kLimit = absl::Milliseconds(500);
  const std::vector<EmuSpec> devices = Emus(2, "64MiB", 1, "dirty_rate=4MiB");
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-converges";
  v1::StartMigrationRequest request = Request(job, names, "");
  SetDuration(kLimit, request.mutable_policy()->mutable_downtime_limit());
  ASSERT_NO_FATAL_FAILURE(Migrate(request));
  Migration source_end, destination_end;
  ASSERT_NO_FATAL_FAILURE(
      ExpectBothSucceeded(job, &source_end, &destination_end));

  std::cerr << "converged job: precopy {"
            << source_end.precopy().ShortDebugString() << "} precopy_bytes "
            << source_end.precopy_bytes() << " stop_copy_bytes "
            << source_end.stop_copy_bytes() << " downtime "
            << absl::FormatDuration(FromProtoDuration(source_end.downtime()))
            << " breakdown {"
            << source_end.downtime_breakdown().ShortDebugString() << "}\n";

  ASSERT_TRUE(source_end.has_precopy()) << source_end.ShortDebugString();
  const v1::PrecopyProgress& precopy = source_end.precopy();
  EXPECT_TRUE(precopy.converged()) << precopy.ShortDebugString();
  EXPECT_GE(precopy.iteration(), 1u);
  EXPECT_GT(precopy.bandwidth_bytes_per_second(), 0);
  // Converged means the estimate fit the limit.
  EXPECT_LE(FromProtoDuration(precopy.expected_downtime()), kLimit)
      << precopy.ShortDebugString();
  ASSERT_EQ(source_end.devices_size(), 2);
  for (const v1::DeviceProgress& d : source_end.devices()) {
    SCOPED_TRACE(d.device());
    EXPECT_TRUE(d.initial_data_acked());
    // The initial data alone is the whole content, sent while running.
    EXPECT_GE(d.precopy_bytes(), kStateBytes);
    EXPECT_GT(d.stop_copy_bytes(), 0u);  // at least the end of the stream
  }
  // Pre-copy did the bulk of the work: what moved with the devices stopped
  // is a fraction of what moved while they ran.
  EXPECT_LT(source_end.stop_copy_bytes(), source_end.precopy_bytes() / 4)
      << "precopy " << source_end.precopy_bytes() << " stop-copy "
      << source_end.stop_copy_bytes();
  for (const v1::DeviceProgress& d : destination_end.devices()) {
    EXPECT_TRUE(d.initial_data_acked()) << "destination " << d.device();
  }

  // Downtime. The limit bounds the *estimate* of the stop-copy transfer
  // (remaining bytes / bandwidth measured during pre-copy). Migration.downtime
  // also contains what the estimate does not cover: the destination's load
  // (RESUMING -> STOP validates each device's whole state) and resume, which
  // are reported in the breakdown and added here, plus the arcs on the source
  // and the Completion round trip. kSlack absorbs those and the noise of a
  // shared 2-core machine, where a scheduling stall of a few hundred ms is
  // ordinary and the bandwidth at switchover differs from the pre-copy
  // average. Without pre-copy the stop-copy would carry 128 MiB; the bytes
  // check above is what proves pre-copy did the work.
  constexpr absl::Duration kSlack = absl::Seconds(1);
  const v1::DowntimeBreakdown& b = source_end.downtime_breakdown();
  const absl::Duration downtime = FromProtoDuration(source_end.downtime());
  EXPECT_GT(downtime, absl::ZeroDuration());
  EXPECT_LE(FromProtoDuration(b.stop_copy_transfer()), kLimit + kSlack)
      << b.ShortDebugString();
  EXPECT_LE(downtime, kLimit + FromProtoDuration(b.load()) +
                          FromProtoDuration(b.resume()) + kSlack)
      << "downtime " << absl::FormatDuration(downtime) << " breakdown "
      << b.ShortDebugString();

  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(names));
}

// ---- 2. The iteration cap
// ------------------------------------------------------

// A workload the bandwidth can never keep up with: the policy assumes 1 KiB/s
// against 64 MiB/s of state changes per device, and a 10 ms limit. At that
// bandwidth 11 bytes already exceed the limit, and a running device always
// has more than that left to send (the closing bytes of its stream, and here
// re-dirtied 64 KiB records), so the estimate never fits and the iteration
// cap ends pre-copy.
//
// Why a cap of 2 and not 3: the real link is much faster than the assumed
// 1 KiB/s, and each pass only re-sends what a device dirtied while the
// others were being drained, so passes shrink fast; the third one is often
// empty, and the agent ends pre-copy at an empty pass by a rule of its own
// ("the state pre-copy can move"). The second pass always has data: it
// carries what device 0 dirtied (megabytes) while device 1's 64 MiB were
// sent in the first.
constexpr uint32_t kMaxIterations = 2;
constexpr absl::string_view kIterationCap = "2 iterations";

v1::StartMigrationRequest CappedRequest(
    v1::StartMigrationRequest request,
    v1::MigrationPolicy::OnNoConvergence on) {
  v1::MigrationPolicy* p = request.mutable_policy();
  p->set_bandwidth_bytes_per_second(1024);
  SetDuration(absl::Milliseconds(10), p->mutable_downtime_limit());
  p->set_max_iterations(kMaxIterations);
  p->set_on_no_convergence(on);
  return request;
}

constexpr absl::string_view kCappedSize = "64MiB";
constexpr absl::string_view kHeavyWorkload = "dirty_rate=64MiB";

TEST_F(PrecopyTest, WorkloadAboveTheBandwidthSwitchesOverAtTheCapWhenAllowed) {
  const std::vector<EmuSpec> devices = Emus(2, kCappedSize, 1, kHeavyWorkload);
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-capped-switch-over";
  ASSERT_NO_FATAL_FAILURE(Migrate(
      CappedRequest(Request(job, names, ""),
                    v1::MigrationPolicy::ON_NO_CONVERGENCE_SWITCH_OVER)));
  Migration source_end, destination_end;
  ASSERT_NO_FATAL_FAILURE(
      ExpectBothSucceeded(job, &source_end, &destination_end));

  EXPECT_FALSE(source_end.precopy().converged())
      << source_end.precopy().ShortDebugString();
  EXPECT_GE(source_end.precopy().iteration(), kMaxIterations);
  EXPECT_TRUE(HasNotice(source_end, "did not converge", kIterationCap))
      << "notices: " << absl::StrJoin(source_end.notices(), " | ");
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(names));
}

TEST_F(PrecopyTest, WorkloadAboveTheBandwidthFailsAtTheCapWhenStrict) {
  const std::vector<EmuSpec> devices = Emus(2, kCappedSize, 1, kHeavyWorkload);
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-capped-strict";
  ASSERT_NO_FATAL_FAILURE(Migrate(CappedRequest(
      Request(job, names, ""), v1::MigrationPolicy::ON_NO_CONVERGENCE_FAIL)));
  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));
  EXPECT_EQ(PhaseName(source_end.phase()), PhaseName(v1::PHASE_FAILED))
      << source_end.ShortDebugString();
  EXPECT_EQ(ReasonName(source_end.failure().reason()),
            ReasonName(v1::ERROR_REASON_NOT_CONVERGED))
      << source_end.failure().message();
  EXPECT_TRUE(absl::StrContains(source_end.failure().message(), kIterationCap))
      << "the message should name the cap: " << source_end.failure().message();
  EXPECT_FALSE(source_end.precopy().converged());

  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  EXPECT_NE(PhaseName(destination_end.phase()), PhaseName(v1::PHASE_SUCCEEDED))
      << destination_end.ShortDebugString();

  // The workload keeps changing the source's state while it runs, so its
  // digest cannot be compared with the one before; RUNNING on the source and
  // reset (RUNNING) devices on the destination are what a rollback leaves.
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING);
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);

  // Intact: the same devices migrate in a new job (switching over at the cap
  // this time) and the destination ends with exactly the source's state.
  const std::string retry = "job-after-strict-failure";
  ASSERT_NO_FATAL_FAILURE(Migrate(
      CappedRequest(Request(retry, names, ""),
                    v1::MigrationPolicy::ON_NO_CONVERGENCE_SWITCH_OVER)));
  Migration retry_source, retry_destination;
  ASSERT_NO_FATAL_FAILURE(
      ExpectBothSucceeded(retry, &retry_source, &retry_destination));
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(names));
}

// A device that produces pre-copy data faster than it can be moved: at
// 1 GiB/s of state changes the emulated device re-dirties its 16 MiB faster
// than the agent reads and sends them (on a 2-core machine the device's
// workload leaves the reads about 10 MB/s), so a pass that sends "everything
// available" never ends. The policy's caps must still bound pre-copy: with a
// 2 s time cap and an estimate that can never fit (as above), the strict job
// fails NOT_CONVERGED soon after the cap, and the device runs again. kSlack
// covers the rollback and a loaded machine; the bound is about pre-copy
// ending at all, not about speed.
TEST_F(PrecopyTest, TimeCapEndsPrecopyEvenWhenTheDeviceOutpacesTheTransfer) {
  constexpr absl::Duration kTimeCap = absl::Seconds(2);
  constexpr absl::Duration kSlack = absl::Seconds(15);
  const std::vector<EmuSpec> devices = Emus(1, "16MiB", 1, "dirty_rate=1GiB");
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-outpaced";
  v1::StartMigrationRequest request = CappedRequest(
      Request(job, names, ""), v1::MigrationPolicy::ON_NO_CONVERGENCE_FAIL);
  request.mutable_policy()->set_max_iterations(30);
  SetDuration(kTimeCap, request.mutable_policy()->mutable_max_precopy_time());
  ASSERT_NO_FATAL_FAILURE(Migrate(request));
  absl::StatusOr<Migration> end =
      WaitForEnd(source_->stub(), job, absl::Now() + kTimeCap + kSlack);
  ASSERT_TRUE(end.ok()) << "pre-copy did not end within max_precopy_time "
                        << kTimeCap << " + " << kSlack << ": " << end.status();
  EXPECT_EQ(PhaseName(end->phase()), PhaseName(v1::PHASE_FAILED))
      << end->failure().ShortDebugString();
  EXPECT_EQ(ReasonName(end->failure().reason()),
            ReasonName(v1::ERROR_REASON_NOT_CONVERGED))
      << end->failure().message();
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING);
}

// ---- 3. Switchover acknowledgement -----------------------------------------

// A destination that accepts any session, takes every message and never
// acknowledges anything: TransferService served in the test process.
class NeverAckingDestination final : public v1::TransferService::Service {
 public:
  struct Seen {
    int sessions = 0;                  // control streams (stream_index 0)
    int data_streams = 0;              // stream_index >= 1
    std::vector<std::string> devices;  // from the session header
    uint64_t chunk_bytes = 0;
    std::set<uint32_t> initial_data_end;  // devices whose marker arrived
    bool stop_copy = false;               // a STOP_COPY marker arrived
    bool ended = false;                   // the source ended the session
  };

  grpc::Status Transfer(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::TransferResponse, v1::TransferRequest>*
          stream) override {
    return Serve(stream);
  }
  // A data stream on the data channel: accept it, then take every frame.
  void ServeData(transfer::DataConnection& conn) {
    v1::SessionHeader header;
    if (!transfer::ReadMessage(conn, &header).ok()) return;
    {
      absl::MutexLock lock(&mu_);
      ++seen_.data_streams;
    }
    v1::TransferResponse accepted;
    accepted.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_2);
    if (!transfer::WriteMessage(conn, accepted).ok()) return;
    std::string payload;
    for (;;) {
      transfer::FrameBytes bytes;
      if (!conn.ReadFull(bytes.data(), bytes.size()).ok()) return;
      absl::StatusOr<transfer::Frame> frame = transfer::DecodeFrame(bytes);
      if (!frame.ok() || frame->kind != transfer::FrameKind::kChunk) return;
      payload.resize(frame->length);
      if (!conn.ReadFull(payload.data(), payload.size()).ok()) return;
      absl::MutexLock lock(&mu_);
      seen_.chunk_bytes += frame->length;
    }
  }

  void set_data_port(uint16_t port) { data_port_ = port; }

  Seen seen() const {
    absl::MutexLock lock(&mu_);
    return seen_;
  }

  // True once a session ended before `deadline`.
  bool AwaitEnded(absl::Time deadline) const {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithDeadline(absl::Condition(&seen_.ended), deadline);
  }

 private:
  // Control and data streams alike: accept, then take everything.
  grpc::Status Serve(grpc::ServerReaderWriter<v1::TransferResponse,
                                              v1::TransferRequest>* stream) {
    v1::TransferRequest request;
    if (!stream->Read(&request) || !request.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "want a session header first");
    }
    {
      absl::MutexLock lock(&mu_);
      if (request.header().stream_index() == 0) {
        ++seen_.sessions;
      } else {
        ++seen_.data_streams;
      }
      for (const v1::DeviceDescriptor& d : request.header().devices()) {
        seen_.devices.push_back(d.source_device());
      }
    }
    v1::TransferResponse accepted;
    accepted.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_2);
    accepted.mutable_accepted()->set_data_port(data_port_.load());
    stream->Write(accepted);
    while (stream->Read(&request)) {
      absl::MutexLock lock(&mu_);
      if (request.has_chunk()) {
        seen_.chunk_bytes += request.chunk().data().size();
      } else if (request.has_marker()) {
        if (request.marker().kind() == v1::PhaseMarker::INITIAL_DATA_END) {
          seen_.initial_data_end.insert(request.marker().device());
        } else if (request.marker().kind() == v1::PhaseMarker::STOP_COPY) {
          seen_.stop_copy = true;
        }
      }
    }
    absl::MutexLock lock(&mu_);
    seen_.ended = true;
    return grpc::Status::OK;
  }

  mutable absl::Mutex mu_;
  Seen seen_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint16_t> data_port_{0};
};

TEST_F(PrecopyTest, DestinationThatNeverAcksFailsTheJobAtTheAckTimeout) {
  constexpr absl::Duration kAckTimeout = absl::Seconds(2);
  // No workload: the source's digest must be exactly what it was.
  const std::vector<EmuSpec> devices = Emus(2, "8MiB", 1);
  const std::vector<std::string> names = NamesOf(devices);
  source_ = StartAgent("source", devices);
  ASSERT_NE(source_, nullptr);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  // The fake serves as the next harness agent would: that agent's
  // certificate, the run's CA and policy (so the source's call is checked as
  // an agent's).
  const std::string fake_name = NextAgentOptions("fake-destination").tls_name;
  ASSERT_OK_AND_ASSIGN(RunPki * pki, RunPki::Get());
  ASSERT_OK_AND_ASSIGN(security::TlsFiles fake_files, pki->Files(fake_name));
  ASSERT_OK_AND_ASSIGN(
      std::shared_ptr<security::Credentials> fake_credentials,
      security::Credentials::Tls(fake_files, absl::Seconds(60)));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<security::Authorizer> authorizer,
                       security::Authorizer::Load(pki->ca(), pki->policy()));
  NeverAckingDestination fake;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(
      "127.0.0.1:0", fake_credentials->ServerCredentials(authorizer), &port);
  builder.SetMaxReceiveMessageSize(32 << 20);
  builder.RegisterService(&fake);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);
  transfer::DataListenerOptions data;
  data.address = "127.0.0.1:0";
  data.tls = [fake_files] {
    return security::NewTlsContext(fake_files, security::TlsSide::kServer);
  };
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<transfer::DataListener> listener,
      transfer::DataListener::Start(
          data, [&fake](transfer::DataConnection& conn, const absl::Status&) {
            fake.ServeData(conn);
          }));
  fake.set_data_port(listener->port());
  struct ShutDown {
    grpc::Server* server;
    ~ShutDown() {
      server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    }
  } shut_down{server.get()};

  const std::string job = "job-never-acked";
  v1::StartMigrationRequest request =
      Request(job, names, "any-token", absl::StrCat("127.0.0.1:", port));
  request.set_destination_identity(
      security::testing::TestPki::AgentIdentity(fake_name));
  SetDuration(kAckTimeout,
              request.mutable_policy()->mutable_switchover_ack_timeout());
  const absl::Time started = absl::Now();
  CallResult r = Start(request);
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);

  ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(source_, job));
  const absl::Duration took = absl::Now() - started;
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_FAILED))
      << end.ShortDebugString();
  EXPECT_EQ(ReasonName(end.failure().reason()),
            ReasonName(v1::ERROR_REASON_ACK_TIMEOUT))
      << end.failure().message();
  bool names_a_device = false;
  for (const std::string& name : names) {
    names_a_device =
        names_a_device || absl::StrContains(end.failure().message(), name);
  }
  EXPECT_TRUE(names_a_device)
      << "the message should name the device: " << end.failure().message();
  // At the ack timeout: not before it (the job waited for the
  // acknowledgements), and not only at the 30 s phase timeout; the upper
  // slack covers a loaded machine and the rollback.
  EXPECT_GE(took, kAckTimeout) << absl::FormatDuration(took);
  EXPECT_LT(took, kAckTimeout + absl::Seconds(15))
      << absl::FormatDuration(took);
  for (const v1::DeviceProgress& d : end.devices()) {
    EXPECT_FALSE(d.initial_data_acked()) << d.device();
  }

  // The source asked for the acknowledgements and never switched over
  // without them.
  EXPECT_TRUE(fake.AwaitEnded(absl::Now() + kRpcTimeout))
      << "the source did not end the session";
  NeverAckingDestination::Seen seen = fake.seen();
  EXPECT_EQ(seen.sessions, 1);
  EXPECT_EQ(seen.data_streams, 1);
  EXPECT_EQ(seen.devices, names);
  EXPECT_EQ(seen.initial_data_end, (std::set<uint32_t>{0, 1}));
  EXPECT_GT(seen.chunk_bytes, 0u);
  EXPECT_FALSE(seen.stop_copy) << "the source switched over without the acks";

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING);
  ExpectSameDigests(source_before, source_after, names);
}

// ---- 4. The P2P barrier ----------------------------------------------------

bool IsP2P(v1::DeviceState s) {
  return s == v1::DEVICE_STATE_RUNNING_P2P ||
         s == v1::DEVICE_STATE_PRE_COPY_P2P;
}

std::string Changes(const Migration& m) {
  std::vector<std::string> out;
  for (const v1::StateChange& c : m.state_changes()) {
    out.push_back(absl::StrCat(c.device(), ":", StateName(c.state())));
  }
  return absl::StrJoin(out, " ");
}

// Index of the first change from index `from` on of each device in `names`
// into a state `pred` accepts (-1 when none).
std::map<std::string, int> FirstIndex(
    const Migration& m, const std::vector<std::string>& names, int from,
    const std::function<bool(v1::DeviceState)>& pred) {
  std::map<std::string, int> first;
  for (const std::string& n : names) first[n] = -1;
  for (int i = from; i < m.state_changes_size(); ++i) {
    const v1::StateChange& c = m.state_changes(i);
    auto it = first.find(c.device());
    if (it != first.end() && it->second < 0 && pred(c.state())) it->second = i;
  }
  return first;
}

// Every device reaches a `before` state before any device reaches an
// `after` state, in the changes from index `from` on.
void ExpectBarrier(absl::string_view side, const Migration& m,
                   const std::vector<std::string>& names, int from,
                   const std::function<bool(v1::DeviceState)>& before,
                   const std::function<bool(v1::DeviceState)>& after) {
  SCOPED_TRACE(absl::StrCat(side, " state changes: ", Changes(m)));
  std::map<std::string, int> b = FirstIndex(m, names, from, before);
  std::map<std::string, int> a = FirstIndex(m, names, from, after);
  int last_before = -1;
  int first_after = m.state_changes_size();
  for (const std::string& n : names) {
    ASSERT_GE(b[n], 0) << n << " never reached the barrier state";
    ASSERT_GE(a[n], 0) << n << " never went past the barrier";
    last_before = std::max(last_before, b[n]);
    first_after = std::min(first_after, a[n]);
  }
  EXPECT_LT(last_before, first_after)
      << "a device went past the barrier before every device reached it";
  // The record is in the order things happened.
  for (int i = 1; i < m.state_changes_size(); ++i) {
    const auto& p = m.state_changes(i - 1).time();
    const auto& c = m.state_changes(i).time();
    EXPECT_TRUE(p.seconds() < c.seconds() ||
                (p.seconds() == c.seconds() && p.nanos() <= c.nanos()))
        << "change " << i << " is older than change " << i - 1;
  }
}

// Source: all devices in RUNNING_P2P / PRE_COPY_P2P before any stops.
// Destination (after every device was loaded into RESUMING): all devices in
// RUNNING_P2P before any runs.
void ExpectP2PBarriers(const Migration& source, const Migration& destination,
                       const std::vector<std::string>& names) {
  ExpectBarrier("source", source, names, 0, IsP2P, [](v1::DeviceState s) {
    return s == v1::DEVICE_STATE_STOP_COPY || s == v1::DEVICE_STATE_STOP;
  });
  int after_load = 0;
  for (int i = 0; i < destination.state_changes_size(); ++i) {
    if (destination.state_changes(i).state() == v1::DEVICE_STATE_RESUMING) {
      after_load = i + 1;
    }
  }
  ExpectBarrier(
      "destination", destination, names, after_load,
      [](v1::DeviceState s) { return s == v1::DEVICE_STATE_RUNNING_P2P; },
      [](v1::DeviceState s) { return s == v1::DEVICE_STATE_RUNNING; });
}

TEST_F(PrecopyTest, P2PBarrierHoldsOnBothSidesWithPrecopy) {
  const std::vector<EmuSpec> devices = Emus(3, "8MiB", 1, "dirty_rate=1MiB");
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));
  const std::string job = "job-p2p-barrier";
  ASSERT_NO_FATAL_FAILURE(Migrate(Request(job, names, "")));
  Migration source_end, destination_end;
  ASSERT_NO_FATAL_FAILURE(
      ExpectBothSucceeded(job, &source_end, &destination_end));
  ExpectP2PBarriers(source_end, destination_end, names);
  // With pre-copy the source's quiesced state is PRE_COPY_P2P.
  std::map<std::string, int> pre = FirstIndex(
      source_end, names, 0,
      [](v1::DeviceState s) { return s == v1::DEVICE_STATE_PRE_COPY_P2P; });
  for (const std::string& n : names) {
    EXPECT_GE(pre[n], 0) << n << ": " << Changes(source_end);
  }
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(names));
}

TEST_F(PrecopyTest, P2PBarrierHoldsOnBothSidesWithoutPrecopy) {
  const std::vector<EmuSpec> devices = Emus(3, "8MiB", 1);
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));
  const std::string job = "job-p2p-barrier-stop-copy";
  v1::StartMigrationRequest request = Request(job, names, "");
  request.mutable_policy()->set_disable_precopy(true);
  ASSERT_NO_FATAL_FAILURE(Migrate(request));
  Migration source_end, destination_end;
  ASSERT_NO_FATAL_FAILURE(
      ExpectBothSucceeded(job, &source_end, &destination_end));
  ExpectP2PBarriers(source_end, destination_end, names);
  EXPECT_EQ(source_end.precopy_bytes(), 0u) << "pre-copy was disabled";
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(names));
}

// ---- 5. Mixed P2P
// ------------------------------------------------------------

TEST_F(PrecopyTest, MixedP2PJobIsRefusedUnlessThePolicyAllowsIt) {
  std::vector<EmuSpec> devices = Emus(3, "4MiB", 1);
  devices[1].flags = "STOP_COPY";  // emu1: no P2P (and no PRE_COPY)
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-mixed-p2p";
  const std::string token = PrepareOk(job, names);
  ASSERT_FALSE(token.empty());
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_before,
                       DeviceMap(destination_->stub()));

  CallResult r = Start(Request(job, names, token));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << DescribeCall(r);
  EXPECT_EQ(r.reason, ReasonName(v1::ERROR_REASON_INCOMPATIBLE))
      << DescribeCall(r);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "emu1"))
      << "the message should name the device without P2P: " << DescribeCall(r);

  // Nothing changed on either side.
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  EXPECT_EQ(Describe(source_after), Describe(source_before));
  EXPECT_EQ(Describe(destination_after), Describe(destination_before));
  ASSERT_OK_AND_ASSIGN(Migration prepared,
                       GetMigration(destination_->stub(), job));
  EXPECT_EQ(PhaseName(prepared.phase()), PhaseName(v1::PHASE_PREPARED));
  absl::StatusOr<Migration> on_source = GetMigration(source_->stub(), job);
  EXPECT_TRUE(absl::IsNotFound(on_source.status()))
      << "the refused job left a record on the source: "
      << (on_source.ok() ? on_source->ShortDebugString()
                         : on_source.status().ToString());

  // The policy may allow it; the prepared destination takes the same token.
  v1::StartMigrationRequest allowed = Request(job, names, token);
  allowed.mutable_policy()->set_allow_mixed_p2p(true);
  r = Start(allowed);
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  Migration source_end, destination_end;
  ASSERT_NO_FATAL_FAILURE(
      ExpectBothSucceeded(job, &source_end, &destination_end));
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(names));
}

// ---- 6. Dirty-page service
// ---------------------------------------------------

constexpr uint64_t kDirtyIova = 0x100000;
constexpr uint64_t kDirtyLength = 64 * kMiB;
constexpr uint64_t kDirtyPageSize = 4096;

void AddDirtyTracking(v1::StartMigrationRequest* request) {
  v1::DirtyTracking* dt = request->mutable_dirty_tracking();
  dt->set_page_size(kDirtyPageSize);
  v1::IovaRange* range = dt->add_ranges();
  range->set_iova(kDirtyIova);
  range->set_length(kDirtyLength);
}

// Consumes WatchDirtyPages for a job on a thread of its own until the stream
// ends (or the deadline); joined by the destructor.
class DirtyPagesWatch {
 public:
  DirtyPagesWatch(std::shared_ptr<grpc::Channel> channel, std::string job,
                  absl::Time deadline)
      : stub_(v1::MigrationService::NewStub(std::move(channel))) {
    context_.set_deadline(absl::ToChronoTime(deadline));
    request_.set_job_id(std::move(job));
    thread_ = std::thread([this] {
      std::unique_ptr<grpc::ClientReader<v1::DirtyPages>> reader =
          stub_->WatchDirtyPages(&context_, request_);
      v1::DirtyPages pages;
      while (reader->Read(&pages)) received_.push_back(pages);
      status_ = reader->Finish();
    });
  }

  ~DirtyPagesWatch() {
    if (thread_.joinable()) {
      context_.TryCancel();
      thread_.join();
    }
  }

  // Waits for the stream to end; then received() and status() are final.
  void Join() { thread_.join(); }
  const std::vector<v1::DirtyPages>& received() const { return received_; }
  const grpc::Status& status() const { return status_; }

 private:
  std::unique_ptr<v1::MigrationService::Stub> stub_;
  grpc::ClientContext context_;
  v1::WatchDirtyPagesRequest request_;
  std::vector<v1::DirtyPages> received_;
  grpc::Status status_;
  std::thread thread_;
};

// What one device's dma_write_log says it wrote while logging.
struct DmaTruth {
  bool started = false;  // a "# start" line
  bool stopped = false;  // a "# stop" line after it
  int writes = 0;
  std::set<uint64_t> pages;  // page addresses inside the tracked range
};

// Parses a dma_write_log (see migd/device/emulated_device.h): "0x<iova>
// 0x<length>" per DMA write, '#' lines for logging start and stop.
absl::StatusOr<DmaTruth> ReadDmaWriteLog(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  DmaTruth truth;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    absl::string_view text = line;
    if (text.empty()) continue;
    if (absl::ConsumePrefix(&text, "#")) {
      text = absl::StripAsciiWhitespace(text);
      if (absl::StartsWith(text, "start")) truth.started = true;
      if (absl::StartsWith(text, "stop")) truth.stopped = true;
      continue;
    }
    std::vector<absl::string_view> fields =
        absl::StrSplit(text, ' ', absl::SkipEmpty());
    uint64_t iova = 0, length = 0;
    if (fields.size() != 2 || !absl::ConsumePrefix(&fields[0], "0x") ||
        !absl::ConsumePrefix(&fields[1], "0x") ||
        !absl::SimpleHexAtoi(fields[0], &iova) ||
        !absl::SimpleHexAtoi(fields[1], &length) || length == 0) {
      return absl::DataLossError(
          absl::StrCat(path, ":", line_no, ": bad line \"", line, "\""));
    }
    ++truth.writes;
    const uint64_t lo = std::max(iova, kDirtyIova);
    const uint64_t hi = std::min(iova + length, kDirtyIova + kDirtyLength);
    for (uint64_t a = lo - lo % kDirtyPageSize; a < hi; a += kDirtyPageSize) {
      truth.pages.insert(a);
    }
  }
  return truth;
}

// What the service served for one device.
struct Served {
  int messages = 0;
  bool all_dirty = false;
  bool last_final = false;  // the last message of the device had final set
  std::set<uint64_t> pages;
};

std::map<std::string, Served> Union(const std::vector<v1::DirtyPages>& all) {
  std::map<std::string, Served> out;
  for (const v1::DirtyPages& p : all) {
    Served& s = out[p.device()];
    ++s.messages;
    s.last_final = p.final();
    EXPECT_EQ(p.iova(), kDirtyIova) << p.device();
    EXPECT_EQ(p.length(), kDirtyLength) << p.device();
    EXPECT_EQ(p.page_size(), kDirtyPageSize) << p.device();
    if (p.all_dirty()) {
      s.all_dirty = true;
      continue;
    }
    const uint64_t pages = p.length() / p.page_size();
    EXPECT_EQ(p.bitmap().size(), (pages + 63) / 64 * 8) << p.device();
    for (uint64_t i = 0; i < pages && i / 8 < p.bitmap().size(); ++i) {
      if ((static_cast<uint8_t>(p.bitmap()[i / 8]) >> (i % 8)) & 1) {
        s.pages.insert(p.iova() + i * p.page_size());
      }
    }
  }
  return out;
}

TEST_F(PrecopyTest, ServedDirtyBitmapsEqualThePagesTheDevicesWrote) {
  ASSERT_OK_AND_ASSIGN(std::string dir, MakeTestDir("dma-logs"));
  std::vector<EmuSpec> devices = Emus(2, "32MiB", 1);
  for (EmuSpec& d : devices) {
    d.extra = absl::StrCat("dirty_rate=2MiB dma_rate=5000 dma_write_log=", dir,
                           "/", d.name, ".log");
  }
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-dirty-pages";
  v1::StartMigrationRequest request = Request(job, names, "");
  AddDirtyTracking(&request);
  ASSERT_NO_FATAL_FAILURE(Migrate(request));
  DirtyPagesWatch watch(source_->channel(), job, absl::Now() + kJobTimeout);
  Migration source_end, destination_end;
  ASSERT_NO_FATAL_FAILURE(
      ExpectBothSucceeded(job, &source_end, &destination_end));
  watch.Join();
  EXPECT_TRUE(watch.status().ok())
      << "WatchDirtyPages: " << watch.status().error_code() << " "
      << watch.status().error_message();

  std::map<std::string, Served> served = Union(watch.received());
  for (const std::string& name : names) {
    SCOPED_TRACE(absl::StrCat("device ", name));
    ASSERT_OK_AND_ASSIGN(DmaTruth truth,
                         ReadDmaWriteLog(absl::StrCat(dir, "/", name, ".log")));
    EXPECT_TRUE(truth.started) << "DMA logging never started";
    EXPECT_TRUE(truth.stopped) << "DMA logging was not stopped at the end";
    ASSERT_FALSE(truth.pages.empty())
        << "the device wrote nothing while logging; the test proves nothing";
    ASSERT_EQ(served.count(name), 1u) << "nothing served for the device";
    const Served& s = served[name];
    EXPECT_FALSE(s.all_dirty);
    EXPECT_TRUE(s.last_final) << "the last bitmap served is not final";
    std::vector<uint64_t> missing, extra;
    std::set_difference(truth.pages.begin(), truth.pages.end(), s.pages.begin(),
                        s.pages.end(), std::back_inserter(missing));
    std::set_difference(s.pages.begin(), s.pages.end(), truth.pages.begin(),
                        truth.pages.end(), std::back_inserter(extra));
    EXPECT_TRUE(missing.empty() && extra.empty())
        << truth.writes << " writes on " << truth.pages.size() << " pages; "
        << s.messages << " bitmaps served with " << s.pages.size() << " pages; "
        << missing.size() << " written pages not served (first 0x"
        << absl::StrCat(absl::Hex(missing.empty() ? 0 : missing[0])) << "), "
        << extra.size() << " served pages never written (first 0x"
        << absl::StrCat(absl::Hex(extra.empty() ? 0 : extra[0])) << ")";
    std::cerr << name << ": " << truth.writes << " DMA writes on "
              << truth.pages.size() << " pages, " << s.messages
              << " bitmaps served\n";
  }
  EXPECT_EQ(served.size(), names.size());
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(names));
}

TEST_F(PrecopyTest, DeviceWithoutDmaLoggingIsServedAllDirtyAndSaysSo) {
  ASSERT_OK_AND_ASSIGN(std::string dir, MakeTestDir("dma-logs"));
  std::vector<EmuSpec> devices = Emus(2, "16MiB", 1);
  devices[0].extra =
      absl::StrCat("dma_rate=5000 dma_write_log=", dir, "/emu0.log");
  devices[1].extra = "dma_logging=off";  // emu1 cannot report
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-dirty-pages-all-dirty";
  v1::StartMigrationRequest request = Request(job, names, "");
  AddDirtyTracking(&request);
  ASSERT_NO_FATAL_FAILURE(Migrate(request));
  DirtyPagesWatch watch(source_->channel(), job, absl::Now() + kJobTimeout);
  Migration source_end, destination_end;
  ASSERT_NO_FATAL_FAILURE(
      ExpectBothSucceeded(job, &source_end, &destination_end));
  watch.Join();
  EXPECT_TRUE(watch.status().ok()) << watch.status().error_message();

  std::map<std::string, Served> served = Union(watch.received());
  ASSERT_EQ(served.count("emu1"), 1u);
  EXPECT_TRUE(served["emu1"].all_dirty);
  EXPECT_TRUE(served["emu1"].last_final);
  EXPECT_TRUE(HasNotice(source_end, "emu1", "dirty"))
      << "notices: " << absl::StrJoin(source_end.notices(), " | ");
  // The device that can report still reports exactly.
  ASSERT_EQ(served.count("emu0"), 1u);
  EXPECT_FALSE(served["emu0"].all_dirty);
  ASSERT_OK_AND_ASSIGN(DmaTruth truth,
                       ReadDmaWriteLog(absl::StrCat(dir, "/emu0.log")));
  EXPECT_EQ(served["emu0"].pages, truth.pages);
  EXPECT_FALSE(HasNotice(source_end, "emu0", "dirty"))
      << "notices: " << absl::StrJoin(source_end.notices(), " | ");
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(names));
}

// ---- 7. Downtime accounting
// ----------------------------------------------------

TEST_F(PrecopyTest, DowntimeIsAccountedPerJobAndPerDevice) {
  const std::vector<EmuSpec> devices = Emus(2, "16MiB", 1, "dirty_rate=2MiB");
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));
  const std::string job = "job-downtime";
  ASSERT_NO_FATAL_FAILURE(Migrate(Request(job, names, "")));
  Migration ended, destination_end;
  ASSERT_NO_FATAL_FAILURE(ExpectBothSucceeded(job, &ended, &destination_end));

  ASSERT_OK_AND_ASSIGN(Migration m, GetMigration(source_->stub(), job));
  ASSERT_TRUE(m.has_downtime_breakdown()) << m.ShortDebugString();
  const v1::DowntimeBreakdown& b = m.downtime_breakdown();
  std::cerr << "downtime breakdown {" << b.ShortDebugString() << "}\n";
  EXPECT_TRUE(b.has_total() && b.has_stop_copy_transfer() && b.has_load() &&
              b.has_resume())
      << b.ShortDebugString();
  const absl::Duration total = FromProtoDuration(b.total());
  const absl::Duration transfer = FromProtoDuration(b.stop_copy_transfer());
  const absl::Duration load = FromProtoDuration(b.load());
  const absl::Duration resume = FromProtoDuration(b.resume());
  EXPECT_GT(total, absl::ZeroDuration());
  EXPECT_GT(transfer, absl::ZeroDuration());
  EXPECT_GT(load, absl::ZeroDuration());
  EXPECT_GT(resume, absl::ZeroDuration());
  EXPECT_GE(total, transfer);
  // The parts happen one after the other inside the total: transfer on the
  // source, then load and resume on the destination. Allowance: the source
  // reads its clock for the end of the transfer after its COMMIT write
  // returned, by which time the destination may already be loading.
  EXPECT_GE(total + absl::Milliseconds(20), transfer + load + resume)
      << b.ShortDebugString();
  EXPECT_EQ(FromProtoDuration(m.downtime()), total)
      << "Migration.downtime and the breakdown's total disagree";

  ASSERT_EQ(m.devices_size(), 2);
  for (const v1::DeviceProgress& d : m.devices()) {
    SCOPED_TRACE(d.device());
    ASSERT_TRUE(d.has_downtime()) << d.ShortDebugString();
    const v1::DowntimeBreakdown& db = d.downtime();
    EXPECT_TRUE(db.has_total() && db.has_stop_copy_transfer() &&
                db.has_load() && db.has_resume())
        << db.ShortDebugString();
    EXPECT_GT(FromProtoDuration(db.total()), absl::ZeroDuration());
    EXPECT_GE(FromProtoDuration(db.total()),
              FromProtoDuration(db.stop_copy_transfer()));
    // A device's share is part of the job's downtime.
    EXPECT_LE(FromProtoDuration(db.total()), total) << db.ShortDebugString();
  }

  // The destination reports its own downtime too.
  EXPECT_GT(FromProtoDuration(destination_end.downtime()),
            absl::ZeroDuration());
}

}  // namespace
}  // namespace migd::e2e
