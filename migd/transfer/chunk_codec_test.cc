#include "migd/transfer/chunk_codec.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "migd/base/crc32c.h"
#include "migd/transfer/buffer_pool.h"

namespace migd::transfer {
namespace {

std::string Pattern(size_t n, uint8_t seed = 1) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

v1::TransferRequest ChunkMessage(const ChunkHeader& h,
                                 const std::string& data) {
  v1::TransferRequest req;
  v1::DataChunk* c = req.mutable_chunk();
  c->set_device(h.device);
  c->set_sequence(h.sequence);
  c->set_offset(h.offset);
  c->set_crc32c(h.crc32c);
  c->set_data(data);
  return req;
}

std::string Flatten(const grpc::ByteBuffer& bb) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(bb.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

// A ByteBuffer holding `bytes` cut at the given positions (gRPC hands a
// receiver a message in whatever pieces its reads produced).
grpc::ByteBuffer Pieces(const std::string& bytes, std::vector<size_t> cuts) {
  std::vector<grpc::Slice> slices;
  size_t from = 0;
  cuts.push_back(bytes.size());
  for (size_t to : cuts) {
    slices.emplace_back(bytes.data() + from, to - from);
    from = to;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string Joined(const DecodedRequest& d) {
  std::string out;
  for (const iovec& v : d.payload()) {
    EXPECT_GT(v.iov_len, 0u);
    out.append(static_cast<const char*>(v.iov_base), v.iov_len);
  }
  return out;
}

std::vector<ChunkHeader> Headers() {
  return {
      ChunkHeader{},  // every field 0: protobuf leaves them all out
      ChunkHeader{3, 17, 1 << 20, 0xdeadbeef},
      ChunkHeader{1, 127, 128, 1},
      ChunkHeader{std::numeric_limits<uint32_t>::max(),
                  std::numeric_limits<uint64_t>::max(),
                  std::numeric_limits<uint64_t>::max(),
                  std::numeric_limits<uint32_t>::max()},
  };
}

TEST(ChunkCodec, DataChunkHasExactlyTheFieldsTheCodecWrites) {
  // The prefix is hand-serialized: a new DataChunk field must be added to
  // ChunkHeader and the codec, or it would be silently dropped.
  const google::protobuf::Descriptor* d = v1::DataChunk::descriptor();
  std::vector<int> numbers;
  for (int i = 0; i < d->field_count(); ++i) {
    numbers.push_back(d->field(i)->number());
  }
  EXPECT_THAT(numbers, testing::UnorderedElementsAre(1, 2, 3, 4, 15));
  EXPECT_EQ(d->FindFieldByNumber(15)->name(), "data");
  EXPECT_EQ(
      v1::TransferRequest::descriptor()->FindFieldByName("chunk")->number(), 2);
}

TEST(ChunkCodec, EncodedBytesAreWhatProtobufSerializes) {
  for (const ChunkHeader& h : Headers()) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{127}, size_t{128},
                     size_t{16384}, size_t{1} << 20}) {
      SCOPED_TRACE(absl::StrCat("device ", h.device, " payload ", n));
      const std::string data = Pattern(n);
      grpc::ByteBuffer bb =
          EncodeChunk(h, grpc::Slice(data.data(), data.size()));
      const std::string wire = Flatten(bb);
      const v1::TransferRequest expected = ChunkMessage(h, data);
      EXPECT_EQ(wire, expected.SerializeAsString());
      v1::TransferRequest parsed;
      ASSERT_TRUE(parsed.ParseFromString(wire));
      ASSERT_TRUE(parsed.has_chunk());
      EXPECT_EQ(parsed.chunk().device(), h.device);
      EXPECT_EQ(parsed.chunk().sequence(), h.sequence);
      EXPECT_EQ(parsed.chunk().offset(), h.offset);
      EXPECT_EQ(parsed.chunk().crc32c(), h.crc32c);
      EXPECT_EQ(parsed.chunk().data(), data);
      EXPECT_LE(ChunkPrefix(h, n).size(), kMaxChunkPrefixBytes);
    }
  }
}

TEST(ChunkCodec, EncodeCarriesThePooledBufferItselfAndReturnsItWhenDone) {
  auto pool = BufferPool::Create(1 << 20, 1);
  ASSERT_TRUE(pool.ok());
  auto buf = (*pool)->Acquire();
  ASSERT_TRUE(buf.ok());
  const std::string data = Pattern(300000);
  std::memcpy(buf->data(), data.data(), data.size());
  buf->set_size(data.size());
  const uint8_t* mem = buf->data();
  const ChunkHeader h = SealChunkHeader(2, 9, 4096, buf->contents());
  {
    grpc::ByteBuffer bb = EncodeChunk(h, *std::move(buf));
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(bb.Dump(&slices).ok());
    ASSERT_EQ(slices.size(), 2u);
    EXPECT_EQ(slices[1].begin(), mem);  // the payload is the buffer, uncopied
    EXPECT_EQ(slices[1].size(), data.size());
    EXPECT_EQ((*pool)->in_use(), 1u);
    EXPECT_EQ(Flatten(bb), ChunkMessage(h, data).SerializeAsString());
  }
  EXPECT_EQ((*pool)->in_use(), 0u);
}

TEST(ChunkCodec, DecodesProtobufBytesSplitAnywhereWithoutCopying) {
  const ChunkHeader h{5, 1234567, 987654321, 0x01020304};
  const std::string data = Pattern(5000, 7);
  const std::string wire = ChunkMessage(h, data).SerializeAsString();
  const size_t prefix = wire.size() - data.size();
  std::vector<std::vector<size_t>> splits = {{}};
  // Every cut inside the header and just after it, alone and with a second
  // cut in the payload; and a message in many tiny pieces.
  for (size_t cut = 1; cut <= prefix + 1; ++cut) {
    splits.push_back({cut});
    splits.push_back({cut, prefix + 1000});
  }
  std::vector<size_t> tiny;
  for (size_t cut = 1; cut < wire.size(); cut += 3) tiny.push_back(cut);
  splits.push_back(tiny);

  for (const auto& cuts : splits) {
    SCOPED_TRACE(absl::StrCat("first cut ", cuts.empty() ? 0 : cuts[0], " of ",
                              cuts.size()));
    grpc::ByteBuffer bb = Pieces(wire, cuts);
    CopyCounter copies;
    absl::StatusOr<DecodedRequest> d = DecodeRequest(bb, &copies);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_TRUE(d->is_chunk());
    EXPECT_TRUE(d->zero_copy());
    EXPECT_EQ(d->header(), h);
    EXPECT_EQ(d->payload_size(), data.size());
    EXPECT_EQ(Joined(*d), data);
    EXPECT_EQ(copies.copies(), 0u);
    EXPECT_EQ(copies.bytes(), 0u);
    EXPECT_FALSE(d->message().has_chunk());
  }
}

TEST(ChunkCodec, DecodedPayloadViewsTheReceivedSlicesThemselves) {
  auto pool = BufferPool::Create(64 * 1024, 1);
  ASSERT_TRUE(pool.ok());
  auto buf = (*pool)->Acquire();
  ASSERT_TRUE(buf.ok());
  std::memset(buf->data(), 0x42, 65536);
  buf->set_size(65536);
  const uint8_t* mem = buf->data();
  CopyCounter copies;
  absl::StatusOr<DecodedRequest> d;
  {
    grpc::ByteBuffer bb =
        EncodeChunk(SealChunkHeader(0, 1, 0, buf->contents()), *std::move(buf));
    d = DecodeRequest(bb, &copies);
  }
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->payload().size(), 1u);
  EXPECT_EQ(d->payload()[0].iov_base, mem);
  EXPECT_EQ(d->payload()[0].iov_len, 65536u);
  EXPECT_EQ(copies.copies(), 0u);
  // The decoded request keeps the memory alive (and lent) after the
  // ByteBuffer is gone...
  EXPECT_EQ((*pool)->in_use(), 1u);
  EXPECT_EQ(d->PayloadCrc32c(), base::Crc32c(mem, 65536));
  // ...and a move keeps the views valid.
  DecodedRequest moved = *std::move(d);
  EXPECT_EQ(moved.payload()[0].iov_base, mem);
  moved = DecodedRequest();
  EXPECT_EQ((*pool)->in_use(), 0u);
}

TEST(ChunkCodec, SmallPayloadInInlinedSlicesSurvivesAMove) {
  const ChunkHeader h{1, 2, 3, 4};
  const std::string wire = ChunkMessage(h, "abc").SerializeAsString();
  grpc::ByteBuffer bb = Pieces(wire, {});
  absl::StatusOr<DecodedRequest> d = DecodeRequest(bb, nullptr);
  ASSERT_TRUE(d.ok());
  bb.Clear();
  DecodedRequest moved = *std::move(d);
  EXPECT_EQ(Joined(moved), "abc");
}

TEST(ChunkCodec, EmptyChunkDecodesWithNoPayload) {
  const ChunkHeader h{0, 4, 100, 0};
  grpc::ByteBuffer bb = EncodeChunk(h, grpc::Slice());
  EXPECT_EQ(Flatten(bb), ChunkMessage(h, "").SerializeAsString());
  CopyCounter copies;
  absl::StatusOr<DecodedRequest> d = DecodeRequest(bb, &copies);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->is_chunk());
  EXPECT_EQ(d->header(), h);
  EXPECT_EQ(d->payload_size(), 0u);
  EXPECT_TRUE(d->payload().empty());
}

