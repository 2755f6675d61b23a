// e2e/testing/run_pki.h
//
// The certificates of one test binary's run, for the agents the harness
// starts and for the clients that call them: a TestPki (tools/pki, minted
// with openssl under $TEST_TMPDIR on first use) and a policy file of the
// harness's own, which gives every harness agent name (agent-a ... agent-z)
// the agent role, spiffe://migd.local/operator the operator role and
// spiffe://migd.local/observer the observer role. So any harness agent
// trusts every other one as a peer, whichever certificates exist yet.
// tools/pki mints agent-a and agent-b; the other agent names are issued when
// first asked for, with the same subject alternative names (URI
// spiffe://migd.local/agent/NAME, DNS localhost, IP 127.0.0.1).
//
// A test that needs //e2e/testing:run_pki has tools/pki in its runfiles (the
// library's data). Thread-safe.

#ifndef MIGD_E2E_TESTING_RUN_PKI_H_
#define MIGD_E2E_TESTING_RUN_PKI_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "migd/security/credentials.h"
#include "migd/security/testing/test_pki.h"
#include "migd/security/tls_files.h"

namespace migd::e2e {

class RunPki {
 public:
  // The run's PKI, created by the first call. When creating it failed, every
  // call returns that error.
  static absl::StatusOr<RunPki*> Get();

  // Harness agent names: "agent-a" for 0, "agent-b" for 1, ... "agent-z".
  static constexpr int kMaxAgents = 26;
  static std::string AgentName(int index);
  static bool IsAgentName(const std::string& name);

  const std::string& dir() const { return dir_; }
  std::string ca() const { return dir_ + "/ca.pem"; }
  // The harness's policy (see the file comment).
  const std::string& policy() const { return policy_; }

  // NAME.pem, NAME.key and the CA bundle. A harness agent name's certificate
  // is issued on first use; any other name must have been issued already
  // (tools/pki's default set, or Issue).
  absl::StatusOr<security::TlsFiles> Files(const std::string& name);

  // `tools/pki DIR issue NAME OPTIONS...` (see tools/pki); the certificate's
  // path.
  absl::StatusOr<std::string> Issue(const std::string& name,
                                    const std::vector<std::string>& options);

  // Client credentials of NAME (Files(name)), made once per name.
  absl::StatusOr<std::shared_ptr<security::Credentials>> ClientCredentials(
      const std::string& name);

 private:
  explicit RunPki(security::testing::TestPki pki) : pki_(std::move(pki)) {}

  absl::Mutex mu_;
  security::testing::TestPki pki_ ABSL_GUARDED_BY(mu_);
  std::string dir_;
  std::string policy_;
  std::map<std::string, std::shared_ptr<security::Credentials>> credentials_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::e2e

#endif  // MIGD_E2E_TESTING_RUN_PKI_H_
