// e2e/loopback/commit_test.cc
//
// Loopback tier for the end of a migration as a commit: real agents on
// mutual TLS, a destination that dies after COMMIT (a test fault makes it
// _exit() on receiving COMMIT, before it loads, or after it resumed its
// devices, before its Completion goes out) and comes back on the same port
// and state dir. The source's job must go IN_DOUBT and hold its devices
// stopped (STOP_COPY, never RUNNING) until the restarted destination says
// what became of the job: RUNNING_HERE (the job succeeded, the source's
// devices stop for good) or NOT_RUN (the destination's recovery reset its
// devices; the source resumes its own and the job fails with its cause). A
// destination that never comes back leaves the decision to an operator
// (`migctl resolve`), which is applied and logged with the operator's
// identity; a source restarted while in doubt asks again on its own.
//
// Emulated devices live in the agent's memory: a restarted agent has fresh
// devices (RUNNING), so what is checked after a restart is the records and
// the devices of the agent that kept running.

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/device_checks.h"
#include "e2e/testing/migctl.h"
#include "e2e/testing/run_pki.h"
#include "e2e/testing/shell.h"
#include "e2e/testing/status_macros.h"
#include "gtest/gtest.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace migd::e2e {
namespace {

using ::migd::v1::Device;
using ::migd::v1::Migration;

// Generous for a loaded 2-core machine; a healthy run takes a fraction.
constexpr absl::Duration kRpcTimeout = absl::Seconds(30);
constexpr absl::Duration kJobTimeout = absl::Seconds(90);

const std::vector<std::string> kNames = {"emu0", "emu1"};

std::string PhaseName(v1::Phase phase) { return v1::Phase_Name(phase); }
std::string ReasonName(v1::ErrorReason reason) {
  return v1::ErrorReason_Name(reason);
}
bool HasNotice(const Migration& m, absl::string_view text) {
  for (const std::string& n : m.notices()) {
    if (absl::StrContains(n, text)) return true;
  }
  return false;
}

// Every state the record shows `device` entering.
std::vector<std::string> StatesOf(const Migration& m,
                                  absl::string_view device) {
  std::vector<std::string> out;
  for (const v1::StateChange& c : m.state_changes()) {
    if (c.device() == device) out.push_back(StateName(c.state()));
  }
  return out;
}

int Count(const std::vector<std::string>& v, absl::string_view s) {
  return static_cast<int>(std::count(v.begin(), v.end(), s));
}

absl::StatusOr<std::string> ReadLog(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("no ", path));
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  fclose(f);
  return out;
}

class CommitTest : public AgentTest {
 protected:
  // A source and a destination with devices emu0, emu1; the destination
  // with `destination_args` (its test fault).
  void StartPair(std::vector<std::string> destination_args) {
    source_options_ = NextAgentOptions("source");
    source_options_.args = Devices(1);
    source_ = StartAgent("source", source_options_);
    ASSERT_NE(source_, nullptr);
    destination_options_ = NextAgentOptions("destination");
    destination_options_.args = Devices(1001);
    destination_options_.args.insert(destination_options_.args.end(),
                                     destination_args.begin(),
                                     destination_args.end());
    destination_ = StartAgent("destination", destination_options_);
    ASSERT_NE(destination_, nullptr);
  }

  static std::vector<std::string> Devices(int seed) {
    return {absl::StrCat("--emulated_devices=", absl::StrJoin(kNames, ",")),
            "--emulated_state_size=8MiB",
            absl::StrCat("--emulated_seed=", seed)};
  }

  // Prepares the destination and starts `job` on the source.
  void Migrate(const std::string& job) {
    v1::PrepareIncomingRequest prepare;
    prepare.set_job_id(job);
    v1::StartMigrationRequest start;
    start.set_job_id(job);
    for (const std::string& name : kNames) {
      v1::DevicePair* p = prepare.add_devices();
      p->set_source_device(name);
      p->set_destination_device(name);
      *start.add_devices() = *p;
    }
    prepare.set_source("commit-test");
    prepare.set_source_identity(source_->identity());
    v1::PrepareIncomingResponse prepared;
    CallResult r = CallPrepareIncoming(destination_->stub(), prepare, &prepared,
                                       kRpcTimeout);
    ASSERT_TRUE(r.status.ok()) << "PrepareIncoming: " << DescribeCall(r);
    start.set_destination(destination_->address());
    start.set_destination_identity(destination_->identity());
    start.set_transfer_token(prepared.transfer_token());
    start.mutable_policy()->mutable_phase_timeout()->set_seconds(30);
    Migration started;
    r = CallStartMigration(source_->stub(), start, &started, kRpcTimeout);
    ASSERT_TRUE(r.status.ok()) << "StartMigration: " << DescribeCall(r);
  }

