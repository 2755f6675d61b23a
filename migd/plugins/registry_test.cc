// The plugin ABI as the loader enforces it, on real shared objects built
// from testdata/test_plugin.c (see BUILD.bazel for the variations).

#include "migd/plugins/registry.h"

#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "migd/plugin.h"

namespace migd::plugins {
namespace {

// --NAME=PATH arguments: the test plugins by name.
std::map<std::string, std::string>& Paths() {
  static auto* paths = new std::map<std::string, std::string>();
  return *paths;
}

std::string PathOf(const std::string& name) {
  auto it = Paths().find(name);
  EXPECT_NE(it, Paths().end()) << "no --" << name << "=PATH argument";
  return it == Paths().end() ? "" : it->second;
}

DeviceFacts Emulated(const std::string& name, const std::string& params) {
  DeviceFacts d;
  d.name = name;
  d.backend = "emulated";
  d.parameters = params;
  return d;
}

TEST(Registry, APluginBuiltForThisAbiLoadsAndAnswers) {
  Registry r;
  ASSERT_TRUE(r.Load(PathOf("current")).ok());
  const Plugin* p = r.Find("current");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->version(), "0.1");
  auto claimant = r.ClaimantOf(Emulated("emu0", "format=1"));
  ASSERT_TRUE(claimant.ok()) << claimant.status();
  EXPECT_EQ(*claimant, p);

  auto descriptor = p->Describe(Emulated("emu0", "format=1"));
  ASSERT_TRUE(descriptor.ok()) << descriptor.status();
  EXPECT_EQ(descriptor->bytes, "format=1");
  auto same = p->Check(Emulated("dst0", "format=1"), descriptor->bytes);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(same->compatible);
  auto other = p->Check(Emulated("dst0", "format=2"), descriptor->bytes);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_FALSE(other->compatible);
  EXPECT_EQ(other->field, "parameters");
  EXPECT_EQ(other->source_value, "format=1");
  EXPECT_EQ(other->destination_value, "format=2");
}

// A plugin whose table ends where an older header's did: it loads, and what
// it does not have answers kUnimplemented (the generic behaviour applies).
TEST(Registry, APluginBuiltAgainstAnOlderHeaderLoads) {
  Registry r;
  ASSERT_TRUE(r.Load(PathOf("older")).ok());
  const Plugin* p = r.Find("older");
  ASSERT_NE(p, nullptr);
  EXPECT_GT(p->Claim(Emulated("emu0", "")), 0);
  EXPECT_EQ(p->Describe(Emulated("emu0", "")).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(p->Check(Emulated("emu0", ""), "").status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(p->PrepareHost(Emulated("emu0", "")).ok());
  EXPECT_EQ(p->ExplainErrno(Emulated("emu0", ""), "read", 5), "");
  EXPECT_EQ(p->PreferredDriver(Emulated("emu0", "")).value_or("?"), "");
}

TEST(Registry, APluginForANewerAbiIsRefusedNamingBothVersions) {
  Registry r;
  absl::Status s = r.Load(PathOf("newer"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "ABI version 99")) << s;
  EXPECT_TRUE(absl::StrContains(
      s.message(),
      absl::StrCat("this agent's version ", MIGD_PLUGIN_ABI_VERSION)))
      << s;
  EXPECT_TRUE(absl::StrContains(s.message(), PathOf("newer"))) << s;
  EXPECT_EQ(r.Find("newer"), nullptr);
}

TEST(Registry, ASharedObjectWithoutTheEntryPointIsRefused) {
  Registry r;
  absl::Status s = r.Load(PathOf("no_entry"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "migd_plugin_entry")) << s;
  EXPECT_TRUE(r.List().empty());
}

TEST(Registry, AFileThatIsNoSharedObjectIsRefusedWithDlopensReason) {
  const std::string path =
      std::string(getenv("TEST_TMPDIR")) + "/not_a_plugin.so";
  std::ofstream(path) << "just text\n";
  Registry r;
  absl::Status s = r.Load(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "cannot load it")) << s;
}

TEST(Registry, TwoPluginsClaimingADeviceAtTheSameScoreIsAnErrorNamingBoth) {
  Registry r;
  ASSERT_TRUE(r.Load(PathOf("current")).ok());
  ASSERT_TRUE(r.Load(PathOf("rival")).ok());
  auto claimant = r.ClaimantOf(Emulated("emu0", ""));
  EXPECT_EQ(claimant.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(claimant.status().message(), "current"))
      << claimant.status();
  EXPECT_TRUE(absl::StrContains(claimant.status().message(), "rival"))
      << claimant.status();
  EXPECT_TRUE(absl::StrContains(claimant.status().message(), "emu0"))
      << claimant.status();
}

TEST(Registry, TheHighestClaimWins) {
  Registry r;
  ASSERT_TRUE(r.Load(PathOf("current")).ok());
  ASSERT_TRUE(r.Load(PathOf("stronger")).ok());
  auto claimant = r.ClaimantOf(Emulated("emu0", ""));
  ASSERT_TRUE(claimant.ok()) << claimant.status();
  EXPECT_EQ((*claimant)->name(), "stronger");
}

TEST(Registry, NobodyClaimsADeviceNoPluginWants) {
  Registry r;
  ASSERT_TRUE(r.Load(PathOf("current")).ok());
  DeviceFacts vfio;
  vfio.name = "vf0";
  vfio.backend = "vfio";
  auto claimant = r.ClaimantOf(vfio);
  ASSERT_TRUE(claimant.ok()) << claimant.status();
  EXPECT_EQ(*claimant, nullptr);
}

DeviceFacts Pci(uint16_t vendor, uint16_t device) {
  DeviceFacts d;
  d.name = "0000:5e:00.1";
  d.backend = "vfio";
  d.pci_address = "0000:5e:00.1";
  d.vendor_id = vendor;
  d.device_id = device;
  return d;
}

// ABI 2's preferred_driver: the module the claiming plugin wants a device
// on, "" for none, an error naming plugin and device when it fails.
TEST(Registry, AClaimingPluginMayPreferADriverModule) {
  Registry r;
  ASSERT_TRUE(r.Load(PathOf("preferring")).ok());
  auto claimant = r.ClaimantOf(Pci(0x1ac3, 0x0101));
  ASSERT_TRUE(claimant.ok()) << claimant.status();
  ASSERT_NE(*claimant, nullptr);
  absl::StatusOr<std::string> module =
      (*claimant)->PreferredDriver(Pci(0x1ac3, 0x0101));
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_EQ(*module, "acme_vfio_pci");
  EXPECT_EQ((*claimant)->PreferredDriver(Pci(0x1af4, 0x1041)).value_or("?"),
            "");
  absl::StatusOr<std::string> failed =
      (*claimant)->PreferredDriver(Pci(0x1ac3, 0xdead));
  EXPECT_FALSE(failed.ok());
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "preferring"))
      << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "cannot tell"))
      << failed.status();
}

