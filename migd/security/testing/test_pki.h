// migd/security/testing/test_pki.h
//
// Certificates for tests, minted by the project's own tools/pki (openssl) in
// a fresh directory: the default set (ca, agent-a, agent-b, operator,
// observer, policy.conf) and whatever else a test asks for. The script is
// found as $MIGD_PKI, else in the test's runfiles (tools/pki, a data
// dependency of the test).

#ifndef MIGD_SECURITY_TESTING_TEST_PKI_H_
#define MIGD_SECURITY_TESTING_TEST_PKI_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "migd/security/tls_files.h"

namespace migd::security::testing {

class TestPki {
 public:
  // Mints the default set in a new directory under $TEST_TMPDIR.
  static absl::StatusOr<TestPki> Create(const std::string& stem = "pki");

  const std::string& dir() const { return dir_; }
  std::string Path(const std::string& file) const { return dir_ + "/" + file; }
  // NAME.pem, NAME.key and this PKI's ca.pem.
  TlsFiles FilesFor(const std::string& name) const;
  std::string policy() const { return Path("policy.conf"); }

  // `tools/pki DIR issue NAME OPTIONS...`; returns the certificate's path.
  absl::StatusOr<std::string> Issue(const std::string& name,
                                    const std::vector<std::string>& options);

  static std::string AgentIdentity(const std::string& name) {
    return "spiffe://migd.local/agent/" + name;
  }
  static constexpr const char* kOperator = "spiffe://migd.local/operator";
  static constexpr const char* kObserver = "spiffe://migd.local/observer";

 private:
  std::string script_;
  std::string dir_;
};

// Runs a command through /bin/sh; its output in the error when it fails.
absl::Status RunCommand(const std::string& command);

}  // namespace migd::security::testing

#endif  // MIGD_SECURITY_TESTING_TEST_PKI_H_