  // The agent's own fault ended it: waits for that, reaps it, and takes it
  // out of the fixture's hands (which would report it as a crash); its log
  // is kept and shown if the test fails.
  void AwaitFaultExit(AgentProcess* agent) {
    const absl::Time deadline = absl::Now() + kJobTimeout;
    while (agent->Running() && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_FALSE(agent->Running())
        << agent->name() << " did not exit on its test fault";
    ASSERT_OK_AND_ASSIGN(std::string log, ReadLog(agent->log_path()));
    EXPECT_TRUE(absl::StrContains(log, "test fault: exiting")) << log;
    for (auto it = agents_.begin(); it != agents_.end(); ++it) {
      if (it->get() == agent) {
        exited_.push_back(std::move(*it));
        agents_.erase(it);
        break;
      }
    }
  }

  // The destination again, on the port and state dir it had: the source's
  // job knows it by that address.
  AgentProcess* RestartDestination() {
    AgentOptions options = destination_options_;
    options.state_dir = destination_->state_dir();
    options.args.erase(std::remove_if(options.args.begin(), options.args.end(),
                                      [](const std::string& a) {
                                        return absl::StartsWith(
                                            a, "--test_fault=");
                                      }),
                       options.args.end());
    const std::string& address = destination_->address();
    options.args.push_back(
        absl::StrCat("--listen=", address));  // the harness's comes first
    return StartAgent("destination.restarted", std::move(options));
  }

  // Waits until the source's job is IN_DOUBT and asked the destination at
  // least `attempts` times, checking each time it looks that no source
  // device runs (or is free) meanwhile.
  absl::StatusOr<Migration> AwaitInDoubt(const std::string& job,
                                         uint32_t attempts) {
    const absl::Time deadline = absl::Now() + kJobTimeout;
    for (;;) {
      absl::StatusOr<Migration> m = GetMigration(source_->stub(), job);
      if (!m.ok()) return m.status();
      if (IsTerminal(m->phase())) {
        return absl::FailedPreconditionError(
            absl::StrCat("the job ended instead of going IN_DOUBT: ",
                         m->ShortDebugString()));
      }
      if (m->phase() == v1::PHASE_IN_DOUBT) {
        absl::StatusOr<DeviceMapT> devices = DeviceMap(source_->stub());
        if (!devices.ok()) return devices.status();
        for (const std::string& name : kNames) {
          const Device& d = (*devices)[name];
          if (d.state() != v1::DEVICE_STATE_STOP_COPY || d.job_id() != job) {
            return absl::InternalError(absl::StrCat(
                "a source device is not held stopped while in doubt: ",
                Describe(*devices)));
          }
        }
        if (m->in_doubt().attempts() >= attempts) return m;
      }
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("not IN_DOUBT with ", attempts,
                         " questions: ", m->ShortDebugString()));
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }

  absl::StatusOr<Migration> WaitEnd(AgentProcess* agent,
                                    const std::string& job) {
    return WaitForEnd(agent->stub(), job, absl::Now() + kJobTimeout);
  }

  // No source device entered RUNNING during the job.
  static void ExpectNeverRunning(const Migration& m) {
    for (const std::string& name : kNames) {
      const std::vector<std::string> states = StatesOf(m, name);
      EXPECT_EQ(Count(states, StateName(v1::DEVICE_STATE_RUNNING)), 0)
          << name << ": " << absl::StrJoin(states, " ");
    }
  }

  // Source devices RUNNING again only as the job's very last step.
  static void ExpectRunningOnlyAtTheEnd(const Migration& m) {
    for (const std::string& name : kNames) {
      const std::vector<std::string> states = StatesOf(m, name);
      ASSERT_FALSE(states.empty()) << name;
      EXPECT_EQ(states.back(), StateName(v1::DEVICE_STATE_RUNNING)) << name;
      EXPECT_EQ(Count(states, StateName(v1::DEVICE_STATE_RUNNING)), 1)
          << name << ": " << absl::StrJoin(states, " ");
    }
  }

  void ExpectSourceDevices(v1::DeviceState state) {
    ASSERT_OK_AND_ASSIGN(DeviceMapT devices, DeviceMap(source_->stub()));
    for (const std::string& name : kNames) {
      EXPECT_EQ(StateName(devices[name].state()), StateName(state))
          << Describe(devices);
      EXPECT_EQ(devices[name].job_id(), "") << Describe(devices);
    }
  }

  void TearDown() override {
    AgentTest::TearDown();
    if (HasFailure()) {
      for (const auto& agent : exited_) {
        std::cerr << "---- log of agent " << agent->name()
                  << " (exited on its test fault), tail:\n"
                  << agent->LogTail(8192) << "\n";
      }
    }
  }

  AgentOptions source_options_;
  AgentOptions destination_options_;
  std::vector<std::unique_ptr<AgentProcess>> exited_;
};

// The destination resumed the devices and died before its Completion went
// out. The source holds its devices stopped, IN_DOUBT, while the destination
// is away; the restarted destination answers RUNNING_HERE and the job
// succeeds, its devices never having run again on the source.
TEST_F(CommitTest, DestinationGoneAfterResumingEndsTheJobSucceeded) {
  ASSERT_NO_FATAL_FAILURE(StartPair({"--test_fault=exit_after_resume:1"}));
  const std::string job = "job-gone-after-resume";
  ASSERT_NO_FATAL_FAILURE(Migrate(job));
  ASSERT_NO_FATAL_FAILURE(AwaitFaultExit(destination_));

  ASSERT_OK_AND_ASSIGN(Migration doubt, AwaitInDoubt(job, 2));
  EXPECT_TRUE(doubt.committed());
  EXPECT_TRUE(absl::StrContains(doubt.in_doubt().last_answer(), "no answer"))
      << doubt.in_doubt().last_answer();

  AgentProcess* destination = RestartDestination();
  ASSERT_NE(destination, nullptr);
  ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(source_, job));
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_SUCCEEDED))
      << end.ShortDebugString();
  EXPECT_TRUE(absl::StrContains(end.in_doubt().resolution(), "RUNNING_HERE"))
      << end.in_doubt().resolution();
  ExpectNeverRunning(end);
  ExpectSourceDevices(v1::DEVICE_STATE_STOP);

  ASSERT_OK_AND_ASSIGN(Migration there, GetMigration(destination->stub(), job));
  EXPECT_EQ(PhaseName(there.phase()), PhaseName(v1::PHASE_SUCCEEDED))
      << there.ShortDebugString();
}

