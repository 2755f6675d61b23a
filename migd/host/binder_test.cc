// migd/host/binder_test.cc
//
// Binder against the fake kernel (fake_kernel.h): the tree is real files and
// links, the kernel's reactions to driver_override, unbind and drivers_probe
// are the fake's, and so are module loads (FakeKernel is the ModuleLoader)
// and the answer to "is this group held?" (FakeGroupUsage: the EBUSY of a
// held /dev/vfio/<N> cannot come from a regular file). Each test pins the
// exact writes and, where the operation must leave no trace, the whole tree
// before and after.

#include "migd/host/binder.h"

#include <errno.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "migd/host/fake_kernel.h"

namespace migd::host {
namespace {

using testing::FakeDriver;
using testing::FakeGroupUsage;
using testing::FakeKernel;
using testing::FakePciDevice;
using Writes = std::vector<std::string>;

constexpr char kVf[] = "0000:03:00.1";
constexpr char kDir[] = "/sys/bus/pci/devices/0000:03:00.1";

std::string OverrideTo(absl::string_view value) {
  return absl::StrCat(kDir, "/driver_override := ", value);
}
std::string Unbind() { return absl::StrCat(kDir, "/driver/unbind := ", kVf); }
std::string Probe() {
  return absl::StrCat("/sys/bus/pci/drivers_probe := ", kVf);
}

class BinderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver({"pci", "mlx5_core", "mlx5_core", {"15b3:101e"}, ""});
    kernel_.AddDriver({"pci", "e1000e", "e1000e", {"8086:10d3"}, ""});
    kernel_.AddLoadableModule(
        {"pci", "mlx5_vfio_pci", "mlx5_vfio_pci", {}, "vfio_pci_core"});
    // The device under test: an mlx5 VF on its host driver, alone in group
    // 12.
    AddPci(kVf, 0x15b3, 0x101e, 12, "mlx5_core");
  }

  void AddPci(const std::string& bdf, uint16_t vendor, uint16_t device,
              int group, std::optional<std::string> driver) {
    FakePciDevice d;
    d.bdf = bdf;
    d.vendor = vendor;
    d.device = device;
    d.group = group;
    d.driver = std::move(driver);
    kernel_.AddPciDevice(d);
  }

  Binding At(const std::string& bdf = kVf) {
    absl::StatusOr<Binding> b = binder_.Current(Bus::kPci, bdf);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.value_or(Binding{});
  }

  FakeKernel kernel_;
  FakeGroupUsage usage_;
  Binder binder_{kernel_.sysfs(), kernel_, usage_};
};

TEST_F(BinderTest, BindsWithTheDriverAlreadyLoaded) {
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->device, kVf);
  EXPECT_EQ(r->driver, "vfio-pci");
  EXPECT_EQ(r->original, (Binding{"mlx5_core", std::nullopt}));
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(kernel_.writes(),
            (Writes{OverrideTo("vfio-pci"), Unbind(), Probe()}));
  EXPECT_TRUE(kernel_.loads().empty());
  EXPECT_EQ(At(), (Binding{"vfio-pci", "vfio-pci"}));
  // Not on a VFIO driver before: nothing to ask about use.
  EXPECT_TRUE(usage_.asked.empty());
}

TEST_F(BinderTest, LoadsTheModuleWhenItsDriverIsNotRegistered) {
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "mlx5_vfio_pci");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(kernel_.loads(), Writes{"mlx5_vfio_pci"});
  EXPECT_EQ(r->driver, "mlx5_vfio_pci");
  EXPECT_EQ(At(), (Binding{"mlx5_vfio_pci", "mlx5_vfio_pci"}));
  EXPECT_EQ(kernel_.writes(),
            (Writes{OverrideTo("mlx5_vfio_pci"), Unbind(), Probe()}));
}

TEST_F(BinderTest, AMissingModuleLeavesEverythingAsItWas) {
  const auto before = kernel_.Snapshot();
  absl::StatusOr<BindRecord> r =
      binder_.Bind(Bus::kPci, kVf, "nosuch_vfio_pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  for (const char* word :
       {kVf, "nosuch_vfio_pci", "not found", "not touched"}) {
    EXPECT_TRUE(absl::StrContains(r.status().message(), word))
        << word << ": " << r.status();
  }
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(kernel_.Snapshot(), before);
  EXPECT_EQ(At(), (Binding{"mlx5_core", std::nullopt}));
}

