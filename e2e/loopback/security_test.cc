// e2e/loopback/security_test.cc
//
// Loopback tier for the agent's security: real migd agents on 127.0.0.1
// serving mutual TLS with certificates of the run PKI (e2e/testing/run_pki.h),
// called by clients holding the operator's, the observer's, an agent's, a
// foreign, an expired or no certificate. It pins who may call what, that a
// transfer token works only for the source identity it is bound to, only once
// and only until it expires, that a source checks the destination's identity,
// that a rotated certificate is served to new connections while a migration
// goes on, that an agent with broken TLS or policy files refuses to start and
// says which file and why, and that secrets (transfer tokens, a VF token)
// appear in no log, job record, error message or migctl output.
//
// Each test starts its own agents: the first of a test serves as agent-a,
// the second as agent-b, the third as agent-c (all trusted as `agent` by the
// harness's policy). Tests wait on conditions with deadlines, never on
// sleeps.

#include <dirent.h>
#include <stdio.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/device_checks.h"
#include "e2e/testing/migctl.h"
#include "e2e/testing/run_pki.h"
#include "e2e/testing/shell.h"
#include "e2e/testing/status_macros.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "gtest/gtest.h"
#include "migd/security/credentials.h"
#include "migd/security/identity.h"
#include "migd/security/testing/test_pki.h"
#include "migd/security/tls_files.h"
#include "proto/migd/v1/migration.grpc.pb.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::e2e {
namespace {

using ::migd::security::testing::TestPki;
using ::migd::v1::Device;
using ::migd::v1::Migration;

// Deadlines: generous for a loaded 2-core machine; a healthy run takes a
// fraction of each.
constexpr absl::Duration kRpcTimeout = absl::Seconds(30);
constexpr absl::Duration kJobTimeout = absl::Seconds(60);

std::string PhaseName(v1::Phase phase) { return v1::Phase_Name(phase); }
std::string ReasonName(v1::ErrorReason reason) {
  return v1::ErrorReason_Name(reason);
}
std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

std::vector<std::string> EmuNames(int count) {
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) names.push_back(absl::StrCat("emu", i));
  return names;
}

// Flags for `count` emulated devices emu0.. of `size`, content from `seed`.
std::vector<std::string> EmulatedFlags(int count, absl::string_view size,
                                       int seed) {
  return {
      absl::StrCat("--emulated_devices=", absl::StrJoin(EmuNames(count), ",")),
      absl::StrCat("--emulated_state_size=", size),
      absl::StrCat("--emulated_seed=", seed)};
}

