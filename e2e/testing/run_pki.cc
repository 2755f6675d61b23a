#include "e2e/testing/run_pki.h"

#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace migd::e2e {
namespace {

using ::migd::security::testing::TestPki;

absl::Status WritePolicy(const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  out << "# The loopback harness's policy (e2e/testing/run_pki.h).\n";
  for (int i = 0; i < RunPki::kMaxAgents; ++i) {
    out << TestPki::AgentIdentity(RunPki::AgentName(i)) << " agent\n";
  }
  out << TestPki::kOperator << " operator\n";
  out << TestPki::kObserver << " observer\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RunPki*> RunPki::Get() {
  // Made once; an error is kept and returned to every caller.
  static absl::StatusOr<RunPki*>* const pki = [] {
    absl::StatusOr<TestPki> made = TestPki::Create("run-pki");
    if (!made.ok()) return new absl::StatusOr<RunPki*>(made.status());
    auto* run = new RunPki(*std::move(made));
    run->dir_ = run->pki_.dir();
    run->policy_ = run->pki_.Path("harness-policy.conf");
    if (absl::Status s = WritePolicy(run->policy_); !s.ok()) {
      delete run;
      return new absl::StatusOr<RunPki*>(s);
    }
    return new absl::StatusOr<RunPki*>(run);
  }();
  return *pki;
}

std::string RunPki::AgentName(int index) {
  return absl::StrCat("agent-", std::string(1, static_cast<char>('a' + index)));
}

bool RunPki::IsAgentName(const std::string& name) {
  for (int i = 0; i < kMaxAgents; ++i) {
    if (name == AgentName(i)) return true;
  }
  return false;
}

absl::StatusOr<security::TlsFiles> RunPki::Files(const std::string& name) {
  absl::MutexLock lock(&mu_);
  security::TlsFiles files = pki_.FilesFor(name);
  if (access(files.cert.c_str(), R_OK) == 0) return files;
  if (!IsAgentName(name)) {
    return absl::NotFoundError(absl::StrCat(
        "no certificate ", files.cert, " in the run PKI (issue it first)"));
  }
  absl::StatusOr<std::string> issued =
      pki_.Issue(name, {"--uri=" + TestPki::AgentIdentity(name),
                        "--dns=localhost", "--ip=127.0.0.1"});
  if (!issued.ok()) return issued.status();
  return files;
}

absl::StatusOr<std::string> RunPki::Issue(
    const std::string& name, const std::vector<std::string>& options) {
  absl::MutexLock lock(&mu_);
  return pki_.Issue(name, options);
}

absl::StatusOr<std::shared_ptr<security::Credentials>>
RunPki::ClientCredentials(const std::string& name) {
  {
    absl::MutexLock lock(&mu_);
    auto it = credentials_.find(name);
    if (it != credentials_.end()) return it->second;
  }
  absl::StatusOr<security::TlsFiles> files = Files(name);
  if (!files.ok()) return files.status();
  absl::StatusOr<std::shared_ptr<security::Credentials>> credentials =
      security::Credentials::Tls(*files, absl::Seconds(60));
  if (!credentials.ok()) return credentials.status();
  absl::MutexLock lock(&mu_);
  return credentials_.emplace(name, *credentials).first->second;
}

}  // namespace migd::e2e
