#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "migd/plugins/registry.h"

namespace {

std::string& PluginPath() {
  static auto* path = new std::string();
  return *path;
}

// A fake /sys/bus/pci/devices/<bdf> under TEST_TMPDIR with the attributes
// edu_vfio_pci exposes; `state_version` empty: no edu_migration directory.
std::string FakeSysfs(const std::string& bdf, const std::string& state_version,
                      const std::string& mem_kib) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") +
                          "/sys/bus/pci/devices/" + bdf;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  if (!state_version.empty()) {
    std::filesystem::create_directories(dir + "/edu_migration");
    std::ofstream(dir + "/edu_migration/state_version")
        << state_version << "\n";
    std::ofstream(dir + "/edu_migration/mem_kib") << mem_kib << "\n";
  }
  return dir;
}

// What the agent knows of an edu device bound to edu_vfio_pci.
migd::plugins::DeviceFacts Edu(const std::string& name, const std::string& bdf,
                               const std::string& sysfs_path) {
  migd::plugins::DeviceFacts d;
  d.name = name;
  d.backend = "vfio";
  d.pci_address = bdf;
  d.vendor_id = 0x1234;
  d.device_id = 0x11e8;
  d.subsystem_vendor_id = 0x1af4;
  d.subsystem_device_id = 0x1100;
  d.driver = "edu_vfio_pci";
  d.modalias = "pci:v00001234d000011E8sv00001AF4sd00001100bc00scFFi00";
  d.sysfs_path = sysfs_path;
  d.migration_flags = 0x7;
  return d;
}

class EduPlugin : public testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(registry_.Load(PluginPath()).ok()); }

  const migd::plugins::Plugin* ClaimantOf(const migd::plugins::DeviceFacts& d) {
    auto claimant = registry_.ClaimantOf(d);
    EXPECT_TRUE(claimant.ok()) << claimant.status();
    return claimant.ok() ? *claimant : nullptr;
  }

  migd::plugins::Registry registry_;
};

TEST_F(EduPlugin, ClaimsAnEduDeviceBoundToTheVariantDriver) {
  const auto d =
      Edu("edu0", "0000:01:00.0", FakeSysfs("0000:01:00.0", "1", "4096"));
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->name(), "edu");
  EXPECT_EQ(p->Claim(d), 100);
}

TEST_F(EduPlugin, LeavesOtherDevicesAndOtherDriversAlone) {
  const std::string dir = FakeSysfs("0000:01:00.0", "1", "4096");
  auto vfio_pci = Edu("edu0", "0000:01:00.0", dir);
  vfio_pci.driver = "vfio-pci";
  EXPECT_EQ(ClaimantOf(vfio_pci), nullptr);
  auto other = Edu("nic0", "0000:01:00.0", dir);
  other.vendor_id = 0x15b3;
  EXPECT_EQ(ClaimantOf(other), nullptr);
}

TEST_F(EduPlugin, DescribesStateVersionAndMemorySizeFromSysfs) {
  const auto d =
      Edu("edu0", "0000:01:00.0", FakeSysfs("0000:01:00.0", "3", "8192"));
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  auto desc = p->Describe(d);
  ASSERT_TRUE(desc.ok()) << desc.status();
  EXPECT_EQ(desc->bytes, "state_version=3 mem_kib=8192");
  EXPECT_TRUE(absl::StrContains(desc->summary, "version 3")) << desc->summary;
  EXPECT_TRUE(absl::StrContains(desc->summary, "8192 KiB")) << desc->summary;
}

TEST_F(EduPlugin, DescribeFailsNamingTheFileItCannotRead) {
  const std::string dir = FakeSysfs("0000:01:00.0", "", "");
  const auto d = Edu("edu0", "0000:01:00.0", dir);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  auto desc = p->Describe(d);
  ASSERT_FALSE(desc.ok());
  EXPECT_TRUE(absl::StrContains(desc.status().message(),
                                dir + "/edu_migration/state_version"))
      << desc.status();
}

TEST_F(EduPlugin, ASameVersionAndSizeIsCompatible) {
  const auto src =
      Edu("edu0", "0000:01:00.0", FakeSysfs("0000:01:00.0", "1", "4096"));
  const auto dst =
      Edu("edu1", "0000:02:00.0", FakeSysfs("0000:02:00.0", "1", "4096"));
  const migd::plugins::Plugin* p = ClaimantOf(src);
  ASSERT_NE(p, nullptr);
  auto desc = p->Describe(src);
  ASSERT_TRUE(desc.ok()) << desc.status();
  auto v = p->Check(dst, desc->bytes);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->compatible);
}

TEST_F(EduPlugin, AnotherStateVersionIsIncompatibleWithBothValues) {
  const auto src =
      Edu("edu0", "0000:01:00.0", FakeSysfs("0000:01:00.0", "1", "4096"));
  const auto dst =
      Edu("edu1", "0000:02:00.0", FakeSysfs("0000:02:00.0", "2", "4096"));
  const migd::plugins::Plugin* p = ClaimantOf(src);
  ASSERT_NE(p, nullptr);
  auto desc = p->Describe(src);
  ASSERT_TRUE(desc.ok()) << desc.status();
  auto v = p->Check(dst, desc->bytes);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_FALSE(v->compatible);
  EXPECT_EQ(v->field, "state_version");
  EXPECT_EQ(v->source_value, "1");
  EXPECT_EQ(v->destination_value, "2");
}

TEST_F(EduPlugin, AnotherMemorySizeIsIncompatibleWithBothValues) {
  const auto src =
      Edu("edu0", "0000:01:00.0", FakeSysfs("0000:01:00.0", "1", "4096"));
  const auto dst =
      Edu("edu1", "0000:02:00.0", FakeSysfs("0000:02:00.0", "1", "8192"));
  const migd::plugins::Plugin* p = ClaimantOf(src);
  ASSERT_NE(p, nullptr);
  auto desc = p->Describe(src);
  ASSERT_TRUE(desc.ok()) << desc.status();
  auto v = p->Check(dst, desc->bytes);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_FALSE(v->compatible);
  EXPECT_EQ(v->field, "mem_kib");
  EXPECT_EQ(v->source_value, "4096");
  EXPECT_EQ(v->destination_value, "8192");
}

TEST_F(EduPlugin, CheckFailsWhenTheDestinationCannotBeRead) {
  const auto dst =
      Edu("edu1", "0000:02:00.0", FakeSysfs("0000:02:00.0", "", ""));
  const migd::plugins::Plugin* p = ClaimantOf(dst);
  ASSERT_NE(p, nullptr);
  auto v = p->Check(dst, "state_version=1 mem_kib=4096");
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(absl::StrContains(v.status().message(), "edu_migration"))
      << v.status();
}

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--plugin=")) PluginPath() = std::string(arg);
  }
  return RUN_ALL_TESTS();
}
