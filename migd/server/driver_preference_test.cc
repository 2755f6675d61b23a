// migd/server/driver_preference_test.cc
//
// The plugin's driver preference as the host's driver choice gets it: a
// real plugin (//migd/plugins:preferring.so, built from the loader's test
// plugin: it claims PCI devices of vendor 0x1ac3 and prefers acme_vfio_pci
// for them) loaded into a registry, asked about devices of a fake sysfs
// tree. And the plugin's prepare_host as HostService's binds call it:
// //migd/plugins:preparing.so (the same test plugin: it claims vendor
// 0x1ac3, records each call in the file $MIGD_TEST_PREPARE_LOG names, and
// fails for device 0x0bad) behind a HostServiceImpl on a fake tree.

#include "migd/server/driver_preference.h"

#include <errno.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "migd/host/allocation_store.h"
#include "migd/host/binding_store.h"
#include "migd/host/fake_kernel.h"
#include "migd/host/modalias.h"
#include "migd/plugins/registry.h"
#include "migd/server/host_service.h"

namespace migd::server {
namespace {

using host::testing::FakeDriver;
using host::testing::FakeGroupUsage;
using host::testing::FakeKernel;
using host::testing::FakePciDevice;

std::string& PluginPath() {
  static auto* path = new std::string();
  return *path;
}

std::string& PreparingPluginPath() {
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

constexpr char kRefused[] = "0000:5e:00.3";  // 1ac3:0bad: prepare fails

std::string MakeTempDir() {
  const char* base = getenv("TEST_TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr ? base : "/tmp", "/prepareXXXXXX");
  EXPECT_NE(mkdtemp(pattern.data()), nullptr) << strerror(errno);
  return pattern;
}

// HostServiceImpl with the preparing plugin's prepare_host wired as the
// agent wires it, on a fake tree: two devices of the plugin's vendor on
// their host driver, one nobody claims, each alone in its IOMMU group.
class PluginPrepareHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.Load(PreparingPluginPath()).ok())
        << PreparingPluginPath();
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver(
        {"pci", "acme_core", "acme_core", {"1ac3:0101", "1ac3:0bad"}, ""});
    kernel_.AddDriver({"pci", "virtio-pci", "virtio_pci", {"1af4:1041"}, ""});
    kernel_.WriteFile("/lib/modules/test/modules.alias",
                      "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n");
    int group = 70;
    for (const auto& [bdf, vendor, device, driver] :
         std::vector<std::tuple<std::string, uint16_t, uint16_t, std::string>>{
             {kAcme, 0x1ac3, 0x0101, "acme_core"},
             {kRefused, 0x1ac3, 0x0bad, "acme_core"},
             {kVirtio, 0x1af4, 0x1041, "virtio-pci"}}) {
      FakePciDevice d;
      d.bdf = bdf;
      d.vendor = vendor;
      d.device = device;
      d.subsystem_vendor = vendor;
      d.group = group++;
      d.driver = driver;
      kernel_.AddPciDevice(d);
    }
    state_dir_ = MakeTempDir();
    log_ = state_dir_ + "/prepared";
    ASSERT_EQ(setenv("MIGD_TEST_PREPARE_LOG", log_.c_str(), 1), 0);
    absl::StatusOr<std::unique_ptr<host::BindingStore>> bindings =
        host::BindingStore::Open(state_dir_);
    ASSERT_TRUE(bindings.ok()) << bindings.status();
    bindings_ = *std::move(bindings);
    absl::StatusOr<std::unique_ptr<host::AllocationStore>> allocations =
        host::AllocationStore::Open(state_dir_);
    ASSERT_TRUE(allocations.ok()) << allocations.status();
    allocations_ = *std::move(allocations);

    HostServiceOptions o;
    o.sysfs_root = kernel_.root();
    o.writer = &kernel_;
    o.modules = &kernel_;
    o.usage = &usage_;
    o.bindings = bindings_.get();
    o.allocations = allocations_.get();
    o.kernel_release = "test";
    o.device_names = {{kAcme, "acme0"}};
    o.prepare_host =
        PluginPrepareHost(&registry_, kernel_.root(), o.device_names);
    service_ = std::make_unique<HostServiceImpl>(std::move(o));
  }

  void TearDown() override {
    unsetenv("MIGD_TEST_PREPARE_LOG");
    service_.reset();
    std::error_code ec;
    std::filesystem::remove_all(state_dir_, ec);
  }

