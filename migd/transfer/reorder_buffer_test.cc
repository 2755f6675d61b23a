#include "migd/transfer/reorder_buffer.h"

#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "migd/transfer/chunk_codec.h"

namespace migd::transfer {
namespace {

constexpr uint64_t kChunk = 1024;

// The byte at `pos` of device `device`'s stream.
char StreamByte(uint32_t device, uint64_t pos) {
  return static_cast<char>((pos * 131 + device * 7 + pos / 977) & 0xff);
}

DecodedRequest Chunk(uint32_t device, uint64_t offset,
                     uint64_t length = kChunk) {
  std::string data(length, '\0');
  for (uint64_t i = 0; i < length; ++i)
    data[i] = StreamByte(device, offset + i);
  const auto span = absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(data.data()), data.size());
  grpc::ByteBuffer bb = EncodeChunk(SealChunkHeader(device, 0, offset, span),
                                    grpc::Slice(data.data(), data.size()));
  absl::StatusOr<DecodedRequest> d = DecodeRequest(bb, nullptr);
  EXPECT_TRUE(d.ok()) << d.status();
  return *std::move(d);
}

// True when `chunk` carries exactly device's bytes at its offset.
bool Intact(const DecodedRequest& chunk) {
  uint64_t pos = chunk.header().offset;
  for (const iovec& v : chunk.payload()) {
    const char* p = static_cast<const char*>(v.iov_base);
    for (size_t i = 0; i < v.iov_len; ++i, ++pos) {
      if (p[i] != StreamByte(chunk.header().device, pos)) return false;
    }
  }
  return true;
}

std::unique_ptr<ReorderBuffer> NewBuffer(uint32_t devices, uint64_t cap,
                                         uint64_t max_chunk = kChunk) {
  ReorderBufferOptions o;
  o.num_devices = devices;
  o.cap_bytes = cap;
  o.max_chunk_bytes = max_chunk;
  auto rb = ReorderBuffer::Create(o);
  EXPECT_TRUE(rb.ok()) << rb.status();
  return *std::move(rb);
}

// Waits for `pred` with a deadline (never a bare sleep).
template <typename Pred>
bool WaitFor(Pred pred, absl::Duration limit = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + limit;
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

TEST(ReorderBuffer, CreateRefusesACapBelowTwoChunks) {
  ReorderBufferOptions o;
  o.num_devices = 1;
  o.max_chunk_bytes = 1000;
  o.cap_bytes = 1999;
  EXPECT_EQ(ReorderBuffer::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.num_devices = 0;
  o.cap_bytes = 4000;
  EXPECT_EQ(ReorderBuffer::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ReorderBuffer, OutOfOrderArrivalComesOutInOffsetOrderPerDevice) {
  auto rb = NewBuffer(2, 64 * kChunk);
  std::vector<std::pair<uint32_t, uint64_t>> arrivals;
  for (uint32_t dev = 0; dev < 2; ++dev) {
    for (uint64_t i = 0; i < 20; ++i) arrivals.push_back({dev, i * kChunk});
  }
  std::mt19937 rng(42);
  std::shuffle(arrivals.begin(), arrivals.end(), rng);
  for (auto [dev, off] : arrivals) {
    ASSERT_TRUE(rb->Insert(Chunk(dev, off)).ok());
  }
  ASSERT_TRUE(rb->EndDevice(0, 20 * kChunk).ok());
  ASSERT_TRUE(rb->EndDevice(1, 20 * kChunk).ok());
  for (uint32_t dev = 0; dev < 2; ++dev) {
    for (uint64_t i = 0; i < 20; ++i) {
      absl::StatusOr<DecodedRequest> c = rb->Pop(dev, absl::Now());
      ASSERT_TRUE(c.ok()) << c.status();
      EXPECT_EQ(c->header().device, dev);
      EXPECT_EQ(c->header().offset, i * kChunk);
      EXPECT_TRUE(Intact(*c));
    }
    EXPECT_EQ(rb->Pop(dev).status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_TRUE(rb->device_complete(dev));
  }
  EXPECT_EQ(rb->held_bytes(), 0u);
  EXPECT_EQ(rb->held_chunks(), 0u);
}

TEST(ReorderBuffer, PopWaitsForTheGapNotForLaterChunks) {
  auto rb = NewBuffer(1, 8 * kChunk);
  ASSERT_TRUE(rb->Insert(Chunk(0, kChunk)).ok());
  EXPECT_FALSE(rb->TryPop(0).has_value());
  EXPECT_EQ(rb->Pop(0, absl::Now() + absl::Milliseconds(10)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(rb->Insert(Chunk(0, 0)).ok());
  std::optional<DecodedRequest> first = rb->TryPop(0);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->header().offset, 0u);
  EXPECT_EQ(rb->delivered_offset(0), kChunk);
}

TEST(ReorderBuffer, ChunksOfDifferentSizesReassemble) {
  auto rb = NewBuffer(1, 16 * kChunk);
  // [0,100) [100,1124) [1124,1500) arriving backwards.
  ASSERT_TRUE(rb->Insert(Chunk(0, 1124, 376)).ok());
  ASSERT_TRUE(rb->Insert(Chunk(0, 100, 1024)).ok());
  ASSERT_TRUE(rb->Insert(Chunk(0, 0, 100)).ok());
  ASSERT_TRUE(rb->EndDevice(0, 1500).ok());
  uint64_t expect = 0;
  for (;;) {
    absl::StatusOr<DecodedRequest> c = rb->Pop(0, absl::Now());
    if (!c.ok()) {
      EXPECT_EQ(c.status().code(), absl::StatusCode::kOutOfRange);
      break;
    }
    EXPECT_EQ(c->header().offset, expect);
    EXPECT_TRUE(Intact(*c));
    expect += c->payload_size();
  }
  EXPECT_EQ(expect, 1500u);
}

TEST(ReorderBuffer, DuplicateOffsetIsDataLoss) {
  auto rb = NewBuffer(1, 8 * kChunk);
  ASSERT_TRUE(rb->Insert(Chunk(0, 2 * kChunk)).ok());
  absl::Status s = rb->Insert(Chunk(0, 2 * kChunk));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(base::ReasonOf(s), v1::ERROR_REASON_STREAM_CORRUPTED);
  EXPECT_EQ(rb->held_chunks(), 1u);
}

TEST(ReorderBuffer, OverlapWithAHeldChunkIsDataLossOnEitherSide) {
  auto rb = NewBuffer(1, 8 * kChunk);
  ASSERT_TRUE(rb->Insert(Chunk(0, 2 * kChunk)).ok());
  // Starts inside the held chunk.
  EXPECT_EQ(rb->Insert(Chunk(0, 2 * kChunk + 10)).code(),
            absl::StatusCode::kDataLoss);
  // Ends inside the held chunk.
  EXPECT_EQ(rb->Insert(Chunk(0, kChunk + 10)).code(),
            absl::StatusCode::kDataLoss);
  // Adjacent on both sides is fine.
  EXPECT_TRUE(rb->Insert(Chunk(0, kChunk)).ok());
  EXPECT_TRUE(rb->Insert(Chunk(0, 3 * kChunk)).ok());
}

TEST(ReorderBuffer, ResendOfDeliveredBytesIsDataLoss) {
  auto rb = NewBuffer(1, 8 * kChunk);
  ASSERT_TRUE(rb->Insert(Chunk(0, 0)).ok());
  ASSERT_TRUE(rb->TryPop(0).has_value());
  EXPECT_EQ(rb->Insert(Chunk(0, 0)).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(rb->Insert(Chunk(0, 512)).code(), absl::StatusCode::kDataLoss);
}

TEST(ReorderBuffer, ChunksPastTheDeviceEndAreDataLoss) {
  auto rb = NewBuffer(1, 8 * kChunk);
  ASSERT_TRUE(rb->Insert(Chunk(0, 3 * kChunk)).ok());
  // An end before a chunk already held.
  EXPECT_EQ(rb->EndDevice(0, 3 * kChunk + 1).code(),
            absl::StatusCode::kDataLoss);
  ASSERT_TRUE(rb->EndDevice(0, 4 * kChunk).ok());
  EXPECT_EQ(rb->EndDevice(0, 5 * kChunk).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(rb->Insert(Chunk(0, 4 * kChunk)).code(),
            absl::StatusCode::kDataLoss);
}

TEST(ReorderBuffer, UnknownDeviceAndEmptyOrOversizedChunksAreRefused) {
  auto rb = NewBuffer(1, 8 * kChunk);
  EXPECT_EQ(rb->Insert(Chunk(1, 0)).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(rb->Insert(Chunk(0, 0, kChunk + 1)).code(),
            absl::StatusCode::kInvalidArgument);
  grpc::ByteBuffer empty = EncodeChunk(ChunkHeader{0, 0, 0, 0}, grpc::Slice());
  absl::StatusOr<DecodedRequest> d = DecodeRequest(empty, nullptr);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(rb->Insert(*std::move(d)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rb->Pop(1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReorderBuffer, TryInsertReportsFullAndKeepsTheChunk) {
  // Cap 4 chunks: out-of-order chunks may use 3 (one is kept for the gap).
  auto rb = NewBuffer(1, 4 * kChunk);
  for (uint64_t i = 1; i <= 3; ++i) {
    DecodedRequest c = Chunk(0, i * kChunk);
    ASSERT_TRUE(rb->TryInsert(&c).ok());
  }
  DecodedRequest fourth = Chunk(0, 4 * kChunk);
  absl::Status s = rb->TryInsert(&fourth);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(fourth.is_chunk());  // still the caller's
  EXPECT_EQ(fourth.header().offset, 4 * kChunk);
  EXPECT_EQ(rb->stalls(), 1u);
  // The chunk that fills the gap always fits.
  DecodedRequest gap = Chunk(0, 0);
  ASSERT_TRUE(rb->TryInsert(&gap).ok());
  EXPECT_EQ(rb->held_bytes(), 4 * kChunk);
  // The writer drains; now the held one fits.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(rb->TryPop(0).has_value());
  EXPECT_TRUE(rb->TryInsert(&fourth).ok());
  EXPECT_LE(rb->peak_held_bytes(), 4 * kChunk);
}

TEST(ReorderBuffer, SlowStreamStallsTheFastOneAndTheCapHolds) {
  // Stream A carries chunk 0 and is slow; stream B carries chunks 1..N. B may
  // run ahead only until its chunks fill the cap's out-of-order share; then
  // it blocks until A delivers the gap and the writer drains.
  constexpr uint64_t kCap = 4 * kChunk;
  constexpr uint64_t kN = 40;
  auto rb = NewBuffer(1, kCap);
  std::atomic<uint64_t> b_inserted{0};
  std::thread fast([&] {
    for (uint64_t i = 1; i <= kN; ++i) {
      ASSERT_TRUE(
          rb->Insert(Chunk(0, i * kChunk), absl::Now() + absl::Seconds(30))
              .ok());
      b_inserted = i;
    }
  });
  // B blocks on its 4th chunk: 3 are held, which is all it may hold.
  ASSERT_TRUE(WaitFor([&] { return rb->stalls() == 1; }));
  EXPECT_EQ(b_inserted.load(), 3u);
  EXPECT_EQ(rb->held_bytes(), 3 * kChunk);
  EXPECT_FALSE(rb->TryPop(0).has_value());  // nothing deliverable: a gap

  // A finally delivers the gap; a writer drains in order.
  ASSERT_TRUE(rb->Insert(Chunk(0, 0)).ok());
  ASSERT_TRUE(rb->EndDevice(0, (kN + 1) * kChunk).ok());
  uint64_t expect = 0;
  for (;;) {
    absl::StatusOr<DecodedRequest> c =
        rb->Pop(0, absl::Now() + absl::Seconds(30));
    if (!c.ok()) {
      EXPECT_EQ(c.status().code(), absl::StatusCode::kOutOfRange);
      break;
    }
    EXPECT_EQ(c->header().offset, expect);
    EXPECT_LE(rb->held_bytes(), kCap);
    expect += kChunk;
  }
  fast.join();
  EXPECT_EQ(b_inserted.load(), kN);
  EXPECT_EQ(expect, (kN + 1) * kChunk);
  EXPECT_LE(rb->peak_held_bytes(), kCap);
}

TEST(ReorderBuffer, ManyStreamsOutOfOrderKeepOrderUnderTheCap) {
  // 4 streams carry the chunks of 2 devices, each chunk on a random stream;
  // the streams run at different speeds. One writer per device.
  constexpr int kStreams = 4;
  constexpr uint32_t kDevices = 2;
  constexpr uint64_t kChunksPerDevice = 300;
  constexpr uint64_t kCap = 8 * kChunk;
  auto rb = NewBuffer(kDevices, kCap);
  std::vector<std::vector<std::pair<uint32_t, uint64_t>>> streams(kStreams);
  std::mt19937 rng(7);
  for (uint64_t i = 0; i < kChunksPerDevice; ++i) {
    for (uint32_t dev = 0; dev < kDevices; ++dev) {
      streams[rng() % kStreams].push_back({dev, i * kChunk});
    }
  }
  std::vector<std::thread> senders;
  for (int s = 0; s < kStreams; ++s) {
    senders.emplace_back([&, s] {
      for (auto [dev, off] : streams[s]) {
        ASSERT_TRUE(
            rb->Insert(Chunk(dev, off), absl::Now() + absl::Seconds(60)).ok());
        if (s == 0) std::this_thread::yield();  // the slow one
      }
    });
  }
  std::vector<std::thread> writers;
  std::vector<uint64_t> written(kDevices);
  std::atomic<bool> order_ok{true};
  for (uint32_t dev = 0; dev < kDevices; ++dev) {
    writers.emplace_back([&, dev] {
      for (;;) {
        absl::StatusOr<DecodedRequest> c =
            rb->Pop(dev, absl::Now() + absl::Seconds(60));
        if (!c.ok()) {
          EXPECT_EQ(c.status().code(), absl::StatusCode::kOutOfRange);
          return;
        }
        if (c->header().offset != written[dev] || !Intact(*c)) {
          order_ok = false;
        }
        written[dev] += c->payload_size();
      }
    });
  }
  for (auto& t : senders) t.join();
  for (uint32_t dev = 0; dev < kDevices; ++dev) {
    ASSERT_TRUE(rb->EndDevice(dev, kChunksPerDevice * kChunk).ok());
  }
  for (auto& t : writers) t.join();
  EXPECT_TRUE(order_ok);
  for (uint32_t dev = 0; dev < kDevices; ++dev) {
    EXPECT_EQ(written[dev], kChunksPerDevice * kChunk);
  }
  EXPECT_LE(rb->peak_held_bytes(), kCap);
  EXPECT_EQ(rb->held_bytes(), 0u);
}

TEST(ReorderBuffer, CancelWakesBlockedInsertAndPop) {
  auto rb = NewBuffer(2, 2 * kChunk);
  ASSERT_TRUE(
      rb->Insert(Chunk(0, kChunk)).ok());  // fills the out-of-order share
  absl::Status insert_status, pop_status;
  std::thread inserter(
      [&] { insert_status = rb->Insert(Chunk(0, 2 * kChunk)); });
  std::thread popper([&] { pop_status = rb->Pop(1).status(); });
  ASSERT_TRUE(WaitFor([&] { return rb->stalls() == 1; }));
  rb->Cancel(absl::AbortedError("session ended"));
  inserter.join();
  popper.join();
  EXPECT_EQ(insert_status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(pop_status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(rb->Insert(Chunk(1, 0)).code(), absl::StatusCode::kAborted);
}

}  // namespace
}  // namespace migd::transfer
