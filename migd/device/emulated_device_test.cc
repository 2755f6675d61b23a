#include "migd/device/emulated_device.h"

#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migd/device/device.h"
#include "migd/device/vfio_errors.h"
#include "migd/vfio/planner.h"
#include "migd/vfio/uapi.h"

namespace migd::device {
namespace {

using ::testing::HasSubstr;
using vfio::MigState;

constexpr vfio::MigFlags kAllFlags =
    vfio::kMigStopCopy | vfio::kMigP2P | vfio::kMigPreCopy;
constexpr uint64_t kEndBytes = 13;

std::unique_ptr<EmulatedDevice> MakeDevice(EmulatedDeviceConfig config) {
  absl::StatusOr<std::unique_ptr<EmulatedDevice>> d =
      EmulatedDevice::Create(std::move(config));
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *std::move(d) : nullptr;
}

std::unique_ptr<EmulatedDevice> MakeDevice(
    const std::string& name, uint64_t size, uint64_t seed,
    vfio::MigFlags flags = vfio::kMigStopCopy | vfio::kMigP2P) {
  EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = size;
  c.seed = seed;
  c.flags = flags;
  return MakeDevice(std::move(c));
}

MigState StateOf(EmulatedDevice& d) { return d.GetState().value(); }

std::string DigestOf(EmulatedDevice& d) { return d.StateDigest().value(); }

// How a read ended, for assertions: "data(N)", "end of stream", "no data
// now", or the error.
std::string Outcome(const absl::StatusOr<ReadResult>& r) {
  return r.ok() ? ReadResultText(*r) : r.status().ToString();
}

// Reads until the stream has nothing more now (end of stream, or no data now
// in pre-copy), in chunks of random size in [1, max_chunk]. Returns how it
// ended, or the error.
absl::StatusOr<ReadResult> ReadUntilEnd(DataStream& s,
                                        std::vector<uint8_t>* out,
                                        std::mt19937& rng,
                                        size_t max_chunk = 9000) {
  std::vector<uint8_t> buf(max_chunk);
  std::uniform_int_distribution<size_t> len(1, max_chunk);
  for (;;) {
    absl::StatusOr<ReadResult> r = s.Read(absl::MakeSpan(buf.data(), len(rng)));
    if (!r.ok() || r->kind != ReadResult::Kind::kData) return r;
    out->insert(out->end(), buf.begin(), buf.begin() + r->bytes);
  }
}

// The whole stop-copy stream of a RUNNING device; leaves it in STOP_COPY.
std::vector<uint8_t> SaveStopCopy(EmulatedDevice& d) {
  std::mt19937 rng(7);
  absl::StatusOr<std::unique_ptr<DataStream>> s =
      d.SetState(MigState::kStopCopy);
  EXPECT_TRUE(s.ok()) << s.status();
  std::vector<uint8_t> bytes;
  if (!s.ok() || *s == nullptr) return bytes;
  EXPECT_EQ(Outcome(ReadUntilEnd(**s, &bytes, rng)), "end of stream");
  return bytes;
}

// Writes `bytes` in chunks of random size in [1, max_chunk], stopping at the
// first write error (fatal to a load).
absl::Status WriteAll(DataStream& s, absl::Span<const uint8_t> bytes,
                      std::mt19937& rng, size_t max_chunk = 7000) {
  std::uniform_int_distribution<size_t> len(1, max_chunk);
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t n = std::min(len(rng), bytes.size() - pos);
    absl::StatusOr<size_t> w = s.Write(bytes.subspan(pos, n));
    if (!w.ok()) return w.status();
    pos += *w;
  }
  return absl::OkStatus();
}

// Loads `bytes` into a RUNNING device and moves it RESUMING -> STOP. Returns
// the first write error if any (after still attempting the arc), else the
// arc's status.
struct LoadResult {
  absl::Status write;
  absl::Status arc;
};
LoadResult Load(EmulatedDevice& d, absl::Span<const uint8_t> bytes,
                size_t max_chunk = 7000) {
  std::mt19937 rng(11);
  LoadResult r;
  absl::StatusOr<std::unique_ptr<DataStream>> s =
      d.SetState(MigState::kResuming);
  if (!s.ok()) {
    r.arc = s.status();
    return r;
  }
  EXPECT_NE(*s, nullptr);
  r.write = WriteAll(**s, bytes, rng, max_chunk);
  r.arc = d.SetState(MigState::kStop).status();
  return r;
}

// ---- Save and load. ----

TEST(EmulatedDevice, StartsRunningWithItsFlags) {
  auto d = MakeDevice("emu1", 4096, 1, kAllFlags);
  EXPECT_EQ(StateOf(*d), MigState::kRunning);
  EXPECT_EQ(d->GetFlags().value(), kAllFlags);
  EXPECT_EQ(d->kind(), "emulated");
  EXPECT_EQ(d->name(), "emu1");
}

TEST(EmulatedDevice, SaveLoadThroughArbitrarySegmentationGivesEqualDigests) {
  // Not a multiple of the PAGE record payload: the last record is short.
  const uint64_t size = (1 << 20) + 123;
  auto src = MakeDevice("src", size, 1);
  auto dst = MakeDevice("dst", size, 2);
  ASSERT_NE(DigestOf(*src), DigestOf(*dst));

  const std::vector<uint8_t> bytes = SaveStopCopy(*src);
  EXPECT_EQ(bytes.size(), EmulatedDevice::FullStreamSize(size));
  const LoadResult r = Load(*dst, bytes);
  ASSERT_TRUE(r.write.ok()) << r.write;
  ASSERT_TRUE(r.arc.ok()) << r.arc;
  EXPECT_EQ(StateOf(*dst), MigState::kStop);
  EXPECT_EQ(DigestOf(*dst), DigestOf(*src));
  EXPECT_TRUE(dst->SetState(MigState::kRunning).ok());
  EXPECT_EQ(DigestOf(*dst), DigestOf(*src));
}

TEST(EmulatedDevice, LoadAcceptsOneByteWrites) {
  auto src = MakeDevice("src", 200 * 1024 + 7, 3);
  auto dst = MakeDevice("dst", 200 * 1024 + 7, 4);
  const std::vector<uint8_t> bytes = SaveStopCopy(*src);
  const LoadResult r = Load(*dst, bytes, /*max_chunk=*/1);
  ASSERT_TRUE(r.write.ok()) << r.write;
  ASSERT_TRUE(r.arc.ok()) << r.arc;
  EXPECT_EQ(DigestOf(*dst), DigestOf(*src));
}

// The digest after a load is the END record's CRC, which the load checks
// against the bytes it was given, not against what it stored. Saving the
// loaded device again shows what it stored: the same stream, byte for byte.
// Write sizes around the cache line cover every alignment of the load's
// copy into device memory.
TEST(EmulatedDevice, LoadedContentSavesAgainByteForByte) {
  const uint64_t size = 3 * EmulatedDevice::kPageRecordPayload + 4097;
  auto src = MakeDevice("src", size, 5);
  const std::vector<uint8_t> bytes = SaveStopCopy(*src);
  for (const size_t max_chunk : {1, 63, 64, 65, 200, 7000, 1 << 20}) {
    SCOPED_TRACE(max_chunk);
    auto dst = MakeDevice("dst", size, 6);
    const LoadResult r = Load(*dst, bytes, max_chunk);
    ASSERT_TRUE(r.write.ok()) << r.write;
    ASSERT_TRUE(r.arc.ok()) << r.arc;
    ASSERT_TRUE(dst->SetState(MigState::kRunning).ok());
    EXPECT_TRUE(SaveStopCopy(*dst) == bytes);
  }
}

TEST(EmulatedDevice, DigestDependsOnSeedAndSize) {
  auto a = MakeDevice("a", 1 << 20, 1);
  auto b = MakeDevice("b", 1 << 20, 1);
  auto c = MakeDevice("c", 1 << 20, 2);
  auto d = MakeDevice("d", (1 << 20) + 1, 1);
  EXPECT_EQ(DigestOf(*a), DigestOf(*b));
  EXPECT_NE(DigestOf(*a), DigestOf(*c));
  EXPECT_NE(DigestOf(*a), DigestOf(*d));
  EXPECT_EQ(DigestOf(*a).rfind("crc32c:", 0), 0u);
  EXPECT_EQ(DigestOf(*a).size(), 7u + 8u);
}

TEST(EmulatedDevice, GeneratesLargeStates) {
  auto d = MakeDevice("big", uint64_t{64} << 20, 9);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->GetStopCopySize().value(),
            EmulatedDevice::FullStreamSize(uint64_t{64} << 20));
}

