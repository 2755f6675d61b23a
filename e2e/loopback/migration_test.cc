// e2e/loopback/migration_test.cc
//
// Loopback tier: two real migd agents on 127.0.0.1 with emulated devices,
// driven through the public MigrationService the way a control plane would
// drive them. The agents serve mutual TLS (one test runs them --insecure):
// the test calls as the operator and binds each transfer token to the
// source agent's identity. Each test starts its own agents (see
// e2e/testing/agent_process.h) and waits on conditions with deadlines, never
// on sleeps.

#include <csignal>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/device_checks.h"
#include "e2e/testing/status_macros.h"
#include "gtest/gtest.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace migd::e2e {
namespace {

using ::migd::v1::Device;
using ::migd::v1::Migration;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// Deadlines. Generous for a loaded 2-core machine; a healthy run takes a
// fraction of each.
constexpr absl::Duration kRpcTimeout = absl::Seconds(30);
constexpr absl::Duration kJobTimeout = absl::Seconds(60);

// Large states and the smallest chunk, so a transfer takes long enough to be
// interrupted while its bytes are moving.
constexpr int kSlowDevices = 2;
constexpr absl::string_view kSlowStateSize = "256MiB";
constexpr uint32_t kSmallestChunk = 4096;

using Pairs = std::vector<std::pair<std::string, std::string>>;

std::string ReasonName(v1::ErrorReason reason) {
  return v1::ErrorReason_Name(reason);
}

std::string Lower(absl::string_view s) { return absl::AsciiStrToLower(s); }

// Device pairs that map each name to the same name on the other side.
Pairs SameNames(const std::vector<std::string>& names) {
  Pairs pairs;
  for (const std::string& name : names) pairs.emplace_back(name, name);
  return pairs;
}

std::vector<std::string> EmuNames(int count) {
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) names.push_back(absl::StrCat("emu", i));
  return names;
}

// Flags for an agent with `count` emulated devices emu0.. of `size` each
// (serving mutual TLS, as the harness sets it up).
std::vector<std::string> EmulatedFlags(int count, absl::string_view size,
                                       int seed) {
  std::string names;
  for (const std::string& name : EmuNames(count)) {
    absl::StrAppend(&names, names.empty() ? "" : ",", name);
  }
  return {absl::StrCat("--emulated_devices=", names),
          absl::StrCat("--emulated_state_size=", size),
          absl::StrCat("--emulated_seed=", seed)};
}

// Result of a unary RPC: its status and the "migd-error-reason" trailer.
struct RpcResult {
  grpc::Status status;
  std::string reason;
};

std::ostream& operator<<(std::ostream& os, const RpcResult& r) {
  return os << "code " << r.status.error_code() << " reason '" << r.reason
            << "' message '" << r.status.error_message() << "'";
}

void FillPairs(const Pairs& pairs,
               google::protobuf::RepeatedPtrField<v1::DevicePair>* out) {
  for (const auto& [source, destination] : pairs) {
    v1::DevicePair* pair = out->Add();
    pair->set_source_device(source);
    pair->set_destination_device(destination);
  }
}

// PrepareIncoming on `destination` for a job whose source is `source`: the
// transfer token is bound to the source's identity (none when insecure).
RpcResult Prepare(AgentProcess& destination, const AgentProcess& source,
                  absl::string_view job_id, const Pairs& pairs,
                  v1::PrepareIncomingResponse* response) {
  v1::PrepareIncomingRequest request;
  request.set_job_id(std::string(job_id));
  FillPairs(pairs, request.mutable_devices());
  request.set_source("loopback-test");
  request.set_source_identity(source.identity());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  RpcResult result;
  result.status =
      destination.stub().PrepareIncoming(&context, request, response);
  result.reason = ErrorReasonOf(context);
  return result;
}

v1::StartMigrationRequest StartRequest(absl::string_view job_id,
                                       const Pairs& pairs,
                                       absl::string_view destination,
                                       absl::string_view token,
                                       uint32_t chunk_bytes = 0) {
  v1::StartMigrationRequest request;
  request.set_job_id(std::string(job_id));
  FillPairs(pairs, request.mutable_devices());
  request.set_destination(std::string(destination));
  request.set_transfer_token(std::string(token));
  request.mutable_policy()->mutable_phase_timeout()->set_seconds(30);
  if (chunk_bytes != 0) request.mutable_policy()->set_chunk_bytes(chunk_bytes);
  return request;
}

RpcResult Start(AgentProcess& source, const v1::StartMigrationRequest& request,
                Migration* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  RpcResult result;
  result.status = source.stub().StartMigration(&context, request, response);
  result.reason = ErrorReasonOf(context);
  return result;
}

RpcResult Cancel(AgentProcess& agent, absl::string_view job_id,
                 Migration* response) {
  v1::CancelMigrationRequest request;
  request.set_job_id(std::string(job_id));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  RpcResult result;
  result.status = agent.stub().CancelMigration(&context, request, response);
  result.reason = ErrorReasonOf(context);
  return result;
}

absl::StatusOr<std::vector<Migration>> ListMigrations(AgentProcess& agent) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  v1::ListMigrationsResponse response;
  grpc::Status status = agent.stub().ListMigrations(
      &context, v1::ListMigrationsRequest(), &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return std::vector<Migration>(response.migrations().begin(),
                                response.migrations().end());
}

// Same devices, each in the same state, held by the same job, same digest.
void ExpectUnchanged(absl::string_view agent, const DeviceMapT& before,
                     const DeviceMapT& after) {
  EXPECT_EQ(Describe(before), Describe(after))
      << agent << ": devices changed (before vs after)";
}

// ---------------------------------------------------------------------------

