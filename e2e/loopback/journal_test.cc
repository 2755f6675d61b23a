// e2e/loopback/journal_test.cc
//
// Loopback tier for the job journal (migd/journal): real agents stopped,
// killed and restarted on the same --state_dir. Finished jobs answer after a
// restart; a job an agent was killed in is ended at its restart by the
// recovery rule of its role and phase (migd/journal/recovery.h), and its
// peer's job ends on its own; a journal that cannot be written fails a job
// before any device moves; a corrupt journal, or one another agent holds,
// keeps an agent from starting.
//
// Emulated devices live in the agent's memory, so a restarted agent has fresh
// devices (RUNNING, content from the seed): what recovery does to a device's
// state is proven in the VM tier. Here: the records, the recovery outcomes
// and notices, devices free and RUNNING, the peer's job.
//
// Agents serve mutual TLS (e2e/testing/agent_process.h); a restarted agent
// keeps its certificate. Each test starts its own agents and waits on
// conditions with deadlines, never on sleeps.

#include <sqlite3.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/device_checks.h"
#include "e2e/testing/emulated_devices.h"
#include "e2e/testing/journal_probe.h"
#include "e2e/testing/status_macros.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace migd::e2e {
namespace {

using ::migd::v1::Device;
using ::migd::v1::Migration;

// Deadlines: generous for a shared, loaded 2-core machine; a healthy run
// takes a small fraction of each.
constexpr absl::Duration kRpcTimeout = absl::Seconds(30);
constexpr absl::Duration kJobTimeout = absl::Seconds(90);

constexpr char kJournalFile[] = "journal.sqlite3";

std::string PhaseName(v1::Phase phase) { return v1::Phase_Name(phase); }
std::string ReasonName(v1::ErrorReason reason) {
  return v1::ErrorReason_Name(reason);
}
// "PRE_COPY" for PHASE_PRE_COPY: how the agent names a phase in its notices.
std::string ShortPhaseName(v1::Phase phase) {
  std::string name = PhaseName(phase);
  return absl::StartsWith(name, "PHASE_") ? name.substr(6) : name;
}

std::string JournalPath(absl::string_view state_dir) {
  return absl::StrCat(state_dir, "/", kJournalFile);
}

// ---- Devices ---------------------------------------------------------------

bool HasNotice(const Migration& m, absl::string_view prefix,
               absl::string_view text) {
  for (const std::string& n : m.notices()) {
    if (absl::StartsWith(n, prefix) && absl::StrContains(n, text)) return true;
  }
  return false;
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

// ---- The journal file, as the test sees it --------------------------------

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  return std::string(std::istreambuf_iterator<char>(f), {});
}

absl::Status WriteFile(const std::string& path, absl::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// The journal's size in pages, from its header (page size at offset 16, big
// endian, 1 meaning 65536) and its length: what it holds once its agent
// stopped cleanly (the last connection folds the WAL back into the file).
absl::StatusOr<int64_t> JournalPages(absl::string_view state_dir,
                                     int64_t* page_size) {
  absl::StatusOr<std::string> bytes = ReadFile(JournalPath(state_dir));
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() < 100 || !absl::StartsWith(*bytes, "SQLite format 3")) {
    return absl::FailedPreconditionError(
        absl::StrCat(JournalPath(state_dir), " is not a SQLite file"));
  }
  const auto b = [&](int i) { return static_cast<uint8_t>((*bytes)[i]); };
  *page_size = (b(16) << 8) | b(17);
  if (*page_size == 1) *page_size = 65536;
  return static_cast<int64_t>(bytes->size()) / *page_size;
}

// ---- Fixture ---------------------------------------------------------------

class JournalTest : public AgentTest {
 protected:
  // Options for the next agent, "<Test>.<role>", with `devices` and `args`;
  // kept by a test that restarts the agent.
  AgentOptions OptionsFor(absl::string_view role,
                          const std::vector<EmuSpec>& devices,
                          std::vector<std::string> args = {}) {
    AgentOptions options = NextAgentOptions(role);
    options.devices_config = DevicesConfig(devices);
    options.args = std::move(args);
    return options;
  }

