// migd/host/allocator_test.cc
//
// The allocator on a fake sysfs tree whose writes the fake kernel answers
// (fake_kernel.h), moving devices through RecordedHostActions with real
// binding and allocation stores in a state directory of the test's own, so
// that a "restart" is a new allocator over the same directory.

#include "migd/host/allocator.h"

#include <errno.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "migd/host/allocation_store.h"
#include "migd/host/binding_store.h"
#include "migd/host/fake_kernel.h"
#include "migd/host/mdev.h"
#include "migd/host/sysfs.h"

namespace migd::host {
namespace {

using testing::FakeGroupUsage;
using testing::FakeKernel;
using testing::FakePciDevice;

// Four mlx5 VFs (15b3:101e) in groups of their own; 01.4 has another
// subsystem device. 01.2 is on vfio-pci already.
constexpr char kVf1[] = "0000:5e:01.1";
constexpr char kVf2[] = "0000:5e:01.2";
constexpr char kVf3[] = "0000:5e:01.3";
constexpr char kVf4[] = "0000:5e:01.4";

DeviceRequest Pci(const std::string& key, const std::string& ids,
                  const std::string& driver = "") {
  DeviceRequest r;
  r.key = key;
  r.device_class.pci_ids = ids;
  r.driver = driver;
  return r;
}

DeviceRequest Mdev(const std::string& key, const std::string& type,
                   const std::string& parent = "") {
  DeviceRequest r;
  r.key = key;
  r.device_class.mdev_type = type;
  r.device_class.mdev_parent = parent;
  return r;
}

class AllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver({"pci", "mlx5_core", "mlx5_core", {"15b3:101e"}, ""});
    kernel_.WriteFile("/lib/modules/test/modules.alias",
                      "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n");
    AddPci(kVf1, 0x0080, 11, "mlx5_core");
    AddPci(kVf2, 0x0080, 12, "vfio-pci");
    AddPci(kVf3, 0x0080, 13, "mlx5_core");
    AddPci(kVf4, 0x0081, 14, "mlx5_core");
    kernel_.AddMdevParent("/sys/devices/virtual/mbochs/mbochs-a", "mbochs-a",
                          {{"mbochs-small", "small", 0, "vfio-pci"}});
    kernel_.AddMdevParent("/sys/devices/virtual/mbochs/mbochs-b", "mbochs-b",
                          {{"mbochs-small", "small", 2, "vfio-pci"}});
    const char* base = getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(base != nullptr ? base : "/tmp", "/allocatorXXXXXX");
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
    Start();
  }

  void TearDown() override {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void AddPci(const std::string& bdf, uint16_t subsystem_device, int group,
              const std::string& driver) {
    FakePciDevice d;
    d.bdf = bdf;
    d.subsystem_device = subsystem_device;
    d.group = group;
    d.driver = driver;
    kernel_.AddPciDevice(d);
  }

  // An allocator over the state directory, reading what an earlier one
  // recorded.
  void Start() {
    absl::StatusOr<std::unique_ptr<BindingStore>> bindings =
        BindingStore::Open(dir_);
    ASSERT_TRUE(bindings.ok()) << bindings.status();
    bindings_ = *std::move(bindings);
    absl::StatusOr<std::unique_ptr<AllocationStore>> store =
        AllocationStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    actions_ = std::make_unique<RecordedHostActions>(
        kernel_.sysfs(), kernel_, usage_, *bindings_, "test");
    AllocatorOptions o;
    o.claimed_by = [this](const std::string& bdf) {
      return bdf == claimed_ ? std::string("job-7") : std::string();
    };
    o.bindings = bindings_.get();
    o.kernel_release = "test";
    allocator_ = std::make_unique<Allocator>(Sysfs(kernel_.root()), usage_,
                                             *actions_, *store_, o);
  }

  void Stop() {
    allocator_.reset();
    actions_.reset();
    store_.reset();
    bindings_.reset();
  }

  std::string DriverOf(const std::string& bdf) {
    absl::StatusOr<std::string> d =
        kernel_.sysfs().LinkName("/sys/bus/pci/devices/" + bdf + "/driver");
    return d.ok() ? *d : "(none)";
  }

  FakeKernel kernel_;
  FakeGroupUsage usage_;
  std::string claimed_;
  std::string dir_;
  std::unique_ptr<BindingStore> bindings_;
  std::unique_ptr<AllocationStore> store_;
  std::unique_ptr<RecordedHostActions> actions_;
  std::unique_ptr<Allocator> allocator_;
};

TEST_F(AllocatorTest, PrefersADeviceOnTheChosenDriverThenTheLowestAddress) {
  absl::StatusOr<std::vector<Allocation>> first =
      allocator_->Allocate("dom-1", {Pci("a", "15b3:101e")});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 1u);
  EXPECT_EQ((*first)[0].address, kVf2);  // on vfio-pci already
  EXPECT_FALSE((*first)[0].bound);
  EXPECT_TRUE(kernel_.writes().empty());

