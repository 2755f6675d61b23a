// migd/transfer/stream_sender.h
//
// One data stream of a transfer session on the source: a data channel
// connection (data_connection.h) that carries chunks as frames
// (data_frame.h), then STREAM_END, and reads the destination's verdict.
//
// Two ways to run, set at construction:
//  - inline: Enqueue writes the chunk on the caller's thread. A job of one
//    stream runs this way: the job's thread reads the device, seals the chunk
//    and sends it, with no thread hand-off per chunk (a cross-core wake-up
//    each, which on a small machine costs more than it overlaps).
//  - threaded: a thread of its own takes queued chunks and writes them, so
//    that with several streams the writes go out on several connections at
//    once while the job's thread reads the devices. The queue needs no bound
//    of its own: every queued chunk holds a buffer of the job's pool, so the
//    pool's size bounds it, and a stalled stream stalls the reads.
// Either way a destination that reads slowly blocks the write (TCP's window),
// which holds the buffer, which stalls the device reads: memory stays
// bounded by the pool.

#ifndef MIGD_TRANSFER_STREAM_SENDER_H_
#define MIGD_TRANSFER_STREAM_SENDER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
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
      absl::Duration timeout, bool threaded);

  // `conn` has been accepted for the session (its header answered).
  StreamSender(std::unique_ptr<DataConnection> conn, bool threaded);

  // Shuts the connection down if it is still open and joins the thread.
  ~StreamSender();

  StreamSender(const StreamSender&) = delete;
  StreamSender& operator=(const StreamSender&) = delete;

  // Sends (inline) or queues (threaded) a chunk; the stream numbers it
  // (header.sequence). Returns the stream's error once it failed.
  absl::Status Enqueue(ChunkHeader header, PooledBuffer payload);

  // Sends what is queued and the stream's STREAM_END, then waits for the
  // destination's verdict on the stream: OK once every chunk passed its
  // checks there.
  absl::Status Close();

  // Aborts the stream from any thread.
  void Cancel();

  // After a failure elsewhere in the session: stops sending and returns why
  // this stream ended (the destination's own word when it said one), waiting
  // at most `timeout` for that. OK when the stream is still healthy. The
  // stream never gets its STREAM_END then, so the destination cannot take it
  // for complete.
  absl::Status Outcome(absl::Duration timeout);

  const DataConnection& connection() const { return *conn_; }

 private:
  void Loop();
  absl::Status Write(ChunkHeader header, PooledBuffer payload);
  // The destination's verdict message, waiting at most `timeout`.
  absl::Status ReadVerdict(absl::Duration timeout);

  const std::unique_ptr<DataConnection> conn_;
  const bool threaded_;
  absl::Mutex mu_;
  std::deque<std::pair<ChunkHeader, PooledBuffer>> queue_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  // Written by the one thread that sends (the sender thread, or inline the
  // caller's), then read by Close after it is done.
  uint64_t sequence_ = 0;
  uint64_t bytes_ = 0;
  std::thread thread_;
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_STREAM_SENDER_H_
