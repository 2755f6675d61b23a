// e2e/loopback/concurrency_test.cc
//
// Loopback tier under load: one pair of real migd agents (mutual TLS) runs
// 32 migrations at once (no limit on the source), two emulated devices
// each, while four of them meet
// a fault: a source device whose save stream is corrupt (the destination
// rejects it at RESUMING -> STOP), a destination device whose RESUMING ->
// STOP arc fails, a source device that goes away mid-read (ENODEV), and a
// job cancelled mid-flight. Every job must end as its fault says, on both
// sides, with its devices free and running (or, migrated, stopped on the
// source); the healthy jobs must not notice the others. The agents' memory
// is printed (peak and current RSS against the device state they hold) and
// only held to a bound far above normal, which a leak or an unbounded buffer
// would break. Waits are on conditions with deadlines, never sleeps; speeds
// are printed, not asserted.

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
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

constexpr int kJobs = 32;
constexpr int kDevicesPerJob = 2;
constexpr int kDevices = kJobs * kDevicesPerJob;
constexpr uint64_t kStateBytes = 8 * kMiB;  // per device
// The smallest cap an agent takes (two of the largest chunks): each job's
// source buffers, and its destination's (two chunks a data stream), hold at
// most this much.
constexpr uint64_t kCapBytes = 16 * kMiB;
// Beyond the device state and every job's cap: the process, gRPC and TLS
// (64 connections a side), malloc's slack. A healthy run uses a fraction.
constexpr uint64_t kOverheadBound = 512 * kMiB;
// Beyond the device state once every job ended: the process, gRPC's idle
// connections, malloc's slack; no job's buffers.
constexpr uint64_t kIdleBound = 256 * kMiB;

// Deadlines: generous for a loaded 2-core machine running 32 jobs; a healthy
// run takes a fraction of each.
constexpr absl::Duration kRpcTimeout = absl::Seconds(30);
constexpr absl::Duration kAllJobsTimeout = absl::Seconds(75);

std::string PhaseName(v1::Phase phase) { return v1::Phase_Name(phase); }
std::string ReasonName(v1::ErrorReason reason) {
  return v1::ErrorReason_Name(reason);
}

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

// ---- The jobs --------------------------------------------------------------

enum class Fault {
  kNone,
  // Source device 0's save stream has a content byte flipped: the
  // destination device rejects it at RESUMING -> STOP (its END CRC32C).
  kCorruptStream,
  // Destination device 1's RESUMING -> STOP arc fails (the device goes to
  // ERROR): the load is rejected.
  kRejectedLoad,
  // Source device 1's reads fail with ENODEV 4 MiB into its stream.
  kDeviceGone,
  // Pre-copy devices with a workload and a policy that never converges,
  // so the job is still moving bytes when the test cancels it.
  kCancelled,
};

struct Expected {
  v1::Phase phase;
  v1::ErrorReason reason;
};

Expected ExpectedEnd(Fault fault) {
  switch (fault) {
    case Fault::kNone:
      return {v1::PHASE_SUCCEEDED, v1::ERROR_REASON_UNSPECIFIED};
    case Fault::kCorruptStream:
    case Fault::kRejectedLoad:
      return {v1::PHASE_FAILED, v1::ERROR_REASON_STATE_REJECTED};
    case Fault::kDeviceGone:
      return {v1::PHASE_FAILED, v1::ERROR_REASON_DEVICE_ERROR};
    case Fault::kCancelled:
      return {v1::PHASE_CANCELLED, v1::ERROR_REASON_CANCELLED};
  }
  return {v1::PHASE_UNSPECIFIED, v1::ERROR_REASON_UNSPECIFIED};
}

const char* FaultName(Fault fault) {
  switch (fault) {
    case Fault::kNone:
      return "none";
    case Fault::kCorruptStream:
      return "corrupt stream";
    case Fault::kRejectedLoad:
      return "rejected load";
    case Fault::kDeviceGone:
      return "device gone";
    case Fault::kCancelled:
      return "cancelled";
  }
  return "?";
}

// Faults spread over the job list, so that faulted jobs start among healthy
// ones; the job to cancel starts in the first wave, so that the cancel comes
// while most others move their bytes.
Fault FaultOf(int job) {
  switch (job) {
    case 2:
      return Fault::kCancelled;
    case 11:
      return Fault::kCorruptStream;
    case 20:
      return Fault::kRejectedLoad;
    case 29:
      return Fault::kDeviceGone;
    default:
      return Fault::kNone;
  }
}

