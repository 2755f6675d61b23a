// migd/host/iommu_group_test.cc
//
// Group membership and viability on a fake tree. DevVfioGroupUsage opens
// regular files standing in for /dev/vfio/<N>: that pins the open-and-close
// and the missing-node error; the EBUSY a held group answers comes only
// from the kernel (the VM tier), so the binder's tests inject the answer.

#include "migd/host/iommu_group.h"

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "migd/host/fake_kernel.h"

namespace migd::host {
namespace {

using testing::FakeKernel;
using testing::FakePciDevice;

constexpr char kDev[] = "/sys/bus/pci/devices/0000:03:00.1";

class IommuGroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver(
        {"pci", "mlx5_vfio_pci", "mlx5_vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver({"pci", "mlx5_core", "mlx5_core", {"15b3:101e"}, ""});
    kernel_.AddDriver({"pci", "pci-stub", "pci_stub", {}, ""});
    kernel_.AddDriver({"pci", "pcieport", "pcieportdrv", {}, ""});
  }
  void Add(const std::string& bdf, int group,
           std::optional<std::string> driver) {
    FakePciDevice d;
    d.bdf = bdf;
    d.group = group;
    d.driver = std::move(driver);
    kernel_.AddPciDevice(d);
  }

  FakeKernel kernel_;
};

TEST_F(IommuGroupTest, GroupOfReadsTheLink) {
  Add("0000:03:00.1", 12, std::nullopt);
  EXPECT_EQ(*IommuGroupOf(kernel_.sysfs(), kDev, "0000:03:00.1"), 12);
}

TEST_F(IommuGroupTest, NoGroupMeansNoIommu) {
  Add("0000:03:00.1", -1, std::nullopt);
  absl::StatusOr<int> g = IommuGroupOf(kernel_.sysfs(), kDev, "0000:03:00.1");
  EXPECT_EQ(g.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(g.status().message(), "intel_iommu=on"));
  EXPECT_EQ(IommuGroupOf(kernel_.sysfs(), "/sys/bus/pci/devices/0000:09:00.0",
                         "0000:09:00.0")
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(IommuGroupTest, VfioDriversAreVfioPciAndTheCoresHolders) {
  Add("0000:03:00.1", 1, "mlx5_vfio_pci");
  Add("0000:03:00.2", 2, "vfio-pci");
  Add("0000:03:00.3", 3, "mlx5_core");
  Add("0000:03:00.4", 4, std::nullopt);
  const Sysfs s = kernel_.sysfs();
  EXPECT_TRUE(OnVfioDriver(s, "/sys/bus/pci/devices/0000:03:00.1"));
  EXPECT_TRUE(OnVfioDriver(s, "/sys/bus/pci/devices/0000:03:00.2"));
  EXPECT_FALSE(OnVfioDriver(s, "/sys/bus/pci/devices/0000:03:00.3"));
  EXPECT_FALSE(OnVfioDriver(s, "/sys/bus/pci/devices/0000:03:00.4"));
}

TEST_F(IommuGroupTest, ViableWithVfioStubPortOrNoDriver) {
  Add("0000:00:1c.0", 7, "pcieport");
  Add("0000:03:00.0", 7, "vfio-pci");
  Add("0000:03:00.1", 7, "mlx5_vfio_pci");
  Add("0000:03:00.2", 7, "pci-stub");
  Add("0000:03:00.3", 7, std::nullopt);
  EXPECT_TRUE(CheckGroupViable(kernel_.sysfs(), 7).ok());
}

TEST_F(IommuGroupTest, AHostDriverInTheGroupIsNamed) {
  Add("0000:03:00.0", 7, "mlx5_core");
  Add("0000:03:00.1", 7, "mlx5_core");
  Add("0000:03:00.2", 7, "vfio-pci");
  absl::Status s = CheckGroupViable(kernel_.sysfs(), 7, "0000:03:00.1");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "IOMMU group 7"));
  EXPECT_TRUE(
      absl::StrContains(s.message(), "0000:03:00.0 is bound to mlx5_core"))
      << s;
  // The excepted device (the one about to move) is not counted.
  EXPECT_FALSE(absl::StrContains(s.message(), "0000:03:00.1")) << s;
}

TEST_F(IommuGroupTest, UsageOfAnOpenableNodeIsFreeAndAMissingOneUnknown) {
  std::ofstream(kernel_.root() + "/dev/vfio/12") << "";
  DevVfioGroupUsage usage(kernel_.root());
  absl::StatusOr<bool> free = usage.InUse(12);
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_FALSE(*free);
  absl::StatusOr<bool> missing = usage.InUse(13);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(missing.status().message(),
                                kernel_.root() + "/dev/vfio/13"));
}

}  // namespace
}  // namespace migd::host
