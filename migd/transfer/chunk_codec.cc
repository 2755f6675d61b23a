#include "migd/transfer/chunk_codec.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "migd/base/crc32c.h"
#include "migd/base/reason.h"

namespace migd::transfer {
namespace {

// Protobuf wire format: tag = field_number << 3 | wire_type.
constexpr uint8_t kWireVarint = 0;
constexpr uint8_t kWireLen = 2;
constexpr uint8_t kWireFixed32 = 5;
constexpr uint64_t Tag(uint32_t field, uint8_t wire) {
  return (uint64_t{field} << 3) | wire;
}
// TransferRequest.chunk and the DataChunk fields.
constexpr uint32_t kRequestChunkField = 2;
constexpr uint32_t kDeviceField = 1;
constexpr uint32_t kSequenceField = 2;
constexpr uint32_t kOffsetField = 3;
constexpr uint32_t kCrcField = 4;
constexpr uint32_t kDataField = 15;

size_t PutVarint(uint8_t* p, uint64_t v) {
  size_t k = 0;
  while (v >= 0x80) {
    p[k++] = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  p[k++] = static_cast<uint8_t>(v);
  return k;
}

// Writes the prefix into `out` (kMaxChunkPrefixBytes); returns its length.
size_t WritePrefix(const ChunkHeader& h, size_t payload_bytes, uint8_t* out) {
  uint8_t inner[kMaxChunkPrefixBytes];
  size_t k = 0;
  if (h.device != 0) {
    k += PutVarint(inner + k, Tag(kDeviceField, kWireVarint));
    k += PutVarint(inner + k, h.device);
  }
  if (h.sequence != 0) {
    k += PutVarint(inner + k, Tag(kSequenceField, kWireVarint));
    k += PutVarint(inner + k, h.sequence);
  }
  if (h.offset != 0) {
    k += PutVarint(inner + k, Tag(kOffsetField, kWireVarint));
    k += PutVarint(inner + k, h.offset);
  }
  if (h.crc32c != 0) {
    k += PutVarint(inner + k, Tag(kCrcField, kWireFixed32));
    for (int i = 0; i < 4; ++i) {
      inner[k++] = static_cast<uint8_t>(h.crc32c >> (8 * i));
    }
  }
  if (payload_bytes != 0) {
    k += PutVarint(inner + k, Tag(kDataField, kWireLen));
    k += PutVarint(inner + k, payload_bytes);
  }
  size_t n = PutVarint(out, Tag(kRequestChunkField, kWireLen));
  n += PutVarint(out + n, uint64_t{k} + payload_bytes);
  std::memcpy(out + n, inner, k);
  return n + k;
}

// Reads protobuf primitives across the slices of a message.
class SliceCursor {
 public:
  explicit SliceCursor(const std::vector<grpc::Slice>& slices)
      : slices_(slices) {
    SkipEmpty();
  }

  uint64_t consumed() const { return consumed_; }

  bool Byte(uint8_t* b) {
    if (index_ == slices_.size()) return false;
    *b = slices_[index_].begin()[pos_];
    Advance(1);
    return true;
  }

  // At most 10 bytes, as protobuf allows.
  bool Varint(uint64_t* v) {
    uint64_t result = 0;
    for (int i = 0; i < 10; ++i) {
      uint8_t b;
      if (!Byte(&b)) return false;
      result |= uint64_t{b & 0x7fu} << (7 * i);
      if ((b & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return false;
  }

  bool Fixed32(uint32_t* v) {
    uint32_t result = 0;
    for (int i = 0; i < 4; ++i) {
      uint8_t b;
      if (!Byte(&b)) return false;
      result |= uint32_t{b} << (8 * i);
    }
    *v = result;
    return true;
  }

  // Appends views of the next `n` bytes; false when fewer remain.
  bool Views(uint64_t n, std::vector<iovec>* out) {
    while (n > 0) {
      if (index_ == slices_.size()) return false;
      const grpc::Slice& s = slices_[index_];
      const size_t take = std::min<uint64_t>(n, s.size() - pos_);
      out->push_back(iovec{const_cast<uint8_t*>(s.begin() + pos_), take});
      Advance(take);
      n -= take;
    }
    return true;
  }

 private:
  void Advance(size_t n) {
    pos_ += n;
    consumed_ += n;
    if (pos_ == slices_[index_].size()) {
      ++index_;
      pos_ = 0;
      SkipEmpty();
    }
  }
  void SkipEmpty() {
    while (index_ < slices_.size() && slices_[index_].size() == 0) ++index_;
  }

  const std::vector<grpc::Slice>& slices_;
  size_t index_ = 0;
  size_t pos_ = 0;
  uint64_t consumed_ = 0;
};

// Parses a chunk in the canonical layout. False (nothing to report) when the
// bytes are anything else; the caller then lets protobuf decide.
bool ParseCanonicalChunk(const std::vector<grpc::Slice>& slices, uint64_t total,
                         ChunkHeader* header, std::vector<iovec>* payload,
                         size_t* payload_size) {
  SliceCursor c(slices);
  uint64_t tag = 0;
  uint64_t len = 0;
  if (!c.Varint(&tag) || tag != Tag(kRequestChunkField, kWireLen)) return false;
  // The chunk must be the whole request (nothing after it to merge).
  if (!c.Varint(&len) || len != total - c.consumed()) return false;
  ChunkHeader h;
  while (c.consumed() < total) {
    uint64_t v = 0;
    if (!c.Varint(&tag)) return false;
    if (tag == Tag(kDeviceField, kWireVarint)) {
      if (!c.Varint(&v)) return false;
      h.device = static_cast<uint32_t>(v);  // protobuf truncates the same way
    } else if (tag == Tag(kSequenceField, kWireVarint)) {
      if (!c.Varint(&h.sequence)) return false;
    } else if (tag == Tag(kOffsetField, kWireVarint)) {
      if (!c.Varint(&h.offset)) return false;
    } else if (tag == Tag(kCrcField, kWireFixed32)) {
      if (!c.Fixed32(&h.crc32c)) return false;
    } else if (tag == Tag(kDataField, kWireLen)) {
      // Data must be last: its bytes run to the end of the message.
      if (!c.Varint(&v) || v != total - c.consumed()) return false;
      payload->clear();
      if (!c.Views(v, payload)) return false;
      *header = h;
      *payload_size = v;
      return true;
    } else {
      return false;  // an unknown field, or a known one with another type
    }
  }
  payload->clear();
  *header = h;
  *payload_size = 0;
  return true;
}

}  // namespace

ChunkHeader SealChunkHeader(uint32_t device, uint64_t sequence, uint64_t offset,
                            absl::Span<const uint8_t> data) {
  ChunkHeader h;
  h.device = device;
  h.sequence = sequence;
  h.offset = offset;
  h.crc32c = base::Crc32c(data.data(), data.size());
  return h;
}

std::string ChunkPrefix(const ChunkHeader& header, size_t payload_bytes) {
  uint8_t buf[kMaxChunkPrefixBytes];
  size_t n = WritePrefix(header, payload_bytes, buf);
  return std::string(reinterpret_cast<const char*>(buf), n);
}

grpc::ByteBuffer EncodeChunk(const ChunkHeader& header, grpc::Slice payload) {
  uint8_t buf[kMaxChunkPrefixBytes];
  size_t n = WritePrefix(header, payload.size(), buf);
  grpc::Slice parts[2] = {grpc::Slice(buf, n), std::move(payload)};
  return grpc::ByteBuffer(parts, parts[1].size() == 0 ? 1 : 2);
}

grpc::ByteBuffer EncodeChunk(const ChunkHeader& header, PooledBuffer buffer) {
  return EncodeChunk(header, std::move(buffer).ToSlice());
}

grpc::ByteBuffer EncodeRequest(const v1::TransferRequest& request,
                               CopyCounter* copies) {
  if (copies != nullptr && request.has_chunk() &&
      !request.chunk().data().empty()) {
    copies->Count(request.chunk().data().size());
  }
  std::string bytes = request.SerializeAsString();
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

uint32_t DecodedRequest::PayloadCrc32c() const {
  uint32_t crc = 0;
  for (const iovec& v : payload_) {
    crc = base::Crc32cExtend(crc, v.iov_base, v.iov_len);
  }
  return crc;
}

void DecodedRequest::CopyPayloadTo(absl::Span<uint8_t> out,
                                   CopyCounter* copies) const {
  size_t at = 0;
  for (const iovec& v : payload_) {
    const size_t take = std::min(v.iov_len, out.size() - at);
    std::memcpy(out.data() + at, v.iov_base, take);
    at += take;
  }
  if (copies != nullptr && payload_size_ != 0) copies->Count(at);
}

const v1::TransferRequest& DecodedRequest::message() const {
  return message_ != nullptr ? *message_
                             : v1::TransferRequest::default_instance();
}

absl::StatusOr<DecodedRequest> DecodeRequest(const grpc::ByteBuffer& buffer,
                                             CopyCounter* copies) {
  DecodedRequest out;
  grpc::Status dumped = buffer.Dump(&out.slices_);
  if (!dumped.ok()) {
    return base::Error(
        absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_PROTOCOL_ERROR,
        absl::StrCat("transfer message unreadable: ", dumped.error_message()));
  }
  uint64_t total = 0;
  for (const grpc::Slice& s : out.slices_) total += s.size();
  if (ParseCanonicalChunk(out.slices_, total, &out.header_, &out.payload_,
                          &out.payload_size_)) {
    out.is_chunk_ = true;
    out.zero_copy_ = true;
    return out;
  }

  // Not a chunk in the canonical layout: protobuf parses it (from the slices;
  // the ByteBuffer copy only takes references).
  out.payload_.clear();
  auto message = std::make_unique<v1::TransferRequest>();
  grpc::ByteBuffer refs(buffer);
  grpc::ProtoBufferReader reader(&refs);
  if (!reader.status().ok() || !message->ParseFromZeroCopyStream(&reader)) {
    return base::Error(absl::StatusCode::kInvalidArgument,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       absl::StrCat("a ", total,
                                    "-byte transfer message is not a "
                                    "migd.v1.TransferRequest"));
  }
  out.slices_.clear();
  if (message->has_chunk()) {
    const v1::DataChunk& c = message->chunk();
    out.is_chunk_ = true;
    out.header_.device = c.device();
    out.header_.sequence = c.sequence();
    out.header_.offset = c.offset();
    out.header_.crc32c = c.crc32c();
    out.payload_size_ = c.data().size();
    if (!c.data().empty()) {
      out.payload_.push_back(
          iovec{const_cast<char*>(c.data().data()), c.data().size()});
      if (copies != nullptr) copies->Count(c.data().size());
    }
  }
  out.message_ = std::move(message);
  return out;
}

DecodedRequest ReceivedChunk(const ChunkHeader& header, PooledBuffer payload) {
  DecodedRequest out;
  out.is_chunk_ = true;
  out.zero_copy_ = true;
  out.header_ = header;
  out.payload_size_ = payload.size();
  grpc::Slice slice = std::move(payload).ToSlice();
  out.payload_.push_back({const_cast<uint8_t*>(slice.begin()), slice.size()});
  out.slices_.push_back(std::move(slice));
  return out;
}

}  // namespace migd::transfer
