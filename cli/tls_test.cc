// Whole command lines against fake agents that serve mutual TLS on
// 127.0.0.1 with the agent's own credentials and Authorizer, and
// certificates minted by tools/pki: agent-a (the source) and agent-b (the
// destination), migctl as the operator.

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/fake_agent.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/security/authorizer.h"
#include "migd/security/credentials.h"
#include "migd/security/policy.h"
#include "migd/security/testing/test_pki.h"
#include "migd/security/tls_files.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::cli {
namespace {

using ::migd::security::testing::TestPki;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// The serial number of the certificate in `path`.
std::string SerialOf(const std::string& path) {
  absl::StatusOr<std::string> pem = security::ReadSmallFile("cert", path);
  EXPECT_TRUE(pem.ok()) << pem.status();
  if (!pem.ok()) return "";
  absl::StatusOr<security::CertificateInfo> info =
      security::DescribeCertificate(*pem);
  EXPECT_TRUE(info.ok()) << info.status();
  return info.ok() ? info->serial : "";
}

// A fake agent served with `files` (read again every second), authorizing
// callers with the CA and policy of `pki`.
class TlsAgent {
 public:
  static std::unique_ptr<TlsAgent> Start(const TestPki& pki,
                                         const security::TlsFiles& files) {
    absl::StatusOr<std::shared_ptr<security::Credentials>> creds =
        security::Credentials::Tls(files, absl::Seconds(1));
    EXPECT_TRUE(creds.ok()) << creds.status();
    absl::StatusOr<std::unique_ptr<security::TrustStore>> trust =
        security::TrustStore::Load(pki.Path("ca.pem"));
    EXPECT_TRUE(trust.ok()) << trust.status();
    absl::StatusOr<security::Policy> policy =
        security::Policy::Load(pki.policy());
    EXPECT_TRUE(policy.ok()) << policy.status();
    if (!creds.ok() || !trust.ok() || !policy.ok()) return nullptr;
    auto agent = std::make_unique<TlsAgent>();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(
        "127.0.0.1:0",
        (*creds)->ServerCredentials(std::make_shared<security::Authorizer>(
            *std::move(trust), *std::move(policy))),
        &agent->port_);
    builder.RegisterService(&agent->fake);
    agent->server_ = builder.BuildAndStart();
    if (agent->server_ == nullptr || agent->port_ == 0) return nullptr;
    return agent;
  }

  ~TlsAgent() {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(1));
    }
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  FakeAgent fake;

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<TestPki> pki = TestPki::Create("cli-pki");
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = new TestPki(*std::move(pki));
  }

  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(pki_, nullptr);
    src_ = TlsAgent::Start(*pki_, pki_->FilesFor("agent-a"));
    dst_ = TlsAgent::Start(*pki_, pki_->FilesFor("agent-b"));
    ASSERT_NE(src_, nullptr);
    ASSERT_NE(dst_, nullptr);
    UseCertificate("operator");
    env_ = ProcessEnv(&out_, &err_);
    // The test's own variables, not the process's.
    env_.getenv =
        [this](const std::string& name) -> std::optional<std::string> {
      auto it = vars_.find(name);
      if (it == vars_.end()) return std::nullopt;
      return it->second;
    };
  }

  // migctl presents NAME.pem of the PKI (through the environment).
  void UseCertificate(const std::string& name) {
    security::TlsFiles files = pki_->FilesFor(name);
    vars_["MIGCTL_TLS_CERT"] = files.cert;
    vars_["MIGCTL_TLS_KEY"] = files.key;
    vars_["MIGCTL_TLS_CA"] = files.ca;
  }

  // Runs migctl against the source agent.
  int Run(std::vector<std::string> args) {
    args.insert(args.begin(), "--agent=" + src_->address());
    return Main(args, env_);
  }

  static TestPki* pki_;
  std::unique_ptr<TlsAgent> src_, dst_;
  std::ostringstream out_, err_;
  std::map<std::string, std::string> vars_;  // the environment
  Env env_;
};

TestPki* TlsTest::pki_ = nullptr;

migd::v1::MigrationEvent Succeeded() {
  migd::v1::MigrationEvent e;
  e.mutable_migration()->set_job_id("j1");
  e.mutable_migration()->set_phase(migd::v1::PHASE_SUCCEEDED);
  return e;
}

