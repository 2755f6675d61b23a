// The compatibility checks, in the order compat.h gives them, with a real
// plugin (testdata/test_plugin.c, "current": it claims emulated devices and
// compares their parameters).

#include "migd/plugins/compat.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"

namespace migd::plugins {
namespace {

std::string& PluginPath() {
  static auto* path = new std::string();
  return *path;
}

constexpr uint64_t kStopCopy = 1;

DeviceFacts Emulated(const std::string& name, const std::string& params) {
  DeviceFacts d;
  d.name = name;
  d.backend = "emulated";
  d.parameters = params;
  d.migration_flags = kStopCopy;
  return d;
}

DeviceFacts Vfio(const std::string& name) {
  DeviceFacts d;
  d.name = name;
  d.backend = "vfio";
  d.migration_flags = kStopCopy;
  return d;
}

class CompatTest : public testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(registry_.Load(PluginPath()).ok()); }

  // The session-header descriptor a source with `facts` sends.
  v1::DeviceDescriptor SourceSends(const DeviceFacts& facts) {
    Binding b = BindDevices(registry_, {facts})[facts.name];
    v1::DeviceDescriptor d;
    d.set_source_device(facts.name);
    d.set_kind(facts.backend);
    d.set_migration_flags(facts.migration_flags);
    absl::StatusOr<v1::CompatDescriptor> c = DescribeSource(b);
    EXPECT_TRUE(c.ok()) << c.status();
    if (c.ok()) *d.mutable_compat() = *c;
    return d;
  }

  std::optional<Incompatibility> Check(const DeviceFacts& local,
                                       const v1::DeviceDescriptor& source) {
    Binding b = BindDevices(registry_, {local})[local.name];
    auto r = CheckDestination(b, local.migration_flags, source);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nullopt;
  }

  Registry registry_;
};

TEST_F(CompatTest, TheSamePluginAndEqualDescriptorsAreCompatible) {
  v1::DeviceDescriptor s = SourceSends(Emulated("src0", "format=1"));
  EXPECT_EQ(s.compat().plugin(), "current");
  EXPECT_EQ(s.compat().data(), "format=1");
  EXPECT_FALSE(Check(Emulated("dst0", "format=1"), s).has_value());
}

TEST_F(CompatTest, ThePluginsVerdictNamesTheFieldAndBothValues) {
  v1::DeviceDescriptor s = SourceSends(Emulated("src0", "format=1"));
  std::optional<Incompatibility> why = Check(Emulated("dst0", "format=2"), s);
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->field, "parameters");
  EXPECT_EQ(why->source_value, "format=1");
  EXPECT_EQ(why->destination_value, "format=2");
  absl::Status e = IncompatibleError("dst0", "src0", *why);
  EXPECT_EQ(base::ReasonOf(e), v1::ERROR_REASON_INCOMPATIBLE);
  EXPECT_TRUE(absl::StrContains(e.message(), "device dst0")) << e;
  EXPECT_TRUE(absl::StrContains(e.message(), "src0")) << e;
  EXPECT_TRUE(absl::StrContains(
      e.message(),
      "parameters differs (source format=1, destination format=2)"))
      << e;
}

TEST_F(CompatTest, AnotherBackendIsIncompatibleBeforeAnyPluginIsAsked) {
  v1::DeviceDescriptor s = SourceSends(Emulated("src0", "format=1"));
  std::optional<Incompatibility> why = Check(Vfio("dst0"), s);
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->field, "kind");
  EXPECT_EQ(why->source_value, "emulated");
  EXPECT_EQ(why->destination_value, "vfio");
}

TEST_F(CompatTest, ADestinationThatCannotLoadAStateIsIncompatible) {
  v1::DeviceDescriptor s = SourceSends(Emulated("src0", "format=1"));
  DeviceFacts local = Emulated("dst0", "format=1");
  local.migration_flags = 0;
  std::optional<Incompatibility> why = Check(local, s);
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(why->field, "stop_copy");
}

// A descriptor is read only by the plugin that made it.
TEST_F(CompatTest, ADeviceNoPluginClaimsOnOneSideIsIncompatible) {
  v1::DeviceDescriptor s = SourceSends(Emulated("src0", "format=1"));
  Binding unclaimed;
  unclaimed.facts = Emulated("dst0", "format=1");
  auto why = CheckDestination(unclaimed, kStopCopy, s);
  ASSERT_TRUE(why.ok()) << why.status();
  ASSERT_TRUE(why->has_value());
  EXPECT_EQ((*why)->field, "plugin");
  EXPECT_EQ((*why)->source_value, "current");
  EXPECT_EQ((*why)->destination_value, "(none)");
}

TEST_F(CompatTest, DevicesNoPluginClaimsGetTheGenericChecksOnly) {
  v1::DeviceDescriptor s = SourceSends(Vfio("src0"));
  EXPECT_EQ(s.compat().plugin(), "");
  EXPECT_FALSE(Check(Vfio("dst0"), s).has_value());
}

TEST_F(CompatTest, AClaimConflictFailsEveryUseOfTheDevice) {
  Binding b;
  b.facts = Emulated("dst0", "");
  b.claim = absl::FailedPreconditionError("plugins a and b both claim it");
  EXPECT_FALSE(DescribeSource(b).ok());
  EXPECT_FALSE(CheckDestination(b, kStopCopy, v1::DeviceDescriptor()).ok());
}

}  // namespace
}  // namespace migd::plugins

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--current=")) {
      migd::plugins::PluginPath() = std::string(arg);
    }
  }
  return RUN_ALL_TESTS();
}
