#include "migd/transfer/buffer_pool.h"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"

namespace migd::transfer {
namespace {

constexpr size_t kBufferBytes = 64 * 1024;

std::unique_ptr<BufferPool> NewPool(size_t max_buffers,
                                    size_t buffer_bytes = kBufferBytes) {
  auto pool = BufferPool::Create(buffer_bytes, max_buffers);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *std::move(pool);
}

TEST(BufferPool, RefusesZeroSizes) {
  EXPECT_EQ(BufferPool::Create(0, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BufferPool::Create(4096, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BufferPool, BuffersArePageAlignedAndWritableToCapacity) {
  auto pool = NewPool(2, 10000);  // not a page multiple: rounded up inside
  auto b = pool->Acquire();
  ASSERT_TRUE(b.ok()) << b.status();
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % page, 0u);
  EXPECT_EQ(b->capacity(), 10000u);
  EXPECT_EQ(b->size(), 0u);
  std::memset(b->writable().data(), 0xab, b->writable().size());
  b->set_size(300);
  EXPECT_EQ(b->contents().size(), 300u);
  EXPECT_EQ(b->contents()[299], 0xab);
}

TEST(BufferPool, CountsInUseAndPeakAndReturnsOnDestruction) {
  auto pool = NewPool(4);
  {
    auto a = pool->Acquire();
    auto b = pool->Acquire();
    auto c = pool->Acquire();
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_EQ(pool->in_use(), 3u);
    c->reset();
    EXPECT_EQ(pool->in_use(), 2u);
  }
  EXPECT_EQ(pool->in_use(), 0u);
  EXPECT_EQ(pool->peak_in_use(), 3u);
  EXPECT_EQ(pool->allocated(), 3u);
}

TEST(BufferPool, ReusesReturnedBuffersInsteadOfMappingMore) {
  auto pool = NewPool(1);
  uint8_t* first = nullptr;
  for (int i = 0; i < 10; ++i) {
    auto b = pool->Acquire();
    ASSERT_TRUE(b.ok()) << b.status();
    if (first == nullptr) first = b->data();
    EXPECT_EQ(b->data(), first);
  }
  EXPECT_EQ(pool->allocated(), 1u);
}

TEST(BufferPool, ReserveMapsBuffersUpFrontWithinTheCap) {
  auto pool = NewPool(4);
  EXPECT_EQ(pool->allocated(), 0u);
  EXPECT_EQ(pool->Reserve(3), 3u);
  EXPECT_EQ(pool->allocated(), 3u);
  EXPECT_EQ(pool->in_use(), 0u);  // mapped, but all free
  // The reserved buffers are what Acquire hands out: no new mapping.
  auto a = pool->Acquire();
  auto b = pool->Acquire();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(pool->allocated(), 3u);
  EXPECT_EQ(pool->Reserve(100), 4u);  // never past max_buffers
  EXPECT_EQ(pool->in_use(), 2u);
}

TEST(BufferPool, ReserveMapsNothingOnceCancelled) {
  auto pool = NewPool(4);
  pool->Cancel();
  EXPECT_EQ(pool->Reserve(2), 0u);
}

TEST(BufferPool, TryAcquireReturnsNothingWhenAllAreInUse) {
  auto pool = NewPool(1);
  std::optional<PooledBuffer> a = pool->TryAcquire();
  ASSERT_TRUE(a.has_value());
  EXPECT_FALSE(pool->TryAcquire().has_value());
  a->reset();
  EXPECT_TRUE(pool->TryAcquire().has_value());
}

TEST(BufferPool, AcquireFailsAtTheDeadlineWhenAllAreInUse) {
  auto pool = NewPool(1);
  auto held = pool->Acquire();
  ASSERT_TRUE(held.ok());
  absl::Time start = absl::Now();
  auto b = pool->Acquire(absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(b.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
  EXPECT_EQ(pool->in_use(), 1u);
  EXPECT_EQ(pool->waits(), 1u);
}

TEST(BufferPool, AcquireBlocksUntilABufferComesBack) {
  auto pool = NewPool(2);
  auto a = pool->Acquire();
  auto b = pool->Acquire();
  ASSERT_TRUE(a.ok() && b.ok());
  uint8_t* a_mem = a->data();

  absl::Notification got;
  uint8_t* got_mem = nullptr;
  std::thread waiter([&] {
    auto c = pool->Acquire(absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(c.ok()) << c.status();
    got_mem = c->data();
    got.Notify();
  });
  // The waiter cannot get a buffer while both are held.
  EXPECT_FALSE(got.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  a->reset();
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(absl::Seconds(30)));
  waiter.join();
  EXPECT_EQ(got_mem, a_mem);
  EXPECT_EQ(pool->peak_in_use(), 2u);
  EXPECT_EQ(pool->allocated(), 2u);
}

TEST(BufferPool, CancelWakesABlockedAcquireWithTheGivenStatus) {
  auto pool = NewPool(1);
  auto held = pool->Acquire();
  ASSERT_TRUE(held.ok());
  absl::Status result;
  std::thread waiter([&] {
    result = pool->Acquire(absl::Now() + absl::Seconds(30)).status();
  });
  // Cancel once the waiter is blocked (it counts its wait before sleeping).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (pool->waits() == 0 && absl::Now() < deadline)
    std::this_thread::yield();
  ASSERT_EQ(pool->waits(), 1u);
  pool->Cancel(absl::AbortedError("job cancelled"));
  waiter.join();
  EXPECT_EQ(result.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(pool->Acquire().status().code(), absl::StatusCode::kAborted);
  // Buffers still come back after a cancel.
  held->reset();
  EXPECT_EQ(pool->in_use(), 0u);
}

TEST(BufferPool, SliceWrapsTheBufferWithoutCopyingAndReturnsItWhenReleased) {
  auto pool = NewPool(1);
  auto b = pool->Acquire();
  ASSERT_TRUE(b.ok());
  std::memcpy(b->data(), "device state", 12);
  b->set_size(12);
  const uint8_t* mem = b->data();
  {
    grpc::Slice slice = std::move(*b).ToSlice();
    EXPECT_FALSE(b->valid());
    EXPECT_EQ(slice.begin(), mem);  // the pool's memory, not a copy
    EXPECT_EQ(slice.size(), 12u);
    EXPECT_EQ(pool->in_use(), 1u);
    grpc::Slice another_ref = slice;  // gRPC holds refs the same way
    { grpc::Slice gone = std::move(slice); }
    EXPECT_EQ(pool->in_use(), 1u);  // another_ref still holds it
    EXPECT_EQ(std::memcmp(another_ref.begin(), "device state", 12), 0);
  }
  EXPECT_EQ(pool->in_use(), 0u);
  EXPECT_TRUE(pool->TryAcquire().has_value());
}

TEST(BufferPool, ByteBufferHoldingTheSliceReturnsTheBufferWhenDestroyed) {
  auto pool = NewPool(1);
  auto b = pool->Acquire();
  ASSERT_TRUE(b.ok());
  b->set_size(100);
  {
    grpc::Slice slice = std::move(*b).ToSlice();
    grpc::ByteBuffer bb(&slice, 1);
    EXPECT_EQ(bb.Length(), 100u);
  }
  EXPECT_EQ(pool->in_use(), 0u);
}

TEST(BufferPool, SliceStaysValidAfterThePoolIsDestroyed) {
  auto pool = NewPool(1);
  auto b = pool->Acquire();
  ASSERT_TRUE(b.ok());
  std::memset(b->data(), 0x5a, 4096);
  b->set_size(4096);
  grpc::Slice slice = std::move(*b).ToSlice();
  pool.reset();  // gRPC may drop a slice after the job ended
  for (size_t i = 0; i < slice.size(); ++i) ASSERT_EQ(slice.begin()[i], 0x5a);
  // Releasing the slice now unmaps the memory; nothing to observe but no crash.
}

}  // namespace
}  // namespace migd::transfer
