#include "migd/transfer/stream_sender.h"

#include "migd/base/thread_name.h"

namespace migd::transfer {

StreamSender::StreamSender(std::unique_ptr<TransferClient> client)
    : client_(std::move(client)) {
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
  client_->Cancel();
  thread_.join();
}

absl::Status StreamSender::Enqueue(ChunkHeader header, PooledBuffer payload) {
  absl::MutexLock lock(&mu_);
  if (!error_.ok()) return error_;
  if (closing_) return absl::FailedPreconditionError("stream is closing");
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
    next.first.sequence = sequence_++;
    bytes_ += next.second.size();
    absl::Status s = client_->SendChunk(next.first, std::move(next.second));
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
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; };
    mu_.Await(absl::Condition(&done));
    if (!error_.ok()) return error_;
  }
  // The sender thread is done: its counts are final. Without this marker
  // the destination takes the stream's end for a drop.
  v1::TransferRequest end;
  v1::PhaseMarker* m = end.mutable_marker();
  m->set_kind(v1::PhaseMarker::STREAM_END);
  m->set_sequence(sequence_);
  m->set_total_bytes(bytes_);
  if (absl::Status s = client_->Send(end); !s.ok()) return s;
  return client_->FinishData();
}

void StreamSender::Cancel() { client_->Cancel(); }

absl::Status StreamSender::Outcome(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    queue_.clear();
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
      return absl::OkStatus();  // still blocked sending: no verdict of its own
    }
    if (!error_.ok()) return error_;
  }
  return client_->FinishData();
}

}  // namespace migd::transfer
