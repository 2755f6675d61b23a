// migd/server/prepare_by_class_test.cc
//
// PrepareIncoming naming a destination_class, in process over gRPC: picking
// one of the agent's configured devices by kind, and (b) allocating a PCI
// device, or creating an mdev instance, through a real HostServiceImpl on a
// fake sysfs tree (migd/host/fake_kernel.h). The open of the allocated VFIO
// device is the one step a fake tree cannot answer: open_vfio here hands
// back an emulated device of that name (what it stands in for, a real open,
// is the VM tier's). Checked: the pick and its name in the Migration record,
// host_address, the bind or the new instance, and that the device is
// closed, removed and released (the instance removed) when the job ends or
// the prepare fails.

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/device/emulated_device.h"
#include "migd/host/allocation_store.h"
#include "migd/host/binding_store.h"
#include "migd/host/fake_kernel.h"
#include "migd/host/mdev.h"
#include "migd/host/names.h"
#include "migd/migration/device_registry.h"
#include "migd/migration/job_table.h"
#include "migd/server/host_service.h"
#include "migd/server/migration_service.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace migd::server {
namespace {

using host::testing::FakeGroupUsage;
using host::testing::FakeKernel;
using host::testing::FakePciDevice;

constexpr char kVf[] = "0000:5e:01.1";  // 15b3:101e on mlx5_core, group 11
constexpr char kMdevParent[] = "/sys/devices/virtual/mbochs/mbochs";

std::unique_ptr<device::Device> Emulated(const std::string& name) {
  device::EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = 4096;
  absl::StatusOr<std::unique_ptr<device::EmulatedDevice>> d =
      device::EmulatedDevice::Create(c);
  EXPECT_TRUE(d.ok()) << d.status();
  return *std::move(d);
}

class PrepareByClassTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver({"pci", "mlx5_core", "mlx5_core", {"15b3:101e"}, ""});
    kernel_.WriteFile("/lib/modules/test/modules.alias",
                      "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n");
    FakePciDevice vf;
    vf.bdf = kVf;
    vf.group = 11;
    vf.driver = "mlx5_core";
    kernel_.AddPciDevice(vf);
    kernel_.AddMdevParent(kMdevParent, "mbochs",
                          {{"mbochs-medium", "medium", 1, "vfio-pci"},
                           {"mbochs-small", "small", 2, "vfio-pci"}});

    const char* base = getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(base != nullptr ? base : "/tmp", "/byclassXXXXXX");
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
    bindings_ = *host::BindingStore::Open(dir_);
    allocations_ = *host::AllocationStore::Open(dir_);
    HostServiceOptions h;
    h.sysfs_root = kernel_.root();
    h.writer = &kernel_;
    h.modules = &kernel_;
    h.usage = &usage_;
    h.bindings = bindings_.get();
    h.allocations = allocations_.get();
    h.devices = &registry_;
    h.kernel_release = "test";
    // As the agent wires it.
    h.before_release = [this](const std::string& owner) {
      return CloseAllocatedDevices(registry_, owner);
    };
    host_ = std::make_unique<HostServiceImpl>(std::move(h));

    ASSERT_TRUE(registry_.Add(Emulated("dst0")).ok());
    ASSERT_TRUE(registry_.Add(Emulated("dst1")).ok());