TEST(ChunkCodec, HeaderAndMarkersAreParsedByProtobufWithoutCountedCopies) {
  v1::TransferRequest header;
  header.mutable_header()->set_job_id("job-1");
  header.mutable_header()->set_transfer_token("t");
  v1::TransferRequest marker;
  marker.mutable_marker()->set_kind(v1::PhaseMarker::DEVICE_END);
  marker.mutable_marker()->set_device(1);
  marker.mutable_marker()->set_total_bytes(1 << 30);
  marker.mutable_marker()->set_sequence(77);
  for (const v1::TransferRequest& m : {header, marker}) {
    CopyCounter copies;
    grpc::ByteBuffer bb = EncodeRequest(m, &copies);
    absl::StatusOr<DecodedRequest> d = DecodeRequest(bb, &copies);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_FALSE(d->is_chunk());
    EXPECT_EQ(d->message().SerializeAsString(), m.SerializeAsString());
    EXPECT_EQ(copies.copies(), 0u);
  }
}

TEST(ChunkCodec, ChunkOutOfCanonicalOrderIsParsedAndItsCopyCounted) {
  // data (field 15) first, then device and offset: valid protobuf, but the
  // payload is not at the end, so the decoder lets protobuf parse it.
  const std::string data = Pattern(1000);
  std::string inner;
  inner += '\x7a';
  inner += static_cast<char>(0xe8);  // varint 1000
  inner += '\x07';
  inner += data;
  inner += '\x08';
  inner += '\x02';  // device 2
  inner += '\x18';
  inner += '\x40';  // offset 64
  std::string wire = "\x12";
  wire += static_cast<char>(0x80 | (inner.size() & 0x7f));
  wire += static_cast<char>(inner.size() >> 7);
  wire += inner;

  CopyCounter copies;
  absl::StatusOr<DecodedRequest> d = DecodeRequest(Pieces(wire, {3}), &copies);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->is_chunk());
  EXPECT_FALSE(d->zero_copy());
  EXPECT_EQ(d->header().device, 2u);
  EXPECT_EQ(d->header().offset, 64u);
  EXPECT_EQ(Joined(*d), data);
  EXPECT_EQ(copies.copies(), 1u);
  EXPECT_EQ(copies.bytes(), 1000u);
}

