// The zero-copy data path through a real gRPC stream on 127.0.0.1: the sender
// lends pooled buffers to gRPC (GenericStub, ByteBuffers from EncodeChunk),
// the receiver takes the raw ByteBuffers of TransferService/Transfer and
// decodes them into views of gRPC's read buffers. Neither side copies a
// payload byte, the pool bounds what the sender holds, and every buffer comes
// back once gRPC is done with it.

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/base/crc32c.h"
#include "migd/transfer/buffer_pool.h"
#include "migd/transfer/chunk_codec.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::transfer {
namespace {

constexpr size_t kChunkBytes = 256 * 1024;
constexpr size_t kPoolBuffers = 4;
constexpr size_t kStateBytes =
    24 * 1024 * 1024 + 12345;  // not a chunk multiple

using RawService =
    v1::TransferService::WithRawMethod_Transfer<v1::TransferService::Service>;

std::vector<uint8_t> DeviceState(size_t n) {
  std::vector<uint8_t> s(n);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<uint8_t>(x);
  }
  return s;
}

void Await(grpc::CompletionQueue* cq, void* want, bool expect_ok = true) {
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq->Next(&tag, &ok));
  ASSERT_EQ(tag, want);
  ASSERT_EQ(ok, expect_ok);
}

// What the receiver saw.
struct Received {
  uint64_t chunks = 0;
  uint64_t bytes = 0;
  uint64_t not_zero_copy = 0;
  uint64_t mismatches = 0;  // bytes, CRC, offset or sequence wrong
  bool header_seen = false;
  bool commit_seen = false;
};

// Serves one Transfer call: the raw ByteBuffers are decoded; each chunk's
// payload views are compared with the expected state in place.
void ServeOne(RawService* service, grpc::ServerCompletionQueue* cq,
              const std::vector<uint8_t>& expected, CopyCounter* copies,
              Received* got) {
  grpc::ServerContext ctx;
  grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer> stream(
      &ctx);
  service->RequestTransfer(&ctx, &stream, cq, cq, reinterpret_cast<void*>(1));
  Await(cq, reinterpret_cast<void*>(1));
  uint64_t next_offset = 0;
  uint64_t next_sequence = 0;
  for (;;) {
    grpc::ByteBuffer bb;
    stream.Read(&bb, reinterpret_cast<void*>(2));
    void* tag = nullptr;
    bool ok = false;
    ASSERT_TRUE(cq->Next(&tag, &ok));
    if (!ok) break;  // the sender is done writing
    absl::StatusOr<DecodedRequest> d = DecodeRequest(bb, copies);
    ASSERT_TRUE(d.ok()) << d.status();
    bb.Clear();  // only the decoded request holds gRPC's buffers now
    if (!d->is_chunk()) {
      if (d->message().has_header()) got->header_seen = true;
      if (d->message().has_marker() &&
          d->message().marker().kind() == v1::PhaseMarker::COMMIT) {
        got->commit_seen = true;
      }
      ++next_sequence;
      continue;
    }
    ++got->chunks;
    if (!d->zero_copy()) ++got->not_zero_copy;
    const ChunkHeader& h = d->header();
    if (h.offset != next_offset || h.sequence != next_sequence ||
        d->PayloadCrc32c() != h.crc32c) {
      ++got->mismatches;
    }
    uint64_t at = h.offset;
    for (const iovec& v : d->payload()) {  // what writev would be handed
      if (at + v.iov_len > expected.size() ||
          std::memcmp(v.iov_base, expected.data() + at, v.iov_len) != 0) {
        ++got->mismatches;
      }
      at += v.iov_len;
    }
    next_offset += d->payload_size();
    ++next_sequence;
    got->bytes += d->payload_size();
  }
  v1::TransferResponse resp;
  resp.mutable_completion()->set_downtime_ns(1);
  grpc::ByteBuffer out;
  bool own = false;
  ASSERT_TRUE(grpc::SerializationTraits<v1::TransferResponse>::Serialize(
                  resp, &out, &own)
                  .ok());
  stream.Write(out, reinterpret_cast<void*>(3));
  Await(cq, reinterpret_cast<void*>(3));
  stream.Finish(grpc::Status::OK, reinterpret_cast<void*>(4));
  Await(cq, reinterpret_cast<void*>(4));
}