  absl::StatusOr<std::vector<Allocation>> second =
      allocator_->Allocate("dom-1", {Pci("b", "15B3:101E")});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)[0].address, kVf1);  // then the lowest address
  EXPECT_EQ((*second)[0].driver, "vfio-pci");
  EXPECT_TRUE((*second)[0].bound);
  EXPECT_EQ(DriverOf(kVf1), "vfio-pci");
  // Bound as BindDevice binds: a record of where it came from.
  std::optional<BindRecord> record = bindings_->Find(Bus::kPci, kVf1);
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->original.driver, "mlx5_core");
}

TEST_F(AllocatorTest, SubsystemIdsNarrowTheClass) {
  absl::StatusOr<std::vector<Allocation>> got = allocator_->Allocate(
      "dom-1", {Pci("a", "15b3:101e:15b3:0081", "vfio_pci")});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].address, kVf4);
  // Without them, every VF matches: four of them.
  got = allocator_->Allocate(
      "dom-2",
      {Pci("a", "15b3:101e"), Pci("b", "15b3:101e"), Pci("c", "15b3:101e")});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].address, kVf2);
  EXPECT_EQ((*got)[1].address, kVf1);
  EXPECT_EQ((*got)[2].address, kVf3);
}

TEST_F(AllocatorTest, NoneFreeNamesTheCandidatesAndTheirHolders) {
  ASSERT_TRUE(allocator_
                  ->Allocate("dom-x", {Pci("a", "15b3:101e:15b3:0080"),
                                       Pci("b", "15b3:101e:15b3:0080")})
                  .ok());
  claimed_ = kVf3;
  absl::StatusOr<std::vector<Allocation>> got = allocator_->Allocate(
      "dom-y", {Pci("0000:3b:02.0", "15b3:101e:15b3:0080")});
  ASSERT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition)
      << got.status();
  EXPECT_EQ(AllocatorCause(got.status()), "busy");
  const std::string msg(got.status().message());
  for (const char* w :
       {"device request 0 (key 0000:3b:02.0, class 15b3:101e:15b3:0080)",
        "no free device of class 15b3:101e:15b3:0080: 3 candidates, all held",
        "0000:5e:01.1 by dom-x (key b)", "0000:5e:01.2 by dom-x (key a)",
        "0000:5e:01.3 by job job-7"}) {
    EXPECT_TRUE(absl::StrContains(msg, w))
        << "missing \"" << w << "\": " << msg;
  }
}

TEST_F(AllocatorTest, ADeviceInUseOrInAGroupNotViableIsNotFree) {
  usage_.busy = {12};  // a VMM holds 01.2's group
  kernel_.AddDriver({"pci", "e1000e", "e1000e", {"8086:10d3"}, ""});
  FakePciDevice nic;
  nic.bdf = "0000:5e:02.0";
  nic.vendor = 0x8086;
  nic.device = 0x10d3;
  nic.group = 11;  // shares 01.1's group, on a host driver
  nic.driver = "e1000e";
  kernel_.AddPciDevice(nic);
  absl::StatusOr<std::vector<Allocation>> got =
      allocator_->Allocate("dom-1", {Pci("a", "15b3:101e:15b3:0080")});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].address, kVf3);
  got = allocator_->Allocate("dom-2", {Pci("a", "15b3:101e:15b3:0080")});
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(absl::StrContains(got.status().message(),
                                "0000:5e:01.1 in IOMMU group 11, not viable"))
      << got.status();
  EXPECT_TRUE(absl::StrContains(
      got.status().message(),
      "0000:5e:01.2 in use (IOMMU group 12 held by another process)"))
      << got.status();
}