// The destination died on receiving COMMIT, before it loaded anything. The
// restarted destination's recovery resets its devices (COMMIT was never
// journaled there) and it answers NOT_RUN: the source resumes its devices,
// and its job fails with the cause it was in doubt for.
TEST_F(CommitTest,
       DestinationGoneOnCommitEndsTheJobFailedWithTheSourceRunning) {
  ASSERT_NO_FATAL_FAILURE(StartPair({"--test_fault=exit_on_commit:1"}));
  const std::string job = "job-gone-on-commit";
  ASSERT_NO_FATAL_FAILURE(Migrate(job));
  ASSERT_NO_FATAL_FAILURE(AwaitFaultExit(destination_));
  ASSERT_OK_AND_ASSIGN(Migration doubt, AwaitInDoubt(job, 2));
  EXPECT_TRUE(doubt.committed());

  AgentProcess* destination = RestartDestination();
  ASSERT_NE(destination, nullptr);
  ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(source_, job));
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_FAILED))
      << end.ShortDebugString();
  EXPECT_EQ(ReasonName(end.failure().reason()),
            ReasonName(v1::ERROR_REASON_PEER_UNAVAILABLE))
      << end.failure().message();
  EXPECT_TRUE(absl::StrContains(end.in_doubt().resolution(), "NOT_RUN"))
      << end.in_doubt().resolution();
  ExpectRunningOnlyAtTheEnd(end);
  ExpectSourceDevices(v1::DEVICE_STATE_RUNNING);

  ASSERT_OK_AND_ASSIGN(Migration there, GetMigration(destination->stub(), job));
  EXPECT_EQ(PhaseName(there.phase()), PhaseName(v1::PHASE_FAILED))
      << there.ShortDebugString();
  EXPECT_EQ(ReasonName(there.failure().reason()),
            ReasonName(v1::ERROR_REASON_AGENT_RESTARTED));
}