  // The agent of `options` again (same devices, certificate and flags) on
  // `previous`'s state dir, named "<Test>.<role>".
  AgentProcess* Restart(const AgentProcess& previous, AgentOptions options,
                        absl::string_view role) {
    options.state_dir = previous.state_dir();
    return StartAgent(role, std::move(options));
  }

  // A source with `source` devices and a destination with Mirror(source).
  void StartPair(const std::vector<EmuSpec>& source) {
    source_options_ = OptionsFor("source", source);
    source_ = StartAgent("source", source_options_);
    ASSERT_NE(source_, nullptr);
    destination_options_ = OptionsFor("destination", Mirror(source));
    destination_ = StartAgent("destination", destination_options_);
    ASSERT_NE(destination_, nullptr);
  }

  v1::PrepareIncomingRequest PrepareRequest(
      absl::string_view job, const std::vector<std::string>& names) {
    v1::PrepareIncomingRequest request;
    request.set_job_id(std::string(job));
    for (const std::string& name : names) {
      v1::DevicePair* pair = request.add_devices();
      pair->set_source_device(name);
      pair->set_destination_device(name);
    }
    request.set_source("journal-test");
    request.set_source_identity(source_->identity());
    return request;
  }

  // A StartMigration request to the destination agent (by address and
  // identity), with a 30 s phase timeout; tests add their policy.
  v1::StartMigrationRequest Request(absl::string_view job,
                                    const std::vector<std::string>& names) {
    v1::StartMigrationRequest request;
    request.set_job_id(std::string(job));
    for (const std::string& name : names) {
      v1::DevicePair* pair = request.add_devices();
      pair->set_source_device(name);
      pair->set_destination_device(name);
    }
    request.set_destination(destination_->address());
    request.set_destination_identity(destination_->identity());
    request.mutable_policy()->mutable_phase_timeout()->set_seconds(30);
    return request;
  }

  // Prepares the destination and starts the job on the source; fails the
  // test if either is refused.
  void Migrate(v1::StartMigrationRequest request) {
    std::vector<std::string> names;
    for (const v1::DevicePair& p : request.devices()) {
      names.push_back(p.source_device());
    }
    v1::PrepareIncomingResponse prepared;
    CallResult r = CallPrepareIncoming(destination_->stub(),
                                       PrepareRequest(request.job_id(), names),
                                       &prepared, kRpcTimeout);
    ASSERT_TRUE(r.status.ok())
        << "PrepareIncoming " << request.job_id() << ": " << DescribeCall(r);
    request.set_transfer_token(prepared.transfer_token());
    Migration started;
    r = CallStartMigration(source_->stub(), request, &started, kRpcTimeout);
    ASSERT_TRUE(r.status.ok())
        << "StartMigration " << request.job_id() << ": " << DescribeCall(r);
  }

  absl::StatusOr<Migration> WaitEnd(AgentProcess* agent,
                                    absl::string_view job) {
    return WaitForEnd(agent->stub(), job, absl::Now() + kJobTimeout);
  }