std::vector<std::string> Concat(std::vector<std::string> a,
                                const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void FillPairs(const std::vector<std::string>& names,
               google::protobuf::RepeatedPtrField<v1::DevicePair>* out) {
  for (const std::string& name : names) {
    v1::DevicePair* pair = out->Add();
    pair->set_source_device(name);
    pair->set_destination_device(name);
  }
}

grpc::ClientContext* WithDeadline(grpc::ClientContext* context,
                                  absl::Duration timeout = kRpcTimeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

CallResult CallCancel(v1::MigrationService::Stub& stub, absl::string_view job,
                      Migration* response) {
  v1::CancelMigrationRequest request;
  request.set_job_id(std::string(job));
  grpc::ClientContext context;
  CallResult result;
  result.status =
      stub.CancelMigration(WithDeadline(&context), request, response);
  result.reason = ErrorReasonOf(context);
  return result;
}

CallResult CallListMigrations(v1::MigrationService::Stub& stub,
                              v1::ListMigrationsResponse* response) {
  grpc::ClientContext context;
  CallResult result;
  result.status = stub.ListMigrations(WithDeadline(&context),
                                      v1::ListMigrationsRequest(), response);
  result.reason = ErrorReasonOf(context);
  return result;
}

// A refusal by the authorizer: `code`, and a message containing every one of
// `says`.
void ExpectRefusedCall(const grpc::Status& status, grpc::StatusCode code,
                       const std::vector<std::string>& says) {
  EXPECT_EQ(CodeName(status.error_code()), CodeName(code))
      << status.error_message();
  for (const std::string& s : says) {
    EXPECT_TRUE(absl::StrContains(status.error_message(), s))
        << "the message should say '" << s << "': " << status.error_message();
  }
}

// A fresh directory for files a test hands to agents.
std::string TestDir(absl::string_view stem) {
  absl::StatusOr<std::string> dir = MakeTestDir(stem);
  EXPECT_TRUE(dir.ok()) << dir.status();
  return dir.ok() ? *dir : "/nonexistent";
}

std::optional<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::Status WriteWholeFile(const std::string& path, absl::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), text.size());
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// A certificate of the run PKI issued by this test binary, once: `name`'s
// files, issuing it with `options` the first time.
absl::StatusOr<security::TlsFiles> IssuedOnce(
    const std::string& name, const std::vector<std::string>& options) {
  absl::StatusOr<RunPki*> pki = RunPki::Get();
  if (!pki.ok()) return pki.status();
  absl::StatusOr<security::TlsFiles> files = (*pki)->Files(name);
  if (files.ok()) return files;
  absl::StatusOr<std::string> issued = (*pki)->Issue(name, options);
  if (!issued.ok()) return issued.status();
  return (*pki)->Files(name);
}

// The serial number of the certificate an agent serves a new connection
// with (a channel of its own), as the operator sees it; "" when the call
// failed, with the status in `error`.
std::string ServedSerial(const AgentProcess& agent,
                         const security::Credentials& operator_credentials,
                         std::string* error) {
  std::unique_ptr<v1::MigrationService::Stub> stub =
      v1::MigrationService::NewStub(
          agent.Dial(operator_credentials, /*own_connection=*/true));
  grpc::ClientContext context;
  v1::ListDevicesResponse response;
  grpc::Status status =
      stub->ListDevices(WithDeadline(&context, absl::Seconds(5)),
                        v1::ListDevicesRequest(), &response);
  if (!status.ok()) {
    *error = absl::StrCat(CodeName(status.error_code()), ": ",
                          status.error_message());
    return "";
  }
  absl::StatusOr<security::CertificateInfo> info =
      security::DescribeCertificate(
          security::PeerCertificatePem(*context.auth_context()));
  if (!info.ok()) {
    *error = std::string(info.status().message());
    return "";
  }
  return info->serial;
}

// ---- Fixture -------------------------------------------------------------

class SecurityTest : public AgentTest {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(pki_, RunPki::Get());
    ASSERT_OK_AND_ASSIGN(operator_, pki_->ClientCredentials("operator"));
  }

  // A source (agent-a, seed 1) and a destination (agent-b, seed 2) with
  // `count` emulated devices of `size` each, serving mutual TLS.
  void StartPair(int count, absl::string_view size,
                 std::vector<std::string> source_extra = {},
                 std::vector<std::string> destination_extra = {}) {
    source_ = StartAgent("source",
                         Concat(EmulatedFlags(count, size, 1), source_extra));
    ASSERT_NE(source_, nullptr);
    destination_ =
        StartAgent("destination",
                   Concat(EmulatedFlags(count, size, 2), destination_extra));
    ASSERT_NE(destination_, nullptr);
    ASSERT_EQ(source_->identity(), TestPki::AgentIdentity("agent-a"));
    ASSERT_EQ(destination_->identity(), TestPki::AgentIdentity("agent-b"));
  }

  // PrepareIncoming on the destination (as the operator), binding the token
  // to `source_identity`.
  CallResult Prepare(absl::string_view job,
                     const std::vector<std::string>& names,
                     const std::string& source_identity,
                     v1::PrepareIncomingResponse* response) {
    v1::PrepareIncomingRequest request;
    request.set_job_id(std::string(job));
    FillPairs(names, request.mutable_devices());
    request.set_source("security-test");
    request.set_source_identity(source_identity);
    return CallPrepareIncoming(destination_->stub(), request, response,
                               kRpcTimeout);
  }

  // Prepare, which must succeed; the transfer token.
  std::string PrepareOk(absl::string_view job,
                        const std::vector<std::string>& names,
                        const std::string& source_identity) {
    v1::PrepareIncomingResponse response;
    CallResult r = Prepare(job, names, source_identity, &response);
    EXPECT_TRUE(r.status.ok())
        << "PrepareIncoming " << job << ": " << DescribeCall(r);
    EXPECT_EQ(PhaseName(response.migration().phase()),
              PhaseName(v1::PHASE_PREPARED));
    EXPECT_FALSE(response.transfer_token().empty());
    return response.transfer_token();
  }

  // A StartMigration request to the destination agent with a 30 s phase
  // timeout, naming the destination's identity.
  v1::StartMigrationRequest Request(absl::string_view job,
                                    const std::vector<std::string>& names,
                                    absl::string_view token) {
    v1::StartMigrationRequest request;
    request.set_job_id(std::string(job));
    FillPairs(names, request.mutable_devices());
    request.set_destination(destination_->address());
    request.set_destination_identity(destination_->identity());
    request.set_transfer_token(std::string(token));
    request.mutable_policy()->mutable_phase_timeout()->set_seconds(30);
    return request;
  }

  CallResult Start(AgentProcess& source,
                   const v1::StartMigrationRequest& request) {
    Migration started;
    return CallStartMigration(source.stub(), request, &started, kRpcTimeout);
  }

  absl::StatusOr<Migration> WaitEnd(AgentProcess& agent,
                                    absl::string_view job) {
    return WaitForEnd(agent.stub(), job, absl::Now() + kJobTimeout);
  }

  // Both ends of `job` succeeded and the destination devices run with the
  // state the source devices stopped with.
  void ExpectMigrated(AgentProcess& source, absl::string_view job,
                      const std::vector<std::string>& names) {
    ASSERT_OK_AND_ASSIGN(Migration source_end, WaitEnd(source, job));
    ASSERT_OK_AND_ASSIGN(Migration destination_end,
                         WaitEnd(*destination_, job));
    EXPECT_EQ(PhaseName(source_end.phase()), PhaseName(v1::PHASE_SUCCEEDED))
        << source_end.ShortDebugString();
    EXPECT_EQ(PhaseName(destination_end.phase()),
              PhaseName(v1::PHASE_SUCCEEDED))
        << destination_end.ShortDebugString();
    ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source.stub()));
    ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                         DeviceMap(destination_->stub()));
    ExpectDevices("source", source_after, names, v1::DEVICE_STATE_STOP);
    ExpectDevices("destination", destination_after, names,
                  v1::DEVICE_STATE_RUNNING, &source_after);
  }

  std::unique_ptr<v1::MigrationService::Stub> StubAs(const AgentProcess& agent,
                                                     const std::string& who) {
    absl::StatusOr<std::unique_ptr<v1::MigrationService::Stub>> stub =
        agent.StubAs(who);
    EXPECT_TRUE(stub.ok()) << stub.status();
    return stub.ok() ? *std::move(stub) : nullptr;
  }

  RunPki* pki_ = nullptr;
  std::shared_ptr<security::Credentials> operator_;
};

// ---- 1. A migration over mutual TLS ----------------------------------------

TEST_F(SecurityTest, MigrationOverMutualTlsArrivesWithTheSourceState) {
  ASSERT_NO_FATAL_FAILURE(StartPair(2, "16MiB"));
  const std::vector<std::string> names = EmuNames(2);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_before,
                       DeviceMap(destination_->stub()));
  for (const std::string& name : names) {
    ASSERT_NE(source_before[name].state_digest(),
              destination_before[name].state_digest())
        << name << ": the test needs different states on the two sides";
  }

  const std::string job = "job-mtls";
  const std::string token = PrepareOk(job, names, source_->identity());
  ASSERT_FALSE(token.empty());
  CallResult r = Start(*source_, Request(job, names, token));
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(*source_, job, names));

  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING, &source_before);
  // Each side records the other's certificate identity.
  ASSERT_OK_AND_ASSIGN(Migration source_end,
                       GetMigration(source_->stub(), job));
  ASSERT_OK_AND_ASSIGN(Migration destination_end,
                       GetMigration(destination_->stub(), job));
  EXPECT_EQ(source_end.peer_identity(), destination_->identity());
  EXPECT_EQ(destination_end.peer_identity(), source_->identity());
}

