// migd/server/host_service_test.cc
//
// HostServiceImpl served in process over gRPC, on a fake sysfs tree whose
// writes a fake kernel answers (migd/host/fake_kernel.h; the fake kernel is
// also the module loader, and FakeGroupUsage says which IOMMU groups a VMM
// holds). The binding store is a real file in a state directory of the
// test's own, so a "restart" is a new service over the same directory.
// Each refusal is checked for its gRPC code, its migd-error-reason and the
// words a person needs, and for leaving the host as it was.

#include "migd/server/host_service.h"

#include <errno.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/device/emulated_device.h"
#include "migd/host/binding_store.h"
#include "migd/host/fake_kernel.h"
#include "migd/migration/device_registry.h"
#include "proto/migd/v1/host.grpc.pb.h"

namespace migd::server {
namespace {

using host::testing::FakeDriver;
using host::testing::FakeGroupUsage;
using host::testing::FakeKernel;
using host::testing::FakePciDevice;
using Writes = std::vector<std::string>;

constexpr char kVf[] = "0000:03:00.1";         // mlx5 VF, group 12
constexpr char kNotViable[] = "0000:05:00.0";  // group 20 with a host NIC
constexpr char kClaimed[] = "0000:06:00.0";    // the agent's vf0, job-7's
constexpr char kInUse[] = "0000:08:00.0";      // on vfio-pci, group 40 held
constexpr char kPf[] = "0000:07:00.0";         // SR-IOV PF, 2 VFs at most
constexpr char kVirtio[] = "0000:09:00.0";     // two variant drivers match

// What a call returned: status, the reason trailer, the answer.
template <typename Response>
struct Result {
  grpc::Status status;
  std::string reason;
  Response response;
};

template <typename Response>
std::string Describe(const Result<Response>& r) {
  return absl::StrCat("code ", r.status.error_code(), " reason ", r.reason,
                      ": ", r.status.error_message());
}

// Expects a refusal with `code`, `reason` and every word of `words` in the
// message.
template <typename Response>
void ExpectRefused(const Result<Response>& r, grpc::StatusCode code,
                   const std::string& reason,
                   const std::vector<std::string>& words) {
  EXPECT_EQ(r.status.error_code(), code) << Describe(r);
  EXPECT_EQ(r.reason, reason) << Describe(r);
  for (const std::string& w : words) {
    EXPECT_TRUE(absl::StrContains(r.status.error_message(), w))
        << "missing \"" << w << "\": " << Describe(r);
  }
}

std::string MakeStateDir() {
  const char* base = getenv("TEST_TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr ? base : "/tmp", "/stateXXXXXX");
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

class HostServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver({"pci", "mlx5_core", "mlx5_core", {"15b3:101e"}, ""});
    kernel_.AddDriver({"pci", "e1000e", "e1000e", {"8086:10d3"}, ""});
    kernel_.AddDriver({"pci", "virtio-pci", "virtio_pci", {"1af4:1041"}, ""});
    kernel_.AddLoadableModule(
        {"pci", "mlx5_vfio_pci", "mlx5_vfio_pci", {}, "vfio_pci_core"});
    // depmod's output for the kernel the service is told of ("test").
    kernel_.WriteFile(
        "/lib/modules/test/modules.alias",
        "alias pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_core\n"
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
        "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci\n"
        "alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_vfio_pci\n"
        "alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* other_vfio_pci\n");
    AddPci(kVf, 0x15b3, 0x101e, 12, "mlx5_core");
    AddPci(kNotViable, 0x8086, 0x10d3, 20, std::nullopt);
    AddPci("0000:05:00.1", 0x8086, 0x10d3, 20, "e1000e");
    AddPci(kClaimed, 0x15b3, 0x101e, 30, "mlx5_core");
    AddPci(kInUse, 0x15b3, 0x101e, 40, "vfio-pci");
    AddPci(kPf, 0x15b3, 0x1017, 50, "mlx5_core");
    kernel_.AddSriov(kPf, {"0000:07:00.2", "0000:07:00.3"}, 0x101e, 51);
    AddPci(kVirtio, 0x1af4, 0x1041, 60, "virtio-pci");
    kernel_.AddMdevParent("/sys/devices/virtual/mbochs/mbochs", "mbochs",
                          {{"mbochs-medium", "medium", 1, "vfio-pci"},
                           {"mbochs-small", "small", 2, "vfio-pci"}});
    usage_.busy = {40};

    device::EmulatedDeviceConfig vf0;
    vf0.name = "vf0";
    vf0.state_size = 4096;
    absl::StatusOr<std::unique_ptr<device::EmulatedDevice>> made =
        device::EmulatedDevice::Create(vf0);
    ASSERT_TRUE(made.ok()) << made.status();
    ASSERT_TRUE(registry_.Add(*std::move(made)).ok());
    ASSERT_TRUE(registry_.Claim({"vf0"}, "job-7").ok());

    state_dir_ = MakeStateDir();
    Start();
    kernel_.ClearWrites();
  }

  void TearDown() override {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(state_dir_, ec);
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

  // A service over the state directory (reading what an earlier one
  // recorded), served in process.
  void Start() {
    absl::StatusOr<std::unique_ptr<host::BindingStore>> store =
        host::BindingStore::Open(state_dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    absl::StatusOr<std::unique_ptr<host::AllocationStore>> allocations =
        host::AllocationStore::Open(state_dir_);
    ASSERT_TRUE(allocations.ok()) << allocations.status();
    allocations_ = *std::move(allocations);
    HostServiceOptions o;
    o.sysfs_root = kernel_.root();
    o.writer = &kernel_;
    o.modules = &kernel_;
    o.usage = &usage_;
    o.bindings = store_.get();
    o.allocations = allocations_.get();
    o.devices = &registry_;
    o.device_names = {{kClaimed, "vf0"}};
    o.kernel_release = "test";
    o.module_preference = [this](const std::string& bdf)
        -> absl::StatusOr<std::optional<host::ModulePreference>> {
      auto it = preferences_.find(bdf);
      if (it == preferences_.end()) return std::nullopt;
      return it->second;
    };
    o.prepare_host = [this](host::Bus bus,
                            const std::string& bdf) -> absl::Status {
      absl::MutexLock lock(&prepared_mu_);
      EXPECT_EQ(bus, host::Bus::kPci);
      prepared_.push_back({bdf, kernel_.writes()});
      auto it = prepare_errors_.find(bdf);
      return it == prepare_errors_.end() ? absl::OkStatus() : it->second;
    };
    vf_tokens_ = std::make_unique<VfTokens>(
        state_dir_,
        device::VfioPaths{kernel_.root() + "/sys", kernel_.root() + "/dev"});
    o.vf_tokens = vf_tokens_.get();
    service_ = std::make_unique<HostServiceImpl>(std::move(o));
    server_ =
        grpc::ServerBuilder().RegisterService(service_.get()).BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::HostService::NewStub(
        server_->InProcessChannel(grpc::ChannelArguments()));
  }

  void Stop() {
    stub_.reset();
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    service_.reset();
    store_.reset();
    allocations_.reset();
  }

  template <typename Request, typename Response>
  Result<Response> Call(grpc::Status (v1::HostService::Stub::*method)(
                            grpc::ClientContext*, const Request&, Response*),
                        const Request& request) {
    grpc::ClientContext ctx;
    Result<Response> r;
    r.status = ((*stub_).*method)(&ctx, request, &r.response);
    const auto& trailers = ctx.GetServerTrailingMetadata();
    if (auto it = trailers.find("migd-error-reason"); it != trailers.end()) {
      r.reason = std::string(it->second.data(), it->second.size());
    }
    return r;
  }

  Result<v1::HostDevice> Get(const std::string& address) {
    v1::GetHostDeviceRequest req;
    req.set_address(address);
    return Call(&v1::HostService::Stub::GetHostDevice, req);
  }
  Result<v1::HostDevice> Bind(const std::string& address,
                              const std::string& driver = "") {
    v1::BindDeviceRequest req;
    req.set_address(address);
    req.set_driver(driver);
    return Call(&v1::HostService::Stub::BindDevice, req);
  }
  Result<v1::HostDevice> Unbind(const std::string& address,
                                bool to_no_driver = false) {
    v1::UnbindDeviceRequest req;
    req.set_address(address);
    req.set_to_no_driver(to_no_driver);
    return Call(&v1::HostService::Stub::UnbindDevice, req);
  }
  Result<v1::HostDevice> SetVfs(const std::string& pf, uint32_t count) {
    v1::SetVfCountRequest req;
    req.set_pf_address(pf);
    req.set_count(count);
    return Call(&v1::HostService::Stub::SetVfCount, req);
  }

  Result<v1::VfTokenResponse> SetVfToken(const std::string& pf) {
    v1::SetVfTokenRequest req;
    req.set_pf_address(pf);
    return Call(&v1::HostService::Stub::SetVfToken, req);
  }

  Result<v1::AllocateDevicesResponse> Allocate(
      const std::string& owner,
      const std::vector<std::pair<std::string, v1::DeviceClass>>& devices) {
    v1::AllocateDevicesRequest req;
    req.set_owner(owner);
    for (const auto& [key, cls] : devices) {
      v1::DeviceRequest* d = req.add_devices();
      d->set_key(key);
      *d->mutable_device_class() = cls;
    }
    return Call(&v1::HostService::Stub::AllocateDevices, req);
  }
  Result<v1::ReleaseDevicesResponse> Release(const std::string& owner) {
    v1::ReleaseDevicesRequest req;
    req.set_owner(owner);
    return Call(&v1::HostService::Stub::ReleaseDevices, req);
  }
  Result<v1::ListAllocationsResponse> Allocations(
      const std::string& owner = "") {
    v1::ListAllocationsRequest req;
    req.set_owner(owner);
    return Call(&v1::HostService::Stub::ListAllocations, req);
  }

  // The device's driver as the fake tree says.
  std::string DriverOf(const std::string& bdf) {
    Result<v1::HostDevice> r = Get(bdf);
    EXPECT_TRUE(r.status.ok()) << Describe(r);
    return r.response.driver();
  }

  FakeKernel kernel_;
  FakeGroupUsage usage_;
  migration::DeviceRegistry registry_;
  std::string state_dir_;
  std::unique_ptr<host::BindingStore> store_;
  std::unique_ptr<host::AllocationStore> allocations_;
  std::unique_ptr<VfTokens> vf_tokens_;
  // What "the plugins" prefer, by device (none for the others).
  std::map<std::string, absl::StatusOr<std::optional<host::ModulePreference>>>
      preferences_;
  // Each call of the service's prepare_host: the device, and the kernel's
  // writes until then; and what it answers, by device (OK for the others).
  struct Prepared {
    std::string bdf;
    Writes writes_before;
  };
  absl::Mutex prepared_mu_;
  std::vector<Prepared> prepared_ ABSL_GUARDED_BY(prepared_mu_);
  std::map<std::string, absl::Status> prepare_errors_;
  std::unique_ptr<HostServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::HostService::Stub> stub_;
};

TEST_F(HostServiceTest, StatusShowsIdsDriverChoiceAndGroup) {
  Result<v1::HostDevice> r = Get("0000:03:00.1");
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  const v1::HostDevice& d = r.response;
  EXPECT_EQ(d.bus(), "pci");
  EXPECT_EQ(d.address(), kVf);
  EXPECT_EQ(d.vendor_id(), 0x15b3u);
  EXPECT_EQ(d.device_id(), 0x101eu);
  EXPECT_EQ(d.class_code(), 0x020000u);
  EXPECT_EQ(d.driver(), "mlx5_core");
  EXPECT_EQ(d.driver_override(), "");
  EXPECT_TRUE(absl::StartsWith(d.modalias(), "pci:v000015B3d0000101E"))
      << d.modalias();
  // The most specific alias wins; its module is not loaded yet.
  EXPECT_EQ(d.chosen_module(), "mlx5_vfio_pci");
  EXPECT_EQ(d.chosen_driver(), "");
  EXPECT_TRUE(absl::StrContains(d.choice_reason(), "mlx5_vfio_pci"))
      << d.choice_reason();
  EXPECT_EQ(d.choice_error(), "");
  EXPECT_EQ(d.iommu_group(), 12);
  EXPECT_TRUE(d.group_viable());
  EXPECT_FALSE(d.in_use());
  EXPECT_FALSE(d.bound_by_migd());
  EXPECT_FALSE(d.has_sriov_pf());
  EXPECT_FALSE(d.has_sriov_vf());
  EXPECT_EQ(d.outcome(), "");
  EXPECT_TRUE(d.notices().empty()) << d.DebugString();
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(HostServiceTest, StatusSaysWhyAGroupIsNotViableAndWhoHoldsADevice) {
  Result<v1::HostDevice> r = Get(kNotViable);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_FALSE(r.response.group_viable());
  EXPECT_TRUE(absl::StrContains(r.response.group_not_viable_reason(),
                                "0000:05:00.1 is bound to e1000e"))
      << r.response.group_not_viable_reason();

  r = Get(kInUse);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_TRUE(r.response.in_use());
  EXPECT_EQ(r.response.chosen_driver(), "");  // mlx5_vfio_pci, not loaded

  r = Get(kClaimed);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.agent_device(), "vf0");
  EXPECT_EQ(r.response.job_id(), "job-7");
}

TEST_F(HostServiceTest, StatusOfAnAmbiguousChoiceSaysSo) {
  Result<v1::HostDevice> r = Get(kVirtio);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.chosen_module(), "");
  for (const char* w : {"virtio_vfio_pci", "other_vfio_pci"}) {
    EXPECT_TRUE(absl::StrContains(r.response.choice_error(), w))
        << r.response.choice_error();
  }
}

TEST_F(HostServiceTest, BindChoosesFromModulesAliasAndRecordsTheOriginal) {
  Result<v1::HostDevice> r = Bind(kVf);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  const v1::HostDevice& d = r.response;
  EXPECT_EQ(d.driver(), "mlx5_vfio_pci");
  EXPECT_EQ(d.driver_override(), "mlx5_vfio_pci");
  EXPECT_EQ(d.chosen_driver(), "mlx5_vfio_pci");
  EXPECT_TRUE(d.bound_by_migd());
  EXPECT_EQ(d.migd_binding().driver(), "mlx5_vfio_pci");
  EXPECT_EQ(d.migd_binding().original_driver(), "mlx5_core");
  EXPECT_EQ(d.migd_binding().original_driver_override(), "");
  EXPECT_TRUE(absl::StrContains(d.outcome(), "bound to mlx5_vfio_pci"))
      << d.outcome();
  EXPECT_EQ(kernel_.loads(), Writes{"mlx5_vfio_pci"});
  // driver_override, unbind, probe: never new_id.
  EXPECT_EQ(kernel_.writes().size(), 3u)
      << absl::StrJoin(kernel_.writes(), "\n");
  for (const std::string& w : kernel_.writes()) {
    EXPECT_FALSE(absl::StrContains(w, "new_id")) << w;
  }
  std::optional<host::BindRecord> rec = store_->Find(host::Bus::kPci, kVf);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->original.driver, "mlx5_core");
}

TEST_F(HostServiceTest, TheRecordIsDurableBeforeTheDeviceMoves) {
  bool recorded_at_bind = false;
  kernel_.OnBind([&](const std::string&, const std::string& device,
                     const std::string& driver) {
    if (device != kVf || driver != "vfio-pci") return;
    absl::StatusOr<std::unique_ptr<host::BindingStore>> on_disk =
        host::BindingStore::Open(state_dir_);
    ASSERT_TRUE(on_disk.ok()) << on_disk.status();
    recorded_at_bind = (*on_disk)->Find(host::Bus::kPci, kVf).has_value();
  });
  ASSERT_TRUE(Bind(kVf, "vfio-pci").status.ok());
  EXPECT_TRUE(recorded_at_bind);
}

TEST_F(HostServiceTest, AFailedBindRollsBackAndForgetsItsRecord) {
  kernel_.FailProbe("vfio-pci", ENODEV);
  Result<v1::HostDevice> r = Bind(kVf, "vfio-pci");
  // A kernel step failed (ENODEV): the reason says it was the device's.
  ExpectRefused(r, grpc::StatusCode::NOT_FOUND, "ERROR_REASON_DEVICE_ERROR",
                {kVf, "probe", "rolled back"});
  EXPECT_EQ(DriverOf(kVf), "mlx5_core");
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kVf).has_value());
  Stop();
  Start();
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kVf).has_value());
}