// The destination never comes back. The source keeps its devices stopped
// and keeps asking; a cancel cannot end the job (it cannot say which side
// runs), an observer may not decide, the operator does with `migctl
// resolve`: the choice is applied, noted in the job and logged with the
// operator's identity.
TEST_F(CommitTest, AnOperatorResolvesAJobWhoseDestinationNeverComesBack) {
  const std::string migctl = MigctlPath();
  ASSERT_FALSE(migctl.empty()) << "no --migctl_binary";
  ASSERT_NO_FATAL_FAILURE(StartPair({"--test_fault=exit_on_commit:1"}));
  const std::string job = "job-resolved-by-operator";
  ASSERT_NO_FATAL_FAILURE(Migrate(job));
  ASSERT_NO_FATAL_FAILURE(AwaitFaultExit(destination_));
  ASSERT_OK_AND_ASSIGN(Migration doubt, AwaitInDoubt(job, 3));

  ASSERT_OK_AND_ASSIGN(RunPki * pki, RunPki::Get());
  ASSERT_OK_AND_ASSIGN(security::TlsFiles op, pki->Files("operator"));
  auto run_migctl = [&](const std::string& args) {
    return RunShell(MigctlCommand(migctl, *source_, op, "/nonexistent", args));
  };

  CommandResult status = run_migctl(absl::StrCat("status ", job));
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_TRUE(absl::StrContains(status.output, "IN_DOUBT")) << status.output;
  EXPECT_TRUE(absl::StrContains(
      status.output, absl::StrCat("migctl resolve ", job, " --outcome=source")))
      << status.output;

  CommandResult cancel = run_migctl(absl::StrCat("cancel ", job));
  EXPECT_EQ(cancel.exit_code, 1) << cancel.output;
  EXPECT_TRUE(absl::StrContains(cancel.output, "ERROR_REASON_IN_DOUBT"))
      << cancel.output;

  ASSERT_OK_AND_ASSIGN(auto observer, source_->StubAs("observer"));
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    v1::ResolveMigrationRequest request;
    request.set_job_id(job);
    request.set_resolution(v1::RESOLUTION_SOURCE);
    Migration ignored;
    grpc::Status s = observer->ResolveMigration(&context, request, &ignored);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << s.error_message();
  }
  ASSERT_OK_AND_ASSIGN(Migration still, GetMigration(source_->stub(), job));
  EXPECT_EQ(PhaseName(still.phase()), PhaseName(v1::PHASE_IN_DOUBT));

  CommandResult resolve =
      run_migctl(absl::StrCat("resolve ", job, " --outcome=source"));
  EXPECT_EQ(resolve.exit_code, 0) << resolve.output;
  EXPECT_TRUE(absl::StrContains(resolve.output,
                                "the devices run on the source; the job is "
                                "FAILED"))
      << resolve.output;

  ASSERT_OK_AND_ASSIGN(Migration end, GetMigration(source_->stub(), job));
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_FAILED))
      << end.ShortDebugString();
  const std::string chose =
      "operator spiffe://migd.local/operator chose the source";
  EXPECT_TRUE(HasNotice(end, chose)) << absl::StrJoin(end.notices(), " | ");
  EXPECT_TRUE(absl::StrContains(end.in_doubt().resolution(), chose))
      << end.in_doubt().resolution();
  ExpectRunningOnlyAtTheEnd(end);
  ExpectSourceDevices(v1::DEVICE_STATE_RUNNING);
  ASSERT_OK_AND_ASSIGN(std::string log, ReadLog(source_->log_path()));
  EXPECT_TRUE(absl::StrContains(
      log, absl::StrCat("job ", job,
                        ": spiffe://migd.local/operator resolves "
                        "it: the devices run on the source")))
      << source_->LogTail();

  // Decided once: a second decision is refused.
  CommandResult again =
      run_migctl(absl::StrCat("resolve ", job, " --outcome=destination"));
  EXPECT_EQ(again.exit_code, 1) << again.output;
  EXPECT_TRUE(absl::StrContains(again.output, "ERROR_REASON_NOT_IN_DOUBT"))
      << again.output;
}