TEST_F(AllocatorTest, ANamedVariantDriverTakesOnlyDevicesItsAliasesMatch) {
  // edu_vfio_pci drives QEMU's edu device (1234:11e8), not an mlx5 VF.
  kernel_.AddLoadableModule(
      {"pci", "edu_vfio_pci", "edu_vfio_pci", {}, "vfio_pci_core"});
  kernel_.WriteFile("/lib/modules/test/modules.alias",
                    "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
                    "alias vfio_pci:v00001234d000011E8sv*sd*bc*sc*i* "
                    "edu_vfio_pci\n");
  absl::StatusOr<std::vector<Allocation>> got = allocator_->Allocate(
      "dom-x", {Pci("a", "15b3:101e:15b3:0080", "edu_vfio_pci")});
  ASSERT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition)
      << got.status();
  EXPECT_EQ(AllocatorCause(got.status()), "") << "not busy: " << got.status();
  const std::string msg(got.status().message());
  for (const char* w :
       {"no device of class 15b3:101e:15b3:0080 is for driver edu_vfio_pci",
        "vfio_pci:v00001234d000011E8sv*sd*bc*sc*i*", "ids 15b3:101e", kVf1,
        kVf3}) {
    EXPECT_TRUE(absl::StrContains(msg, w))
        << "missing \"" << w << "\": " << msg;
  }
  EXPECT_TRUE(allocator_->List().empty());
  EXPECT_EQ(DriverOf(kVf1), "mlx5_core");
  EXPECT_TRUE(kernel_.writes().empty());

  // RecordedHostActions refuses such a bind too, and moves nothing.
  absl::StatusOr<HostActions::Bound> bound =
      actions_->BindPci(kVf1, "edu_vfio_pci");
  EXPECT_EQ(bound.status().code(), absl::StatusCode::kFailedPrecondition)
      << bound.status();
  EXPECT_EQ(DriverOf(kVf1), "mlx5_core");
  EXPECT_FALSE(bindings_->Find(Bus::kPci, kVf1).has_value());
}

TEST_F(AllocatorTest, NoDeviceOfTheClassIsNotFound) {
  absl::StatusOr<std::vector<Allocation>> got =
      allocator_->Allocate("dom-1", {Pci("a", "8086:10d3")});
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << got.status();
  EXPECT_TRUE(absl::StrContains(got.status().message(),
                                "no PCI device of class 8086:10d3"));
}

TEST_F(AllocatorTest, MalformedRequestsAreInvalid) {
  for (const auto& [owner, request] :
       std::vector<std::pair<std::string, DeviceRequest>>{
           {"", Pci("a", "15b3:101e")},
           {"dom", Pci("a b", "15b3:101e")},
           {"dom", Pci("a", "15b3-101e")},
           {"dom", Pci("a", "15b3:101e:15b3")},
           {"dom", Pci("a", "15b3:101e", "no such")},
           {"dom", DeviceRequest{"a", {}, ""}},
           {"dom", DeviceRequest{"a", {"15b3:101e", "mbochs-small", ""}, ""}},
       }) {
    absl::StatusOr<std::vector<Allocation>> got =
        allocator_->Allocate(owner, {request});
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument)
        << owner << " " << request.key << ": " << got.status();
  }
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(AllocatorTest, ASecondDeviceFailingUndoesTheFirst) {
  absl::StatusOr<std::vector<Allocation>> got = allocator_->Allocate(
      "dom-1", {Pci("a", "15b3:101e:15b3:0081"), Pci("b", "8086:10d3")});
  ASSERT_EQ(got.status().code(), absl::StatusCode::kNotFound) << got.status();
  const std::string msg(got.status().message());
  EXPECT_TRUE(absl::StrContains(
      msg, "device request 1 (key b, class 8086:10d3) failed"))
      << msg;
  EXPECT_TRUE(absl::StrContains(msg, "a -> 0000:5e:01.4 released")) << msg;
  EXPECT_EQ(DriverOf(kVf4), "mlx5_core");
  EXPECT_TRUE(allocator_->List().empty());
  EXPECT_TRUE(bindings_->List().empty());
}

TEST_F(AllocatorTest, AFailedBindUndoesTheMdevCreatedBeforeIt) {
  kernel_.FailProbe("vfio-pci", EIO);
  absl::StatusOr<std::vector<Allocation>> got = allocator_->Allocate(
      "dom-1", {Mdev("m", "mbochs-small"), Pci("p", "15b3:101e:15b3:0081")});
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(
      absl::StrContains(got.status().message(), "device request 1 (key p"))
      << got.status();
  absl::StatusOr<std::vector<MdevInstance>> left =
      ListMdevInstances(kernel_.sysfs());
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());
  EXPECT_EQ(DriverOf(kVf4), "mlx5_core");
  EXPECT_TRUE(allocator_->List().empty());
}