std::string JobId(int job) { return absl::StrFormat("job-%02d", job); }

// Device k of job j, on both agents.
std::string DeviceName(int job, int k) {
  return absl::StrCat("emu", job * kDevicesPerJob + k);
}

std::vector<std::string> DevicesOf(int job) {
  std::vector<std::string> names;
  for (int k = 0; k < kDevicesPerJob; ++k) names.push_back(DeviceName(job, k));
  return names;
}

constexpr absl::string_view kPrecopyFlags = "STOP_COPY|P2P|PRE_COPY";

// The source's devices: seeds 1.., the faults of the source side.
std::string SourceConfig() {
  std::string out;
  for (int j = 0; j < kJobs; ++j) {
    for (int k = 0; k < kDevicesPerJob; ++k) {
      const int n = j * kDevicesPerJob + k;
      absl::StrAppend(&out, "emulated ", DeviceName(j, k),
                      " size=", kStateBytes, " seed=", 1 + n);
      switch (FaultOf(j)) {
        case Fault::kCorruptStream:
          if (k == 0) absl::StrAppend(&out, " corrupt_stream_at=", 3 * kMiB);
          break;
        case Fault::kDeviceGone:
          if (k == 1) absl::StrAppend(&out, " fail_read=ENODEV@", 4 * kMiB);
          break;
        case Fault::kCancelled:
          absl::StrAppend(&out, " flags=", kPrecopyFlags, " dirty_rate=8MiB");
          break;
        default:
          break;
      }
      absl::StrAppend(&out, "\n");
    }
  }
  return out;
}

// The destination's devices: other content (seeds 1001..), the faults of the
// destination side.
std::string DestinationConfig() {
  std::string out;
  for (int j = 0; j < kJobs; ++j) {
    for (int k = 0; k < kDevicesPerJob; ++k) {
      const int n = j * kDevicesPerJob + k;
      absl::StrAppend(&out, "emulated ", DeviceName(j, k),
                      " size=", kStateBytes, " seed=", 1001 + n);
      switch (FaultOf(j)) {
        case Fault::kRejectedLoad:
          if (k == 1) absl::StrAppend(&out, " fail_arc=RESUMING>STOP");
          break;
        case Fault::kCancelled:
          absl::StrAppend(&out, " flags=", kPrecopyFlags);
          break;
        default:
          break;
      }
      absl::StrAppend(&out, "\n");
    }
  }
  return out;
}

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

// ---- Memory ----------------------------------------------------------------

// A "Vm...:  N kB" line of /proc/<pid>/status, in bytes.
std::optional<uint64_t> ProcStatusBytes(pid_t pid, absl::string_view key) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, key) || !absl::ConsumePrefix(&rest, ":")) {
      continue;
    }
    rest = absl::StripAsciiWhitespace(rest);
    if (!absl::ConsumeSuffix(&rest, " kB")) return std::nullopt;
    uint64_t kib = 0;
    if (!absl::SimpleAtoi(rest, &kib)) return std::nullopt;
    return kib * 1024;
  }
  return std::nullopt;
}

struct Memory {
  uint64_t peak = 0;     // VmHWM
  uint64_t current = 0;  // VmRSS
};

absl::StatusOr<Memory> MemoryOf(const AgentProcess& agent) {
  std::optional<uint64_t> hwm = ProcStatusBytes(agent.pid(), "VmHWM");
  std::optional<uint64_t> rss = ProcStatusBytes(agent.pid(), "VmRSS");
  if (!hwm.has_value() || !rss.has_value()) {
    return absl::NotFoundError(absl::StrCat("no VmHWM/VmRSS in /proc/",
                                            agent.pid(), "/status (",
                                            agent.name(), ")"));
  }
  return Memory{*hwm, *rss};
}

uint64_t MiB(uint64_t bytes) { return (bytes + kMiB / 2) / kMiB; }

// ---- Checks ----------------------------------------------------------------