TEST_F(HostServiceTest, AMalformedAddressIsInvalidNamingIt) {
  for (const char* bad : {"0000:03:00.9", "03:00.1", "../../etc"}) {
    ExpectRefused(Bind(bad), grpc::StatusCode::INVALID_ARGUMENT,
                  "ERROR_REASON_INVALID_REQUEST", {bad});
    ExpectRefused(Get(bad), grpc::StatusCode::INVALID_ARGUMENT,
                  "ERROR_REASON_INVALID_REQUEST", {bad});
  }
  ExpectRefused(Bind(kVf, "vfio pci"), grpc::StatusCode::INVALID_ARGUMENT,
                "ERROR_REASON_INVALID_REQUEST", {"vfio pci"});
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(HostServiceTest, AMissingDeviceIsNotFound) {
  for (auto r : {Get("0000:0a:00.0"), Bind("0000:0a:00.0"),
                 Unbind("0000:0a:00.0", true), SetVfs("0000:0a:00.0", 1)}) {
    ExpectRefused(r, grpc::StatusCode::NOT_FOUND,
                  "ERROR_REASON_DEVICE_NOT_FOUND",
                  {"0000:0a:00.0", "does not exist"});
  }
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(HostServiceTest, ADeviceAJobHoldsIsBusyNamingTheJob) {
  const auto before = kernel_.Snapshot();
  ExpectRefused(Bind(kClaimed, "vfio-pci"),
                grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY", {kClaimed, "vf0", "job-7"});
  ExpectRefused(Unbind(kClaimed, true), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY", {kClaimed, "job-7"});
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(HostServiceTest, ADeviceInUseIsBusy) {
  const auto before = kernel_.Snapshot();
  ExpectRefused(Bind(kInUse, "mlx5_vfio_pci"),
                grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY", {kInUse, "in use", "group 40"});
  ExpectRefused(Unbind(kInUse, true), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY", {kInUse, "in use"});
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_TRUE(kernel_.loads().empty());
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(HostServiceTest, AVfTokenForAPfNotOnVfioPciIsRefused) {
  Result<v1::VfTokenResponse> r = SetVfToken(kPf);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(r.reason, "ERROR_REASON_HOST_PRECONDITION");
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "mlx5_core"))
      << r.status.error_message();
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "not vfio-pci"))
      << r.status.error_message();
  EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/vf-tokens/" + kPf));
}

TEST_F(HostServiceTest, AVfTokenForAPfAJobHoldsIsBusy) {
  Result<v1::VfTokenResponse> r = SetVfToken(kClaimed);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(r.reason, "ERROR_REASON_DEVICE_BUSY");
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "job-7"))
      << r.status.error_message();
}

TEST_F(HostServiceTest, AVfTokenNeedsVfioPciWithEnableSriovAndAFreePf) {
  const std::string pf = "0000:0c:00.0";
  AddPci(pf, 0x15b3, 0x1017, 80, "vfio-pci");
  kernel_.AddSriov(pf, {"0000:0c:00.1"}, 0x101e, 81);
  Result<v1::VfTokenResponse> r = SetVfToken(pf);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(r.reason, "ERROR_REASON_HOST_PRECONDITION");
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "enable_sriov"))
      << r.status.error_message();

  kernel_.WriteFile("/sys/module/vfio_pci/parameters/enable_sriov", "N\n");
  r = SetVfToken(pf);
  EXPECT_EQ(r.reason, "ERROR_REASON_HOST_PRECONDITION");
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "reads N"))
      << r.status.error_message();

  kernel_.WriteFile("/sys/module/vfio_pci/parameters/enable_sriov", "Y\n");
  usage_.busy.insert(80);
  r = SetVfToken(pf);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(r.reason, "ERROR_REASON_DEVICE_BUSY");
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "in use"))
      << r.status.error_message();
  EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/vf-tokens/" + pf));
}