TEST_F(AllocatorTest, AllocatingAgainReturnsTheSameDevices) {
  const std::vector<DeviceRequest> req = {Pci("a", "15b3:101e:15b3:0081"),
                                          Mdev("m", "mbochs-small")};
  absl::StatusOr<std::vector<Allocation>> first =
      allocator_->Allocate("dom-1", req);
  ASSERT_TRUE(first.ok()) << first.status();
  kernel_.ClearWrites();
  absl::StatusOr<std::vector<Allocation>> again =
      allocator_->Allocate("dom-1", req);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *first);
  EXPECT_TRUE(kernel_.writes().empty());
  // A key held for another class is refused, not silently changed.
  absl::StatusOr<std::vector<Allocation>> other =
      allocator_->Allocate("dom-1", {Pci("m", "15b3:101e")});
  EXPECT_EQ(AllocatorCause(other.status()), "busy") << other.status();
}

TEST_F(AllocatorTest, ReleaseAfterARestartReturnsEveryDevice) {
  absl::StatusOr<std::vector<Allocation>> got = allocator_->Allocate(
      "dom-1", {Pci("a", "15b3:101e:15b3:0081"), Pci("b", "15b3:101e"),
                Mdev("m", "mbochs-small")});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(DriverOf(kVf4), "vfio-pci");
  Stop();  // the agent goes away; both files stay
  Start();
  EXPECT_EQ(allocator_->List("dom-1"), *got);
  absl::StatusOr<std::vector<Allocation>> released =
      allocator_->Release("dom-1");
  ASSERT_TRUE(released.ok()) << released.status();
  ASSERT_EQ(released->size(), 3u);
  EXPECT_EQ((*released)[0].key, "m");  // in reverse
  EXPECT_EQ(DriverOf(kVf4), "mlx5_core");
  EXPECT_EQ(DriverOf(kVf2), "vfio-pci");  // it was there before: stays
  absl::StatusOr<std::vector<MdevInstance>> left =
      ListMdevInstances(kernel_.sysfs());
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());
  EXPECT_TRUE(bindings_->List().empty());
  Stop();
  Start();
  EXPECT_TRUE(allocator_->List().empty());
  // Nothing held: nothing to do.
  released = allocator_->Release("dom-1");
  ASSERT_TRUE(released.ok());
  EXPECT_TRUE(released->empty());
}

TEST_F(AllocatorTest, AnMdevGoesToTheFirstParentWithAnInstanceLeft) {
  absl::StatusOr<std::vector<Allocation>> got =
      allocator_->Allocate("dom-1", {Mdev("m", "mbochs-small")});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].mdev_parent, "mbochs-b");  // mbochs-a has none left
  EXPECT_EQ((*got)[0].mdev_type, "mbochs-small");
  EXPECT_TRUE(
      kernel_.sysfs().Exists("/sys/bus/mdev/devices/" + (*got)[0].mdev_uuid));
}

TEST_F(AllocatorTest, AnMdevOnANamedParent) {
  absl::StatusOr<std::vector<Allocation>> got =
      allocator_->Allocate("dom-1", {Mdev("m1", "mbochs-small", "mbochs-b"),
                                     Mdev("m2", "mbochs-small", "mbochs-b")});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_NE((*got)[0].mdev_uuid, (*got)[1].mdev_uuid);
  got = allocator_->Allocate("dom-2", {Mdev("m", "mbochs-small", "mbochs-b")});
  ASSERT_EQ(AllocatorCause(got.status()), "busy") << got.status();
  EXPECT_TRUE(absl::StrContains(got.status().message(), "by dom-1 (key m1)"))
      << got.status();
  got = allocator_->Allocate("dom-2", {Mdev("m", "mbochs-huge", "mbochs-b")});
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "mbochs-small"))
      << got.status();
}

TEST_F(AllocatorTest, TwoCallsRacingForTheLastFreeDeviceOneGetsIt) {
  // One device of the class: 01.4.
  std::atomic<int> won{0}, busy{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<std::vector<Allocation>> got = allocator_->Allocate(
          absl::StrCat("dom-", i), {Pci("a", "15b3:101e:15b3:0081")});
      if (got.ok()) {
        ++won;
      } else if (AllocatorCause(got.status()) == "busy") {
        ++busy;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(busy.load(), 7);
  EXPECT_EQ(allocator_->List().size(), 1u);
}

}  // namespace
}  // namespace migd::host
