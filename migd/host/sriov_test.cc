// migd/host/sriov_test.cc
//
// SR-IOV on the fake tree: the fake kernel creates and removes VF
// directories and virtfn/physfn links on sriov_numvfs writes and enforces
// the kernel's rules (EBUSY non-zero to non-zero, ERANGE above the total,
// ENOENT without a PF driver). Whether a VF is held comes from
// FakeGroupUsage.

#include "migd/host/sriov.h"

#include <errno.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "migd/host/fake_kernel.h"

namespace migd::host {
namespace {

using testing::FakeGroupUsage;
using testing::FakeKernel;
using testing::FakePciDevice;
using Writes = std::vector<std::string>;

constexpr char kPf[] = "0000:03:00.0";
constexpr char kNumVfs[] = "/sys/bus/pci/devices/0000:03:00.0/sriov_numvfs";

class SriovTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_.AddDriver({"pci", "mlx5_core", "mlx5_core", {"15b3:1017"}, ""});
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    FakePciDevice pf;
    pf.bdf = kPf;
    pf.device = 0x1017;
    pf.group = 10;
    pf.driver = "mlx5_core";
    kernel_.AddPciDevice(pf);
    // Twelve VFs, so that virtfn10 and virtfn11 exist.
    std::vector<std::string> vfs;
    for (int i = 0; i < 12; ++i) {
      vfs.push_back(absl::StrFormat("0000:03:%02x.%d", 1 + i / 8, i % 8));
    }
    kernel_.AddSriov(kPf, vfs, 0x1018, 20);
  }

  FakeKernel kernel_;
  FakeGroupUsage usage_;
};

TEST_F(SriovTest, CountsAndANewPfHasNoVfs) {
  EXPECT_EQ(*TotalVfs(kernel_.sysfs(), kPf), 12);
  EXPECT_EQ(*NumVfs(kernel_.sysfs(), kPf), 0);
  EXPECT_TRUE(ListVfs(kernel_.sysfs(), kPf)->empty());
}

TEST_F(SriovTest, VfsAreListedByIndexNotByName) {
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 12).ok());
  absl::StatusOr<std::vector<VirtualFunction>> vfs =
      ListVfs(kernel_.sysfs(), kPf);
  ASSERT_TRUE(vfs.ok()) << vfs.status();
  ASSERT_EQ(vfs->size(), 12u);
  for (int i = 0; i < 12; ++i) EXPECT_EQ((*vfs)[i].index, i);
  EXPECT_EQ((*vfs)[0].bdf, "0000:03:01.0");
  EXPECT_EQ((*vfs)[10].bdf, "0000:03:02.2");
  EXPECT_EQ((*vfs)[11].bdf, "0000:03:02.3");
}

TEST_F(SriovTest, SetFromZeroIsOneWrite) {
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 2).ok());
  EXPECT_EQ(kernel_.writes(), Writes{absl::StrCat(kNumVfs, " := 2")});
  EXPECT_EQ(*NumVfs(kernel_.sysfs(), kPf), 2);
}

TEST_F(SriovTest, ChangingANonZeroCountGoesThroughZero) {
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 2).ok());
  kernel_.ClearWrites();
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 4).ok());
  EXPECT_EQ(kernel_.writes(), (Writes{absl::StrCat(kNumVfs, " := 0"),
                                      absl::StrCat(kNumVfs, " := 4")}));
  EXPECT_EQ(ListVfs(kernel_.sysfs(), kPf)->size(), 4u);
}

TEST_F(SriovTest, TheSameCountWritesNothing) {
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 2).ok());
  kernel_.ClearWrites();
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 2).ok());
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(SriovTest, MoreThanTheTotalIsRefusedNamingBothNumbers) {
  const auto before = kernel_.Snapshot();
  absl::Status s = SetNumVfs(kernel_.sysfs(), usage_, kPf, 13);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "13")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "0 to 12")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), kPf)) << s;
  EXPECT_EQ(SetNumVfs(kernel_.sysfs(), usage_, kPf, -1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(SriovTest, APfWithoutSriovIsNamed) {
  FakePciDevice plain;
  plain.bdf = "0000:00:04.0";
  kernel_.AddPciDevice(plain);
  absl::Status s = SetNumVfs(kernel_.sysfs(), usage_, "0000:00:04.0", 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "0000:00:04.0 has no SR-IOV"))
      << s;
  EXPECT_EQ(TotalVfs(kernel_.sysfs(), "0000:00:04.0").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(SetNumVfs(kernel_.sysfs(), usage_, "0000:09:00.0", 1).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(SetNumVfs(kernel_.sysfs(), usage_, "03:00.0", 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(SriovTest, APfOnNoDriverIsRefused) {
  ASSERT_TRUE(kernel_.sysfs()
                  .Write("/sys/bus/pci/devices/0000:03:00.0/driver/unbind", kPf)
                  .ok());
  kernel_.ClearWrites();
  absl::Status s = SetNumVfs(kernel_.sysfs(), usage_, kPf, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "on no driver")) << s;
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(SriovTest, AVfInUseKeepsTheCount) {
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 2).ok());
  kernel_.BindNow("pci", "0000:03:01.1", "vfio-pci");
  usage_.busy = {21};  // VF 1's group
  kernel_.ClearWrites();
  const auto before = kernel_.Snapshot();
  absl::Status s = SetNumVfs(kernel_.sysfs(), usage_, kPf, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "VF 1 (0000:03:01.1) is in use"))
      << s;
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(SriovTest, AFailedSecondWriteRestoresTheOldCount) {
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 2).ok());
  kernel_.ClearWrites();
  const auto before = kernel_.Snapshot();
  // The PF driver takes 0 and then refuses 4 (out of resources).
  kernel_.FailWrite("/sriov_numvfs", ENOMEM, "4");
  absl::Status s = SetNumVfs(kernel_.sysfs(), usage_, kPf, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  for (const char* word :
       {"set 4 VFs failed", "Cannot allocate memory", "restored to 2"}) {
    EXPECT_TRUE(absl::StrContains(s.message(), word)) << word << ": " << s;
  }
  EXPECT_EQ(kernel_.writes(), (Writes{absl::StrCat(kNumVfs, " := 0"),
                                      absl::StrCat(kNumVfs, " := 4"),
                                      absl::StrCat(kNumVfs, " := 2")}));
  // The same names and links again; on a real host they are new devices.
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(SriovTest, AFailedRestoreIsInternal) {
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 2).ok());
  kernel_.FailWrite("/sriov_numvfs", ENOMEM, "4");
  kernel_.FailWrite("/sriov_numvfs", ENOMEM, "2");
  absl::Status s = SetNumVfs(kernel_.sysfs(), usage_, kPf, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(s.message(), "the PF has 0 VFs")) << s;
}

TEST_F(SriovTest, PhysicalFunctionOfAVf) {
  ASSERT_TRUE(SetNumVfs(kernel_.sysfs(), usage_, kPf, 3).ok());
  absl::StatusOr<PfOfVf> pf =
      PhysicalFunctionOf(kernel_.sysfs(), "0000:03:01.2");
  ASSERT_TRUE(pf.ok()) << pf.status();
  EXPECT_EQ(*pf, (PfOfVf{kPf, 2}));
  absl::StatusOr<PfOfVf> not_vf = PhysicalFunctionOf(kernel_.sysfs(), kPf);
  EXPECT_EQ(not_vf.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(not_vf.status().message(), "is not a VF"));
}

}  // namespace
}  // namespace migd::host
