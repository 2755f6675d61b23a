// migd/transfer/buffer_pool.h
//
// A bounded pool of page-aligned buffers for the transfer data path. The
// source reads a device's data stream into a pooled buffer and hands the
// buffer to gRPC as a slice; the slice's destroy callback returns the buffer
// to the pool once gRPC has written it out. The pool holds at most
// `max_buffers` buffers of `buffer_bytes` each, so the memory a transfer uses
// is bounded whatever the state size: when every buffer is in use, Acquire
// blocks until gRPC gives one back. That wait is the sender's backpressure.
//
// Buffers are mapped lazily (mmap, so they are page-aligned and never touch
// the malloc heap) and kept for reuse until the pool and every buffer it lent
// are gone. A buffer may outlive the BufferPool object that lent it (gRPC may
// drop a slice after the job ended): the memory stays valid until the last
// buffer comes back.
//
// Thread-safe. Buffers may be returned from any thread (gRPC's included).

#ifndef MIGD_TRANSFER_BUFFER_POOL_H_
#define MIGD_TRANSFER_BUFFER_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grpcpp/support/slice.h"

namespace migd::transfer {

namespace internal {
class PoolCore;
struct PoolSlot;
}  // namespace internal

// One buffer lent by a BufferPool. Move-only; goes back to the pool when
// destroyed, reset, or when the slice made by ToSlice() is released.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(PooledBuffer&& other) noexcept;
  PooledBuffer& operator=(PooledBuffer&& other) noexcept;
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  ~PooledBuffer();

  // False for a default-constructed or moved-from handle.
  bool valid() const { return slot_ != nullptr; }
  explicit operator bool() const { return valid(); }

  // Start of the buffer (page-aligned) and its usable size (the pool's
  // buffer_bytes).
  uint8_t* data() const;
  size_t capacity() const;
  // The whole buffer, to read into.
  absl::Span<uint8_t> writable() const;

  // Bytes of the buffer that hold data: what ToSlice() hands over. Starts at
  // 0; set it after filling the buffer. Must be <= capacity().
  size_t size() const { return size_; }
  void set_size(size_t n);
  absl::Span<const uint8_t> contents() const;

  // Hands the buffer to gRPC: a slice of [data(), data() + size()) that does
  // not copy it. The buffer returns to the pool when the last reference to
  // the slice is dropped. The handle is empty afterwards.
  grpc::Slice ToSlice() &&;

  // Returns the buffer to the pool now.
  void reset();

 private:
  friend class internal::PoolCore;
  PooledBuffer(std::shared_ptr<internal::PoolCore> core,
               internal::PoolSlot* slot)
      : core_(std::move(core)), slot_(slot) {}

  std::shared_ptr<internal::PoolCore> core_;
  internal::PoolSlot* slot_ = nullptr;
  size_t size_ = 0;
};

class BufferPool {
 public:
  // A pool of at most `max_buffers` buffers of `buffer_bytes` each (so the
  // memory cap is max_buffers * buffer_bytes, each buffer rounded up to whole
  // pages). kInvalidArgument when either is 0 or the cap overflows.
  static absl::StatusOr<std::unique_ptr<BufferPool>> Create(size_t buffer_bytes,
                                                            size_t max_buffers);

  // Lent buffers stay valid until they come back; the memory is unmapped
  // with the last one. No call may be blocked in Acquire when the pool is
  // destroyed: Cancel() first and join the waiters.
  ~BufferPool();

  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A free buffer, mapping a new one while fewer than max_buffers exist.
  // When all are in use, blocks until one comes back. kDeadlineExceeded when
  // `deadline` passes first; the Cancel() status once the pool is cancelled;
  // kResourceExhausted when the kernel refuses to map a new buffer.
  absl::StatusOr<PooledBuffer> Acquire(
      absl::Time deadline = absl::InfiniteFuture());

  // A free buffer if one is available without waiting, else nullopt (also
  // when cancelled or when mapping fails).
  std::optional<PooledBuffer> TryAcquire();

  // Maps buffers now, until `n` (at most max_buffers) exist, so that the
  // first reads of a stop-copy phase do not wait for mmap and page faults:
  // that time is VM downtime. Best effort; returns how many buffers exist.
  size_t Reserve(size_t n);

  // Wakes every blocked Acquire, which returns `why` (must not be OK), as do
  // later ones. Returning buffers still works. Idempotent: the first status
  // sticks.
  void Cancel(absl::Status why = absl::CancelledError("buffer pool cancelled"));

  size_t buffer_bytes() const;
  size_t max_buffers() const;
  // Buffers lent out now (handles, plus slices gRPC still holds).
  size_t in_use() const;
  // Most buffers lent out at once since Create.
  size_t peak_in_use() const;
  // Buffers mapped so far (<= max_buffers).
  size_t allocated() const;
  // Acquire calls that had to wait for a buffer to come back.
  uint64_t waits() const;

 private:
  explicit BufferPool(std::shared_ptr<internal::PoolCore> core)
      : core_(std::move(core)) {}

  std::shared_ptr<internal::PoolCore> core_;
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_BUFFER_POOL_H_
