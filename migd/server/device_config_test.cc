#include "migd/server/device_config.h"

#include <stdlib.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "migd/device/emulated_device.h"
#include "migd/device/vfio_spec.h"
#include "migd/server/builtin_backends.h"
#include "migd/server/emulated_backend.h"
#include "migd/server/vfio_backend.h"

namespace migd::server {
namespace {

using device::VfioDeviceConfig;

constexpr char kToken[] = "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8a11";

DeviceBackends Builtin() { return BuiltinDeviceBackends().value(); }

absl::StatusOr<std::vector<std::unique_ptr<DeviceSpec>>> Parse(
    absl::string_view text) {
  return ParseDevicesConfig(text, Builtin());
}

const device::EmulatedDeviceConfig* Emulated(const DeviceSpec& spec) {
  const auto* e = dynamic_cast<const EmulatedSpec*>(&spec);
  return e == nullptr ? nullptr : &e->config();
}

const VfioDeviceConfig* Vfio(const DeviceSpec& spec) {
  const auto* v = dynamic_cast<const VfioSpec*>(&spec);
  return v == nullptr ? nullptr : &v->config();
}

TEST(ParseDevicesConfig, SkipsBlankAndCommentLines) {
  auto specs =
      Parse("# devices\n\nemulated emu0 size=1MiB seed=3\n  \nemulated emu1\n");
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 2u);
  const device::EmulatedDeviceConfig* emu0 = Emulated(*(*specs)[0]);
  ASSERT_NE(emu0, nullptr);
  EXPECT_EQ(emu0->name, "emu0");
  EXPECT_EQ(emu0->state_size, 1u << 20);
  EXPECT_EQ(emu0->seed, 3u);
  EXPECT_EQ((*specs)[1]->name(), "emu1");
}

TEST(ParseDevicesConfig, ErrorNamesTheLine) {
  auto specs = Parse("emulated emu0\nemulated emu1 size=lots\n");
  ASSERT_FALSE(specs.ok());
  EXPECT_NE(specs.status().message().find("line 2"), absl::string_view::npos)
      << specs.status();
}

TEST(ParseDevicesConfig, EachLineChoosesItsBackend) {
  auto specs = Parse(
      "emulated emu0\n"
      "vfio edu0 bdf=0000:00:04.0\n"
      "vfio vf1 bdf=0000:3b:02.1 vf_token=" +
      std::string(kToken) +
      "\n"
      "vfio g0 mdev=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001\n"
      "vfio c0 cdev=/dev/vfio/devices/vfio0\n"
      "vfio h0 fd_socket=/run/vmm/edu0.sock\n");
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 6u);
  EXPECT_NE(Emulated(*(*specs)[0]), nullptr);
  EXPECT_EQ((*specs)[0]->kind(), "emulated");
  for (size_t i = 1; i < 6; ++i) {
    ASSERT_NE(Vfio(*(*specs)[i]), nullptr) << i;
    EXPECT_EQ((*specs)[i]->kind(), "vfio") << i;
  }
  const VfioDeviceConfig& edu0 = *Vfio(*(*specs)[1]);
  EXPECT_EQ(edu0.name, "edu0");
  EXPECT_EQ(edu0.source, VfioDeviceConfig::Source::kPci);
  EXPECT_EQ(edu0.address, "0000:00:04.0");
  EXPECT_FALSE(edu0.vf_token.has_value());
  EXPECT_EQ(Vfio(*(*specs)[2])->vf_token, kToken);
  EXPECT_EQ(Vfio(*(*specs)[3])->source, VfioDeviceConfig::Source::kMdev);
  EXPECT_EQ(Vfio(*(*specs)[4])->source, VfioDeviceConfig::Source::kCdev);
  EXPECT_EQ(Vfio(*(*specs)[5])->source, VfioDeviceConfig::Source::kFdSocket);
}

TEST(ParseDevicesConfig, VfioErrorsNameTheLineAndTheToken) {
  auto specs =
      Parse("emulated emu0\n# kernel devices\nvfio edu0 bdf=00:04.0\n");
  ASSERT_FALSE(specs.ok());
  EXPECT_EQ(specs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(specs.status().message(), "line 3: "))
      << specs.status();
  EXPECT_TRUE(absl::StrContains(specs.status().message(), "bdf=00:04.0"))
      << specs.status();
}

TEST(ParseDevicesConfig, UnknownKindNamesTheLineAndTheWord) {
  auto specs = Parse("emulated emu0\nvdpa x y=z\n");
  ASSERT_FALSE(specs.ok());
  EXPECT_TRUE(absl::StrContains(specs.status().message(), "line 2"))
      << specs.status();
  EXPECT_TRUE(absl::StrContains(specs.status().message(), "\"vdpa\""))
      << specs.status();
}

