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

// What sysfs says of an X710 VF bound to vfio-pci.
migd::plugins::DeviceFacts X710Vf() {
  migd::plugins::DeviceFacts d;
  d.name = "vf0";
  d.backend = "vfio";
  d.pci_address = "0000:3b:02.0";
  d.vendor_id = 0x8086;
  d.device_id = 0x154c;
  d.subsystem_vendor_id = 0x8086;
  d.subsystem_device_id = 0x0000;
  d.driver = "vfio-pci";
  d.modalias = "pci:v00008086d0000154Csv00008086sd00000000bc02sc00i00";
  return d;
}

TEST(I40ePlugin, ClaimsAnI40eVfAndSaysItCannotMigrateAndWhatToDo) {
  migd::plugins::Registry r;
  ASSERT_TRUE(r.Load(PluginPath()).ok());
  auto claimant = r.ClaimantOf(X710Vf());
  ASSERT_TRUE(claimant.ok()) << claimant.status();
  ASSERT_NE(*claimant, nullptr);
  EXPECT_EQ((*claimant)->name(), "i40e");
  auto caps = (*claimant)->GetCapabilities(X710Vf());
  ASSERT_TRUE(caps.ok()) << caps.status();
  EXPECT_FALSE(caps->migratable);
  EXPECT_TRUE(absl::StrContains(caps->reason, "vf0")) << caps->reason;
  EXPECT_TRUE(absl::StrContains(caps->reason, "8086:154c")) << caps->reason;
  EXPECT_TRUE(absl::StrContains(caps->remedy, "hot-unplug")) << caps->remedy;
}

TEST(I40ePlugin, LeavesOtherDevicesAlone) {
  migd::plugins::Registry r;
  ASSERT_TRUE(r.Load(PluginPath()).ok());
  migd::plugins::DeviceFacts pf = X710Vf();
  pf.device_id = 0x1572;  // an X710 PF
  EXPECT_EQ(*r.ClaimantOf(pf), nullptr);
  migd::plugins::DeviceFacts other = X710Vf();
  other.vendor_id = 0x15b3;
  EXPECT_EQ(*r.ClaimantOf(other), nullptr);
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
