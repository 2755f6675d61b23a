// migd/transfer/framing.h
//
// The integrity rules of one transfer stream, shared by sender and receiver:
// every message carries the next sequence number of its stream (no gaps, no
// repeats), a chunk names a device of the session and its CRC32C matches its
// payload, and the control stream's markers come in a sensible order. Loss,
// duplication and corruption within a stream are detected here, before a
// byte reaches a device. Offsets across streams (a device's chunks may travel
// on several) are the destination job's business (DestinationJob::OnChunk).

#ifndef MIGD_TRANSFER_FRAMING_H_
#define MIGD_TRANSFER_FRAMING_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "migd/transfer/chunk_codec.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::transfer {

// Session limits both ends hold to.
inline constexpr uint32_t kMaxStreams = 16;
inline constexpr uint32_t kMinChunkBytes = 4 << 10;
inline constexpr uint32_t kMaxChunkBytes = 8 << 20;

// Receiver-side checker for one stream. Not thread-safe.
class StreamChecker {
 public:
  explicit StreamChecker(uint32_t num_devices);

  // OK when `chunk` is the stream's next message (expected sequence), names a
  // device of the session, and `payload_crc32c` (computed over the payload as
  // received) equals its crc32c. kDataLoss (STREAM_CORRUPTED) or
  // kInvalidArgument (PROTOCOL_ERROR) naming what did not match otherwise.
  absl::Status CheckChunk(const ChunkHeader& chunk, uint64_t size,
                          uint32_t payload_crc32c);

  // OK when `marker` is the stream's next message and fits the order of a
  // session: STOP_COPY at most once; INITIAL_DATA_END at most once per
  // device, before STOP_COPY; DEVICE_END once per device; COMMIT only after
  // every device ended; ABORT at any point. The byte totals markers carry are
  // checked by the receiver against what it delivered.
  absl::Status CheckMarker(const v1::PhaseMarker& marker);

  // Data streams: OK when `marker` is a STREAM_END that counts exactly the
  // chunks and payload bytes this checker accepted (kDataLoss,
  // STREAM_CORRUPTED, when chunks went missing).
  absl::Status CheckStreamEnd(const v1::PhaseMarker& marker) const;

  bool device_ended(uint32_t device) const { return ended_[device]; }
  uint64_t next_sequence() const { return next_sequence_; }

 private:
  absl::Status CheckSequence(uint64_t sequence, const char* what);
  absl::Status CheckDevice(uint32_t device, const char* what) const;

  uint64_t next_sequence_ = 0;
  uint64_t chunk_bytes_ = 0;
  bool stop_copy_seen_ = false;
  std::vector<bool> ended_;
  std::vector<bool> initial_ended_;
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_FRAMING_H_