  // The plugin's record of its calls, a line each.
  std::vector<std::string> Prepared() const {
    std::vector<std::string> lines;
    std::ifstream in(log_);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  FakeKernel kernel_;
  FakeGroupUsage usage_;
  plugins::Registry registry_;
  std::string state_dir_;
  std::string log_;
  std::unique_ptr<host::BindingStore> bindings_;
  std::unique_ptr<host::AllocationStore> allocations_;
  std::unique_ptr<HostServiceImpl> service_;
};

TEST_F(PluginPrepareHostTest, BindAsksTheClaimingPluginBetweenUnbindAndProbe) {
  absl::StatusOr<v1::HostDevice> r = service_->Bind(kAcme, "vfio-pci");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->driver(), "vfio-pci");
  // Called once, by the agent's name of the device, when it was on no
  // driver with driver_override already naming the VFIO driver: after the
  // unbind, before the probe.
  EXPECT_EQ(Prepared(),
            std::vector<std::string>{
                "acme0 0000:5e:00.1 driver=- driver_override=vfio-pci"});
  const std::string dir = absl::StrCat("/sys/bus/pci/devices/", kAcme);
  EXPECT_EQ(kernel_.writes(),
            (std::vector<std::string>{
                absl::StrCat(dir, "/driver_override := vfio-pci"),
                absl::StrCat(dir, "/driver/unbind := ", kAcme),
                absl::StrCat("/sys/bus/pci/drivers_probe := ", kAcme)}));

  // On the driver already: nothing moves, nothing is asked.
  r = service_->Bind(kAcme, "vfio_pci");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(absl::StartsWith(r->outcome(), "nothing to do")) << r->outcome();
  EXPECT_EQ(Prepared().size(), 1u);
}

TEST_F(PluginPrepareHostTest, AFailingPrepareLeavesTheDeviceOnItsDriver) {
  const auto before = kernel_.Snapshot();
  absl::StatusOr<v1::HostDevice> r = service_->Bind(kRefused, "vfio-pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition)
      << r.status();
  EXPECT_EQ(base::ReasonOf(r.status()), v1::ERROR_REASON_DEVICE_ERROR)
      << r.status();
  for (const char* word :
       {"pci device 0000:5e:00.3: bind to vfio-pci failed: before the probe",
        "plugin preparing: preparing the host for device 0000:5e:00.3 failed",
        "its function has no port to set", "rolled back",
        "the device is on acme_core with driver_override (null)"}) {
    EXPECT_TRUE(absl::StrContains(r.status().message(), word))
        << word << ": " << r.status();
  }
  EXPECT_EQ(kernel_.Snapshot(), before);
  EXPECT_FALSE(bindings_->Find(host::Bus::kPci, kRefused).has_value());
  EXPECT_TRUE(Prepared().empty());
}

TEST_F(PluginPrepareHostTest, ADeviceNoPluginClaimsIsBoundWithoutAsking) {
  absl::StatusOr<v1::HostDevice> r = service_->Bind(kVirtio, "vfio-pci");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->driver(), "vfio-pci");
  EXPECT_TRUE(Prepared().empty());
}

TEST_F(PluginPrepareHostTest, AnAllocationAsksTheClaimingPluginToo) {
  v1::AllocateDevicesRequest req;
  req.set_owner("dom-1");
  v1::DeviceRequest* d = req.add_devices();
  d->set_key("a");
  d->mutable_device_class()->set_pci_ids("1ac3:0101");
  absl::StatusOr<v1::AllocateDevicesResponse> made = service_->Allocate(req);
  ASSERT_TRUE(made.ok()) << made.status();
  ASSERT_EQ(made->devices_size(), 1);
  EXPECT_EQ(made->devices(0).address(), kAcme);
  EXPECT_EQ(made->devices(0).driver(), "vfio-pci");  // modules.alias's
  EXPECT_EQ(Prepared(),
            std::vector<std::string>{
                "acme0 0000:5e:00.1 driver=- driver_override=vfio-pci"});

  const auto before = kernel_.Snapshot();
  req.set_owner("dom-2");
  req.mutable_devices(0)->mutable_device_class()->set_pci_ids("1ac3:0bad");
  absl::StatusOr<v1::AllocateDevicesResponse> refused = service_->Allocate(req);
  ASSERT_FALSE(refused.ok());
  for (const char* word :
       {kRefused, "plugin preparing", "its function has no port to set"}) {
    EXPECT_TRUE(absl::StrContains(refused.status().message(), word))
        << word << ": " << refused.status();
  }
  EXPECT_EQ(kernel_.Snapshot(), before);
  EXPECT_TRUE(service_->Allocations("dom-2").devices().empty());
}

}  // namespace
}  // namespace migd::server

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--preferring=")) {
      migd::server::PluginPath() = std::string(arg);
    } else if (absl::ConsumePrefix(&arg, "--preparing=")) {
      migd::server::PreparingPluginPath() = std::string(arg);
    }
  }
  return RUN_ALL_TESTS();
}