TEST(VfTokenId, IsTheFirstEightHexDigitsOfTheSha256) {
  // sha256("abc") = ba7816bf...
  EXPECT_EQ(VfTokens::TokenId("abc"), "ba7816bf");
}

TEST_F(HostServiceTest, AGroupThatIsNotViableIsRefusedBeforeAnything) {
  // A module not loaded yet that fits the device (it has no vfio_pci alias
  // to match: mlx5_vfio_pci's would refuse the Intel NIC before its group).
  kernel_.AddLoadableModule(
      {"pci", "plain_vfio_pci", "plain_vfio_pci", {}, "vfio_pci_core"});
  const auto before = kernel_.Snapshot();
  ExpectRefused(Bind(kNotViable, "plain_vfio_pci"),
                grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_HOST_PRECONDITION",
                {kNotViable, "not viable", "0000:05:00.1", "e1000e"});
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_TRUE(kernel_.loads().empty());  // no module loaded for nothing
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kNotViable).has_value());
  EXPECT_EQ(kernel_.Snapshot(), before);
}

TEST_F(HostServiceTest, AnAmbiguousChoiceIsRefusedUnlessADriverIsNamed) {
  ExpectRefused(Bind(kVirtio), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_HOST_PRECONDITION",
                {kVirtio, "virtio_vfio_pci", "other_vfio_pci"});
  EXPECT_TRUE(kernel_.writes().empty());
  Result<v1::HostDevice> r = Bind(kVirtio, "vfio-pci");
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.driver(), "vfio-pci");
}

