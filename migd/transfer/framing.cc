#include "migd/transfer/framing.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "migd/base/reason.h"

namespace migd::transfer {
namespace {

absl::Status Corrupted(absl::string_view message) {
  return base::Error(absl::StatusCode::kDataLoss,
                     v1::ERROR_REASON_STREAM_CORRUPTED, message);
}

absl::Status Protocol(absl::string_view message) {
  return base::Error(absl::StatusCode::kInvalidArgument,
                     v1::ERROR_REASON_PROTOCOL_ERROR, message);
}

}  // namespace

StreamChecker::StreamChecker(uint32_t num_devices)
    : ended_(num_devices, false), initial_ended_(num_devices, false) {}

absl::Status StreamChecker::CheckSequence(uint64_t sequence, const char* what) {
  if (sequence != next_sequence_) {
    return Corrupted(absl::StrCat(
        what, " sequence ", sequence, ", expected ", next_sequence_,
        sequence > next_sequence_ ? " (messages lost)"
                                  : " (duplicate or reordered)"));
  }
  return absl::OkStatus();
}

absl::Status StreamChecker::CheckDevice(uint32_t device,
                                        const char* what) const {
  if (device >= ended_.size()) {
    return Protocol(absl::StrCat(what, " for device index ", device,
                                 ", session has ", ended_.size(), " devices"));
  }
  if (ended_[device]) {
    return Protocol(
        absl::StrCat(what, " for device index ", device, " after its end"));
  }
  return absl::OkStatus();
}

absl::Status StreamChecker::CheckChunk(const ChunkHeader& chunk, uint64_t size,
                                       uint32_t payload_crc32c) {
  // Validate everything before accounting, so a rejected chunk changes nothing.
  if (absl::Status s = CheckSequence(chunk.sequence, "chunk"); !s.ok()) {
    return s;
  }
  if (chunk.device >= ended_.size()) {
    return Protocol(absl::StrCat("chunk for device index ", chunk.device,
                                 ", session has ", ended_.size(), " devices"));
  }
  if (payload_crc32c != chunk.crc32c) {
    return Corrupted(absl::StrFormat(
        "chunk %d of device %d (offset %d, %d bytes): CRC32C %08x, expected "
        "%08x",
        chunk.sequence, chunk.device, chunk.offset, size, payload_crc32c,
        chunk.crc32c));
  }
  ++next_sequence_;
  chunk_bytes_ += size;
  return absl::OkStatus();
}

absl::Status StreamChecker::CheckStreamEnd(
    const v1::PhaseMarker& marker) const {
  if (marker.kind() != v1::PhaseMarker::STREAM_END) {
    return Protocol("a data stream carries only chunks and its STREAM_END");
  }
  if (marker.sequence() != next_sequence_ ||
      marker.total_bytes() != chunk_bytes_) {
    return Corrupted(
        absl::StrCat("STREAM_END counts ", marker.sequence(), " chunks of ",
                     marker.total_bytes(), " bytes, the stream delivered ",
                     next_sequence_, " chunks of ", chunk_bytes_, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status StreamChecker::CheckMarker(const v1::PhaseMarker& marker) {
  if (absl::Status s = CheckSequence(marker.sequence(), "marker"); !s.ok()) {
    return s;
  }
  switch (marker.kind()) {
    case v1::PhaseMarker::STOP_COPY:
      if (stop_copy_seen_) return Protocol("second STOP_COPY marker");
      stop_copy_seen_ = true;
      break;
    case v1::PhaseMarker::INITIAL_DATA_END:
      if (absl::Status s = CheckDevice(marker.device(), "INITIAL_DATA_END");
          !s.ok()) {
        return s;
      }
      if (stop_copy_seen_ || initial_ended_[marker.device()]) {
        return Protocol(absl::StrCat("INITIAL_DATA_END for device index ",
                                     marker.device(),
                                     " repeated or after STOP_COPY"));
      }
      initial_ended_[marker.device()] = true;
      break;
    case v1::PhaseMarker::DEVICE_END:
      if (absl::Status s = CheckDevice(marker.device(), "DEVICE_END");
          !s.ok()) {
        return s;
      }
      ended_[marker.device()] = true;
      break;
    case v1::PhaseMarker::ABORT:
      break;  // valid at any point of a session
    case v1::PhaseMarker::STREAM_END:
      return Protocol(
          "STREAM_END on the control stream (it ends data streams)");
    case v1::PhaseMarker::COMMIT:
      for (uint32_t d = 0; d < ended_.size(); ++d) {
        if (!ended_[d]) {
          return Protocol(
              absl::StrCat("COMMIT before device index ", d, " ended"));
        }
      }
      break;
    default:
      return Protocol(absl::StrCat("unknown marker kind ",
                                   static_cast<int>(marker.kind())));
  }
  ++next_sequence_;
  return absl::OkStatus();
}

}  // namespace migd::transfer