TEST_F(TlsTest, IdentityShowsTheAgentsCertificateAndTheClients) {
  EXPECT_EQ(Run({"identity"}), kExitOk) << err_.str();
  const std::string serial = SerialOf(pki_->Path("agent-a.pem"));
  ASSERT_FALSE(serial.empty());
  const std::string out = out_.str();
  EXPECT_THAT(out, StartsWith(absl::StrCat(
                       "agent             ", src_->address(),
                       "\nconnection        mutual TLS; the agent's host was "
                       "checked against its certificate\n"
                       "identity          spiffe://migd.local/agent/agent-a\n"
                       "subject           /CN=agent-a\n"
                       "serial            ",
                       serial, "\nnot before        ")));
  EXPECT_THAT(out, HasSubstr("\nnot after         "));
  EXPECT_THAT(out,
              HasSubstr("\nclient identity   spiffe://migd.local/operator\n"
                        "client subject    /CN=operator\n"));
  EXPECT_THAT(out, HasSubstr(absl::StrCat("\nclient cert       ",
                                          pki_->Path("operator.pem"), "\n")));
  EXPECT_EQ(err_.str(), "");
}

TEST_F(TlsTest, IdentityAsJson) {
  EXPECT_EQ(Run({"identity", "--output=json",
                 "--agent_identity=spiffe://migd.local/agent/agent-a"}),
            kExitOk)
      << err_.str();
  const std::string out = out_.str();
  EXPECT_THAT(
      out, StartsWith(absl::StrCat(
               "{\n  \"agent\": \"", src_->address(), "\",\n  \"address\": \"",
               src_->address(),
               "\",\n  \"tls\": true,\n"
               "  \"expected_identity\": "
               "\"spiffe://migd.local/agent/agent-a\",\n"
               "  \"identity\": \"spiffe://migd.local/agent/agent-a\",\n"
               "  \"subject\": \"/CN=agent-a\",\n"
               "  \"serial\": \"",
               SerialOf(pki_->Path("agent-a.pem")), "\",\n")));
  EXPECT_THAT(out, HasSubstr("  \"client\": {\n    \"certificate\": \""));
  EXPECT_THAT(out,
              HasSubstr("    \"identity\": \"spiffe://migd.local/operator\""));
  EXPECT_THAT(out, HasSubstr("  \"not_after\": \"20"));
}

TEST_F(TlsTest, AWrongAgentIdentityFailsTheHandshakeWithAHint) {
  EXPECT_EQ(
      Run({"--agent_identity=spiffe://migd.local/agent/agent-b", "identity"}),
      kExitFailure);
  EXPECT_EQ(out_.str(), "");
  EXPECT_THAT(err_.str(), StartsWith("migctl: identity: UNAVAILABLE: "));
  EXPECT_THAT(err_.str(),
              HasSubstr(absl::StrCat(
                  "\nmigctl: hint: no TLS session with ", src_->address(),
                  ": its certificate may not be signed by a CA of --tls_ca (",
                  pki_->Path("ca.pem"),
                  "), or may not carry the expected identity "
                  "spiffe://migd.local/agent/agent-b; or the agent serves "
                  "plaintext (--insecure)\n")));
  EXPECT_EQ(src_->fake.list_devices_calls, 0);
}

TEST_F(TlsTest, AnAgentOfAnotherCaFailsTheHandshakeWithAHint) {
  absl::StatusOr<TestPki> other = TestPki::Create("other-pki");
  ASSERT_TRUE(other.ok()) << other.status();
  vars_["MIGCTL_TLS_CA"] = other->Path("ca.pem");
  EXPECT_EQ(Run({"devices"}), kExitFailure);
  EXPECT_THAT(err_.str(), StartsWith("migctl: devices: UNAVAILABLE: "));
  EXPECT_THAT(err_.str(),
              HasSubstr(absl::StrCat("may not be signed by a CA of --tls_ca (",
                                     other->Path("ca.pem"), ")")));
  EXPECT_EQ(src_->fake.list_devices_calls, 0);
}

TEST_F(TlsTest, AClientThePolicyDoesNotKnowSeesTheAgentAndTheRefusal) {
  ASSERT_TRUE(pki_->Issue("stranger", {}).ok());
  UseCertificate("stranger");
  EXPECT_EQ(Run({"identity"}), kExitFailure);
  EXPECT_THAT(
      out_.str(),
      HasSubstr("\nidentity          spiffe://migd.local/agent/agent-a\n"));
  EXPECT_THAT(out_.str(),
              HasSubstr("\nclient identity   spiffe://migd.local/stranger\n"));
  EXPECT_THAT(err_.str(), StartsWith("migctl: identity: UNAUTHENTICATED: "));
  EXPECT_THAT(err_.str(), HasSubstr("spiffe://migd.local/stranger"));
  EXPECT_THAT(err_.str(), Not(HasSubstr("hint")));
}

