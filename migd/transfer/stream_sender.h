// migd/transfer/stream_sender.h
//
// One data stream of a transfer session on the source, with a thread of its
// own: the job thread reads device state into pooled buffers and queues them
// here, and this thread hands them to gRPC. Device reads and socket writes
// overlap, and with several streams the writes go out on several connections
// at once. The queue needs no bound of its own: every queued chunk holds a
// buffer of the job's pool, so the pool's size bounds it, and a stalled
// stream stalls the reads.

#ifndef MIGD_TRANSFER_STREAM_SENDER_H_
#define MIGD_TRANSFER_STREAM_SENDER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "migd/transfer/buffer_pool.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/transfer_client.h"

namespace migd::transfer {

class StreamSender {
 public:
  explicit StreamSender(std::unique_ptr<TransferClient> client);

  // Cancels the stream if it is still open and joins the thread.
  ~StreamSender();

  StreamSender(const StreamSender&) = delete;
  StreamSender& operator=(const StreamSender&) = delete;

  // Queues a chunk; the stream numbers it (header.sequence) as it sends.
  // Returns the stream's error once it failed.
  absl::Status Enqueue(ChunkHeader header, PooledBuffer payload);

  // Sends what is queued and the stream's STREAM_END marker, closes the
  // stream and returns its final status.
  absl::Status Close();

  // Aborts the stream from any thread.
  void Cancel();

  // After a failure elsewhere in the session: stops sending and returns why
  // this stream ended (the destination's own status when it ended it),
  // waiting at most `timeout` for that. OK when the stream is still healthy.
  // The stream closes without its STREAM_END, so the destination cannot
  // take it for complete.
  absl::Status Outcome(absl::Duration timeout);

  const TransferClient& client() const { return *client_; }

 private:
  void Loop();

  std::unique_ptr<TransferClient> client_;
  absl::Mutex mu_;
  std::deque<std::pair<ChunkHeader, PooledBuffer>> queue_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  uint64_t sequence_ = 0;  // sender thread only, then Close
  uint64_t bytes_ = 0;     // payload bytes sent; the same
  std::thread thread_;
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_STREAM_SENDER_H_