class MigrationTest : public AgentTest {
 protected:
  // Starts a source (seed 1) and a destination (seed 2) agent, each with
  // `count` emulated devices of `size`.
  void StartPair(int count, absl::string_view size,
                 std::vector<std::string> source_extra = {},
                 std::vector<std::string> destination_extra = {}) {
    std::vector<std::string> source_flags = EmulatedFlags(count, size, 1);
    source_flags.insert(source_flags.end(), source_extra.begin(),
                        source_extra.end());
    source_ = StartAgent("source", source_flags);
    ASSERT_NE(source_, nullptr);
    std::vector<std::string> destination_flags = EmulatedFlags(count, size, 2);
    destination_flags.insert(destination_flags.end(), destination_extra.begin(),
                             destination_extra.end());
    destination_ = StartAgent("destination", destination_flags);
    ASSERT_NE(destination_, nullptr);
  }

  // PrepareIncoming on the destination; returns the transfer token.
  std::string PrepareOk(absl::string_view job_id, const Pairs& pairs) {
    v1::PrepareIncomingResponse response;
    RpcResult r = Prepare(*destination_, *source_, job_id, pairs, &response);
    EXPECT_TRUE(r.status.ok()) << "PrepareIncoming " << job_id << ": " << r;
    EXPECT_FALSE(response.transfer_token().empty());
    EXPECT_EQ(v1::Phase_Name(response.migration().phase()),
              v1::Phase_Name(v1::PHASE_PREPARED));
    return response.transfer_token();
  }

  // Prepares the destination and starts the job on the source.
  void BeginMigration(absl::string_view job_id, const Pairs& pairs,
                      uint32_t chunk_bytes = 0, uint32_t streams = 0) {
    std::string token = PrepareOk(job_id, pairs);
    ASSERT_FALSE(token.empty());
    Migration started;
    v1::StartMigrationRequest request = StartRequest(
        job_id, pairs, destination_->address(), token, chunk_bytes);
    request.set_destination_identity(destination_->identity());
    request.mutable_policy()->set_streams(streams);
    RpcResult r = Start(*source_, request, &started);
    ASSERT_TRUE(r.status.ok()) << "StartMigration " << job_id << ": " << r;
    EXPECT_EQ(started.job_id(), job_id);
    EXPECT_EQ(v1::Role_Name(started.role()), v1::Role_Name(v1::ROLE_SOURCE));
  }

  // Waits until the source job has moved some bytes in a transfer phase.
  void WaitUntilTransferring(absl::string_view job_id) {
    absl::StatusOr<Migration> m = WaitForPhase(
        source_->stub(), job_id,
        [](const Migration& m) {
          return m.bytes_done() > 0 && IsTransferPhase(m.phase());
        },
        absl::Now() + kJobTimeout);
    ASSERT_TRUE(m.ok()) << m.status();
    std::cerr << "interrupting " << job_id << " in "
              << v1::Phase_Name(m->phase()) << " at " << m->bytes_done()
              << " of " << m->bytes_total() << " bytes\n";
    if (m->bytes_total() > 0) {
      ASSERT_LT(m->bytes_done(), m->bytes_total())
          << "transfer already complete; the interruption would come too late";
    }
  }

  absl::StatusOr<Migration> WaitEnd(AgentProcess* agent,
                                    absl::string_view job_id) {
    return WaitForEnd(agent->stub(), job_id, absl::Now() + kJobTimeout);
  }
};

// ---- Success ---------------------------------------------------------------

TEST_F(MigrationTest, ThreeDevicesArriveWithTheSourceState) {
  constexpr uint64_t kStateBytes = 64 * kMiB;
  ASSERT_NO_FATAL_FAILURE(StartPair(3, "64MiB"));
  const std::vector<std::string> names = EmuNames(3);

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_before,
                       DeviceMap(destination_->stub()));
  ExpectDevices("source", source_before, names, v1::DEVICE_STATE_RUNNING);
  ExpectDevices("destination", destination_before, names,
                v1::DEVICE_STATE_RUNNING);
  for (const std::string& name : names) {
    ASSERT_FALSE(source_before[name].state_digest().empty()) << name;
    ASSERT_NE(source_before[name].state_digest(),
              destination_before[name].state_digest())
        << name << ": the test needs different states on the two sides";
  }

  const std::string job = "job-three-devices";
  const std::string token = PrepareOk(job, SameNames(names));
  ASSERT_FALSE(token.empty());
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_prepared,
                       DeviceMap(destination_->stub()));
  for (const std::string& name : names) {
    EXPECT_EQ(StateName(destination_prepared[name].state()),
              StateName(v1::DEVICE_STATE_RESUMING))
        << name;
    EXPECT_EQ(destination_prepared[name].job_id(), job) << name;
  }

  Migration started;
  v1::StartMigrationRequest request =
      StartRequest(job, SameNames(names), destination_->address(), token);
  request.set_destination_identity(destination_->identity());
  RpcResult r = Start(*source_, request, &started);
  ASSERT_TRUE(r.status.ok()) << r;

  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  EXPECT_EQ(v1::Phase_Name(source_end.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << source_end.ShortDebugString();
  EXPECT_EQ(v1::Phase_Name(destination_end.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << destination_end.ShortDebugString();
  EXPECT_EQ(v1::Role_Name(destination_end.role()),
            v1::Role_Name(v1::ROLE_DESTINATION));
  EXPECT_GE(source_end.bytes_done(), 3 * kStateBytes);
  EXPECT_GE(destination_end.bytes_done(), 3 * kStateBytes);
  // The data path copies no payload in user space on either side: device
  // reads land in pooled buffers handed to gRPC, and received buffers are
  // written to the device as they came off the socket.
  EXPECT_EQ(source_end.payload_copies(), 0u);
  EXPECT_EQ(destination_end.payload_copies(), 0u);
  EXPECT_EQ(source_end.devices_size(), 3);
  EXPECT_EQ(destination_end.devices_size(), 3);
  for (const Migration* end : {&source_end, &destination_end}) {
    SCOPED_TRACE(v1::Role_Name(end->role()));
    EXPECT_TRUE(end->has_finished());
    EXPECT_GT(end->downtime().seconds() + end->downtime().nanos(), 0);
  }
  EXPECT_GT(source_end.throughput_bytes_per_second(), 0);
  // Each side records who the other was, by certificate.
  EXPECT_EQ(source_end.peer_identity(), destination_->identity());
  EXPECT_EQ(destination_end.peer_identity(), source_->identity());

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  // The source keeps its (stopped) state; the destination now holds it.
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_STOP,
                &source_before);
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING, &source_before);
}

// Without TLS (--insecure, on a trusted network) agents still migrate; no
// identities are named or recorded.
TEST_F(MigrationTest, InsecureAgentsMigrateWithoutIdentities) {
  ASSERT_NO_FATAL_FAILURE(
      StartPair(2, "16MiB", {"--insecure"}, {"--insecure"}));
  ASSERT_TRUE(source_->insecure() && destination_->insecure());
  ASSERT_EQ(source_->identity(), "");
  const std::vector<std::string> names = EmuNames(2);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-insecure";
  ASSERT_NO_FATAL_FAILURE(BeginMigration(job, SameNames(names)));
  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  for (const Migration* end : {&source_end, &destination_end}) {
    SCOPED_TRACE(v1::Role_Name(end->role()));
    EXPECT_EQ(v1::Phase_Name(end->phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED))
        << end->ShortDebugString();
    EXPECT_EQ(end->peer_identity(), "");
  }
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING, &source_before);
}

