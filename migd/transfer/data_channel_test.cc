// The data channel end to end in one process, over real sockets on
// 127.0.0.1: a DataListener serving ReceiveDataStream, and StreamSenders
// writing to it from the test's thread, one stream or several in turn as a
// source job does, in plaintext and with mutual TLS from certificates minted
// by tools/pki. What a stream must do when things go wrong: a corrupted
// chunk, a connection dropped midway, a peer with another identity, and a
// destination that stops reading one of several streams (the sending thread
// stalls in that stream's write, and the buffers it holds stay within its
// pool).

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "migd/base/crc32c.h"
#include "migd/base/reason.h"
#include "migd/security/testing/test_pki.h"
#include "migd/security/tls_context.h"
#include "migd/transfer/buffer_pool.h"
#include "migd/transfer/data_connection.h"
#include "migd/transfer/data_frame.h"
#include "migd/transfer/data_listener.h"
#include "migd/transfer/data_receiver.h"
#include "migd/transfer/stream_sender.h"

namespace migd::transfer {
namespace {

using security::testing::TestPki;

constexpr absl::Duration kTimeout = absl::Seconds(20);
constexpr size_t kChunk = 64 << 10;

std::string Reason(const absl::Status& s) {
  return v1::ErrorReason_Name(base::ReasonOf(s));
}

// What the destination side saw of one stream.
struct Received {
  absl::Mutex mu;
  std::string bytes ABSL_GUARDED_BY(mu);
  absl::Status status ABSL_GUARDED_BY(mu);
  std::string peer_identity ABSL_GUARDED_BY(mu);
  bool done ABSL_GUARDED_BY(mu) = false;
};

// What the destination side saw of several streams: each chunk's payload by
// its offset, and each stream's status once it ended.
struct ReceivedStreams {
  absl::Mutex mu;
  std::map<uint64_t, std::string> chunks ABSL_GUARDED_BY(mu);
  std::vector<absl::Status> ended ABSL_GUARDED_BY(mu);
};

// The fill byte of the chunk at `offset` in the tests of several streams.
char FillAt(uint64_t offset) {
  return static_cast<char>('a' + offset / kChunk % 26);
}

// A chunk's payload, copied out.
std::string PayloadOf(const DecodedRequest& chunk) {
  std::string data(chunk.payload_size(), '\0');
  chunk.CopyPayloadTo(
      absl::MakeSpan(reinterpret_cast<uint8_t*>(data.data()), data.size()),
      nullptr);
  return data;
}

class DataChannelTest : public ::testing::TestWithParam<bool> {
 protected:
  bool tls() const { return GetParam(); }

  void SetUp() override {
    if (tls()) {
      absl::StatusOr<TestPki> pki = TestPki::Create();
      ASSERT_TRUE(pki.ok()) << pki.status();
      pki_ = std::make_unique<TestPki>(*std::move(pki));
    }
  }

  // Loopback, the test's handshake timeout, and agent-b's certificate under
  // TLS.
  DataListenerOptions ListenerOptions() const {
    DataListenerOptions options;
    options.address = "127.0.0.1:0";
    options.handshake_timeout = kTimeout;
    if (tls()) {
      security::TlsFiles files = pki_->FilesFor("agent-b");
      options.tls = [files] {
        return security::NewTlsContext(files, security::TlsSide::kServer);
      };
    }
    return options;
  }

  // Starts a listener whose streams go through ReceiveDataStream into
  // `received_`, `on_chunk` deciding about each chunk first (OK: taken).
  void Listen(
      std::function<absl::Status(const DecodedRequest&)> on_chunk = nullptr,
      size_t max_buffers = 4) {
    DataListenerOptions options = ListenerOptions();
    absl::StatusOr<std::unique_ptr<DataListener>> l = DataListener::Start(
        options, [this, on_chunk, max_buffers](DataConnection& conn,
                                               const absl::Status&) {
          {
            absl::MutexLock lock(&received_.mu);
            received_.peer_identity = conn.peer_identity();
          }
          ReceiveOptions r;
          r.max_chunk_bytes = kChunk;
          r.max_buffers = max_buffers;
          absl::Status s = ReceiveDataStream(
              conn, r, [this, &on_chunk](DecodedRequest chunk) {
                if (on_chunk) {
                  if (absl::Status s = on_chunk(chunk); !s.ok()) return s;
                }
                std::string data = PayloadOf(chunk);
                absl::MutexLock lock(&received_.mu);
                received_.bytes += data;
                return absl::OkStatus();
              });
          (void)WriteMessage(conn, StatusMessage(s));
          absl::MutexLock lock(&received_.mu);
          received_.status = s;
          received_.done = true;
        });
    ASSERT_TRUE(l.ok()) << l.status();
    listener_ = *std::move(l);
  }