// ---- 2. Authentication -----------------------------------------------------

class AuthenticationTest : public SecurityTest {
 protected:
  void SetUp() override {
    SecurityTest::SetUp();
    agent_ = StartAgent("agent", EmulatedFlags(1, "1MiB", 1));
    ASSERT_NE(agent_, nullptr);
  }

  // ListDevices on the agent over `channel`: must be refused as
  // UNAUTHENTICATED with a message saying `why`.
  void ExpectUnauthenticated(std::shared_ptr<grpc::Channel> channel,
                             const std::string& why) {
    std::unique_ptr<v1::MigrationService::Stub> stub =
        v1::MigrationService::NewStub(std::move(channel));
    absl::StatusOr<DeviceMapT> devices = DeviceMap(*stub);
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kUnauthenticated)
        << devices.status();
    EXPECT_TRUE(absl::StrContains(devices.status().message(), why))
        << "the message should say '" << why << "': " << devices.status();
  }

  AgentProcess* agent_ = nullptr;
};

TEST_F(AuthenticationTest, ClientWithoutACertificateIsUnauthenticated) {
  namespace gx = ::grpc::experimental;
  gx::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(
      std::make_shared<gx::FileWatcherCertificateProvider>(pki_->ca(), 60));
  options.watch_root_certs();  // trusts the agent, presents nothing
  options.set_verify_server_certs(true);
  ExpectUnauthenticated(agent_->Dial(gx::TlsCredentials(options)),
                        "no client certificate");
}

TEST_F(AuthenticationTest, CertificateFromAnotherCaIsUnauthenticated) {
  ASSERT_OK_AND_ASSIGN(TestPki other, TestPki::Create("other-ca"));
  // The other CA's operator, trusting the agent's CA (so that the client
  // gets past its own check of the agent).
  security::TlsFiles files = other.FilesFor("operator");
  files.ca = pki_->ca();
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<security::Credentials> credentials,
                       security::Credentials::Tls(files, absl::Seconds(60)));
  ExpectUnauthenticated(agent_->Dial(*credentials),
                        "is not signed by a CA this agent trusts");
}

TEST_F(AuthenticationTest, ExpiredCertificateIsUnauthenticated) {
  // The operator's identity, but expired since 2020.
  ASSERT_OK_AND_ASSIGN(
      security::TlsFiles files,
      IssuedOnce("expired-operator",
                 {std::string("--uri=") + TestPki::kOperator, "--expired"}));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<security::Credentials> credentials,
                       security::Credentials::Tls(files, absl::Seconds(60)));
  ExpectUnauthenticated(agent_->Dial(*credentials), "expired at");
}

TEST_F(AuthenticationTest, IdentityUnknownToThePolicyIsUnauthenticated) {
  const std::string stranger = "spiffe://migd.local/stranger";
  ASSERT_OK_AND_ASSIGN(security::TlsFiles files,
                       IssuedOnce("stranger", {"--uri=" + stranger}));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<security::Credentials> credentials,
                       security::Credentials::Tls(files, absl::Seconds(60)));
  ExpectUnauthenticated(agent_->Dial(*credentials), stranger);
}

// ---- 3. Authorization ------------------------------------------------------

TEST_F(SecurityTest, ObserverMayNotPrepareStartOrCancelAndNothingChanges) {
  ASSERT_NO_FATAL_FAILURE(StartPair(1, "1MiB"));
  const std::vector<std::string> names = EmuNames(1);
  const std::string job = "job-observed";
  const std::string token = PrepareOk(job, names, source_->identity());
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_before,
                       DeviceMap(destination_->stub()));
  std::unique_ptr<v1::MigrationService::Stub> on_source =
      StubAs(*source_, "observer");
  std::unique_ptr<v1::MigrationService::Stub> on_destination =
      StubAs(*destination_, "observer");
  ASSERT_TRUE(on_source != nullptr && on_destination != nullptr);

  Migration m;
  CallResult r = CallStartMigration(*on_source, Request(job, names, token), &m);
  ExpectRefusedCall(
      r.status, grpc::StatusCode::PERMISSION_DENIED,
      {"/migd.v1.MigrationService/StartMigration", TestPki::kObserver});

  v1::PrepareIncomingRequest prepare;
  prepare.set_job_id("job-observer-prepares");
  FillPairs(names, prepare.mutable_devices());
  prepare.set_source_identity(source_->identity());
  v1::PrepareIncomingResponse prepared;
  r = CallPrepareIncoming(*on_destination, prepare, &prepared);
  ExpectRefusedCall(
      r.status, grpc::StatusCode::PERMISSION_DENIED,
      {"/migd.v1.MigrationService/PrepareIncoming", TestPki::kObserver});
  EXPECT_EQ(prepared.transfer_token(), "");

  r = CallCancel(*on_destination, job, &m);
  ExpectRefusedCall(
      r.status, grpc::StatusCode::PERMISSION_DENIED,
      {"/migd.v1.MigrationService/CancelMigration", TestPki::kObserver});

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  EXPECT_EQ(Describe(source_after), Describe(source_before));
  EXPECT_EQ(Describe(destination_after), Describe(destination_before));
  ASSERT_OK_AND_ASSIGN(m, GetMigration(destination_->stub(), job));
  EXPECT_EQ(PhaseName(m.phase()), PhaseName(v1::PHASE_PREPARED));
  EXPECT_EQ(GetMigration(destination_->stub(), "job-observer-prepares")
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SecurityTest, ObserverMayReadDevicesAndJobs) {
  ASSERT_NO_FATAL_FAILURE(StartPair(1, "1MiB"));
  const std::string job = "job-to-observe";
  ASSERT_FALSE(PrepareOk(job, EmuNames(1), source_->identity()).empty());
  std::unique_ptr<v1::MigrationService::Stub> observer =
      StubAs(*destination_, "observer");
  ASSERT_NE(observer, nullptr);

  v1::ListMigrationsResponse listed;
  CallResult r = CallListMigrations(*observer, &listed);
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_EQ(listed.migrations_size(), 1) << listed.ShortDebugString();
  EXPECT_EQ(listed.migrations(0).job_id(), job);
  ASSERT_OK_AND_ASSIGN(Migration m, GetMigration(*observer, job));
  EXPECT_EQ(PhaseName(m.phase()), PhaseName(v1::PHASE_PREPARED));
  ASSERT_OK_AND_ASSIGN(DeviceMapT devices, DeviceMap(*observer));
  EXPECT_EQ(devices.count("emu0"), 1u);
}

