#include "migd/server/device_facts.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "migd/server/builtin_backends.h"
#include "migd/server/device_config.h"
#include "migd/server/emulated_backend.h"

namespace migd::server {
namespace {

TEST(FactsOf, EachSpecAddsWhatItsConfigurationKnows) {
  DeviceBackends backends = BuiltinDeviceBackends().value();
  auto specs = ParseDevicesConfig(
      "emulated emu0 size=4096 format=3\nemulated emu1 size=8192\n", backends);
  ASSERT_TRUE(specs.ok()) << specs.status();
  auto devices = BuildDevices(*specs, backends);
  ASSERT_TRUE(devices.ok()) << devices.status();

  std::vector<plugins::DeviceFacts> facts = FactsOf(*specs, **devices);
  ASSERT_EQ(facts.size(), 2u);
  EXPECT_EQ(facts[0].name, "emu0");
  EXPECT_EQ(facts[0].backend, "emulated");
  EXPECT_NE(facts[0].migration_flags, 0u);
  EXPECT_EQ(facts[0].parameters, "format=3 size=4096");
  EXPECT_EQ(facts[1].parameters, "format=1 size=8192");
}

TEST(FactsOf, SkipsASpecWhoseDeviceIsNotRegistered) {
  DeviceBackends backends = BuiltinDeviceBackends().value();
  auto built = EmulatedFromList("emu0", 4096, 1);
  auto more = EmulatedFromList("emu1", 4096, 1);
  ASSERT_TRUE(built.ok() && more.ok());
  auto devices = BuildDevices(*built, backends);
  ASSERT_TRUE(devices.ok()) << devices.status();
  built->push_back(std::move((*more)[0]));

  std::vector<plugins::DeviceFacts> facts = FactsOf(*built, **devices);
  ASSERT_EQ(facts.size(), 1u);
  EXPECT_EQ(facts[0].name, "emu0");
}

}  // namespace
}  // namespace migd::server