  // Starts a listener whose every stream goes through ReceiveDataStream into
  // `streams_`, `on_chunk` deciding about each chunk first (OK: taken); it
  // may block, which stops that stream's reading.
  void ListenStreams(
      std::function<absl::Status(const DecodedRequest&)> on_chunk = nullptr) {
    DataListenerOptions options = ListenerOptions();
    absl::StatusOr<std::unique_ptr<DataListener>> l = DataListener::Start(
        options, [this, on_chunk](DataConnection& conn, const absl::Status&) {
          ReceiveOptions r;
          r.max_chunk_bytes = kChunk;
          absl::Status s = ReceiveDataStream(
              conn, r, [this, &on_chunk](DecodedRequest chunk) {
                if (on_chunk) {
                  if (absl::Status s = on_chunk(chunk); !s.ok()) return s;
                }
                std::string data = PayloadOf(chunk);
                absl::MutexLock lock(&streams_.mu);
                streams_.chunks[chunk.header().offset] = std::move(data);
                return absl::OkStatus();
              });
          (void)WriteMessage(conn, StatusMessage(s));
          absl::MutexLock lock(&streams_.mu);
          streams_.ended.push_back(s);
        });
    ASSERT_TRUE(l.ok()) << l.status();
    listener_ = *std::move(l);
  }

  // `n` senders, each on a connection of its own to the listener.
  std::vector<std::unique_ptr<StreamSender>> DialStreams(int n) {
    std::vector<std::unique_ptr<StreamSender>> senders;
    for (int k = 0; k < n; ++k) {
      absl::StatusOr<std::unique_ptr<DataConnection>> conn = Dial();
      EXPECT_TRUE(conn.ok()) << conn.status();
      if (!conn.ok()) break;
      senders.push_back(std::make_unique<StreamSender>(*std::move(conn)));
    }
    return senders;
  }

  // The statuses of the first `n` streams to end, in the order they ended.
  std::vector<absl::Status> AwaitStreamsEnded(size_t n) {
    absl::MutexLock lock(&streams_.mu);
    auto ended = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_.mu) {
      return streams_.ended.size() >= n;
    };
    streams_.mu.AwaitWithTimeout(absl::Condition(&ended), kTimeout);
    return streams_.ended;
  }

  // Expects exactly `n` chunks of kChunk bytes, at offsets 0, kChunk, ...,
  // each filled with FillAt(its offset).
  void ExpectChunks(int n) {
    absl::MutexLock lock(&streams_.mu);
    EXPECT_EQ(streams_.chunks.size(), static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      const uint64_t offset = static_cast<uint64_t>(i) * kChunk;
      auto it = streams_.chunks.find(offset);
      if (it == streams_.chunks.end()) {
        ADD_FAILURE() << "chunk at " << offset << " never arrived";
        continue;
      }
      EXPECT_TRUE(it->second == std::string(kChunk, FillAt(offset)))
          << "chunk at " << offset << " differs";
    }
  }

  // A connection to the listener as `name` (TLS), expecting agent-b.
  absl::StatusOr<std::unique_ptr<DataConnection>> Dial(
      const std::string& name = "agent-a",
      const std::string& expect = TestPki::AgentIdentity("agent-b")) {
    security::SslCtxPtr ctx;
    if (tls()) {
      absl::StatusOr<security::SslCtxPtr> made = security::NewTlsContext(
          pki_->FilesFor(name), security::TlsSide::kClient);
      if (!made.ok()) return made.status();
      ctx = *std::move(made);
    }
    return DataConnection::Dial("127.0.0.1", listener_->port(), ctx.get(),
                                tls() ? expect : "", kTimeout, kTimeout);
  }

