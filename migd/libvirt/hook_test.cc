#include "migd/libvirt/hook.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace migd::libvirt {
namespace {

TEST(ParseDeviceClass, PciIdsAndMdevTypes) {
  DeviceRequest r;
  ASSERT_TRUE(ParseDeviceClass("pci:15B3:101e", &r).ok());
  EXPECT_EQ(r.pci_ids, "15b3:101e");
  r = {};
  ASSERT_TRUE(ParseDeviceClass("pci:15b3:101e:15b3:0080", &r).ok());
  EXPECT_EQ(r.pci_ids, "15b3:101e:15b3:0080");
  r = {};
  ASSERT_TRUE(ParseDeviceClass("mdev:nvidia-35", &r).ok());
  EXPECT_EQ(r.mdev_type, "nvidia-35");
  EXPECT_EQ(r.mdev_parent, "");
  r = {};
  ASSERT_TRUE(ParseDeviceClass("mdev:mbochs-small@mbochs", &r).ok());
  EXPECT_EQ(r.mdev_type, "mbochs-small");
  EXPECT_EQ(r.mdev_parent, "mbochs");
}

TEST(ParseDeviceClass, AnythingElseIsRefusedNamingIt) {
  for (const char* bad :
       {"", "15b3:101e", "pci:15b3", "pci:15b3:101", "pci:15b3:101e:15b3",
        "pci:15b3:10xe", "mdev:", "mdev:a@", "mdev:../x", "mdev:a/b",
        "usb:1234:5678"}) {
    DeviceRequest r;
    absl::Status s = ParseDeviceClass(bad, &r);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat("'", bad, "'")))
        << s;
  }
}

}  // namespace
}  // namespace migd::libvirt