TEST_F(HostServiceTest, AModuleThatDoesNotExistTouchesNothing) {
  ExpectRefused(Bind(kVf, "nosuch_vfio_pci"), grpc::StatusCode::NOT_FOUND,
                "ERROR_REASON_HOST_PRECONDITION",
                {kVf, "nosuch_vfio_pci", "not touched"});
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kVf).has_value());
}

TEST_F(HostServiceTest, ANamedVariantDriverMustMatchTheDevice) {
  // mlx5_vfio_pci's aliases are for 15b3:101e and 15b3:101f; the virtio
  // device is 1af4:1041.
  ExpectRefused(Bind(kVirtio, "mlx5_vfio_pci"),
                grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_HOST_PRECONDITION",
                {kVirtio, "module mlx5_vfio_pci",
                 "vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*", "ids 1af4:1041",
                 "nothing was changed"});
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kVirtio).has_value());
  EXPECT_EQ(DriverOf(kVirtio), "virtio-pci");
  EXPECT_TRUE(kernel_.loads().empty()) << "a module loaded for nothing";
}

TEST_F(HostServiceTest, ANamedModuleWithoutVfioPciAliasesIsNotChecked) {
  kernel_.AddLoadableModule(
      {"pci", "plain_vfio_pci", "plain_vfio_pci", {}, "vfio_pci_core"});
  Result<v1::HostDevice> r = Bind(kVirtio, "plain_vfio_pci");
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(DriverOf(kVirtio), "plain_vfio_pci");
}

TEST_F(HostServiceTest, AllocateWithANamedDriverSkipsDevicesItDoesNotDrive) {
  v1::AllocateDevicesRequest req;
  req.set_owner("dom-1");
  v1::DeviceRequest* d = req.add_devices();
  d->set_key("k");
  d->mutable_device_class()->set_pci_ids("1af4:1041");
  d->set_driver("mlx5_vfio_pci");
  ExpectRefused(Call(&v1::HostService::Stub::AllocateDevices, req),
                grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_HOST_PRECONDITION",
                {"is for driver mlx5_vfio_pci", kVirtio, "ids 1af4:1041"});
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(DriverOf(kVirtio), "virtio-pci");
}