    MigrationServiceOptions o;
    o.allocate =
        [this](
            const std::string& job, const std::string& key,
            const v1::DeviceClass& c) -> absl::StatusOr<v1::AllocatedDevice> {
      v1::AllocateDevicesRequest req;
      req.set_owner(job);
      v1::DeviceRequest* d = req.add_devices();
      d->set_key(key);
      *d->mutable_device_class() = c;
      absl::StatusOr<v1::AllocateDevicesResponse> r = host_->Allocate(req);
      if (!r.ok()) return r.status();
      return r->devices(0);
    };
    o.release_allocations = [this](const std::string& job) {
      return host_->Release(job).status();
    };
    o.open_vfio = [this](const std::string& name, const std::string& source)
        -> absl::StatusOr<std::unique_ptr<device::Device>> {
      opened_.push_back(source);
      if (!open_error_.ok()) return open_error_;
      return Emulated(name);
    };
    service_ = std::make_unique<MigrationServiceImpl>(&registry_, &jobs_,
                                                      std::move(o));
    server_ =
        grpc::ServerBuilder().RegisterService(service_.get()).BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::MigrationService::NewStub(
        server_->InProcessChannel(grpc::ChannelArguments()));
  }

  void TearDown() override {
    jobs_.CancelAll();
    stub_.reset();
    server_->Shutdown();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  struct Result {
    grpc::Status status;
    std::string reason;
    v1::PrepareIncomingResponse response;
  };

  Result Prepare(const std::string& job, const v1::DeviceClass& cls,
                 const std::string& destination_device = "") {
    v1::PrepareIncomingRequest req;
    req.set_job_id(job);
    v1::DevicePair* p = req.add_devices();
    p->set_source_device("src0");
    p->set_destination_device(destination_device);
    *p->mutable_destination_class() = cls;
    grpc::ClientContext ctx;
    Result r;
    r.status = stub_->PrepareIncoming(&ctx, req, &r.response);
    const auto& trailers = ctx.GetServerTrailingMetadata();
    if (auto it = trailers.find("migd-error-reason"); it != trailers.end()) {
      r.reason = std::string(it->second.data(), it->second.size());
    }
    return r;
  }

  void Cancel(const std::string& job) {
    v1::CancelMigrationRequest req;
    req.set_job_id(job);
    grpc::ClientContext ctx;
    v1::Migration m;
    ASSERT_TRUE(stub_->CancelMigration(&ctx, req, &m).ok());
  }

  // Waits (with a deadline) until the registry no longer has `name`.
  bool WaitGone(const std::string& name) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (registry_.Find(name) != nullptr) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }

  // The mdev instances on the parent, as "uuid type".
  std::vector<std::string> Instances() {
    std::vector<std::string> out;
    absl::StatusOr<std::vector<host::MdevInstance>> made =
        host::ListMdevInstances(kernel_.sysfs(), "mbochs");
    EXPECT_TRUE(made.ok()) << made.status();
    if (!made.ok()) return out;
    for (const host::MdevInstance& m : *made) {
      out.push_back(absl::StrCat(m.uuid, " ", m.type));
    }
    return out;
  }

  std::string DriverOf(const std::string& bdf) {
    absl::StatusOr<std::string> d =
        kernel_.sysfs().LinkName("/sys/bus/pci/devices/" + bdf + "/driver");
    return d.ok() ? *d : "(none)";
  }

  FakeKernel kernel_;
  FakeGroupUsage usage_;
  std::string dir_;
  std::unique_ptr<host::BindingStore> bindings_;
  std::unique_ptr<host::AllocationStore> allocations_;
  std::unique_ptr<HostServiceImpl> host_;
  migration::DeviceRegistry registry_;
  migration::JobTable jobs_;
  std::vector<std::string> opened_;
  absl::Status open_error_;
  std::unique_ptr<MigrationServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::MigrationService::Stub> stub_;
};

v1::DeviceClass Kind(const std::string& kind) {
  v1::DeviceClass c;
  c.set_agent_kind(kind);
  return c;
}

v1::DeviceClass Ids(const std::string& ids) {
  v1::DeviceClass c;
  c.set_pci_ids(ids);
  return c;
}

v1::DeviceClass Mdev(const std::string& type, const std::string& parent = "") {
  v1::DeviceClass c;
  c.set_mdev_type(type);
  c.set_mdev_parent(parent);
  return c;
}

TEST_F(PrepareByClassTest, AgentKindPicksFreeConfiguredDevicesInTurn) {
  Result a = Prepare("j1", Kind("emulated"));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.response.migration().devices(0).device(), "dst0");
  EXPECT_EQ(a.response.migration().devices(0).host_address(), "");
  Result b = Prepare("j2", Kind("emulated"));
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(b.response.migration().devices(0).device(), "dst1");
  Result c = Prepare("j3", Kind("emulated"));
  EXPECT_EQ(c.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(c.reason, "ERROR_REASON_DEVICE_BUSY");
  EXPECT_TRUE(absl::StrContains(c.status.error_message(),
                                "2 candidates, all held (dst0 by job j1, "
                                "dst1 by job j2)"))
      << c.status.error_message();
  EXPECT_TRUE(kernel_.writes().empty());
  Result none = Prepare("j4", Kind("vfio"));
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::NOT_FOUND)
      << none.status.error_message();
}