// ---- Devices in the state a migration left them in ------------------------

// Migrates `pairs` from `from` to `to` as job `job_id` (the token bound to
// `from`'s identity, `to`'s identity expected) and waits until both ends
// succeeded.
void MigrateOk(AgentProcess& from, AgentProcess& to, absl::string_view job_id,
               const Pairs& pairs) {
  v1::PrepareIncomingResponse prepared;
  RpcResult r = Prepare(to, from, job_id, pairs, &prepared);
  ASSERT_TRUE(r.status.ok())
      << "PrepareIncoming " << job_id << " on " << to.name() << ": " << r;
  v1::StartMigrationRequest request =
      StartRequest(job_id, pairs, to.address(), prepared.transfer_token());
  request.set_destination_identity(to.identity());
  Migration started;
  r = Start(from, request, &started);
  ASSERT_TRUE(r.status.ok())
      << "StartMigration " << job_id << " on " << from.name() << ": " << r;
  for (AgentProcess* agent : {&from, &to}) {
    absl::StatusOr<Migration> end =
        WaitForEnd(agent->stub(), job_id, absl::Now() + kJobTimeout);
    ASSERT_TRUE(end.ok()) << agent->name() << ": " << end.status();
    ASSERT_EQ(v1::Phase_Name(end->phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED))
        << agent->name() << ": " << end->ShortDebugString();
  }
}

// A VM that migrated A -> B can migrate back B -> A: A's devices, left in STOP
// by the first migration, are idle and accepted as destinations (STOP ->
// RESUMING, no reset), and the state is the same at every step.
TEST_F(MigrationTest, RoundTripAToBToAKeepsTheState) {
  ASSERT_NO_FATAL_FAILURE(StartPair(2, "16MiB"));
  AgentProcess& a = *source_;
  AgentProcess& b = *destination_;
  const std::vector<std::string> names = EmuNames(2);
  ASSERT_OK_AND_ASSIGN(DeviceMapT a_before, DeviceMap(a.stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT b_before, DeviceMap(b.stub()));
  for (const std::string& name : names) {
    ASSERT_NE(a_before[name].state_digest(), b_before[name].state_digest())
        << name << ": the test needs different states on the two agents";
  }

  ASSERT_NO_FATAL_FAILURE(MigrateOk(a, b, "job-a-to-b", SameNames(names)));
  ASSERT_OK_AND_ASSIGN(DeviceMapT a_after_out, DeviceMap(a.stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT b_after_in, DeviceMap(b.stub()));
  ExpectDevices("A after A -> B", a_after_out, names, v1::DEVICE_STATE_STOP,
                &a_before);
  ExpectDevices("B after A -> B", b_after_in, names, v1::DEVICE_STATE_RUNNING,
                &a_before);

  ASSERT_NO_FATAL_FAILURE(MigrateOk(b, a, "job-b-to-a", SameNames(names)));
  ASSERT_OK_AND_ASSIGN(DeviceMapT a_back, DeviceMap(a.stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT b_after_out, DeviceMap(b.stub()));
  ExpectDevices("A after B -> A", a_back, names, v1::DEVICE_STATE_RUNNING,
                &a_before);
  ExpectDevices("B after B -> A", b_after_out, names, v1::DEVICE_STATE_STOP,
                &a_before);

  // On A the way back began with the arc STOP -> RESUMING: no reset, nothing
  // to notice.
  ASSERT_OK_AND_ASSIGN(Migration back, GetMigration(a.stub(), "job-b-to-a"));
  EXPECT_EQ(back.notices_size(), 0) << back.ShortDebugString();
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    std::vector<std::string> states;
    for (const v1::StateChange& c : back.state_changes()) {
      if (c.device() == name) states.push_back(StateName(c.state()));
    }
    ASSERT_FALSE(states.empty());
    EXPECT_EQ(states.front(), StateName(v1::DEVICE_STATE_RESUMING));
    EXPECT_EQ(states.back(), StateName(v1::DEVICE_STATE_RUNNING));
  }
}

// A device a completed migration left in STOP runs no VM: it is not a source
// (its state may run elsewhere already). The refusal says so and what the
// owner does, and changes nothing.
TEST_F(MigrationTest, AStoppedDeviceIsRefusedAsASourceAsIdle) {
  ASSERT_NO_FATAL_FAILURE(StartPair(1, "4MiB"));
  const std::vector<std::string> names = EmuNames(1);
  ASSERT_NO_FATAL_FAILURE(
      MigrateOk(*source_, *destination_, "job-out", SameNames(names)));
  ASSERT_OK_AND_ASSIGN(DeviceMapT before, DeviceMap(source_->stub()));
  ExpectDevices("source", before, names, v1::DEVICE_STATE_STOP);

  // The check comes before any connection: no prepared job is needed.
  v1::StartMigrationRequest request =
      StartRequest("job-again", SameNames(names), destination_->address(),
                   "not-a-prepared-token");
  request.set_destination_identity(destination_->identity());
  Migration started;
  RpcResult r = Start(*source_, request, &started);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << r;
  EXPECT_EQ(r.reason, ReasonName(v1::ERROR_REASON_DEVICE_ERROR)) << r;
  const std::string& message = r.status.error_message();
  EXPECT_TRUE(absl::StrContains(message, "device emu0 is STOP")) << message;
  EXPECT_TRUE(absl::StrContains(message, "idle")) << message;
  EXPECT_TRUE(absl::StrContains(message, "resumes it (RUNNING)")) << message;
  ASSERT_OK_AND_ASSIGN(DeviceMapT after, DeviceMap(source_->stub()));
  ExpectUnchanged("source", before, after);
}

// ---- Interruptions mid-transfer --------------------------------------------

TEST_F(MigrationTest, SourceRollsBackWhenDestinationIsKilledMidTransfer) {
  ASSERT_NO_FATAL_FAILURE(StartPair(kSlowDevices, kSlowStateSize));
  const std::vector<std::string> names = EmuNames(kSlowDevices);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-destination-killed";
  ASSERT_NO_FATAL_FAILURE(
      BeginMigration(job, SameNames(names), kSmallestChunk));
  ASSERT_NO_FATAL_FAILURE(WaitUntilTransferring(job));
  ASSERT_TRUE(destination_->Kill(SIGKILL).ok());

  ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(source_, job));
  EXPECT_EQ(v1::Phase_Name(end.phase()), v1::Phase_Name(v1::PHASE_FAILED))
      << end.ShortDebugString();
  EXPECT_EQ(ReasonName(end.failure().reason()),
            ReasonName(v1::ERROR_REASON_PEER_UNAVAILABLE))
      << end.failure().message();
  EXPECT_FALSE(end.failure().message().empty());

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING,
                &source_before);
}