// The operator's other choice: the devices run on the destination; the
// source stops them for good and releases them, and the job succeeded.
TEST_F(CommitTest, AnOperatorChoosingTheDestinationReleasesTheSourceDevices) {
  ASSERT_NO_FATAL_FAILURE(StartPair({"--test_fault=exit_after_resume:1"}));
  const std::string job = "job-resolved-to-destination";
  ASSERT_NO_FATAL_FAILURE(Migrate(job));
  ASSERT_NO_FATAL_FAILURE(AwaitFaultExit(destination_));
  ASSERT_OK_AND_ASSIGN(Migration doubt, AwaitInDoubt(job, 1));

  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  v1::ResolveMigrationRequest request;
  request.set_job_id(job);
  request.set_resolution(v1::RESOLUTION_DESTINATION);
  Migration resolved;
  grpc::Status s =
      source_->stub().ResolveMigration(&context, request, &resolved);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(PhaseName(resolved.phase()), PhaseName(v1::PHASE_SUCCEEDED))
      << resolved.ShortDebugString();
  ExpectNeverRunning(resolved);
  ExpectSourceDevices(v1::DEVICE_STATE_STOP);
}

// The source agent itself restarts while its job is in doubt (the
// destination still away): recovery keeps the job IN_DOUBT and the restarted
// source asks the destination again on its own, with its agent
// certificate, until the returning destination settles it.
TEST_F(CommitTest, ASourceRestartedInDoubtAsksAgainAtStart) {
  ASSERT_NO_FATAL_FAILURE(StartPair({"--test_fault=exit_after_resume:1"}));
  const std::string job = "job-source-restarted-in-doubt";
  ASSERT_NO_FATAL_FAILURE(Migrate(job));
  ASSERT_NO_FATAL_FAILURE(AwaitFaultExit(destination_));
  ASSERT_OK_AND_ASSIGN(Migration doubt, AwaitInDoubt(job, 1));

  ASSERT_TRUE(source_->Kill(SIGKILL).ok());
  AgentOptions options = source_options_;
  options.state_dir = source_->state_dir();
  AgentProcess* source = StartAgent("source.restarted", std::move(options));
  ASSERT_NE(source, nullptr);
  ASSERT_OK_AND_ASSIGN(Migration recovered,
                       WaitForPhase(
                           source->stub(), job,
                           [](const Migration& m) {
                             return m.phase() == v1::PHASE_IN_DOUBT &&
                                    m.in_doubt().attempts() > 0;
                           },
                           absl::Now() + kJobTimeout));
  EXPECT_TRUE(
      absl::StrContains(recovered.in_doubt().last_answer(), "no answer"))
      << recovered.in_doubt().last_answer();
  ASSERT_OK_AND_ASSIGN(DeviceMapT held, DeviceMap(source->stub()));
  for (const std::string& name : kNames) {
    EXPECT_EQ(held[name].job_id(), job) << Describe(held);
  }

  AgentProcess* destination = RestartDestination();
  ASSERT_NE(destination, nullptr);
  ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(source, job));
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_SUCCEEDED))
      << end.ShortDebugString();
  EXPECT_TRUE(absl::StrContains(end.in_doubt().resolution(), "RUNNING_HERE"))
      << end.in_doubt().resolution();
  ASSERT_OK_AND_ASSIGN(DeviceMapT after, DeviceMap(source->stub()));
  for (const std::string& name : kNames) {
    EXPECT_EQ(StateName(after[name].state()), StateName(v1::DEVICE_STATE_STOP))
        << Describe(after);
    EXPECT_EQ(after[name].job_id(), "") << Describe(after);
  }
}

}  // namespace
}  // namespace migd::e2e
