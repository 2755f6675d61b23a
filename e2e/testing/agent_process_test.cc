// Tests of the agent_process harness against fake_agent (no real migd needed).

#include "e2e/testing/agent_process.h"

#include <signal.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace migd::e2e {
namespace {

std::string FakeAgentPath() {
  absl::StatusOr<std::string> path = MigdBinaryPath();
  EXPECT_TRUE(path.ok()) << path.status();
  return path.ok() ? *path : "";
}

AgentOptions FakeOptions(const std::string& name, const std::string& mode) {
  AgentOptions options;
  options.name = name;
  options.binary = FakeAgentPath();
  options.args = {"--fake_mode=" + mode};
  options.start_timeout = absl::Seconds(20);
  return options;
}

TEST(AgentProcess, StartsServesAndStops) {
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start(FakeOptions("serve", "serve"));
  ASSERT_TRUE(agent.ok()) << agent.status();
  EXPECT_TRUE(absl::StartsWith((*agent)->address(), "127.0.0.1:"));
  EXPECT_TRUE((*agent)->Running());

  absl::StatusOr<std::map<std::string, v1::Device>> devices =
      DeviceMap((*agent)->stub());
  ASSERT_TRUE(devices.ok()) << devices.status();
  EXPECT_EQ(devices->count("fake0"), 1);

  absl::StatusOr<std::string> how = (*agent)->Stop();
  ASSERT_TRUE(how.ok()) << how.status();
  EXPECT_FALSE((*agent)->Running());
}

TEST(AgentProcess, KillReapsTheAgent) {
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start(FakeOptions("kill", "serve"));
  ASSERT_TRUE(agent.ok()) << agent.status();
  const pid_t pid = (*agent)->pid();
  ASSERT_TRUE((*agent)->Kill(SIGKILL).ok());
  EXPECT_FALSE((*agent)->Running());
  EXPECT_TRUE((*agent)->killed_by_test());
  EXPECT_NE(kill(pid, 0), 0) << "process still exists";
}

TEST(AgentProcess, EarlyExitReportsTheAgentsStderr) {
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start(FakeOptions("exit_early", "exit_early"));
  ASSERT_FALSE(agent.ok());
  EXPECT_EQ(agent.status().code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(absl::StrContains(agent.status().message(), "exited 3"))
      << agent.status();
  EXPECT_TRUE(absl::StrContains(agent.status().message(), "refusing to start"))
      << agent.status();
}

TEST(AgentProcess, NoPortFileIsDeadlineExceeded) {
  AgentOptions options = FakeOptions("never_serve", "never_serve");
  options.start_timeout = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start(std::move(options));
  ASSERT_FALSE(agent.ok());
  EXPECT_EQ(agent.status().code(), absl::StatusCode::kDeadlineExceeded)
      << agent.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
}

// The harness serves mutual TLS by default: the agent gets agent-a's
// certificate, and the handle's client calls as the operator.
TEST(AgentProcess, ServesMutualTlsAndCallsAsTheOperator) {
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start(FakeOptions("tls", "serve"));
  ASSERT_TRUE(agent.ok()) << agent.status();
  EXPECT_FALSE((*agent)->insecure());
  EXPECT_EQ((*agent)->identity(), "spiffe://migd.local/agent/agent-a");
  absl::StatusOr<v1::Migration> m = GetMigration((*agent)->stub(), "job-1");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->peer_identity(), "spiffe://migd.local/operator");

  absl::StatusOr<std::unique_ptr<v1::MigrationService::Stub>> observer =
      (*agent)->StubAs("observer");
  ASSERT_TRUE(observer.ok()) << observer.status();
  m = GetMigration(**observer, "job-1");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->peer_identity(), "spiffe://migd.local/observer");
}

TEST(AgentProcess, AnotherAgentCertificateGivesAnotherIdentity) {
  AgentOptions options = FakeOptions("tls-agent-c", "serve");
  options.tls_name = "agent-c";  // not in tools/pki's default set: issued
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start(std::move(options));
  ASSERT_TRUE(agent.ok()) << agent.status();
  EXPECT_EQ((*agent)->identity(), "spiffe://migd.local/agent/agent-c");
  absl::StatusOr<std::map<std::string, v1::Device>> devices =
      DeviceMap((*agent)->stub());
  ASSERT_TRUE(devices.ok()) << devices.status();
}

TEST(AgentProcess, InsecureAgentIsCalledInPlaintext) {
  AgentOptions options = FakeOptions("insecure", "serve");
  options.args.push_back("--insecure");
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start(std::move(options));
  ASSERT_TRUE(agent.ok()) << agent.status();
  EXPECT_TRUE((*agent)->insecure());
  EXPECT_EQ((*agent)->identity(), "");
  absl::StatusOr<v1::Migration> m = GetMigration((*agent)->stub(), "job-1");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->peer_identity(), "");
}

TEST(WaitForPhase, FollowsTheWatchUntilThePredicateHolds) {
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start(FakeOptions("watch", "serve"));
  ASSERT_TRUE(agent.ok()) << agent.status();
  absl::StatusOr<v1::Migration> m =
      WaitForPhase((*agent)->stub(), "job-1",
                   [](const v1::Migration& m) {
                     return m.bytes_done() > 0 && IsTransferPhase(m.phase());
                   },
                   absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->phase(), v1::PHASE_STOP_COPY);

  m = WaitForEnd((*agent)->stub(), "job-1", absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->phase(), v1::PHASE_SUCCEEDED);

  // A predicate the job never meets: reported once the job has ended.
  m = WaitForPhase(
      (*agent)->stub(), "job-1",
      [](const v1::Migration& m) { return m.phase() == v1::PHASE_FAILED; },
      absl::Now() + absl::Seconds(10));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition)
      << m.status();

  m = WaitForEnd((*agent)->stub(), "nope", absl::Now() + absl::Seconds(10));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound) << m.status();
}

}  // namespace
}  // namespace migd::e2e
