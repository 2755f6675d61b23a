// migd/transfer/chunk_codec.h
//
// Zero-copy encoding and decoding of transfer messages. A DataChunk's payload
// is the bulk of a session and is never copied in user space on either side:
//
//  - Sending: EncodeChunk builds a grpc::ByteBuffer of two slices, a small
//    prefix holding the serialized TransferRequest/DataChunk header fields and
//    the tag and length of DataChunk.data (field 15, deliberately last), then
//    the payload slice as it is (typically a PooledBuffer lent to gRPC). The
//    bytes on the wire are exactly what protobuf serializes for the same
//    message, so a receiver may parse them either way.
//  - Receiving: DecodeRequest walks the slices of a received ByteBuffer
//    (ByteBuffer::Dump gives refcounted views of gRPC's read buffers), parses
//    the header fields from the first bytes, which may span slices, and
//    returns the payload as (pointer, length) views into those slices, ready
//    for writev. The DecodedRequest holds the slices, so the views stay valid
//    as long as it lives.
//
// Every other message (session header, markers) is serialized and parsed by
// protobuf as usual; so is a chunk whose bytes are not in the canonical layout
// (fields out of order, unknown fields): correct, but its payload is copied,
// and a CopyCounter records that copy. The counter belongs to its caller (one
// per agent side, or per job), so tests and the benchmark can assert that the
// data path made no copies.

#ifndef MIGD_TRANSFER_CHUNK_CODEC_H_
#define MIGD_TRANSFER_CHUNK_CODEC_H_

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "migd/transfer/buffer_pool.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::transfer {

// Full name of the control stream's method, which both sides register by
// hand to carry raw ByteBuffers.
inline constexpr char kTransferMethod[] = "/migd.v1.TransferService/Transfer";

// Counts user-space copies of chunk payload bytes. Thread-safe.
class CopyCounter {
 public:
  // Records one copy of `bytes` payload bytes.
  void Count(uint64_t bytes) {
    copies_.fetch_add(1, std::memory_order_relaxed);
    bytes_.fetch_add(bytes, std::memory_order_relaxed);
  }
  // Copies made, and payload bytes copied, so far.
  uint64_t copies() const { return copies_.load(std::memory_order_relaxed); }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> copies_{0};
  std::atomic<uint64_t> bytes_{0};
};

// The DataChunk fields other than data.
struct ChunkHeader {
  uint32_t device = 0;
  uint64_t sequence = 0;
  uint64_t offset = 0;
  uint32_t crc32c = 0;

  bool operator==(const ChunkHeader& o) const {
    return device == o.device && sequence == o.sequence && offset == o.offset &&
           crc32c == o.crc32c;
  }
};

// A header for `data`: the given fields and the CRC32C of data.
ChunkHeader SealChunkHeader(uint32_t device, uint64_t sequence, uint64_t offset,
                            absl::Span<const uint8_t> data);

// Largest prefix EncodeChunk emits (tags, lengths and varints at their
// longest).
inline constexpr size_t kMaxChunkPrefixBytes = 64;

// The serialized bytes of TransferRequest{chunk: DataChunk{header, data}} that
// precede the `payload_bytes` bytes of data. Fields equal to 0 are left out,
// as protobuf does; so is the data tag when payload_bytes is 0.
std::string ChunkPrefix(const ChunkHeader& header, size_t payload_bytes);

// TransferRequest{chunk: DataChunk{header, data = payload}} as a ByteBuffer of
// the prefix and `payload` (not copied). A slice made by
// PooledBuffer::ToSlice returns its buffer to the pool once gRPC is done with
// the message.
grpc::ByteBuffer EncodeChunk(const ChunkHeader& header, grpc::Slice payload);

// The same for the filled part of a pooled buffer (buffer.size() bytes), which
// goes back to its pool when gRPC releases it.
grpc::ByteBuffer EncodeChunk(const ChunkHeader& header, PooledBuffer buffer);

// Any TransferRequest, serialized by protobuf (session header, markers). A
// chunk with data goes this way only by mistake: its payload copy is counted
// on `copies` (may be null).
grpc::ByteBuffer EncodeRequest(const v1::TransferRequest& request,
                               CopyCounter* copies);

// A received TransferRequest. Move-only: payload views point into the slices
// (or, on the fallback path, into the parsed message) it owns.
class DecodedRequest {
 public:
  DecodedRequest() = default;
  DecodedRequest(DecodedRequest&&) = default;
  DecodedRequest& operator=(DecodedRequest&&) = default;
  DecodedRequest(const DecodedRequest&) = delete;
  DecodedRequest& operator=(const DecodedRequest&) = delete;

  // True for a DataChunk (on either path).
  bool is_chunk() const { return is_chunk_; }
  // True when the payload views gRPC's own buffers (no copy was made).
  bool zero_copy() const { return zero_copy_; }

  // The chunk's fields; valid when is_chunk().
  const ChunkHeader& header() const { return header_; }
  // The chunk's data as views, in order, none empty; valid while this object
  // lives. Hand them to writev.
  absl::Span<const iovec> payload() const { return payload_; }
  size_t payload_size() const { return payload_size_; }
  // CRC32C of the payload (for StreamChecker-style integrity checks).
  uint32_t PayloadCrc32c() const;
  // Copies the payload to `out` (exactly payload_size() bytes), counting the
  // copy on `copies` (may be null). For consumers that cannot take iovecs.
  void CopyPayloadTo(absl::Span<uint8_t> out, CopyCounter* copies) const;

  // The message for everything but a zero-copy chunk: the session header, a
  // marker, or a chunk parsed by protobuf (with its data). Empty (no kind) for
  // a zero-copy chunk.
  const v1::TransferRequest& message() const;

 private:
  friend absl::StatusOr<DecodedRequest> DecodeRequest(
      const grpc::ByteBuffer& buffer, CopyCounter* copies);
  friend DecodedRequest ReceivedChunk(const ChunkHeader& header,
                                      PooledBuffer payload);

  bool is_chunk_ = false;
  bool zero_copy_ = false;
  ChunkHeader header_;
  std::vector<grpc::Slice> slices_;  // keep the viewed memory alive
  std::vector<iovec> payload_;
  size_t payload_size_ = 0;
  // Heap-held so payload views into it survive moves.
  std::unique_ptr<v1::TransferRequest> message_;
};

// Decodes a received TransferRequest. A chunk in the canonical layout (what
// EncodeChunk and protobuf produce: TransferRequest holding only `chunk`,
// DataChunk fields 1-4 in any order before data, data last) is decoded without
// copying its payload. Anything else is parsed by protobuf; a chunk's payload
// copy on that path is counted on `copies` (may be null). kInvalidArgument
// when the bytes are not a TransferRequest.
absl::StatusOr<DecodedRequest> DecodeRequest(const grpc::ByteBuffer& buffer,
                                             CopyCounter* copies);

// A chunk received on the data channel: `header` and the filled part of
// `payload` (not empty), the buffer it was read into. No copy: the buffer
// goes back to its pool when the chunk is destroyed.
DecodedRequest ReceivedChunk(const ChunkHeader& header, PooledBuffer payload);

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_CHUNK_CODEC_H_
