// migd/transfer/reorder_buffer.h
//
// Puts chunks back in stream order on the destination when a job uses several
// transfer streams. Chunks of one device may travel on different streams and
// arrive out of order; a device's data fd must see its stream in offset order.
// Receivers Insert each chunk as it arrives, keyed by (device, offset); a
// writer per device Pops the next in-order chunk and writes it.
//
// The buffer is bounded: it holds at most `cap_bytes` of payload. An insert
// that would exceed the cap waits (or, with TryInsert, reports "full", so the
// receiver stops reading that stream): a stream that runs ahead of a slow one
// stalls its sender through gRPC flow control instead of growing memory.
// To keep that from deadlocking, a chunk that is not next in its device's
// order may only use cap_bytes - max_chunk_bytes: room for the chunk that
// fills the gap is always kept, and once it is in, the writer drains.
//
// Errors are kDataLoss (reason STREAM_CORRUPTED): a chunk overlapping one
// already held or delivered (duplicates included), or running past a device's
// end. The cap counts payload bytes; the memory pinned can be somewhat more
// (a payload views gRPC's read buffers, which other messages share).
//
// Thread-safe. Someone must Pop while others Insert: a thread blocked in
// Insert does not drain the buffer.

#ifndef MIGD_TRANSFER_REORDER_BUFFER_H_
#define MIGD_TRANSFER_REORDER_BUFFER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/transfer/chunk_codec.h"

namespace migd::transfer {

struct ReorderBufferOptions {
  // Devices of the session: chunk.header().device < num_devices.
  uint32_t num_devices = 1;
  // Payload bytes held at most (the memory cap).
  uint64_t cap_bytes = uint64_t{64} << 20;
  // Largest chunk payload accepted; cap_bytes must be >= 2 * max_chunk_bytes.
  uint64_t max_chunk_bytes = uint64_t{8} << 20;
};

class ReorderBuffer {
 public:
  // kInvalidArgument for 0 devices, a 0 max_chunk_bytes, or a cap below
  // 2 * max_chunk_bytes.
  static absl::StatusOr<std::unique_ptr<ReorderBuffer>> Create(
      const ReorderBufferOptions& options);

  // Takes `chunk` (a decoded DataChunk with a non-empty payload of at most
  // max_chunk_bytes: kInvalidArgument otherwise), waiting while it does not
  // fit under the cap. kDataLoss when it overlaps a chunk held or already
  // delivered, or runs past the device's end (EndDevice); kDeadlineExceeded
  // when `deadline` passes first; the Cancel() status once cancelled. The
  // chunk is dropped on any error.
  absl::Status Insert(DecodedRequest chunk,
                      absl::Time deadline = absl::InfiniteFuture());

  // Insert without waiting: kResourceExhausted when the chunk does not fit
  // now, leaving `*chunk` untouched so the caller can hold it, stop reading
  // its stream, and retry. On OK `*chunk` has been moved from. Other errors as
  // Insert (the chunk is left untouched then too).
  absl::Status TryInsert(DecodedRequest* chunk);

  // The device's next chunk in stream order (offset == delivered_offset),
  // waiting until it arrives. kOutOfRange once the device ended (EndDevice)
  // and every byte was delivered; kDeadlineExceeded; the Cancel() status.
  absl::StatusOr<DecodedRequest> Pop(
      uint32_t device, absl::Time deadline = absl::InfiniteFuture());

  // The device's next chunk if it is here; nullopt otherwise (also after the
  // end, or for an unknown device).
  std::optional<DecodedRequest> TryPop(uint32_t device);

  // The device's stream is `total_bytes` long (its DEVICE_END marker, which
  // may overtake chunks on other streams). kDataLoss when more was already
  // delivered or a held chunk runs past it, or when a different end was
  // given before; kInvalidArgument for an unknown device.
  absl::Status EndDevice(uint32_t device, uint64_t total_bytes);

  // True once the device ended and all its bytes were delivered.
  bool device_complete(uint32_t device) const;

  // Wakes every waiter, which returns `why` (made CANCELLED if OK), as do
  // later Insert and Pop calls. The first status sticks.
  void Cancel(absl::Status why);

  // Offset of the device's next chunk to Pop (bytes delivered so far).
  uint64_t delivered_offset(uint32_t device) const;
  // Payload bytes and chunks held now; the most bytes ever held.
  uint64_t held_bytes() const;
  size_t held_chunks() const;
  uint64_t peak_held_bytes() const;
  // Insert calls that had to wait for room (TryInsert "full" answers too).
  uint64_t stalls() const;

 private:
  struct Held {
    uint64_t length = 0;
    DecodedRequest chunk;
  };
  struct DeviceQueue {
    uint64_t delivered = 0;            // next offset to pop
    std::optional<uint64_t> end;       // EndDevice total
    std::map<uint64_t, Held> pending;  // by offset
  };

  explicit ReorderBuffer(const ReorderBufferOptions& options);

  // OK when `chunk` may ever be inserted (shape, overlaps, end).
  absl::Status CheckLocked(const DecodedRequest& chunk) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True when `chunk` fits under the cap now.
  bool FitsLocked(const DecodedRequest& chunk) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddLocked(DecodedRequest chunk) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ReadyLocked(uint32_t device) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool DoneLocked(uint32_t device) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  DecodedRequest TakeLocked(uint32_t device) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ReorderBufferOptions options_;

  mutable absl::Mutex mu_;
  std::vector<DeviceQueue> devices_ ABSL_GUARDED_BY(mu_);
  uint64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t held_chunks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t peak_held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t stalls_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status cancelled_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_REORDER_BUFFER_H_
