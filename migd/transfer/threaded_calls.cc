#include "migd/transfer/threaded_calls.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/slice.h"
#include "migd/base/log.h"
#include "migd/base/thread_name.h"

namespace migd::transfer {

ServerStream::ServerStream() = default;

ServerStream::~ServerStream() {
  // Every operation completed (one at a time, each awaited): the queue only
  // has to be shut down and drained before it goes.
  queue_.Shutdown();
  void* tag;
  bool ok;
  while (queue_.Next(&tag, &ok)) {
  }
}

bool ServerStream::Await() {
  void* tag;
  bool ok = false;
  return queue_.Next(&tag, &ok) && ok;
}

bool ServerStream::Read(grpc::ByteBuffer* message) {
  stream_.Read(message, this);
  return Await();
}

bool ServerStream::Read(grpc::ByteBuffer* message, absl::Time deadline,
                        bool* timed_out) {
  *timed_out = false;
  stream_.Read(message, this);
  void* tag;
  bool ok = false;
  switch (queue_.AsyncNext(&tag, &ok, absl::ToChronoTime(deadline))) {
    case grpc::CompletionQueue::GOT_EVENT:
      return ok;
    case grpc::CompletionQueue::TIMEOUT:
      read_pending_ = true;
      *timed_out = true;
      return false;
    case grpc::CompletionQueue::SHUTDOWN:
      break;
  }
  return false;
}

bool ServerStream::Write(const grpc::ByteBuffer& message) {
  stream_.Write(message, this);
  return Await();
}

bool ServerStream::Write(const google::protobuf::Message& message) {
  // Answers are a few bytes: serializing into one slice is simplest.
  grpc::Slice slice(message.SerializeAsString());
  return Write(grpc::ByteBuffer(&slice, 1));
}

void ServerStream::Finish(const grpc::Status& status) {
  finished_ = true;
  if (on_finish_) {
    std::function<void()> hook = std::move(on_finish_);
    on_finish_ = nullptr;
    hook();
  }
  // gRPC lets a server end a call with a read still pending; the read then
  // completes too (not ok), and both completions must be collected.
  stream_.Finish(status, this);
  const int due = read_pending_ ? 2 : 1;
  read_pending_ = false;
  for (int i = 0; i < due; ++i) {
    (void)Await();  // false when the call was cancelled: nothing to tell
  }
}

ThreadedCalls::ThreadedCalls(
    std::unique_ptr<grpc::ServerCompletionQueue> accept_queue, Request request,
    Handler handler, size_t max_calls)
    : accept_queue_(std::move(accept_queue)),
      request_(std::move(request)),
      handler_(std::move(handler)),
      max_calls_(max_calls < 1 ? 1 : max_calls) {}

ThreadedCalls::~ThreadedCalls() { Shutdown(); }

void ThreadedCalls::Start() {
  acceptor_ = std::thread([this] {
    base::NameThisThread("calls-accept");
    AcceptLoop();
  });
}

void ThreadedCalls::AcceptLoop() {
  auto next = std::make_unique<ServerStream>();
  request_(next.get(), accept_queue_.get(), next.get());
  void* tag;
  bool ok;
  while (accept_queue_->Next(&tag, &ok)) {
    if (!ok) {
      // The server is shutting down: no more calls. Keep draining until the
      // queue itself is shut down.
      next.reset();
      continue;
    }
    Reap();
    bool full;
    {
      absl::MutexLock lock(&mu_);
      full = running_ >= max_calls_;
      if (full) {
        ++refused_;
      } else {
        const uint64_t id = next_id_++;
        ++running_;
        threads_.emplace(id,
                         std::thread([this, id, s = std::move(next)]() mutable {
                           Run(id, std::move(s));
                         }));
      }
    }
    if (full) {
      // Ended here, on the acceptor: finishing a call that has not read
      // anything only sends its status.
      const std::string why = absl::StrCat(
          "already serving ", max_calls_,
          " calls of this method, the most it serves at once; retry when one "
          "has ended");
      base::LogWarning("refused a call from ", next->context()->peer(), ": ",
                       why);
      next->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, why));
    }
    next = std::make_unique<ServerStream>();
    request_(next.get(), accept_queue_.get(), next.get());
  }
}

void ThreadedCalls::Run(uint64_t id, std::unique_ptr<ServerStream> stream) {
  // The slot is free from the moment the client can see the call ended: a
  // client that opens its next call right after is served, not refused.
  stream->SetOnFinish([this] {
    absl::MutexLock lock(&mu_);
    --running_;
  });
  handler_(*stream);
  if (!stream->finished()) {
    stream->Finish(grpc::Status(grpc::StatusCode::INTERNAL,
                                "the handler ended without a status"));
  }
  stream.reset();
  absl::MutexLock lock(&mu_);
  ended_.push_back(id);
}

void ThreadedCalls::Reap() {
  std::vector<std::thread> done;
  {
    absl::MutexLock lock(&mu_);
    for (uint64_t id : ended_) {
      auto it = threads_.find(id);
      if (it == threads_.end()) continue;
      done.push_back(std::move(it->second));
      threads_.erase(it);
    }
    ended_.clear();
  }
  // Each has returned from Run: the joins are short.
  for (std::thread& t : done) t.join();
}

void ThreadedCalls::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  accept_queue_->Shutdown();
  if (acceptor_.joinable()) {
    acceptor_.join();
  } else {
    void* tag;
    bool ok;
    while (accept_queue_->Next(&tag, &ok)) {
    }
  }
  std::map<uint64_t, std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    threads.swap(threads_);
    ended_.clear();
  }
  for (auto& [id, thread] : threads) thread.join();
}

size_t ThreadedCalls::active() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

uint64_t ThreadedCalls::refused() const {
  absl::MutexLock lock(&mu_);
  return refused_;
}

}  // namespace migd::transfer
