// migd/transfer/framing.h
//
// The integrity rules of a transfer session, shared by sender and receiver:
// every chunk and marker carries the next sequence number of the session (no
// gaps, no repeats), a chunk's offset continues its device's stream exactly,
// a chunk's CRC32C matches its payload, and a device's DEVICE_END states how
// many bytes were sent. Loss, reordering, duplication and corruption are all
// detected here, before a byte reaches a device.

#ifndef MIGD_TRANSFER_FRAMING_H_
#define MIGD_TRANSFER_FRAMING_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "migd/transfer/chunk_codec.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::transfer {

// Sets device, sequence, offset and crc32c of `chunk` (whose data is already
// filled in).
void SealChunk(uint32_t device, uint64_t sequence, uint64_t offset,
               v1::DataChunk* chunk);

// Receiver-side checker for one session. Not thread-safe.
class StreamChecker {
 public:
  explicit StreamChecker(uint32_t num_devices);

  // OK when `chunk` is the next message of the session: expected sequence,
  // a known device that has not ended, offset == bytes received so far for
  // that device, CRC32C of data equal to crc32c. kDataLoss otherwise, naming
  // what did not match. On OK the chunk is accounted.
  absl::Status CheckChunk(const v1::DataChunk& chunk);

  // The same for a chunk received without copying: its header fields, its
  // payload size and the CRC32C computed over the payload as received.
  absl::Status CheckChunk(const ChunkHeader& header, uint64_t size,
                          uint32_t payload_crc32c);

  // OK when `marker` is the next message: expected sequence; DEVICE_END for a
  // known, not yet ended device whose total_bytes equals what arrived; COMMIT
  // only after every device ended; STOP_COPY at most once; INITIAL_DATA_END
  // at most once per device, before STOP_COPY, with total_bytes equal to
  // what arrived.
  absl::Status CheckMarker(const v1::PhaseMarker& marker);

  uint64_t device_bytes(uint32_t device) const { return bytes_[device]; }
  bool device_ended(uint32_t device) const { return ended_[device]; }
  bool all_ended() const;
  uint64_t next_sequence() const { return next_sequence_; }

 private:
  absl::Status CheckSequence(uint64_t sequence, const char* what);
  absl::Status CheckDevice(uint32_t device, const char* what) const;

  uint64_t next_sequence_ = 0;
  bool stop_copy_seen_ = false;
  std::vector<bool> initial_ended_;
  std::vector<uint64_t> bytes_;
  std::vector<bool> ended_;
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_FRAMING_H_
