// A real mutual-TLS gRPC server in this process, on 127.0.0.1, with the
// agent's credentials and Authorizer in front of a generic service that
// answers every method OK; clients call methods by name.

#include "migd/security/credentials.h"

#include <stdio.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpc/grpc.h"
#include "grpc/support/alloc.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "migd/security/authorizer.h"
#include "migd/security/identity.h"
#include "migd/security/policy.h"
#include "migd/security/testing/test_pki.h"
#include "migd/security/tls_files.h"
#include "migd/security/trust_store.h"

namespace migd::security {
namespace {

using ::migd::security::testing::TestPki;
using ::testing::HasSubstr;

constexpr char kStartMigration[] = "/migd.v1.MigrationService/StartMigration";
constexpr char kListMigrations[] = "/migd.v1.MigrationService/ListMigrations";
constexpr char kTransfer[] = "/migd.v1.TransferService/Transfer";

grpc::ByteBuffer EmptyMessage() {
  grpc::Slice empty("");
  return grpc::ByteBuffer(&empty, 1);
}

// Answers every method with one empty message and OK: whatever reaches it
// got past the Authorizer.
class AnswerEverything final : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* /*context*/) override {
    class Reactor final : public grpc::ServerGenericBidiReactor {
     public:
      Reactor() { StartRead(&request_); }
      void OnReadDone(bool ok) override {
        if (ok) {
          StartWriteAndFinish(&response_, grpc::WriteOptions(),
                              grpc::Status::OK);
        } else {
          Finish(grpc::Status::OK);
        }
      }
      void OnDone() override { delete this; }

     private:
      grpc::ByteBuffer request_;
      grpc::ByteBuffer response_ = EmptyMessage();
    };
    return new Reactor;
  }
};

// The agent's side: serves `files` (reloaded every second) and authorizes
// with the CA and policy of `pki`; with `bulk`, with the agent's
// ApplyBulkServerArguments too.
class TestServer {
 public:
  static absl::StatusOr<std::unique_ptr<TestServer>> Start(
      const TestPki& pki, const TlsFiles& files, bool bulk = false) {
    absl::StatusOr<std::shared_ptr<Credentials>> creds =
        Credentials::Tls(files, absl::Seconds(1));
    if (!creds.ok()) return creds.status();
    absl::StatusOr<std::unique_ptr<TrustStore>> trust =
        TrustStore::Load(pki.Path("ca.pem"));
    if (!trust.ok()) return trust.status();
    absl::StatusOr<Policy> policy = Policy::Load(pki.policy());
    if (!policy.ok()) return policy.status();
    std::unique_ptr<TestServer> s(new TestServer());
    grpc::ServerBuilder builder;
    builder.AddListeningPort(
        "127.0.0.1:0",
        (*creds)->ServerCredentials(std::make_shared<Authorizer>(
            *std::move(trust), *std::move(policy))),
        &s->port_);
    builder.RegisterCallbackGenericService(&s->service_);
    if (bulk) ApplyBulkServerArguments(builder);
    s->server_ = builder.BuildAndStart();
    if (s->server_ == nullptr || s->port_ == 0) {
      return absl::InternalError("the test server did not start");
    }
    return s;
  }

  ~TestServer() {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(1));
  }

  std::string Address(const std::string& host = "127.0.0.1") const {
    return host + ":" + std::to_string(port_);
  }
  int port() const { return port_; }

 private:
  TestServer() = default;

  AnswerEverything service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// The keepalive pings that client connections to 127.0.0.1:`port` sent, as