TEST_F(SecurityTest, AgentIdentityMayNotCallTheMigrationService) {
  ASSERT_NO_FATAL_FAILURE(StartPair(1, "1MiB"));
  // The destination's peer, calling the source's control API.
  std::unique_ptr<v1::MigrationService::Stub> as_agent =
      StubAs(*source_, "agent-b");
  ASSERT_NE(as_agent, nullptr);
  v1::ListMigrationsResponse listed;
  CallResult r = CallListMigrations(*as_agent, &listed);
  ExpectRefusedCall(r.status, grpc::StatusCode::PERMISSION_DENIED,
                    {"/migd.v1.MigrationService/ListMigrations",
                     TestPki::AgentIdentity("agent-b")});
  Migration m;
  r = CallStartMigration(
      *as_agent, Request("job-by-an-agent", EmuNames(1), "some-token"), &m);
  ExpectRefusedCall(r.status, grpc::StatusCode::PERMISSION_DENIED,
                    {"/migd.v1.MigrationService/StartMigration",
                     TestPki::AgentIdentity("agent-b")});
}

TEST_F(SecurityTest, OperatorMayNotCallTheTransferServiceEvenWithTheToken) {
  ASSERT_NO_FATAL_FAILURE(StartPair(1, "1MiB"));
  const std::vector<std::string> names = EmuNames(1);
  const std::string job = "job-operator-transfers";
  // Bound to the operator itself: only the role keeps it out.
  const std::string token = PrepareOk(job, names, TestPki::kOperator);
  ASSERT_FALSE(token.empty());

  std::unique_ptr<v1::TransferService::Stub> stub =
      v1::TransferService::NewStub(destination_->Dial(*operator_));
  grpc::ClientContext context;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::TransferRequest, v1::TransferResponse>>
      call = stub->Transfer(WithDeadline(&context));
  v1::TransferRequest request;
  v1::SessionHeader* header = request.mutable_header();
  header->set_job_id(job);
  header->set_transfer_token(token);
  header->set_protocol_version(v1::PROTOCOL_VERSION_2);
  header->set_stream_index(0);
  header->set_num_streams(1);
  v1::DeviceDescriptor* d = header->add_devices();
  d->set_index(0);
  d->set_source_device("emu0");
  d->set_destination_device("emu0");
  d->set_kind("emulated");
  call->Write(request);
  call->WritesDone();
  v1::TransferResponse response;
  EXPECT_FALSE(call->Read(&response))
      << "accepted: " << response.ShortDebugString();
  ExpectRefusedCall(call->Finish(), grpc::StatusCode::PERMISSION_DENIED,
                    {"/migd.v1.TransferService/Transfer", TestPki::kOperator});
  ASSERT_OK_AND_ASSIGN(Migration m, GetMigration(destination_->stub(), job));
  EXPECT_EQ(PhaseName(m.phase()), PhaseName(v1::PHASE_PREPARED));
}

// ---- 4-6. The transfer token and the destination's identity ----------------

// A third agent, trusted as an agent, presents the right token for a job
// bound to the source: the destination refuses it and changes nothing; the
// source it is bound to then migrates with the same token.
TEST_F(SecurityTest, TokenIsBoundToTheSourceIdentity) {
  ASSERT_NO_FATAL_FAILURE(StartPair(2, "4MiB"));
  AgentProcess* intruder = StartAgent("intruder", EmulatedFlags(2, "4MiB", 3));
  ASSERT_NE(intruder, nullptr);
  ASSERT_EQ(intruder->identity(), TestPki::AgentIdentity("agent-c"));
  const std::vector<std::string> names = EmuNames(2);

  const std::string job = "job-bound";
  const std::string token = PrepareOk(job, names, source_->identity());
  ASSERT_FALSE(token.empty());
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_prepared,
                       DeviceMap(destination_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT intruder_before, DeviceMap(intruder->stub()));

  CallResult r = Start(*intruder, Request(job, names, token));
  EXPECT_EQ(CodeName(r.status.error_code()),
            CodeName(grpc::StatusCode::PERMISSION_DENIED))
      << DescribeCall(r);
  EXPECT_EQ(r.reason, ReasonName(v1::ERROR_REASON_BAD_TOKEN))
      << DescribeCall(r);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "is bound to source " + source_->identity()))
      << DescribeCall(r);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), intruder->identity()))
      << DescribeCall(r);
  EXPECT_FALSE(absl::StrContains(r.status.error_message(), token))
      << "the error leaks the token";

  // Nothing moved: the destination still waits with its devices in
  // RESUMING, the intruder's devices run as before.
  ASSERT_OK_AND_ASSIGN(Migration waiting,
                       GetMigration(destination_->stub(), job));
  EXPECT_EQ(PhaseName(waiting.phase()), PhaseName(v1::PHASE_PREPARED))
      << waiting.ShortDebugString();
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_now,
                       DeviceMap(destination_->stub()));
  EXPECT_EQ(Describe(destination_now), Describe(destination_prepared));
  for (const std::string& name : names) {
    EXPECT_EQ(StateName(destination_now[name].state()),
              StateName(v1::DEVICE_STATE_RESUMING))
        << name;
  }
  ASSERT_OK_AND_ASSIGN(DeviceMapT intruder_after, DeviceMap(intruder->stub()));
  ExpectDevices("intruder", intruder_after, names, v1::DEVICE_STATE_RUNNING,
                &intruder_before);

  // The source the token is bound to still gets in with it.
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  r = Start(*source_, Request(job, names, token));
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(*source_, job, names));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING, &source_before);
}