TEST(EmulatedDevice, StopCopySizeIsTheStreamLengthAndShrinksAsItIsRead) {
  auto d = MakeDevice("emu1", 300 * 1000, 5);
  const uint64_t full = EmulatedDevice::FullStreamSize(300 * 1000);
  EXPECT_EQ(d->GetStopCopySize().value(), full);
  auto s = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(d->GetStopCopySize().value(), full);
  std::vector<uint8_t> buf(1000);
  ASSERT_EQ(Outcome((*s)->Read(absl::MakeSpan(buf))), "data(1000)");
  EXPECT_EQ(d->GetStopCopySize().value(), full - 1000);
}

TEST(EmulatedDevice, StopCopyStreamEndsWithEofAndStaysThere) {
  auto d = MakeDevice("emu1", 4096, 5);
  auto s = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(s.ok());
  ASSERT_NE(*s, nullptr);
  std::vector<uint8_t> buf(1 << 16);
  EXPECT_EQ(Outcome((*s)->Read(absl::MakeSpan(buf))),
            absl::StrCat("data(", EmulatedDevice::FullStreamSize(4096), ")"));
  EXPECT_EQ(Outcome((*s)->Read(absl::MakeSpan(buf))), "end of stream");
  EXPECT_EQ(Outcome((*s)->Read(absl::MakeSpan(buf))), "end of stream");
  EXPECT_EQ((*s)->GetPrecopyInfo().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(EmulatedDevice, StreamsRejectTheWrongDirection) {
  auto d = MakeDevice("emu1", 4096, 5);
  auto save = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(save.ok());
  const uint8_t byte = 0;
  EXPECT_EQ((*save)->Write(absl::MakeConstSpan(&byte, 1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(d->SetState(MigState::kStop).ok());
  auto load = d->SetState(MigState::kResuming);
  ASSERT_TRUE(load.ok());
  uint8_t buf[16];
  EXPECT_EQ((*load)->Read(absl::MakeSpan(buf)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// ---- States and arcs. ----

const MigState kAllStates[] = {
    MigState::kError,    MigState::kStop,       MigState::kRunning,
    MigState::kStopCopy, MigState::kResuming,   MigState::kRunningP2P,
    MigState::kPreCopy,  MigState::kPreCopyP2P,
};
const vfio::MigFlags kFlagSets[] = {
    vfio::kMigStopCopy,
    vfio::kMigStopCopy | vfio::kMigP2P,
    vfio::kMigStopCopy | vfio::kMigPreCopy,
    kAllFlags,
};

// Moves a fresh device to `start`. In RESUMING it loads a valid state, so
// leaving RESUMING later exercises the arcs, not load validation.
absl::Status DriveTo(EmulatedDevice& d, MigState start) {
  absl::StatusOr<std::unique_ptr<DataStream>> s = d.SetState(start);
  if (!s.ok() || start != MigState::kResuming) return s.status();
  auto twin = MakeDevice("twin", d.config().state_size, 99);
  return (*s)->Write(SaveStopCopy(*twin)).status();
}

TEST(EmulatedDevice, ReachesEveryTargetThePlannerAllowsAndRefusesTheRest) {
  for (vfio::MigFlags flags : kFlagSets) {
    for (MigState start : kAllStates) {
      if (start == MigState::kError) continue;
      if (!vfio::StateSupported(flags, start)) continue;
      for (MigState target : kAllStates) {
        SCOPED_TRACE(absl::StrCat(vfio::MigFlagsName(flags), " ",
                                  vfio::MigStateName(start), " -> ",
                                  vfio::MigStateName(target)));
        auto d = MakeDevice("emu1", 4096, 1, flags);
        ASSERT_TRUE(DriveTo(*d, start).ok());
        ASSERT_EQ(StateOf(*d), start);
        auto plan = vfio::PlanArcs(flags, start, target);
        auto r = d->SetState(target);
        if (plan.ok()) {
          EXPECT_TRUE(r.ok()) << r.status();
          EXPECT_EQ(StateOf(*d), target);
        } else {
          EXPECT_EQ(r.status().code(), plan.status().code());
          EXPECT_THAT(std::string(r.status().message()), HasSubstr("emu1"));
          EXPECT_EQ(StateOf(*d), start);
        }
      }
    }
  }
}

// The device must take every arc the planner plans, in order: a device made
// to fail on arc k of the plan fails exactly there.
TEST(EmulatedDevice, WalksExactlyThePlannersArcs) {
  for (vfio::MigFlags flags : kFlagSets) {
    for (MigState start : kAllStates) {
      if (start == MigState::kError) continue;
      if (!vfio::StateSupported(flags, start)) continue;
      for (MigState target : kAllStates) {
        auto plan = vfio::PlanArcs(flags, start, target);
        if (!plan.ok()) continue;
        MigState from = start;
        for (MigState to : *plan) {
          SCOPED_TRACE(absl::StrCat(
              vfio::MigFlagsName(flags), " ", vfio::MigStateName(start), " -> ",
              vfio::MigStateName(target), " arc ", vfio::MigStateName(from),
              " -> ", vfio::MigStateName(to)));
          EmulatedDeviceConfig c;
          c.name = "emu1";
          c.state_size = 4096;
          c.flags = flags;
          c.fail_arc = MigArc{from, to};
          auto d = MakeDevice(c);
          ASSERT_NE(d, nullptr);
          // Getting to `start` may itself cross the faulty arc; skip then.
          if (DriveTo(*d, start).ok()) {
            auto r = d->SetState(target);
            EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
            EXPECT_THAT(std::string(r.status().message()),
                        HasSubstr(absl::StrCat(vfio::MigStateName(from), " -> ",
                                               vfio::MigStateName(to))));
            EXPECT_EQ(StateOf(*d), MigState::kError);
          }
          from = to;
        }
      }
    }
  }
}

TEST(EmulatedDevice, RefusesP2PStatesWithoutP2P) {
  auto d = MakeDevice("emu1", 4096, 1, vfio::kMigStopCopy | vfio::kMigPreCopy);
  auto r = d->SetState(MigState::kRunningP2P);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StateOf(*d), MigState::kRunning);
  r = d->SetState(MigState::kPreCopyP2P);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StateOf(*d), MigState::kRunning);
  // Without P2P, RUNNING -> STOP is a single arc.
  EXPECT_TRUE(d->SetState(MigState::kStop).ok());
}

TEST(EmulatedDevice, RefusesStopCopyToPreCopyAndLeavesStateUnchanged) {
  auto d = MakeDevice("emu1", 4096, 1, kAllFlags);
  auto s = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(d->SetState(MigState::kPreCopy).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StateOf(*d), MigState::kStopCopy);
  // The session survived the refused request.
  uint8_t buf[16];
  EXPECT_EQ(Outcome((*s)->Read(absl::MakeSpan(buf))), "data(16)");
}

TEST(EmulatedDevice, OpensSessionsOnlyOnTheirArcs) {
  auto d = MakeDevice("emu1", 4096, 1, kAllFlags);
  auto r = d->SetState(MigState::kStop);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, nullptr);
  r = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(*r, nullptr);
  r = d->SetState(MigState::kResuming);  // via STOP
  ASSERT_TRUE(r.ok());
  EXPECT_NE(*r, nullptr);
  ASSERT_TRUE(d->Reset().ok());
  r = d->SetState(MigState::kPreCopy);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(*r, nullptr);
  r = d->SetState(MigState::kPreCopyP2P);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, nullptr);
  r = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, nullptr);
}

TEST(EmulatedDevice, OldStreamFailsAfterTheDeviceLeavesTheSavingState) {
  auto d = MakeDevice("emu1", 4096, 1);
  auto s = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(d->SetState(MigState::kStop).ok());
  uint8_t buf[16];
  auto n = (*s)->Read(absl::MakeSpan(buf));
  EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition);
  // A new session does not revive the old stream.
  auto s2 = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ((*s)->Read(absl::MakeSpan(buf)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*s2)->Read(absl::MakeSpan(buf)).ok());
}

TEST(EmulatedDevice, OldLoadStreamFailsAfterResumingEnds) {
  auto src = MakeDevice("src", 4096, 1);
  auto dst = MakeDevice("dst", 4096, 2);
  const std::vector<uint8_t> bytes = SaveStopCopy(*src);
  auto s = dst->SetState(MigState::kResuming);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->Write(bytes).ok());
  ASSERT_TRUE(dst->SetState(MigState::kStop).ok());
  EXPECT_EQ((*s)->Write(bytes).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(EmulatedDevice, ResetEndsSessionsAndLandsInRunning) {
  auto d = MakeDevice("emu1", 4096, 1);
  auto s = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(d->Reset().ok());
  EXPECT_EQ(StateOf(*d), MigState::kRunning);
  uint8_t buf[16];
  EXPECT_EQ((*s)->Read(absl::MakeSpan(buf)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(EmulatedDevice, StreamOutlivingTheDeviceFailsCleanly) {
  auto d = MakeDevice("emu1", 4096, 1);
  auto s = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(s.ok());
  std::unique_ptr<DataStream> stream = *std::move(s);
  d.reset();
  uint8_t buf[16];
  EXPECT_EQ(stream->Read(absl::MakeSpan(buf)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// ---- Load validation. ----

class LoadValidation : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = MakeDevice("src", kSize, 1);
    dst_ = MakeDevice("dst", kSize, 2);
    bytes_ = SaveStopCopy(*src_);
    ASSERT_EQ(bytes_.size(), EmulatedDevice::FullStreamSize(kSize));
  }

  // The load must fail at RESUMING -> STOP with `code` and `what`, leaving the
  // device in ERROR until a reset.
  void ExpectRejected(absl::Span<const uint8_t> bytes, absl::StatusCode code,
                      const std::string& what) {
    const std::string before = DigestOf(*dst_);
    const LoadResult r = Load(*dst_, bytes);
    EXPECT_EQ(r.arc.code(), code) << r.arc;
    EXPECT_THAT(std::string(r.arc.message()),
                HasSubstr("device dst: RESUMING -> STOP: "));
    EXPECT_THAT(std::string(r.arc.message()), HasSubstr(what));
    EXPECT_EQ(StateOf(*dst_), MigState::kError);
    EXPECT_EQ(dst_->SetState(MigState::kRunning).status().code(),
              absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE(dst_->Reset().ok());
    EXPECT_EQ(StateOf(*dst_), MigState::kRunning);
    EXPECT_EQ(DigestOf(*dst_), before);  // a failed load changes nothing
  }

  static constexpr uint64_t kSize = 256 * 1024 + 5;
  std::unique_ptr<EmulatedDevice> src_, dst_;
  std::vector<uint8_t> bytes_;
};

TEST_F(LoadValidation, RejectsBadMagic) {
  bytes_[0] ^= 0x01;
  ExpectRejected(bytes_, absl::StatusCode::kInvalidArgument,
                 "bad stream magic");
}

TEST_F(LoadValidation, RejectsAnotherStateSize) {
  auto big = MakeDevice("dst", 2 << 20, 3);
  auto small = MakeDevice("small", 1 << 20, 3);
  const std::vector<uint8_t> bytes = SaveStopCopy(*small);
  const LoadResult r = Load(*big, bytes);
  EXPECT_EQ(r.write.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.arc.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.arc.message(),
            "device dst: RESUMING -> STOP: state size 1048576 != device state "
            "size 2097152");
  EXPECT_EQ(StateOf(*big), MigState::kError);
}

// A device loads only a stream of its own state format, as a device whose
// firmware changed its state layout would.
TEST_F(LoadValidation, RejectsAnotherStateFormat) {
  EmulatedDeviceConfig c;
  c.name = "dst";
  c.state_size = kSize;
  c.seed = 3;
  c.state_format = 2;
  auto newer = EmulatedDevice::Create(c);
  ASSERT_TRUE(newer.ok()) << newer.status();
  const LoadResult r = Load(**newer, bytes_);
  EXPECT_EQ(r.arc.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.arc.message(),
            "device dst: RESUMING -> STOP: stream of state format 1 (this "
            "device reads format 2)");
}

TEST_F(LoadValidation, RejectsAFlippedContentByte) {
  bytes_[20 + 13 + 1000] ^= 0xff;  // header, first PAGE header, content
  ExpectRejected(bytes_, absl::StatusCode::kDataLoss, "CRC32C");
}

TEST_F(LoadValidation, RejectsATruncatedStream) {
  bytes_.resize(bytes_.size() - 1000);
  ExpectRejected(bytes_, absl::StatusCode::kDataLoss, "truncated");
}

TEST_F(LoadValidation, RejectsAMissingEndRecord) {
  bytes_.resize(bytes_.size() - kEndBytes);
  ExpectRejected(bytes_, absl::StatusCode::kDataLoss, "no END record");
}

TEST_F(LoadValidation, RejectsTrailingBytes) {
  bytes_.push_back(0);
  ExpectRejected(bytes_, absl::StatusCode::kDataLoss, "trailing bytes");
}

TEST_F(LoadValidation, RejectsAnEmptyStream) {
  ExpectRejected({}, absl::StatusCode::kDataLoss, "empty stream");
}

TEST_F(LoadValidation, RejectsAnUnknownRecordTypeAtWrite) {
  bytes_[20] = 0x7f;  // the first record's type byte, after the header
  std::mt19937 rng(1);
  auto s = dst_->SetState(MigState::kResuming);
  ASSERT_TRUE(s.ok());
  const absl::Status w = WriteAll(**s, bytes_, rng);
  EXPECT_EQ(w.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(w.message()), HasSubstr("unknown record type 0x7f"));
  const uint8_t byte = 0;
  EXPECT_FALSE((*s)->Write(absl::MakeConstSpan(&byte, 1)).ok());  // stays dead
  const absl::Status arc = dst_->SetState(MigState::kStop).status();
  EXPECT_EQ(arc.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(arc.message()),
              HasSubstr("device dst: RESUMING -> STOP: unknown record type"));
  EXPECT_EQ(StateOf(*dst_), MigState::kError);
}

// ---- Fault knobs. ----

TEST(EmulatedDeviceFaults, FailArcFailsThatArcEveryTimeAndEntersError) {
  EmulatedDeviceConfig c;
  c.name = "emu1";
  c.state_size = 4096;
  c.fail_arc = MigArc{MigState::kStop, MigState::kStopCopy};
  auto d = MakeDevice(c);
  for (int i = 0; i < 2; ++i) {
    auto r = d->SetState(MigState::kStopCopy);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("device emu1: arc STOP -> STOP_COPY failed"));
    EXPECT_EQ(StateOf(*d), MigState::kError);
    EXPECT_EQ(d->SetState(MigState::kRunning).status().code(),
              absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE(d->Reset().ok());
    EXPECT_EQ(StateOf(*d), MigState::kRunning);
  }
  // Other arcs are unaffected.
  EXPECT_TRUE(d->SetState(MigState::kResuming).ok());
}

TEST(EmulatedDeviceFaults, SlowArcTakesItsDurationAndOnlyThatArc) {
  EmulatedDeviceConfig c;
  c.name = "emu1";
  c.state_size = 4096;
  c.slow_arc = SlowArc{MigArc{MigState::kRunningP2P, MigState::kStop},
                       absl::Milliseconds(300)};
  auto d = MakeDevice(c);
  absl::Time t0 = absl::Now();
  ASSERT_TRUE(d->SetState(MigState::kRunningP2P).ok());
  EXPECT_LT(absl::Now() - t0, absl::Milliseconds(300));
  t0 = absl::Now();
  ASSERT_TRUE(d->SetState(MigState::kStop).ok());
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(300));
  EXPECT_EQ(StateOf(*d), MigState::kStop);
}

TEST(EmulatedDeviceFaults, SlowArcMustBeTakenAndLastABoundedTime) {
  EmulatedDeviceConfig c;
  c.name = "emu1";
  // With P2P (the default) the device never takes RUNNING -> STOP.
  c.slow_arc =
      SlowArc{MigArc{MigState::kRunning, MigState::kStop}, absl::Seconds(1)};
  absl::Status s = ValidateEmulatedDeviceConfig(c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("slow_arc RUNNING -> STOP"));
  c.slow_arc = SlowArc{MigArc{MigState::kResuming, MigState::kStop},
                       absl::ZeroDuration()};
  s = ValidateEmulatedDeviceConfig(c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("slow_arc RESUMING -> STOP"));
  c.slow_arc->duration = kMaxSlowArc + absl::Seconds(1);
  EXPECT_EQ(ValidateEmulatedDeviceConfig(c).code(),
            absl::StatusCode::kInvalidArgument);
  c.slow_arc->duration = absl::Seconds(2);
  EXPECT_TRUE(ValidateEmulatedDeviceConfig(c).ok());
}

// A device that loads at 256 KiB/s takes 64 KiB in a quarter second, and
// still loads exactly what it was given; the device answers other calls
// meanwhile, and a reset ends a write that waits.
TEST(EmulatedDeviceFaults, LoadRateSlowsEachWriteToItsShare) {
  const uint64_t size = 60 * 1024;  // a stream of a little over 60 KiB
  auto src = MakeDevice("src", size, 1);
  EmulatedDeviceConfig c;
  c.name = "dst";
  c.state_size = size;
  c.seed = 2;
  c.load_rate = 256 * 1024;
  auto dst = MakeDevice(c);
  const std::vector<uint8_t> bytes = SaveStopCopy(*src);
  absl::StatusOr<std::unique_ptr<DataStream>> load =
      dst->SetState(MigState::kResuming);
  ASSERT_TRUE(load.ok()) << load.status();
  const absl::Time t0 = absl::Now();
  absl::StatusOr<size_t> w = (*load)->Write(bytes);
  const absl::Duration took = absl::Now() - t0;
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(*w, bytes.size());
  EXPECT_GE(took, absl::Milliseconds(225)) << "not slowed to the rate";
  EXPECT_LT(took, absl::Seconds(5));
  ASSERT_TRUE(dst->SetState(MigState::kStop).ok());
  EXPECT_EQ(DigestOf(*dst), DigestOf(*src));
}

TEST(EmulatedDeviceFaults, AResetEndsAWriteThatWaitsForTheLoadRate) {
  EmulatedDeviceConfig c;
  c.name = "dst";
  c.state_size = 4096;
  c.load_rate = 1024;  // a 64 KiB write would wait a minute
  auto dst = MakeDevice(c);
  absl::StatusOr<std::unique_ptr<DataStream>> load =
      dst->SetState(MigState::kResuming);
  ASSERT_TRUE(load.ok()) << load.status();
  const std::vector<uint8_t> bytes(64 * 1024, 0);
  const absl::Time t0 = absl::Now();
  absl::StatusOr<size_t> w;
  std::thread writer([&] { w = (*load)->Write(bytes); });
  absl::SleepFor(absl::Milliseconds(100));
  // The device answers while the write waits.
  EXPECT_EQ(StateOf(*dst), MigState::kResuming);
  ASSERT_TRUE(dst->Reset().ok());
  writer.join();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(30));
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition)
      << w.status();
}

TEST(EmulatedDeviceFaults, CorruptStreamAtFlipsExactlyThatByte) {
  const uint64_t size = 128 * 1024;
  EmulatedDeviceConfig c;
  c.name = "src";
  c.state_size = size;
  c.seed = 8;
  c.corrupt_stream_at = 5000;
  auto bad = MakeDevice(c);
  auto good = MakeDevice("good", size, 8);
  const std::vector<uint8_t> bad_bytes = SaveStopCopy(*bad);
  const std::vector<uint8_t> good_bytes = SaveStopCopy(*good);
  ASSERT_EQ(bad_bytes.size(), good_bytes.size());
  for (size_t i = 0; i < good_bytes.size(); ++i) {
    if (i == 5000) {
      EXPECT_NE(bad_bytes[i], good_bytes[i]);
    } else {
      ASSERT_EQ(bad_bytes[i], good_bytes[i]) << "at " << i;
    }
  }
  auto dst = MakeDevice("dst", size, 9);
  const LoadResult r = Load(*dst, bad_bytes);
  EXPECT_EQ(r.arc.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(StateOf(*dst), MigState::kError);
}

TEST(EmulatedDeviceFaults, FailReadGivesTheBytesBeforeItThenFailsAsTheKernel) {
  EmulatedDeviceConfig c;
  c.name = "emu1";
  c.state_size = 128 * 1024;
  c.seed = 8;
  c.fail_read = ReadFault{5000, ENODEV};
  auto bad = MakeDevice(c);
  auto good = MakeDevice("good", c.state_size, 8);
  const std::vector<uint8_t> good_bytes = SaveStopCopy(*good);
  auto s = bad->SetState(MigState::kStopCopy);
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<uint8_t> buf(8192);
  ASSERT_EQ(Outcome((*s)->Read(absl::MakeSpan(buf))), "data(5000)");
  EXPECT_TRUE(std::equal(buf.begin(), buf.begin() + 5000, good_bytes.begin()));
  for (int i = 0; i < 2; ++i) {  // the device stays gone
    absl::StatusOr<ReadResult> r = (*s)->Read(absl::MakeSpan(buf));
    ASSERT_FALSE(r.ok()) << Outcome(r);
    // What VfioDataStream says for the same errno.
    EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(ErrnoOf(r.status()), ENODEV);
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("device emu1: data stream read: No such device "
                          "(errno 19) (fault knob fail_read"));
  }
}

// The fault is not the temporary end of pre-copy data: a pre-copy reader
// sees an error, never "no data now".
TEST(EmulatedDeviceFaults, FailReadFailsPreCopyReadsToo) {
  EmulatedDeviceConfig c;
  c.name = "emu1";
  c.state_size = 256 * 1024;
  c.flags = kAllFlags;
  c.fail_read = ReadFault{100 * 1024, EBUSY};
  auto d = MakeDevice(c);
  auto s = d->SetState(MigState::kPreCopy);
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<uint8_t> bytes;
  std::mt19937 rng(6);
  const absl::StatusOr<ReadResult> end = ReadUntilEnd(**s, &bytes, rng);
  EXPECT_EQ(bytes.size(), 100u * 1024);
  ASSERT_FALSE(end.ok()) << Outcome(end);
  EXPECT_EQ(ErrnoOf(end.status()), EBUSY);
  EXPECT_THAT(std::string(end.status().message()), HasSubstr("device emu1"));
}

TEST(EmulatedDeviceFaults, CreateRejectsAFailReadThatIsNoFault) {
  EmulatedDeviceConfig c;
  c.name = "emu1";
  c.state_size = 4096;
  for (int err : {0, ENOMSG, EINTR, EAGAIN}) {
    c.fail_read = ReadFault{0, err};
    EXPECT_EQ(EmulatedDevice::Create(c).status().code(),
              absl::StatusCode::kInvalidArgument)
        << "errno " << err;
  }
  c.fail_read = ReadFault{EmulatedDevice::FullStreamSize(4096), EIO};
  EXPECT_EQ(EmulatedDevice::Create(c).status().code(),
            absl::StatusCode::kInvalidArgument);
  c.fail_read->offset -= 1;
  EXPECT_TRUE(EmulatedDevice::Create(c).ok());
}

TEST(EmulatedDeviceFaults, CreateRejectsBadConfigs) {
  auto code = [](EmulatedDeviceConfig c) {
    return EmulatedDevice::Create(std::move(c)).status().code();
  };
  EmulatedDeviceConfig ok;
  ok.name = "emu1";
  EXPECT_EQ(code(ok), absl::StatusCode::kOk);

  EmulatedDeviceConfig c = ok;
  c.name = "";
  EXPECT_EQ(code(c), absl::StatusCode::kInvalidArgument);
  c.name = "a/b";
  EXPECT_EQ(code(c), absl::StatusCode::kInvalidArgument);
  c.name = std::string(65, 'a');
  EXPECT_EQ(code(c), absl::StatusCode::kInvalidArgument);
  c = ok;
  c.state_size = 0;
  EXPECT_EQ(code(c), absl::StatusCode::kInvalidArgument);
  c = ok;
  c.flags = vfio::kMigP2P;
  EXPECT_EQ(code(c), absl::StatusCode::kInvalidArgument);
  c = ok;
  c.flags = vfio::kMigStopCopy | (1u << 7);
  EXPECT_EQ(code(c), absl::StatusCode::kInvalidArgument);
  c = ok;  // with P2P the device goes RUNNING -> RUNNING_P2P, never -> STOP
  c.fail_arc = MigArc{MigState::kRunning, MigState::kStop};
  EXPECT_EQ(code(c), absl::StatusCode::kInvalidArgument);
  c.flags = vfio::kMigStopCopy;
  EXPECT_EQ(code(c), absl::StatusCode::kOk);
  c = ok;
  c.fail_arc = MigArc{MigState::kRunning, MigState::kPreCopy};  // no PRE_COPY
  EXPECT_EQ(code(c), absl::StatusCode::kInvalidArgument);
  c = ok;
  c.corrupt_stream_at = EmulatedDevice::FullStreamSize(ok.state_size);
  EXPECT_EQ(code(c), absl::StatusCode::kInvalidArgument);
  c.corrupt_stream_at = *c.corrupt_stream_at - 1;
  EXPECT_EQ(code(c), absl::StatusCode::kOk);
}

// ---- Pre-copy. ----

TEST(EmulatedDevicePreCopy, InitialBytesThenEnomsgThenStopCopyContinues) {
  const uint64_t size = 300 * 1024 + 1;
  auto src = MakeDevice("src", size, 21, kAllFlags);
  auto dst = MakeDevice("dst", size, 22, kAllFlags);
  const uint64_t full = EmulatedDevice::FullStreamSize(size);

  auto s = src->SetState(MigState::kPreCopy);
  ASSERT_TRUE(s.ok());
  ASSERT_NE(*s, nullptr);
  DataStream& stream = **s;
  PrecopyInfo info = stream.GetPrecopyInfo().value();
  EXPECT_EQ(info.initial_bytes, full - kEndBytes);
  EXPECT_EQ(info.dirty_bytes, 0u);

  std::vector<uint8_t> bytes(100);
  ASSERT_EQ(Outcome(stream.Read(absl::MakeSpan(bytes))), "data(100)");
  EXPECT_EQ(stream.GetPrecopyInfo().value().initial_bytes,
            full - kEndBytes - 100);

  std::mt19937 rng(3);
  EXPECT_EQ(Outcome(ReadUntilEnd(stream, &bytes, rng)), "no data now");
  EXPECT_EQ(bytes.size(), full - kEndBytes);
  info = stream.GetPrecopyInfo().value();
  EXPECT_EQ(info.initial_bytes, 0u);
  EXPECT_EQ(info.dirty_bytes, 0u);
  EXPECT_EQ(src->GetStopCopySize().value(), kEndBytes);

  // The switchover: same stream, no new one.
  auto r = src->SetState(MigState::kPreCopyP2P);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, nullptr);
  EXPECT_EQ(stream.GetPrecopyInfo().value().initial_bytes, 0u);
  r = src->SetState(MigState::kStopCopy);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, nullptr);
  EXPECT_EQ(stream.GetPrecopyInfo().status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(Outcome(ReadUntilEnd(stream, &bytes, rng)), "end of stream");
  EXPECT_EQ(bytes.size(), full);

  const LoadResult l = Load(*dst, bytes);
  ASSERT_TRUE(l.write.ok()) << l.write;
  ASSERT_TRUE(l.arc.ok()) << l.arc;
  EXPECT_EQ(DigestOf(*dst), DigestOf(*src));
}

TEST(EmulatedDevicePreCopy, DirtiedPagesAreResentAndTheLastCopyWins) {
  const uint64_t size = 256 * 1024;
  auto src = MakeDevice("src", size, 31, kAllFlags);
  auto dst = MakeDevice("dst", size, 32, kAllFlags);
  auto s = src->SetState(MigState::kPreCopy);
  ASSERT_TRUE(s.ok());
  std::vector<uint8_t> bytes;
  std::mt19937 rng(4);
  ASSERT_EQ(Outcome(ReadUntilEnd(**s, &bytes, rng)), "no data now");

  const std::string before = DigestOf(*src);
  // Two bytes in the second PAGE record, already sent.
  ASSERT_TRUE(
      src->SimulateStateWrite(EmulatedDevice::kPageRecordPayload + 10, 2).ok());
  EXPECT_NE(DigestOf(*src), before);
  PrecopyInfo info = (*s)->GetPrecopyInfo().value();
  EXPECT_EQ(info.initial_bytes, 0u);
  EXPECT_EQ(info.dirty_bytes, 13 + EmulatedDevice::kPageRecordPayload);
  ASSERT_EQ(Outcome(ReadUntilEnd(**s, &bytes, rng)), "no data now");
  EXPECT_EQ((*s)->GetPrecopyInfo().value().dirty_bytes, 0u);

  ASSERT_TRUE(src->SetState(MigState::kStopCopy).ok());
  ASSERT_EQ(Outcome(ReadUntilEnd(**s, &bytes, rng)), "end of stream");
  EXPECT_EQ(bytes.size(), EmulatedDevice::FullStreamSize(size) + 13 +
                              EmulatedDevice::kPageRecordPayload);
  const LoadResult l = Load(*dst, bytes);
  ASSERT_TRUE(l.arc.ok()) << l.arc;
  EXPECT_EQ(DigestOf(*dst), DigestOf(*src));
}

// The END record's CRC comes from the pages as they went out, unless the
// content changed behind them: no digest is asked for in between here, so
// nothing else recomputes it.
TEST(EmulatedDevicePreCopy, EndRecordCrcCoversAChangeToAPageAlreadySent) {
  const uint64_t size = 4 * EmulatedDevice::kPageRecordPayload + 100;
  for (const uint64_t at :
       {uint64_t{0}, EmulatedDevice::kPageRecordPayload + 3, size - 1}) {
    auto src = MakeDevice("src", size, 41, kAllFlags);
    auto dst = MakeDevice("dst", size, 42, kAllFlags);
    auto s = src->SetState(MigState::kPreCopy);
    ASSERT_TRUE(s.ok());
    std::vector<uint8_t> bytes;
    std::mt19937 rng(5);
    ASSERT_EQ(Outcome(ReadUntilEnd(**s, &bytes, rng)), "no data now");
    ASSERT_TRUE(src->SimulateStateWrite(at, 1).ok());
    ASSERT_TRUE(src->SetState(MigState::kStopCopy).ok());
    ASSERT_EQ(Outcome(ReadUntilEnd(**s, &bytes, rng)), "end of stream");
    const LoadResult l = Load(*dst, bytes);
    ASSERT_TRUE(l.arc.ok()) << "state write at " << at << ": " << l.arc;
    EXPECT_EQ(DigestOf(*dst), DigestOf(*src));
  }
}

TEST(EmulatedDevicePreCopy, LeavingPreCopyForRunningEndsTheSession) {
  auto d = MakeDevice("emu1", 4096, 1, kAllFlags);
  auto s = d->SetState(MigState::kPreCopy);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(d->SetState(MigState::kRunning).ok());
  uint8_t buf[16];
  EXPECT_EQ((*s)->Read(absl::MakeSpan(buf)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*s)->GetPrecopyInfo().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(EmulatedDevicePreCopy, StateChangesOnlyWhileRunning) {
  auto d = MakeDevice("emu1", 4096, 1, kAllFlags);
  EXPECT_TRUE(d->SimulateStateWrite(0, 4096).ok());
  EXPECT_EQ(d->SimulateStateWrite(4000, 97).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(d->SetState(MigState::kStop).ok());
  EXPECT_EQ(d->SimulateStateWrite(0, 1).code(),
            absl::StatusCode::kFailedPrecondition);
}

// ---- DMA logging. ----

std::vector<uint64_t> SetBits(const std::vector<uint64_t>& bitmap) {
  std::vector<uint64_t> bits;
  for (size_t w = 0; w < bitmap.size(); ++w) {
    for (int b = 0; b < 64; ++b) {
      if (bitmap[w] & (uint64_t{1} << b)) bits.push_back(w * 64 + b);
    }
  }
  return bits;
}

TEST(EmulatedDeviceDma, ReportsExactlyTheWrittenPagesAndClearsOnRead) {
  auto d = MakeDevice("emu1", 4096, 1);
  const uint64_t base = 0x100000;
  ASSERT_TRUE(
      d->StartDmaLogging(4096, {{base, 1 << 20}, {0x400000, 0x10000}}).ok());
  // Pages 3 and 4 of the first range, page 0 of the second, and a write
  // outside every range (not logged).
  ASSERT_TRUE(d->SimulateDmaWrite(base + 3 * 4096 + 10, 5000).ok());
  ASSERT_TRUE(d->SimulateDmaWrite(0x400000, 1).ok());
  ASSERT_TRUE(d->SimulateDmaWrite(0x0, 4096).ok());

  std::vector<uint64_t> bitmap;
  ASSERT_TRUE(d->ReportDmaLogging(base, 1 << 20, 4096, &bitmap).ok());
  EXPECT_EQ(bitmap.size(), (1u << 20) / 4096 / 64);
  EXPECT_EQ(SetBits(bitmap), (std::vector<uint64_t>{3, 4}));
  ASSERT_TRUE(d->ReportDmaLogging(base, 1 << 20, 4096, &bitmap).ok());
  EXPECT_TRUE(SetBits(bitmap).empty());

  ASSERT_TRUE(d->ReportDmaLogging(0x400000, 0x10000, 4096, &bitmap).ok());
  EXPECT_EQ(SetBits(bitmap), (std::vector<uint64_t>{0}));
  ASSERT_TRUE(d->StopDmaLogging().ok());
}

TEST(EmulatedDeviceDma, ReportsAtAnotherPageSize) {
  auto d = MakeDevice("emu1", 4096, 1);
  ASSERT_TRUE(d->StartDmaLogging(4096, {{0, 1 << 20}}).ok());
  ASSERT_TRUE(d->SimulateDmaWrite(3 * 4096, 2 * 4096).ok());  // pages 3, 4
  std::vector<uint64_t> bitmap;
  ASSERT_TRUE(d->ReportDmaLogging(0, 1 << 20, 8192, &bitmap).ok());
  EXPECT_EQ(SetBits(bitmap), (std::vector<uint64_t>{1, 2}));
}

TEST(EmulatedDeviceDma, ReportBeforeStartOrAfterStopFails) {
  auto d = MakeDevice("emu1", 4096, 1);
  std::vector<uint64_t> bitmap;
  EXPECT_EQ(d->ReportDmaLogging(0, 4096, 4096, &bitmap).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(d->StartDmaLogging(4096, {{0, 4096}}).ok());
  ASSERT_TRUE(d->StopDmaLogging().ok());
  EXPECT_EQ(d->ReportDmaLogging(0, 4096, 4096, &bitmap).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(EmulatedDeviceDma, StartValidatesPageSizeAndRanges) {
  auto d = MakeDevice("emu1", 4096, 1);
  const auto code = [&](uint64_t page_size, std::vector<IovaRange> ranges) {
    return d->StartDmaLogging(page_size, ranges).code();
  };
  EXPECT_EQ(code(2048, {{0, 4096}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(12288, {{0, 12288}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(4096, {}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(4096, {{100, 4096}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(4096, {{0, 100}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(4096, {{0, 0}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(4096, {{0x2000, 0x2000}, {0x1000, 0x2000}}),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(4096, {{0x1000, 0x1000}, {0x2000, 0x1000}}),
            absl::StatusCode::kOk);
  EXPECT_EQ(code(4096, {{0, 4096}}), absl::StatusCode::kFailedPrecondition);
}

TEST(EmulatedDeviceDma, NoDmaWhileStopped) {
  auto d = MakeDevice("emu1", 4096, 1);
  ASSERT_TRUE(d->StartDmaLogging(4096, {{0, 1 << 20}}).ok());
  ASSERT_TRUE(d->SetState(MigState::kStop).ok());
  EXPECT_EQ(d->SimulateDmaWrite(0, 4096).code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<uint64_t> bitmap;
  ASSERT_TRUE(d->ReportDmaLogging(0, 1 << 20, 4096, &bitmap).ok());
  EXPECT_TRUE(SetBits(bitmap).empty());
}

TEST(EmulatedDeviceDma, WithoutDmaLoggingEveryLoggingCallIsUnimplemented) {
  EmulatedDeviceConfig c;
  c.name = "emu1";
  c.state_size = 4096;
  c.dma_logging = false;
  auto d = MakeDevice(c);
  const absl::Status start = d->StartDmaLogging(4096, {{0, 1 << 20}});
  EXPECT_EQ(start.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(start.message()), HasSubstr("device emu1"));
  std::vector<uint64_t> bitmap;
  EXPECT_EQ(d->ReportDmaLogging(0, 1 << 20, 4096, &bitmap).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(d->StopDmaLogging().code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(d->SimulateDmaWrite(0, 4096).ok());  // DMA itself still works
}

// ---- Workload. ----

// Waits until `done` holds, checking every millisecond; false after
// `deadline`.
bool WaitFor(const std::function<bool()>& done,
             absl::Duration deadline = absl::Seconds(30)) {
  const absl::Time end = absl::Now() + deadline;
  while (!done()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// Some time for a workload that should be idle to show it is not.
constexpr absl::Duration kQuietPeriod = absl::Milliseconds(50);

// Reads in pre-copy until the temporary end (no data now) or `max_bytes`.
void ReadSome(DataStream& s, std::vector<uint8_t>* out, std::mt19937& rng,
              size_t max_bytes, size_t max_chunk = 3000) {
  std::vector<uint8_t> buf(max_chunk);
  std::uniform_int_distribution<size_t> len(1, max_chunk);
  for (size_t got = 0; got < max_bytes;) {
    absl::StatusOr<ReadResult> r = s.Read(absl::MakeSpan(buf.data(), len(rng)));
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->kind != ReadResult::Kind::kData) {
      ASSERT_EQ(Outcome(r), "no data now");
      return;
    }
    out->insert(out->end(), buf.begin(), buf.begin() + r->bytes);
    got += r->bytes;
  }
}

EmulatedDeviceConfig WorkloadConfig(const std::string& name, uint64_t size,
                                    uint64_t dirty_rate) {
  EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = size;
  c.seed = 41;
  c.flags = kAllFlags;
  c.dirty_rate = dirty_rate;
  return c;
}

TEST(EmulatedDeviceWorkload,
     PreCopyReportsDirtyBytesAndTheDestinationEndsEqual) {
  const uint64_t size = 4 << 20;  // 64 PAGE records
  auto src = MakeDevice(WorkloadConfig("src", size, 8 << 20));
  auto dst = MakeDevice("dst", size, 42, kAllFlags);
  auto s = src->SetState(MigState::kPreCopy);
  ASSERT_TRUE(s.ok()) << s.status();
  DataStream& stream = **s;
  std::vector<uint8_t> bytes;
  std::mt19937 rng(5);

  // The initial bytes, then the device's own changes show as dirty bytes.
  ASSERT_TRUE(WaitFor([&] {
    ReadSome(stream, &bytes, rng, 1 << 20);
    return stream.GetPrecopyInfo().value().initial_bytes == 0;
  }));
  ASSERT_TRUE(
      WaitFor([&] { return stream.GetPrecopyInfo().value().dirty_bytes > 0; }));
  // Re-send rounds while the device keeps changing.
  for (int round = 0; round < 3; ++round) {
    ReadSome(stream, &bytes, rng, 1 << 20);
    ASSERT_TRUE(WaitFor(
        [&] { return stream.GetPrecopyInfo().value().dirty_bytes > 0; }));
  }
  ASSERT_TRUE(src->SetState(MigState::kPreCopyP2P).ok());
  ASSERT_TRUE(src->SetState(MigState::kStopCopy).ok());
  const std::string final_digest = DigestOf(*src);
  ASSERT_EQ(Outcome(ReadUntilEnd(stream, &bytes, rng)), "end of stream");
  EXPECT_GT(bytes.size(), EmulatedDevice::FullStreamSize(size));
  EXPECT_EQ(DigestOf(*src), final_digest);  // stopped: reading changed nothing

  const LoadResult l = Load(*dst, bytes);
  ASSERT_TRUE(l.write.ok()) << l.write;
  ASSERT_TRUE(l.arc.ok()) << l.arc;
  EXPECT_EQ(DigestOf(*dst), final_digest);
}

// Records change while they are being read (torn copies in the stream); the
// re-sent copies after them must still leave the destination exact.
TEST(EmulatedDeviceWorkload, HeavyDirtyingDuringPreCopyStillLoadsExactly) {
  const uint64_t size = (1 << 20) + 123;  // 17 records, the last one short
  for (int run = 0; run < 3; ++run) {
    SCOPED_TRACE(run);
    auto src = MakeDevice(WorkloadConfig("src", size, 256 << 20));
    auto dst = MakeDevice("dst", size, 43, kAllFlags);
    auto s = src->SetState(MigState::kPreCopy);
    ASSERT_TRUE(s.ok());
    std::vector<uint8_t> bytes;
    std::mt19937 rng(run);
    ReadSome(**s, &bytes, rng, 3 << 20, /*max_chunk=*/700);
    ASSERT_TRUE(src->SetState(MigState::kPreCopyP2P).ok());
    ReadSome(**s, &bytes, rng, 1 << 20, /*max_chunk=*/700);
    ASSERT_TRUE(src->SetState(MigState::kStopCopy).ok());
    ASSERT_EQ(Outcome(ReadUntilEnd(**s, &bytes, rng)), "end of stream");
    const LoadResult l = Load(*dst, bytes);
    ASSERT_TRUE(l.write.ok()) << l.write;
    ASSERT_TRUE(l.arc.ok()) << l.arc;
    EXPECT_EQ(DigestOf(*dst), DigestOf(*src));
  }
}

TEST(EmulatedDeviceWorkload, ChangesContentInRunningStatesOnly) {
  auto d = MakeDevice(WorkloadConfig("emu1", 1 << 20, 64 << 20));
  std::string before = DigestOf(*d);
  ASSERT_TRUE(WaitFor([&] { return DigestOf(*d) != before; }));  // RUNNING

  ASSERT_TRUE(d->SetState(MigState::kRunningP2P).ok());
  before = DigestOf(*d);
  ASSERT_TRUE(WaitFor([&] { return DigestOf(*d) != before; }));

  ASSERT_TRUE(d->SetState(MigState::kStop).ok());
  const std::string stopped = DigestOf(*d);
  absl::SleepFor(kQuietPeriod);
  EXPECT_EQ(DigestOf(*d), stopped);

  auto s = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(s.ok());
  absl::SleepFor(kQuietPeriod);
  EXPECT_EQ(DigestOf(*d), stopped);

  ASSERT_TRUE(d->SetState(MigState::kRunning).ok());  // via STOP, RUNNING_P2P
  ASSERT_TRUE(WaitFor([&] { return DigestOf(*d) != stopped; }));
}

TEST(EmulatedDeviceWorkload, NeverDirtiesFasterThanTheRate) {
  const uint64_t rate = 4 << 20;
  const uint64_t size = 16 << 20;  // 256 records: far from all dirty
  auto d = MakeDevice(WorkloadConfig("emu1", size, rate));
  const absl::Time start = absl::Now();
  auto s = d->SetState(MigState::kPreCopy);
  ASSERT_TRUE(s.ok());
  DataStream& stream = **s;
  // Exactly the initial bytes: every record sent once, none re-sent.
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t left = stream.GetPrecopyInfo().value().initial_bytes;
       left > 0;) {
    const size_t want =
        static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
    absl::StatusOr<ReadResult> r =
        stream.Read(absl::MakeSpan(buf.data(), want));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->kind, ReadResult::Kind::kData) << Outcome(r);
    left -= r->bytes;
  }
  const uint64_t record = 13 + EmulatedDevice::kPageRecordPayload;
  ASSERT_TRUE(WaitFor([&] {
    return stream.GetPrecopyInfo().value().dirty_bytes >= 4 * record;
  }));
  const uint64_t dirty = stream.GetPrecopyInfo().value().dirty_bytes;
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  // The workload rewrites records one after another, so B bytes touch at
  // most B / kPageRecordPayload + 2 records (a partial one at each end).
  const uint64_t records =
      static_cast<uint64_t>(rate * elapsed /
                            EmulatedDevice::kPageRecordPayload) +
      2;
  EXPECT_LE(dirty, records * record) << "after " << elapsed << " s";
}

TEST(EmulatedDeviceWorkload, DestroyingTheDeviceStopsTheWorkload) {
  for (int i = 0; i < 20; ++i) {
    EmulatedDeviceConfig c = WorkloadConfig("emu1", 256 * 1024, 1 << 30);
    c.dma_rate = EmulatedDevice::kMaxDmaRate;
    auto d = MakeDevice(c);
    ASSERT_TRUE(d->StartDmaLogging(4096, {{0, 1 << 20}}).ok());
    std::unique_ptr<DataStream> stream;
    if (i % 2 == 1) stream = *d->SetState(MigState::kPreCopy);
    if (i % 4 == 1) absl::SleepFor(absl::Milliseconds(5));
    d.reset();  // joins the thread
    if (stream != nullptr) {
      uint8_t buf[16];
      EXPECT_EQ(stream->Read(absl::MakeSpan(buf)).status().code(),
                absl::StatusCode::kFailedPrecondition);
    }
  }
}

TEST(EmulatedDeviceWorkload, CreateRejectsRatesOverTheLimits) {
  EmulatedDeviceConfig c = WorkloadConfig("emu1", 4096, 0);
  c.dirty_rate = EmulatedDevice::kMaxDirtyRate + 1;
  EXPECT_EQ(EmulatedDevice::Create(c).status().code(),
            absl::StatusCode::kInvalidArgument);
  c.dirty_rate = EmulatedDevice::kMaxDirtyRate;
  c.dma_rate = EmulatedDevice::kMaxDmaRate + 1;
  EXPECT_EQ(EmulatedDevice::Create(c).status().code(),
            absl::StatusCode::kInvalidArgument);
  c.dma_rate = EmulatedDevice::kMaxDmaRate;
  EXPECT_TRUE(EmulatedDevice::Create(c).ok());
}

// ---- DMA workload and the DMA write log. ----

// Unique per process: the binary may run twice at once outside Bazel.
std::string TempPath(absl::string_view name) {
  return absl::StrCat(::testing::TempDir(), "/", getpid(), "-", name);
}

// The dma_write_log file, as another process would read it.
struct DmaLogFile {
  std::vector<std::string> markers;  // the '#' lines
  std::vector<IovaRange> writes;     // the "0x<iova> 0x<length>" lines
  bool well_formed = true;
};

DmaLogFile ReadDmaLog(const std::string& path) {
  DmaLogFile f;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "#")) {
      f.markers.push_back(line);
      continue;
    }
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    IovaRange w;
    if (fields.size() != 2 || !absl::ConsumePrefix(&fields[0], "0x") ||
        !absl::ConsumePrefix(&fields[1], "0x") ||
        !absl::SimpleHexAtoi(fields[0], &w.iova) ||
        !absl::SimpleHexAtoi(fields[1], &w.length)) {
      ADD_FAILURE() << "bad dma_write_log line \"" << line << "\"";
      f.well_formed = false;
      continue;
    }
    f.writes.push_back(w);
  }
  return f;
}

// The 4 KiB pages of `range` the writes touch, as bit indexes.
std::vector<uint64_t> PagesWritten(const std::vector<IovaRange>& writes,
                                   IovaRange range) {
  std::set<uint64_t> pages;
  for (const IovaRange& w : writes) {
    const uint64_t lo = std::max(w.iova, range.iova);
    const uint64_t hi = std::min(w.iova + w.length, range.iova + range.length);
    for (uint64_t a = lo; a < hi; a = (a / 4096 + 1) * 4096) {
      pages.insert((a - range.iova) / 4096);
    }
  }
  return {pages.begin(), pages.end()};
}

void OrInto(std::vector<uint64_t>* acc, const std::vector<uint64_t>& bitmap) {
  acc->resize(std::max(acc->size(), bitmap.size()), 0);
  for (size_t i = 0; i < bitmap.size(); ++i) (*acc)[i] |= bitmap[i];
}

TEST(EmulatedDeviceDmaWorkload, ReportedBitmapsAreExactlyTheLoggedWrites) {
  const std::string path = TempPath("dma_bitmaps.log");
  EmulatedDeviceConfig c = WorkloadConfig("emu1", 4096, 0);
  c.dma_rate = 5000;
  c.dma_write_log = path;
  auto d = MakeDevice(c);
  ASSERT_NE(d, nullptr);
  const std::vector<IovaRange> ranges = {{0x100000, 64 * 4096},
                                         {0x800000, 32 * 4096}};
  ASSERT_TRUE(d->StartDmaLogging(4096, ranges).ok());

  // The service's loop: report (and clear) every range, again and again.
  std::vector<std::vector<uint64_t>> served(ranges.size());
  const auto report = [&] {
    for (size_t i = 0; i < ranges.size(); ++i) {
      std::vector<uint64_t> bitmap;
      ASSERT_TRUE(
          d->ReportDmaLogging(ranges[i].iova, ranges[i].length, 4096, &bitmap)
              .ok());
      OrInto(&served[i], bitmap);
    }
  };
  ASSERT_TRUE(WaitFor([&] {
    report();
    return ReadDmaLog(path).writes.size() >= 50;
  }));
  ASSERT_TRUE(d->SetState(MigState::kPreCopy).ok());  // DMA goes on
  const size_t before = ReadDmaLog(path).writes.size();
  ASSERT_TRUE(WaitFor([&] {
    report();
    return ReadDmaLog(path).writes.size() >= before + 50;
  }));
  ASSERT_TRUE(d->SetState(MigState::kPreCopyP2P).ok());  // no DMA from here
  report();

  const DmaLogFile log = ReadDmaLog(path);
  ASSERT_TRUE(log.well_formed);
  for (const IovaRange& w : log.writes) EXPECT_EQ(w.length, 4096u);
  for (size_t i = 0; i < ranges.size(); ++i) {
    SCOPED_TRACE(i);
    const std::vector<uint64_t> expected = PagesWritten(log.writes, ranges[i]);
    EXPECT_FALSE(expected.empty());
    EXPECT_EQ(SetBits(served[i]), expected);
  }
  std::set<uint64_t> iovas;
  for (const IovaRange& w : log.writes) iovas.insert(w.iova);
  EXPECT_EQ(PagesWritten(log.writes, ranges[0]).size() +
                PagesWritten(log.writes, ranges[1]).size(),
            iovas.size());  // every write inside a started range

  absl::SleepFor(kQuietPeriod);
  EXPECT_EQ(ReadDmaLog(path).writes.size(), log.writes.size());
  std::vector<uint64_t> bitmap;
  ASSERT_TRUE(d->ReportDmaLogging(0x100000, 64 * 4096, 4096, &bitmap).ok());
  EXPECT_TRUE(SetBits(bitmap).empty());
}

TEST(EmulatedDeviceDmaWorkload, WritesAndLogsOnlyWhileLoggingAndRunning) {
  const std::string path = TempPath("dma_only_logging.log");
  EmulatedDeviceConfig c = WorkloadConfig("emu1", 4096, 0);
  c.dma_rate = 5000;
  c.dma_write_log = path;
  auto d = MakeDevice(c);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->SimulateDmaWrite(0, 4096).ok());  // not logging: not logged
  absl::SleepFor(kQuietPeriod);
  EXPECT_TRUE(ReadDmaLog(path).markers.empty());
  EXPECT_TRUE(ReadDmaLog(path).writes.empty());

  ASSERT_TRUE(d->StartDmaLogging(4096, {{0, 1 << 20}}).ok());
  ASSERT_TRUE(WaitFor([&] { return ReadDmaLog(path).writes.size() >= 10; }));
  ASSERT_TRUE(d->SetState(MigState::kRunningP2P).ok());
  size_t n = ReadDmaLog(path).writes.size();
  absl::SleepFor(kQuietPeriod);
  EXPECT_EQ(ReadDmaLog(path).writes.size(), n);
  ASSERT_TRUE(d->SetState(MigState::kRunning).ok());
  ASSERT_TRUE(
      WaitFor([&] { return ReadDmaLog(path).writes.size() >= n + 10; }));

  ASSERT_TRUE(d->StopDmaLogging().ok());
  const DmaLogFile log = ReadDmaLog(path);
  absl::SleepFor(kQuietPeriod);
  EXPECT_EQ(ReadDmaLog(path).writes.size(), log.writes.size());
  EXPECT_EQ(log.markers,
            (std::vector<std::string>{
                "# start page_size=0x1000 ranges=0x0+0x100000", "# stop"}));
  ASSERT_TRUE(d->StopDmaLogging().ok());  // idempotent, no second marker
  EXPECT_EQ(ReadDmaLog(path).markers.size(), 2u);
}

TEST(EmulatedDeviceDmaWorkload, WriteLogRecordsSimulatedWritesExactly) {
  const std::string path = TempPath("dma_simulated.log");
  EmulatedDeviceConfig c = WorkloadConfig("emu1", 4096, 0);
  c.dma_write_log = path;
  auto d = MakeDevice(c);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->SimulateDmaWrite(0x5000, 1).ok());  // before start: not logged
  ASSERT_TRUE(
      d->StartDmaLogging(4096, {{0x100000, 1 << 20}, {0x400000, 0x10000}})
          .ok());
  ASSERT_TRUE(d->SimulateDmaWrite(0x100000 + 3 * 4096 + 10, 5000).ok());
  ASSERT_TRUE(d->SimulateDmaWrite(0x0, 4096).ok());  // outside the ranges
  ASSERT_TRUE(d->StopDmaLogging().ok());
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(
      text.str(),
      "# start page_size=0x1000 ranges=0x100000+0x100000,0x400000+0x10000\n"
      "0x10300a 0x1388\n"
      "0x0 0x1000\n"
      "# stop\n");
}

TEST(EmulatedDeviceDmaWorkload, CreateFailsWhenTheLogCannotBeCreated) {
  EmulatedDeviceConfig c = WorkloadConfig("emu1", 4096, 0);
  c.dma_write_log = TempPath("no-such-dir/dma.log");
  absl::StatusOr<std::unique_ptr<EmulatedDevice>> d = EmulatedDevice::Create(c);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(d.status().message()),
              HasSubstr("no-such-dir/dma.log"));
}

TEST(EmulatedDeviceDmaWorkload, CreateTruncatesTheLog) {
  const std::string path = TempPath("dma_truncated.log");
  {
    std::ofstream out(path);
    out << "0x0 0x1000\n";
  }
  EmulatedDeviceConfig c = WorkloadConfig("emu1", 4096, 0);
  c.dma_write_log = path;
  auto d = MakeDevice(c);
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(ReadDmaLog(path).writes.empty());
}

}  // namespace
}  // namespace migd::device
