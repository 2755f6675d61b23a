#include "e2e/testing/migctl.h"

#include <unistd.h>

#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "e2e/testing/shell.h"

namespace migd::e2e {

std::string MigctlPath() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  if (!in) return "";
  const std::string cmdline((std::istreambuf_iterator<char>(in)),
                            std::istreambuf_iterator<char>());
  for (absl::string_view arg :
       absl::StrSplit(cmdline, '\0', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&arg, "--migctl_binary=")) {
      std::string path(arg);
      if (path[0] != '/') {
        char cwd[4096];
        if (getcwd(cwd, sizeof(cwd)) != nullptr) {
          path = absl::StrCat(cwd, "/", path);
        }
      }
      return path;
    }
  }
  return "";
}

std::string MigctlCommand(absl::string_view migctl, const AgentProcess& agent,
                          const security::TlsFiles& tls, absl::string_view home,
                          absl::string_view args) {
  return absl::StrCat("env -i PATH=/usr/bin:/bin HOME=", ShellQuote(home), " ",
                      ShellQuote(migctl), " --agent=", agent.address(),
                      " --agent_identity=", ShellQuote(agent.identity()),
                      " --tls_cert=", ShellQuote(tls.cert),
                      " --tls_key=", ShellQuote(tls.key),
                      " --tls_ca=", ShellQuote(tls.ca), " ", args);
}

}  // namespace migd::e2e
