// ThreadedCalls against a real gRPC server and client on 127.0.0.1: calls run
// at the same time on threads of their own, statuses and messages get
// through, a cancel from another thread wakes a blocked read, a read gives up
// at its deadline, calls beyond the cap are refused, and shutdown ends calls
// still in flight.

#include "migd/transfer/threaded_calls.h"

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/impl/rpc_service_method.h"
#include "grpcpp/support/sync_stream.h"
#include "gtest/gtest.h"

namespace migd::transfer {
namespace {

constexpr char kMethod[] = "/migd.test.Calls/Stream";

// One raw async method, requested the way TransferServiceImpl requests
// TransferData.
class RawService final : public grpc::Service {
 public:
  RawService() {
    AddMethod(new grpc::internal::RpcServiceMethod(
        kMethod, grpc::internal::RpcMethod::BIDI_STREAMING, nullptr));
    MarkMethodRaw(0);
  }
  void Request(ServerStream* stream, grpc::ServerCompletionQueue* queue,
               void* tag) {
    RequestAsyncBidiStreaming(0, stream->context(), stream->raw(),
                              stream->queue(), queue, tag);
  }
};

grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

std::string Text(const grpc::ByteBuffer& b) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(b.Dump(&slices).ok());
  std::string s;
  for (const grpc::Slice& slice : slices) {
    s.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return s;
}

// Waits (up to 20 s) until `count`, guarded by `mu`, reaches `n`.
bool AwaitCount(absl::Mutex& mu, const int& count, int n) {
  absl::MutexLock lock(&mu);
  auto reached = [&] { return count >= n; };
  return mu.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(20));
}

class ThreadedCallsTest : public ::testing::Test {
 protected:
  void Serve(ThreadedCalls::Handler handler, size_t max_calls = 16) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    calls_ = std::make_unique<ThreadedCalls>(
        builder.AddCompletionQueue(),
        [this](ServerStream* s, grpc::ServerCompletionQueue* q, void* tag) {
          service_.Request(s, q, tag);
        },
        std::move(handler), max_calls);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    calls_->Start();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials());
  }

  void TearDown() override { StopServer(); }

  // The agent's order: the server cancels what is in flight, the calls'
  // threads end, and only then may the server go.
  void StopServer() {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now());
    }
    if (calls_ != nullptr) calls_->Shutdown();
    server_.reset();
  }

  // The client may see a call's status before its handler has returned.
  bool AwaitActive(size_t n) {
    for (int i = 0; i < 2000 && calls_->active() != n; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return calls_->active() == n;
  }

  struct Call {
    grpc::ClientContext context;
    std::unique_ptr<
        grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
        stream;
  };
  std::unique_ptr<Call> Open(
      absl::Duration deadline = absl::InfiniteDuration()) {
    auto call = std::make_unique<Call>();
    if (deadline != absl::InfiniteDuration()) {
      call->context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    }
    const grpc::internal::RpcMethod method(
        kMethod, grpc::internal::RpcMethod::BIDI_STREAMING, channel_);
    call->stream.reset(
        grpc::internal::ClientReaderWriterFactory<
            grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel_.get(), method,
                                                        &call->context));
    return call;
  }

  RawService service_;
  int port_ = 0;
  std::unique_ptr<ThreadedCalls> calls_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ThreadedCallsTest, CallsRunAtOnceOnThreadsOfTheirOwn) {
  constexpr int kCalls = 3;
  absl::Mutex mu;
  int inside = 0;
  std::set<std::thread::id> threads;
  Serve([&](ServerStream& stream) {
    {
      // Every handler waits here until all are in: only threads of their
      // own get there together.
      absl::MutexLock lock(&mu);
      ++inside;
      threads.insert(std::this_thread::get_id());
      auto all_in = [&] { return inside == kCalls; };
      mu.AwaitWithTimeout(absl::Condition(&all_in), absl::Seconds(20));
    }
    std::string got;
    grpc::ByteBuffer message;
    while (stream.Read(&message)) got += Text(message);
    ASSERT_TRUE(stream.Write(Bytes("got " + got)));
    stream.Finish(grpc::Status::OK);
  });

  std::vector<std::thread> clients;
  std::vector<std::string> answers(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    clients.emplace_back([&, i] {
      std::unique_ptr<Call> call = Open();
      ASSERT_TRUE(call->stream->Write(Bytes("a" + std::to_string(i))));
      ASSERT_TRUE(call->stream->Write(Bytes("b")));
      ASSERT_TRUE(call->stream->WritesDone());
      grpc::ByteBuffer answer;
      ASSERT_TRUE(call->stream->Read(&answer));
      answers[i] = Text(answer);
      EXPECT_TRUE(call->stream->Finish().ok());
    });
  }
  for (std::thread& t : clients) t.join();
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(answers[i], "got a" + std::to_string(i) + "b");
  }
  absl::MutexLock lock(&mu);
  EXPECT_EQ(inside, kCalls);
  EXPECT_EQ(threads.size(), static_cast<size_t>(kCalls));
}