TEST(ZeroCopyGrpc, ChunksCrossALoopbackStreamWithoutUserSpaceCopies) {
  const std::vector<uint8_t> state = DeviceState(kStateBytes);

  RawService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::ServerCompletionQueue> server_cq =
      builder.AddCompletionQueue();
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  CopyCounter rx_copies;
  Received got;
  std::thread receiver(
      [&] { ServeOne(&service, server_cq.get(), state, &rx_copies, &got); });

  CopyCounter tx_copies;
  auto pool = BufferPool::Create(kChunkBytes, kPoolBuffers);
  ASSERT_TRUE(pool.ok());
  {
    grpc::ChannelArguments args;
    args.SetInt("grpc.http2.lookahead_bytes", 8 << 20);
    auto channel =
        grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                  grpc::InsecureChannelCredentials(), args);
    grpc::GenericStub stub(channel);
    grpc::CompletionQueue cq;
    grpc::ClientContext ctx;
    auto call = stub.PrepareCall(&ctx, kTransferMethod, &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    Await(&cq, reinterpret_cast<void*>(1));

    uint64_t sequence = 0;
    v1::TransferRequest header;
    header.mutable_header()->set_job_id("zero-copy");
    call->Write(EncodeRequest(header, &tx_copies), reinterpret_cast<void*>(2));
    Await(&cq, reinterpret_cast<void*>(2));
    ++sequence;
    for (uint64_t offset = 0; offset < state.size();) {
      absl::StatusOr<PooledBuffer> buf =
          (*pool)->Acquire(absl::Now() + absl::Seconds(30));
      ASSERT_TRUE(buf.ok()) << buf.status();
      // Stands in for DataStream::Read filling the buffer (the device's copy).
      const size_t n = std::min(kChunkBytes, state.size() - offset);
      std::memcpy(buf->data(), state.data() + offset, n);
      buf->set_size(n);
      const ChunkHeader h =
          SealChunkHeader(0, sequence++, offset, buf->contents());
      call->Write(EncodeChunk(h, *std::move(buf)), reinterpret_cast<void*>(2));
      Await(&cq, reinterpret_cast<void*>(2));
      EXPECT_LE((*pool)->in_use(), kPoolBuffers);
      offset += n;
    }
    v1::TransferRequest commit;
    commit.mutable_marker()->set_kind(v1::PhaseMarker::COMMIT);
    commit.mutable_marker()->set_sequence(sequence++);
    call->Write(EncodeRequest(commit, &tx_copies), reinterpret_cast<void*>(2));
    Await(&cq, reinterpret_cast<void*>(2));
    call->WritesDone(reinterpret_cast<void*>(3));
    Await(&cq, reinterpret_cast<void*>(3));
    grpc::ByteBuffer resp;
    call->Read(&resp, reinterpret_cast<void*>(4));
    Await(&cq, reinterpret_cast<void*>(4));
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    Await(&cq, reinterpret_cast<void*>(5));
    EXPECT_TRUE(status.ok()) << status.error_message();
    call.reset();
    cq.Shutdown();
    void* tag;
    bool ok;
    while (cq.Next(&tag, &ok)) {
    }
  }
  receiver.join();
  server->Shutdown();
  server_cq->Shutdown();
  void* tag;
  bool ok;
  while (server_cq->Next(&tag, &ok)) {
  }

  EXPECT_TRUE(got.header_seen);
  EXPECT_TRUE(got.commit_seen);
  EXPECT_EQ(got.bytes, state.size());
  EXPECT_EQ(got.chunks, (state.size() + kChunkBytes - 1) / kChunkBytes);
  EXPECT_EQ(got.mismatches, 0u);
  EXPECT_EQ(got.not_zero_copy, 0u);
  EXPECT_EQ(tx_copies.copies(), 0u);
  EXPECT_EQ(rx_copies.copies(), 0u);
  // The pool bounded the sender and got every buffer back from gRPC.
  EXPECT_LE((*pool)->peak_in_use(), kPoolBuffers);
  EXPECT_LE((*pool)->allocated(), kPoolBuffers);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((*pool)->in_use() != 0 && absl::Now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ((*pool)->in_use(), 0u);
}

}  // namespace
}  // namespace migd::transfer