TEST_F(HostServiceTest, BindIsIdempotentAndRefusesAnotherDriver) {
  ASSERT_TRUE(Bind(kVf, "vfio-pci").status.ok());
  kernel_.ClearWrites();
  Result<v1::HostDevice> again = Bind(kVf, "vfio_pci");
  ASSERT_TRUE(again.status.ok()) << Describe(again);
  EXPECT_TRUE(absl::StartsWith(again.response.outcome(), "nothing to do"))
      << again.response.outcome();
  ExpectRefused(Bind(kVf, "mlx5_vfio_pci"),
                grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY",
                {kVf, "migd bound it to vfio-pci", "unbind it first"});
  ExpectRefused(Bind(kVf), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY", {"unbind it first"});
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
}

TEST_F(HostServiceTest, UnbindAfterARestartReturnsTheDeviceToItsDriver) {
  ASSERT_TRUE(Bind(kVf, "vfio-pci").status.ok());
  Stop();  // the agent goes away; the record stays on disk
  Start();
  Result<v1::HostDevice> status = Get(kVf);
  ASSERT_TRUE(status.status.ok());
  EXPECT_TRUE(status.response.bound_by_migd());
  EXPECT_EQ(status.response.migd_binding().original_driver(), "mlx5_core");

  Result<v1::HostDevice> r = Unbind(kVf);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.driver(), "mlx5_core");
  EXPECT_EQ(r.response.driver_override(), "");
  EXPECT_FALSE(r.response.bound_by_migd());
  EXPECT_TRUE(absl::StrContains(r.response.outcome(), "returned to mlx5_core"))
      << r.response.outcome();
  Stop();
  Start();
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kVf).has_value());
}

// A crash between the record and the end of the bind (here: after the
// driver_override and the unbind) leaves the record; after the restart an
// unbind brings the device back to its original driver.
TEST_F(HostServiceTest, UnbindAfterACrashMidBindReturnsTheDevice) {
  const host::Sysfs sysfs = kernel_.sysfs();
  const std::string dir = absl::StrCat("/sys/bus/pci/devices/", kVf);
  ASSERT_TRUE(store_
                  ->Put({host::Bus::kPci, kVf, "vfio-pci",
                         host::Binding{"mlx5_core", std::nullopt}, true})
                  .ok());
  ASSERT_TRUE(sysfs.Write(dir + "/driver_override", "vfio-pci").ok());
  ASSERT_TRUE(sysfs.Write(dir + "/driver/unbind", kVf).ok());
  Stop();
  Start();
  Result<v1::HostDevice> status = Get(kVf);
  ASSERT_TRUE(status.status.ok());
  EXPECT_EQ(status.response.driver(), "");
  ASSERT_EQ(status.response.notices_size(), 1) << status.response.DebugString();
  EXPECT_TRUE(absl::StrContains(status.response.notices(0), "cut short"));

  Result<v1::HostDevice> r = Unbind(kVf);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.driver(), "mlx5_core");
  EXPECT_EQ(r.response.driver_override(), "");
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kVf).has_value());
}

TEST_F(HostServiceTest, UnbindOfADeviceMigdDidNotBindNeedsToNoDriver) {
  ExpectRefused(Unbind(kVf), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_HOST_PRECONDITION",
                {kVf, "migd did not bind it", "--to_no_driver"});
  EXPECT_TRUE(kernel_.writes().empty());
  Result<v1::HostDevice> r = Unbind(kVf, /*to_no_driver=*/true);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.driver(), "");
  EXPECT_TRUE(absl::StrContains(r.response.outcome(), "no driver"))
      << r.response.outcome();
}

TEST_F(HostServiceTest, TwoBindsOfOneDeviceDoNotInterleave) {
  std::vector<Result<v1::HostDevice>> results(2);
  std::thread a([&] { results[0] = Bind(kVf, "vfio-pci"); });
  std::thread b([&] { results[1] = Bind(kVf, "vfio-pci"); });
  a.join();
  b.join();
  for (const auto& r : results) EXPECT_TRUE(r.status.ok()) << Describe(r);
  // One moved it, the other found it there.
  const std::string dir = absl::StrCat("/sys/bus/pci/devices/", kVf);
  EXPECT_EQ(kernel_.writes(),
            (Writes{absl::StrCat(dir, "/driver_override := vfio-pci"),
                    absl::StrCat(dir, "/driver/unbind := ", kVf),
                    absl::StrCat("/sys/bus/pci/drivers_probe := ", kVf)}));
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
}

TEST_F(HostServiceTest, SetVfCountCreatesVfsAndReportsBothEnds) {
  Result<v1::HostDevice> r = SetVfs(kPf, 2);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  ASSERT_TRUE(r.response.has_sriov_pf()) << r.response.DebugString();
  EXPECT_EQ(r.response.sriov_pf().total_vfs(), 2u);
  EXPECT_EQ(r.response.sriov_pf().num_vfs(), 2u);
  ASSERT_EQ(r.response.sriov_pf().vfs_size(), 2);
  EXPECT_EQ(r.response.sriov_pf().vfs(1).address(), "0000:07:00.3");
  EXPECT_EQ(r.response.outcome(), "VFs: 0 -> 2");
  Result<v1::HostDevice> vf = Get("0000:07:00.3");
  ASSERT_TRUE(vf.status.ok()) << Describe(vf);
  EXPECT_EQ(vf.response.sriov_vf().pf_address(), kPf);
  EXPECT_EQ(vf.response.sriov_vf().index(), 1u);
}