TEST_F(TlsTest, MigrateBindsTheTokenToBothAgentsIdentities) {
  src_->fake.events = {Succeeded()};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=" + dst_->address()}),
            kExitOk)
      << err_.str();
  ASSERT_EQ(dst_->fake.prepares.size(), 1u);
  EXPECT_EQ(dst_->fake.prepares[0].source_identity(),
            "spiffe://migd.local/agent/agent-a");
  EXPECT_EQ(dst_->fake.prepare_callers,
            std::vector<std::string>{"spiffe://migd.local/operator"});
  ASSERT_EQ(src_->fake.starts.size(), 1u);
  EXPECT_EQ(src_->fake.starts[0].destination_identity(),
            "spiffe://migd.local/agent/agent-b");
  EXPECT_EQ(src_->fake.starts[0].transfer_token(), "tok-j1");
  EXPECT_EQ(src_->fake.list_devices_calls, 1);  // to learn its identity
  EXPECT_EQ(err_.str(), "");
  EXPECT_THAT(out_.str(), Not(HasSubstr("tok-j1")));
}

TEST_F(TlsTest, MigrateWithATokenLearnsTheDestinationsIdentity) {
  src_->fake.events = {Succeeded()};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=" + dst_->address(), "--token=given"}),
            kExitOk)
      << err_.str();
  EXPECT_TRUE(dst_->fake.prepares.empty());
  EXPECT_EQ(dst_->fake.list_devices_calls, 1);
  ASSERT_EQ(src_->fake.starts.size(), 1u);
  EXPECT_EQ(src_->fake.starts[0].destination_identity(),
            "spiffe://migd.local/agent/agent-b");
}

TEST_F(TlsTest, MigrateWithATokenAndTheDestinationsIdentityAsksNobody) {
  src_->fake.events = {Succeeded()};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=" + dst_->address(), "--token=given",
                 "--destination_identity=spiffe://migd.local/agent/agent-b"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(dst_->fake.list_devices_calls, 0);
  ASSERT_EQ(src_->fake.starts.size(), 1u);
  EXPECT_EQ(src_->fake.starts[0].destination_identity(),
            "spiffe://migd.local/agent/agent-b");
}

TEST_F(TlsTest, CheckHasTheSourceCheckTheDestinationsIdentity) {
  src_->fake.check.set_migratable(true);
  src_->fake.check.add_devices()->set_migratable(true);
  EXPECT_EQ(
      Run({"check", "--devices=emu0:dst0", "--destination=" + dst_->address()}),
      kExitOk)
      << err_.str();
  EXPECT_EQ(dst_->fake.list_devices_calls, 1);  // to learn its identity
  ASSERT_EQ(src_->fake.checks.size(), 1u);
  EXPECT_EQ(src_->fake.checks[0].destination(), dst_->address());
  EXPECT_EQ(src_->fake.checks[0].destination_identity(),
            "spiffe://migd.local/agent/agent-b");
  EXPECT_TRUE(dst_->fake.prepares.empty());
  EXPECT_EQ(err_.str(), "");
}

TEST_F(TlsTest, MigrateToConfigAgentsUsesTheirAddressesAndIdentities) {
  std::string dir = pki_->dir();
  std::string config = dir + "/migctl.conf";
  {
    std::ofstream f(config);
    f << "tls_cert = operator.pem\ntls_key = operator.key\ntls_ca = ca.pem\n"
      << "default_agent = a\n"
      << "[agent a]\naddress = " << src_->address()
      << "\nidentity = spiffe://migd.local/agent/agent-a\n"
      << "[agent b]\naddress = " << dst_->address()
      << "\nidentity = spiffe://migd.local/agent/agent-b\n";
  }
  vars_ = {{"MIGCTL_CONFIG", config}};
  src_->fake.events = {Succeeded()};
  EXPECT_EQ(
      Main({"migrate", "--job=j1", "--devices=emu0:dst0", "--destination=b"},
           env_),
      kExitOk)
      << err_.str();
  ASSERT_EQ(dst_->fake.prepares.size(), 1u);
  EXPECT_EQ(dst_->fake.prepares[0].source(), src_->address());
  EXPECT_EQ(dst_->fake.prepares[0].source_identity(),
            "spiffe://migd.local/agent/agent-a");
  ASSERT_EQ(src_->fake.starts.size(), 1u);
  EXPECT_EQ(src_->fake.starts[0].destination(), dst_->address());
  EXPECT_EQ(src_->fake.starts[0].destination_identity(),
            "spiffe://migd.local/agent/agent-b");
}

TEST_F(TlsTest, PrepareLearnsTheSourceIdentityFromTheSourceAgent) {
  EXPECT_EQ(Main({"--agent=" + dst_->address(), "prepare", "--job=j1",
                  "--devices=emu0:dst0", "--source_agent=" + src_->address()},
                 env_),
            kExitOk)
      << err_.str();
  EXPECT_EQ(out_.str(), "tok-j1\n");
  ASSERT_EQ(dst_->fake.prepares.size(), 1u);
  EXPECT_EQ(dst_->fake.prepares[0].source(), src_->address());
  EXPECT_EQ(dst_->fake.prepares[0].source_identity(),
            "spiffe://migd.local/agent/agent-a");
}