TEST_F(ThreadedCallsTest, StatusAndProtobufAnswersReachTheClient) {
  Serve([](ServerStream& stream) {
    grpc::ByteBuffer message;
    ASSERT_TRUE(stream.Read(&message));
    stream.Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                               "refused " + Text(message)));
  });
  std::unique_ptr<Call> call = Open();
  ASSERT_TRUE(call->stream->Write(Bytes("x")));
  grpc::ByteBuffer answer;
  EXPECT_FALSE(call->stream->Read(&answer));
  grpc::Status status = call->stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(), "refused x");
}

TEST_F(ThreadedCallsTest, AHandlerThatForgetsTheStatusEndsWithInternal) {
  Serve([](ServerStream&) {});
  std::unique_ptr<Call> call = Open();
  call->stream->WritesDone();
  EXPECT_EQ(call->stream->Finish().error_code(), grpc::StatusCode::INTERNAL);
}

TEST_F(ThreadedCallsTest, TryCancelFromAnotherThreadWakesABlockedRead) {
  absl::Mutex mu;
  grpc::ServerContext* blocked = nullptr;
  bool woke = false;
  Serve([&](ServerStream& stream) {
    grpc::ByteBuffer message;
    ASSERT_TRUE(stream.Read(&message));
    {
      absl::MutexLock lock(&mu);
      blocked = stream.context();
    }
    // The client sends nothing more: only the cancel ends this read.
    const bool read = stream.Read(&message);
    absl::MutexLock lock(&mu);
    woke = !read;
    blocked = nullptr;
    stream.Finish(grpc::Status::OK);
  });
  std::unique_ptr<Call> call = Open();
  ASSERT_TRUE(call->stream->Write(Bytes("first")));
  {
    absl::MutexLock lock(&mu);
    auto in_read = [&] { return blocked != nullptr; };
    ASSERT_TRUE(
        mu.AwaitWithTimeout(absl::Condition(&in_read), absl::Seconds(20)));
    blocked->TryCancel();
    auto done = [&] { return blocked == nullptr; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(20)));
    EXPECT_TRUE(woke);
  }
  EXPECT_EQ(call->stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ThreadedCallsTest, ShutdownEndsCallsStillOpenAndJoinsTheirThreads) {
  absl::Mutex mu;
  int reading = 0;
  int ended = 0;
  Serve([&](ServerStream& stream) {
    grpc::ByteBuffer message;
    {
      absl::MutexLock lock(&mu);
      ++reading;
    }
    while (stream.Read(&message)) {
    }
    stream.Finish(grpc::Status::OK);
    absl::MutexLock lock(&mu);
    ++ended;
  });
  std::unique_ptr<Call> a = Open();
  std::unique_ptr<Call> b = Open();
  ASSERT_TRUE(a->stream->Write(Bytes("a")));
  ASSERT_TRUE(b->stream->Write(Bytes("b")));
  ASSERT_TRUE(AwaitCount(mu, reading, 2));
  EXPECT_EQ(calls_->active(), 2u);
  StopServer();  // returns only once both handlers returned
  absl::MutexLock lock(&mu);
  EXPECT_EQ(ended, 2);
  EXPECT_EQ(calls_->active(), 0u);
  a->context.TryCancel();
  b->context.TryCancel();
}

