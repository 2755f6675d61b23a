// migd/server/driver_preference_test.cc
//
// The plugin's driver preference as the host's driver choice gets it: a
// real plugin (//migd/plugins:preferring.so, built from the loader's test
// plugin: it claims PCI devices of vendor 0x1ac3 and prefers acme_vfio_pci
// for them) loaded into a registry, asked about devices of a fake sysfs
// tree.

#include "migd/server/driver_preference.h"

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "migd/host/fake_kernel.h"
#include "migd/host/modalias.h"
#include "migd/plugins/registry.h"

namespace migd::server {
namespace {

using host::testing::FakeKernel;
using host::testing::FakePciDevice;

std::string& PluginPath() {
  static auto* path = new std::string();
  return *path;
}

constexpr char kAcme[] = "0000:5e:00.1";    // 1ac3:0101: the plugin's
constexpr char kUnsure[] = "0000:5e:00.2";  // 1ac3:dead: its call fails
constexpr char kVirtio[] = "0000:06:00.0";  // 1af4:1041: nobody's

class DriverPreferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.Load(PluginPath()).ok()) << PluginPath();
    for (const auto& [bdf, vendor, device] :
         std::vector<std::tuple<std::string, uint16_t, uint16_t>>{
             {kAcme, 0x1ac3, 0x0101},
             {kUnsure, 0x1ac3, 0xdead},
             {kVirtio, 0x1af4, 0x1041}}) {
      FakePciDevice d;
      d.bdf = bdf;
      d.vendor = vendor;
      d.device = device;
      d.subsystem_vendor = vendor;
      d.subsystem_device = 0x0080;
      kernel_.AddPciDevice(d);
    }
    prefer_ =
        PluginDriverPreference(&registry_, kernel_.root(), {{kAcme, "acme0"}});
  }

  FakeKernel kernel_;
  plugins::Registry registry_;
  host::ModulePreferenceFn prefer_;
};

TEST_F(DriverPreferenceTest, TheClaimingPluginsModuleIsThePreference) {
  absl::StatusOr<std::optional<host::ModulePreference>> p = prefer_(kAcme);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(p->has_value());
  EXPECT_EQ((*p)->module, "acme_vfio_pci");
  EXPECT_EQ((*p)->source, "plugin preferring");
}

TEST_F(DriverPreferenceTest, ADeviceNoPluginClaimsHasNone) {
  absl::StatusOr<std::optional<host::ModulePreference>> p = prefer_(kVirtio);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->has_value());
}

TEST_F(DriverPreferenceTest, APluginThatFailsIsAnErrorNamingItAndTheDevice) {
  absl::StatusOr<std::optional<host::ModulePreference>> p = prefer_(kUnsure);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::StrContains(p.status().message(), "plugin preferring"))
      << p.status();
  EXPECT_TRUE(absl::StrContains(p.status().message(), kUnsure)) << p.status();
}

// On a modules.alias where another variant driver's alias is more specific,
// the plugin's module wins over it (an operator's explicit choice wins over
// the plugin's: modalias_test).
TEST_F(DriverPreferenceTest, ThePreferenceDecidesTheChoiceAndSaysWhy) {
  absl::StatusOr<std::vector<host::VfioPciAlias>> aliases =
      host::ParseVfioPciAliases(
          "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
          "alias vfio_pci:v00001AC3d00000101sv*sd*bc*sc*i* acme_vfio_pci\n"
          "alias vfio_pci:v00001AC3d00000101sv00001AC3sd00000080bc*sc*i* "
          "other_vfio_pci\n",
          "modules.alias");
  ASSERT_TRUE(aliases.ok()) << aliases.status();
  absl::StatusOr<std::string> modalias = kernel_.sysfs().Read(
      std::string("/sys/bus/pci/devices/") + kAcme + "/modalias");
  ASSERT_TRUE(modalias.ok()) << modalias.status();

  absl::StatusOr<host::VfioModuleChoice> c =
      host::ChooseVfioPciModuleFor(kAcme, *modalias, *aliases, nullptr);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "other_vfio_pci");  // the most specific alias

  c = host::ChooseVfioPciModuleFor(kAcme, *modalias, *aliases, prefer_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->module, "acme_vfio_pci");
  EXPECT_EQ(c->reason,
            "preferred by plugin preferring: alias "
            "vfio_pci:v00001AC3d00000101sv*sd*bc*sc*i* of acme_vfio_pci "
            "matches");
}

}  // namespace
}  // namespace migd::server

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--preferring=")) {
      migd::server::PluginPath() = std::string(arg);
    }
  }
  return RUN_ALL_TESTS();
}