TEST_F(MigrationTest, CancelOnTheSourceMidTransferRollsBackBothSides) {
  ASSERT_NO_FATAL_FAILURE(StartPair(kSlowDevices, kSlowStateSize));
  const std::vector<std::string> names = EmuNames(kSlowDevices);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-cancelled";
  ASSERT_NO_FATAL_FAILURE(
      BeginMigration(job, SameNames(names), kSmallestChunk));
  ASSERT_NO_FATAL_FAILURE(WaitUntilTransferring(job));
  Migration cancelled;
  RpcResult r = Cancel(*source_, job, &cancelled);
  ASSERT_TRUE(r.status.ok()) << r;

  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));
  EXPECT_EQ(v1::Phase_Name(source_end.phase()),
            v1::Phase_Name(v1::PHASE_CANCELLED))
      << source_end.ShortDebugString();
  EXPECT_EQ(ReasonName(source_end.failure().reason()),
            ReasonName(v1::ERROR_REASON_CANCELLED));
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING,
                &source_before);

  // The source's ABORT reaches the destination before its streams drop: the
  // destination job ends CANCELLED too, not as a lost peer.
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  EXPECT_EQ(v1::Phase_Name(destination_end.phase()),
            v1::Phase_Name(v1::PHASE_CANCELLED))
      << destination_end.ShortDebugString();
  EXPECT_EQ(ReasonName(destination_end.failure().reason()),
            ReasonName(v1::ERROR_REASON_CANCELLED))
      << destination_end.failure().message();
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);

  // Cancelling an ended job is a no-op.
  r = Cancel(*source_, job, &cancelled);
  EXPECT_TRUE(r.status.ok()) << r;
  EXPECT_EQ(v1::Phase_Name(cancelled.phase()),
            v1::Phase_Name(v1::PHASE_CANCELLED));

  // Nothing was left half-migrated: the same devices migrate in a new job.
  const std::string retry = "job-after-cancel";
  ASSERT_NO_FATAL_FAILURE(BeginMigration(retry, SameNames(names)));
  ASSERT_OK_AND_ASSIGN(Migration retry_end, WaitEnd(source_, retry));
  EXPECT_EQ(v1::Phase_Name(retry_end.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << retry_end.ShortDebugString();
  ASSERT_OK_AND_ASSIGN(Migration retry_destination_end,
                       WaitEnd(destination_, retry));
  EXPECT_EQ(v1::Phase_Name(retry_destination_end.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << retry_destination_end.ShortDebugString();
  ASSERT_OK_AND_ASSIGN(destination_after, DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING, &source_before);
}

TEST_F(MigrationTest, CancelOnTheDestinationMidTransferEndsBothJobs) {
  ASSERT_NO_FATAL_FAILURE(StartPair(kSlowDevices, kSlowStateSize));
  const std::vector<std::string> names = EmuNames(kSlowDevices);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-cancelled-on-destination";
  ASSERT_NO_FATAL_FAILURE(
      BeginMigration(job, SameNames(names), kSmallestChunk));
  ASSERT_NO_FATAL_FAILURE(WaitUntilTransferring(job));
  Migration cancelled;
  RpcResult r = Cancel(*destination_, job, &cancelled);
  ASSERT_TRUE(r.status.ok()) << r;

  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  EXPECT_EQ(v1::Phase_Name(destination_end.phase()),
            v1::Phase_Name(v1::PHASE_CANCELLED))
      << destination_end.ShortDebugString();
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);

  // The source learns the destination cancelled, and says so.
  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));
  EXPECT_EQ(v1::Phase_Name(source_end.phase()),
            v1::Phase_Name(v1::PHASE_CANCELLED))
      << source_end.ShortDebugString();
  EXPECT_EQ(source_end.failure().reason(), v1::ERROR_REASON_CANCELLED);
  EXPECT_NE(source_end.failure().message().find("destination cancelled"),
            std::string::npos)
      << source_end.failure().message();
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING,
                &source_before);
}

