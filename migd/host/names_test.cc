// migd/host/names_test.cc
//
// The address cases are migd/device/vfio_spec_test.cc's, so the local copy
// keeps the same rules.

#include "migd/host/names.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace migd::host {
namespace {

TEST(NormalizePciAddress, AcceptsFullAddressesAndLowercasesThem) {
  EXPECT_EQ(*NormalizePciAddress("0000:00:04.0"), "0000:00:04.0");
  EXPECT_EQ(*NormalizePciAddress("0000:3B:1F.7"), "0000:3b:1f.7");
  EXPECT_EQ(*NormalizePciAddress("10000:00:02.0"), "10000:00:02.0");
}

TEST(NormalizePciAddress, RefusesAnythingElseNamingIt) {
  for (const char* bad :
       {"", "00:04.0", "0000:00:04", "0000:00:20.0", "0000:00:04.8",
        "000:00:04.0", "0000:0:04.0", "0000:00:04.0 ", "0000:00:04.0/../x",
        "zzzz:00:04.0", "0000:00:04.0\n"}) {
    absl::StatusOr<std::string> a = NormalizePciAddress(bad);
    ASSERT_FALSE(a.ok()) << bad;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(a.status().message(), "PCI address"));
  }
}

TEST(NormalizeUuid, AcceptsAndLowercases) {
  EXPECT_EQ(*NormalizeUuid("4B0B3A6E-1D7C-4C1E-9D36-2B1C6F0E8A11"),
            "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8a11");
}

TEST(NormalizeUuid, RefusesAnythingElseWithoutEchoingIt) {
  for (const char* bad : {"", "4b0b3a6e1d7c4c1e9d362b1c6f0e8a11",
                          "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8a1",
                          "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8a1g"}) {
    absl::StatusOr<std::string> u = NormalizeUuid(bad);
    ASSERT_FALSE(u.ok()) << bad;
    if (*bad != '\0') {
      EXPECT_FALSE(absl::StrContains(u.status().message(), bad)) << u.status();
    }
  }
}

TEST(ValidateDeviceName, AcceptsSysfsEntriesOnly) {
  for (const char* good :
       {"fff51000.ethernet", "AMDI0010:00", "mbochs", "soc@0", "a+b-c_d"}) {
    EXPECT_TRUE(ValidateDeviceName(good).ok()) << good;
  }
  for (const char* bad : {"", ".", "..", "a/b", "../etc", "a b", "a\n"}) {
    EXPECT_EQ(ValidateDeviceName(bad).code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_FALSE(ValidateDeviceName(std::string(129, 'a')).ok());
}

TEST(CanonicalModuleName, TurnsDashesIntoUnderscoresAsModprobeDoes) {
  EXPECT_EQ(*CanonicalModuleName("vfio-pci"), "vfio_pci");
  EXPECT_EQ(*CanonicalModuleName("mlx5_vfio_pci"), "mlx5_vfio_pci");
  for (const char* bad : {"", "vfio pci", "../vfio", "a/b", "-\n"}) {
    EXPECT_EQ(CanonicalModuleName(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_FALSE(CanonicalModuleName(std::string(56, 'a')).ok());
}

TEST(ParsePciIds, TakesVendorDeviceAndOptionallySubsystemIds) {
  absl::StatusOr<PciIds> two = ParsePciIds("1AC3:0101");
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->vendor, 0x1ac3);
  EXPECT_EQ(two->device, 0x0101);
  EXPECT_FALSE(two->subsystem_vendor.has_value());
  EXPECT_EQ(FormatPciIds(*two), "1ac3:0101");
  absl::StatusOr<PciIds> four = ParsePciIds("1ac3:0101:1ac3:0080");
  ASSERT_TRUE(four.ok()) << four.status();
  EXPECT_EQ(four->subsystem_vendor, 0x1ac3);
  EXPECT_EQ(four->subsystem_device, 0x0080);
  EXPECT_EQ(FormatPciIds(*four), "1ac3:0101:1ac3:0080");
}

TEST(ParsePciIds, RefusesAnythingElseNamingIt) {
  for (const char* bad :
       {"", "1ac3", "1ac3:101", "1ac3:0101:1ac3", "1ac3:01x1", "+ac3:0101",
        "1ac3:0101:1ac3:0080:0", "1ac3:0101\n"}) {
    absl::StatusOr<PciIds> ids = ParsePciIds(bad);
    ASSERT_FALSE(ids.ok()) << bad;
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(ids.status().message(), "pci_ids \""))
        << ids.status();
  }
}

}  // namespace
}  // namespace migd::host