  void ExpectBothSucceeded(absl::string_view job) {
    for (AgentProcess* agent : {source_, destination_}) {
      ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(agent, job));
      EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_SUCCEEDED))
          << agent->name() << ": " << end.ShortDebugString();
    }
  }

  // Waits until the source's job pre-copies (its devices running while state
  // moves) and the journal of `agent` (either side) holds the phase the API
  // shows there, so that a restart finds it. Returns that phase.
  v1::Phase WaitUntilPrecopyingAndJournaled(absl::string_view job,
                                            AgentProcess* agent) {
    absl::StatusOr<Migration> m = WaitForPhase(
        source_->stub(), job,
        [](const Migration& m) { return m.phase() == v1::PHASE_PRE_COPY; },
        absl::Now() + kJobTimeout);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return v1::PHASE_UNSPECIFIED;
    absl::StatusOr<Migration> now = GetMigration(agent->stub(), job);
    EXPECT_TRUE(now.ok()) << now.status();
    if (!now.ok()) return v1::PHASE_UNSPECIFIED;
    EXPECT_FALSE(IsTerminal(now->phase())) << now->ShortDebugString();
    absl::Status journaled = WaitForJournaledPhase(
        agent->state_dir(), job, {now->phase()}, absl::Now() + kJobTimeout);
    EXPECT_TRUE(journaled.ok()) << journaled;
    std::cerr << "killing " << agent->name() << " with job " << job << " in "
              << PhaseName(now->phase()) << " (source at " << m->bytes_done()
              << " bytes, iteration " << m->precopy().iteration() << ")\n";
    return journaled.ok() ? now->phase() : v1::PHASE_UNSPECIFIED;
  }

  AgentOptions source_options_;
  AgentOptions destination_options_;
};

// A pre-copy that never converges, so the job is still pre-copying whenever
// the test interrupts it: the policy assumes 1 KiB/s against a workload that
// keeps dirtying state, with a 10 ms limit, and the caps are far away.
v1::StartMigrationRequest NeverConverging(v1::StartMigrationRequest request) {
  v1::MigrationPolicy* p = request.mutable_policy();
  p->set_bandwidth_bytes_per_second(1024);
  p->mutable_downtime_limit()->set_nanos(10 * 1000 * 1000);
  p->set_max_iterations(1000000);
  p->mutable_max_precopy_time()->set_seconds(600);
  p->set_on_no_convergence(v1::MigrationPolicy::ON_NO_CONVERGENCE_FAIL);
  return request;
}

// A pre-copy that always ends: switch over at the cap if not converged.
v1::StartMigrationRequest SwitchOverAtTheCap(
    v1::StartMigrationRequest request) {
  v1::MigrationPolicy* p = request.mutable_policy();
  p->set_max_iterations(5);
  p->set_on_no_convergence(v1::MigrationPolicy::ON_NO_CONVERGENCE_SWITCH_OVER);
  return request;
}

// Devices that keep changing while they run, so pre-copy always has more.
std::vector<EmuSpec> WorkloadDevices() {
  return Emus(2, "32MiB", 1, "dirty_rate=4MiB");
}

// ---- Finished jobs ---------------------------------------------------------

TEST_F(JournalTest, FinishedJobsAnswerAfterARestart) {
  const std::vector<EmuSpec> devices = Emus(2, "16MiB", 1);
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-remembered";
  ASSERT_NO_FATAL_FAILURE(Migrate(Request(job, names)));
  ASSERT_NO_FATAL_FAILURE(ExpectBothSucceeded(job));
  ASSERT_OK_AND_ASSIGN(Migration source_before,
                       GetMigration(source_->stub(), job));
  ASSERT_OK_AND_ASSIGN(Migration destination_before,
                       GetMigration(destination_->stub(), job));
  ASSERT_GT(source_before.bytes_done(), 0u);
  ASSERT_GT(FromProtoDuration(source_before.downtime()), absl::ZeroDuration());

  ASSERT_TRUE(StopCleanly(*source_).ok());
  ASSERT_TRUE(StopCleanly(*destination_).ok());
  AgentProcess* source = Restart(*source_, source_options_, "source.restarted");
  ASSERT_NE(source, nullptr);
  AgentProcess* destination =
      Restart(*destination_, destination_options_, "destination.restarted");
  ASSERT_NE(destination, nullptr);

  for (auto [agent, before] : {std::pair{source, &source_before},
                               std::pair{destination, &destination_before}}) {
    SCOPED_TRACE(agent->name());
    ASSERT_OK_AND_ASSIGN(Migration after, GetMigration(agent->stub(), job));
    EXPECT_EQ(PhaseName(after.phase()), PhaseName(v1::PHASE_SUCCEEDED));
    EXPECT_EQ(after.devices_size(), 2);
    EXPECT_EQ(after.bytes_done(), before->bytes_done());
    EXPECT_EQ(FromProtoDuration(after.downtime()),
              FromProtoDuration(before->downtime()));
    // The whole record, as the API reported it before the restart.
    std::string diff;
    google::protobuf::util::MessageDifferencer differencer;
    differencer.ReportDifferencesToString(&diff);
    EXPECT_TRUE(differencer.Compare(*before, after))
        << "the record changed across the restart:\n"
        << diff;

    ASSERT_OK_AND_ASSIGN(std::vector<Migration> listed, ListMigrations(*agent));
    std::vector<std::string> ids;
    for (const Migration& m : listed) ids.push_back(m.job_id());
    EXPECT_EQ(ids, std::vector<std::string>{job});
  }
}

