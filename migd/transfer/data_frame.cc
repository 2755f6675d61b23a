#include "migd/transfer/data_frame.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "migd/base/reason.h"

namespace migd::transfer {
namespace {

void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{p[i]} << (8 * i);
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

absl::Status ProtocolError(const std::string& what) {
  return base::Error(absl::StatusCode::kInvalidArgument,
                     v1::ERROR_REASON_PROTOCOL_ERROR, what);
}

FrameBytes Encode(FrameKind kind, uint32_t device, uint64_t sequence,
                  uint64_t offset, uint32_t crc, uint32_t length) {
  FrameBytes b = {};
  b[0] = static_cast<uint8_t>(kind);
  Put32(&b[4], device);
  Put64(&b[8], sequence);
  Put64(&b[16], offset);
  Put32(&b[24], crc);
  Put32(&b[28], length);
  return b;
}

}  // namespace

FrameBytes EncodeChunkFrame(const ChunkHeader& header, uint32_t length) {
  return Encode(FrameKind::kChunk, header.device, header.sequence,
                header.offset, header.crc32c, length);
}

FrameBytes EncodeStreamEndFrame(uint64_t chunks, uint64_t bytes) {
  return Encode(FrameKind::kStreamEnd, 0, chunks, bytes, 0, 0);
}

absl::StatusOr<Frame> DecodeFrame(const FrameBytes& b) {
  if (b[1] != 0 || b[2] != 0 || b[3] != 0) {
    return ProtocolError("a data frame with its reserved bytes set");
  }
  Frame f;
  const uint32_t device = Get32(&b[4]);
  const uint64_t sequence = Get64(&b[8]);
  const uint64_t offset = Get64(&b[16]);
  const uint32_t crc = Get32(&b[24]);
  const uint32_t length = Get32(&b[28]);
  switch (b[0]) {
    case static_cast<uint8_t>(FrameKind::kChunk):
      f.kind = FrameKind::kChunk;
      f.chunk = ChunkHeader{device, sequence, offset, crc};
      f.length = length;
      return f;
    case static_cast<uint8_t>(FrameKind::kStreamEnd):
      if (length != 0 || device != 0 || crc != 0) {
        return ProtocolError("a STREAM_END frame with chunk fields set");
      }
      f.kind = FrameKind::kStreamEnd;
      f.chunk.sequence = sequence;
      f.end_bytes = offset;
      return f;
    default:
      return ProtocolError(
          absl::StrCat("a data frame of unknown kind ", int{b[0]}));
  }
}

absl::Status WriteMessage(DataConnection& conn,
                          const google::protobuf::MessageLite& message) {
  std::string bytes(4, '\0');
  Put32(reinterpret_cast<uint8_t*>(bytes.data()),
        static_cast<uint32_t>(message.ByteSizeLong()));
  message.AppendToString(&bytes);
  iovec v = {bytes.data(), bytes.size()};
  return conn.WriteAll(absl::MakeConstSpan(&v, 1));
}

absl::Status ReadMessage(DataConnection& conn,
                         google::protobuf::MessageLite* message) {
  uint8_t len[4];
  if (absl::Status s = conn.ReadFull(len, sizeof(len)); !s.ok()) return s;
  const uint32_t n = Get32(len);
  if (n > kMaxDataMessageBytes) {
    return ProtocolError(absl::StrCat("a data channel message of ", n,
                                      " bytes (at most ", kMaxDataMessageBytes,
                                      ")"));
  }
  std::string bytes(n, '\0');
  if (absl::Status s = conn.ReadFull(bytes.data(), n); !s.ok()) {
    return s.code() == absl::StatusCode::kOutOfRange
               ? base::Error(absl::StatusCode::kUnavailable,
                             v1::ERROR_REASON_PEER_UNAVAILABLE,
                             "the connection ended inside a message")
               : s;
  }
  if (!message->ParseFromString(bytes)) {
    return ProtocolError(absl::StrCat("a data channel message that is not a ",
                                      message->GetTypeName()));
  }
  return absl::OkStatus();
}

v1::SessionAborted StatusMessage(const absl::Status& status) {
  v1::SessionAborted m;
  m.set_code(static_cast<int>(status.code()));
  if (!status.ok()) {
    m.set_reason(base::ReasonName(base::ReasonOf(status)));
    m.set_message(std::string(status.message()));
  }
  return m;
}

absl::Status StatusFromMessage(const v1::SessionAborted& m) {
  if (m.code() == 0) return absl::OkStatus();
  absl::StatusCode code = m.code() > 0 && m.code() <= 16
                              ? static_cast<absl::StatusCode>(m.code())
                              : absl::StatusCode::kUnknown;
  absl::Status status(code, m.message());
  const v1::ErrorReason reason = base::ReasonFromName(m.reason());
  if (reason != v1::ERROR_REASON_UNSPECIFIED) {
    status = base::WithReason(status, reason);
  }
  return status;
}

}  // namespace migd::transfer