TEST(ParseDevicesConfig, NeverEchoesAVfToken) {
  const std::string secret = "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8aZZ";
  auto specs = Parse("vfio vf1 bdf=0000:00:04.0 vf_token=" + secret + "\n");
  ASSERT_FALSE(specs.ok());
  EXPECT_FALSE(absl::StrContains(specs.status().message(), "4b0b3a6e"))
      << specs.status();
}

TEST(ParseDevicesConfig, ANameUsedTwiceNamesBothLines) {
  auto specs = Parse("emulated dev0\nvfio dev0 bdf=0000:00:04.0\n");
  ASSERT_FALSE(specs.ok());
  EXPECT_TRUE(absl::StrContains(specs.status().message(), "line 2"))
      << specs.status();
  EXPECT_TRUE(absl::StrContains(specs.status().message(), "line 1"))
      << specs.status();
}

TEST(ParseDevicesConfig, AKernelDeviceConfiguredTwiceIsRefused) {
  auto specs = Parse("vfio a bdf=0000:00:04.0\nvfio b bdf=0000:00:04.0\n");
  ASSERT_FALSE(specs.ok());
  EXPECT_TRUE(absl::StrContains(specs.status().message(),
                                "bdf=0000:00:04.0 is already configured on "
                                "line 1"))
      << specs.status();
}

TEST(EmulatedFromList, NamesGetDistinctSeedsThatRepeatAcrossCalls) {
  auto a = EmulatedFromList("emu0,emu1", 4096, 7);
  auto b = EmulatedFromList("emu0", 4096, 7);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), 2u);
  const auto* a0 = Emulated(*(*a)[0]);
  const auto* a1 = Emulated(*(*a)[1]);
  const auto* b0 = Emulated(*(*b)[0]);
  ASSERT_TRUE(a0 != nullptr && a1 != nullptr && b0 != nullptr);
  EXPECT_NE(a0->seed, a1->seed);
  EXPECT_EQ(a0->seed, b0->seed);
  EXPECT_EQ(a1->state_size, 4096u);
}

TEST(EmulatedFromList, RefusesBadNames) {
  EXPECT_FALSE(EmulatedFromList("emu0,bad name", 4096, 1).ok());
}

TEST(BuildDevices, RefusesADuplicateName) {
  auto specs = EmulatedFromList("emu0", 4096, 1);
  ASSERT_TRUE(specs.ok());
  auto again = EmulatedFromList("emu0", 4096, 1);
  ASSERT_TRUE(again.ok());
  specs->push_back(std::move((*again)[0]));
  EXPECT_EQ(BuildDevices(*specs, Builtin()).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(BuildDevices, AMissingKernelDeviceFailsNamingIt) {
  // An empty sysfs: no such PCI device.
  char dir[] = "/tmp/migd-config-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  BuildOptions options;
  options.vfio_paths.sys = std::string(dir) + "/sys";
  options.vfio_paths.dev = std::string(dir) + "/dev";
  DeviceBackends backends = Builtin();
  auto specs = ParseDevicesConfig(
      "emulated emu0 size=4096\nvfio edu0 bdf=0000:00:04.0\n", backends);
  ASSERT_TRUE(specs.ok()) << specs.status();
  auto registry = BuildDevices(*specs, backends, options);
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
  DeviceBackends backends = Builtin();
  auto specs = ParseDevicesConfig(
      "vfio h0 fd_socket=/nonexistent/migd-vmm.sock\n", backends);
  ASSERT_TRUE(specs.ok()) << specs.status();
  auto registry = BuildDevices(*specs, backends, options);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(registry.status().message(),
                                "/nonexistent/migd-vmm.sock"))
      << registry.status();
  EXPECT_TRUE(absl::StrContains(registry.status().message(), "h0"))
      << registry.status();
}

// A backend device_config has never heard of, registered only here:
// "probe NAME slot=N". Its devices are emulated ones underneath. It counts
// the openers it makes and the devices they open.
struct ProbeCounts {
  int openers = 0;
  int opens = 0;
};

class ProbeSpec final : public DeviceSpec {
 public:
  ProbeSpec(std::string name, int slot) : name_(std::move(name)), slot_(slot) {}
  int slot() const { return slot_; }
  const std::string& name() const override { return name_; }
  std::string kind() const override { return "probe"; }
  std::optional<std::string> AddressKey() const override {
    return absl::StrCat("slot=", slot_);
  }
  void AddFacts(plugins::DeviceFacts& facts,
                const device::VfioPaths&) const override {
    facts.parameters = absl::StrCat("slot=", slot_);
  }

 private:
  const std::string name_;
  const int slot_;
};

class ProbeOpener final : public DeviceOpener {
 public:
  explicit ProbeOpener(ProbeCounts* counts) : counts_(counts) {}
  absl::StatusOr<std::unique_ptr<device::Device>> Open(
      const DeviceSpec& spec) override {
    ++counts_->opens;
    device::EmulatedDeviceConfig c;
    c.name = spec.name();
    c.state_size = 4096;
    auto made = device::EmulatedDevice::Create(c);
    if (!made.ok()) return made.status();
    return std::unique_ptr<device::Device>(*std::move(made));
  }

 private:
  ProbeCounts* const counts_;
};

class ProbeBackend final : public DeviceBackend {
 public:
  explicit ProbeBackend(ProbeCounts* counts) : counts_(counts) {}
  std::string kind() const override { return "probe"; }
  absl::StatusOr<std::unique_ptr<DeviceSpec>> Parse(
      absl::string_view line) const override {
    std::vector<absl::string_view> words =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    int slot = 0;
    if (words.size() != 3 || !absl::StartsWith(words[2], "slot=") ||
        !absl::SimpleAtoi(words[2].substr(5), &slot)) {
      return absl::InvalidArgumentError("want: probe NAME slot=N");
    }
    return std::make_unique<ProbeSpec>(std::string(words[1]), slot);
  }
  std::unique_ptr<DeviceOpener> NewOpener(const BuildOptions&) const override {
    ++counts_->openers;
    return std::make_unique<ProbeOpener>(counts_);
  }

 private:
  ProbeCounts* const counts_;
};

DeviceBackends WithProbe(ProbeCounts* counts) {
  DeviceBackends backends = Builtin();
  EXPECT_TRUE(backends.Register(std::make_unique<ProbeBackend>(counts)).ok());
  return backends;
}

TEST(DeviceConfigBackends, ANewKindIsParsedAndBuiltWithOneOpenerPerBuild) {
  ProbeCounts counts;
  DeviceBackends backends = WithProbe(&counts);
  auto specs = ParseDevicesConfig(
      "emulated emu0 size=4096\nprobe p0 slot=1\nprobe p1 slot=2\n", backends);
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 3u);
  const auto* p0 = dynamic_cast<const ProbeSpec*>((*specs)[1].get());
  ASSERT_NE(p0, nullptr);
  EXPECT_EQ(p0->name(), "p0");
  EXPECT_EQ(p0->slot(), 1);

  auto registry = BuildDevices(*specs, backends);
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_EQ((*registry)->Names(),
            (std::vector<std::string>{"emu0", "p0", "p1"}));
  EXPECT_EQ(counts.openers, 1);
  EXPECT_EQ(counts.opens, 2);
}