TEST_F(MigrationTest, CancellingAPreparedDestinationResetsItsDevices) {
  ASSERT_NO_FATAL_FAILURE(StartPair(2, "1MiB"));
  const std::vector<std::string> names = EmuNames(2);
  const std::string job = "job-prepared-then-cancelled";
  ASSERT_FALSE(PrepareOk(job, SameNames(names)).empty());

  Migration cancelled;
  RpcResult r = Cancel(*destination_, job, &cancelled);
  ASSERT_TRUE(r.status.ok()) << r;
  ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(destination_, job));
  EXPECT_EQ(v1::Phase_Name(end.phase()), v1::Phase_Name(v1::PHASE_CANCELLED))
      << end.ShortDebugString();
  EXPECT_EQ(ReasonName(end.failure().reason()),
            ReasonName(v1::ERROR_REASON_CANCELLED));
  ASSERT_OK_AND_ASSIGN(DeviceMapT after, DeviceMap(destination_->stub()));
  ExpectDevices("destination", after, names, v1::DEVICE_STATE_RUNNING);
}

// ---- Requests refused synchronously ----------------------------------------
//
// Each checks the code, the reason trailer, that the message names what was
// wrong, and that neither agent changed anything.

class RefusedRequestTest : public MigrationTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(StartPair(2, "1MiB"));
    names_ = EmuNames(2);
  }

  void Snapshot() {
    ASSERT_OK_AND_ASSIGN(source_before_, DeviceMap(source_->stub()));
    ASSERT_OK_AND_ASSIGN(destination_before_, DeviceMap(destination_->stub()));
  }

  void ExpectNothingChanged() {
    ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
    ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                         DeviceMap(destination_->stub()));
    ExpectUnchanged("source", source_before_, source_after);
    ExpectUnchanged("destination", destination_before_, destination_after);
  }

  static void ExpectRefused(const RpcResult& r, grpc::StatusCode code,
                            v1::ErrorReason reason,
                            absl::string_view names_this) {
    EXPECT_EQ(r.status.error_code(), code) << r;
    EXPECT_EQ(r.reason, ReasonName(reason)) << r;
    EXPECT_TRUE(
        absl::StrContains(Lower(r.status.error_message()), Lower(names_this)))
        << "message should name '" << names_this << "': " << r;
  }

  void ExpectJobPhase(AgentProcess* agent, absl::string_view job,
                      v1::Phase phase) {
    ASSERT_OK_AND_ASSIGN(Migration m, GetMigration(agent->stub(), job));
    EXPECT_EQ(v1::Phase_Name(m.phase()), v1::Phase_Name(phase))
        << m.ShortDebugString();
  }

  std::vector<std::string> names_;
  DeviceMapT source_before_;
  DeviceMapT destination_before_;
};

TEST_F(RefusedRequestTest, UnpreparedDestinationIsFailedPrecondition) {
  ASSERT_NO_FATAL_FAILURE(Snapshot());
  ASSERT_OK_AND_ASSIGN(std::vector<Migration> destination_jobs,
                       ListMigrations(*destination_));
  const std::string job = "job-never-prepared";
  Migration m;
  RpcResult r = Start(
      *source_,
      StartRequest(job, SameNames(names_), destination_->address(), "no-token"),
      &m);
  ExpectRefused(r, grpc::StatusCode::FAILED_PRECONDITION,
                v1::ERROR_REASON_NOT_PREPARED, job);
  ExpectNothingChanged();
  ASSERT_OK_AND_ASSIGN(std::vector<Migration> destination_jobs_after,
                       ListMigrations(*destination_));
  EXPECT_EQ(destination_jobs_after.size(), destination_jobs.size())
      << "the destination recorded a job it was never asked to prepare";
}

