#include "migd/server/device_config.h"

#include <stdlib.h>
#include <unistd.h>

#include <variant>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace migd::server {
namespace {

using device::EmulatedDeviceConfig;
using device::VfioDeviceConfig;

constexpr char kToken[] = "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8a11";

TEST(ParseDevicesConfig, SkipsBlankAndCommentLines) {
  auto configs = ParseDevicesConfig(
      "# devices\n\nemulated emu0 size=1MiB seed=3\n  \nemulated emu1\n");
  ASSERT_TRUE(configs.ok()) << configs.status();
  ASSERT_EQ(configs->size(), 2u);
  const auto& emu0 = std::get<EmulatedDeviceConfig>((*configs)[0]);
  EXPECT_EQ(emu0.name, "emu0");
  EXPECT_EQ(emu0.state_size, 1u << 20);
  EXPECT_EQ(emu0.seed, 3u);
  EXPECT_EQ(DeviceConfigName((*configs)[1]), "emu1");
}

TEST(ParseDevicesConfig, ErrorNamesTheLine) {
  auto configs = ParseDevicesConfig("emulated emu0\nemulated emu1 size=lots\n");
  ASSERT_FALSE(configs.ok());
  EXPECT_NE(configs.status().message().find("line 2"), absl::string_view::npos)
      << configs.status();
}

TEST(ParseDevicesConfig, EachLineChoosesItsBackend) {
  auto configs = ParseDevicesConfig(
      "emulated emu0\n"
      "vfio edu0 bdf=0000:00:04.0\n"
      "vfio vf1 bdf=0000:3b:02.1 vf_token=" +
      std::string(kToken) +
      "\n"
      "vfio g0 mdev=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001\n"
      "vfio c0 cdev=/dev/vfio/devices/vfio0\n"
      "vfio h0 fd_socket=/run/vmm/edu0.sock\n");
  ASSERT_TRUE(configs.ok()) << configs.status();
  ASSERT_EQ(configs->size(), 6u);
  EXPECT_TRUE(std::holds_alternative<EmulatedDeviceConfig>((*configs)[0]));
  const auto& edu0 = std::get<VfioDeviceConfig>((*configs)[1]);
  EXPECT_EQ(edu0.name, "edu0");
  EXPECT_EQ(edu0.source, VfioDeviceConfig::Source::kPci);
  EXPECT_EQ(edu0.address, "0000:00:04.0");
  EXPECT_FALSE(edu0.vf_token.has_value());
  EXPECT_EQ(std::get<VfioDeviceConfig>((*configs)[2]).vf_token, kToken);
  EXPECT_EQ(std::get<VfioDeviceConfig>((*configs)[3]).source,
            VfioDeviceConfig::Source::kMdev);
  EXPECT_EQ(std::get<VfioDeviceConfig>((*configs)[4]).source,
            VfioDeviceConfig::Source::kCdev);
  EXPECT_EQ(std::get<VfioDeviceConfig>((*configs)[5]).source,
            VfioDeviceConfig::Source::kFdSocket);
}

TEST(ParseDevicesConfig, VfioErrorsNameTheLineAndTheToken) {
  auto configs = ParseDevicesConfig(
      "emulated emu0\n# kernel devices\nvfio edu0 bdf=00:04.0\n");
  ASSERT_FALSE(configs.ok());
  EXPECT_EQ(configs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(configs.status().message(), "line 3: "))
      << configs.status();
  EXPECT_TRUE(absl::StrContains(configs.status().message(), "bdf=00:04.0"))
      << configs.status();
}

TEST(ParseDevicesConfig, UnknownKindNamesTheLineAndTheWord) {
  auto configs = ParseDevicesConfig("emulated emu0\nvdpa x y=z\n");
  ASSERT_FALSE(configs.ok());
  EXPECT_TRUE(absl::StrContains(configs.status().message(), "line 2"))
      << configs.status();
  EXPECT_TRUE(absl::StrContains(configs.status().message(), "\"vdpa\""))
      << configs.status();
}

TEST(ParseDevicesConfig, NeverEchoesAVfToken) {
  const std::string secret = "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8aZZ";
  auto configs =
      ParseDevicesConfig("vfio vf1 bdf=0000:00:04.0 vf_token=" + secret + "\n");
  ASSERT_FALSE(configs.ok());
  EXPECT_FALSE(absl::StrContains(configs.status().message(), "4b0b3a6e"))
      << configs.status();
}

TEST(ParseDevicesConfig, ANameUsedTwiceNamesBothLines) {
  auto configs =
      ParseDevicesConfig("emulated dev0\nvfio dev0 bdf=0000:00:04.0\n");
  ASSERT_FALSE(configs.ok());
  EXPECT_TRUE(absl::StrContains(configs.status().message(), "line 2"))
      << configs.status();
  EXPECT_TRUE(absl::StrContains(configs.status().message(), "line 1"))
      << configs.status();
}

TEST(ParseDevicesConfig, AKernelDeviceConfiguredTwiceIsRefused) {
  auto configs =
      ParseDevicesConfig("vfio a bdf=0000:00:04.0\nvfio b bdf=0000:00:04.0\n");
  ASSERT_FALSE(configs.ok());
  EXPECT_TRUE(absl::StrContains(configs.status().message(),
                                "bdf=0000:00:04.0 is already configured on "
                                "line 1"))
      << configs.status();
}

TEST(EmulatedFromList, NamesGetDistinctSeedsThatRepeatAcrossCalls) {
  auto a = EmulatedFromList("emu0,emu1", 4096, 7);
  auto b = EmulatedFromList("emu0", 4096, 7);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), 2u);
  EXPECT_NE((*a)[0].seed, (*a)[1].seed);
  EXPECT_EQ((*a)[0].seed, (*b)[0].seed);
  EXPECT_EQ((*a)[1].state_size, 4096u);
}

