#include "migd/transfer/stream_sender.h"

#include "absl/strings/str_cat.h"
#include "migd/base/reason.h"
#include "migd/base/thread_name.h"
#include "migd/base/watchdog.h"
#include "migd/transfer/data_frame.h"

namespace migd::transfer {

absl::StatusOr<std::unique_ptr<StreamSender>> StreamSender::Open(
    std::unique_ptr<DataConnection> conn, const v1::SessionHeader& header,
    absl::Duration timeout, bool threaded) {
  bool expired = false;
  absl::Status s;
  v1::TransferResponse answer;
  {
    DataConnection* raw = conn.get();
    base::Watchdog watch(timeout, [&expired, raw] {
      expired = true;
      raw->Shutdown();
    });
    s = WriteMessage(*conn, header);
    if (s.ok()) s = ReadMessage(*conn, &answer);
  }
  if (expired) {
    return base::Error(absl::StatusCode::kDeadlineExceeded,
                       v1::ERROR_REASON_TIMEOUT,
                       absl::StrCat("data channel ", conn->peer(),
                                    ": the destination did not accept the "
                                    "stream within ",
                                    absl::FormatDuration(timeout)));
  }
  if (!s.ok()) {
    if (s.code() == absl::StatusCode::kOutOfRange) {
      return base::Error(absl::StatusCode::kUnavailable,
                         v1::ERROR_REASON_PEER_UNAVAILABLE,
                         absl::StrCat("data channel ", conn->peer(),
                                      ": closed before it answered"));
    }
    return s;
  }
  if (answer.has_aborted()) {
    absl::Status refused = StatusFromMessage(answer.aborted());
    if (refused.ok()) refused = absl::UnknownError("refused without a cause");
    return base::Annotate(refused, "the destination refused the stream");
  }
  if (!answer.has_accepted()) {
    return base::Error(absl::StatusCode::kInternal,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       "the destination answered a data stream's header with "
                       "something other than SessionAccepted");
  }
  return std::make_unique<StreamSender>(std::move(conn), threaded);
}

StreamSender::StreamSender(std::unique_ptr<DataConnection> conn, bool threaded)
    : conn_(std::move(conn)), threaded_(threaded) {
  if (!threaded_) return;  // Enqueue sends on the caller's thread
  thread_ = std::thread([this] {
    base::NameThisThread("src-send");
    Loop();
  });
}

StreamSender::~StreamSender() {
  {
    absl::MutexLock lock(&mu_);
    if (!done_) {
      closing_ = true;
      queue_.clear();
    }
  }
  conn_->Shutdown();
  if (thread_.joinable()) thread_.join();
}

absl::Status StreamSender::Write(ChunkHeader header, PooledBuffer payload) {
  header.sequence = sequence_++;
  bytes_ += payload.size();
  const FrameBytes frame =
      EncodeChunkFrame(header, static_cast<uint32_t>(payload.size()));
  const iovec parts[2] = {
      {const_cast<uint8_t*>(frame.data()), frame.size()},
      {payload.data(), payload.size()},
  };
  return conn_->WriteAll(parts);
  // `payload` goes back to its pool here: the kernel (or TLS) has its bytes.
}

absl::Status StreamSender::Enqueue(ChunkHeader header, PooledBuffer payload) {
  absl::MutexLock lock(&mu_);
  if (!error_.ok()) return error_;
  if (closing_) return absl::FailedPreconditionError("stream is closing");
  if (!threaded_) {
    // The caller's thread sends; the lock only orders it with Outcome and
    // Close, which come from the same thread or after a Cancel.
    absl::Status s = Write(header, std::move(payload));
    if (!s.ok()) error_ = s;
    return s;
  }
  queue_.emplace_back(header, std::move(payload));
  return absl::OkStatus();
}

void StreamSender::Loop() {
  for (;;) {
    std::pair<ChunkHeader, PooledBuffer> next;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || closing_;
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) break;  // closing, and everything was sent
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    absl::Status s = Write(next.first, std::move(next.second));
    if (!s.ok()) {
      absl::MutexLock lock(&mu_);
      error_ = s;
      queue_.clear();  // their buffers go back to the pool
      break;
    }
  }
  absl::MutexLock lock(&mu_);
  done_ = true;
}

absl::Status StreamSender::Close() {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    if (threaded_) {
      auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; };
      mu_.Await(absl::Condition(&done));
    }
    done_ = true;
    if (!error_.ok()) return error_;
  }
  // Every chunk is written: the counts are final. Without this frame the
  // destination takes the stream's end for a drop.
  const FrameBytes end = EncodeStreamEndFrame(sequence_, bytes_);
  const iovec part = {const_cast<uint8_t*>(end.data()), end.size()};
  if (absl::Status s = conn_->WriteAll(absl::MakeConstSpan(&part, 1));
      !s.ok()) {
    return s;
  }
  // No bound here: the job's watchdog shuts a silent stream down.
  return ReadVerdict(absl::InfiniteDuration());
}

void StreamSender::Cancel() { conn_->Shutdown(); }

absl::Status StreamSender::ReadVerdict(absl::Duration timeout) {
  std::unique_ptr<base::Watchdog> watch;
  bool expired = false;
  if (timeout != absl::InfiniteDuration()) {
    watch = std::make_unique<base::Watchdog>(timeout, [&] {
      expired = true;
      conn_->Shutdown();
    });
  }
  v1::SessionAborted verdict;
  absl::Status s = ReadMessage(*conn_, &verdict);
  watch.reset();
  if (expired) return absl::OkStatus();  // no word: nothing of its own
  if (!s.ok()) {
    if (s.code() == absl::StatusCode::kOutOfRange) {
      return base::Error(absl::StatusCode::kUnavailable,
                         v1::ERROR_REASON_PEER_UNAVAILABLE,
                         absl::StrCat("data channel ", conn_->peer(),
                                      ": closed without a verdict"));
    }
    return s;
  }
  return StatusFromMessage(verdict);
}

absl::Status StreamSender::Outcome(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    queue_.clear();
    if (threaded_) {
      auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; };
      if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
        return absl::OkStatus();  // still blocked sending: no verdict
      }
    }
    done_ = true;
    if (!error_.ok()) return error_;
  }
  return ReadVerdict(timeout);
}

}  // namespace migd::transfer
