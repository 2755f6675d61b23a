#include "migd/server/device_config.h"

#include "gtest/gtest.h"

namespace migd::server {
namespace {

TEST(ParseDevicesConfig, SkipsBlankAndCommentLines) {
  auto configs = ParseDevicesConfig(
      "# devices\n\nemulated emu0 size=1MiB seed=3\n  \nemulated emu1\n");
  ASSERT_TRUE(configs.ok()) << configs.status();
  ASSERT_EQ(configs->size(), 2u);
  EXPECT_EQ((*configs)[0].name, "emu0");
  EXPECT_EQ((*configs)[0].state_size, 1u << 20);
  EXPECT_EQ((*configs)[0].seed, 3u);
  EXPECT_EQ((*configs)[1].name, "emu1");
}

TEST(ParseDevicesConfig, ErrorNamesTheLine) {
  auto configs = ParseDevicesConfig("emulated emu0\nemulated emu1 size=lots\n");
  ASSERT_FALSE(configs.ok());
  EXPECT_NE(configs.status().message().find("line 2"), absl::string_view::npos)
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

}  // namespace
}  // namespace migd::server