// channelz counts them (its JSON, read as text), summed.
int64_t KeepalivesSentTo(int port) {
  auto take = [](char* json) {
    std::string text = json == nullptr ? "" : json;
    gpr_free(json);
    return text;
  };
  auto ids = [](const std::string& json, const std::string& key) {
    std::vector<intptr_t> out;
    const std::string prefix = "\"" + key + "\":\"";
    for (size_t at = json.find(prefix); at != std::string::npos;
         at = json.find(prefix, at + 1)) {
      out.push_back(std::stoll(json.substr(at + prefix.size())));
    }
    return out;
  };
  int64_t sent = 0;
  const std::string target = absl::StrCat("127.0.0.1:", port);
  const std::string channels = take(grpc_channelz_get_top_channels(0));
  for (intptr_t subchannel : ids(channels, "subchannelId")) {
    const std::string sub = take(grpc_channelz_get_subchannel(subchannel));
    if (sub.find(target) == std::string::npos) continue;
    for (intptr_t socket : ids(sub, "socketId")) {
      std::vector<intptr_t> n =
          ids(take(grpc_channelz_get_socket(socket)), "keepAlivesSent");
      if (!n.empty()) sent += n.front();
    }
  }
  return sent;
}

// A bidirectional call that sends nothing until told to, so that its
// connection is idle with a call open.
class IdleCall final
    : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  IdleCall(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& method)
      : stub_(channel) {
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(60));
    stub_.PrepareBidiStreamingCall(&context_, method, grpc::StubOptions(),
                                   this);
    // The hold keeps the call's end (OnDone) until Finish has started its
    // writes, which a call that already ended would not take.
    AddHold();
    StartRead(&response_);
    StartCall();
  }

  // True once the call ended before Finish (the server's one answer comes
  // only after the message Finish sends).
  bool ended() const { return read_done_.HasBeenNotified(); }

  // Sends one message and waits for the call's end; its status.
  grpc::Status Finish() {
    StartWrite(&request_);
    StartWritesDone();
    RemoveHold();
    done_.WaitForNotification();  // the call's deadline bounds this
    return status_;
  }

  void OnReadDone(bool /*ok*/) override { read_done_.Notify(); }
  void OnDone(const grpc::Status& status) override {
    status_ = status;
    done_.Notify();
  }

 private:
  grpc::GenericStub stub_;
  grpc::ClientContext context_;
  grpc::ByteBuffer request_ = EmptyMessage();
  grpc::ByteBuffer response_;
  grpc::Status status_;
  absl::Notification read_done_;
  absl::Notification done_;
};

struct CallResult {
  grpc::Status status;
  std::string server_identity;  // from the client's auth context
  std::string server_serial;
};

// Calls `method` with an empty message and waits for the answer.
CallResult Call(const std::shared_ptr<grpc::Channel>& channel,
                const std::string& method) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  grpc::ByteBuffer request = EmptyMessage();
  grpc::ByteBuffer response;
  CallResult result;
  absl::Notification done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) {
                   result.status = std::move(status);
                   done.Notify();
                 });
  done.WaitForNotification();  // the call's own deadline bounds this
  if (result.status.ok()) {
    std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    result.server_identity = PeerIdentity(*auth);
    absl::StatusOr<CertificateInfo> info =
        DescribeCertificate(PeerCertificatePem(*auth));
    if (info.ok()) result.server_serial = info->serial;
  }
  return result;
}

std::shared_ptr<Credentials> ClientCredentials(const TlsFiles& files) {
  absl::StatusOr<std::shared_ptr<Credentials>> creds =
      Credentials::Tls(files, absl::Seconds(1));
  EXPECT_TRUE(creds.ok()) << creds.status();
  return creds.ok() ? *creds : nullptr;
}