// ---- Agents killed mid-job -------------------------------------------------

// The source agent dies in pre-copy (its devices in PRE_COPY, COMMIT never
// sent). The destination's job ends as a lost peer's does; the restarted
// source ends its job AGENT_RESTARTED, saying what recovery found and did,
// with its devices running and free, and they migrate again.
TEST_F(JournalTest, ASourceKilledInPreCopyEndsItsJobAtRestart) {
  const std::vector<EmuSpec> devices = WorkloadDevices();
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-source-killed";
  ASSERT_NO_FATAL_FAILURE(Migrate(NeverConverging(Request(job, names))));
  ASSERT_EQ(PhaseName(WaitUntilPrecopyingAndJournaled(job, source_)),
            PhaseName(v1::PHASE_PRE_COPY));
  ASSERT_TRUE(source_->Kill(SIGKILL).ok());

  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  std::cerr << "destination's job: " << PhaseName(destination_end.phase())
            << " " << ReasonName(destination_end.failure().reason()) << ": "
            << destination_end.failure().message() << "\n";
  EXPECT_NE(PhaseName(destination_end.phase()), PhaseName(v1::PHASE_SUCCEEDED))
      << destination_end.ShortDebugString();
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_devices,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_devices, names,
                v1::DEVICE_STATE_RUNNING);

  AgentProcess* source = Restart(*source_, source_options_, "source.restarted");
  ASSERT_NE(source, nullptr);
  source_ = source;
  ASSERT_OK_AND_ASSIGN(Migration recovered, GetMigration(source_->stub(), job));
  EXPECT_EQ(PhaseName(recovered.phase()), PhaseName(v1::PHASE_FAILED))
      << recovered.ShortDebugString();
  EXPECT_EQ(ReasonName(recovered.failure().reason()),
            ReasonName(v1::ERROR_REASON_AGENT_RESTARTED))
      << recovered.failure().message();
  EXPECT_TRUE(HasNotice(recovered, "recovery: ", "PRE_COPY"))
      << "notices: " << absl::StrJoin(recovered.notices(), " | ");
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_devices, DeviceMap(source_->stub()));
  ExpectDevices("restarted source", source_devices, names,
                v1::DEVICE_STATE_RUNNING);

  const std::string again = "job-after-source-restart";
  ASSERT_NO_FATAL_FAILURE(Migrate(SwitchOverAtTheCap(Request(again, names))));
  ASSERT_NO_FATAL_FAILURE(ExpectBothSucceeded(again));
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    EXPECT_EQ(StateName(destination_after[name].state()),
              StateName(v1::DEVICE_STATE_RUNNING));
    EXPECT_FALSE(source_after[name].state_digest().empty());
    EXPECT_EQ(destination_after[name].state_digest(),
              source_after[name].state_digest())
        << "the destination does not hold the source's state";
  }
}

