#include "migd/transfer/data_receiver.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "migd/base/crc32c.h"
#include "migd/base/reason.h"
#include "migd/transfer/buffer_pool.h"
#include "migd/transfer/data_frame.h"
#include "migd/transfer/framing.h"

namespace migd::transfer {

absl::Status ReceiveDataStream(
    DataConnection& conn, const ReceiveOptions& options,
    const std::function<absl::Status(DecodedRequest)>& on_chunk) {
  absl::StatusOr<std::unique_ptr<BufferPool>> pool = BufferPool::Create(
      options.max_chunk_bytes, std::max<size_t>(2, options.max_buffers));
  if (!pool.ok()) return pool.status();
  // Mapped and faulted in now, while the devices may still run: a buffer
  // first touched by a stop-copy chunk costs its page faults in the
  // downtime. One stream uses two at a time; more are mapped when needed.
  (*pool)->Reserve(2);
  StreamChecker checker(options.num_devices);
  for (;;) {
    FrameBytes bytes;
    if (absl::Status s = conn.ReadFull(bytes.data(), bytes.size()); !s.ok()) {
      if (s.code() == absl::StatusCode::kCancelled) return s;
      // Closed cleanly or not (TCP's FIN, or a TLS connection cut without
      // its close_notify): only STREAM_END says the stream is whole.
      return base::Error(
          absl::StatusCode::kUnavailable, v1::ERROR_REASON_PEER_UNAVAILABLE,
          absl::StrCat("ended after ", checker.next_sequence(),
                       " chunks without its STREAM_END (dropped, or the "
                       "source gave up)",
                       s.code() == absl::StatusCode::kOutOfRange
                           ? ""
                           : absl::StrCat(": ", s.message())));
    }
    absl::StatusOr<Frame> frame = DecodeFrame(bytes);
    if (!frame.ok()) return frame.status();
    if (frame->kind == FrameKind::kStreamEnd) {
      v1::PhaseMarker end;
      end.set_kind(v1::PhaseMarker::STREAM_END);
      end.set_sequence(frame->chunk.sequence);
      end.set_total_bytes(frame->end_bytes);
      return checker.CheckStreamEnd(end);
    }
    if (frame->length == 0 || frame->length > options.max_chunk_bytes) {
      return base::Error(
          absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_PROTOCOL_ERROR,
          absl::StrCat("chunk ", frame->chunk.sequence, " of ", frame->length,
                       " bytes (1 to ", options.max_chunk_bytes,
                       ", the stream's max_chunk_bytes)"));
    }
    // Waits only while the handler keeps every buffer of the pool: a
    // DestinationJob writes each chunk before on_chunk returns, so the
    // buffer is back by now.
    absl::StatusOr<PooledBuffer> buffer = (*pool)->Acquire();
    if (!buffer.ok()) return buffer.status();
    if (absl::Status s = conn.ReadFull(buffer->data(), frame->length);
        !s.ok()) {
      if (s.code() == absl::StatusCode::kOutOfRange) {
        return base::Error(
            absl::StatusCode::kUnavailable, v1::ERROR_REASON_PEER_UNAVAILABLE,
            absl::StrCat("ended inside chunk ", frame->chunk.sequence));
      }
      return s;
    }
    buffer->set_size(frame->length);
    const uint32_t crc = base::Crc32c(buffer->data(), frame->length);
    if (absl::Status s = checker.CheckChunk(frame->chunk, frame->length, crc);
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            on_chunk(ReceivedChunk(frame->chunk, *std::move(buffer)));
        !s.ok()) {
      return s;
    }
  }
}

}  // namespace migd::transfer
