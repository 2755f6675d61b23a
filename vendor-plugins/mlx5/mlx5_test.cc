// The mlx5 plugin through migd's own loader (migd::plugins::Registry), on
// fake sysfs trees laid out as the kernel lays out SR-IOV (a VF's "physfn"
// link, its PF's "virtfnN" links). Netlink is this host's real one, which
// has no ConnectX (and may have no devlink at all).

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "migd/plugins/registry.h"

namespace {

namespace fs = std::filesystem;

std::string& PluginPath() {
  static auto* path = new std::string();
  return *path;
}

constexpr char kPf[] = "0000:3b:00.0";
constexpr char kVf0[] = "0000:3b:00.2";
constexpr char kVf1[] = "0000:3b:00.3";

// A fake sysfs under TEST_TMPDIR/<name>: the PF and two VFs in
// devices/pci0000:3a/0000:3a:00.0/, bus/pci/devices/<bdf> links to them,
// VF -> PF "physfn" and PF -> VF "virtfnN" links, all relative like the
// kernel's. Returns the root.
std::string FakeSriovTree(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string root =
      std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name + "/sys";
  fs::remove_all(root);
  const std::string parent = root + "/devices/pci0000:3a/0000:3a:00.0";
  fs::create_directories(root + "/bus/pci/devices");
  for (const char* bdf : {kPf, kVf0, kVf1}) {
    fs::create_directories(parent + "/" + bdf);
    fs::create_symlink(
        std::string("../../../devices/pci0000:3a/0000:3a:00.0/") + bdf,
        root + "/bus/pci/devices/" + bdf);
  }
  fs::create_symlink(std::string("../") + kPf, parent + "/" + kVf0 + "/physfn");
  fs::create_symlink(std::string("../") + kPf, parent + "/" + kVf1 + "/physfn");
  fs::create_symlink(std::string("../") + kVf0,
                     parent + "/" + kPf + "/virtfn0");
  fs::create_symlink(std::string("../") + kVf1,
                     parent + "/" + kPf + "/virtfn1");
  return root;
}

// What the agent knows of a ConnectX VF (15b3:101e) bound to `driver`.
migd::plugins::DeviceFacts ConnectXVf(const std::string& sysfs_root,
                                      const std::string& bdf,
                                      const std::string& driver,
                                      uint64_t migration_flags) {
  migd::plugins::DeviceFacts d;
  d.name = "vf0";
  d.backend = "vfio";
  d.pci_address = bdf;
  d.vendor_id = 0x15b3;
  d.device_id = 0x101e;
  d.subsystem_vendor_id = 0x15b3;
  d.subsystem_device_id = 0x0024;
  d.driver = driver;
  d.modalias = "pci:v000015B3d0000101Esv000015B3sd00000024bc02sc00i00";
  d.sysfs_path = sysfs_root + "/bus/pci/devices/" + bdf;
  d.migration_flags = migration_flags;
  return d;
}

constexpr uint64_t kStopCopy = 1, kP2p = 2, kPreCopy = 4;

class Mlx5Plugin : public testing::Test {
 protected:
  void SetUp() override {
    auto loaded = registry_.Load(PluginPath());
    ASSERT_TRUE(loaded.ok()) << loaded;
    root_ = FakeSriovTree(
        testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  const migd::plugins::Plugin* ClaimantOf(const migd::plugins::DeviceFacts& d) {
    auto claimant = registry_.ClaimantOf(d);
    EXPECT_TRUE(claimant.ok()) << claimant.status();
    return claimant.ok() ? *claimant : nullptr;
  }

  migd::plugins::Registry registry_;
  std::string root_;
};

TEST_F(Mlx5Plugin, ClaimsAConnectXVf) {
  const auto d = ConnectXVf(root_, kVf0, "mlx5_vfio_pci", kStopCopy);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->name(), "mlx5");
  EXPECT_EQ(p->Claim(d), 100);
}

TEST_F(Mlx5Plugin, LeavesPfsOtherIdsAndOtherVendorsAlone) {
  auto pf = ConnectXVf(root_, kPf, "mlx5_core", 0);
  pf.device_id = 0x1017;  // a ConnectX-5 PF
  EXPECT_EQ(ClaimantOf(pf), nullptr);
  auto cx5_vf = ConnectXVf(root_, kVf0, "vfio-pci", 0);
  cx5_vf.device_id = 0x1018;  // not in mlx5_vfio_pci's id table
  EXPECT_EQ(ClaimantOf(cx5_vf), nullptr);
  auto intel = ConnectXVf(root_, kVf0, "vfio-pci", 0);
  intel.vendor_id = 0x8086;
  EXPECT_EQ(ClaimantOf(intel), nullptr);
}

TEST_F(Mlx5Plugin, MigratableOnTheVariantDriverVouchingForWhatItAdvertises) {
  const migd::plugins::Plugin* p =
      ClaimantOf(ConnectXVf(root_, kVf0, "mlx5_vfio_pci", kStopCopy));
  ASSERT_NE(p, nullptr);
  // Linux 6.12's driver advertises all three; 6.1's no PRE_COPY.
  for (uint64_t flags : {kStopCopy | kP2p | kPreCopy, kStopCopy | kP2p}) {
    auto caps =
        p->GetCapabilities(ConnectXVf(root_, kVf0, "mlx5_vfio_pci", flags));
    ASSERT_TRUE(caps.ok()) << caps.status();
    EXPECT_TRUE(caps->migratable) << caps->reason;
    EXPECT_EQ(caps->migration_flags, flags);
    EXPECT_EQ(caps->dirty_tracking, "device");
  }
}

TEST_F(Mlx5Plugin, OnVfioPciItIsNotMigratableAndSaysToBindTheVariantDriver) {
  const auto d = ConnectXVf(root_, kVf0, "vfio-pci", 0);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  auto caps = p->GetCapabilities(d);
  ASSERT_TRUE(caps.ok()) << caps.status();
  EXPECT_FALSE(caps->migratable);
  EXPECT_EQ(caps->migration_flags, 0u);
  EXPECT_TRUE(absl::StrContains(caps->reason, "vfio-pci")) << caps->reason;
  EXPECT_TRUE(absl::StrContains(caps->reason, "no migration support"))
      << caps->reason;
  EXPECT_TRUE(absl::StrContains(caps->remedy, "bind the VF to mlx5_vfio_pci"))
      << caps->remedy;
  // The PF and VF number come from the fake tree's physfn/virtfn0 links.
  EXPECT_TRUE(absl::StrContains(
      caps->remedy, "migd-devlink set-migratable pci/0000:3b:00.0 0 on"))
      << caps->remedy;
}

TEST_F(Mlx5Plugin, OnTheVariantDriverWithoutStopCopyItNamesTheCapability) {
  const auto d = ConnectXVf(root_, kVf1, "mlx5_vfio_pci", 0);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  auto caps = p->GetCapabilities(d);
  ASSERT_TRUE(caps.ok()) << caps.status();
  EXPECT_FALSE(caps->migratable);
  EXPECT_TRUE(absl::StrContains(caps->reason, "migratable capability was off"))
      << caps->reason;
  EXPECT_TRUE(absl::StrContains(caps->reason, "firmware")) << caps->reason;
  EXPECT_TRUE(absl::StrContains(
      caps->remedy, "migd-devlink set-migratable pci/0000:3b:00.0 1 on"))
      << caps->remedy;
  EXPECT_TRUE(absl::StrContains(caps->remedy, "prepare step")) << caps->remedy;
}

TEST_F(Mlx5Plugin, DescribeNamesThePfsDevlinkHandleItCannotRead) {
  const auto d = ConnectXVf(root_, kVf0, "mlx5_vfio_pci", kStopCopy);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  auto desc = p->Describe(d);
  ASSERT_FALSE(desc.ok());
  const std::string message(desc.status().message());
  // This host has no ConnectX: either no devlink family at all (a kernel
  // without devlink, as here) or no instance for the PF.
  EXPECT_TRUE(
      absl::StrContains(message, "no devlink family") ||
      absl::StrContains(message, "no devlink instance pci/0000:3b:00.0"))
      << message;
  EXPECT_TRUE(absl::StrContains(message,
                                "devlink pci/0000:3b:00.0: cannot "
                                "read device info"))
      << message;
  EXPECT_TRUE(absl::StrContains(message, "VF 0 of 0000:3b:00.0")) << message;
}

TEST_F(Mlx5Plugin, DescribeOfADeviceThatIsNotAVfNamesPhysfn) {
  const auto d = ConnectXVf(root_, kPf, "mlx5_vfio_pci", kStopCopy);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  auto desc = p->Describe(d);
  ASSERT_FALSE(desc.ok());
  EXPECT_TRUE(absl::StrContains(desc.status().message(), "physfn"))
      << desc.status();
  EXPECT_TRUE(absl::StrContains(desc.status().message(), "not an SR-IOV VF"))
      << desc.status();
}

TEST_F(Mlx5Plugin, CheckRejectsDescriptorsItCannotReadSayingWhy) {
  const auto d = ConnectXVf(root_, kVf0, "mlx5_vfio_pci", kStopCopy);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  auto other = p->Check(d, "state_version=1 mem_kib=4096");
  ASSERT_FALSE(other.ok());
  EXPECT_TRUE(
      absl::StrContains(other.status().message(), "not an mlx5 descriptor"))
      << other.status();
  auto newer = p->Check(d, "mlx5-desc 2\npsid=MT_0000000894\nfw=28.41.1000\n");
  ASSERT_FALSE(newer.ok());
  EXPECT_TRUE(absl::StrContains(newer.status().message(),
                                "format 2 is newer than this plugin's (1)"))
      << newer.status();
}

TEST_F(Mlx5Plugin, CheckOfAGoodDescriptorNeedsTheLocalPfsDevlink) {
  const auto d = ConnectXVf(root_, kVf1, "mlx5_vfio_pci", kStopCopy);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  auto v = p->Check(d, "mlx5-desc 1\npsid=MT_0000000894\nfw=28.41.1000\n");
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(absl::StrContains(v.status().message(), "VF 1 of 0000:3b:00.0"))
      << v.status();
  EXPECT_TRUE(absl::StrContains(v.status().message(), "pci/0000:3b:00.0"))
      << v.status();
}

TEST_F(Mlx5Plugin, PrepareHostFailsNamingThePfsHandle) {
  const auto d = ConnectXVf(root_, kVf0, "vfio-pci", 0);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  auto prepared = p->PrepareHost(d);
  ASSERT_FALSE(prepared.ok());
  EXPECT_TRUE(absl::StrContains(prepared.message(), "devlink pci/0000:3b:00.0"))
      << prepared;
  EXPECT_TRUE(absl::StrContains(prepared.message(), "cannot list ports"))
      << prepared;
}

TEST_F(Mlx5Plugin, ExplainsOnlyTheErrnosTheDriverGivesMeaningTo) {
  const auto d = ConnectXVf(root_, kVf0, "mlx5_vfio_pci", kStopCopy);
  const migd::plugins::Plugin* p = ClaimantOf(d);
  ASSERT_NE(p, nullptr);
  const std::string resuming = p->ExplainErrno(d, "RESUMING -> STOP", EIO);
  EXPECT_TRUE(absl::StrContains(resuming, "LOAD_VHCA_STATE")) << resuming;
  EXPECT_TRUE(absl::StrContains(resuming, "rejected")) << resuming;
  const std::string detached = p->ExplainErrno(d, "RUNNING -> STOP", ENOTCONN);
  EXPECT_TRUE(absl::StrContains(detached, "SR-IOV")) << detached;
  EXPECT_TRUE(
      absl::StrContains(p->ExplainErrno(d, "read", ENOMSG), "PRE_COPY"));
  EXPECT_EQ(p->ExplainErrno(d, "RUNNING -> STOP", EIO), "");
  EXPECT_EQ(p->ExplainErrno(d, "read", EIO), "");
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
