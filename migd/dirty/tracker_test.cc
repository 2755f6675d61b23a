#include "migd/dirty/tracker.h"

#include <memory>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "migd/device/emulated_device.h"

namespace migd::dirty {
namespace {

using device::EmulatedDevice;
using device::IovaRange;

std::unique_ptr<EmulatedDevice> MakeDevice(const std::string& name) {
  device::EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = 4096;
  auto d = EmulatedDevice::Create(c);
  EXPECT_TRUE(d.ok()) << d.status();
  return *std::move(d);
}

// Pages marked in a DirtyPages bitmap, as absolute IOVAs.
std::set<uint64_t> Pages(const v1::DirtyPages& p) {
  std::set<uint64_t> out;
  for (size_t byte = 0; byte < p.bitmap().size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      if ((static_cast<uint8_t>(p.bitmap()[byte]) >> bit) & 1) {
        out.insert(p.iova() + (byte * 8 + bit) * p.page_size());
      }
    }
  }
  return out;
}

TEST(ValidateTracking, RefusesBadPageSizesAlignmentAndOverlap) {
  EXPECT_TRUE(ValidateTracking(4096, {{0, 8192}, {8192, 4096}}).ok());
  EXPECT_FALSE(ValidateTracking(1000, {{0, 8192}}).ok());
  EXPECT_FALSE(ValidateTracking(4096, {}).ok());
  EXPECT_FALSE(ValidateTracking(4096, {{100, 4096}}).ok());
  EXPECT_FALSE(ValidateTracking(4096, {{0, 0}}).ok());
  absl::Status s = ValidateTracking(4096, {{0, 8192}, {4096, 4096}});
  EXPECT_NE(s.message().find("overlap"), absl::string_view::npos) << s;
  std::vector<IovaRange> many(257);
  for (size_t i = 0; i < many.size(); ++i) many[i] = {i * 4096, 4096};
  EXPECT_FALSE(ValidateTracking(4096, many).ok());
}

TEST(Tracker, ServesExactlyThePagesTheDeviceWroteMergingUntilTaken) {
  auto dev = MakeDevice("emu0");
  Tracker t({dev.get()}, 4096, {{0x100000, 0x10000}});
  ASSERT_TRUE(t.Start().ok());
  ASSERT_TRUE(dev->SimulateDmaWrite(0x101000, 10).ok());
  t.Collect(1, false);
  ASSERT_TRUE(dev->SimulateDmaWrite(0x105000, 0x2000).ok());
  t.Collect(2, false);  // not taken in between: merged
  std::vector<v1::DirtyPages> got;
  ASSERT_TRUE(t.Take(absl::Seconds(5), &got));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(Pages(got[0]), (std::set<uint64_t>{0x101000, 0x105000, 0x106000}));
  EXPECT_EQ(got[0].iteration(), 2u);
  EXPECT_FALSE(got[0].all_dirty());
  EXPECT_TRUE(t.notices().empty());
}

TEST(Tracker, FinalCollectionIsDeliveredThenTheStreamEnds) {
  auto dev = MakeDevice("emu0");
  Tracker t({dev.get()}, 4096, {{0, 0x4000}});
  ASSERT_TRUE(t.Start().ok());
  t.Collect(0, /*final=*/true);
  std::vector<v1::DirtyPages> got;
  ASSERT_TRUE(t.Take(absl::Seconds(5), &got));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].final());
  EXPECT_TRUE(Pages(got[0]).empty());
  got.clear();
  EXPECT_FALSE(t.Take(absl::Seconds(5), &got));
}

TEST(Tracker, NothingPendingTimesOutWithoutEnding) {
  auto dev = MakeDevice("emu0");
  Tracker t({dev.get()}, 4096, {{0, 0x4000}});
  ASSERT_TRUE(t.Start().ok());
  t.Collect(1, false);
  std::vector<v1::DirtyPages> got;
  EXPECT_TRUE(t.Take(absl::Milliseconds(1), &got));
  EXPECT_TRUE(got.empty());
}

// A device whose logging cannot start (here: already started by someone else)
// is reported all-dirty, and the tracker says so.
TEST(Tracker, DeviceThatCannotLogIsAllDirtyWithANotice) {
  auto dev = MakeDevice("emu0");
  ASSERT_TRUE(dev->StartDmaLogging(4096, {{0, 0x4000}}).ok());
  Tracker t({dev.get()}, 4096, {{0, 0x4000}});
  ASSERT_TRUE(t.Start().ok());
  t.Collect(1, false);
  std::vector<v1::DirtyPages> got;
  ASSERT_TRUE(t.Take(absl::Seconds(5), &got));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].all_dirty());
  ASSERT_EQ(t.notices().size(), 1u);
  EXPECT_NE(t.notices()[0].find("every page is reported dirty"),
            std::string::npos);
}

}  // namespace
}  // namespace migd::dirty
