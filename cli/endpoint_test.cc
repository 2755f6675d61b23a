#include "cli/endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cli/args.h"
#include "gtest/gtest.h"

namespace migd::cli {
namespace {

// A config file with `text` in a new directory; returns its path.
std::string WriteConfig(const std::string& text) {
  const char* tmp = getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/ep.XXXXXX");
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  std::ofstream(dir + "/config") << text;
  return dir + "/config";
}

// A config with every setting at the top level, and one agent that
// overrides them all.
constexpr char kLayeredConfig[] =
    "tls_cert = top.pem\n"
    "tls_key = top.key\n"
    "tls_ca = top-ca.pem\n"
    "[agent a]\n"
    "address = 10.0.0.5:7070\n"
    "identity = spiffe://x/agent/a\n"
    "tls_cert = /a/a.pem\n"
    "tls_key = /a/a.key\n"
    "tls_ca = /a/ca.pem\n"
    "[agent b]\n"
    "address = 10.0.0.6:7070\n";

class EndpointTest : public ::testing::Test {
 protected:
  EnvLookup Env() const {
    return [this](const std::string& name) -> std::optional<std::string> {
      auto it = vars_.find(name);
      if (it == vars_.end()) return std::nullopt;
      return it->second;
    };
  }

  // The endpoint of --agent for a command line of `args` (before "list").
  absl::StatusOr<Endpoint> AgentOf(std::vector<std::string> args) {
    args.push_back("list");
    absl::StatusOr<Options> o = ParseArgs(args);
    EXPECT_TRUE(o.ok()) << o.status();
    if (!o.ok()) return o.status();
    absl::StatusOr<EndpointResolver> r = EndpointResolver::Create(*o, Env());
    if (!r.ok()) return r.status();
    return r->Agent();
  }