// After a migration, the same token for the same job, from an agent with the
// bound identity and devices of its own, is refused: a token is good once.
TEST_F(SecurityTest, TokenIsGoodForOneSessionOnly) {
  ASSERT_NO_FATAL_FAILURE(StartPair(1, "4MiB"));
  const std::vector<std::string> names = EmuNames(1);
  const std::string job = "job-once";
  const std::string token = PrepareOk(job, names, source_->identity());
  ASSERT_FALSE(token.empty());
  CallResult r = Start(*source_, Request(job, names, token));
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(*source_, job, names));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));

  // The source's devices have stopped there; a second agent with the same
  // certificate (agent-a) and running devices replays the session.
  AgentOptions options = NextAgentOptions("replayer");
  options.tls_name = "agent-a";
  options.args = EmulatedFlags(1, "4MiB", 4);
  AgentProcess* replayer = StartAgent("replayer", std::move(options));
  ASSERT_NE(replayer, nullptr);
  ASSERT_EQ(replayer->identity(), source_->identity());
  ASSERT_OK_AND_ASSIGN(DeviceMapT replayer_before, DeviceMap(replayer->stub()));

  r = Start(*replayer, Request(job, names, token));
  EXPECT_EQ(CodeName(r.status.error_code()),
            CodeName(grpc::StatusCode::FAILED_PRECONDITION))
      << DescribeCall(r);
  EXPECT_EQ(r.reason, ReasonName(v1::ERROR_REASON_NOT_PREPARED))
      << DescribeCall(r);
  ASSERT_OK_AND_ASSIGN(DeviceMapT replayer_after, DeviceMap(replayer->stub()));
  ExpectDevices("replayer", replayer_after, names, v1::DEVICE_STATE_RUNNING,
                &replayer_before);
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_now,
                       DeviceMap(destination_->stub()));
  EXPECT_EQ(Describe(destination_now), Describe(destination_after));
  ASSERT_OK_AND_ASSIGN(Migration m, GetMigration(destination_->stub(), job));
  EXPECT_EQ(PhaseName(m.phase()), PhaseName(v1::PHASE_SUCCEEDED));
}

// With a 2 s token lifetime and no source, the prepared job ends by itself
// (TIMEOUT) and resets its devices; the token is refused afterwards.
TEST_F(SecurityTest, ExpiredTokenEndsThePreparedJobAndIsRefused) {
  constexpr absl::Duration kTtl = absl::Seconds(2);
  ASSERT_NO_FATAL_FAILURE(
      StartPair(2, "1MiB", {}, {"--transfer_token_ttl=2s"}));
  const std::vector<std::string> names = EmuNames(2);
  const std::string job = "job-expires";
  const absl::Time asked = absl::Now();
  v1::PrepareIncomingResponse prepared;
  CallResult r = Prepare(job, names, source_->identity(), &prepared);
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  const std::string token = prepared.transfer_token();
  ASSERT_FALSE(token.empty());
  const absl::Time expires = absl::FromUnixNanos(
      google::protobuf::util::TimeUtil::TimestampToNanoseconds(
          prepared.token_expires()));
  EXPECT_GE(expires, asked + kTtl - absl::Seconds(1)) << expires;
  EXPECT_LE(expires, absl::Now() + kTtl + absl::Seconds(1)) << expires;

  ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(*destination_, job));
  EXPECT_GE(absl::Now(), expires) << "ended before the token expired";
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_FAILED))
      << end.ShortDebugString();
  EXPECT_EQ(ReasonName(end.failure().reason()),
            ReasonName(v1::ERROR_REASON_TIMEOUT))
      << end.failure().message();
  EXPECT_TRUE(absl::StrContains(end.failure().message(), "expired"))
      << end.failure().message();
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("destination", destination_after, names,
                v1::DEVICE_STATE_RUNNING);

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  r = Start(*source_, Request(job, names, token));
  EXPECT_FALSE(r.status.ok()) << "a token of an ended job was taken";
  EXPECT_EQ(CodeName(r.status.error_code()),
            CodeName(grpc::StatusCode::FAILED_PRECONDITION))
      << DescribeCall(r);
  EXPECT_EQ(r.reason, ReasonName(v1::ERROR_REASON_NOT_PREPARED))
      << DescribeCall(r);
  EXPECT_TRUE(
      absl::StrContains(r.status.error_message(), "not waiting for a source"))
      << DescribeCall(r);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING,
                &source_before);
}

// A source told to expect another identity than the destination's
// certificate carries does not connect; nothing moves on either side, and
// the right identity then works.
TEST_F(SecurityTest, SourceRefusesADestinationWithoutTheExpectedIdentity) {
  ASSERT_NO_FATAL_FAILURE(StartPair(1, "4MiB"));
  const std::vector<std::string> names = EmuNames(1);
  const std::string job = "job-wrong-destination";
  const std::string token = PrepareOk(job, names, source_->identity());
  ASSERT_FALSE(token.empty());
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));

  v1::StartMigrationRequest request = Request(job, names, token);
  request.set_destination_identity(TestPki::AgentIdentity("agent-c"));
  CallResult r = Start(*source_, request);
  EXPECT_EQ(CodeName(r.status.error_code()),
            CodeName(grpc::StatusCode::UNAVAILABLE))
      << DescribeCall(r);
  EXPECT_EQ(r.reason, ReasonName(v1::ERROR_REASON_PEER_UNAVAILABLE))
      << DescribeCall(r);
  EXPECT_TRUE(absl::StrContains(
      r.status.error_message(),
      "not the expected " + TestPki::AgentIdentity("agent-c")))
      << DescribeCall(r);
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, names, v1::DEVICE_STATE_RUNNING,
                &source_before);
  ASSERT_OK_AND_ASSIGN(Migration m, GetMigration(destination_->stub(), job));
  EXPECT_EQ(PhaseName(m.phase()), PhaseName(v1::PHASE_PREPARED))
      << m.ShortDebugString();

  r = Start(*source_, Request(job, names, token));  // destination's identity
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(*source_, job, names));
}

// ---- 7. Certificate rotation -----------------------------------------------

