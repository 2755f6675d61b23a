#include "migd/transfer/framing.h"

#include <string>

#include "gtest/gtest.h"
#include "migd/base/crc32c.h"
#include "migd/base/reason.h"

namespace migd::transfer {
namespace {

// A chunk as received: its header (CRC32C sealed over `data`) and payload.
struct TestChunk {
  ChunkHeader header;
  std::string data;
};

TestChunk Chunk(uint32_t device, uint64_t seq, uint64_t offset,
                const std::string& data) {
  return {SealChunkHeader(
              device, seq, offset,
              absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()),
                                  data.size())),
          data};
}

absl::Status Check(StreamChecker& c, const TestChunk& chunk) {
  return c.CheckChunk(chunk.header, chunk.data.size(),
                      base::Crc32c(chunk.data.data(), chunk.data.size()));
}

v1::PhaseMarker Marker(v1::PhaseMarker::Kind kind, uint64_t seq,
                       uint32_t device = 0, uint64_t total = 0) {
  v1::PhaseMarker m;
  m.set_kind(kind);
  m.set_sequence(seq);
  m.set_device(device);
  m.set_total_bytes(total);
  return m;
}

TEST(StreamChecker, AcceptsAWellFormedSessionOfTwoDevices) {
  StreamChecker c(2);
  ASSERT_TRUE(c.CheckMarker(Marker(v1::PhaseMarker::STOP_COPY, 0)).ok());
  ASSERT_TRUE(Check(c, Chunk(0, 1, 0, "abc")).ok());
  ASSERT_TRUE(Check(c, Chunk(1, 2, 0, "xy")).ok());
  ASSERT_TRUE(Check(c, Chunk(0, 3, 3, "defg")).ok());
  ASSERT_TRUE(c.CheckMarker(Marker(v1::PhaseMarker::DEVICE_END, 4, 0, 7)).ok());
  ASSERT_TRUE(c.CheckMarker(Marker(v1::PhaseMarker::DEVICE_END, 5, 1, 2)).ok());
  EXPECT_TRUE(c.CheckMarker(Marker(v1::PhaseMarker::COMMIT, 6)).ok());
  EXPECT_TRUE(c.device_ended(0) && c.device_ended(1));
}

TEST(StreamChecker, FlippedPayloadBitFailsCrcWithDataLoss) {
  StreamChecker c(1);
  TestChunk chunk = Chunk(0, 0, 0, std::string(4096, 'a'));
  chunk.data[100] ^= 0x01;
  absl::Status s = Check(c, chunk);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(base::ReasonOf(s), v1::ERROR_REASON_STREAM_CORRUPTED);
  EXPECT_NE(s.message().find("CRC32C"), absl::string_view::npos) << s;
  EXPECT_EQ(c.next_sequence(), 0u);  // rejected chunk is not accounted
}

TEST(StreamChecker, LostChunkIsASequenceGap) {
  StreamChecker c(1);
  ASSERT_TRUE(Check(c, Chunk(0, 0, 0, "a")).ok());
  absl::Status s = Check(c, Chunk(0, 2, 1, "b"));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("lost"), absl::string_view::npos) << s;
}

TEST(StreamChecker, DuplicateChunkIsRefused) {
  StreamChecker c(1);
  ASSERT_TRUE(Check(c, Chunk(0, 0, 0, "a")).ok());
  absl::Status s = Check(c, Chunk(0, 0, 0, "a"));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("duplicate"), absl::string_view::npos) << s;
}

