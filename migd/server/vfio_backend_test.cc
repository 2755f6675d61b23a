#include "migd/server/vfio_backend.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "migd/server/emulated_backend.h"

namespace migd::server {
namespace {

// A fake sysfs under a fresh directory of the test's temporary directory
// (which Bazel removes).
class FakeSysfs {
 public:
  FakeSysfs() {
    std::string templ = testing::TempDir() + "/migd-sysfs-XXXXXX";
    // Never fall back to "": the paths below would then be the real /sys.
    if (mkdtemp(templ.data()) == nullptr) abort();
    root_ = templ;
  }
  device::VfioPaths paths() const { return {root_ + "/sys", root_ + "/dev"}; }

  void File(const std::string& path, const std::string& text) {
    MakeParents(path);
    std::ofstream(root_ + path) << text;
  }
  void Link(const std::string& path, const std::string& target) {
    MakeParents(path);
    ASSERT_EQ(symlink(target.c_str(), (root_ + path).c_str()), 0) << path;
  }

 private:
  void MakeParents(const std::string& path) {
    for (size_t slash = path.find('/', 1); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      mkdir((root_ + path.substr(0, slash)).c_str(), 0755);
    }
  }
  std::string root_;
};

std::unique_ptr<DeviceSpec> Parse(absl::string_view line) {
  return VfioBackend().Parse(line).value();
}

TEST(VfioSpec, APciDevicesFactsComeFromSysfs) {
  FakeSysfs sys;
  const std::string dir = "/sys/bus/pci/devices/0000:3b:02.1";
  sys.File(dir + "/vendor", "0x15b3\n");
  sys.File(dir + "/device", "0x101e\n");
  sys.File(dir + "/subsystem_vendor", "0x15b3\n");
  sys.File(dir + "/subsystem_device", "0x0061\n");
  sys.File(dir + "/modalias", "pci:v000015B3d0000101Esv*\n");
  sys.Link(dir + "/driver", "../../../bus/pci/drivers/mlx5_vfio_pci");

  plugins::DeviceFacts facts;
  Parse("vfio vf1 bdf=0000:3B:02.1")->AddFacts(facts, sys.paths());
  EXPECT_EQ(facts.pci_address, "0000:3b:02.1");
  EXPECT_EQ(facts.sysfs_path,
            sys.paths().sys + "/bus/pci/devices/0000:3b:02.1");
  EXPECT_EQ(facts.vendor_id, 0x15b3);
  EXPECT_EQ(facts.device_id, 0x101e);
  EXPECT_EQ(facts.subsystem_vendor_id, 0x15b3);
  EXPECT_EQ(facts.subsystem_device_id, 0x0061);
  EXPECT_EQ(facts.modalias, "pci:v000015B3d0000101Esv*");
  EXPECT_EQ(facts.driver, "mlx5_vfio_pci");
}

TEST(VfioSpec, WhatSysfsLacksIsLeftEmpty) {
  FakeSysfs sys;
  plugins::DeviceFacts facts;
  Parse("vfio edu0 bdf=0000:00:04.0")->AddFacts(facts, sys.paths());
  EXPECT_EQ(facts.pci_address, "0000:00:04.0");
  EXPECT_EQ(facts.vendor_id, 0);
  EXPECT_EQ(facts.driver, "");
  EXPECT_EQ(facts.modalias, "");
}

TEST(VfioSpec, AnMdevsTypeAndDriverComeFromSysfs) {
  FakeSysfs sys;
  const std::string uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
  const std::string dir = "/sys/bus/mdev/devices/" + uuid;
  sys.Link(dir + "/mdev_type", "../mdev_supported_types/nvidia-63");
  sys.Link(dir + "/driver", "../../../../bus/mdev/drivers/vfio_mdev");

  plugins::DeviceFacts facts;
  Parse("vfio g0 mdev=" + uuid)->AddFacts(facts, sys.paths());
  EXPECT_EQ(facts.sysfs_path, sys.paths().sys + "/bus/mdev/devices/" + uuid);
  EXPECT_EQ(facts.mdev_type, "nvidia-63");
  EXPECT_EQ(facts.driver, "vfio_mdev");
  EXPECT_EQ(facts.pci_address, "");
}

TEST(VfioSpec, TheAddressKeyIsTheSourceAndTheNormalizedAddress) {
  EXPECT_EQ(Parse("vfio a bdf=0000:3B:02.1")->AddressKey(), "bdf=0000:3b:02.1");
  EXPECT_EQ(Parse("vfio c cdev=/dev/vfio/devices/vfio0")->AddressKey(),
            "cdev=/dev/vfio/devices/vfio0");
}

TEST(VfioBackend, AnOpenerRefusesAnotherBackendsSpec) {
  auto emulated = EmulatedBackend().Parse("emulated emu0 size=4096");
  ASSERT_TRUE(emulated.ok()) << emulated.status();
  auto opened = VfioBackend().NewOpener({})->Open(**emulated);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(opened.status().message(), "emu0"))
      << opened.status();
}

}  // namespace
}  // namespace migd::server