TEST(ChunkCodec, ChunkWithAnUnknownFieldFallsBackToProtobuf) {
  const std::string data = Pattern(64);
  std::string wire =
      ChunkMessage(ChunkHeader{1, 1, 0, 9}, data).SerializeAsString();
  // Append unknown field 20 (varint) to the request after the chunk.
  wire += '\xa0';
  wire += '\x01';
  wire += '\x05';
  CopyCounter copies;
  absl::StatusOr<DecodedRequest> d = DecodeRequest(Pieces(wire, {}), &copies);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->is_chunk());
  EXPECT_FALSE(d->zero_copy());
  EXPECT_EQ(Joined(*d), data);
  EXPECT_EQ(copies.copies(), 1u);
}

TEST(ChunkCodec, GarbageIsInvalidArgument) {
  // A LEN field whose length runs past the end.
  std::string wire = "\x12\x7f\x08\x01";
  absl::StatusOr<DecodedRequest> d = DecodeRequest(Pieces(wire, {}), nullptr);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChunkCodec, EncodeRequestCountsTheCopyOfAChunkPayload) {
  CopyCounter copies;
  const std::string data = Pattern(4096);
  grpc::ByteBuffer bb =
      EncodeRequest(ChunkMessage(ChunkHeader{0, 1, 0, 0}, data), &copies);
  EXPECT_EQ(copies.copies(), 1u);
  EXPECT_EQ(copies.bytes(), 4096u);
  absl::StatusOr<DecodedRequest> d = DecodeRequest(bb, &copies);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->zero_copy());  // the bytes are canonical all the same
  EXPECT_EQ(copies.copies(), 1u);
}

TEST(ChunkCodec, CopyPayloadToCountsTheCopy) {
  const std::string data = Pattern(3000);
  grpc::ByteBuffer bb =
      Pieces(ChunkMessage(ChunkHeader{0, 1, 0, 0}, data).SerializeAsString(),
             {10, 1500});
  CopyCounter copies;
  absl::StatusOr<DecodedRequest> d = DecodeRequest(bb, &copies);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(copies.copies(), 0u);
  std::string out(data.size(), '\0');
  d->CopyPayloadTo(
      absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()),
      &copies);
  EXPECT_EQ(out, data);
  EXPECT_EQ(copies.copies(), 1u);
  EXPECT_EQ(copies.bytes(), 3000u);
}

TEST(ChunkCodec, SealChunkHeaderComputesTheCrc) {
  const std::string data = Pattern(777);
  const auto span = absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(data.data()), data.size());
  ChunkHeader h = SealChunkHeader(1, 2, 3, span);
  EXPECT_EQ(h.crc32c, base::Crc32c(data.data(), data.size()));
  EXPECT_EQ(h.device, 1u);
  EXPECT_EQ(h.sequence, 2u);
  EXPECT_EQ(h.offset, 3u);
}

}  // namespace
}  // namespace migd::transfer
