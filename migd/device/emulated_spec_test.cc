#include "migd/device/emulated_spec.h"

#include <errno.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migd/device/emulated_device.h"
#include "migd/vfio/uapi.h"

namespace migd::device {
namespace {

using ::testing::HasSubstr;
using vfio::MigState;

TEST(ParseSize, AcceptsBytesAndBinarySuffixes) {
  EXPECT_EQ(ParseSize("0").value(), 0u);
  EXPECT_EQ(ParseSize("4096").value(), 4096u);
  EXPECT_EQ(ParseSize("4K").value(), 4096u);
  EXPECT_EQ(ParseSize("4KiB").value(), 4096u);
  EXPECT_EQ(ParseSize("64MiB").value(), uint64_t{64} << 20);
  EXPECT_EQ(ParseSize("64m").value(), uint64_t{64} << 20);
  EXPECT_EQ(ParseSize("2G").value(), uint64_t{2} << 30);
  EXPECT_EQ(ParseSize("2GiB").value(), uint64_t{2} << 30);
  EXPECT_EQ(ParseSize("18446744073709551615").value(), UINT64_MAX);
}

TEST(ParseSize, RejectsOtherForms) {
  for (const char* bad :
       {"", "K", "-1", "+1", " 1", "1 ", "1.5M", "1MB", "1Ki", "0x10", "1T",
        "18446744073709551616", "17179869184G"}) {
    absl::StatusOr<uint64_t> v = ParseSize(bad);
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(v.status().message()),
                HasSubstr(absl::StrCat("\"", bad, "\"")));
  }
}

TEST(ParseEmulatedDeviceLine, NameAloneGivesTheDefaults) {
  auto c = ParseEmulatedDeviceLine("emulated emu1");
  ASSERT_TRUE(c.ok()) << c.status();
  const EmulatedDeviceConfig defaults;
  EXPECT_EQ(c->name, "emu1");
  EXPECT_EQ(c->state_size, defaults.state_size);
  EXPECT_EQ(c->seed, defaults.seed);
  EXPECT_EQ(c->flags, defaults.flags);
  EXPECT_FALSE(c->fail_arc.has_value());
  EXPECT_FALSE(c->corrupt_stream_at.has_value());
  EXPECT_FALSE(c->fail_read.has_value());
  EXPECT_EQ(c->dirty_rate, 0u);
  EXPECT_EQ(c->dma_rate, 0u);
  EXPECT_EQ(c->dma_write_log, "");
  EXPECT_TRUE(c->dma_logging);
}

TEST(ParseEmulatedDeviceLine, ParsesEveryKey) {
  auto c = ParseEmulatedDeviceLine(
      "  emulated\tvf-0.1:a_b size=64MiB seed=0x2A "
      "flags=stop_copy|P2P|PRE_COPY fail_arc=PRE_COPY_P2P>stop_copy "
      "corrupt_stream_at=4K fail_read=enodev@64K dirty_rate=8MiB dma_rate=250 "
      "dma_write_log=/tmp/migd-dma.log dma_logging=OFF");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "vf-0.1:a_b");
  EXPECT_EQ(c->state_size, uint64_t{64} << 20);
  EXPECT_EQ(c->seed, 42u);
  EXPECT_EQ(c->flags, vfio::kMigStopCopy | vfio::kMigP2P | vfio::kMigPreCopy);
  ASSERT_TRUE(c->fail_arc.has_value());
  EXPECT_EQ(c->fail_arc->from, MigState::kPreCopyP2P);
  EXPECT_EQ(c->fail_arc->to, MigState::kStopCopy);
  EXPECT_EQ(c->corrupt_stream_at, 4096u);
  ASSERT_TRUE(c->fail_read.has_value());
  EXPECT_EQ(c->fail_read->err, ENODEV);
  EXPECT_EQ(c->fail_read->offset, 64u * 1024);
  EXPECT_EQ(c->dirty_rate, uint64_t{8} << 20);
  EXPECT_EQ(c->dma_rate, 250u);
  EXPECT_EQ(c->dma_write_log, "/tmp/migd-dma.log");
  EXPECT_FALSE(c->dma_logging);
  EXPECT_TRUE(
      ParseEmulatedDeviceLine("emulated e dma_logging=on")->dma_logging);
  c->dma_write_log.clear();  // Create would write the file
  EXPECT_TRUE(EmulatedDevice::Create(*c).ok());
}

TEST(ParseEmulatedDeviceLine, DirtyRateIsASizePerSecond) {
  EXPECT_EQ(ParseEmulatedDeviceLine("emulated e dirty_rate=512K")->dirty_rate,
            512u * 1024);
  EXPECT_EQ(ParseEmulatedDeviceLine("emulated e dirty_rate=8MiB/s")->dirty_rate,
            uint64_t{8} << 20);
  EXPECT_EQ(ParseEmulatedDeviceLine("emulated e dirty_rate=1000")->dirty_rate,
            1000u);
  EXPECT_EQ(ParseEmulatedDeviceLine("emulated e dirty_rate=0")->dirty_rate, 0u);
}

TEST(ParseEmulatedDeviceLine, LoadRateIsAPositiveSizePerSecond) {
  EXPECT_EQ(ParseEmulatedDeviceLine("emulated e")->load_rate, 0u);
  EXPECT_EQ(ParseEmulatedDeviceLine("emulated e load_rate=256K")->load_rate,
            256u * 1024);
  EXPECT_EQ(ParseEmulatedDeviceLine("emulated e load_rate=1MiB/s")->load_rate,
            uint64_t{1} << 20);
  absl::StatusOr<EmulatedDeviceConfig> zero =
      ParseEmulatedDeviceLine("emulated e load_rate=0");
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(zero.status().message()),
              HasSubstr("\"load_rate=0\""));
  EXPECT_FALSE(ParseEmulatedDeviceLine("emulated e load_rate=fast").ok());
}

