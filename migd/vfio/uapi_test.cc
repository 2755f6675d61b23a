#include "migd/vfio/uapi.h"

#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>

#include "absl/strings/ascii.h"
#include "gtest/gtest.h"

namespace migd::vfio {

// Readable failure messages (found by ADL, so not in the unnamed namespace).
void PrintTo(MigState s, std::ostream* os) { *os << MigStateName(s); }

namespace {

constexpr MigState kAllStates[] = {
    MigState::kError,    MigState::kStop,       MigState::kRunning,
    MigState::kStopCopy, MigState::kResuming,   MigState::kRunningP2P,
    MigState::kPreCopy,  MigState::kPreCopyP2P,
};

TEST(MigStateName, NamesEveryStateAsTheKernelDoes) {
  EXPECT_EQ(MigStateName(MigState::kError), "ERROR");
  EXPECT_EQ(MigStateName(MigState::kStop), "STOP");
  EXPECT_EQ(MigStateName(MigState::kRunning), "RUNNING");
  EXPECT_EQ(MigStateName(MigState::kStopCopy), "STOP_COPY");
  EXPECT_EQ(MigStateName(MigState::kResuming), "RESUMING");
  EXPECT_EQ(MigStateName(MigState::kRunningP2P), "RUNNING_P2P");
  EXPECT_EQ(MigStateName(MigState::kPreCopy), "PRE_COPY");
  EXPECT_EQ(MigStateName(MigState::kPreCopyP2P), "PRE_COPY_P2P");
}

TEST(MigStateName, OutOfRangeValueIsInvalidWithItsNumber) {
  EXPECT_EQ(MigStateName(static_cast<MigState>(8)), "INVALID(8)");
  EXPECT_EQ(MigStateName(static_cast<MigState>(4294967295u)),
            "INVALID(4294967295)");
}

TEST(ParseMigState, RoundTripsEveryName) {
  for (MigState s : kAllStates) {
    EXPECT_EQ(ParseMigState(MigStateName(s)), s) << MigStateName(s);
  }
}

TEST(ParseMigState, IgnoresCase) {
  EXPECT_EQ(ParseMigState("running_p2p"), MigState::kRunningP2P);
  EXPECT_EQ(ParseMigState("Pre_Copy"), MigState::kPreCopy);
  for (MigState s : kAllStates) {
    EXPECT_EQ(ParseMigState(absl::AsciiStrToLower(MigStateName(s))), s);
  }
}

TEST(ParseMigState, RejectsAnythingElse) {
  EXPECT_EQ(ParseMigState(""), std::nullopt);
  EXPECT_EQ(ParseMigState("RUNNING "), std::nullopt);
  EXPECT_EQ(ParseMigState("STOPCOPY"), std::nullopt);
  EXPECT_EQ(ParseMigState("P2P"), std::nullopt);
  EXPECT_EQ(ParseMigState("INVALID(8)"), std::nullopt);
  EXPECT_EQ(ParseMigState("2"), std::nullopt);
}

TEST(MigStateFromRaw, AcceptsExactlyTheKernelsValues) {
  for (uint32_t raw = 0; raw < 8; ++raw) {
    std::optional<MigState> s = MigStateFromRaw(raw);
    ASSERT_TRUE(s.has_value()) << raw;
    EXPECT_EQ(static_cast<uint32_t>(*s), raw);
  }
  EXPECT_EQ(MigStateFromRaw(VFIO_DEVICE_STATE_RUNNING_P2P),
            MigState::kRunningP2P);
  EXPECT_EQ(MigStateFromRaw(6), MigState::kPreCopy);
  EXPECT_EQ(MigStateFromRaw(7), MigState::kPreCopyP2P);
  EXPECT_EQ(MigStateFromRaw(8), std::nullopt);
  EXPECT_EQ(MigStateFromRaw(std::numeric_limits<uint32_t>::max()),
            std::nullopt);
}

TEST(MigFlagsName, ListsKnownFlagsInBitOrder) {
  EXPECT_EQ(MigFlagsName(kMigStopCopy), "STOP_COPY");
  EXPECT_EQ(MigFlagsName(kMigStopCopy | kMigP2P), "STOP_COPY|P2P");
  EXPECT_EQ(MigFlagsName(kMigStopCopy | kMigPreCopy), "STOP_COPY|PRE_COPY");
  EXPECT_EQ(MigFlagsName(kMigPreCopy | kMigP2P | kMigStopCopy),
            "STOP_COPY|P2P|PRE_COPY");
  EXPECT_EQ(MigFlagsName(kMigP2P), "P2P");
}

TEST(MigFlagsName, NoFlagsIsNone) { EXPECT_EQ(MigFlagsName(0), "NONE"); }

TEST(MigFlagsName, UnknownBitsShowAsHex) {
  EXPECT_EQ(MigFlagsName(kMigStopCopy | 0x30), "STOP_COPY|0x30");
  EXPECT_EQ(MigFlagsName(MigFlags{1} << 40), "0x10000000000");
}

TEST(StateClasses, MatchTheUapiDefinitions) {
  struct Row {
    MigState s;
    bool running, saving, p2p;
  };
  const Row kRows[] = {
      {MigState::kError, false, false, false},
      {MigState::kStop, false, false, false},
      {MigState::kRunning, true, false, false},
      {MigState::kStopCopy, false, true, false},
      {MigState::kResuming, false, false, false},
      {MigState::kRunningP2P, true, false, true},
      {MigState::kPreCopy, true, true, false},
      {MigState::kPreCopyP2P, true, true, true},
  };
  for (const Row& r : kRows) {
    EXPECT_EQ(IsRunningState(r.s), r.running) << MigStateName(r.s);
    EXPECT_EQ(IsSavingState(r.s), r.saving) << MigStateName(r.s);
    EXPECT_EQ(IsP2PState(r.s), r.p2p) << MigStateName(r.s);
  }
}

TEST(StateClasses, OutOfRangeValueIsInNoClass) {
  const MigState bogus = static_cast<MigState>(8);
  EXPECT_FALSE(IsRunningState(bogus));
  EXPECT_FALSE(IsSavingState(bogus));
  EXPECT_FALSE(IsP2PState(bogus));
}

TEST(StateSupported, FollowsTheKernelsStateFlagsTable) {
  constexpr MigFlags kSC = kMigStopCopy;
  constexpr MigFlags kP2P = kMigStopCopy | kMigP2P;
  constexpr MigFlags kPre = kMigStopCopy | kMigPreCopy;
  constexpr MigFlags kAll = kMigStopCopy | kMigP2P | kMigPreCopy;
  struct Row {
    MigState s;
    bool sc, p2p, pre, all;
  };
  const Row kRows[] = {
      {MigState::kError, true, true, true, true},
      {MigState::kStop, true, true, true, true},
      {MigState::kRunning, true, true, true, true},
      {MigState::kStopCopy, true, true, true, true},
      {MigState::kResuming, true, true, true, true},
      {MigState::kRunningP2P, false, true, false, true},
      {MigState::kPreCopy, false, false, true, true},
      {MigState::kPreCopyP2P, false, false, false, true},
  };
  for (const Row& r : kRows) {
    EXPECT_EQ(StateSupported(kSC, r.s), r.sc) << MigStateName(r.s);
    EXPECT_EQ(StateSupported(kP2P, r.s), r.p2p) << MigStateName(r.s);
    EXPECT_EQ(StateSupported(kPre, r.s), r.pre) << MigStateName(r.s);
    EXPECT_EQ(StateSupported(kAll, r.s), r.all) << MigStateName(r.s);
  }
}

TEST(StateSupported, NothingWithoutStopCopy) {
  for (MigFlags flags :
       {MigFlags{0}, kMigP2P, kMigPreCopy, kMigP2P | kMigPreCopy}) {
    for (MigState s : kAllStates) {
      EXPECT_FALSE(StateSupported(flags, s))
          << MigFlagsName(flags) << " " << MigStateName(s);
    }
  }
}

TEST(StateSupported, OutOfRangeStateNever) {
  EXPECT_FALSE(StateSupported(kMigKnownFlags, static_cast<MigState>(8)));
}

TEST(UapiConstants, MatchTheKernelAbi) {
  EXPECT_EQ(VFIO_DEVICE_FEATURE, _IO(';', 117));
  EXPECT_EQ(VFIO_DEVICE_RESET, _IO(';', 111));
  EXPECT_EQ(VFIO_MIG_GET_PRECOPY_INFO, _IO(';', 121));
  EXPECT_EQ(VFIO_DEVICE_FEATURE_MIGRATION, 1);
  EXPECT_EQ(VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, 2);
  EXPECT_EQ(VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, 9);
  EXPECT_EQ(VFIO_MIGRATION_STOP_COPY, 1 << 0);
  EXPECT_EQ(VFIO_MIGRATION_P2P, 1 << 1);
  EXPECT_EQ(VFIO_MIGRATION_PRE_COPY, 1 << 2);
  EXPECT_EQ(kMigKnownFlags, 0x7u);
  EXPECT_EQ(sizeof(vfio_precopy_info), 24u);
  EXPECT_EQ(offsetof(vfio_precopy_info, initial_bytes), 8u);
  EXPECT_EQ(offsetof(vfio_precopy_info, dirty_bytes), 16u);
  EXPECT_EQ(sizeof(vfio_device_feature_mig_data_size), 8u);
}

}  // namespace
}  // namespace migd::vfio
