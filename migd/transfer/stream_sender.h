// migd/transfer/stream_sender.h
//
// One data stream of a transfer session on the source: a data channel
// connection (data_connection.h) that carries chunks as frames
// (data_frame.h), then STREAM_END, and reads the destination's verdict.
//
// It has no thread of its own: Send writes the chunk on the caller's thread
// and returns once the kernel (or TLS) has its bytes. The thread that sends
// a stream's chunks reads each from the device and seals it itself (the
// job's thread with one stream, a thread per stream with several), so a
// chunk crosses no thread on the source: a thread that only sent, fed by
// another that read, would cost a cross-core wake-up per chunk and a wait
// for a CPU, which on a small machine cost more than it overlapped
// (e2e/bench/README.md).
//
// A destination that reads slowly blocks the write (TCP's window), which
// holds the sending thread and its buffer, which stalls the device reads:
// memory stays bounded by the job's pool. A destination that stops answering
// fails the write (the connection's TCP_USER_TIMEOUT) rather than block it
// for good.
//
// Thread-compatible: Send, Close and Outcome come from one thread at a time
// (the stream's, then the job's); Cancel may come from any thread.

#ifndef MIGD_TRANSFER_STREAM_SENDER_H_
#define MIGD_TRANSFER_STREAM_SENDER_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migd/transfer/buffer_pool.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/data_connection.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::transfer {

class StreamSender {
 public:
  // Presents `header` (a data stream's: stream_index >= 1) on `conn` and
  // waits up to `timeout` for the destination to accept it. Fails with the
  // destination's reason when it refuses (BAD_TOKEN, NOT_PREPARED, ...),
  // kDeadlineExceeded (TIMEOUT) when it does not answer.
  static absl::StatusOr<std::unique_ptr<StreamSender>> Open(
      std::unique_ptr<DataConnection> conn, const v1::SessionHeader& header,
      absl::Duration timeout);

  // `conn` has been accepted for the session (its header answered).
  explicit StreamSender(std::unique_ptr<DataConnection> conn);

  // Shuts the connection down.
  ~StreamSender();

  StreamSender(const StreamSender&) = delete;
  StreamSender& operator=(const StreamSender&) = delete;

  // Writes a chunk, blocking while the destination's window is full; the
  // stream numbers it (header.sequence). `payload` goes back to its pool
  // before this returns. Returns the stream's error once it failed
  // (kCancelled after Cancel), kFailedPrecondition after Close or Outcome.
  absl::Status Send(ChunkHeader header, PooledBuffer payload);

  // Sends the stream's STREAM_END, then waits for the destination's verdict
  // on the stream: OK once every chunk passed its checks there. The job's
  // watchdog bounds the wait (it cancels a stream that goes silent).
  absl::Status Close();

  // Aborts the stream from any thread: a blocked Send or Close returns.
  void Cancel();

  // After a failure elsewhere in the session: stops sending and returns why
  // this stream ended (the destination's own word when it said one), waiting
  // at most `timeout` for that. OK when the stream is still healthy. The
  // stream never gets its STREAM_END then, so the destination cannot take it
  // for complete.
  absl::Status Outcome(absl::Duration timeout);

  const DataConnection& connection() const { return *conn_; }

 private:
  // The destination's verdict message, waiting at most `timeout`.
  absl::Status ReadVerdict(absl::Duration timeout);

  const std::unique_ptr<DataConnection> conn_;
  // The first failure of a write: every later call returns it.
  absl::Status error_;
  // Close or Outcome came: nothing more may be sent.
  bool finished_ = false;
  // Chunks and payload bytes written: STREAM_END's counts.
  uint64_t sequence_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_STREAM_SENDER_H_