  // The destination's status once its stream ended.
  absl::Status AwaitReceived() {
    absl::MutexLock lock(&received_.mu);
    received_.mu.AwaitWithTimeout(absl::Condition(&received_.done), kTimeout);
    return received_.done ? received_.status
                          : absl::DeadlineExceededError("stream still open");
  }

  // A chunk of `size` bytes of `fill` at `offset`, sealed.
  static std::pair<ChunkHeader, PooledBuffer> Chunk(BufferPool& pool,
                                                    uint64_t offset,
                                                    size_t size, char fill) {
    absl::StatusOr<PooledBuffer> b = pool.Acquire();
    EXPECT_TRUE(b.ok()) << b.status();
    memset(b->data(), fill, size);
    b->set_size(size);
    return {SealChunkHeader(0, 0, offset, b->contents()), *std::move(b)};
  }

  std::unique_ptr<TestPki> pki_;
  Received received_;
  ReceivedStreams streams_;
  std::unique_ptr<DataListener> listener_;
};

TEST_P(DataChannelTest, ChunksArriveWhole) {
  ASSERT_NO_FATAL_FAILURE(Listen());
  absl::StatusOr<std::unique_ptr<DataConnection>> conn = Dial();
  ASSERT_TRUE(conn.ok()) << conn.status();
  if (tls()) {
    EXPECT_EQ((*conn)->cipher(), "TLS_AES_128_GCM_SHA256");
  }
  StreamSender sender(*std::move(conn));
  absl::StatusOr<std::unique_ptr<BufferPool>> pool =
      BufferPool::Create(kChunk, 2);
  ASSERT_TRUE(pool.ok());
  std::string expected;
  for (int i = 0; i < 20; ++i) {
    auto [header, buffer] = Chunk(**pool, i * kChunk, kChunk, 'a' + i);
    expected += std::string(kChunk, 'a' + i);
    ASSERT_TRUE(sender.Send(header, std::move(buffer)).ok());
  }
  absl::Status closed = sender.Close();
  EXPECT_TRUE(closed.ok()) << closed;
  EXPECT_TRUE(AwaitReceived().ok());
  absl::MutexLock lock(&received_.mu);
  EXPECT_TRUE(received_.bytes == expected) << "payload differs";
  if (tls()) {
    EXPECT_EQ(received_.peer_identity, TestPki::AgentIdentity("agent-a"));
  }
}

TEST_P(DataChannelTest, ACorruptedChunkFailsTheStreamOnBothEnds) {
  ASSERT_NO_FATAL_FAILURE(Listen());
  absl::StatusOr<std::unique_ptr<DataConnection>> conn = Dial();
  ASSERT_TRUE(conn.ok()) << conn.status();
  StreamSender sender(*std::move(conn));
  auto pool = BufferPool::Create(kChunk, 4);
  ASSERT_TRUE(pool.ok());
  auto [good, b1] = Chunk(**pool, 0, kChunk, 'x');
  ASSERT_TRUE(sender.Send(good, std::move(b1)).ok());
  auto [bad, b2] = Chunk(**pool, kChunk, kChunk, 'y');
  b2.data()[100] ^= 0x5a;  // after the CRC was computed: "in flight"
  ASSERT_TRUE(sender.Send(bad, std::move(b2)).ok());
  absl::Status closed = sender.Close();
  EXPECT_EQ(Reason(closed), "ERROR_REASON_STREAM_CORRUPTED") << closed;
  absl::Status received = AwaitReceived();
  EXPECT_EQ(Reason(received), "ERROR_REASON_STREAM_CORRUPTED") << received;
  EXPECT_TRUE(absl::StrContains(received.message(), "CRC")) << received;
  absl::MutexLock lock(&received_.mu);
  EXPECT_EQ(received_.bytes.size(), kChunk) << "only the good chunk is taken";
}

TEST_P(DataChannelTest, AConnectionDroppedMidwayIsADropNotAnEnd) {
  ASSERT_NO_FATAL_FAILURE(Listen());
  absl::StatusOr<std::unique_ptr<DataConnection>> conn = Dial();
  ASSERT_TRUE(conn.ok()) << conn.status();
  StreamSender sender(*std::move(conn));
  auto pool = BufferPool::Create(kChunk, 4);
  ASSERT_TRUE(pool.ok());
  auto [h, b] = Chunk(**pool, 0, kChunk, 'x');
  ASSERT_TRUE(sender.Send(h, std::move(b)).ok());
  // Wait until the chunk arrived, then drop the connection.
  for (absl::Time end = absl::Now() + kTimeout; absl::Now() < end;) {
    absl::MutexLock lock(&received_.mu);
    if (received_.bytes.size() == kChunk) break;
    received_.mu.Unlock();
    absl::SleepFor(absl::Milliseconds(5));
    received_.mu.Lock();
  }
  sender.Cancel();
  absl::Status received = AwaitReceived();
  EXPECT_EQ(Reason(received), "ERROR_REASON_PEER_UNAVAILABLE") << received;
  EXPECT_TRUE(absl::StrContains(received.message(), "without its STREAM_END"))
      << received;
}

// A source job's way with several streams: one thread hands the chunks to
// its streams in turn and writes each itself. Every chunk arrives whole, and
// each stream's end counts what it carried.
TEST_P(DataChannelTest, OneThreadSendsSeveralStreamsInTurn) {
  ASSERT_NO_FATAL_FAILURE(ListenStreams());
  constexpr int kStreams = 4;
  constexpr int kChunks = 40;
  std::vector<std::unique_ptr<StreamSender>> senders = DialStreams(kStreams);
  ASSERT_EQ(senders.size(), static_cast<size_t>(kStreams));
  // Two buffers, as a source job has: each is back once its write returned.
  absl::StatusOr<std::unique_ptr<BufferPool>> pool =
      BufferPool::Create(kChunk, 2);
  ASSERT_TRUE(pool.ok());
  for (int i = 0; i < kChunks; ++i) {
    const uint64_t offset = static_cast<uint64_t>(i) * kChunk;
    auto [header, buffer] = Chunk(**pool, offset, kChunk, FillAt(offset));
    absl::Status sent = senders[i % kStreams]->Send(header, std::move(buffer));
    ASSERT_TRUE(sent.ok()) << "chunk " << i << ": " << sent;
  }
  for (const auto& sender : senders) {
    absl::Status closed = sender->Close();
    EXPECT_TRUE(closed.ok()) << closed;
  }
  std::vector<absl::Status> ended = AwaitStreamsEnded(kStreams);
  ASSERT_EQ(ended.size(), static_cast<size_t>(kStreams));
  for (const absl::Status& s : ended) EXPECT_TRUE(s.ok()) << s;
  ExpectChunks(kChunks);
  EXPECT_EQ((*pool)->peak_in_use(), 1u) << "a chunk outlived its write";
}

// A destination that stops reading one of several streams stalls the one
// thread that sends them all, in that stream's write (TCP's window): it reads
// nothing more meanwhile and holds no more than its pool. Once the stream is
// read again, every chunk arrives.
TEST_P(DataChannelTest, ASlowStreamStallsTheSendingThreadWithinItsPool) {
  absl::Notification release;
  ASSERT_NO_FATAL_FAILURE(ListenStreams([&](const DecodedRequest& chunk) {
    // The stream that carries chunk 1 takes it, then stops reading.
    if (chunk.header().offset == kChunk) release.WaitForNotification();
    return absl::OkStatus();
  }));
  constexpr int kStreams = 4;
  std::vector<std::unique_ptr<StreamSender>> senders = DialStreams(kStreams);
  if (senders.size() != static_cast<size_t>(kStreams)) {
    release.Notify();
    FAIL() << "could not open " << kStreams << " streams";
  }
  constexpr size_t kBuffers = 2;
  auto pool = BufferPool::Create(kChunk, kBuffers);
  ASSERT_TRUE(pool.ok());
  // The producer reads "the device" and sends, round robin, as a source job
  // does: far more than the slow stream's socket buffers hold (a quarter of
  // 64 MiB).
  constexpr int kChunks = 1024;
  std::atomic<int> produced{0};
  std::thread producer([&] {
    for (int i = 0; i < kChunks; ++i) {
      const uint64_t offset = static_cast<uint64_t>(i) * kChunk;
      auto [h, b] = Chunk(**pool, offset, kChunk, FillAt(offset));
      if (!senders[i % kStreams]->Send(h, std::move(b)).ok()) return;
      ++produced;
    }
  });
  absl::SleepFor(absl::Milliseconds(500));
  const int stalled_at = produced.load();
  absl::SleepFor(absl::Milliseconds(200));
  const int later = produced.load();
  release.Notify();
  producer.join();
  EXPECT_LT(stalled_at, kChunks) << "the slow stream never stalled the sender";
  EXPECT_EQ(later, stalled_at) << "still producing while stalled";
  EXPECT_LE((*pool)->peak_in_use(), kBuffers);
  EXPECT_EQ(produced.load(), kChunks);
  for (const auto& sender : senders) {
    absl::Status closed = sender->Close();
    EXPECT_TRUE(closed.ok()) << closed;
  }
  std::vector<absl::Status> ended = AwaitStreamsEnded(kStreams);
  ASSERT_EQ(ended.size(), static_cast<size_t>(kStreams));
  for (const absl::Status& s : ended) EXPECT_TRUE(s.ok()) << s;
  ExpectChunks(kChunks);
  listener_.reset();  // its handler uses `release`
}

INSTANTIATE_TEST_SUITE_P(Transports, DataChannelTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "Tls" : "Plain";
                         });