// The destination agent dies while the source pre-copies (its devices in
// RESUMING, COMMIT never received). The source rolls back; the restarted
// destination ends its job AGENT_RESTARTED, its devices reset, running and
// free.
TEST_F(JournalTest, ADestinationKilledBeforeCommitEndsItsJobAtRestart) {
  const std::vector<EmuSpec> devices = WorkloadDevices();
  const std::vector<std::string> names = NamesOf(devices);
  ASSERT_NO_FATAL_FAILURE(StartPair(devices));

  const std::string job = "job-destination-killed";
  ASSERT_NO_FATAL_FAILURE(Migrate(NeverConverging(Request(job, names))));
  const v1::Phase killed_in =
      WaitUntilPrecopyingAndJournaled(job, destination_);
  ASSERT_NE(killed_in, v1::PHASE_UNSPECIFIED);
  ASSERT_TRUE(destination_->Kill(SIGKILL).ok());

  ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source_, job));
  EXPECT_EQ(PhaseName(source_end.phase()), PhaseName(v1::PHASE_FAILED))
      << source_end.ShortDebugString();
  EXPECT_FALSE(source_end.committed());
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_devices, DeviceMap(source_->stub()));
  ExpectDevices("source", source_devices, names, v1::DEVICE_STATE_RUNNING);

  AgentProcess* destination =
      Restart(*destination_, destination_options_, "destination.restarted");
  ASSERT_NE(destination, nullptr);
  ASSERT_OK_AND_ASSIGN(Migration recovered,
                       GetMigration(destination->stub(), job));
  EXPECT_EQ(PhaseName(recovered.phase()), PhaseName(v1::PHASE_FAILED))
      << recovered.ShortDebugString();
  EXPECT_EQ(ReasonName(recovered.failure().reason()),
            ReasonName(v1::ERROR_REASON_AGENT_RESTARTED))
      << recovered.failure().message();
  EXPECT_TRUE(HasNotice(recovered, "recovery: ", ShortPhaseName(killed_in)))
      << "notices: " << absl::StrJoin(recovered.notices(), " | ");
  EXPECT_TRUE(HasNotice(recovered, "recovery: ", "reset"))
      << "notices: " << absl::StrJoin(recovered.notices(), " | ");
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_devices,
                       DeviceMap(destination->stub()));
  ExpectDevices("restarted destination", destination_devices, names,
                v1::DEVICE_STATE_RUNNING);
}

// ---- A journal that cannot be written -------------------------------------

// Devices whose names make a job's record larger than a journal page, so
// that recording it needs pages the journal may not add: 48 names of 60
// characters (a name has at most 64).
std::vector<EmuSpec> LongNamedDevices() {
  return Emus(48, "1MiB", 1, "", absl::StrCat(std::string(57, 'n'), "-"));
}

class FullJournalTest : public JournalTest {
 protected:
  // Starts `options` once so that its journal exists, stops it, and starts
  // it again with --test_fault=journal_max_pages:<what the file holds>: a
  // journal on a full disk, which takes what fits in its pages and nothing
  // that needs one more. The agent's name is "<Test>.<role>".
  AgentProcess* StartWithAFullJournal(AgentOptions options,
                                      absl::string_view role,
                                      int64_t* page_size) {
    AgentProcess* first = StartAgent(absl::StrCat(role, ".first"), options);
    EXPECT_NE(first, nullptr);
    if (first == nullptr) return nullptr;
    absl::Status stopped = StopCleanly(*first);
    EXPECT_TRUE(stopped.ok()) << stopped;
    absl::StatusOr<int64_t> pages = JournalPages(first->state_dir(), page_size);
    EXPECT_TRUE(pages.ok()) << pages.status();
    if (!stopped.ok() || !pages.ok()) return nullptr;
    std::cerr << "journal of " << first->name() << ": " << *pages
              << " pages of " << *page_size << " bytes\n";
    options.args.push_back(
        absl::StrCat("--test_fault=journal_max_pages:", *pages));
    return Restart(*first, std::move(options), role);
  }

