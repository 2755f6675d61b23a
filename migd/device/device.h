// migd/device/device.h
//
// The device contract every backend (kernel VFIO, emulated) implements: the
// VFIO migration uAPI v2 expressed as C++ calls. Callers (the migration engine)
// never know which backend they drive; the emulated backend must behave exactly
// as a kernel variant driver does, arcs, refusals and stream semantics
// included.
//
// Errors name the device (and, for SetState, the arc that failed), so callers
// pass them on without adding the name again.
//
// Thread-safety: a Device may be called from several threads; each call is
// atomic with respect to the others. A DataStream is used by one thread at a
// time.

#ifndef MIGD_DEVICE_DEVICE_H_
#define MIGD_DEVICE_DEVICE_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "migd/vfio/uapi.h"

namespace migd::device {

// VFIO_MIG_GET_PRECOPY_INFO.
struct PrecopyInfo {
  uint64_t initial_bytes = 0;
  uint64_t dirty_bytes = 0;
};

// One IOVA range for DMA dirty logging (page aligned).
struct IovaRange {
  uint64_t iova = 0;
  uint64_t length = 0;
};

// What one DataStream::Read produced, apart from an error. The temporary end
// of pre-copy data is a result of its own, never an absl::Status: an error
// code can also come from a real fault (a device that went away), and a fault
// must fail the job, not end a pre-copy pass (QEMU's vfio_save_block tests
// errno == ENOMSG itself for the same reason).
struct ReadResult {
  enum class Kind {
    // `bytes` bytes were read: > 0, or 0 when the buffer was empty.
    kData,
    // read() returned 0: the end of the stream in STOP_COPY. In PRE_COPY
    // states some drivers return 0 at the temporary end instead of ENOMSG,
    // so callers decide with PrecopyInfo and the state, never by this alone.
    kEndOfStream,
    // The kernel's ENOMSG, in PRE_COPY states only: the temporary end of the
    // data the device has now. More may come while it runs, and the rest
    // comes in STOP_COPY.
    kNoDataNow,
  };

  static ReadResult Data(size_t bytes) { return {Kind::kData, bytes}; }
  static ReadResult EndOfStream() { return {Kind::kEndOfStream, 0}; }
  static ReadResult NoDataNow() { return {Kind::kNoDataNow, 0}; }

  bool operator==(const ReadResult&) const = default;

  Kind kind = Kind::kData;
  size_t bytes = 0;  // kData only
};

// "data(4096)", "end of stream", "no data now": for logs and test failures.
std::string ReadResultText(const ReadResult& result);

// A save or load session: the data fd the kernel returns from an arc that
// starts one. The byte stream is opaque; order matters, segmentation does not.
// The session ends when the device leaves the saving/resuming states; calls
// after that fail with kFailedPrecondition.
class DataStream {
 public:
  virtual ~DataStream() = default;

  // Save side. Reads up to buf.size() bytes (see ReadResult for the three
  // outcomes). An error is a fault (ENODEV: the device went away; EBUSY, EIO,
  // ...), never a protocol signal, and names the device.
  virtual absl::StatusOr<ReadResult> Read(absl::Span<uint8_t> buf) = 0;

  // Load side. Writes up to data.size() bytes and returns how many were taken.
  // An error is fatal to the load (the device keeps part of the bytes); the
  // RESUMING -> STOP arc then fails.
  virtual absl::StatusOr<size_t> Write(absl::Span<const uint8_t> data) = 0;

  // Load side. Writes every byte of `data`, in order, as one stream: how a
  // received chunk (gRPC's own buffers, in pieces) reaches the device without
  // being gathered first. The default writes piece by piece; a backend may
  // use writev(2).
  virtual absl::Status WriteAll(absl::Span<const iovec> data);

  // VFIO_MIG_GET_PRECOPY_INFO: only in PRE_COPY / PRE_COPY_P2P, else
  // kFailedPrecondition.
  virtual absl::StatusOr<PrecopyInfo> GetPrecopyInfo() = 0;
};

class Device {
 public:
  virtual ~Device() = default;

  // Name the agent knows the device by (unique per agent).
  virtual const std::string& name() const = 0;

  // Backend kind: "emulated", "vfio".
  virtual std::string kind() const = 0;

  // VFIO_DEVICE_FEATURE_MIGRATION: the VFIO_MIGRATION_* bits.
  virtual absl::StatusOr<vfio::MigFlags> GetFlags() = 0;

  // VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE (GET).
  virtual absl::StatusOr<vfio::MigState> GetState() = 0;

  // VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE (SET): moves to `target` along the
  // kernel's arcs (vfio::PlanArcs). Returns a new DataStream when the walk
  // opens a save or load session (-> STOP_COPY from STOP, -> PRE_COPY*,
  // -> RESUMING), nullptr otherwise (PRE_COPY* -> STOP_COPY keeps the same
  // session). On failure the error names the arc that failed; the device is
  // left in the state before that arc, or in ERROR when the driver says so
  // (GetState tells).
  virtual absl::StatusOr<std::unique_ptr<DataStream>> SetState(
      vfio::MigState target) = 0;

  // VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: estimated stop-copy length in bytes.
  virtual absl::StatusOr<uint64_t> GetStopCopySize() = 0;

  // VFIO_DEVICE_FEATURE_DMA_LOGGING_START/REPORT/STOP. Report fills `bitmap`
  // with one bit per page of [iova, iova+length) (LSB first in each word) and
  // clears what it reported. kUnimplemented when the device has no DMA logging.
  virtual absl::Status StartDmaLogging(
      uint64_t page_size, const std::vector<IovaRange>& ranges) = 0;
  virtual absl::Status ReportDmaLogging(uint64_t iova, uint64_t length,
                                        uint64_t page_size,
                                        std::vector<uint64_t>* bitmap) = 0;
  virtual absl::Status StopDmaLogging() = 0;

  // VFIO_DEVICE_RESET: the only way out of ERROR; lands in RUNNING and ends any
  // data session.
  virtual absl::Status Reset() = 0;

  // A digest of the device's internal state ("crc32c:xxxxxxxx"), for backends
  // that can compute one; kUnimplemented otherwise. Used to prove a destination
  // holds exactly the source's state.
  virtual absl::StatusOr<std::string> StateDigest() = 0;

  // OK when the device can take part in a migration at all; else
  // kFailedPrecondition naming the device and saying why (a kernel device
  // whose driver offers no VFIO migration: its flags are 0). Migrations
  // check it before they claim the device. The default: OK.
  virtual absl::Status CheckMigratable() { return absl::OkStatus(); }
};

inline std::string ReadResultText(const ReadResult& result) {
  switch (result.kind) {
    case ReadResult::Kind::kData:
      return "data(" + std::to_string(result.bytes) + ")";
    case ReadResult::Kind::kEndOfStream:
      return "end of stream";
    case ReadResult::Kind::kNoDataNow:
      return "no data now";
  }
  return "?";
}

inline absl::Status DataStream::WriteAll(absl::Span<const iovec> data) {
  for (const iovec& v : data) {
    absl::Span<const uint8_t> left(static_cast<const uint8_t*>(v.iov_base),
                                   v.iov_len);
    while (!left.empty()) {
      absl::StatusOr<size_t> n = Write(left);
      if (!n.ok()) return n.status();
      if (*n == 0) return absl::InternalError("data stream took no bytes");
      left.remove_prefix(*n);
    }
  }
  return absl::OkStatus();
}

}  // namespace migd::device

#endif  // MIGD_DEVICE_DEVICE_H_
