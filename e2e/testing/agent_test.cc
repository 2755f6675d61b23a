#include "e2e/testing/agent_test.h"

#include <iostream>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "e2e/testing/run_pki.h"

namespace migd::e2e {

AgentOptions AgentTest::NextAgentOptions(absl::string_view role) {
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  AgentOptions options;
  options.name = absl::StrCat(info->name(), ".", role);
  options.tls_name = RunPki::AgentName(agents_named_++ % RunPki::kMaxAgents);
  return options;
}

AgentProcess* AgentTest::StartAgent(absl::string_view role,
                                    std::vector<std::string> args,
                                    std::string devices_config) {
  AgentOptions options = NextAgentOptions(role);
  options.args = std::move(args);
  options.devices_config = std::move(devices_config);
  return StartAgent(role, std::move(options));
}

AgentProcess* AgentTest::StartAgent(absl::string_view role,
                                    AgentOptions options) {
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  options.name = absl::StrCat(info->name(), ".", role);
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start(std::move(options));
  if (!agent.ok()) {
    ADD_FAILURE() << "starting agent " << role << ": " << agent.status();
    return nullptr;
  }
  agents_.push_back(std::move(*agent));
  return agents_.back().get();
}

void AgentTest::TearDown() {
  // A clean shutdown on SIGTERM, whatever state the test left the agent in.
  for (const auto& agent : agents_) {
    if (agent->killed_by_test()) continue;
    absl::Status s = StopCleanly(*agent);
    EXPECT_TRUE(s.ok()) << s;
  }
  if (HasFailure()) {
    for (const auto& agent : agents_) {
      std::cerr << "---- log of agent " << agent->name() << " ("
                << agent->log_path() << "), tail:\n"
                << agent->LogTail(8192) << "\n";
    }
  }
}

}  // namespace migd::e2e
