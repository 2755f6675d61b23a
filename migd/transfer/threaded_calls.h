// migd/transfer/threaded_calls.h
//
// Serves one raw bidi-streaming method through gRPC's async API with a thread
// per call, each call's operations completing on a completion queue of its
// own that only that thread polls.
//
// Why not the sync API: a sync handler's Read is completed by one of the
// server's polling threads, which then wakes the handler thread, so every
// message costs two thread switches, and while the handler is busy nothing
// reads the socket. Here the handler thread blocks in its own queue's Next:
// it polls the connection itself and runs gRPC's receive path inline, so a
// message costs no switch. For a bulk stream (1 MiB messages at several GB/s)
// that is a large share of the receiver's CPU.
//
// The handler sees the call through ServerStream, a blocking facade with the
// sync API's shape (Read, Write, Finish). It must Finish the call before it
// returns; a call it returns from unfinished is finished with INTERNAL.

#ifndef MIGD_TRANSFER_THREADED_CALLS_H_
#define MIGD_TRANSFER_THREADED_CALLS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/async_stream.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/status.h"

namespace migd::transfer {

// One call, driven by one thread. Not thread-safe, except context() for
// TryCancel.
class ServerStream {
 public:
  using Raw = grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>;

  ServerStream();
  // Shuts the queue down and drains it. The call must be finished by then
  // (ThreadedCalls finishes one its handler left open).
  ~ServerStream();

  ServerStream(const ServerStream&) = delete;
  ServerStream& operator=(const ServerStream&) = delete;

  grpc::ServerContext* context() { return &context_; }

  // The next message; false once the client half-closed or the call broke.
  bool Read(grpc::ByteBuffer* message);
  // Read, giving up at `deadline`: then false with *timed_out set, and the
  // read stays pending until Finish, which is the only call allowed next
  // (it ends the call with its status and collects the read). `message`
  // must outlive Finish.
  bool Read(grpc::ByteBuffer* message, absl::Time deadline, bool* timed_out);
  // False when the call broke.
  bool Write(const grpc::ByteBuffer& message);
  bool Write(const google::protobuf::Message& message);
  // Ends the call with `status`. Once only. Runs the on-finish hook first.
  void Finish(const grpc::Status& status);
  // Runs just before the final status is sent: once the client learns the
  // call ended, whatever it holds (a slot of ThreadedCalls' cap) is free.
  void SetOnFinish(std::function<void()> hook) { on_finish_ = std::move(hook); }
  bool finished() const { return finished_; }

  // For the acceptor: where the call's operations complete.
  Raw* raw() { return &stream_; }
  grpc::CompletionQueue* queue() { return &queue_; }

 private:
  // Waits for the one operation in flight; its ok.
  bool Await();

  grpc::CompletionQueue queue_;
  grpc::ServerContext context_;
  Raw stream_{&context_};
  bool finished_ = false;
  bool read_pending_ = false;  // a Read gave up before its completion
  std::function<void()> on_finish_;
};

// Accepts the calls of one method on a server completion queue and runs
// `handler` for each on a thread of its own, at most `max_calls` at once: a
// call beyond that is ended at once with RESOURCE_EXHAUSTED, so peers that
// open calls cannot make the server start threads without bound.
class ThreadedCalls {
 public:
  // Asks the server for the method's next call: wraps the service's
  // (protected) RequestAsyncBidiStreaming, with `stream->raw()`,
  // `stream->context()`, new-call queue `stream->queue()`, notification queue
  // `accept_queue` and `tag`.
  using Request =
      std::function<void(ServerStream* stream,
                         grpc::ServerCompletionQueue* accept_queue, void* tag)>;
  using Handler = std::function<void(ServerStream& stream)>;

  // `accept_queue` comes from ServerBuilder::AddCompletionQueue; Start once
  // the server is built. max_calls >= 1.
  ThreadedCalls(std::unique_ptr<grpc::ServerCompletionQueue> accept_queue,
                Request request, Handler handler, size_t max_calls);
  // Shutdown() if not done yet.
  ~ThreadedCalls();

  ThreadedCalls(const ThreadedCalls&) = delete;
  ThreadedCalls& operator=(const ThreadedCalls&) = delete;

  void Start();

  // Call after the server's Shutdown returned (which cancels the calls in
  // flight): stops accepting and joins every call's thread.
  void Shutdown();

  // Calls whose handler is running and has not sent its final status.
  size_t active() const;
  // Calls ended at once because max_calls were running.
  uint64_t refused() const;

 private:
  void AcceptLoop();
  void Run(uint64_t id, std::unique_ptr<ServerStream> stream);
  // Joins the threads of calls that ended.
  void Reap();

  std::unique_ptr<grpc::ServerCompletionQueue> accept_queue_;
  const Request request_;
  const Handler handler_;
  const size_t max_calls_;
  std::thread acceptor_;
  bool shut_down_ = false;

  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> ended_ ABSL_GUARDED_BY(mu_);
  size_t running_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_THREADED_CALLS_H_