  // The devices' names take more than a page in the job's record (each is
  // there twice: this agent's name and the peer's).
  static void ExpectRecordLargerThanAPage(const std::vector<std::string>& names,
                                          int64_t page_size) {
    size_t bytes = 0;
    for (const std::string& name : names) bytes += 2 * name.size();
    ASSERT_GT(static_cast<int64_t>(bytes), page_size)
        << "the test needs a record that does not fit in a journal page";
  }
};

TEST_F(FullJournalTest, AJournalThatCannotWriteFailsTheJobBeforeAnythingMoves) {
  const std::vector<EmuSpec> devices = LongNamedDevices();
  const std::vector<std::string> names = NamesOf(devices);
  // The source only lends its identity to the request; nothing dials it.
  source_ = StartAgent("source", OptionsFor("source", devices));
  ASSERT_NE(source_, nullptr);
  int64_t page_size = 0;
  destination_ = StartWithAFullJournal(
      OptionsFor("destination", Mirror(devices)), "destination", &page_size);
  ASSERT_NE(destination_, nullptr);
  ASSERT_NO_FATAL_FAILURE(ExpectRecordLargerThanAPage(names, page_size));
  ASSERT_OK_AND_ASSIGN(DeviceMapT before, DeviceMap(destination_->stub()));
  ExpectDevices("destination", before, names, v1::DEVICE_STATE_RUNNING);

  const std::string job = "job-journal-full";
  v1::PrepareIncomingResponse response;
  CallResult r = CallPrepareIncoming(
      destination_->stub(), PrepareRequest(job, names), &response, kRpcTimeout);
  ASSERT_FALSE(r.status.ok())
      << "PrepareIncoming succeeded with a full journal";
  EXPECT_EQ(r.reason, ReasonName(v1::ERROR_REASON_JOURNAL)) << DescribeCall(r);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << DescribeCall(r);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                JournalPath(destination_->state_dir())))
      << "the message should name the journal: " << DescribeCall(r);
  EXPECT_TRUE(response.transfer_token().empty());

  // Nothing moved: every device as it was (state, content, no job).
  ASSERT_OK_AND_ASSIGN(DeviceMapT after, DeviceMap(destination_->stub()));
  EXPECT_EQ(Describe(before), Describe(after));
  ExpectDevices("destination", after, names, v1::DEVICE_STATE_RUNNING);
}

TEST_F(FullJournalTest,
       ASourceWhoseJournalCannotWriteFailsTheJobWithItsDevicesRunning) {
  const std::vector<EmuSpec> devices = LongNamedDevices();
  const std::vector<std::string> names = NamesOf(devices);
  int64_t page_size = 0;
  source_ = StartWithAFullJournal(OptionsFor("source", devices), "source",
                                  &page_size);
  ASSERT_NE(source_, nullptr);
  destination_ =
      StartAgent("destination", OptionsFor("destination", Mirror(devices)));
  ASSERT_NE(destination_, nullptr);
  ASSERT_NO_FATAL_FAILURE(ExpectRecordLargerThanAPage(names, page_size));
  ASSERT_OK_AND_ASSIGN(DeviceMapT before, DeviceMap(source_->stub()));
  ExpectDevices("source", before, names, v1::DEVICE_STATE_RUNNING);

  const std::string job = "job-source-journal-full";
  ASSERT_NO_FATAL_FAILURE(Migrate(Request(job, names)));
  ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(source_, job));
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_FAILED))
      << end.failure().ShortDebugString();
  EXPECT_EQ(ReasonName(end.failure().reason()),
            ReasonName(v1::ERROR_REASON_JOURNAL))
      << end.failure().message();
  EXPECT_TRUE(absl::StrContains(end.failure().message(),
                                JournalPath(source_->state_dir())))
      << "the message should name the journal: " << end.failure().message();
  EXPECT_FALSE(end.committed());
  // No device left RUNNING: the only states the job logged are the rollback's
  // RUNNING.
  for (const v1::StateChange& c : end.state_changes()) {
    EXPECT_EQ(StateName(c.state()), StateName(v1::DEVICE_STATE_RUNNING))
        << "device " << c.device() << " moved";
  }

  ASSERT_OK_AND_ASSIGN(DeviceMapT after, DeviceMap(source_->stub()));
  EXPECT_EQ(Describe(before), Describe(after));
  ExpectDevices("source", after, names, v1::DEVICE_STATE_RUNNING);

  ASSERT_OK_AND_ASSIGN(Migration destination_end, WaitEnd(destination_, job));
  std::cerr << "destination's job: " << PhaseName(destination_end.phase())
            << " " << ReasonName(destination_end.failure().reason()) << ": "
            << destination_end.failure().message() << "\n";
  EXPECT_NE(PhaseName(destination_end.phase()), PhaseName(v1::PHASE_SUCCEEDED));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);
}