// `name` is in `state`, held by no job, and (when `digest` is not empty)
// holds that digest.
void ExpectDevice(absl::string_view agent, const DeviceMapT& devices,
                  const std::string& name, v1::DeviceState state,
                  absl::string_view digest = "") {
  SCOPED_TRACE(absl::StrCat(agent, " device ", name));
  auto it = devices.find(name);
  ASSERT_NE(it, devices.end());
  EXPECT_EQ(StateName(it->second.state()), StateName(state))
      << Describe(it->second);
  EXPECT_EQ(it->second.job_id(), "") << "device still held by a job";
  if (!digest.empty()) {
    EXPECT_EQ(it->second.state_digest(), digest) << "device state differs";
  }
}

// Never converges (1 KiB/s assumed, a 10 ms downtime limit) and hits no cap
// before a test's deadline; a workload keeps each pass busy.
void NeverConverge(v1::MigrationPolicy* policy) {
  policy->set_bandwidth_bytes_per_second(1024);
  SetDuration(absl::Milliseconds(10), policy->mutable_downtime_limit());
  policy->set_max_iterations(1000000);
  SetDuration(absl::Seconds(300), policy->mutable_max_precopy_time());
  policy->set_on_no_convergence(v1::MigrationPolicy::ON_NO_CONVERGENCE_FAIL);
}

class ConcurrencyTest : public AgentTest {
 protected:
  // Prepares job `j` (DevicesOf(j) on both sides) on the destination and
  // returns the request that starts it on the source.
  absl::StatusOr<v1::StartMigrationRequest> Prepare(int j) {
    v1::PrepareIncomingRequest prepare;
    prepare.set_job_id(JobId(j));
    FillPairs(DevicesOf(j), prepare.mutable_devices());
    prepare.set_source("concurrency-test");
    prepare.set_source_identity(source_->identity());
    v1::PrepareIncomingResponse prepared;
    CallResult r = CallPrepareIncoming(destination_->stub(), prepare, &prepared,
                                       kRpcTimeout);
    if (!r.status.ok()) {
      return absl::InternalError(
          absl::StrCat("PrepareIncoming ", JobId(j), ": ", DescribeCall(r)));
    }
    v1::StartMigrationRequest request;
    request.set_job_id(JobId(j));
    FillPairs(DevicesOf(j), request.mutable_devices());
    request.set_destination(destination_->address());
    request.set_destination_identity(destination_->identity());
    request.set_transfer_token(prepared.transfer_token());
    return request;
  }
};

// ---- The test --------------------------------------------------------------

