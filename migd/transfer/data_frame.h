// migd/transfer/data_frame.h
//
// What travels on a data channel connection (data_connection.h), in order:
//
//   source -> destination   message: SessionHeader (stream_index >= 1)
//   destination -> source   message: TransferResponse: accepted, or
//                           aborted saying why not, then close
//   source -> destination   frames: CHUNK ... CHUNK, then STREAM_END
//   destination -> source   message: SessionAborted, code 0 (OK) once every
//                           chunk passed its checks and reached the job, or
//                           the stream's error
//
// A message is a 4-byte little-endian length and that many bytes of
// protobuf (at most kMaxDataMessageBytes). A frame is a fixed 32-byte header,
// little-endian,
//
//   u8 kind | u8[3] zero | u32 device | u64 sequence | u64 offset |
//   u32 crc32c | u32 length
//
// followed, for a CHUNK, by `length` bytes of payload. CHUNK carries the
// DataChunk fields (chunk_codec.h's ChunkHeader); STREAM_END carries the
// number of chunks in `sequence` and their payload bytes in `offset`, as the
// protocol's STREAM_END marker does. Anything else is a protocol error.
// There is nothing else on the wire: TCP (or TLS) frames the bytes, the
// header splits devices and chunks, the CRC32C checks them.

#ifndef MIGD_TRANSFER_DATA_FRAME_H_
#define MIGD_TRANSFER_DATA_FRAME_H_

#include <array>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/data_connection.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::transfer {

inline constexpr size_t kFrameHeaderBytes = 32;
inline constexpr uint32_t kMaxDataMessageBytes = 64 << 10;

enum class FrameKind : uint8_t { kChunk = 1, kStreamEnd = 2 };

struct Frame {
  FrameKind kind = FrameKind::kChunk;
  ChunkHeader chunk;       // kChunk: the fields; kStreamEnd: sequence = chunks
  uint64_t end_bytes = 0;  // kStreamEnd: payload bytes of the stream
  uint32_t length = 0;     // kChunk: payload bytes that follow
};

using FrameBytes = std::array<uint8_t, kFrameHeaderBytes>;

FrameBytes EncodeChunkFrame(const ChunkHeader& header, uint32_t length);
FrameBytes EncodeStreamEndFrame(uint64_t chunks, uint64_t bytes);

// kInvalidArgument (PROTOCOL_ERROR) naming what is wrong: an unknown kind,
// reserved bytes not zero, a STREAM_END with a length.
absl::StatusOr<Frame> DecodeFrame(const FrameBytes& bytes);

// A length-prefixed protobuf message.
absl::Status WriteMessage(DataConnection& conn,
                          const google::protobuf::MessageLite& message);
// kInvalidArgument (PROTOCOL_ERROR) for a length over kMaxDataMessageBytes
// or bytes that do not parse; the connection's error otherwise.
absl::Status ReadMessage(DataConnection& conn,
                         google::protobuf::MessageLite* message);

// A stream's final word (SessionAborted with code 0 for OK), both ways.
v1::SessionAborted StatusMessage(const absl::Status& status);
absl::Status StatusFromMessage(const v1::SessionAborted& message);

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_DATA_FRAME_H_