TEST_F(BinderTest, AFailedProbeRollsBackToTheOriginalDriver) {
  kernel_.FailProbe("vfio-pci", ENODEV);
  const auto before = kernel_.Snapshot();
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);  // ENODEV
  for (const char* word :
       {"bind to vfio-pci failed", "probe", "No such device", "rolled back",
        "driver_override restored to (null)", "re-probed",
        "the device is on mlx5_core with driver_override (null)"}) {
    EXPECT_TRUE(absl::StrContains(r.status().message(), word))
        << word << ": " << r.status();
  }
  // The probe left the device on no driver, so the rollback has nothing to
  // unbind: restore the override, re-probe.
  EXPECT_EQ(kernel_.writes(), (Writes{OverrideTo("vfio-pci"), Unbind(), Probe(),
                                      OverrideTo("\\n"), Probe()}));
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(BinderTest, AProbeThatBindsNothingFailsVerificationAndRollsBack) {
  kernel_.FailProbe("vfio-pci", 0);  // the write succeeds, nothing binds
  const auto before = kernel_.Snapshot();
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(
      r.status().message(),
      "verify: the device is on no driver with driver_override vfio-pci, not "
      "on vfio-pci"))
      << r.status();
  EXPECT_EQ(kernel_.writes(), (Writes{OverrideTo("vfio-pci"), Unbind(), Probe(),
                                      OverrideTo("\\n"), Probe()}));
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(BinderTest, AGroupBrokenDuringTheBindRollsBackUnbindOverrideProbe) {
  // Another device joins group 12 unbound; as the VF reaches vfio-pci,
  // something else binds it to a host driver (a concurrent probe by another
  // tool): the check after the bind fails.
  AddPci("0000:03:00.0", 0x8086, 0x10d3, 12, std::nullopt);
  kernel_.OnBind([&](const std::string&, const std::string& device,
                     const std::string& driver) {
    if (device == kVf && driver == "vfio-pci") {
      kernel_.BindNow("pci", "0000:03:00.0", "e1000e");
    }
  });
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  for (const char* word :
       {"check after the move", "IOMMU group 12 is not viable",
        "0000:03:00.0 is bound to e1000e", "unbound from vfio-pci",
        "the device is on mlx5_core with driver_override (null)"}) {
    EXPECT_TRUE(absl::StrContains(r.status().message(), word))
        << word << ": " << r.status();
  }
  EXPECT_EQ(kernel_.writes(), (Writes{OverrideTo("vfio-pci"), Unbind(), Probe(),
                                      // the rollback, in reverse:
                                      Unbind(), OverrideTo("\\n"), Probe()}));
  EXPECT_EQ(At(), (Binding{"mlx5_core", std::nullopt}));
}

TEST_F(BinderTest, AFailedUnbindRestoresTheOverride) {
  kernel_.FailWrite("/driver/unbind", EBUSY);
  const auto before = kernel_.Snapshot();
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(
      r.status().message(), "unbind from mlx5_core: write \"0000:03:00.1\""))
      << r.status();
  EXPECT_EQ(kernel_.writes(),
            (Writes{OverrideTo("vfio-pci"), Unbind(), OverrideTo("\\n")}));
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(BinderTest, AFailedRollbackIsInternalAndSaysWhereTheDeviceIs) {
  kernel_.FailProbe("vfio-pci", ENODEV);
  kernel_.FailProbe("mlx5_core", EIO);
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  for (const char* word :
       {"ROLLBACK FAILED", "Input/output error",
        "the device is on no driver with driver_override (null)"}) {
    EXPECT_TRUE(absl::StrContains(r.status().message(), word))
        << word << ": " << r.status();
  }
}