// ---- Journals an agent refuses to start with ------------------------------

TEST_F(JournalTest, ACorruptJournalStopsTheAgentFromStarting) {
  const std::vector<EmuSpec> devices = Emus(1, "1MiB", 1);
  const AgentOptions options = OptionsFor("agent", devices);
  AgentProcess* agent = StartAgent("agent", options);
  ASSERT_NE(agent, nullptr);
  ASSERT_TRUE(StopCleanly(*agent).ok());
  const std::string path = JournalPath(agent->state_dir());
  ASSERT_OK_AND_ASSIGN(std::string journal, ReadFile(path));
  ASSERT_FALSE(journal.empty());

  std::string garbage;
  for (size_t i = 0; garbage.size() < journal.size(); ++i) {
    absl::StrAppend(&garbage, "not a journal ", i * 2654435761u, "\n");
  }
  ASSERT_TRUE(WriteFile(path, garbage).ok());

  AgentOptions again = options;
  again.name = absl::StrCat(options.name, ".restarted");
  again.state_dir = agent->state_dir();
  absl::StatusOr<std::unique_ptr<AgentProcess>> restarted =
      AgentProcess::Start(again);
  ASSERT_FALSE(restarted.ok()) << "the agent started on a corrupt journal";
  const std::string said(restarted.status().message());
  EXPECT_TRUE(absl::StrContains(said, absl::StrCat("journal ", path)) &&
              absl::StrContains(said, "is corrupt") &&
              absl::StrContains(said, "move it aside"))
      << said;

  ASSERT_OK_AND_ASSIGN(std::string now, ReadFile(path));
  EXPECT_TRUE(now == garbage) << "the agent changed the corrupt journal";
}

TEST_F(JournalTest, TwoAgentsCannotShareAStateDir) {
  const std::vector<EmuSpec> devices = Emus(1, "1MiB", 1);
  AgentProcess* first = StartAgent("first", OptionsFor("first", devices));
  ASSERT_NE(first, nullptr);

  AgentOptions second = OptionsFor("second", devices);
  second.state_dir = first->state_dir();
  absl::StatusOr<std::unique_ptr<AgentProcess>> started =
      AgentProcess::Start(second);
  ASSERT_FALSE(started.ok()) << "a second agent started on the same state dir";
  const std::string said(started.status().message());
  EXPECT_TRUE(absl::StrContains(
      said, absl::StrCat("another migd uses ", first->state_dir(), " (pid ",
                         first->pid(), ")")))
      << said;

  // The first agent goes on serving.
  ASSERT_TRUE(first->Running());
  ASSERT_OK_AND_ASSIGN(DeviceMapT devices_now, DeviceMap(first->stub()));
  ExpectDevices("first", devices_now, NamesOf(devices),
                v1::DEVICE_STATE_RUNNING);
}

}  // namespace
}  // namespace migd::e2e