// The destination reads its certificate files every second. While a
// migration runs (pre-copy held for kPrecopyTime by a workload the assumed
// bandwidth never keeps up with), a new certificate and key for the same
// identity are renamed over its files: new connections get the new
// certificate, and the migration, on connections made before, succeeds.
TEST_F(SecurityTest, RotatedCertificateIsServedWhileAMigrationGoesOn) {
  constexpr absl::Duration kPrecopyTime = absl::Seconds(8);
  constexpr absl::Duration kRotationDeadline = absl::Seconds(20);
  source_ = StartAgent("source", {},
                       "emulated emu0 size=16MiB seed=1 "
                       "flags=STOP_COPY|P2P|PRE_COPY dirty_rate=4MiB\n");
  ASSERT_NE(source_, nullptr);
  destination_ = StartAgent("destination", {"--tls_reload_seconds=1"},
                            "emulated emu0 size=16MiB seed=1001 "
                            "flags=STOP_COPY|P2P|PRE_COPY\n");
  ASSERT_NE(destination_, nullptr);
  const std::vector<std::string> names = EmuNames(1);

  std::string error;
  const std::string old_serial =
      ServedSerial(*destination_, *operator_, &error);
  ASSERT_FALSE(old_serial.empty()) << error;

  const std::string job = "job-across-rotation";
  const std::string token = PrepareOk(job, names, source_->identity());
  ASSERT_FALSE(token.empty());
  v1::StartMigrationRequest request = Request(job, names, token);
  v1::MigrationPolicy* p = request.mutable_policy();
  p->set_bandwidth_bytes_per_second(1024);  // the estimate never fits
  p->mutable_downtime_limit()->set_nanos(10 * 1000 * 1000);
  p->set_max_iterations(1000000);
  p->mutable_max_precopy_time()->set_seconds(
      absl::ToInt64Seconds(kPrecopyTime));
  p->set_on_no_convergence(v1::MigrationPolicy::ON_NO_CONVERGENCE_SWITCH_OVER);
  CallResult r = Start(*source_, request);
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_OK_AND_ASSIGN(Migration running, WaitForPhase(
                                              source_->stub(), job,
                                              [](const Migration& m) {
                                                return m.phase() ==
                                                           v1::PHASE_PRE_COPY &&
                                                       m.bytes_done() > 0;
                                              },
                                              absl::Now() + kJobTimeout));
  std::cerr << "rotating the destination's certificate with the job in "
            << PhaseName(running.phase()) << " at " << running.bytes_done()
            << " bytes\n";

  // Same identity and SANs, new key, a serial of openssl's choosing; written
  // beside the agent's files, then renamed over them (key first).
  const std::string next = destination_->dir() + "/next";
  ASSERT_TRUE(pki_->Issue("agent-b-next", {"--uri=" + destination_->identity(),
                                           "--dns=localhost", "--ip=127.0.0.1",
                                           "--out=" + next})
                  .ok());
  std::optional<std::string> pem = ReadWholeFile(next + ".pem");
  ASSERT_TRUE(pem.has_value()) << next << ".pem";
  ASSERT_OK_AND_ASSIGN(security::CertificateInfo next_info,
                       security::DescribeCertificate(*pem));
  ASSERT_NE(next_info.serial, old_serial);
  ASSERT_EQ(next_info.identity, destination_->identity());
  ASSERT_EQ(
      rename((next + ".key").c_str(), destination_->tls_files().key.c_str()),
      0);
  ASSERT_EQ(
      rename((next + ".pem").c_str(), destination_->tls_files().cert.c_str()),
      0);

  // New connections, until one is served the new certificate.
  const absl::Time deadline = absl::Now() + kRotationDeadline;
  std::string serial;
  while (true) {
    serial = ServedSerial(*destination_, *operator_, &error);
    if (serial == next_info.serial || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(serial, next_info.serial)
      << "no new connection got the new certificate within "
      << kRotationDeadline << " (last: " << serial << " " << error << ")";
  // The rotation happened while the migration ran.
  ASSERT_OK_AND_ASSIGN(Migration during, GetMigration(source_->stub(), job));
  EXPECT_FALSE(IsTerminal(during.phase()))
      << "the migration ended before the rotation took effect; the test "
         "proves nothing: "
      << during.ShortDebugString();

  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(*source_, job, names));
  ASSERT_OK_AND_ASSIGN(Migration end, GetMigration(source_->stub(), job));
  EXPECT_GE(end.precopy().iteration(), 2u) << end.precopy().ShortDebugString();
}

// ---- 8. Broken TLS or policy files -----------------------------------------

class StartupTest : public SecurityTest {
 protected:
  // Starts an agent with exactly `args` (plus one emulated device), which
  // must refuse to start: exit non-zero before serving, with a log (carried
  // by the status) containing every one of `says`.
  void ExpectRefusesToStart(std::vector<std::string> args,
                            const std::vector<std::string>& says) {
    AgentOptions options = NextAgentOptions("refused");
    options.security = AgentOptions::Security::kAsArgsSay;
    options.args = Concat(EmulatedFlags(1, "1MiB", 1), args);
    absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
        AgentProcess::Start(std::move(options));
    ASSERT_FALSE(agent.ok())
        << "the agent started with " << absl::StrJoin(args, " ");
    EXPECT_EQ(agent.status().code(), absl::StatusCode::kAborted)
        << agent.status();
    EXPECT_TRUE(absl::StrContains(agent.status().message(), " exited "))
        << agent.status();
    EXPECT_FALSE(absl::StrContains(agent.status().message(), " exited 0 "))
        << agent.status();
    for (const std::string& s : says) {
      EXPECT_TRUE(absl::StrContains(agent.status().message(), s))
          << "the log should say '" << s << "': " << agent.status();
    }
  }

  // --tls_* flags for agent-a's files with `replace` overriding some.
  std::vector<std::string> TlsFlags(
      const std::map<std::string, std::string>& replace) {
    absl::StatusOr<security::TlsFiles> files = pki_->Files("agent-a");
    EXPECT_TRUE(files.ok()) << files.status();
    std::map<std::string, std::string> flags = {
        {"cert", files.ok() ? files->cert : ""},
        {"key", files.ok() ? files->key : ""},
        {"ca", pki_->ca()},
        {"policy", pki_->policy()},
    };
    for (const auto& [k, v] : replace) flags[k] = v;
    std::vector<std::string> out;
    for (const auto& [k, v] : flags)
      out.push_back(absl::StrCat("--tls_", k, "=", v));
    return out;
  }
};

TEST_F(StartupTest, MissingKeyFileIsNamed) {
  const std::string key = TestDir("missing-key") + "/agent.key";
  ExpectRefusesToStart(TlsFlags({{"key", key}}),
                       {"--tls_key " + key, "No such file"});
}

TEST_F(StartupTest, KeyNotMatchingTheCertificateIsNamed) {
  ASSERT_OK_AND_ASSIGN(security::TlsFiles b, pki_->Files("agent-b"));
  ExpectRefusesToStart(
      TlsFlags({{"key", b.key}}),
      {"--tls_key " + b.key, "does not match the certificate"});
}

TEST_F(StartupTest, EmptyCaBundleIsNamed) {
  const std::string ca = TestDir("empty-ca") + "/ca.pem";
  ASSERT_TRUE(WriteWholeFile(ca, "").ok());
  ExpectRefusesToStart(TlsFlags({{"ca", ca}}), {"--tls_ca " + ca, "empty"});
}

TEST_F(StartupTest, PolicyWithAnUnknownRoleIsNamed) {
  const std::string policy = TestDir("bad-policy") + "/policy.conf";
  ASSERT_TRUE(
      WriteWholeFile(policy, absl::StrCat(TestPki::kOperator, " operator\n",
                                          TestPki::AgentIdentity("agent-b"),
                                          " agent,wizard\n"))
          .ok());
  ExpectRefusesToStart(TlsFlags({{"policy", policy}}),
                       {policy, "unknown role", "wizard"});
}

TEST_F(StartupTest, NeitherTlsFlagsNorInsecureNamesTheDefaultCertificate) {
  constexpr char kDefaultCert[] = "/etc/migd/tls/agent.pem";
  if (access(kDefaultCert, F_OK) == 0) {
    GTEST_SKIP() << kDefaultCert
                 << " exists on this machine: the agent would use it";
  }
  ExpectRefusesToStart({}, {kDefaultCert, "--insecure"});
}

// ---- 9. Secrets never leak -------------------------------------------------

// Every text a test saw or the agents wrote, each with where it came from,
// to be searched for secrets.
class Evidence {
 public:
  void Add(std::string origin, std::string text) {
    texts_.emplace_back(std::move(origin), std::move(text));
  }
  void AddCall(const std::string& what, const CallResult& r) {
    Add("RPC " + what, DescribeCall(r));
  }
  void AddRecord(const std::string& origin,
                 const google::protobuf::Message& record) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(record, &text);
    Add(origin + " (text)", text);
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(record, &json);
    Add(origin + " (json)", json);
  }
  // Where `secret` appears.
  std::vector<std::string> Find(const std::string& secret) const {
    std::vector<std::string> found;
    for (const auto& [origin, text] : texts_) {
      if (absl::StrContains(text, secret)) found.push_back(origin);
    }
    return found;
  }
  size_t size() const { return texts_.size(); }

 private:
  std::vector<std::pair<std::string, std::string>> texts_;
};