// Identities: TLS only.
class DataChannelTlsTest : public DataChannelTest {};

TEST_P(DataChannelTlsTest, AServerWithAnotherIdentityIsRefusedByTheSource) {
  ASSERT_NO_FATAL_FAILURE(Listen());
  absl::StatusOr<std::unique_ptr<DataConnection>> conn =
      Dial("agent-a", TestPki::AgentIdentity("agent-c"));
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(absl::StrContains(conn.status().message(), "agent-b"))
      << conn.status();
  EXPECT_TRUE(absl::StrContains(conn.status().message(), "agent-c"))
      << conn.status();
}

TEST_P(DataChannelTlsTest, AClientFromAnotherCaFailsTheHandshake) {
  ASSERT_NO_FATAL_FAILURE(Listen());
  absl::StatusOr<TestPki> other = TestPki::Create("other-pki");
  ASSERT_TRUE(other.ok()) << other.status();
  absl::StatusOr<security::SslCtxPtr> ctx = security::NewTlsContext(
      other->FilesFor("agent-a"), security::TlsSide::kClient);
  ASSERT_TRUE(ctx.ok());
  absl::StatusOr<std::unique_ptr<DataConnection>> conn = DataConnection::Dial(
      "127.0.0.1", listener_->port(), ctx->get(), "", kTimeout, kTimeout);
  // The client does not trust the server's CA either: refused at once.
  ASSERT_FALSE(conn.ok());
  EXPECT_TRUE(absl::StrContains(conn.status().message(), "TLS handshake"))
      << conn.status();
}