TEST_F(BinderTest, ANonViableGroupIsRefusedBeforeAnyWrite) {
  AddPci("0000:04:00.0", 0x15b3, 0x101e, 13, "mlx5_core");
  AddPci("0000:04:00.1", 0x8086, 0x10d3, 13, "e1000e");
  const auto before = kernel_.Snapshot();
  absl::StatusOr<BindRecord> r =
      binder_.Bind(Bus::kPci, "0000:04:00.0", "mlx5_vfio_pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  for (const char* word : {"0000:04:00.0", "refused", "IOMMU group 13",
                           "0000:04:00.1 is bound to e1000e"}) {
    EXPECT_TRUE(absl::StrContains(r.status().message(), word))
        << word << ": " << r.status();
  }
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_TRUE(kernel_.loads().empty());
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(BinderTest, ADeviceInUseIsRefused) {
  AddPci("0000:05:00.0", 0x15b3, 0x101e, 14, "vfio-pci");
  usage_.busy = {14};
  const auto before = kernel_.Snapshot();
  absl::StatusOr<BindRecord> r =
      binder_.Bind(Bus::kPci, "0000:05:00.0", "mlx5_vfio_pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  for (const char* word :
       {"0000:05:00.0", "in use", "on vfio-pci", "IOMMU group 14"}) {
    EXPECT_TRUE(absl::StrContains(r.status().message(), word))
        << word << ": " << r.status();
  }
  EXPECT_EQ(usage_.asked, std::vector<int>{14});
  EXPECT_EQ(binder_.UnbindToNoDriver(Bus::kPci, "0000:05:00.0").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(BinderTest, ADeviceAlreadyOnTheDriverIsLeftAlone) {
  AddPci("0000:05:00.0", 0x15b3, 0x101e, 14, "vfio-pci");
  usage_.busy = {14};  // held: binding it where it is touches nothing
  absl::StatusOr<BindRecord> r =
      binder_.Bind(Bus::kPci, "0000:05:00.0", "vfio_pci");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->changed);
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_TRUE(usage_.asked.empty());
  EXPECT_TRUE(binder_.Unbind(*r).ok());
  EXPECT_TRUE(kernel_.writes().empty());
}

// What a PrepareHostFn saw when the binder called it.
struct PrepareCall {
  Bus bus;
  std::string device;
  Writes writes_before;  // the kernel's writes until then
  Binding binding;       // where the device was
};

TEST_F(BinderTest, ThePrepareHookRunsBetweenTheUnbindAndTheProbe) {
  std::vector<PrepareCall> calls;
  Binder binder(kernel_.sysfs(), kernel_, usage_,
                [&](Bus bus, const std::string& device) {
                  calls.push_back({bus, device, kernel_.writes(), At(device)});
                  return absl::OkStatus();
                });
  absl::StatusOr<BindRecord> r = binder.Bind(Bus::kPci, kVf, "mlx5_vfio_pci");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].bus, Bus::kPci);
  EXPECT_EQ(calls[0].device, kVf);
  EXPECT_EQ(calls[0].writes_before,
            (Writes{OverrideTo("mlx5_vfio_pci"), Unbind()}));
  // Off its original driver, and only the VFIO driver may take it.
  EXPECT_EQ(calls[0].binding, (Binding{std::nullopt, "mlx5_vfio_pci"}));
  EXPECT_EQ(kernel_.writes(),
            (Writes{OverrideTo("mlx5_vfio_pci"), Unbind(), Probe()}));
  EXPECT_EQ(At(), (Binding{"mlx5_vfio_pci", "mlx5_vfio_pci"}));
  // Returning the device is no bind to a VFIO driver.
  ASSERT_TRUE(binder.Unbind(*r).ok());
  EXPECT_EQ(calls.size(), 1u);
}

TEST_F(BinderTest, ThePrepareHookRunsBeforeTheProbeOfADeviceOnNoDriver) {
  AddPci("0000:04:00.0", 0x15b3, 0x101e, 13, std::nullopt);
  std::vector<PrepareCall> calls;
  Binder binder(kernel_.sysfs(), kernel_, usage_,
                [&](Bus bus, const std::string& device) {
                  calls.push_back({bus, device, kernel_.writes(), At(device)});
                  return absl::OkStatus();
                });
  ASSERT_TRUE(binder.Bind(Bus::kPci, "0000:04:00.0", "vfio-pci").ok());
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].writes_before,
            Writes{"/sys/bus/pci/devices/0000:04:00.0/driver_override := "
                   "vfio-pci"});
  EXPECT_EQ(kernel_.writes().back(),
            "/sys/bus/pci/drivers_probe := 0000:04:00.0");
}