TEST(Registry, APluginWithoutPreferredDriverPrefersNothing) {
  Registry r;
  ASSERT_TRUE(r.Load(PathOf("current")).ok());
  EXPECT_EQ(
      r.Find("current")->PreferredDriver(Pci(0x1ac3, 0x0101)).value_or("?"),
      "");
}

TEST(Registry, TheSameNameTwiceIsRefusedNamingTheFirstFile) {
  Registry r;
  ASSERT_TRUE(r.Load(PathOf("current")).ok());
  absl::Status s = r.Load(PathOf("current"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "is taken by")) << s;
}

// A directory loads what it can and reports the rest; the agent serves on.
TEST(Registry, ADirectoryLoadsEveryGoodPluginAndReportsTheBadOnes) {
  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/plugins";
  ASSERT_EQ(system(("mkdir -p " + dir).c_str()), 0);
  for (const char* name : {"current", "newer", "no_entry", "stronger"}) {
    std::ifstream in(PathOf(name), std::ios::binary);
    std::ofstream out(dir + "/" + name + ".so", std::ios::binary);
    out << in.rdbuf();
  }
  std::ofstream(dir + "/README") << "not a plugin, not looked at\n";
  Registry r;
  auto failures = r.LoadDirectory(dir);
  ASSERT_TRUE(failures.ok()) << failures.status();
  ASSERT_EQ(r.List().size(), 2u);
  EXPECT_EQ(r.List()[0]->name(), "current");
  EXPECT_EQ(r.List()[1]->name(), "stronger");
  ASSERT_EQ(failures->size(), 2u);
  EXPECT_TRUE(absl::EndsWith((*failures)[0].path, "newer.so"));
  EXPECT_TRUE(absl::EndsWith((*failures)[1].path, "no_entry.so"));
}

TEST(Registry, AMissingDirectoryLoadsNothingAndIsNoError) {
  Registry r;
  auto failures = r.LoadDirectory("/nonexistent/migd/plugins");
  ASSERT_TRUE(failures.ok()) << failures.status();
  EXPECT_TRUE(failures->empty());
  EXPECT_TRUE(r.List().empty());
}

}  // namespace
}  // namespace migd::plugins

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (!absl::ConsumePrefix(&arg, "--")) continue;
    std::pair<std::string, std::string> kv = absl::StrSplit(arg, '=');
    migd::plugins::Paths()[kv.first] = kv.second;
  }
  return RUN_ALL_TESTS();
}