// A peer that connects and never says a word of TLS holds a thread in the
// handshake until its timeout; stopping the listener must not wait for that
// (an agent's shutdown would hang for the whole idle timeout).
TEST_P(DataChannelTlsTest, StoppingTheListenerEndsAHandshakeThatHangs) {
  DataListenerOptions options = ListenerOptions();
  options.handshake_timeout = absl::Seconds(120);
  std::atomic<int> served{0};
  absl::StatusOr<std::unique_ptr<DataListener>> l = DataListener::Start(
      options, [&served](DataConnection&, const absl::Status&) { ++served; });
  ASSERT_TRUE(l.ok()) << l.status();
  // A plain TCP connection that sends nothing.
  absl::StatusOr<std::unique_ptr<DataConnection>> silent = DataConnection::Dial(
      "127.0.0.1", (*l)->port(), nullptr, "", kTimeout, kTimeout);
  ASSERT_TRUE(silent.ok()) << silent.status();
  absl::SleepFor(absl::Milliseconds(200));  // let its thread start the wait
  const absl::Time start = absl::Now();
  l->reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(60))
      << "the listener waited for the handshake's timeout";
  EXPECT_EQ(served.load(), 0);
  // The listener closed it: the silent peer reads the end.
  char c;
  EXPECT_FALSE((*silent)->ReadFull(&c, 1).ok());
}

INSTANTIATE_TEST_SUITE_P(Tls, DataChannelTlsTest, ::testing::Values(true),
                         [](const auto&) { return "Tls"; });

}  // namespace
}  // namespace migd::transfer