TEST_F(ThreadedCallsTest,
       AReadGivesUpAtItsDeadlineAndFinishStillSendsTheStatus) {
  Serve([](ServerStream& stream) {
    grpc::ByteBuffer message;
    bool timed_out = false;
    // The first message comes in time; the client then sends nothing.
    if (!stream.Read(&message, absl::Now() + absl::Seconds(20), &timed_out) ||
        timed_out) {
      stream.Finish(grpc::Status(grpc::StatusCode::INTERNAL, "first read"));
      return;
    }
    const bool read = stream.Read(
        &message, absl::Now() + absl::Milliseconds(200), &timed_out);
    stream.Finish(
        grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                     absl::StrCat("read=", read, " timed_out=", timed_out)));
  });
  std::unique_ptr<Call> call = Open();
  ASSERT_TRUE(call->stream->Write(Bytes("first")));
  const grpc::Status status = call->stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(status.error_message(), "read=0 timed_out=1");
  EXPECT_TRUE(AwaitActive(0));
}

TEST_F(ThreadedCallsTest, CallsBeyondTheCapAreRefusedUntilOneEnds) {
  absl::Mutex mu;
  int reading = 0;
  Serve(
      [&](ServerStream& stream) {
        grpc::ByteBuffer message;
        ASSERT_TRUE(stream.Read(&message));
        {
          absl::MutexLock lock(&mu);
          ++reading;
        }
        while (stream.Read(&message)) {
        }
        stream.Finish(grpc::Status::OK);
      },
      /*max_calls=*/2);
  std::unique_ptr<Call> a = Open();
  std::unique_ptr<Call> b = Open();
  ASSERT_TRUE(a->stream->Write(Bytes("a")));
  ASSERT_TRUE(b->stream->Write(Bytes("b")));
  ASSERT_TRUE(AwaitCount(mu, reading, 2));
  // Served, it would block in its handler: a deadline fails the test then.
  std::unique_ptr<Call> c = Open(absl::Seconds(20));
  (void)c->stream->Write(Bytes("c"));
  const grpc::Status refused = c->stream->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.error_message().find("already serving 2 calls"),
            std::string::npos)
      << refused.error_message();
  EXPECT_EQ(calls_->refused(), 1u);
  EXPECT_EQ(calls_->active(), 2u);

  // One ends: the next call is served again.
  ASSERT_TRUE(a->stream->WritesDone());
  ASSERT_TRUE(a->stream->Finish().ok());
  ASSERT_TRUE(AwaitActive(1));
  std::unique_ptr<Call> d = Open();
  ASSERT_TRUE(d->stream->Write(Bytes("d")));
  ASSERT_TRUE(AwaitCount(mu, reading, 3));
  EXPECT_EQ(calls_->refused(), 1u);
  ASSERT_TRUE(b->stream->WritesDone());
  ASSERT_TRUE(d->stream->WritesDone());
  EXPECT_TRUE(b->stream->Finish().ok());
  EXPECT_TRUE(d->stream->Finish().ok());
}

// A handler may still be returning (cleaning up, logging) after it sent its
// status; the client that saw the status and opens its next call at once is
// served, not refused: the slot is free from the status on.
TEST_F(ThreadedCallsTest, TheSlotIsFreeOnceTheStatusIsSent) {
  absl::Notification release;
  absl::Mutex mu;
  int started = 0;
  Serve(
      [&](ServerStream& stream) {
        int n;
        {
          absl::MutexLock lock(&mu);
          n = ++started;
        }
        grpc::ByteBuffer message;
        while (stream.Read(&message)) {
        }
        stream.Finish(grpc::Status::OK);
        // The first handler lingers after its status until the test is done.
        if (n == 1) release.WaitForNotification();
      },
      /*max_calls=*/1);
  std::unique_ptr<Call> a = Open();
  ASSERT_TRUE(a->stream->Write(Bytes("a")));
  ASSERT_TRUE(a->stream->WritesDone());
  ASSERT_TRUE(a->stream->Finish().ok());
  std::unique_ptr<Call> b = Open(absl::Seconds(20));
  ASSERT_TRUE(b->stream->Write(Bytes("b")));
  ASSERT_TRUE(b->stream->WritesDone());
  const grpc::Status status = b->stream->Finish();
  release.Notify();
  StopServer();  // joins the handlers before the locals they use go
  EXPECT_TRUE(status.ok()) << status.error_code() << " "
                           << status.error_message();
  EXPECT_EQ(calls_->refused(), 0u);
}

}  // namespace
}  // namespace migd::transfer