TEST(EmulatedFromList, RefusesBadNames) {
  EXPECT_FALSE(EmulatedFromList("emu0,bad name", 4096, 1).ok());
}

TEST(BuildDevices, RefusesADuplicateName) {
  auto configs = EmulatedFromList("emu0", 4096, 1);
  ASSERT_TRUE(configs.ok());
  configs->push_back((*configs)[0]);
  EXPECT_EQ(BuildDevices(*configs).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(BuildDevices, AMissingKernelDeviceFailsNamingIt) {
  // An empty sysfs: no such PCI device.
  char dir[] = "/tmp/migd-config-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  BuildOptions options;
  options.vfio_paths.sys = std::string(dir) + "/sys";
  options.vfio_paths.dev = std::string(dir) + "/dev";
  auto configs = ParseDevicesConfig(
      "emulated emu0 size=4096\nvfio edu0 bdf=0000:00:04.0\n");
  ASSERT_TRUE(configs.ok()) << configs.status();
  auto registry = BuildDevices(*configs, options);
  rmdir(dir);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(registry.status().message(), "edu0"))
      << registry.status();
  EXPECT_TRUE(absl::StrContains(registry.status().message(), "0000:00:04.0"))
      << registry.status();
}

TEST(BuildDevices, AnFdSocketWithoutAVmmFailsNamingThePath) {
  BuildOptions options;
  options.handoff_timeout = absl::Milliseconds(100);
  auto configs =
      ParseDevicesConfig("vfio h0 fd_socket=/nonexistent/migd-vmm.sock\n");
  ASSERT_TRUE(configs.ok()) << configs.status();
  auto registry = BuildDevices(*configs, options);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(registry.status().message(),
                                "/nonexistent/migd-vmm.sock"))
      << registry.status();
  EXPECT_TRUE(absl::StrContains(registry.status().message(), "h0"))
      << registry.status();
}

}  // namespace
}  // namespace migd::server