TEST_F(HostServiceTest, SetVfCountRefusals) {
  ExpectRefused(SetVfs(kVf, 1), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_HOST_PRECONDITION", {kVf, "no SR-IOV"});
  ExpectRefused(SetVfs(kPf, 3), grpc::StatusCode::INVALID_ARGUMENT,
                "ERROR_REASON_INVALID_REQUEST", {kPf, "3 VFs", "0 to 2"});
  EXPECT_TRUE(kernel_.writes().empty());

  // A VF migd bound would be destroyed: unbind it first.
  ASSERT_TRUE(SetVfs(kPf, 2).status.ok());
  ASSERT_TRUE(Bind("0000:07:00.2", "vfio-pci").status.ok());
  kernel_.ClearWrites();
  ExpectRefused(SetVfs(kPf, 1), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY",
                {"0000:07:00.2", "unbind it first"});
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(HostServiceTest, ACountAboveTotalVfsIsInvalidEvenWithABoundVf) {
  // The count is checked against sriov_totalvfs before the VFs the change
  // would destroy: a VF migd bound does not hide that the request is wrong.
  ASSERT_TRUE(SetVfs(kPf, 2).status.ok());
  ASSERT_TRUE(Bind("0000:07:00.2", "vfio-pci").status.ok());
  kernel_.ClearWrites();
  ExpectRefused(SetVfs(kPf, 3), grpc::StatusCode::INVALID_ARGUMENT,
                "ERROR_REASON_INVALID_REQUEST",
                {kPf, "asks for 3 VFs", "the device supports 0 to 2"});
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_EQ(DriverOf("0000:07:00.2"), "vfio-pci");
}

TEST_F(HostServiceTest, MdevTypesCreateAndRemove) {
  v1::ListMdevTypesRequest list;
  list.set_parent("mbochs");
  auto types = Call(&v1::HostService::Stub::ListMdevTypes, list);
  ASSERT_TRUE(types.status.ok()) << Describe(types);
  ASSERT_EQ(types.response.types_size(), 2);
  EXPECT_EQ(types.response.types(1).id(), "mbochs-small");
  EXPECT_EQ(types.response.types(1).available_instances(), 2u);

  v1::CreateMdevRequest create;
  create.set_parent("mbochs");
  create.set_type("mbochs-small");
  create.set_uuid("0B2A4D1E-1111-4222-8333-444455556666");
  auto made = Call(&v1::HostService::Stub::CreateMdev, create);
  ASSERT_TRUE(made.status.ok()) << Describe(made);
  EXPECT_EQ(made.response.uuid(), "0b2a4d1e-1111-4222-8333-444455556666");
  types = Call(&v1::HostService::Stub::ListMdevTypes, list);
  ASSERT_EQ(types.response.instances_size(), 1);
  EXPECT_EQ(types.response.instances(0).type(), "mbochs-small");

  ExpectRefused(Call(&v1::HostService::Stub::CreateMdev, create),
                grpc::StatusCode::ALREADY_EXISTS, "ERROR_REASON_DEVICE_BUSY",
                {"UUID"});

  v1::RemoveMdevRequest remove;
  remove.set_uuid(made.response.uuid());
  auto removed = Call(&v1::HostService::Stub::RemoveMdev, remove);
  ASSERT_TRUE(removed.status.ok()) << Describe(removed);
  EXPECT_EQ(removed.response.parent(), "mbochs");
  EXPECT_EQ(removed.response.type(), "mbochs-small");
  ExpectRefused(Call(&v1::HostService::Stub::RemoveMdev, remove),
                grpc::StatusCode::NOT_FOUND, "ERROR_REASON_DEVICE_NOT_FOUND",
                {made.response.uuid()});
}

TEST_F(HostServiceTest, AnUnknownMdevTypeNamesTheTypesThereAre) {
  v1::CreateMdevRequest create;
  create.set_parent("mbochs");
  create.set_type("mbochs-huge");
  ExpectRefused(Call(&v1::HostService::Stub::CreateMdev, create),
                grpc::StatusCode::NOT_FOUND, "ERROR_REASON_HOST_PRECONDITION",
                {"mbochs-huge", "mbochs-medium, mbochs-small"});
  create.set_parent("nosuch");
  ExpectRefused(Call(&v1::HostService::Stub::CreateMdev, create),
                grpc::StatusCode::NOT_FOUND, "ERROR_REASON_DEVICE_NOT_FOUND",
                {"nosuch"});
  EXPECT_TRUE(kernel_.writes().empty());
}

v1::DeviceClass PciClass(const std::string& ids) {
  v1::DeviceClass c;
  c.set_pci_ids(ids);
  return c;
}

v1::DeviceClass MdevClass(const std::string& type,
                          const std::string& parent = "") {
  v1::DeviceClass c;
  c.set_mdev_type(type);
  c.set_mdev_parent(parent);
  return c;
}

// Of the 15b3:101e devices only kVf is free: kClaimed is job-7's, kInUse's
// group is held.
TEST_F(HostServiceTest, AllocateBindsTheFreeDeviceOfTheClassAndSaysWhich) {
  auto r = Allocate("dom-1", {{"0000:3b:02.0", PciClass("15b3:101e")}});
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  ASSERT_EQ(r.response.devices_size(), 1);
  const v1::AllocatedDevice& d = r.response.devices(0);
  EXPECT_EQ(d.key(), "0000:3b:02.0");
  EXPECT_EQ(d.owner(), "dom-1");
  EXPECT_EQ(d.address(), kVf);
  EXPECT_EQ(d.driver(), "mlx5_vfio_pci");  // modules.alias's choice
  EXPECT_EQ(DriverOf(kVf), "mlx5_vfio_pci");
  Result<v1::HostDevice> status = Get(kVf);
  EXPECT_TRUE(status.response.bound_by_migd());
  EXPECT_EQ(status.response.migd_binding().original_driver(), "mlx5_core");

  auto listed = Allocations();
  ASSERT_TRUE(listed.status.ok());
  ASSERT_EQ(listed.response.devices_size(), 1);
  EXPECT_EQ(listed.response.devices(0).address(), kVf);
  EXPECT_EQ(Allocations("dom-2").response.devices_size(), 0);
}

TEST_F(HostServiceTest, AllocateWithNothingFreeIsBusyNamingEveryCandidate) {
  ASSERT_TRUE(Allocate("dom-1", {{"a", PciClass("15b3:101e")}}).status.ok());
  kernel_.ClearWrites();
  ExpectRefused(Allocate("dom-2", {{"a", PciClass("15b3:101e")}}),
                grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY",
                {"device request 0 (key a, class 15b3:101e)",
                 "no free device of class 15b3:101e: 3 candidates, all held",
                 "0000:03:00.1 by dom-1 (key a)", "0000:06:00.0 by job job-7",
                 "0000:08:00.0 in use"});
  ExpectRefused(Allocate("dom-2", {{"a", PciClass("dead:beef")}}),
                grpc::StatusCode::NOT_FOUND, "ERROR_REASON_DEVICE_NOT_FOUND",
                {"no PCI device of class dead:beef"});
  ExpectRefused(Allocate("", {{"a", PciClass("15b3:101e")}}),
                grpc::StatusCode::INVALID_ARGUMENT,
                "ERROR_REASON_INVALID_REQUEST", {"owner"});
  ExpectRefused(Allocate("dom-2", {{"a", PciClass("15b3")}}),
                grpc::StatusCode::INVALID_ARGUMENT,
                "ERROR_REASON_INVALID_REQUEST", {"pci_ids \"15b3\""});
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(HostServiceTest, AllocateIsAllOrNothing) {
  ExpectRefused(Allocate("dom-1", {{"a", PciClass("15b3:101e")},
                                   {"b", MdevClass("mbochs-huge", "mbochs")}}),
                grpc::StatusCode::NOT_FOUND, "ERROR_REASON_DEVICE_NOT_FOUND",
                {"device request 1 (key b", "a -> 0000:03:00.1 released",
                 "mbochs-medium, mbochs-small"});
  EXPECT_EQ(DriverOf(kVf), "mlx5_core");
  EXPECT_EQ(Allocations().response.devices_size(), 0);
  EXPECT_TRUE(store_->List().empty());
}

TEST_F(HostServiceTest, AllocateAgainReturnsTheSameDevices) {
  const std::vector<std::pair<std::string, v1::DeviceClass>> req = {
      {"a", PciClass("15b3:101e")}, {"m", MdevClass("mbochs-small")}};
  auto first = Allocate("dom-1", req);
  ASSERT_TRUE(first.status.ok()) << Describe(first);
  EXPECT_EQ(first.response.devices(1).mdev_parent(), "mbochs");
  EXPECT_EQ(first.response.devices(1).mdev_type(), "mbochs-small");
  EXPECT_FALSE(first.response.devices(1).mdev_uuid().empty());
  kernel_.ClearWrites();
  auto again = Allocate("dom-1", req);
  ASSERT_TRUE(again.status.ok()) << Describe(again);
  EXPECT_EQ(again.response.SerializeAsString(),
            first.response.SerializeAsString());
  EXPECT_TRUE(kernel_.writes().empty());
}

TEST_F(HostServiceTest, AnAllocatedDeviceIsRefusedToBindUnbindAndRemove) {
  auto r = Allocate("dom-1", {{"a", PciClass("15b3:101e")},
                              {"m", MdevClass("mbochs-small")}});
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  ExpectRefused(Unbind(kVf), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY",
                {"allocated to dom-1 (key a)", "migctl host release dom-1"});
  ExpectRefused(Bind(kVf, "vfio_pci"), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY", {"allocated to dom-1"});
  v1::RemoveMdevRequest remove;
  remove.set_uuid(r.response.devices(1).mdev_uuid());
  ExpectRefused(Call(&v1::HostService::Stub::RemoveMdev, remove),
                grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_BUSY", {"allocated to dom-1 (key m)"});
}

TEST_F(HostServiceTest, ReleaseAfterARestartReturnsEveryDevice) {
  auto r = Allocate("dom-1", {{"a", PciClass("15b3:101e")},
                              {"m", MdevClass("mbochs-small", "mbochs")}});
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  Stop();  // the agent goes away; both records stay on disk
  Start();
  ASSERT_EQ(Allocations("dom-1").response.devices_size(), 2);
  auto released = Release("dom-1");
  ASSERT_TRUE(released.status.ok()) << Describe(released);
  ASSERT_EQ(released.response.released_size(), 2);
  EXPECT_EQ(released.response.released(0).key(), "m");  // in reverse
  EXPECT_EQ(released.response.released(1).address(), kVf);
  EXPECT_EQ(DriverOf(kVf), "mlx5_core");
  EXPECT_FALSE(Get(kVf).response.bound_by_migd());
  v1::ListMdevTypesRequest list;
  list.set_parent("mbochs");
  EXPECT_EQ(Call(&v1::HostService::Stub::ListMdevTypes, list)
                .response.instances_size(),
            0);
  EXPECT_EQ(Allocations().response.devices_size(), 0);
  // Releasing again has nothing to do.
  released = Release("dom-1");
  ASSERT_TRUE(released.status.ok()) << Describe(released);
  EXPECT_EQ(released.response.released_size(), 0);
}

TEST_F(HostServiceTest, TwoAllocationsRacingForTheLastDeviceOneGetsIt) {
  Result<v1::AllocateDevicesResponse> a, b;
  std::thread t1([&] {
    a = Allocate("dom-a", {{"k", PciClass("15b3:101e")}});
  });
  std::thread t2([&] {
    b = Allocate("dom-b", {{"k", PciClass("15b3:101e")}});
  });
  t1.join();
  t2.join();
  EXPECT_NE(a.status.ok(), b.status.ok())
      << Describe(a) << " / " << Describe(b);
  const Result<v1::AllocateDevicesResponse>& lost = a.status.ok() ? b : a;
  EXPECT_EQ(lost.reason, "ERROR_REASON_DEVICE_BUSY") << Describe(lost);
  EXPECT_EQ(Allocations().response.devices_size(), 1);
}

TEST_F(HostServiceTest, WithoutABindingStoreBindIsRefused) {
  Stop();
  HostServiceOptions o;
  o.sysfs_root = kernel_.root();
  o.writer = &kernel_;
  o.modules = &kernel_;
  o.usage = &usage_;
  o.kernel_release = "test";
  HostServiceImpl service(std::move(o));
  absl::StatusOr<v1::HostDevice> r = service.Bind(kVf, "vfio-pci");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "state directory"))
      << r.status();
  v1::AllocateDevicesRequest req;
  req.set_owner("dom-1");
  req.add_devices()->mutable_device_class()->set_pci_ids("15b3:101e");
  absl::StatusOr<v1::AllocateDevicesResponse> a = service.Allocate(req);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(a.status().message(), "state directory"))
      << a.status();
  EXPECT_EQ(service.Allocations("").devices_size(), 0);
  EXPECT_TRUE(kernel_.writes().empty());
  Start();  // for TearDown
}

// A vendor plugin's preferred driver (here stood in for by the fixture's
// module_preference; driver_preference_test has the real plugin): it wins
// over modules.alias, a named driver wins over it, and it says so.
TEST_F(HostServiceTest, APluginsPreferenceWinsOverTheAliasesNotANamedDriver) {
  preferences_[kVf] = host::ModulePreference{"vfio_pci", "plugin acme"};
  Result<v1::HostDevice> r = Get(kVf);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.chosen_module(), "vfio_pci");
  EXPECT_EQ(r.response.chosen_driver(), "vfio-pci");
  EXPECT_EQ(r.response.choice_reason(),
            "preferred by plugin acme: alias vfio_pci:v*d*sv*sd*bc*sc*i* of "
            "vfio_pci matches");
  r = Bind(kVf);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.driver(), "vfio-pci");
  ASSERT_TRUE(Unbind(kVf).status.ok());
  r = Bind(kVf, "mlx5_vfio_pci");
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.driver(), "mlx5_vfio_pci");
}