TEST(StreamChecker, UnknownDeviceIsAProtocolError) {
  StreamChecker c(2);
  absl::Status s = Check(c, Chunk(2, 0, 0, "a"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(base::ReasonOf(s), v1::ERROR_REASON_PROTOCOL_ERROR);
}

TEST(StreamChecker, DeviceEndTwiceIsRefused) {
  StreamChecker c(1);
  ASSERT_TRUE(c.CheckMarker(Marker(v1::PhaseMarker::DEVICE_END, 0, 0, 0)).ok());
  EXPECT_FALSE(
      c.CheckMarker(Marker(v1::PhaseMarker::DEVICE_END, 1, 0, 0)).ok());
}

TEST(StreamChecker, CommitBeforeEveryDeviceEndedIsRefused) {
  StreamChecker c(2);
  ASSERT_TRUE(c.CheckMarker(Marker(v1::PhaseMarker::DEVICE_END, 0, 0, 0)).ok());
  absl::Status s = c.CheckMarker(Marker(v1::PhaseMarker::COMMIT, 1));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("device index 1"), absl::string_view::npos) << s;
}

TEST(StreamChecker, InitialDataEndOncePerDeviceBeforeStopCopy) {
  StreamChecker c(1);
  ASSERT_TRUE(Check(c, Chunk(0, 0, 0, "ab")).ok());
  ASSERT_TRUE(
      c.CheckMarker(Marker(v1::PhaseMarker::INITIAL_DATA_END, 1, 0, 2)).ok());
  EXPECT_FALSE(
      c.CheckMarker(Marker(v1::PhaseMarker::INITIAL_DATA_END, 2, 0, 2)).ok());
  StreamChecker late(1);
  ASSERT_TRUE(late.CheckMarker(Marker(v1::PhaseMarker::STOP_COPY, 0)).ok());
  EXPECT_FALSE(
      late.CheckMarker(Marker(v1::PhaseMarker::INITIAL_DATA_END, 1, 0, 0))
          .ok());
}

TEST(StreamChecker, AbortIsAcceptedAnywhereInSequence) {
  StreamChecker c(1);
  ASSERT_TRUE(Check(c, Chunk(0, 0, 0, "ab")).ok());
  EXPECT_TRUE(c.CheckMarker(Marker(v1::PhaseMarker::ABORT, 1)).ok());
  EXPECT_FALSE(c.CheckMarker(Marker(v1::PhaseMarker::ABORT, 5)).ok());
}

TEST(StreamChecker, StreamEndMustCountEveryChunkAndByte) {
  StreamChecker c(2);
  ASSERT_TRUE(Check(c, Chunk(0, 0, 0, "abcd")).ok());
  ASSERT_TRUE(Check(c, Chunk(1, 1, 0, "efghij")).ok());
  EXPECT_TRUE(
      c.CheckStreamEnd(Marker(v1::PhaseMarker::STREAM_END, 2, 0, 10)).ok());
  // The source sent a third chunk this stream never delivered.
  absl::Status lost =
      c.CheckStreamEnd(Marker(v1::PhaseMarker::STREAM_END, 3, 0, 14));
  EXPECT_EQ(lost.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(base::ReasonOf(lost), v1::ERROR_REASON_STREAM_CORRUPTED);
  EXPECT_NE(lost.message().find("2 chunks of 10 bytes"), std::string::npos)
      << lost;
  EXPECT_EQ(
      c.CheckStreamEnd(Marker(v1::PhaseMarker::STREAM_END, 2, 0, 9)).code(),
      absl::StatusCode::kDataLoss);
  // Any other marker on a data stream is a protocol error.
  EXPECT_EQ(
      base::ReasonOf(c.CheckStreamEnd(Marker(v1::PhaseMarker::COMMIT, 2))),
      v1::ERROR_REASON_PROTOCOL_ERROR);
}

TEST(StreamChecker, StreamEndIsRefusedOnTheControlStream) {
  StreamChecker c(1);
  EXPECT_EQ(
      base::ReasonOf(c.CheckMarker(Marker(v1::PhaseMarker::STREAM_END, 0))),
      v1::ERROR_REASON_PROTOCOL_ERROR);
}

TEST(SealChunkHeader, CrcCoversExactlyThePayload) {
  TestChunk a = Chunk(0, 0, 0, "123456789");
  EXPECT_EQ(a.header.crc32c, 0xE3069283u);
}

}  // namespace
}  // namespace migd::transfer
