// e2e/testing/agent_test.h
//
// A GoogleTest fixture for tests that run real agents: it starts them as
// child processes named "<Test>.<role>", and at the end of the test stops
// every agent the test did not kill itself, failing the test if one died on
// its own or did not exit 0 on SIGTERM, and prints every agent's log tail
// when the test failed.
//
// Agents serve mutual TLS (agent_process.h) unless their args hold
// "--insecure": the first agent a test starts serves as agent-a, the second
// as agent-b, and so on (run_pki.h), so that a test's agents have distinct
// identities.

#ifndef MIGD_E2E_TESTING_AGENT_TEST_H_
#define MIGD_E2E_TESTING_AGENT_TEST_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "e2e/testing/agent_process.h"
#include "gtest/gtest.h"

namespace migd::e2e {

class AgentTest : public ::testing::Test {
 protected:
  // Starts an agent with `args` (and a --devices_config file holding
  // `devices_config` when not empty); nullptr, and a test failure, when it
  // does not come up.
  AgentProcess* StartAgent(absl::string_view role,
                           std::vector<std::string> args,
                           std::string devices_config = "");
  // The same with every option; `options.name` is set from `role`.
  AgentProcess* StartAgent(absl::string_view role, AgentOptions options);

  // Options for the next agent of this test: its name "<Test>.<role>" and
  // the next harness agent certificate (agent-a, agent-b, ...).
  AgentOptions NextAgentOptions(absl::string_view role);

  void TearDown() override;

  std::vector<std::unique_ptr<AgentProcess>> agents_;
  int agents_named_ = 0;  // harness agent certificates handed out
  AgentProcess* source_ = nullptr;
  AgentProcess* destination_ = nullptr;
};

}  // namespace migd::e2e

#endif  // MIGD_E2E_TESTING_AGENT_TEST_H_