TEST_F(HostServiceTest, APreferenceThatCannotBeToldOrDoesNotFitIsNoChoice) {
  preferences_[kVf] = absl::InternalError(
      "plugin acme: choosing a driver for device 0000:03:00.1 failed: no "
      "firmware answer");
  Result<v1::HostDevice> r = Get(kVf);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.chosen_module(), "");
  EXPECT_TRUE(absl::StrContains(r.response.choice_error(), "no firmware"))
      << r.response.choice_error();
  ExpectRefused(Bind(kVf), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_HOST_PRECONDITION",
                {kVf, "no firmware answer", "nothing was changed"});
  preferences_[kVf] = host::ModulePreference{"virtio_vfio_pci", "plugin acme"};
  ExpectRefused(Bind(kVf), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_HOST_PRECONDITION",
                {"plugin acme prefers driver \"virtio_vfio_pci\"",
                 "choose the driver explicitly"});
  EXPECT_TRUE(kernel_.writes().empty());
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kVf).has_value());
}

TEST_F(HostServiceTest, AnAllocationTakesThePluginsPreference) {
  preferences_[kVf] = host::ModulePreference{"vfio_pci", "plugin acme"};
  auto r = Allocate("dom-1", {{"a", PciClass("15b3:101e")}});
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.devices(0).address(), kVf);
  EXPECT_EQ(r.response.devices(0).driver(), "vfio-pci");
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
}