TEST_F(TlsTest, PrepareAsksASourceNamedInTheConfig) {
  std::string config = pki_->dir() + "/prepare.conf";
  std::ofstream(config) << "[agent a]\naddress = " << src_->address() << "\n";
  vars_["MIGCTL_CONFIG"] = config;
  EXPECT_EQ(Main({"--agent=" + dst_->address(), "prepare", "--job=j1",
                  "--devices=emu0:dst0", "--source=a"},
                 env_),
            kExitOk)
      << err_.str();
  EXPECT_EQ(src_->fake.list_devices_calls, 1);
  ASSERT_EQ(dst_->fake.prepares.size(), 1u);
  EXPECT_EQ(dst_->fake.prepares[0].source(), src_->address());
  EXPECT_EQ(dst_->fake.prepares[0].source_identity(),
            "spiffe://migd.local/agent/agent-a");
}

TEST_F(TlsTest, PrepareTakesTheSourceIdentityAsGiven) {
  EXPECT_EQ(Main({"--agent=" + dst_->address(), "prepare", "--job=j1",
                  "--devices=emu0:dst0", "--source=host-a",
                  "--source_identity=spiffe://migd.local/agent/agent-a"},
                 env_),
            kExitOk)
      << err_.str();
  ASSERT_EQ(dst_->fake.prepares.size(), 1u);
  EXPECT_EQ(dst_->fake.prepares[0].source(), "host-a");
  EXPECT_EQ(dst_->fake.prepares[0].source_identity(),
            "spiffe://migd.local/agent/agent-a");
  EXPECT_EQ(src_->fake.list_devices_calls, 0);
}

TEST_F(TlsTest, PrepareWithoutAWayToTheSourceIdentitySendsNothing) {
  EXPECT_EQ(Main({"--agent=" + dst_->address(), "prepare", "--job=j1",
                  "--devices=emu0:dst0", "--source=host-a"},
                 env_),
            kExitUsage);
  EXPECT_EQ(err_.str(),
            "migctl: prepare: the transfer token is bound to the source "
            "agent's identity: give --source_identity=ID, or "
            "--source_agent=NAME|HOST:PORT to ask the source agent (or "
            "--source=NAME of an agent in the config file)\n");
  EXPECT_TRUE(dst_->fake.prepares.empty());
}

TEST_F(TlsTest, ATlsClientOfAPlaintextAgentGetsAHint) {
  FakeAgent plain;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&plain);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Main({absl::StrCat("--agent=127.0.0.1:", port), "--timeout=5s",
                  "devices"},
                 env_),
            kExitFailure);
  EXPECT_THAT(err_.str(), StartsWith("migctl: devices: UNAVAILABLE: "));
  EXPECT_THAT(err_.str(), HasSubstr("; or the agent serves plaintext "
                                    "(--insecure)\n"));
  server->Shutdown();
}

TEST_F(TlsTest, IdentityShowsARenewedCertificateOnTheNextConnection) {
  ASSERT_TRUE(pki_->Issue("rot", {"--uri=spiffe://migd.local/agent/rot",
                                  "--ip=127.0.0.1"})
                  .ok());
  std::unique_ptr<TlsAgent> agent =
      TlsAgent::Start(*pki_, pki_->FilesFor("rot"));
  ASSERT_NE(agent, nullptr);
  auto serial_shown = [&]() -> std::string {
    out_.str("");
    err_.str("");
    if (Main({"--agent=" + agent->address(), "--output=json", "identity"},
             env_) != kExitOk) {
      ADD_FAILURE() << err_.str();
      return "";
    }
    for (absl::string_view line : absl::StrSplit(out_.str(), '\n')) {
      if (absl::ConsumePrefix(&line, "  \"serial\": \"")) {
        return std::string(line.substr(0, line.find('"')));
      }
    }
    return "";
  };
  const std::string before = serial_shown();
  ASSERT_EQ(before, SerialOf(pki_->Path("rot.pem")));

  ASSERT_TRUE(pki_->Issue("rot", {"--uri=spiffe://migd.local/agent/rot",
                                  "--ip=127.0.0.1"})
                  .ok());
  const std::string renewed = SerialOf(pki_->Path("rot.pem"));
  ASSERT_NE(renewed, before);
  // The agent reads its files again every second.
  std::string shown = before;
  for (absl::Time deadline = absl::Now() + absl::Seconds(20);
       shown != renewed && absl::Now() < deadline;) {
    absl::SleepFor(absl::Milliseconds(200));
    shown = serial_shown();
  }
  EXPECT_EQ(shown, renewed);
}

}  // namespace
}  // namespace migd::cli