TEST_F(BinderTest, AFailingPrepareHookRollsBackToTheOriginalDriver) {
  const auto before = kernel_.Snapshot();
  Binder binder(
      kernel_.sysfs(), kernel_, usage_, [](Bus, const std::string& device) {
        return absl::FailedPreconditionError(
            absl::StrCat("plugin acme: preparing the host for device ", device,
                         " failed: no devlink port for VF 1"));
      });
  absl::StatusOr<BindRecord> r = binder.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  for (const char* word :
       {"pci device 0000:03:00.1: bind to vfio-pci failed: before the probe: "
        "plugin acme: preparing the host for device 0000:03:00.1 failed: no "
        "devlink port for VF 1; rolled back",
        "driver_override restored to (null)", "re-probed",
        "the device is on mlx5_core with driver_override (null)"}) {
    EXPECT_TRUE(absl::StrContains(r.status().message(), word))
        << word << ": " << r.status();
  }
  // Never probed for vfio-pci: the rollback restores the override and
  // re-probes for mlx5_core.
  EXPECT_EQ(kernel_.writes(), (Writes{OverrideTo("vfio-pci"), Unbind(),
                                      OverrideTo("\\n"), Probe()}));
  EXPECT_EQ(kernel_.Snapshot(), before);
  EXPECT_EQ(At(), (Binding{"mlx5_core", std::nullopt}));
}

TEST_F(BinderTest, ThePrepareHookIsNotCalledForADeviceOnTheDriverAlready) {
  AddPci("0000:05:00.0", 0x15b3, 0x101e, 14, "vfio-pci");
  int calls = 0;
  Binder binder(kernel_.sysfs(), kernel_, usage_, [&](Bus, const std::string&) {
    ++calls;
    return absl::OkStatus();
  });
  absl::StatusOr<BindRecord> r =
      binder.Bind(Bus::kPci, "0000:05:00.0", "vfio_pci");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->changed);
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(BinderTest, AMalformedAddressIsRefused) {
  for (const char* bad : {"0000:03:00", "../../../etc", "0000:03:00.1/..",
                          "0000:03:00.1\n", ""}) {
    absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, bad, "vfio-pci");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(binder_.Bind(Bus::kPci, kVf, "vfio/pci").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(BinderTest, ADeviceThatDoesNotExistIsNotFound) {
  absl::StatusOr<BindRecord> r =
      binder_.Bind(Bus::kPci, "0000:09:00.0", "vfio-pci");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(
      absl::StrContains(r.status().message(),
                        kernel_.root() + "/sys/bus/pci/devices/0000:09:00.0"))
      << r.status();
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(BinderTest, UnbindReturnsTheDeviceAndLeavesNoTrace) {
  const auto before = kernel_.Snapshot();
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_TRUE(r.ok()) << r.status();
  kernel_.ClearWrites();
  usage_.asked.clear();
  ASSERT_TRUE(binder_.Unbind(*r).ok());
  EXPECT_EQ(kernel_.writes(), (Writes{OverrideTo("\\n"), Unbind(), Probe()}));
  // On vfio-pci: asked whether it is held before unbinding it.
  EXPECT_EQ(usage_.asked, std::vector<int>{12});
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(BinderTest, UnbindOfADeviceInUseIsRefused) {
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_TRUE(r.ok()) << r.status();
  kernel_.ClearWrites();
  usage_.busy = {12};
  absl::Status s = binder_.Unbind(*r);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "in use")) << s;
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(BinderTest, UnbindRefusesADeviceSomeoneElseMoved) {
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(
      kernel_.sysfs().Write(absl::StrCat(kDir, "/driver/unbind"), kVf).ok());
  kernel_.BindNow("pci", kVf, "e1000e");  // another driver than either
  kernel_.ClearWrites();
  absl::Status s = binder_.Unbind(*r);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "someone else moved it")) << s;
  EXPECT_TRUE(kernel_.writes().empty());
}

// A bind cut short by a crash after its driver_override write: the device is
// still on its original driver, with the override naming migd's driver.
TEST_F(BinderTest, UnbindFinishesABindCutShortAfterTheOverride) {
  const auto before = kernel_.Snapshot();
  const BindRecord record{Bus::kPci, kVf, "vfio-pci",
                          Binding{"mlx5_core", std::nullopt}, true};
  ASSERT_TRUE(kernel_.sysfs()
                  .Write(absl::StrCat(kDir, "/driver_override"), "vfio-pci")
                  .ok());
  kernel_.ClearWrites();
  ASSERT_TRUE(binder_.Unbind(record).ok());
  EXPECT_EQ(kernel_.writes(), (Writes{OverrideTo("\\n"), Probe()}));
  EXPECT_EQ(kernel_.Snapshot(), before);
}

// ... and after its unbind: the device is on no driver.
TEST_F(BinderTest, UnbindFinishesABindCutShortAfterTheUnbind) {
  const auto before = kernel_.Snapshot();
  const BindRecord record{Bus::kPci, kVf, "vfio-pci",
                          Binding{"mlx5_core", std::nullopt}, true};
  ASSERT_TRUE(kernel_.sysfs()
                  .Write(absl::StrCat(kDir, "/driver_override"), "vfio-pci")
                  .ok());
  ASSERT_TRUE(
      kernel_.sysfs().Write(absl::StrCat(kDir, "/driver/unbind"), kVf).ok());
  kernel_.ClearWrites();
  ASSERT_TRUE(binder_.Unbind(record).ok());
  EXPECT_EQ(kernel_.writes(), (Writes{OverrideTo("\\n"), Probe()}));
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(BinderTest, AFailedUnbindRollsBackOntoTheVfioDriver) {
  absl::StatusOr<BindRecord> r = binder_.Bind(Bus::kPci, kVf, "vfio-pci");
  ASSERT_TRUE(r.ok()) << r.status();
  const auto bound = kernel_.Snapshot();
  kernel_.ClearWrites();
  kernel_.FailProbe("mlx5_core", ENOMEM);
  absl::Status s = binder_.Unbind(*r);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "rolled back")) << s;
  EXPECT_EQ(kernel_.writes(), (Writes{OverrideTo("\\n"), Unbind(), Probe(),
                                      OverrideTo("vfio-pci"), Probe()}));
  EXPECT_EQ(kernel_.Snapshot(), bound);
}