// The claiming plugin's prepare_host (here stood in for by the fixture's
// prepare_host; driver_preference_test has the real plugin): a bind asks it
// once, after the unbind and before the probe, and only when the device
// moves.
TEST_F(HostServiceTest, ABindPreparesTheHostBetweenTheUnbindAndTheProbe) {
  Result<v1::HostDevice> r = Bind(kVf);
  ASSERT_TRUE(r.status.ok()) << Describe(r);
  EXPECT_EQ(r.response.driver(), "mlx5_vfio_pci");
  const std::string dir = absl::StrCat("/sys/bus/pci/devices/", kVf);
  {
    absl::MutexLock lock(&prepared_mu_);
    ASSERT_EQ(prepared_.size(), 1u);
    EXPECT_EQ(prepared_[0].bdf, kVf);
    EXPECT_EQ(prepared_[0].writes_before,
              (Writes{absl::StrCat(dir, "/driver_override := mlx5_vfio_pci"),
                      absl::StrCat(dir, "/driver/unbind := ", kVf)}));
  }
  EXPECT_EQ(kernel_.writes().back(),
            absl::StrCat("/sys/bus/pci/drivers_probe := ", kVf));
  ASSERT_TRUE(Bind(kVf).status.ok());  // nothing to do
  ASSERT_TRUE(Unbind(kVf).status.ok());
  absl::MutexLock lock(&prepared_mu_);
  EXPECT_EQ(prepared_.size(), 1u);
}

TEST_F(HostServiceTest, AFailedPrepareFailsTheBindRolledBackAndForgotten) {
  prepare_errors_[kVf] = absl::FailedPreconditionError(
      "plugin acme: preparing the host for device 0000:03:00.1 failed: no "
      "devlink port for VF 1");
  const auto before = kernel_.Snapshot();
  ExpectRefused(Bind(kVf, "vfio-pci"), grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_ERROR",
                {"bind to vfio-pci failed: before the probe: plugin acme", kVf,
                 "no devlink port for VF 1", "rolled back",
                 "the device is on mlx5_core with driver_override (null)"});
  EXPECT_EQ(kernel_.Snapshot(), before);
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kVf).has_value());
  Stop();
  Start();
  EXPECT_FALSE(store_->Find(host::Bus::kPci, kVf).has_value());
}

TEST_F(HostServiceTest, AnAllocationPreparesTheHostAndFailsWithIt) {
  prepare_errors_[kVf] = absl::FailedPreconditionError(
      "plugin acme: preparing the host for device 0000:03:00.1 failed: no "
      "devlink port for VF 1");
  ExpectRefused(Allocate("dom-1", {{"a", PciClass("15b3:101e")}}),
                grpc::StatusCode::FAILED_PRECONDITION,
                "ERROR_REASON_DEVICE_ERROR",
                {kVf, "plugin acme", "no devlink port for VF 1"});
  EXPECT_EQ(DriverOf(kVf), "mlx5_core");
  EXPECT_EQ(Allocations().response.devices_size(), 0);
  EXPECT_TRUE(store_->List().empty());

  prepare_errors_.clear();
  ASSERT_TRUE(Allocate("dom-1", {{"a", PciClass("15b3:101e")}}).status.ok());
  EXPECT_EQ(DriverOf(kVf), "mlx5_vfio_pci");
  absl::MutexLock lock(&prepared_mu_);
  ASSERT_EQ(prepared_.size(), 2u);
  EXPECT_EQ(prepared_[1].bdf, kVf);
}

}  // namespace
}  // namespace migd::server
