// migd/host/mdev_test.cc
//
// mdev on the fake tree: a PCI parent and a virtual one (as mbochs is),
// with the fake kernel creating and removing instances on create/remove
// writes (ENOSPC when none are available, EEXIST for a UUID in use).

#include "migd/host/mdev.h"

#include <errno.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "migd/host/fake_kernel.h"

namespace migd::host {
namespace {

using testing::FakeKernel;
using testing::FakePciDevice;
using Writes = std::vector<std::string>;

constexpr char kUuid[] = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
constexpr char kMbochs[] = "/sys/devices/virtual/mbochs/mbochs";

class MdevTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_.AddMdevParent(kMbochs, "mbochs",
                          {{"mbochs-large", "large", 0, "vfio-pci"},
                           {"mbochs-small", "small", 2, "vfio-pci"}});
    FakePciDevice gpu;
    gpu.bdf = "0000:00:02.0";
    kernel_.AddPciDevice(gpu);
    kernel_.AddMdevParent("/sys/bus/pci/devices/0000:00:02.0", "0000:00:02.0",
                          {{"i915-GVTg_V5_4", "GVTg_V5_4", 1, "vfio-pci"}});
    FakePciDevice nic;
    nic.bdf = "0000:03:00.0";
    kernel_.AddPciDevice(nic);
  }

  FakeKernel kernel_;
};

TEST_F(MdevTest, ListsTypesWithTheirFiles) {
  absl::StatusOr<std::vector<MdevType>> t =
      ListMdevTypes(kernel_.sysfs(), "mbochs");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t,
            (std::vector<MdevType>{{"mbochs-large", "large", 0, "vfio-pci"},
                                   {"mbochs-small", "small", 2, "vfio-pci"}}));
}

TEST_F(MdevTest, CreateWithAGivenUuidLowercasesItAndListsIt) {
  std::string upper = kUuid;
  for (char& c : upper) c = static_cast<char>(toupper(c));
  absl::StatusOr<std::string> u =
      CreateMdev(kernel_.sysfs(), "mbochs", "mbochs-small", upper);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(*u, kUuid);
  EXPECT_EQ(kernel_.writes(),
            Writes{absl::StrCat("/sys/class/mdev_bus/mbochs/"
                                "mdev_supported_types/mbochs-small/create := ",
                                kUuid)});
  absl::StatusOr<std::vector<MdevInstance>> all =
      ListMdevInstances(kernel_.sysfs());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all,
            (std::vector<MdevInstance>{{kUuid, "mbochs", "mbochs-small"}}));
  EXPECT_EQ(ListMdevTypes(kernel_.sysfs(), "mbochs")->at(1).available_instances,
            1);
  EXPECT_TRUE(ListMdevInstances(kernel_.sysfs(), "0000:00:02.0")->empty());
}

TEST_F(MdevTest, CreateWithoutAUuidMakesARandomVersion4One) {
  absl::StatusOr<std::string> u =
      CreateMdev(kernel_.sysfs(), "0000:00:02.0", "i915-GVTg_V5_4");
  ASSERT_TRUE(u.ok()) << u.status();
  ASSERT_EQ(u->size(), 36u);
  EXPECT_EQ((*u)[14], '4');
  EXPECT_NE(std::string("89ab").find((*u)[19]), std::string::npos) << *u;
  absl::StatusOr<std::vector<MdevInstance>> on_gpu =
      ListMdevInstances(kernel_.sysfs(), "0000:00:02.0");
  ASSERT_TRUE(on_gpu.ok()) << on_gpu.status();
  EXPECT_EQ(
      *on_gpu,
      (std::vector<MdevInstance>{{*u, "0000:00:02.0", "i915-GVTg_V5_4"}}));
}

TEST(RandomUuidV4, IsDifferentEachTime) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) seen.insert(*RandomUuidV4());
  EXPECT_EQ(seen.size(), 100u);
}