  std::map<std::string, std::string> vars_;
};

TEST_F(EndpointTest, AnAgentSectionBeatsTheTopLevel) {
  std::string config = WriteConfig(kLayeredConfig);
  vars_["MIGCTL_CONFIG"] = config;
  absl::StatusOr<Endpoint> e = AgentOf({"--agent=a"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->name, "a");
  EXPECT_EQ(e->address, "10.0.0.5:7070");
  EXPECT_EQ(e->identity, "spiffe://x/agent/a");
  EXPECT_FALSE(e->insecure);
  EXPECT_EQ(e->files.cert, "/a/a.pem");
  EXPECT_EQ(e->files.key, "/a/a.key");
  EXPECT_EQ(e->files.ca, "/a/ca.pem");
  EXPECT_EQ(e->Display(), "a (10.0.0.5:7070)");

  std::string dir = config.substr(0, config.rfind('/'));
  e = AgentOf({"--agent=b"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->identity, "");
  EXPECT_EQ(e->files.cert, dir + "/top.pem");
  EXPECT_EQ(e->files.key, dir + "/top.key");
  EXPECT_EQ(e->files.ca, dir + "/top-ca.pem");
}

TEST_F(EndpointTest, TheEnvironmentBeatsTheConfig) {
  vars_["MIGCTL_CONFIG"] = WriteConfig(kLayeredConfig);
  vars_["MIGCTL_TLS_CERT"] = "/env/op.pem";
  vars_["MIGCTL_TLS_CA"] = "/env/ca.pem";
  absl::StatusOr<Endpoint> e = AgentOf({"--agent=a"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->files.cert, "/env/op.pem");
  EXPECT_EQ(e->files.key, "/a/a.key");  // not in the environment
  EXPECT_EQ(e->files.ca, "/env/ca.pem");
}

TEST_F(EndpointTest, FlagsBeatTheEnvironment) {
  vars_["MIGCTL_CONFIG"] = WriteConfig(kLayeredConfig);
  vars_["MIGCTL_TLS_CERT"] = "/env/op.pem";
  vars_["MIGCTL_TLS_KEY"] = "/env/op.key";
  absl::StatusOr<Endpoint> e =
      AgentOf({"--agent=a", "--tls_cert=flag.pem", "--tls_ca=/flag/ca.pem",
               "--agent_identity=spiffe://x/agent/other"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->files.cert, "flag.pem");  // relative to the working directory
  EXPECT_EQ(e->files.key, "/env/op.key");
  EXPECT_EQ(e->files.ca, "/flag/ca.pem");
  EXPECT_EQ(e->identity, "spiffe://x/agent/other");
}

TEST_F(EndpointTest, InsecureFromTheFlagTheEnvironmentOrTheConfig) {
  vars_["MIGCTL_CONFIG"] = WriteConfig(
      "insecure = true\n"
      "[agent tls]\naddress = t:1\ninsecure = false\n"
      "[agent plain]\naddress = p:1\n");
  absl::StatusOr<Endpoint> e = AgentOf({"--agent=plain"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->insecure);
  EXPECT_EQ(e->insecure_from,
            absl::StrCat("insecure = true in ", vars_["MIGCTL_CONFIG"]));

  // The section's false beats the top level's true: TLS, and no files.
  e = AgentOf({"--agent=tls"});
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);

  vars_["MIGCTL_INSECURE"] = "1";
  e = AgentOf({"--agent=tls"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->insecure);
  EXPECT_EQ(e->insecure_from, "MIGCTL_INSECURE=1");

  vars_["MIGCTL_INSECURE"] = "0";
  e = AgentOf({"--agent=plain", "--insecure"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->insecure);
  EXPECT_EQ(e->insecure_from, "--insecure");

  e = AgentOf({"--agent=plain"});  // MIGCTL_INSECURE=0 beats the config
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EndpointTest, AnUnsetTlsFileIsNamedWithWhereItCouldBeSet) {
  vars_["HOME"] = "/home/op";
  vars_["MIGCTL_TLS_CERT"] = "/env/op.pem";
  vars_["MIGCTL_TLS_CA"] = "/env/ca.pem";
  absl::StatusOr<Endpoint> e = AgentOf({});
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(e.status().message(),
            "--tls_key is not set (flag, MIGCTL_TLS_KEY, or tls_key in "
            "/home/op/.config/migctl/config); use --insecure for an agent "
            "that runs without TLS");

  vars_.erase("MIGCTL_TLS_CA");
  e = AgentOf({});
  EXPECT_EQ(e.status().message(),
            "--tls_key and --tls_ca are not set (flags, MIGCTL_TLS_KEY and "
            "MIGCTL_TLS_CA, or tls_key and tls_ca in "
            "/home/op/.config/migctl/config); use --insecure for an agent "
            "that runs without TLS");
}

TEST_F(EndpointTest, InsecureNeedsNoFiles) {
  absl::StatusOr<Endpoint> e = AgentOf({"--insecure"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->insecure);
  EXPECT_EQ(e->address, kDefaultAgent);
  EXPECT_EQ(e->files.cert, "");
}

TEST_F(EndpointTest, TheAgentIsTheFlagElseTheConfigsDefaultElse7070) {
  vars_["MIGCTL_INSECURE"] = "1";
  absl::StatusOr<Endpoint> e = AgentOf({});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->address, "127.0.0.1:7070");
  EXPECT_EQ(e->name, "");

  vars_["MIGCTL_CONFIG"] =
      WriteConfig("default_agent = b\n[agent b]\naddress = 10.0.0.6:7070\n");
  e = AgentOf({});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->address, "10.0.0.6:7070");

  e = AgentOf({"--agent=10.0.0.9:7070"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->address, "10.0.0.9:7070");
  EXPECT_EQ(e->Display(), "10.0.0.9:7070");
}

TEST_F(EndpointTest, ANameThatIsNoAgentNorAnAddressIsAnError) {
  vars_["MIGCTL_INSECURE"] = "1";
  vars_["HOME"] = "/nonexistent";
  absl::StatusOr<Endpoint> e = AgentOf({"--agent=src"});
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.status().message(),
            "--agent=src: not HOST:PORT, and there is no config file "
            "(/nonexistent/.config/migctl/config) to name agents");

  vars_["MIGCTL_CONFIG"] = WriteConfig("[agent a]\naddress = a:1\n");
  e = AgentOf({"--agent=src"});
  EXPECT_EQ(e.status().message(),
            absl::StrCat("--agent=src: not HOST:PORT, and ",
                         vars_["MIGCTL_CONFIG"], " has no [agent src]"));
}

TEST_F(EndpointTest, TheConfigFileIsTheFlagElseTheEnvironmentElseXdg) {
  vars_["MIGCTL_INSECURE"] = "1";
  std::string xdg_config = WriteConfig("[agent x]\naddress = xdg:1\n");
  std::string xdg = xdg_config.substr(0, xdg_config.rfind('/'));
  ASSERT_EQ(rename(xdg_config.c_str(), (xdg + "/config.tmp").c_str()), 0);
  ASSERT_EQ(mkdir((xdg + "/migctl").c_str(), 0700), 0);
  ASSERT_EQ(
      rename((xdg + "/config.tmp").c_str(), (xdg + "/migctl/config").c_str()),
      0);
  vars_["XDG_CONFIG_HOME"] = xdg;
  vars_["HOME"] = "/nonexistent";
  absl::StatusOr<Endpoint> e = AgentOf({"--agent=x"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->address, "xdg:1");

  vars_["MIGCTL_CONFIG"] = WriteConfig("[agent x]\naddress = env:1\n");
  e = AgentOf({"--agent=x"});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->address, "env:1");

  std::string flag = WriteConfig("[agent x]\naddress = flag:1\n");
  e = AgentOf({"--agent=x", "--config", flag});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->address, "flag:1");
}

TEST_F(EndpointTest, OnlyTheDefaultConfigFileMayBeMissing) {
  vars_["MIGCTL_INSECURE"] = "1";
  vars_["HOME"] = "/nonexistent";
  EXPECT_TRUE(AgentOf({}).ok());
  absl::StatusOr<Endpoint> e = AgentOf({"--config=/nonexistent/c"});
  EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(e.status().message(), "config file /nonexistent/c does not exist");
}

TEST_F(EndpointTest, MigctlInsecureIsOneOrZero) {
  vars_["MIGCTL_INSECURE"] = "yes";
  absl::StatusOr<Endpoint> e = AgentOf({});
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.status().message(),
            "MIGCTL_INSECURE must be 1 or 0 (or true or false), not 'yes'");
}

TEST(DefaultConfigPath, XdgConfigHomeElseHome) {
  std::map<std::string, std::string> vars = {{"HOME", "/home/op"}};
  EnvLookup env = [&vars](const std::string& n) -> std::optional<std::string> {
    auto it = vars.find(n);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
  EXPECT_EQ(DefaultConfigPath(env), "/home/op/.config/migctl/config");
  vars["XDG_CONFIG_HOME"] = "/xdg";
  EXPECT_EQ(DefaultConfigPath(env), "/xdg/migctl/config");
  vars.clear();
  EXPECT_EQ(DefaultConfigPath(env), "");
}

}  // namespace
}  // namespace migd::cli
