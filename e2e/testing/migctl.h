// e2e/testing/migctl.h
//
// migctl as an operator runs it, for loopback tests: the binary is found
// through a --migctl_binary=PATH argument of the test (set from
// $(rootpath //cli:migctl) in its BUILD rule), and a command runs it with a
// clean environment and the given certificate against one agent.

#ifndef E2E_TESTING_MIGCTL_H_
#define E2E_TESTING_MIGCTL_H_

#include <string>

#include "absl/strings/string_view.h"
#include "e2e/testing/agent_process.h"
#include "migd/security/tls_files.h"

namespace migd::e2e {

// The absolute path of --migctl_binary; empty when the test has none.
std::string MigctlPath();

// A /bin/sh command line running `migctl` (a path) under `env -i` with only
// PATH and HOME=`home` set, against `agent` (its address and identity), with
// the certificate, key and CA bundle of `tls`, then `args` (already quoted
// where needed). Run it with RunShell (shell.h).
std::string MigctlCommand(absl::string_view migctl, const AgentProcess& agent,
                          const security::TlsFiles& tls, absl::string_view home,
                          absl::string_view args);

}  // namespace migd::e2e

#endif  // E2E_TESTING_MIGCTL_H_
