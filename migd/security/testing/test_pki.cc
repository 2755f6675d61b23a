#include "migd/security/testing/test_pki.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace migd::security::testing {
namespace {

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

absl::StatusOr<std::string> FindScript() {
  if (const char* env = getenv("MIGD_PKI"); env != nullptr && *env != '\0') {
    return std::string(env);
  }
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* ws = getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && ws != nullptr) {
    std::string path = absl::StrCat(srcdir, "/", ws, "/tools/pki");
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return absl::NotFoundError(
      "tools/pki not found: set MIGD_PKI or add //tools:pki to the test's "
      "data");
}

}  // namespace

absl::Status RunCommand(const std::string& command) {
  std::string with_output = command + " 2>&1";
  FILE* p = popen(with_output.c_str(), "r");
  if (p == nullptr) return absl::InternalError("popen failed");
  std::string output;
  char buf[512];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) output.append(buf, n);
  int status = pclose(p);
  if (status != 0) {
    return absl::InternalError(
        absl::StrCat("`", command, "` failed (status ", status, "): ", output));
  }
  return absl::OkStatus();
}

absl::StatusOr<TestPki> TestPki::Create(const std::string& stem) {
  absl::StatusOr<std::string> script = FindScript();
  if (!script.ok()) return script.status();
  const char* tmp = getenv("TEST_TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", stem, ".XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", pattern, " failed"));
  }
  TestPki pki;
  pki.script_ = *script;
  pki.dir_ = pattern;
  if (absl::Status s =
          RunCommand(absl::StrCat(Quote(pki.script_), " ", Quote(pki.dir_)));
      !s.ok()) {
    return s;
  }
  return pki;
}

TlsFiles TestPki::FilesFor(const std::string& name) const {
  return TlsFiles{Path(name + ".pem"), Path(name + ".key"), Path("ca.pem")};
}

absl::StatusOr<std::string> TestPki::Issue(
    const std::string& name, const std::vector<std::string>& options) {
  std::string cmd =
      absl::StrCat(Quote(script_), " ", Quote(dir_), " issue ", Quote(name));
  for (const std::string& o : options) absl::StrAppend(&cmd, " ", Quote(o));
  if (absl::Status s = RunCommand(cmd); !s.ok()) return s;
  return Path(name + ".pem");
}

}  // namespace migd::security::testing