// Every log file of this test's agents ("<Test>.<role>*.log"), those of
// agents that never started included.
void AddAgentLogs(Evidence& evidence, int* count) {
  const char* root = getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  if (root == nullptr || *root == '\0') root = getenv("TEST_TMPDIR");
  ASSERT_NE(root, nullptr);
  const std::string prefix = absl::StrCat(
      ::testing::UnitTest::GetInstance()->current_test_info()->name(), ".");
  DIR* dir = opendir(root);
  ASSERT_NE(dir, nullptr) << root;
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (!absl::StartsWith(name, prefix) || !absl::EndsWith(name, ".log")) {
      continue;
    }
    std::optional<std::string> text =
        ReadWholeFile(absl::StrCat(root, "/", name));
    if (text.has_value()) {
      evidence.Add("log " + name, *text);
      ++*count;
    }
  }
  closedir(dir);
}

TEST_F(SecurityTest, SecretsAppearInNoLogRecordErrorOrMigctlOutput) {
  // A source, a destination, and a second source whose 3rd chunk is
  // corrupted on the wire.
  ASSERT_NO_FATAL_FAILURE(StartPair(1, "4MiB"));
  AgentProcess* faulty = StartAgent(
      "faulty-source",
      Concat(EmulatedFlags(1, "4MiB", 5), {"--test_fault=corrupt_chunk:3"}));
  ASSERT_NE(faulty, nullptr);
  const std::vector<std::string> names = EmuNames(1);
  Evidence evidence;
  std::vector<std::string> tokens;
  // Keeps the token of a prepare and checks it is where it must be: the
  // response (so that a search would find it, written the same way).
  auto prepare = [&](const std::string& job, const AgentProcess& source) {
    v1::PrepareIncomingResponse response;
    CallResult r = Prepare(job, names, source.identity(), &response);
    evidence.AddCall("PrepareIncoming " + job, r);
    EXPECT_TRUE(r.status.ok()) << DescribeCall(r);
    const std::string& token = response.transfer_token();
    EXPECT_GE(token.size(), 16u) << "a transfer token this short is no secret";
    Evidence response_only;
    response_only.AddRecord("PrepareIncomingResponse", response);
    EXPECT_EQ(response_only.Find(token).size(), 2u)
        << "the token is not in the response's text and JSON";
    tokens.push_back(token);
    return token;
  };

  // A wrong token (which contains the right one: a message quoting it would
  // be found), refused; then the prepared job is cancelled.
  const std::string wrong_job = "job-wrong-token";
  const std::string right = prepare(wrong_job, *source_);
  const std::string wrong = right + "x";
  tokens.push_back(wrong);
  CallResult r = Start(*source_, Request(wrong_job, names, wrong));
  evidence.AddCall("StartMigration with a wrong token", r);
  EXPECT_EQ(r.reason, ReasonName(v1::ERROR_REASON_BAD_TOKEN))
      << DescribeCall(r);
  Migration cancelled;
  r = CallCancel(destination_->stub(), wrong_job, &cancelled);
  evidence.AddCall("CancelMigration " + wrong_job, r);
  EXPECT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_OK_AND_ASSIGN(Migration end, WaitEnd(*destination_, wrong_job));
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_CANCELLED));

  // A migration that succeeds.
  const std::string ok_job = "job-succeeds";
  r = Start(*source_, Request(ok_job, names, prepare(ok_job, *source_)));
  evidence.AddCall("StartMigration " + ok_job, r);
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_NO_FATAL_FAILURE(ExpectMigrated(*source_, ok_job, names));

  // One that fails on a corrupted chunk, on both sides.
  const std::string corrupt_job = "job-corrupted";
  r = Start(*faulty,
            Request(corrupt_job, names, prepare(corrupt_job, *faulty)));
  evidence.AddCall("StartMigration " + corrupt_job, r);
  ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
  ASSERT_OK_AND_ASSIGN(end, WaitEnd(*faulty, corrupt_job));
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_FAILED));
  ASSERT_OK_AND_ASSIGN(end, WaitEnd(*destination_, corrupt_job));
  EXPECT_EQ(PhaseName(end.phase()), PhaseName(v1::PHASE_FAILED));

  // migctl as the operator: a migration with a wrong token, status, list.
  const std::string migctl = MigctlPath();
  ASSERT_FALSE(migctl.empty()) << "no --migctl_binary";
  ASSERT_OK_AND_ASSIGN(security::TlsFiles op, pki_->Files("operator"));
  const std::string home = TestDir("migctl-home");
  auto run_migctl = [&](const AgentProcess& agent, const std::string& args) {
    CommandResult result =
        RunShell(MigctlCommand(migctl, agent, op, home, args));
    evidence.Add("migctl " + args, result.output);
    return result;
  };
  const std::string migctl_job = "job-by-migctl";
  const std::string migctl_wrong = prepare(migctl_job, *faulty) + "y";
  tokens.push_back(migctl_wrong);
  CommandResult m = run_migctl(
      *faulty,
      absl::StrCat(
          "migrate --job=", migctl_job,
          " --devices=emu0:emu0 --destination=", destination_->address(),
          " --destination_identity=", ShellQuote(destination_->identity()),
          " --token=", ShellQuote(migctl_wrong)));
  EXPECT_NE(m.exit_code, 0) << m.output;
  EXPECT_TRUE(absl::StrContains(m.output, "token")) << m.output;
  for (const auto& [agent, args] :
       std::vector<std::pair<AgentProcess*, std::string>>{
           {destination_, "status " + ok_job},
           {faulty, "status " + corrupt_job},
           {destination_, "list"},
           {source_, "list"},
           {faulty, "--output=json list"}}) {
    CommandResult c = run_migctl(*agent, args);
    EXPECT_EQ(c.exit_code, 0) << args << ": " << c.output;
  }
  // migctl saw what the agents know: the search has material.
  EXPECT_FALSE(evidence.Find(ok_job).empty());

  // An agent given a VF token refuses to start (there is no such device),
  // and its log says why without the token.
  const std::string vf_token = "9d2f4e6a-31c7-4b8e-a5d0-7c1e2b3f4a5d";
  {
    AgentOptions options = NextAgentOptions("vfio");
    options.devices_config =
        absl::StrCat("vfio vf0 bdf=0000:00:1f.7 vf_token=", vf_token, "\n");
    absl::StatusOr<std::unique_ptr<AgentProcess>> vfio =
        AgentProcess::Start(std::move(options));
    ASSERT_FALSE(vfio.ok())
        << "an agent with a nonexistent VFIO device started";
    evidence.Add("AgentProcess::Start of the vfio agent",
                 std::string(vfio.status().message()));
    EXPECT_TRUE(absl::StrContains(vfio.status().message(), "0000:00:1f.7"))
        << "the log should name the device: " << vfio.status();
  }

  // Every job record on every agent, as the API gives them.
  for (AgentProcess* agent : {source_, destination_, faulty}) {
    v1::ListMigrationsResponse listed;
    r = CallListMigrations(agent->stub(), &listed);
    evidence.AddCall("ListMigrations on " + agent->name(), r);
    ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
    evidence.AddRecord("ListMigrations on " + agent->name(), listed);
    for (const Migration& job : listed.migrations()) {
      ASSERT_OK_AND_ASSIGN(Migration one,
                           GetMigration(agent->stub(), job.job_id()));
      evidence.AddRecord(
          absl::StrCat("GetMigration ", job.job_id(), " on ", agent->name()),
          one);
    }
  }
  // Every agent log, once the agents have said all they will.
  for (AgentProcess* agent : {source_, destination_, faulty}) {
    absl::Status s = StopCleanly(*agent);
    EXPECT_TRUE(s.ok()) << s;
  }
  int logs = 0;
  ASSERT_NO_FATAL_FAILURE(AddAgentLogs(evidence, &logs));
  EXPECT_EQ(logs, 4) << "the logs of source, destination, faulty source and "
                        "the vfio agent";
  EXPECT_FALSE(evidence.Find("0000:00:1f.7").empty());

  // The agents' private keys: a line of the source's key (the first
  // base64 line starts with the same PKCS#8 header in every key; the second
  // is key material).
  std::optional<std::string> key = ReadWholeFile(source_->tls_files().key);
  ASSERT_TRUE(key.has_value()) << source_->tls_files().key;
  std::vector<std::string> key_lines =
      absl::StrSplit(*key, '\n', absl::SkipEmpty());
  ASSERT_GE(key_lines.size(), 4u) << *key;
  std::vector<std::string> key_found = evidence.Find(key_lines[2]);
  EXPECT_TRUE(key_found.empty())
      << "private key found in: " << absl::StrJoin(key_found, "; ");

  ASSERT_EQ(tokens.size(), 6u);
  for (const std::string& secret : tokens) {
    ASSERT_FALSE(secret.empty());
    std::vector<std::string> found = evidence.Find(secret);
    EXPECT_TRUE(found.empty())
        << "transfer token found in: " << absl::StrJoin(found, "; ");
  }
  std::vector<std::string> found = evidence.Find(vf_token);
  EXPECT_TRUE(found.empty())
      << "VF token found in: " << absl::StrJoin(found, "; ");
  std::cerr << "searched " << evidence.size() << " texts for "
            << tokens.size() + 1 << " secrets\n";
}

}  // namespace
}  // namespace migd::e2e