TEST_F(PrepareByClassTest, ADeviceAndAClassAtOnceIsInvalid) {
  Result r = Prepare("j1", Kind("emulated"), "dst0");
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "destination_device and destination_class"))
      << r.status.error_message();
  r = Prepare("j1", v1::DeviceClass());
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(PrepareByClassTest, APciClassNoConfiguredDeviceHasIsAllocated) {
  Result r = Prepare("j1", Ids("15b3:101e"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const v1::DeviceProgress& d = r.response.migration().devices(0);
  EXPECT_EQ(d.device(), "alloc-j1-0");
  EXPECT_EQ(d.host_address(), kVf);
  EXPECT_EQ(opened_, std::vector<std::string>{absl::StrCat("bdf=", kVf)});
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
  EXPECT_EQ(registry_.Owner("alloc-j1-0"), "j1");
  ASSERT_EQ(allocations_->List("j1").size(), 1u);
  EXPECT_EQ(allocations_->List("j1")[0].key, "src0");

  // The job ends (here: cancelled): the device is closed, removed and
  // released, back on its driver.
  Cancel("j1");
  ASSERT_TRUE(WaitGone("alloc-j1-0"));
  EXPECT_TRUE(allocations_->List().empty());
  EXPECT_EQ(DriverOf(kVf), "mlx5_core");
  EXPECT_TRUE(bindings_->List().empty());
}

// A device that loaded the VM's state stays open after its job, until the
// owner releases it: the release closes it first (the agent's own open
// would keep a real kernel from unbinding it), and refuses while a job
// holds it.
TEST_F(PrepareByClassTest, AReleaseClosesTheAllocatedDeviceTheAgentHoldsOpen) {
  Result r = Prepare("j1", Ids("15b3:101e"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  absl::StatusOr<v1::ReleaseDevicesResponse> busy = host_->Release("j1");
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(busy.status().message(),
                                "device alloc-j1-0 is held by job j1"))
      << busy.status();
  EXPECT_NE(registry_.Find("alloc-j1-0"), nullptr);
  EXPECT_EQ(allocations_->List("j1").size(), 1u);
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");

  // A job's kept device: allocated to "j2-7", open and registered as the
  // job's end leaves one that loaded the VM's state; "alloc-j2-7" (job j2's
  // device 7, were there a job j2) is not j2-7's.
  v1::AllocateDevicesRequest req;
  req.set_owner("j2-7");
  v1::DeviceRequest* d = req.add_devices();
  d->set_key("src0");
  d->mutable_device_class()->set_mdev_type("mbochs-small");
  absl::StatusOr<v1::AllocateDevicesResponse> a = host_->Allocate(req);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(registry_.Add(Emulated(AllocatedDeviceName("j2-7", 0))).ok());
  ASSERT_TRUE(registry_.Add(Emulated("alloc-j2-7")).ok());
  absl::StatusOr<v1::ReleaseDevicesResponse> released = host_->Release("j2-7");
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->released_size(), 1);
  EXPECT_EQ(registry_.Find("alloc-j2-7-0"), nullptr);
  EXPECT_NE(registry_.Find("alloc-j2-7"), nullptr);
  EXPECT_TRUE(allocations_->List("j2-7").empty());
}

TEST_F(PrepareByClassTest, AFailedOpenReleasesTheAllocation) {
  open_error_ = absl::NotFoundError("no /dev/vfio/11");
  Result r = Prepare("j1", Ids("15b3:101e"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "allocated 0000:5e:01.1, but opening it "
                                "failed"))
      << r.status.error_message();
  EXPECT_EQ(registry_.Find("alloc-j1-0"), nullptr);
  EXPECT_TRUE(allocations_->List().empty());
  EXPECT_EQ(DriverOf(kVf), "mlx5_core");
  // Nothing stays taken: the job id and the device are free again.
  open_error_ = absl::OkStatus();
  Result again = Prepare("j1", Ids("15b3:101e"));
  EXPECT_TRUE(again.status.ok()) << again.status.error_message();
}

TEST_F(PrepareByClassTest, NothingToAllocateIsBusyNamingTheHolders) {
  ASSERT_TRUE(Prepare("j1", Ids("15b3:101e")).status.ok());
  Result r = Prepare("j2", Ids("15b3:101e"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(r.reason, "ERROR_REASON_DEVICE_BUSY");
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "0000:5e:01.1 by j1 (key src0)"))
      << r.status.error_message();
}

TEST_F(PrepareByClassTest, AnMdevTypeIsANewInstanceOpenedAsTheJobsDevice) {
  Result r = Prepare("j1", Mdev("mbochs-small"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const v1::DeviceProgress& d = r.response.migration().devices(0);
  EXPECT_EQ(d.device(), "alloc-j1-0");
  const std::string uuid = d.host_address();
  ASSERT_TRUE(host::NormalizeUuid(uuid).ok()) << uuid;
  EXPECT_EQ(opened_, std::vector<std::string>{"mdev=" + uuid});
  EXPECT_EQ(Instances(), std::vector<std::string>{uuid + " mbochs-small"});
  EXPECT_EQ(registry_.Owner("alloc-j1-0"), "j1");
  ASSERT_EQ(allocations_->List("j1").size(), 1u);
  EXPECT_EQ(allocations_->List("j1")[0].key, "src0");
  EXPECT_EQ(allocations_->List("j1")[0].mdev_uuid, uuid);

  // Cancelled before any device loaded the VM's state: the device is
  // closed and removed, the instance removed, the allocation released.
  Cancel("j1");
  ASSERT_TRUE(WaitGone("alloc-j1-0"));
  EXPECT_TRUE(Instances().empty());
  EXPECT_TRUE(allocations_->List().empty());
}

TEST_F(PrepareByClassTest, ANamedParentGetsTheInstance) {
  Result r = Prepare("j1", Mdev("mbochs-medium", "mbochs"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(Instances(), std::vector<std::string>{
                             r.response.migration().devices(0).host_address() +
                             " mbochs-medium"});
}

TEST_F(PrepareByClassTest, AFailedOpenRemovesTheMdevInstance) {
  open_error_ = absl::NotFoundError("no /dev/vfio/12");
  Result r = Prepare("j1", Mdev("mbochs-small"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "created mdev "))
      << r.status.error_message();
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "of type mbochs-small on mbochs, but opening "
                                "it failed"))
      << r.status.error_message();
  ASSERT_EQ(opened_.size(), 1u);
  EXPECT_EQ(registry_.Find("alloc-j1-0"), nullptr);
  EXPECT_TRUE(Instances().empty());
  EXPECT_TRUE(allocations_->List().empty());
  // It was there: created, then removed.
  bool created = false, removed = false;
  for (const std::string& w : kernel_.writes()) {
    created |= absl::StrContains(w, "mbochs-small/create := ");
    removed |= absl::StrContains(w, "/remove := 1");
  }
  EXPECT_TRUE(created && removed) << absl::StrJoin(kernel_.writes(), "\n");
  // Nothing stays taken: the job id is free again.
  open_error_ = absl::OkStatus();
  EXPECT_TRUE(Prepare("j1", Mdev("mbochs-small")).status.ok());
}

TEST_F(PrepareByClassTest, AnUnknownMdevTypeIsNotFoundAndCreatesNothing) {
  Result r = Prepare("j1", Mdev("mbochs-huge"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(r.reason, "ERROR_REASON_DEVICE_NOT_FOUND");
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "no mdev parent on this host offers type "
                                "mbochs-huge"))
      << r.status.error_message();
  r = Prepare("j1", Mdev("mbochs-huge", "mbochs"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "offers no type mbochs-huge (it offers "
                                "mbochs-medium, mbochs-small)"))
      << r.status.error_message();
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_TRUE(opened_.empty());
  EXPECT_TRUE(allocations_->List().empty());
  EXPECT_EQ(registry_.Find("alloc-j1-0"), nullptr);
}

TEST_F(PrepareByClassTest, NoInstanceLeftIsBusyNamingTheHolderCreatingNothing) {
  ASSERT_TRUE(Prepare("j1", Mdev("mbochs-medium")).status.ok());
  const std::vector<std::string> before = Instances();
  kernel_.ClearWrites();
  Result r = Prepare("j2", Mdev("mbochs-medium"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(r.reason, "ERROR_REASON_DEVICE_BUSY");
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "no instance of mdev type mbochs-medium is "
                                "available"))
      << r.status.error_message();
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "by j1 (key src0)"))
      << r.status.error_message();
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(Instances(), before);
  EXPECT_TRUE(allocations_->List("j2").empty());
  EXPECT_EQ(registry_.Find("alloc-j2-0"), nullptr);
}

TEST_F(PrepareByClassTest, AnMdevClassWithAnotherClassOrKindIsInvalid) {
  v1::DeviceClass both = Mdev("mbochs-small");
  both.set_pci_ids("15b3:101e");
  v1::DeviceClass emulated = Mdev("mbochs-small");
  emulated.set_agent_kind("emulated");
  v1::DeviceClass parent_only = Mdev("", "mbochs");
  for (const v1::DeviceClass& c : {both, emulated, parent_only}) {
    Result r = Prepare("j1", c);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.ShortDebugString() << ": " << r.status.error_message();
  }
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_TRUE(allocations_->List().empty());
}

}  // namespace
}  // namespace migd::server