// One PKI and one server for the tests that do not change them.
class CredentialsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<TestPki> pki = TestPki::Create("server");
    ASSERT_TRUE(pki.ok()) << pki.status();
    absl::StatusOr<TestPki> other = TestPki::Create("other");
    ASSERT_TRUE(other.ok()) << other.status();
    for (auto [name, options] :
         std::vector<std::pair<std::string, std::vector<std::string>>>{
             {"expired", {"--expired"}},
             {"stranger", {}},  // spiffe://migd.local/stranger: not in policy
             {"nosan", {"--no-san"}},
         }) {
      absl::StatusOr<std::string> pem = pki->Issue(name, options);
      ASSERT_TRUE(pem.ok()) << pem.status();
    }
    // An agent whose certificate names neither localhost nor 127.0.0.1.
    absl::StatusOr<std::string> pem =
        pki->Issue("agent-c", {"--uri=" + TestPki::AgentIdentity("agent-c")});
    ASSERT_TRUE(pem.ok()) << pem.status();
    pki_ = new TestPki(*std::move(pki));
    other_ = new TestPki(*std::move(other));
    absl::StatusOr<std::unique_ptr<TestServer>> server =
        TestServer::Start(*pki_, pki_->FilesFor("agent-a"));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    server = TestServer::Start(*pki_, pki_->FilesFor("agent-c"));
    ASSERT_TRUE(server.ok()) << server.status();
    uri_only_server_ = server->release();
  }
  static void TearDownTestSuite() {
    delete uri_only_server_;
    delete server_;
    delete other_;
    delete pki_;
  }

  // A channel to the server as `name` of the server's PKI, expecting the
  // server to be agent-a.
  static std::shared_ptr<grpc::Channel> DialAs(const std::string& name) {
    return DialWith(pki_->FilesFor(name));
  }
  static std::shared_ptr<grpc::Channel> DialWith(const TlsFiles& files) {
    std::shared_ptr<Credentials> creds = ClientCredentials(files);
    if (creds == nullptr) return nullptr;
    return creds->Dial(server_->Address(), TestPki::AgentIdentity("agent-a"),
                       ChannelUse::kControl);
  }

  static TestPki* pki_;
  static TestPki* other_;
  static TestServer* server_;  // agent-a: URI, DNS localhost, IP 127.0.0.1
  static TestServer* uri_only_server_;  // agent-c: URI SAN only
};
TestPki* CredentialsTest::pki_ = nullptr;
TestPki* CredentialsTest::other_ = nullptr;
TestServer* CredentialsTest::server_ = nullptr;
TestServer* CredentialsTest::uri_only_server_ = nullptr;

TEST_F(CredentialsTest, OperatorMayStartAMigration) {
  grpc::Status s = Call(DialAs("operator"), kStartMigration).status;
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
}

TEST_F(CredentialsTest, ObserverMayListMigrations) {
  grpc::Status s = Call(DialAs("observer"), kListMigrations).status;
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
}

TEST_F(CredentialsTest, ObserverMayNotStartAMigration) {
  grpc::Status s = Call(DialAs("observer"), kStartMigration).status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("StartMigration"));
  EXPECT_THAT(s.error_message(), HasSubstr(TestPki::kObserver));
}

TEST_F(CredentialsTest, AgentMayTransfer) {
  grpc::Status s = Call(DialAs("agent-b"), kTransfer).status;
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
}

TEST_F(CredentialsTest, AgentMayNotStartAMigration) {
  grpc::Status s = Call(DialAs("agent-b"), kStartMigration).status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("StartMigration"));
  EXPECT_THAT(s.error_message(), HasSubstr(TestPki::AgentIdentity("agent-b")));
}

TEST_F(CredentialsTest, ClientWithoutCertificateIsUnauthenticated) {
  namespace gx = ::grpc::experimental;
  gx::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(
      std::make_shared<gx::FileWatcherCertificateProvider>(pki_->Path("ca.pem"),
                                                           1));
  options.watch_root_certs();  // trusts the server, presents nothing
  options.set_verify_server_certs(true);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(
      server_->Address("localhost"), gx::TlsCredentials(options));
  grpc::Status s = Call(channel, kListMigrations).status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("no client certificate"));
}

TEST_F(CredentialsTest, CertificateFromAnotherCaIsUnauthenticated) {
  // The server's CA (to trust the server) with a leaf of another CA.
  TlsFiles files = other_->FilesFor("operator");
  files.ca = pki_->Path("ca.pem");
  grpc::Status s = Call(DialWith(files), kListMigrations).status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("not signed by a CA"));
}