TEST_F(MdevTest, RemoveLeavesTheTreeAsBefore) {
  const auto before = kernel_.Snapshot();
  ASSERT_TRUE(
      CreateMdev(kernel_.sysfs(), "mbochs", "mbochs-small", kUuid).ok());
  ASSERT_TRUE(RemoveMdev(kernel_.sysfs(), kUuid).ok());
  EXPECT_EQ(kernel_.writes().back(),
            absl::StrCat("/sys/bus/mdev/devices/", kUuid, "/remove := 1"));
  EXPECT_EQ(kernel_.Snapshot(), before);
  EXPECT_EQ(RemoveMdev(kernel_.sysfs(), kUuid).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(MdevTest, AnUnknownTypeNamesTheParentAndItsTypes) {
  const auto before = kernel_.Snapshot();
  absl::StatusOr<std::string> u =
      CreateMdev(kernel_.sysfs(), "mbochs", "mbochs-huge", kUuid);
  EXPECT_EQ(u.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(
      u.status().message(),
      "mdev parent mbochs has no type \"mbochs-huge\" (it has mbochs-large, "
      "mbochs-small)"))
      << u.status();
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(MdevTest, NoAvailableInstancesIsResourceExhausted) {
  absl::StatusOr<std::string> u =
      CreateMdev(kernel_.sysfs(), "mbochs", "mbochs-large", kUuid);
  EXPECT_EQ(u.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(u.status().message(), "mbochs-large"));
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(MdevTest, AParentWithoutMdevSupportIsNamed) {
  absl::StatusOr<std::vector<MdevType>> t =
      ListMdevTypes(kernel_.sysfs(), "0000:03:00.0");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(t.status().message(),
                                "pci device 0000:03:00.0 offers no mediated"))
      << t.status();
  EXPECT_EQ(ListMdevTypes(kernel_.sysfs(), "0000:09:00.0").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ListMdevTypes(kernel_.sysfs(), "../mbochs").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(MdevTest, AUuidInUseIsRefusedAndABadOneNotEchoed) {
  ASSERT_TRUE(
      CreateMdev(kernel_.sysfs(), "mbochs", "mbochs-small", kUuid).ok());
  kernel_.ClearWrites();
  EXPECT_EQ(CreateMdev(kernel_.sysfs(), "mbochs", "mbochs-small", kUuid)
                .status()
                .code(),
            absl::StatusCode::kAlreadyExists);
  absl::StatusOr<std::string> bad =
      CreateMdev(kernel_.sysfs(), "mbochs", "mbochs-small", "not-a-uuid");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(bad.status().message(), "not-a-uuid"));
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(MdevTest, TheKernelsRefusalIsPassedOnWithItsErrno) {
  kernel_.FailWrite("/create", ENOSPC);
  const auto before = kernel_.Snapshot();
  absl::StatusOr<std::string> u =
      CreateMdev(kernel_.sysfs(), "mbochs", "mbochs-small", kUuid);
  EXPECT_EQ(u.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(
      absl::StrContains(u.status().message(), "No space left on device"))
      << u.status();
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(MdevTest, ARemoveTheKernelRefusesKeepsTheInstance) {
  ASSERT_TRUE(
      CreateMdev(kernel_.sysfs(), "mbochs", "mbochs-small", kUuid).ok());
  kernel_.FailWrite("/remove", EBUSY);
  absl::Status s = RemoveMdev(kernel_.sysfs(), kUuid);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);  // EBUSY
  EXPECT_TRUE(absl::StrContains(s.message(), "Device or resource busy")) << s;
  EXPECT_EQ(ListMdevInstances(kernel_.sysfs())->size(), 1u);
}

TEST_F(MdevTest, NoMdevBusMeansNoInstances) {
  FakeKernel bare;
  absl::StatusOr<std::vector<MdevInstance>> all =
      ListMdevInstances(bare.sysfs());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(all->empty());
}

}  // namespace
}  // namespace migd::host