TEST_F(ConcurrencyTest, ThirtyTwoJobsEndAsTheirFaultsSayAndMemoryStaysBounded) {
  // Every job at once: no line on the source.
  const std::vector<std::string> memory_flags = {
      absl::StrCat("--transfer_memory_cap=", kCapBytes),
      "--max_concurrent_migrations=0"};
  source_ = StartAgent("source", memory_flags, SourceConfig());
  ASSERT_NE(source_, nullptr);
  destination_ = StartAgent("destination", memory_flags, DestinationConfig());
  ASSERT_NE(destination_, nullptr);

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_before,
                       DeviceMap(destination_->stub()));
  ASSERT_EQ(source_before.size(), static_cast<size_t>(kDevices));
  ASSERT_EQ(destination_before.size(), static_cast<size_t>(kDevices));
  for (const auto& [name, device] : source_before) {
    ASSERT_EQ(StateName(device.state()), StateName(v1::DEVICE_STATE_RUNNING))
        << name;
    ASSERT_NE(device.state_digest(), destination_before[name].state_digest())
        << name << ": the test needs different states on the two sides";
  }
  ASSERT_OK_AND_ASSIGN(Memory source_idle, MemoryOf(*source_));
  ASSERT_OK_AND_ASSIGN(Memory destination_idle, MemoryOf(*destination_));

  // Prepare every job on the destination, then start them all at once, each
  // from a thread of its own.
  std::vector<v1::StartMigrationRequest> requests(kJobs);
  for (int j = 0; j < kJobs; ++j) {
    ASSERT_OK_AND_ASSIGN(requests[j], Prepare(j));
    v1::MigrationPolicy* policy = requests[j].mutable_policy();
    policy->mutable_phase_timeout()->set_seconds(60);
    if (FaultOf(j) == Fault::kCancelled) NeverConverge(policy);
  }

  std::vector<CallResult> started(kJobs);
  std::vector<absl::Time> returned_at(kJobs);
  std::vector<absl::Notification> start_returned(kJobs);
  absl::Notification go;
  std::vector<std::thread> starters;
  // Joined however the test body ends (each call has its own deadline).
  struct JoinAll {
    std::vector<std::thread>& threads;
    ~JoinAll() {
      for (std::thread& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } join_starters{starters};
  for (int j = 0; j < kJobs; ++j) {
    starters.emplace_back([&, j] {
      go.WaitForNotification();
      Migration response;
      started[j] = CallStartMigration(source_->stub(), requests[j], &response,
                                      kRpcTimeout);
      returned_at[j] = absl::Now();
      start_returned[j].Notify();
    });
  }
  const absl::Time t0 = absl::Now();
  const absl::Time deadline = t0 + kAllJobsTimeout;
  go.Notify();

  // Cancel the pre-copy job once its bytes move, the others still starting
  // or running.
  int cancelled_job = -1;
  for (int j = 0; j < kJobs; ++j) {
    if (FaultOf(j) == Fault::kCancelled) cancelled_job = j;
  }
  ASSERT_GE(cancelled_job, 0);
  const bool cancel_started =
      start_returned[cancelled_job].WaitForNotificationWithDeadline(deadline);
  if (!cancel_started || !started[cancelled_job].status.ok()) {
    FAIL() << "StartMigration " << JobId(cancelled_job) << ": "
           << (cancel_started ? DescribeCall(started[cancelled_job])
                              : std::string("did not return"));
  }
  {
    absl::StatusOr<Migration> moving = WaitForPhase(
        source_->stub(), JobId(cancelled_job),
        [](const Migration& m) {
          return m.phase() == v1::PHASE_PRE_COPY && m.bytes_done() > 0;
        },
        deadline);
    ASSERT_TRUE(moving.ok()) << moving.status();
    v1::CancelMigrationRequest cancel;
    cancel.set_job_id(JobId(cancelled_job));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    Migration response;
    grpc::Status status =
        source_->stub().CancelMigration(&context, cancel, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    int running = 0, ended = 0;
    for (int j = 0; j < kJobs; ++j) {
      if (j == cancelled_job) continue;
      absl::StatusOr<Migration> m = GetMigration(source_->stub(), JobId(j));
      if (!m.ok()) continue;  // not started yet
      ++(IsTerminal(m->phase()) ? ended : running);
    }
    std::cout << "concurrency: cancelled " << JobId(cancelled_job)
              << " in pre-copy at " << moving->bytes_done()
              << " bytes, iteration " << moving->precopy().iteration() << ", "
              << absl::FormatDuration(absl::Now() - t0)
              << " after the start; of the " << kJobs - 1 << " others, "
              << running << " running, " << ended
              << " ended, the rest not started yet\n";
  }
  for (std::thread& t : starters) t.join();
  absl::Duration starting;
  for (int j = 0; j < kJobs; ++j) {
    starting = std::max(starting, returned_at[j] - t0);
    ASSERT_TRUE(started[j].status.ok())
        << "StartMigration " << JobId(j) << ": " << DescribeCall(started[j]);
  }

  // Every job's end, on both sides.
  std::vector<Migration> source_end(kJobs), destination_end(kJobs);
  for (int j = 0; j < kJobs; ++j) {
    ASSERT_OK_AND_ASSIGN(source_end[j],
                         WaitForEnd(source_->stub(), JobId(j), deadline));
    ASSERT_OK_AND_ASSIGN(destination_end[j],
                         WaitForEnd(destination_->stub(), JobId(j), deadline));
  }
  const absl::Duration waited = absl::Now() - t0;

  for (int j = 0; j < kJobs; ++j) {
    const Fault fault = FaultOf(j);
    const Expected expected = ExpectedEnd(fault);
    SCOPED_TRACE(absl::StrCat(JobId(j), " (fault: ", FaultName(fault), ")"));
    for (const Migration* end : {&source_end[j], &destination_end[j]}) {
      SCOPED_TRACE(v1::Role_Name(end->role()));
      EXPECT_EQ(PhaseName(end->phase()), PhaseName(expected.phase))
          << end->failure().ShortDebugString();
      if (fault == Fault::kNone) {
        EXPECT_FALSE(end->has_failure()) << end->failure().ShortDebugString();
        EXPECT_GE(end->bytes_done(), kDevicesPerJob * kStateBytes);
        EXPECT_EQ(end->payload_copies(), 0u);
      } else {
        EXPECT_EQ(ReasonName(end->failure().reason()),
                  ReasonName(expected.reason))
            << end->failure().message();
      }
    }
    // The failure names the faulty device where there is one.
    const std::string& message = destination_end[j].failure().message();
    switch (fault) {
      case Fault::kCorruptStream:
        EXPECT_TRUE(absl::StrContains(message, DeviceName(j, 0))) << message;
        break;
      case Fault::kRejectedLoad:
        EXPECT_TRUE(absl::StrContains(message, DeviceName(j, 1))) << message;
        break;
      case Fault::kDeviceGone:
        EXPECT_TRUE(absl::StrContains(source_end[j].failure().message(),
                                      DeviceName(j, 1)))
            << source_end[j].failure().message();
        break;
      default:
        break;
    }
    EXPECT_LE(destination_end[j].reorder_peak_bytes(), kCapBytes);
  }

  // The devices: migrated ones stopped on the source and running with its
  // state on the destination; every other one running on the source (with
  // its own state, unless a workload changed it) and on the destination
  // reset, except where a job failed after COMMIT: a destination device that
  // loaded the VM's state (device 0 of a rejected load, whose device 1 was
  // rejected) stays stopped with it, never reset (a reset may keep it
  // running); none held by a job, none in ERROR.
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  for (int j = 0; j < kJobs; ++j) {
    const Fault fault = FaultOf(j);
    SCOPED_TRACE(absl::StrCat(JobId(j), " (fault: ", FaultName(fault), ")"));
    for (const std::string& name : DevicesOf(j)) {
      const std::string& digest = source_before[name].state_digest();
      if (fault == Fault::kNone) {
        ExpectDevice("source", source_after, name, v1::DEVICE_STATE_STOP,
                     digest);
        ExpectDevice("destination", destination_after, name,
                     v1::DEVICE_STATE_RUNNING, digest);
      } else {
        ExpectDevice("source", source_after, name, v1::DEVICE_STATE_RUNNING,
                     fault == Fault::kCancelled ? "" : digest);
        if (fault == Fault::kRejectedLoad && name == DeviceName(j, 0)) {
          ExpectDevice("destination", destination_after, name,
                       v1::DEVICE_STATE_STOP, digest);
        } else {
          ExpectDevice("destination", destination_after, name,
                       v1::DEVICE_STATE_RUNNING);
        }
      }
    }
  }
  for (const DeviceMapT* devices : {&source_after, &destination_after}) {
    for (const auto& [name, device] : *devices) {
      EXPECT_NE(StateName(device.state()), StateName(v1::DEVICE_STATE_ERROR))
          << name;
      EXPECT_EQ(device.job_id(), "") << name << " still held";
    }
  }

  // Figures: the wall time of the 32 jobs (start to the last end either side
  // recorded), the healthy jobs' throughput, the agents' memory.
  absl::Time last_end = t0;
  double slowest = 0, fastest = 0;
  absl::Duration shortest = absl::InfiniteDuration(), longest;
  int healthy = 0;
  for (int j = 0; j < kJobs; ++j) {
    for (const Migration* end : {&source_end[j], &destination_end[j]}) {
      last_end = std::max(last_end, FromProto(end->finished()));
    }
    if (FaultOf(j) != Fault::kNone) continue;
    const double rate = source_end[j].throughput_bytes_per_second();
    slowest = healthy == 0 ? rate : std::min(slowest, rate);
    fastest = healthy == 0 ? rate : std::max(fastest, rate);
    const absl::Duration took = FromProto(source_end[j].finished()) -
                                FromProto(source_end[j].created());
    shortest = std::min(shortest, took);
    longest = std::max(longest, took);
    ++healthy;
  }
  // The most source jobs that ran at once (created to finished).
  std::vector<std::pair<absl::Time, int>> edges;
  for (const Migration& end : source_end) {
    edges.emplace_back(FromProto(end.created()), +1);
    edges.emplace_back(FromProto(end.finished()), -1);
  }
  std::sort(edges.begin(), edges.end());
  int at_once = 0, most_at_once = 0;
  for (const auto& [when, step] : edges) {
    at_once += step;
    most_at_once = std::max(most_at_once, at_once);
  }
  ASSERT_OK_AND_ASSIGN(Memory source_memory, MemoryOf(*source_));
  ASSERT_OK_AND_ASSIGN(Memory destination_memory, MemoryOf(*destination_));
  // What the emulated devices hold: the source one copy of each state; the
  // destination its own plus the staging buffer each prepared device loads
  // into (every one was prepared at once).
  const uint64_t source_state = uint64_t{kDevices} * kStateBytes;
  const uint64_t destination_state = 2 * uint64_t{kDevices} * kStateBytes;
  const uint64_t in_flight = uint64_t{kJobs} * kCapBytes;
  std::cout << absl::StrFormat(
      "concurrency: %d jobs x %d x %d MiB: wall %s (starts %s, at most %d "
      "source jobs at once, test saw the last end after %s); healthy jobs "
      "%s..%s each, throughput %.1f..%.1f MiB/s (slowest..fastest)\n",
      kJobs, kDevicesPerJob, MiB(kStateBytes),
      absl::FormatDuration(last_end - t0), absl::FormatDuration(starting),
      most_at_once, absl::FormatDuration(waited),
      absl::FormatDuration(shortest), absl::FormatDuration(longest),
      slowest / kMiB, fastest / kMiB);
  std::cout << absl::StrFormat(
      "concurrency: source peak RSS %d MiB (%d after the jobs, %d before), "
      "destination peak %d MiB (%d after, %d before); device state held: "
      "source %d MiB, destination %d MiB; peak beyond it: source %d MiB, "
      "destination %d MiB (bound: %d jobs x %d MiB cap + %d MiB)\n",
      MiB(source_memory.peak), MiB(source_memory.current),
      MiB(source_idle.current), MiB(destination_memory.peak),
      MiB(destination_memory.current), MiB(destination_idle.current),
      MiB(source_state), MiB(destination_state),
      MiB(source_memory.peak - std::min(source_memory.peak, source_state)),
      MiB(destination_memory.peak -
          std::min(destination_memory.peak, destination_state)),
      kJobs, MiB(kCapBytes), MiB(kOverheadBound));

  // Hard bounds, far above a healthy run: the device state, every job's
  // buffers full at once, and generous room for the rest.
  EXPECT_LT(source_memory.peak, source_state + in_flight + kOverheadBound)
      << "source peak RSS " << MiB(source_memory.peak) << " MiB";
  EXPECT_LT(destination_memory.peak,
            destination_state + in_flight + kOverheadBound)
      << "destination peak RSS " << MiB(destination_memory.peak) << " MiB";
  // Once every job ended, no job's buffers are held any more: what is left
  // is the device state and the process (a finished job that kept its
  // buffers would keep up to its cap each: 32 x 16 MiB here).
  EXPECT_LT(source_memory.current, source_state + kIdleBound)
      << "source RSS after the jobs " << MiB(source_memory.current)
      << " MiB: finished jobs still hold buffers";
}

// The first and the last device state change the source recorded for a
// job: its devices leave RUNNING once it has its slot, and reach STOP before
// it gives the slot back.
std::pair<absl::Time, absl::Time> DeviceSpan(const Migration& m) {
  absl::Time first = absl::InfiniteFuture(), last = absl::InfinitePast();
  for (const v1::StateChange& c : m.state_changes()) {
    first = std::min(first, FromProto(c.time()));
    last = std::max(last, FromProto(c.time()));
  }
  return {first, last};
}

// A source agent moves at most --max_concurrent_migrations jobs at once.
// Jobs started beyond that are answered at once, CONNECTING and waiting in
// line (Migration.queue); they start in the order they were asked for as
// slots come free, and each then succeeds as it would alone.
TEST_F(ConcurrencyTest, JobsBeyondTheLimitWaitTheirTurnInOrder) {
  constexpr int kLimit = 2;
  const std::vector<int> jobs = {0, 1, 3, 4, 5, 6, 7, 8};  // none faulted
  source_ = StartAgent("source",
                       {absl::StrCat("--max_concurrent_migrations=", kLimit)},
                       SourceConfig());
  ASSERT_NE(source_, nullptr);
  destination_ = StartAgent("destination", {}, DestinationConfig());
  ASSERT_NE(destination_, nullptr);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  std::vector<v1::StartMigrationRequest> requests;
  for (int j : jobs) {
    ASSERT_OK_AND_ASSIGN(requests.emplace_back(), Prepare(j));
  }
  // One after the other, so that the order they were asked for is known;
  // a job beyond the limit is answered without waiting for its turn.
  const absl::Time t0 = absl::Now();
  const absl::Time deadline = t0 + kAllJobsTimeout;
  std::vector<Migration> answers(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    CallResult r = CallStartMigration(source_->stub(), requests[i], &answers[i],
                                      kRpcTimeout);
    ASSERT_TRUE(r.status.ok())
        << "StartMigration " << JobId(jobs[i]) << ": " << DescribeCall(r);
  }
  const absl::Duration starting = absl::Now() - t0;

  std::vector<Migration> ends(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    ASSERT_OK_AND_ASSIGN(ends[i],
                         WaitForEnd(source_->stub(), JobId(jobs[i]), deadline));
    ASSERT_OK_AND_ASSIGN(Migration d, WaitForEnd(destination_->stub(),
                                                 JobId(jobs[i]), deadline));
    SCOPED_TRACE(JobId(jobs[i]));
    EXPECT_EQ(PhaseName(ends[i].phase()), PhaseName(v1::PHASE_SUCCEEDED))
        << ends[i].failure().ShortDebugString();
    EXPECT_EQ(PhaseName(d.phase()), PhaseName(v1::PHASE_SUCCEEDED))
        << d.failure().ShortDebugString();
  }

  // Who waited, and in which order the jobs got their slots.
  std::vector<size_t> waited;  // by the order they were asked for
  absl::Duration longest_wait;
  for (size_t i = 0; i < jobs.size(); ++i) {
    SCOPED_TRACE(JobId(jobs[i]));
    if (answers[i].queue().waiting()) {
      EXPECT_EQ(PhaseName(answers[i].phase()), PhaseName(v1::PHASE_CONNECTING));
      waited.push_back(i);
      EXPECT_FALSE(ends[i].queue().waiting());
      const absl::Duration w = FromProtoDuration(ends[i].queue().waited());
      EXPECT_GT(w, absl::ZeroDuration());
      longest_wait = std::max(longest_wait, w);
    } else {
      EXPECT_FALSE(ends[i].has_queue()) << ends[i].queue().ShortDebugString();
    }
  }
  // Without a line, none would have waited: the test shows nothing then.
  ASSERT_GE(waited.size(), 1u)
      << "every job found a free slot; the jobs ended too fast to line up";
  // The order the jobs got their slots in: each job's creation plus its
  // wait (which starts when the job joins the line, a fraction of a
  // millisecond after its creation). Not the order their devices leave
  // RUNNING: two jobs given slots a moment apart open their sessions side
  // by side, and the second may be quicker.
  auto got_slot = [](const Migration& m) {
    return FromProto(m.created()) + FromProtoDuration(m.queue().waited());
  };
  constexpr absl::Duration kSlack = absl::Milliseconds(5);
  for (size_t k = 1; k < waited.size(); ++k) {
    EXPECT_LT(got_slot(ends[waited[k - 1]]), got_slot(ends[waited[k]]) + kSlack)
        << JobId(jobs[waited[k]]) << " got a slot before "
        << JobId(jobs[waited[k - 1]]) << ", which was asked for first";
  }
  // Never more than kLimit jobs with their devices out of RUNNING at once.
  std::vector<std::pair<absl::Time, int>> edges;
  for (const Migration& end : ends) {
    auto [first, last] = DeviceSpan(end);
    edges.emplace_back(first, +1);
    edges.emplace_back(last, -1);
  }
  std::sort(edges.begin(), edges.end(), [](const auto& a, const auto& b) {
    // An end and a start at the same instant: the end first.
    return a.first != b.first ? a.first < b.first : a.second < b.second;
  });
  int at_once = 0, most_at_once = 0;
  for (const auto& [when, step] : edges) {
    at_once += step;
    most_at_once = std::max(most_at_once, at_once);
  }
  EXPECT_LE(most_at_once, kLimit);

  // The migrated devices: stopped on the source, running with its state on
  // the destination, held by no job.
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  for (int j : jobs) {
    for (const std::string& name : DevicesOf(j)) {
      const std::string& digest = source_before[name].state_digest();
      ExpectDevice("source", source_after, name, v1::DEVICE_STATE_STOP, digest);
      ExpectDevice("destination", destination_after, name,
                   v1::DEVICE_STATE_RUNNING, digest);
    }
  }
  std::cout << absl::StrFormat(
      "concurrency: %d jobs, at most %d at once: %d waited in line (the "
      "longest %s), at most %d moved at once; all started within %s\n",
      jobs.size(), kLimit, waited.size(), absl::FormatDuration(longest_wait),
      most_at_once, absl::FormatDuration(starting));
}

// A job that waits in line past its transfer token's life: the destination's
// prepared job ends when the token expires (its devices reset), so when the
// waiting job's turn comes the session is refused, and the job fails naming
// the wait, its devices running on the source with their own state.
TEST_F(ConcurrencyTest, AJobWhoseTokenExpiresInLineFailsWhenItsTurnComes) {
  source_ =
      StartAgent("source", {"--max_concurrent_migrations=1"}, SourceConfig());
  ASSERT_NE(source_, nullptr);
  destination_ = StartAgent("destination", {"--transfer_token_ttl=2s"},
                            DestinationConfig());
  ASSERT_NE(destination_, nullptr);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  constexpr int kBlocker = 2;  // pre-copy devices with a workload
  constexpr int kWaiter = 0;
  ASSERT_EQ(FaultOf(kBlocker), Fault::kCancelled);
  const absl::Time deadline = absl::Now() + kAllJobsTimeout;

  ASSERT_OK_AND_ASSIGN(v1::StartMigrationRequest blocker, Prepare(kBlocker));
  ASSERT_OK_AND_ASSIGN(v1::StartMigrationRequest waiter, Prepare(kWaiter));
  // The blocker never converges, so it holds the only slot until cancelled.
  NeverConverge(blocker.mutable_policy());

  Migration answer;
  CallResult r =
      CallStartMigration(source_->stub(), blocker, &answer, kRpcTimeout);
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_FALSE(answer.queue().waiting());
  r = CallStartMigration(source_->stub(), waiter, &answer, kRpcTimeout);
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  EXPECT_TRUE(answer.queue().waiting()) << answer.ShortDebugString();
  EXPECT_EQ(answer.queue().ahead(), 0u);

  // The waiter's prepared job ends on the destination when its token
  // expires; then the blocker goes.
  ASSERT_OK_AND_ASSIGN(Migration expired, WaitForEnd(destination_->stub(),
                                                     JobId(kWaiter), deadline));
  EXPECT_NE(PhaseName(expired.phase()), PhaseName(v1::PHASE_SUCCEEDED));
  {
    ASSERT_OK_AND_ASSIGN(Migration still,
                         GetMigration(source_->stub(), JobId(kWaiter)));
    EXPECT_TRUE(still.queue().waiting()) << still.ShortDebugString();
  }
  v1::CancelMigrationRequest cancel;
  cancel.set_job_id(JobId(kBlocker));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  Migration cancelled;
  ASSERT_TRUE(
      source_->stub().CancelMigration(&context, cancel, &cancelled).ok());

  ASSERT_OK_AND_ASSIGN(Migration end,
                       WaitForEnd(source_->stub(), JobId(kWaiter), deadline));
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_FAILED))
      << end.ShortDebugString();
  EXPECT_TRUE(absl::StrContains(end.failure().message(), "for a transfer slot"))
      << end.failure().message();
  EXPECT_TRUE(absl::StrContains(end.failure().message(), "expired"))
      << end.failure().message();
  EXPECT_FALSE(end.queue().waiting());
  ASSERT_OK_AND_ASSIGN(Migration blocker_end,
                       WaitForEnd(source_->stub(), JobId(kBlocker), deadline));
  EXPECT_EQ(PhaseName(blocker_end.phase()), PhaseName(v1::PHASE_CANCELLED));

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  for (const std::string& name : DevicesOf(kWaiter)) {
    ExpectDevice("source", source_after, name, v1::DEVICE_STATE_RUNNING,
                 source_before[name].state_digest());
    ExpectDevice("destination", destination_after, name,
                 v1::DEVICE_STATE_RUNNING);
  }
  std::cout << "concurrency: a job whose token expired in line: "
            << end.failure().message() << "\n";
}

}  // namespace
}  // namespace migd::e2e