TEST_F(RefusedRequestTest, WrongTokenIsPermissionDeniedAndTheRightOneWorks) {
  const std::string job = "job-wrong-token";
  const std::string token = PrepareOk(job, SameNames(names_));
  ASSERT_FALSE(token.empty());
  ASSERT_NO_FATAL_FAILURE(Snapshot());

  const std::string wrong = token + "x";
  Migration m;
  RpcResult r = Start(
      *source_,
      StartRequest(job, SameNames(names_), destination_->address(), wrong), &m);
  ExpectRefused(r, grpc::StatusCode::PERMISSION_DENIED,
                v1::ERROR_REASON_BAD_TOKEN, "token");
  EXPECT_FALSE(absl::StrContains(r.status.error_message(), token))
      << "the error message leaks the transfer token";
  ExpectNothingChanged();
  ExpectJobPhase(destination_, job, v1::PHASE_PREPARED);

  // The prepared destination still takes the right token, for the same job.
  r = Start(
      *source_,
      StartRequest(job, SameNames(names_), destination_->address(), token), &m);
  ASSERT_TRUE(r.status.ok()) << r;
  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  EXPECT_EQ(v1::Phase_Name(source_end.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << source_end.ShortDebugString();
  EXPECT_EQ(v1::Phase_Name(destination_end.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED))
      << destination_end.ShortDebugString();
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names_,
                v1::DEVICE_STATE_RUNNING, &source_before_);
}

TEST_F(RefusedRequestTest, UnknownDestinationDeviceIsNotFound) {
  ASSERT_NO_FATAL_FAILURE(Snapshot());
  const std::string job = "job-unknown-destination-device";
  v1::PrepareIncomingResponse response;
  RpcResult r = Prepare(*destination_, *source_, job,
                        {{"emu0", "emu0"}, {"emu1", "nosuch-dst"}}, &response);
  ExpectRefused(r, grpc::StatusCode::NOT_FOUND,
                v1::ERROR_REASON_DEVICE_NOT_FOUND, "nosuch-dst");
  ExpectNothingChanged();
  // No half-prepared job is left behind: the same id can be prepared now.
  EXPECT_FALSE(PrepareOk(job, SameNames(names_)).empty());
}

TEST_F(RefusedRequestTest, UnknownSourceDeviceIsNotFound) {
  const std::string job = "job-unknown-source-device";
  const Pairs pairs = {{"emu0", "emu0"}, {"nosuch-src", "emu1"}};
  const std::string token = PrepareOk(job, pairs);
  ASSERT_FALSE(token.empty());
  ASSERT_NO_FATAL_FAILURE(Snapshot());
  Migration m;
  RpcResult r = Start(
      *source_, StartRequest(job, pairs, destination_->address(), token), &m);
  ExpectRefused(r, grpc::StatusCode::NOT_FOUND,
                v1::ERROR_REASON_DEVICE_NOT_FOUND, "nosuch-src");
  ExpectNothingChanged();
  ExpectJobPhase(destination_, job, v1::PHASE_PREPARED);
}

TEST_F(RefusedRequestTest, MalformedDestinationAddressIsInvalidArgument) {
  const std::string job = "job-malformed-destination";
  const std::string token = PrepareOk(job, SameNames(names_));
  ASSERT_FALSE(token.empty());
  ASSERT_NO_FATAL_FAILURE(Snapshot());
  for (const std::string& address : std::vector<std::string>{
           "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:12ab", "no host:80"}) {
    SCOPED_TRACE(address);
    Migration m;
    RpcResult r = Start(
        *source_, StartRequest(job, SameNames(names_), address, token), &m);
    ExpectRefused(r, grpc::StatusCode::INVALID_ARGUMENT,
                  v1::ERROR_REASON_INVALID_REQUEST, address);
  }
  ExpectNothingChanged();
  ExpectJobPhase(destination_, job, v1::PHASE_PREPARED);
}

TEST_F(RefusedRequestTest, UnreachableDestinationIsUnavailable) {
  ASSERT_NO_FATAL_FAILURE(Snapshot());
  // Port 1 on loopback: nothing listens there, the connection is refused.
  const std::string address = "127.0.0.1:1";
  Migration m;
  RpcResult r = Start(
      *source_,
      StartRequest("job-unreachable", SameNames(names_), address, "some-token"),
      &m);
  ExpectRefused(r, grpc::StatusCode::UNAVAILABLE,
                v1::ERROR_REASON_PEER_UNAVAILABLE, address);
  ExpectNothingChanged();
}

TEST_F(RefusedRequestTest, EmptyOrMalformedJobIdIsInvalidArgument) {
  ASSERT_NO_FATAL_FAILURE(Snapshot());
  for (const std::string& job :
       std::vector<std::string>{"", "job with spaces", std::string(65, 'j')}) {
    SCOPED_TRACE(absl::StrCat("job id '", job, "'"));
    v1::PrepareIncomingResponse response;
    RpcResult r =
        Prepare(*destination_, *source_, job, SameNames(names_), &response);
    ExpectRefused(r, grpc::StatusCode::INVALID_ARGUMENT,
                  v1::ERROR_REASON_INVALID_REQUEST, "job");
    Migration m;
    r = Start(*source_,
              StartRequest(job, SameNames(names_), destination_->address(),
                           "some-token"),
              &m);
    ExpectRefused(r, grpc::StatusCode::INVALID_ARGUMENT,
                  v1::ERROR_REASON_INVALID_REQUEST, "job");
  }
  ExpectNothingChanged();
}

TEST_F(RefusedRequestTest, EmptyDeviceListIsInvalidArgument) {
  ASSERT_NO_FATAL_FAILURE(Snapshot());
  const std::string job = "job-no-devices";
  v1::PrepareIncomingResponse response;
  RpcResult r = Prepare(*destination_, *source_, job, {}, &response);
  ExpectRefused(r, grpc::StatusCode::INVALID_ARGUMENT,
                v1::ERROR_REASON_INVALID_REQUEST, "device");
  Migration m;
  r = Start(*source_,
            StartRequest(job, {}, destination_->address(), "some-token"), &m);
  ExpectRefused(r, grpc::StatusCode::INVALID_ARGUMENT,
                v1::ERROR_REASON_INVALID_REQUEST, "device");
  ExpectNothingChanged();
}

TEST_F(RefusedRequestTest, DeviceHeldByAnotherJobIsBusy) {
  const std::string first = "job-holding-emu0";
  ASSERT_FALSE(PrepareOk(first, {{"emu0", "emu0"}}).empty());
  ASSERT_NO_FATAL_FAILURE(Snapshot());

  v1::PrepareIncomingResponse response;
  RpcResult r = Prepare(*destination_, *source_, "job-wanting-emu0",
                        {{"emu1", "emu1"}, {"emu0", "emu0"}}, &response);
  ExpectRefused(r, grpc::StatusCode::FAILED_PRECONDITION,
                v1::ERROR_REASON_DEVICE_BUSY, "emu0");
  ExpectNothingChanged();
  ExpectJobPhase(destination_, first, v1::PHASE_PREPARED);
}

TEST_F(RefusedRequestTest, UnknownJobIsNotFound) {
  ASSERT_NO_FATAL_FAILURE(Snapshot());
  const std::string job = "job-that-never-was";
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    v1::GetMigrationRequest request;
    request.set_job_id(job);
    Migration m;
    RpcResult r;
    r.status = source_->stub().GetMigration(&context, request, &m);
    r.reason = ErrorReasonOf(context);
    ExpectRefused(r, grpc::StatusCode::NOT_FOUND,
                  v1::ERROR_REASON_JOB_NOT_FOUND, job);
  }
  Migration m;
  RpcResult r = Cancel(*destination_, job, &m);
  ExpectRefused(r, grpc::StatusCode::NOT_FOUND, v1::ERROR_REASON_JOB_NOT_FOUND,
                job);
  EXPECT_EQ(WaitForEnd(source_->stub(), job, absl::Now() + kRpcTimeout)
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  ExpectNothingChanged();
}

// ---- Parallel streams
// --------------------------------------------------------

constexpr uint32_t kStreams = 4;
constexpr uint64_t kCapBytes = uint64_t{16} << 20;  // the smallest cap allowed

// Chunks of every device go round robin over four data streams, each its own
// connection, and arrive interleaved; the destination must still load each
// device's stream in order, holding no more than its memory cap out of order.
TEST_F(MigrationTest, ParallelStreamsDeliverEveryDeviceInOrderWithinTheCap) {
  ASSERT_NO_FATAL_FAILURE(StartPair(
      3, "24MiB", {}, {absl::StrCat("--transfer_memory_cap=", kCapBytes)}));
  const std::vector<std::string> names = EmuNames(3);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-parallel-streams";
  ASSERT_NO_FATAL_FAILURE(
      BeginMigration(job, SameNames(names), 64 * 1024, kStreams));
  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  for (const Migration* end : {&source_end, &destination_end}) {
    SCOPED_TRACE(v1::Role_Name(end->role()));
    ASSERT_EQ(v1::Phase_Name(end->phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED))
        << end->failure().message();
    EXPECT_EQ(end->payload_copies(), 0u);
  }
  EXPECT_LE(destination_end.reorder_peak_bytes(), kCapBytes);
  std::cerr << "reorder peak: " << destination_end.reorder_peak_bytes()
            << " bytes\n";
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  for (const std::string& name : names) {
    EXPECT_EQ(destination_after[name].state_digest(),
              source_before[name].state_digest())
        << name;
  }
}

// One data stream of four dies mid-job (its connection cancelled): the job
// fails on both sides, the source devices run again with their state, and the
// destination devices are reset.
TEST_F(MigrationTest, DroppedDataStreamFailsTheJobWithDevicesRestored) {
  ASSERT_NO_FATAL_FAILURE(
      StartPair(2, "16MiB", {"--test_fault=drop_stream:40"}));
  const std::vector<std::string> names = EmuNames(2);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-dropped-stream";
  ASSERT_NO_FATAL_FAILURE(
      BeginMigration(job, SameNames(names), 64 * 1024, kStreams));
  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  for (const Migration* end : {&source_end, &destination_end}) {
    SCOPED_TRACE(v1::Role_Name(end->role()));
    EXPECT_NE(v1::Phase_Name(end->phase()), v1::Phase_Name(v1::PHASE_SUCCEEDED))
        << end->ShortDebugString();
    EXPECT_TRUE(end->has_failure());
  }
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING,
                &source_before);
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);
}

