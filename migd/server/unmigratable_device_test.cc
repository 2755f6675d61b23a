// migd/server/unmigratable_device_test.cc
//
// A kernel VFIO device whose driver offers no VFIO migration (vfio-pci on a
// device without a variant driver: VFIO_DEVICE_FEATURE_MIGRATION answers
// ENOTTY) is still the agent's: ListDevices shows it with migration_flags 0,
// and every migration of it is refused up front, naming the device and
// saying why, before it is claimed. In process over gRPC; the device is a
// VfioDevice over a fake kernel whose every ioctl answers ENOTTY.

#include <errno.h>
#include <fcntl.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/device/emulated_device.h"
#include "migd/device/vfio_device.h"
#include "migd/migration/device_registry.h"
#include "migd/migration/job_table.h"
#include "migd/plugins/registry.h"
#include "migd/server/compatibility.h"
#include "migd/server/migration_service.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace migd::server {
namespace {

constexpr char kWhy[] =
    "device nvf0 (0000:03:00.1): its driver vfio-pci offers no VFIO "
    "migration (VFIO_DEVICE_FEATURE_MIGRATION: ENOTTY); bind a variant "
    "driver that does";

std::unique_ptr<device::Device> WithoutMigration() {
  device::VfioSyscalls sys = device::VfioSyscalls::Real();
  sys.ioctl = [](int, unsigned long, void*) {
    errno = ENOTTY;
    return -1;
  };
  absl::StatusOr<std::unique_ptr<device::VfioDevice>> d =
      device::VfioDevice::Create(
          "nvf0", "0000:03:00.1",
          base::UniqueFd(open("/dev/null", O_RDWR | O_CLOEXEC)), nullptr, sys,
          "vfio-pci");
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *std::move(d) : nullptr;
}

std::unique_ptr<device::Device> Emulated(const std::string& name) {
  device::EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = 4096;
  return *device::EmulatedDevice::Create(c);
}

class UnmigratableDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.Add(WithoutMigration()).ok());
    ASSERT_TRUE(registry_.Add(Emulated("emu0")).ok());
    compat_ = std::make_unique<Compatibility>(
        std::make_unique<plugins::Registry>(),
        std::vector<plugins::LoadFailure>{}, "",
        std::vector<plugins::DeviceFacts>{}, &registry_);
    MigrationServiceOptions o;
    o.compatibility = compat_.get();
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
  }

  static std::string Reason(const grpc::ClientContext& ctx) {
    const auto& trailers = ctx.GetServerTrailingMetadata();
    auto it = trailers.find("migd-error-reason");
    return it == trailers.end()
               ? ""
               : std::string(it->second.data(), it->second.size());
  }

  migration::DeviceRegistry registry_;
  migration::JobTable jobs_;
  std::unique_ptr<Compatibility> compat_;
  std::unique_ptr<MigrationServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::MigrationService::Stub> stub_;
};

TEST_F(UnmigratableDeviceTest, ListedWithMigrationFlagsZero) {
  grpc::ClientContext ctx;
  v1::ListDevicesResponse r;
  ASSERT_TRUE(stub_->ListDevices(&ctx, v1::ListDevicesRequest(), &r).ok());
  bool found = false;
  for (const v1::Device& d : r.devices()) {
    if (d.name() != "nvf0") continue;
    found = true;
    EXPECT_EQ(d.kind(), "vfio");
    EXPECT_EQ(d.migration_flags(), 0u);
    EXPECT_EQ(d.job_id(), "");
  }
  EXPECT_TRUE(found) << r.DebugString();
}

TEST_F(UnmigratableDeviceTest, PrepareIncomingIsRefusedNamingWhy) {
  v1::PrepareIncomingRequest req;
  req.set_job_id("job-1");
  v1::DevicePair* p = req.add_devices();
  p->set_source_device("src0");
  p->set_destination_device("nvf0");
  grpc::ClientContext ctx;
  v1::PrepareIncomingResponse r;
  grpc::Status s = stub_->PrepareIncoming(&ctx, req, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), kWhy);
  EXPECT_EQ(Reason(ctx), "ERROR_REASON_DEVICE_ERROR");
  EXPECT_EQ(registry_.Owner("nvf0"), "");  // never claimed
}

TEST_F(UnmigratableDeviceTest, StartMigrationIsRefusedNamingWhy) {
  v1::StartMigrationRequest req;
  req.set_job_id("job-2");
  req.set_destination("127.0.0.1:1");
  req.set_transfer_token("t");
  v1::DevicePair* p = req.add_devices();
  p->set_source_device("nvf0");
  p->set_destination_device("dst0");
  grpc::ClientContext ctx;
  v1::Migration r;
  grpc::Status s = stub_->StartMigration(&ctx, req, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), kWhy);
  EXPECT_EQ(Reason(ctx), "ERROR_REASON_DEVICE_ERROR");
  EXPECT_EQ(registry_.Owner("nvf0"), "");
}

TEST_F(UnmigratableDeviceTest, CheckMigrationReportsNoMigrationSupport) {
  v1::CheckMigrationRequest req;
  req.set_destination("127.0.0.1:1");
  v1::DevicePair* p = req.add_devices();
  p->set_source_device("nvf0");
  p->set_destination_device("dst0");
  grpc::ClientContext ctx;
  v1::CheckMigrationResponse r;
  ASSERT_TRUE(stub_->CheckMigration(&ctx, req, &r).ok());
  ASSERT_EQ(r.devices_size(), 1);
  bool found = false;
  for (const v1::MigrationBlocker& b : r.devices(0).blockers()) {
    if (b.kind() == v1::MigrationBlocker::KIND_NO_MIGRATION_SUPPORT) {
      found = true;
      EXPECT_EQ(b.message(), kWhy);
    }
  }
  EXPECT_TRUE(found) << r.DebugString();
}

}  // namespace
}  // namespace migd::server
