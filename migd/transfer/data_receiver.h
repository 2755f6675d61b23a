// migd/transfer/data_receiver.h
//
// The destination's receive path of one data stream, run to completion on
// the connection's own thread: read a frame header, read its payload into a
// pooled buffer (the one copy the kernel makes, or TLS decrypts into), check
// it (sequence, device, size, CRC32C), and hand it to the job, which writes
// it to the device on this thread once it is next in that device's order
// (waiting for the streams that carry the bytes before it). Nothing crosses
// to another thread on the way, and nothing is read ahead: a job that stops
// taking chunks stops this thread reading, and TCP's window then stops the
// source.

#ifndef MIGD_TRANSFER_DATA_RECEIVER_H_
#define MIGD_TRANSFER_DATA_RECEIVER_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/data_connection.h"

namespace migd::transfer {

struct ReceiveOptions {
  uint32_t num_devices = 1;
  // Largest payload a chunk may have (the stream's header says it).
  uint32_t max_chunk_bytes = 1 << 20;
  // Receive buffers this stream may hold at once: the one being read, and
  // any chunks `on_chunk` keeps after it returns (a job that writes each
  // chunk before it returns keeps none).
  size_t max_buffers = 4;
};

// Receives chunks until the stream's STREAM_END, passing each to `on_chunk`
// (a non-OK answer ends the stream with that error). OK once STREAM_END
// counted exactly the chunks and bytes received. Errors: kDataLoss
// (STREAM_CORRUPTED) for a CRC mismatch, a gap or repeat in the sequence, or
// a STREAM_END that does not match; kInvalidArgument (PROTOCOL_ERROR) for a
// malformed frame or an oversized chunk; kUnavailable (PEER_UNAVAILABLE)
// when the connection ends before STREAM_END (the source dropped it or gave
// up); the connection's own error.
absl::Status ReceiveDataStream(
    DataConnection& conn, const ReceiveOptions& options,
    const std::function<absl::Status(DecodedRequest)>& on_chunk);

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_DATA_RECEIVER_H_