// A destination serving as many data streams as it may refuses one more; the
// job fails before any device moves, and the source names the cause.
TEST_F(MigrationTest, DestinationAtItsStreamCapFailsTheStartAsUnavailable) {
  ASSERT_NO_FATAL_FAILURE(StartPair(1, "4MiB", {}, {"--max_data_streams=1"}));
  const std::vector<std::string> names = EmuNames(1);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  const std::string job = "job-over-the-cap";
  const std::string token = PrepareOk(job, SameNames(names));
  v1::StartMigrationRequest request =
      StartRequest(job, SameNames(names), destination_->address(), token, 0);
  request.mutable_policy()->set_streams(2);
  Migration started;
  RpcResult r = Start(*source_, request, &started);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << r;
  EXPECT_EQ(r.reason, ReasonName(v1::ERROR_REASON_PEER_UNAVAILABLE)) << r;
  EXPECT_TRUE(
      absl::StrContains(r.status.error_message(), "opening data stream 2"))
      << r;
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "already serving 1"))
      << r;
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectUnchanged("source", source_before, source_after);
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  EXPECT_EQ(v1::Phase_Name(destination_end.phase()),
            v1::Phase_Name(v1::PHASE_FAILED))
      << destination_end.ShortDebugString();
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);
}

// ---- Faults ----------------------------------------------------------------

TEST_F(MigrationTest, CorruptedChunkFailsBothSidesCleanly) {
  ASSERT_NO_FATAL_FAILURE(
      StartPair(2, "8MiB", {"--test_fault=corrupt_chunk:3"}));
  const std::vector<std::string> names = EmuNames(2);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-corrupted-chunk";
  ASSERT_NO_FATAL_FAILURE(BeginMigration(job, SameNames(names), 64 * 1024));
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));

  for (const Migration* end : {&source_end, &destination_end}) {
    SCOPED_TRACE(v1::Role_Name(end->role()));
    EXPECT_EQ(v1::Phase_Name(end->phase()), v1::Phase_Name(v1::PHASE_FAILED))
        << end->ShortDebugString();
    EXPECT_EQ(ReasonName(end->failure().reason()),
              ReasonName(v1::ERROR_REASON_STREAM_CORRUPTED))
        << end->failure().message();
  }
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING,
                &source_before);
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);
}

// Where the byte flipped in the source device's stream decides when the
// destination device rejects it: in the content, at RESUMING -> STOP (the
// END record's CRC32C); in a record header, at the write that brings it.
// Either way both jobs fail with STATE_REJECTED.
class CorruptedDeviceStreamTest
    : public MigrationTest,
      public ::testing::WithParamInterface<uint64_t> {};

INSTANTIATE_TEST_SUITE_P(
    Offsets, CorruptedDeviceStreamTest,
    ::testing::Values(uint64_t{1000},  // content of the first PAGE record
                      uint64_t{20}),   // the first record's type byte
    [](const ::testing::TestParamInfo<uint64_t>& info) {
      return info.param == 20 ? std::string("RecordHeaderAtWrite")
                              : std::string("ContentAtResumingToStop");
    });