TEST_F(BinderTest, UnbindToNoDriverClearsTheOverrideAndUnbinds) {
  ASSERT_TRUE(binder_.Bind(Bus::kPci, kVf, "vfio-pci").ok());
  kernel_.ClearWrites();
  ASSERT_TRUE(binder_.UnbindToNoDriver(Bus::kPci, kVf).ok());
  EXPECT_EQ(kernel_.writes(), (Writes{OverrideTo("\\n"), Unbind()}));
  EXPECT_EQ(At(), Binding{});
  kernel_.ClearWrites();
  EXPECT_TRUE(binder_.UnbindToNoDriver(Bus::kPci, kVf).ok());
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(BinderTest, NeverWritesNewId) {
  ASSERT_TRUE(binder_.Bind(Bus::kPci, kVf, "mlx5_vfio_pci").ok());
  for (const std::string& w : kernel_.writes()) {
    EXPECT_FALSE(absl::StrContains(w, "new_id")) << w;
  }
}

TEST_F(BinderTest, PlatformDevicesBindTheSameWay) {
  kernel_.AddDriver(
      {"platform", "vfio-platform", "vfio_platform", {}, "vfio_platform_base"});
  kernel_.AddDriver(
      {"platform", "dwmac", "stmmac_platform", {"of:Nethernet"}, ""});
  kernel_.AddPlatformDevice("fff51000.ethernet", "of:Nethernet", 3, "dwmac");
  const auto before = kernel_.Snapshot();
  absl::StatusOr<BindRecord> r =
      binder_.Bind(Bus::kPlatform, "fff51000.ethernet", "vfio-platform");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->driver, "vfio-platform");
  const std::string dir = "/sys/bus/platform/devices/fff51000.ethernet";
  EXPECT_EQ(kernel_.writes(),
            (Writes{dir + "/driver_override := vfio-platform",
                    dir + "/driver/unbind := fff51000.ethernet",
                    "/sys/bus/platform/drivers_probe := fff51000.ethernet"}));
  absl::StatusOr<Binding> at =
      binder_.Current(Bus::kPlatform, "fff51000.ethernet");
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, (Binding{"vfio-platform", "vfio-platform"}));
  ASSERT_TRUE(binder_.Unbind(*r).ok());
  EXPECT_EQ(kernel_.Snapshot(), before);
  EXPECT_EQ(
      binder_.Bind(Bus::kPlatform, "../fff51000.ethernet", "vfio-platform")
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace migd::host