TEST_F(CredentialsTest, ExpiredCertificateIsUnauthenticated) {
  grpc::Status s = Call(DialAs("expired"), kListMigrations).status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("expired"));
}

TEST_F(CredentialsTest, IdentityNotInThePolicyIsUnauthenticated) {
  grpc::Status s = Call(DialAs("stranger"), kListMigrations).status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("spiffe://migd.local/stranger"));
}

TEST_F(CredentialsTest, CertificateWithoutSanIsUnauthenticated) {
  grpc::Status s = Call(DialAs("nosan"), kListMigrations).status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("subject alternative name"));
}

TEST_F(CredentialsTest, ExpectedIdentityIsAcceptedAtAnIpAddress) {
  std::shared_ptr<Credentials> creds =
      ClientCredentials(pki_->FilesFor("operator"));
  ASSERT_NE(creds, nullptr);
  grpc::Status s =
      Call(creds->Dial(server_->Address("127.0.0.1"),
                       TestPki::AgentIdentity("agent-a"), ChannelUse::kControl),
           kListMigrations)
          .status;
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
}

TEST_F(CredentialsTest, ServerWithoutTheExpectedIdentityIsRefused) {
  std::shared_ptr<Credentials> creds =
      ClientCredentials(pki_->FilesFor("operator"));
  ASSERT_NE(creds, nullptr);
  grpc::Status s =
      Call(creds->Dial(server_->Address(), TestPki::AgentIdentity("agent-b"),
                       ChannelUse::kControl),
           kListMigrations)
          .status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(CredentialsTest, ExpectedIdentityStandsInForTheHostName) {
  std::shared_ptr<Credentials> creds =
      ClientCredentials(pki_->FilesFor("operator"));
  ASSERT_NE(creds, nullptr);
  grpc::Status s =
      Call(creds->Dial(uri_only_server_->Address("127.0.0.1"),
                       TestPki::AgentIdentity("agent-c"), ChannelUse::kControl),
           kListMigrations)
          .status;
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
}

TEST_F(CredentialsTest, WithoutExpectedIdentityADnsSanMatchingTheHostWillDo) {
  std::shared_ptr<Credentials> creds =
      ClientCredentials(pki_->FilesFor("operator"));
  ASSERT_NE(creds, nullptr);
  grpc::Status s =
      Call(creds->Dial(server_->Address("localhost"), "", ChannelUse::kControl),
           kListMigrations)
          .status;
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
}

TEST_F(CredentialsTest,
       WithoutExpectedIdentityAServerNotNamingTheHostIsRefused) {
  std::shared_ptr<Credentials> creds =
      ClientCredentials(pki_->FilesFor("operator"));
  ASSERT_NE(creds, nullptr);
  grpc::Status s = Call(creds->Dial(uri_only_server_->Address("localhost"), "",
                                    ChannelUse::kControl),
                        kListMigrations)
                       .status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(CredentialsTest, ClientSeesTheServerIdentity) {
  CallResult r = Call(DialAs("operator"), kListMigrations);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.server_identity, TestPki::AgentIdentity("agent-a"));
}

TEST_F(CredentialsTest, BulkChannelCarriesCallsToo) {
  std::shared_ptr<Credentials> creds =
      ClientCredentials(pki_->FilesFor("agent-b"));
  ASSERT_NE(creds, nullptr);
  grpc::Status s =
      Call(creds->Dial(server_->Address(), TestPki::AgentIdentity("agent-a"),
                       ChannelUse::kBulk),
           kTransfer)
          .status;
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
}

// A source waiting for the destination (an acknowledgement, the completion)
// keeps a call open and sends nothing while its keepalive pings; gRPC's
// default server policy would end the connection with GOAWAY
// (too_many_pings) at the 4th such ping.
TEST(BulkKeepalive, ServerTakesTheClientsPingsOnAnIdleCall) {
  absl::StatusOr<TestPki> pki = TestPki::Create("keepalive");
  ASSERT_TRUE(pki.ok()) << pki.status();
  absl::StatusOr<std::unique_ptr<TestServer>> server =
      TestServer::Start(*pki, pki->FilesFor("agent-a"), /*bulk=*/true);
  ASSERT_TRUE(server.ok()) << server.status();
  std::shared_ptr<Credentials> creds =
      ClientCredentials(pki->FilesFor("agent-b"));
  ASSERT_NE(creds, nullptr);
  std::shared_ptr<grpc::Channel> channel = creds->Dial(
      (*server)->Address(), TestPki::AgentIdentity("agent-a"),
      ChannelUse::kBulk,
      {.interval = kMinKeepaliveInterval, .timeout = absl::Seconds(10)});
  IdleCall call(channel, kTransfer);
  const int port = (*server)->port();
  // A 5th ping goes out only once the 4th was answered.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  int64_t pings = 0;
  while (pings < 5 && !call.ended() && absl::Now() < deadline) {
    pings = std::max(pings, KeepalivesSentTo(port));
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_GE(pings, 5);
  grpc::Status s = call.Finish();
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
}

// A channel of its own (not sharing a connection with earlier channels).
std::shared_ptr<grpc::Channel> FreshChannel(const Credentials& creds,
                                            const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt("grpc.use_local_subchannel_pool", 1);
  return grpc::CreateCustomChannel(
      address, creds.ChannelCredentials(TestPki::AgentIdentity("agent-a")),
      args);
}

void Rename(const std::string& from, const std::string& to) {
  ASSERT_EQ(rename(from.c_str(), to.c_str()), 0) << from << " -> " << to;
}

TEST(CredentialsRotation, NewConnectionsGetTheNewCertificateOldOnesGoOn) {
  absl::StatusOr<TestPki> pki = TestPki::Create("rotation");
  ASSERT_TRUE(pki.ok()) << pki.status();
  absl::StatusOr<std::unique_ptr<TestServer>> server =
      TestServer::Start(*pki, pki->FilesFor("agent-a"));
  ASSERT_TRUE(server.ok()) << server.status();
  std::shared_ptr<Credentials> client =
      ClientCredentials(pki->FilesFor("operator"));
  ASSERT_NE(client, nullptr);

  std::shared_ptr<grpc::Channel> old_channel =
      FreshChannel(*client, (*server)->Address());
  CallResult before = Call(old_channel, kListMigrations);
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();
  ASSERT_FALSE(before.server_serial.empty());
  ASSERT_NE(before.server_serial, "1234");

  // The same identity, a new key and serial 0x1234, renamed into place.
  absl::StatusOr<std::string> pem = pki->Issue(
      "agent-a", {"--uri=" + TestPki::AgentIdentity("agent-a"),
                  "--dns=localhost", "--ip=127.0.0.1", "--serial=4660",
                  "--out=" + pki->Path("agent-a.next")});
  ASSERT_TRUE(pem.ok()) << pem.status();
  Rename(pki->Path("agent-a.next.key"), pki->Path("agent-a.key"));
  Rename(pki->Path("agent-a.next.pem"), pki->Path("agent-a.pem"));

  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  CallResult after;
  while (true) {
    after = Call(FreshChannel(*client, (*server)->Address()), kListMigrations);
    if ((after.status.ok() && after.server_serial == "1234") ||
        absl::Now() > deadline) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.server_serial, "1234");

  CallResult old_again = Call(old_channel, kListMigrations);
  EXPECT_TRUE(old_again.status.ok()) << old_again.status.error_message();
  EXPECT_EQ(old_again.server_serial, before.server_serial)
      << "the connection made before the rotation was replaced";
}

}  // namespace
}  // namespace migd::security
