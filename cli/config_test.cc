#include "cli/config.h"

#include <stdlib.h>

#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace migd::cli {
namespace {

// The error message of parsing `text` as /etc/migctl/config; "" when it
// parses.
std::string ErrorOf(const std::string& text) {
  absl::StatusOr<Config> c = ParseConfig(text, "/etc/migctl/config");
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(ParseConfig, TheExampleOfTheHelp) {
  absl::StatusOr<Config> c = ParseConfig(
      "# credentials used for every agent unless the agent says otherwise\n"
      "tls_cert = /etc/migd/tls/operator.pem\n"
      "tls_key  = /etc/migd/tls/operator.key\n"
      "tls_ca   = /etc/migd/tls/ca.pem\n"
      "default_agent = src\n"
      "\n"
      "[agent src]\n"
      "address = 10.0.0.5:7070\n"
      "identity = spiffe://example.org/agent/host5\n"
      "[agent dst]\n"
      "  address = 10.0.0.6:7070   # the other rack\n"
      "identity = spiffe://example.org/agent/host6\n"
      "insecure = false\n",
      "/home/op/.config/migctl/config");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->exists);
  EXPECT_EQ(c->tls_cert, "/etc/migd/tls/operator.pem");
  EXPECT_EQ(c->tls_key, "/etc/migd/tls/operator.key");
  EXPECT_EQ(c->tls_ca, "/etc/migd/tls/ca.pem");
  EXPECT_FALSE(c->insecure.has_value());
  EXPECT_EQ(c->default_agent, "src");
  ASSERT_EQ(c->agents.size(), 2u);
  const AgentSection* src = c->FindAgent("src");
  ASSERT_NE(src, nullptr);
  EXPECT_EQ(src->address, "10.0.0.5:7070");
  EXPECT_EQ(src->identity, "spiffe://example.org/agent/host5");
  EXPECT_EQ(src->tls_cert, "");
  EXPECT_FALSE(src->insecure.has_value());
  EXPECT_EQ(src->line, 7);
  const AgentSection* dst = c->FindAgent("dst");
  ASSERT_NE(dst, nullptr);
  EXPECT_EQ(dst->address, "10.0.0.6:7070");
  EXPECT_EQ(dst->insecure, false);
  EXPECT_EQ(c->FindAgent("other"), nullptr);
}

TEST(ParseConfig, AnAgentsOwnCredentials) {
  absl::StatusOr<Config> c = ParseConfig(
      "tls_cert = /a/op.pem\n"
      "[agent lab]\n"
      "address = lab:7070\n"
      "tls_cert = /b/lab-op.pem\n"
      "tls_key = /b/lab-op.key\n"
      "tls_ca = /b/lab-ca.pem\n"
      "insecure = true\n",
      "/c/config");
  ASSERT_TRUE(c.ok()) << c.status();
  const AgentSection* lab = c->FindAgent("lab");
  ASSERT_NE(lab, nullptr);
  EXPECT_EQ(lab->tls_cert, "/b/lab-op.pem");
  EXPECT_EQ(lab->tls_key, "/b/lab-op.key");
  EXPECT_EQ(lab->tls_ca, "/b/lab-ca.pem");
  EXPECT_EQ(lab->insecure, true);
  EXPECT_EQ(c->tls_cert, "/a/op.pem");
}

TEST(ParseConfig, RelativePathsAreTakenFromTheConfigsDirectory) {
  absl::StatusOr<Config> c = ParseConfig(
      "tls_cert = operator.pem\n"
      "tls_ca = ../pki/ca.pem\n"
      "[agent a]\naddress = a:1\ntls_key = keys/a.key\n",
      "/home/op/.config/migctl/config");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_cert, "/home/op/.config/migctl/operator.pem");
  EXPECT_EQ(c->tls_ca, "/home/op/.config/migctl/../pki/ca.pem");
  EXPECT_EQ(c->FindAgent("a")->tls_key, "/home/op/.config/migctl/keys/a.key");

  c = ParseConfig("tls_cert = operator.pem\n", "migctl.conf");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_cert, "./operator.pem");
}

TEST(ParseConfig, ACommentNeedsABlankBeforeIt) {
  absl::StatusOr<Config> c = ParseConfig(
      "[agent a]\naddress = a:1\nidentity = spiffe://x/a#1   # a comment\n",
      "/c/config");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->FindAgent("a")->identity, "spiffe://x/a#1");
}