TEST_P(CorruptedDeviceStreamTest, DestinationRejectsIt) {
  source_ = StartAgent(
      "source", {},
      absl::StrCat("emulated emu0 size=8MiB seed=3 corrupt_stream_at=",
                   GetParam(), "\nemulated emu1 size=8MiB seed=4\n"));
  ASSERT_NE(source_, nullptr);
  destination_ = StartAgent("destination", EmulatedFlags(2, "8MiB", 2));
  ASSERT_NE(destination_, nullptr);
  const std::vector<std::string> names = EmuNames(2);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-corrupted-stream";
  ASSERT_NO_FATAL_FAILURE(BeginMigration(job, SameNames(names)));
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));

  for (const Migration* end : {&destination_end, &source_end}) {
    SCOPED_TRACE(v1::Role_Name(end->role()));
    EXPECT_EQ(v1::Phase_Name(end->phase()), v1::Phase_Name(v1::PHASE_FAILED))
        << end->ShortDebugString();
    EXPECT_EQ(ReasonName(end->failure().reason()),
              ReasonName(v1::ERROR_REASON_STATE_REJECTED))
        << end->failure().message();
  }
  EXPECT_TRUE(absl::StrContains(destination_end.failure().message(), "emu0"))
      << "the failure should name the device: "
      << destination_end.failure().message();

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING,
                &source_before);
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);
}

// The destination gives up on its own: its source says nothing for longer than
// the destination's idle timeout (1 s here), while a source device takes 4 s
// to stop initiating P2P before the stop-copy. The destination cancels the
// session; the source reports the destination's cause (FAILED, TIMEOUT, in
// the destination's words), not a cancel nobody asked for.
TEST_F(MigrationTest, ADestinationThatTimesOutFailsTheSourceWithItsCause) {
  source_ = StartAgent(
      "source", {},
      "emulated emu0 size=4MiB seed=1 slow_arc=RUNNING>RUNNING_P2P@4s\n");
  ASSERT_NE(source_, nullptr);
  std::vector<std::string> destination_flags = EmulatedFlags(1, "4MiB", 2);
  destination_flags.push_back("--phase_timeout_seconds=1");
  destination_ = StartAgent("destination", destination_flags);
  ASSERT_NE(destination_, nullptr);
  const std::vector<std::string> names = EmuNames(1);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-destination-timed-out";
  ASSERT_NO_FATAL_FAILURE(BeginMigration(job, SameNames(names)));
  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));

  for (const Migration* end : {&destination_end, &source_end}) {
    SCOPED_TRACE(v1::Role_Name(end->role()));
    EXPECT_EQ(v1::Phase_Name(end->phase()), v1::Phase_Name(v1::PHASE_FAILED))
        << end->ShortDebugString();
    EXPECT_EQ(ReasonName(end->failure().reason()),
              ReasonName(v1::ERROR_REASON_TIMEOUT))
        << end->failure().message();
    EXPECT_TRUE(absl::StrContains(end->failure().message(),
                                  "source sent nothing for 1s"))
        << end->failure().message();
  }
  // The source says whose cause it is.
  EXPECT_TRUE(absl::StrContains(source_end.failure().message(),
                                "the destination ended the session"))
      << source_end.failure().message();

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING,
                &source_before);
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);
}

TEST_F(MigrationTest, FailedSourceArcIsDeviceErrorAndEveryDeviceRuns) {
  source_ = StartAgent("source", {},
                       "emulated emu0 size=4MiB seed=1\n"
                       "emulated emu1 size=4MiB seed=2 "
                       "fail_arc=STOP>STOP_COPY\n"
                       "emulated emu2 size=4MiB seed=3\n");
  ASSERT_NE(source_, nullptr);
  destination_ = StartAgent("destination", EmulatedFlags(3, "4MiB", 7));
  ASSERT_NE(destination_, nullptr);
  const std::vector<std::string> names = EmuNames(3);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  const std::string job = "job-failed-arc";
  ASSERT_NO_FATAL_FAILURE(BeginMigration(job, SameNames(names)));
  // Record the device states the job reports on its way, to see emu1's ERROR
  // when the watch catches it (it may miss it: events coalesce).
  bool saw_error = false;
  absl::StatusOr<Migration> end = WaitForPhase(
      source_->stub(), job,
      [&](const Migration& m) {
        for (const v1::DeviceProgress& d : m.devices()) {
          if (d.device() == "emu1" && d.state() == v1::DEVICE_STATE_ERROR) {
            saw_error = true;
          }
        }
        return IsTerminal(m.phase());
      },
      absl::Now() + kJobTimeout);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(v1::Phase_Name(end->phase()), v1::Phase_Name(v1::PHASE_FAILED))
      << end->ShortDebugString();
  EXPECT_EQ(ReasonName(end->failure().reason()),
            ReasonName(v1::ERROR_REASON_DEVICE_ERROR))
      << end->failure().message();
  // The failure names the device and the arc, and says the device went to
  // ERROR (the watch shows that state only when it samples it in time).
  const std::string& message = end->failure().message();
  EXPECT_TRUE(absl::StrContains(message, "emu1")) << message;
  EXPECT_TRUE(absl::StrContains(message, "STOP_COPY")) << message;
  EXPECT_TRUE(saw_error || absl::StrContains(message, "ERROR"))
      << "no sign that emu1 was in ERROR: " << message;

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  // emu1 went through ERROR and a reset; the others kept their state.
  ExpectDevices("source", source_after, {"emu1"}, v1::DEVICE_STATE_RUNNING);
  ExpectDevices("source", source_after, {"emu0", "emu2"},
                v1::DEVICE_STATE_RUNNING, &source_before);

  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  EXPECT_NE(v1::Phase_Name(destination_end.phase()),
            v1::Phase_Name(v1::PHASE_SUCCEEDED));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);
}

}  // namespace
}  // namespace migd::e2e