TEST(ParseEmulatedDeviceLine, FormatIsThePositiveStateFormat) {
  EXPECT_EQ(ParseEmulatedDeviceLine("emulated e")->state_format, 1u);
  EXPECT_EQ(ParseEmulatedDeviceLine("emulated e format=3")->state_format, 3u);
  EXPECT_FALSE(ParseEmulatedDeviceLine("emulated e format=0").ok());
  EXPECT_FALSE(ParseEmulatedDeviceLine("emulated e format=x").ok());
}

TEST(ParseEmulatedDeviceLine, DecimalSeed) {
  EXPECT_EQ(
      ParseEmulatedDeviceLine("emulated e seed=18446744073709551615")->seed,
      UINT64_MAX);
}

struct BadLine {
  const char* line;
  const char* named;  // what the error must mention
};

class ParseEmulatedDeviceLineBad : public ::testing::TestWithParam<BadLine> {};

TEST_P(ParseEmulatedDeviceLineBad, FailsNamingTheProblem) {
  auto c = ParseEmulatedDeviceLine(GetParam().line);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(GetParam().named));
}

INSTANTIATE_TEST_SUITE_P(
    Lines, ParseEmulatedDeviceLineBad,
    ::testing::Values(
        BadLine{"", "emulated NAME"}, BadLine{"vfio 0000:01:00.1", "vfio"},
        BadLine{"emulated", "missing the device name"},
        BadLine{"emulated a/b", "\"a/b\""},
        BadLine{"emulated e size=12XB", "\"size=12XB\""},
        BadLine{"emulated e size=0", "state_size 0"},
        BadLine{"emulated e size=8G", "state_size"},
        BadLine{"emulated e seed=-1", "\"seed=-1\""},
        BadLine{"emulated e seed=0x", "\"seed=0x\""},
        BadLine{"emulated e flags=P2P", "\"flags=P2P\""},
        BadLine{"emulated e flags=STOP_COPY|FAST", "FAST"},
        BadLine{"emulated e fail_arc=STOP", "\"fail_arc=STOP\""},
        BadLine{"emulated e fail_arc=STOP>NOWHERE", "NOWHERE"},
        // With P2P (the default) the device never takes RUNNING -> STOP.
        BadLine{"emulated e fail_arc=RUNNING>STOP", "fail_arc RUNNING -> STOP"},
        BadLine{"emulated e fail_arc=RUNNING>PRE_COPY", "PRE_COPY"},
        BadLine{"emulated e slow_arc=RESUMING>STOP",
                "\"slow_arc=RESUMING>STOP\""},
        BadLine{"emulated e slow_arc=RESUMING>NOWHERE@2s", "NOWHERE"},
        BadLine{"emulated e slow_arc=RESUMING>STOP@soon",
                "\"slow_arc=RESUMING>STOP@soon\""},
        BadLine{"emulated e slow_arc=RESUMING>STOP@0s",
                "\"slow_arc=RESUMING>STOP@0s\""},
        BadLine{"emulated e slow_arc=RESUMING>STOP@2h",
                "\"slow_arc=RESUMING>STOP@2h\""},
        BadLine{"emulated e slow_arc=RUNNING>STOP@1s",
                "slow_arc RUNNING -> STOP"},
        BadLine{"emulated e size=4K corrupt_stream_at=1M",
                "corrupt_stream_at 1048576"},
        BadLine{"emulated e fail_read=ENODEV", "\"fail_read=ENODEV\""},
        BadLine{"emulated e fail_read=ENOMSG@0", "ENOMSG"},
        BadLine{"emulated e fail_read=EIO@1x", "\"fail_read=EIO@1x\""},
        BadLine{"emulated e size=4K fail_read=EBUSY@1M",
                "fail_read offset 1048576"},
        BadLine{"emulated e colour=blue", "\"colour=blue\""},
        BadLine{"emulated e size", "\"size\""},
        BadLine{"emulated e size=1M size=2M", "given twice"},
        BadLine{"emulated e dirty_rate=fast", "\"dirty_rate=fast\""},
        BadLine{"emulated e dirty_rate=8MB/s", "\"dirty_rate=8MB/s\""},
        BadLine{"emulated e dirty_rate=8M/min", "\"dirty_rate=8M/min\""},
        BadLine{"emulated e dirty_rate=17G", "dirty_rate 18253611008"},
        BadLine{"emulated e dma_rate=1K", "\"dma_rate=1K\""},
        BadLine{"emulated e dma_rate=-1", "\"dma_rate=-1\""},
        BadLine{"emulated e dma_rate=1000001", "dma_rate 1000001"},
        BadLine{"emulated e dma_write_log=", "\"dma_write_log=\""},
        BadLine{"emulated e dma_logging=no", "\"dma_logging=no\""}));

TEST(ParseEmulatedDeviceLine, SlowArcIsAnArcAndADuration) {
  auto c = ParseEmulatedDeviceLine("emulated e slow_arc=resuming>STOP@1500ms");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->slow_arc.has_value());
  EXPECT_EQ(c->slow_arc->arc.from, MigState::kResuming);
  EXPECT_EQ(c->slow_arc->arc.to, MigState::kStop);
  EXPECT_EQ(c->slow_arc->duration, absl::Milliseconds(1500));
}

TEST(ParseEmulatedDeviceLine, FailArcIsCheckedAgainstFlagsGivenLater) {
  EXPECT_TRUE(ParseEmulatedDeviceLine(
                  "emulated e fail_arc=RUNNING>STOP flags=STOP_COPY")
                  .ok());
}

}  // namespace
}  // namespace migd::device
