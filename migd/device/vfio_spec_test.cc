// migd/device/vfio_spec_test.cc

#include "migd/device/vfio_spec.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace migd::device {
namespace {

using Source = VfioDeviceConfig::Source;

constexpr char kToken[] = "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8a11";

// NormalizePciAddress and NormalizeUuid are migd/host/names.h's, tested
// there.

TEST(UuidBytes, IsTheTextInOrder) {
  absl::StatusOr<std::array<uint8_t, 16>> b = UuidBytes(kToken);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)[0], 0x4b);
  EXPECT_EQ((*b)[3], 0x6e);
  EXPECT_EQ((*b)[4], 0x1d);
  EXPECT_EQ((*b)[15], 0x11);
}

TEST(ValidateCdevPath, OnlyVfioDeviceNodes) {
  EXPECT_TRUE(ValidateCdevPath("/dev/vfio/devices/vfio0").ok());
  EXPECT_TRUE(ValidateCdevPath("/dev/vfio/devices/vfio17").ok());
  for (const char* bad :
       {"/dev/vfio/devices/vfio", "/dev/vfio/devices/vfio01",
        "/dev/vfio/devices/vfio0/../../sda", "/dev/sda", "/dev/vfio/7",
        "dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio-1"}) {
    EXPECT_FALSE(ValidateCdevPath(bad).ok()) << bad;
  }
}

TEST(ValidateSocketPath, AbsoluteCleanAndShort) {
  EXPECT_TRUE(ValidateSocketPath("/run/vmm/dev0.sock").ok());
  for (const std::string& bad :
       {std::string("vmm.sock"), std::string("/run/../etc/x"),
        std::string("/run/./x"), std::string("/run//x"),
        std::string("/run/x\n"), "/" + std::string(200, 'a')}) {
    EXPECT_FALSE(ValidateSocketPath(bad).ok()) << bad;
  }
}

TEST(ParseVfioDeviceLine, PciWithAndWithoutAToken) {
  absl::StatusOr<VfioDeviceConfig> c =
      ParseVfioDeviceLine("vfio edu0 bdf=0000:00:04.0");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "edu0");
  EXPECT_EQ(c->source, Source::kPci);
  EXPECT_EQ(c->address, "0000:00:04.0");
  EXPECT_FALSE(c->vf_token.has_value());

  c = ParseVfioDeviceLine(std::string("vfio vf1\tbdf=0000:3B:02.1  vf_token=") +
                          kToken);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->address, "0000:3b:02.1");
  EXPECT_EQ(c->vf_token, kToken);
}

TEST(ParseVfioDeviceLine, MdevCdevAndFdSocket) {
  absl::StatusOr<VfioDeviceConfig> c =
      ParseVfioDeviceLine("vfio g0 mdev=83B8F4F2-509F-382F-3C1E-E6BFE0FA1001");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, Source::kMdev);
  EXPECT_EQ(c->address, "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");

  c = ParseVfioDeviceLine("vfio c0 cdev=/dev/vfio/devices/vfio0");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, Source::kCdev);
  EXPECT_EQ(c->address, "/dev/vfio/devices/vfio0");

  c = ParseVfioDeviceLine("vfio h0 fd_socket=/run/vmm/edu0.sock");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, Source::kFdSocket);
  EXPECT_EQ(c->address, "/run/vmm/edu0.sock");
}

void ExpectBadToken(const std::string& line, const std::string& token) {
  absl::StatusOr<VfioDeviceConfig> c = ParseVfioDeviceLine(line);
  ASSERT_FALSE(c.ok()) << line;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(c.status().message(), token))
      << line << " -> " << c.status();
}

TEST(ParseVfioDeviceLine, ErrorsNameTheBadToken) {
  ExpectBadToken("vfio edu0 bdf=00:04.0", "bdf=00:04.0");
  ExpectBadToken("vfio edu0 mdev=xyz", "mdev=xyz");
  ExpectBadToken("vfio edu0 cdev=/dev/sda", "cdev=/dev/sda");
  ExpectBadToken("vfio edu0 fd_socket=rel.sock", "fd_socket=rel.sock");
  ExpectBadToken("vfio edu0 bdf=0000:00:04.0 color=red", "color=red");
  ExpectBadToken("vfio edu0 bdf=0000:00:04.0 bdf=0000:00:05.0",
                 "bdf=0000:00:05.0");
  ExpectBadToken("vfio edu0 bdf=0000:00:04.0 mdev=" + std::string(kToken),
                 "mdev=");
  ExpectBadToken("vfio edu0 bdf", "bdf");
  ExpectBadToken("vfio bad/name bdf=0000:00:04.0", "bad/name");
}

TEST(ParseVfioDeviceLine, NeedsASource) {
  absl::StatusOr<VfioDeviceConfig> c = ParseVfioDeviceLine("vfio edu0");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::StrContains(c.status().message(), "bdf=")) << c.status();
  EXPECT_FALSE(ParseVfioDeviceLine("vfio").ok());
  EXPECT_FALSE(ParseVfioDeviceLine("emulated emu0").ok());
}

TEST(ParseVfioDeviceLine, NeverEchoesAVfToken) {
  const std::string secret = "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8a1Z";
  absl::StatusOr<VfioDeviceConfig> c =
      ParseVfioDeviceLine("vfio vf1 bdf=0000:00:04.0 vf_token=" + secret);
  ASSERT_FALSE(c.ok());
  EXPECT_FALSE(absl::StrContains(c.status().message(), "4b0b3a6e"))
      << c.status();
  EXPECT_TRUE(absl::StrContains(c.status().message(), "vf_token=<redacted>"))
      << c.status();
}

TEST(ParseVfioDeviceLine, VfTokenOnlyWhereTheKernelTakesOne) {
  absl::StatusOr<VfioDeviceConfig> c = ParseVfioDeviceLine(
      "vfio g0 mdev=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001 vf_token=" +
      std::string(kToken));
  ASSERT_FALSE(c.ok());
  EXPECT_FALSE(absl::StrContains(c.status().message(), kToken)) << c.status();
  EXPECT_TRUE(ParseVfioDeviceLine("vfio c0 cdev=/dev/vfio/devices/vfio2 "
                                  "vf_token=" +
                                  std::string(kToken))
                  .ok());
  EXPECT_FALSE(ParseVfioDeviceLine("vfio h0 fd_socket=/run/x.sock vf_token=" +
                                   std::string(kToken))
                   .ok());
}

TEST(ValidateVfioDeviceConfig, WantsNormalizedAddresses) {
  VfioDeviceConfig c;
  c.name = "edu0";
  c.source = Source::kPci;
  c.address = "0000:00:04.0";
  EXPECT_TRUE(ValidateVfioDeviceConfig(c).ok());
  c.address = "0000:00:0A.0";
  EXPECT_FALSE(ValidateVfioDeviceConfig(c).ok());
  c.address = "0000:00:0a.0";
  c.vf_token = "not-a-uuid";
  EXPECT_FALSE(ValidateVfioDeviceConfig(c).ok());
}

}  // namespace
}  // namespace migd::device