TEST(DeviceConfigBackends, ANewKindsAddressKeyRefusesTheSameDeviceTwice) {
  ProbeCounts counts;
  auto specs = ParseDevicesConfig("probe a slot=3\n\nprobe b slot=3\n",
                                  WithProbe(&counts));
  ASSERT_FALSE(specs.ok());
  EXPECT_TRUE(absl::StrContains(
      specs.status().message(),
      "line 3: device b: slot=3 is already configured on line 1"))
      << specs.status();
}

TEST(DeviceConfigBackends, ANewKindsErrorsNameTheLine) {
  ProbeCounts counts;
  auto specs = ParseDevicesConfig("emulated emu0\nprobe p0 slot=x\n",
                                  WithProbe(&counts));
  ASSERT_FALSE(specs.ok());
  EXPECT_EQ(specs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(specs.status().message(), "line 2: want: probe NAME slot=N")
      << specs.status();
}

TEST(DeviceConfigBackends, UnknownKindListsTheRegisteredKinds) {
  auto builtin = Parse("vdpa x y=z\n");
  ASSERT_FALSE(builtin.ok());
  EXPECT_TRUE(absl::StrContains(builtin.status().message(),
                                "unknown device kind (want emulated or vfio)"))
      << builtin.status();

  ProbeCounts counts;
  auto more = ParseDevicesConfig("vdpa x y=z\n", WithProbe(&counts));
  ASSERT_FALSE(more.ok());
  EXPECT_TRUE(absl::StrContains(more.status().message(),
                                "(want emulated, probe or vfio)"))
      << more.status();

  auto none = ParseDevicesConfig("emulated emu0\n", DeviceBackends());
  ASSERT_FALSE(none.ok());
  EXPECT_TRUE(absl::StrContains(none.status().message(),
                                "no device kinds are registered"))
      << none.status();
}

TEST(DeviceConfigBackends, BuildingAKindNotRegisteredFailsNamingTheDevice) {
  ProbeCounts counts;
  auto specs = ParseDevicesConfig("probe p0 slot=1\n", WithProbe(&counts));
  ASSERT_TRUE(specs.ok()) << specs.status();
  auto registry = BuildDevices(*specs, Builtin());
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(registry.status().message(), "device p0"))
      << registry.status();
  EXPECT_TRUE(absl::StrContains(registry.status().message(), "\"probe\""))
      << registry.status();
  EXPECT_EQ(counts.opens, 0);
}

}  // namespace
}  // namespace migd::server
