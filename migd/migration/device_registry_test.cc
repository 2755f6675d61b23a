// migd/migration/device_registry_test.cc

#include "migd/migration/device_registry.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "migd/device/emulated_device.h"

namespace migd::migration {
namespace {

std::unique_ptr<device::Device> Emulated(const std::string& name) {
  device::EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = 4096;
  return *device::EmulatedDevice::Create(c);
}

TEST(DeviceRegistry, RemoveHandsBackAFreeDevice) {
  DeviceRegistry registry;
  ASSERT_TRUE(registry.Add(Emulated("a")).ok());
  ASSERT_TRUE(registry.Add(Emulated("b")).ok());
  std::shared_ptr<device::Device> held = registry.Hold("a");
  ASSERT_NE(held, nullptr);
  absl::Status gone = registry.Remove("a");
  ASSERT_TRUE(gone.ok()) << gone;
  EXPECT_EQ(registry.Find("a"), nullptr);
  EXPECT_EQ(registry.Hold("a"), nullptr);
  EXPECT_EQ(held->name(), "a");  // still open for who holds it
  EXPECT_EQ(registry.Names(), std::vector<std::string>{"b"});
  // The name may be used again.
  EXPECT_TRUE(registry.Add(Emulated("a")).ok());
}

TEST(DeviceRegistry, RemoveRefusesAClaimedDeviceNamingTheJob) {
  DeviceRegistry registry;
  ASSERT_TRUE(registry.Add(Emulated("a")).ok());
  ASSERT_TRUE(registry.Claim({"a"}, "job-1").ok());
  absl::Status gone = registry.Remove("a");
  EXPECT_EQ(gone.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(base::ReasonOf(gone), v1::ERROR_REASON_DEVICE_BUSY);
  EXPECT_NE(gone.message().find("job-1"), std::string::npos);
  EXPECT_NE(registry.Find("a"), nullptr);
  registry.Release("job-1");
  EXPECT_TRUE(registry.Remove("a").ok());
  EXPECT_EQ(registry.Remove("a").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace migd::migration