TEST(ParseConfig, AnEmptyFileIsAnEmptyConfig) {
  absl::StatusOr<Config> c = ParseConfig("\n# nothing yet\n", "/c/config");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_cert, "");
  EXPECT_TRUE(c->agents.empty());
}

TEST(ParseConfig, MalformedLinesAreNamedByFileAndLine) {
  EXPECT_EQ(ErrorOf("# ok\n\ntls_cert /etc/op.pem\n"),
            "/etc/migctl/config:3: want KEY = VALUE or [agent NAME], not "
            "'tls_cert /etc/op.pem'");
  EXPECT_EQ(ErrorOf("= x\n"),
            "/etc/migctl/config:1: want KEY = VALUE or [agent NAME], not "
            "'= x'");
  EXPECT_EQ(ErrorOf("tls_crt = /etc/op.pem\n"),
            "/etc/migctl/config:1: unknown key 'tls_crt' at the top level "
            "(want tls_cert, tls_key, tls_ca, insecure or default_agent)");
  EXPECT_EQ(ErrorOf("[agent a]\naddress = a:1\ndefault_agent = a\n"),
            "/etc/migctl/config:3: unknown key 'default_agent' in [agent a] "
            "(want address, identity, tls_cert, tls_key, tls_ca or "
            "insecure)");
  EXPECT_EQ(ErrorOf("address = a:1\n"),
            "/etc/migctl/config:1: unknown key 'address' at the top level "
            "(want tls_cert, tls_key, tls_ca, insecure or default_agent)");
  EXPECT_EQ(ErrorOf("tls_ca =\n"), "/etc/migctl/config:1: tls_ca has no value");
  EXPECT_EQ(ErrorOf("tls_ca = a\ntls_ca = b\n"),
            "/etc/migctl/config:2: tls_ca given twice at the top level");
  EXPECT_EQ(ErrorOf("insecure = yes\n"),
            "/etc/migctl/config:1: insecure must be true or false, not 'yes'");
}

TEST(ParseConfig, SectionsAreAgentsWithAnAddress) {
  EXPECT_EQ(ErrorOf("[cluster a]\n"),
            "/etc/migctl/config:1: unknown section '[cluster a]' (want [agent "
            "NAME])");
  EXPECT_EQ(ErrorOf("[agent a\n"),
            "/etc/migctl/config:1: '[agent a' is not a section header (want "
            "[agent NAME])");
  EXPECT_EQ(ErrorOf("[agent host:7070]\n"),
            "/etc/migctl/config:1: agent name 'host:7070' may only have "
            "letters, digits, '.', '_' and '-'");
  EXPECT_EQ(ErrorOf("[agent a]\naddress = a:1\n[agent a]\naddress = a:2\n"),
            "/etc/migctl/config:3: [agent a] given twice (first at line 1)");
  EXPECT_EQ(ErrorOf("[agent a]\naddress = a:1\n\n[agent b]\nidentity = x\n"),
            "/etc/migctl/config:4: [agent b] has no address");
  // The same key in two sections is fine.
  EXPECT_EQ(ErrorOf("[agent a]\naddress = a:1\n[agent b]\naddress = b:1\n"),
            "");
}

std::string TempDir() {
  const char* tmp = getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/cfg.XXXXXX");
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir;
}

TEST(LoadConfig, AMissingFileIsFineUnlessRequired) {
  std::string path = TempDir() + "/config";
  absl::StatusOr<Config> c = LoadConfig(path, /*required=*/false);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->exists);
  EXPECT_EQ(c->path, path);
  c = LoadConfig(path, /*required=*/true);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c.status().message(),
            absl::StrCat("config file ", path, " does not exist"));
}

TEST(LoadConfig, ReadsAndResolvesAgainstItsDirectory) {
  std::string dir = TempDir();
  std::ofstream(dir + "/config") << "tls_ca = ca.pem\n";
  absl::StatusOr<Config> c = LoadConfig(dir + "/config", /*required=*/true);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->exists);
  EXPECT_EQ(c->tls_ca, dir + "/ca.pem");
}

TEST(LoadConfig, ADirectoryIsAnErrorNamingIt) {
  std::string dir = TempDir();
  absl::StatusOr<Config> c = LoadConfig(dir, /*required=*/false);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            absl::StrCat("config file ", dir, ": Is a directory"));
}

}  // namespace
}  // namespace migd::cli
