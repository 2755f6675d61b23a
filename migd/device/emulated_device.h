// migd/device/emulated_device.h
//
// A userspace device that implements the full Device contract the way a kernel
// variant driver does: advertised flags, the planner's arcs one at a time,
// save/load sessions with the uAPI's stream semantics (ENOMSG at the temporary
// end of pre-copy data, ReadResult::NoDataNow(); EOF at the end of stop-copy,
// ReadResult::EndOfStream(); validation at RESUMING -> STOP), DMA dirty
// logging and fault knobs. Its state is
// deterministic content generated from a seed, so a test can prove a
// destination holds exactly the source's state by comparing StateDigest().
// It backs the demo, the loopback tests and the benchmarks; the kernel path is
// tested separately in the VM tier.
//
// Stream format (the device's own; opaque to migd; little-endian):
//   header  "MIGDEMU1" | u32 format (state_format) | u64 state_size
//   PAGE    u8 1 | u64 offset | u32 length | length bytes of content
//   END     u8 2 | u32 CRC32C of the whole content | u64 state_size
// PAGE records may repeat an offset (a page re-sent after the device dirtied
// it during pre-copy); the loader applies records in stream order, so the last
// copy wins. END is the last record; nothing may follow it.
//
// Workload. A device configured with a dirty_rate or a dma_rate owns one
// background thread (started by Create, joined by the destructor) that acts
// as the running device would: it changes the device's own state and
// DMA-writes guest memory at those rates, in steps of a few milliseconds. It
// takes the same lock as every call, so it never acts after SetState has left
// the states it acts in: the content a STOP_COPY session saves is final, and
// the destination ends with exactly that content. A device without rates has
// no thread and changes only through the Simulate* hooks.
//
// DMA write log (dma_write_log): the ground truth of the dirty-page service.
// The file is created (truncated) by Create. Every DMA write the device
// performs while DMA logging is started, from the workload or from
// SimulateDmaWrite, inside the started ranges or not, is one line
//   0x<iova> 0x<length>
// (lower-case hex, 0x-prefixed, both fields; the write covers [iova,
// iova+length)). StartDmaLogging appends "# start page_size=0x<n>" and
// StopDmaLogging "# stop" (only when logging was started); readers skip lines
// starting with '#' or use them to split logging sessions. Writes while
// logging is not started are neither logged nor in the file. Lines reach the
// file (write(2), no user-space buffering) before the call or workload step
// that performed the writes releases the device, so they are in the file
// before the device leaves a running state and before any DMA logging report
// that includes them.

#ifndef MIGD_DEVICE_EMULATED_DEVICE_H_
#define MIGD_DEVICE_EMULATED_DEVICE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "migd/device/device.h"
#include "migd/vfio/uapi.h"

namespace migd::device {

// One single-step arc, as the driver sees it (after the planner skipped the
// states the flags do not allow).
struct MigArc {
  vfio::MigState from = vfio::MigState::kStop;
  vfio::MigState to = vfio::MigState::kStop;
};

// A fault of the save stream's reads (EmulatedDeviceConfig::fail_read).
struct ReadFault {
  uint64_t offset = 0;  // stream offset the reads fail from
  int err = 0;          // the errno the kernel's read() would fail with
};

// A slow arc (EmulatedDeviceConfig::slow_arc).
struct SlowArc {
  MigArc arc;
  absl::Duration duration;  // how long the arc takes
};

// The longest EmulatedDeviceConfig::slow_arc duration.
inline constexpr absl::Duration kMaxSlowArc = absl::Minutes(1);

struct EmulatedDeviceConfig {
  // [A-Za-z0-9._:-]{1,64}.
  std::string name;
  // Bytes of device state; > 0 and <= EmulatedDevice::kMaxStateSize.
  uint64_t state_size = uint64_t{1} << 20;
  // Selects the content; equal (seed, state_size) give equal content.
  uint64_t seed = 0;
  // The version of the stream format this device writes and reads, > 0: a
  // device loads only a stream of its own format (a firmware that changed
  // its state layout, as real devices do). Plugins compare it before any
  // state moves.
  uint32_t state_format = 1;
  // VFIO_MIGRATION_* bits; must include STOP_COPY.
  vfio::MigFlags flags = vfio::kMigStopCopy | vfio::kMigP2P;

  // Fault knobs, for tests of the agent's recovery.
  //
  // Every time the device takes this arc, the arc fails and the device goes to
  // ERROR. Must be an arc the device can take with `flags`.
  std::optional<MigArc> fail_arc;
  // Every save stream has the byte at this stream offset flipped, so the
  // destination rejects the state (at the latest at RESUMING -> STOP). Must be
  // inside a stop-copy stream (< EmulatedDevice::FullStreamSize(state_size)).
  std::optional<uint64_t> corrupt_stream_at;
  // Every save stream's reads fail from stream offset fail_read->offset on,
  // as the kernel's read() does with fail_read->err (ENODEV: the device went
  // away; EBUSY; EIO): the read that reaches the offset returns the bytes
  // before it, every later one fails, in PRE_COPY and STOP_COPY alike, with
  // the error the kernel backend gives for that errno (VfioErrnoError,
  // kDataRead) plus a note naming the knob. The offset must be inside a
  // stop-copy stream (< EmulatedDevice::FullStreamSize(state_size)); the
  // errno must be a fault: not ENOMSG (the temporary end of pre-copy data, a
  // ReadResult) nor EINTR/EAGAIN (retried by a reader).
  std::optional<ReadFault> fail_read;
  // Every time the device takes slow_arc->arc, the arc takes
  // slow_arc->duration (then succeeds, or fails as it otherwise would), the
  // way a real driver's RESUMING -> STOP validation or resume may take
  // seconds. The device is busy meanwhile, as a driver holding its state
  // mutex is: every other call on it waits for the arc to end. Must be an arc
  // the device can take with `flags` (as fail_arc), with a duration in
  // (0, kMaxSlowArc].
  std::optional<SlowArc> slow_arc;
  // Bytes per second the device loads at; 0: as fast as it can. Every write
  // to a load session (RESUMING) waits data.size() / load_rate before the
  // device takes the bytes, the way a driver that applies state as it
  // arrives keeps its writer waiting: the agent on the destination holds the
  // chunk meanwhile and reads nothing more from that stream, so the source
  // can be done sending long before the destination has loaded. The device
  // is not busy while a write waits (its other calls go on), and the end of
  // the load session (a reset, an arc) ends the wait at once.
  uint64_t load_rate = 0;

  // Workload (see the file comment), for pre-copy convergence and the
  // dirty-page service.
  //
  // Bytes of its own state the device changes per second while in a running
  // state (RUNNING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P); 0: none. At most
  // EmulatedDevice::kMaxDirtyRate. The device rewrites one PAGE record's worth
  // of content (kPageRecordPayload bytes; the last record may be shorter) at a
  // time with new pseudo-random bytes, a few milliseconds' worth per step,
  // then moves on to another record chosen pseudo-randomly from the seed and a
  // counter (records may repeat). Changes take the SimulateStateWrite path, so
  // in pre-copy about dirty_rate / kPageRecordPayload already-sent records a
  // second are queued for re-sending (PrecopyInfo::dirty_bytes), fewer once
  // the queue holds most records.
  uint64_t dirty_rate = 0;
  // DMA writes per second, each one page of the DMA logging page size at a
  // pseudo-random page (seed and a counter) inside the started ranges, while
  // DMA logging is started and the device is in RUNNING or PRE_COPY; 0: none.
  // At most EmulatedDevice::kMaxDmaRate. The emulated device initiates this
  // DMA only in those two states: not while stopped, and, to keep it simple,
  // not in the P2P quiesced states either (where a real device may still DMA
  // to memory, just not to peers). Writes take the SimulateDmaWrite path.
  uint64_t dma_rate = 0;
  // When non-empty, the file every logged DMA write is appended to (see the
  // file comment). One file per device; its directory must exist.
  std::string dma_write_log;
  // False: the device has no DMA dirty logging, like a driver without the
  // DMA_LOGGING features: Start/Report/StopDmaLogging fail with
  // kUnimplemented, so logging never starts (no dma_rate workload, nothing in
  // dma_write_log) and a tracker must treat every page as dirty.
  bool dma_logging = true;
};

// True when `name` matches [A-Za-z0-9._:-]{1,64}.
bool IsValidEmulatedDeviceName(absl::string_view name);

// OK when Create would accept `config`; kInvalidArgument naming the field
// otherwise.
absl::Status ValidateEmulatedDeviceConfig(const EmulatedDeviceConfig& config);

class EmulatedDevice final : public Device {
 public:
  // Content is held in memory (twice during a load); keep it bounded.
  static constexpr uint64_t kMaxStateSize = uint64_t{4} << 30;

  // Bytes per PAGE record: the granularity of content transfer and of
  // pre-copy re-sends.
  static constexpr uint64_t kPageRecordPayload = 64 * 1024;

  // Workload rate limits (EmulatedDeviceConfig::dirty_rate, dma_rate).
  static constexpr uint64_t kMaxDirtyRate = uint64_t{16} << 30;  // bytes/s
  static constexpr uint64_t kMaxDmaRate = 1000 * 1000;           // writes/s

  // Validates `config` (kInvalidArgument), generates the content, creates the
  // dma_write_log file (its errno as a status, naming the path, when that
  // fails) and starts the workload thread when a rate is set. The device
  // starts in RUNNING, so a dirty_rate workload starts changing the content
  // at once.
  static absl::StatusOr<std::unique_ptr<EmulatedDevice>> Create(
      EmulatedDeviceConfig config);

  // Stops and joins the workload thread and ends any data session: calls on
  // its DataStream fail afterwards.
  ~EmulatedDevice() override;

  EmulatedDevice(const EmulatedDevice&) = delete;
  EmulatedDevice& operator=(const EmulatedDevice&) = delete;

  // Length of a save stream that carries the content once (header, PAGE
  // records, END): what STOP -> STOP_COPY produces.
  static uint64_t FullStreamSize(uint64_t state_size);

  const EmulatedDeviceConfig& config() const { return config_; }

  // Device.
  const std::string& name() const override { return config_.name; }
  std::string kind() const override { return "emulated"; }
  absl::StatusOr<vfio::MigFlags> GetFlags() override;
  absl::StatusOr<vfio::MigState> GetState() override;
  // Walks vfio::PlanArcs one arc at a time. A refused target leaves the state
  // unchanged (the planner's code, kFailedPrecondition). A failing arc
  // (fail_arc, or RESUMING -> STOP rejecting the loaded state) puts the device
  // in ERROR and returns kInternal (fail_arc) or kDataLoss/kInvalidArgument
  // (load validation), naming the device and the arc.
  absl::StatusOr<std::unique_ptr<DataStream>> SetState(
      vfio::MigState target) override;
  // During a save session: the bytes the stream will still carry up to and
  // including END. Otherwise FullStreamSize(state_size).
  absl::StatusOr<uint64_t> GetStopCopySize() override;
  // page_size: a power of two >= 4096. Ranges: 1..256, non-empty, aligned to
  // page_size, non-overlapping; else kInvalidArgument. kFailedPrecondition when
  // already started. The three DMA logging calls fail with kUnimplemented when
  // the config says dma_logging = false.
  absl::Status StartDmaLogging(uint64_t page_size,
                               const std::vector<IovaRange>& ranges) override;
  // Bit i of `bitmap` covers [iova + i*page_size, iova + (i+1)*page_size);
  // page_size is a power of two >= 4096 (it may differ from the logging page
  // size). Clears every logged page it reported. kFailedPrecondition before
  // Start.
  absl::Status ReportDmaLogging(uint64_t iova, uint64_t length,
                                uint64_t page_size,
                                std::vector<uint64_t>* bitmap) override;
  // Idempotent, like the kernel drivers.
  absl::Status StopDmaLogging() override;
  absl::Status Reset() override;
  // "crc32c:%08x": CRC32C of the content followed by state_size as a
  // little-endian u64.
  absl::StatusOr<std::string> StateDigest() override;

  // Test hooks standing in for a running device's activity.
  //
  // The device DMA-writes [iova, iova+length) of guest memory. Only in a
  // running state (kFailedPrecondition otherwise). While logging, the pages of
  // the started ranges it touches become dirty; the rest is not logged; the
  // write goes to dma_write_log (kInternal, after the pages were marked, when
  // that file cannot be written).
  absl::Status SimulateDmaWrite(uint64_t iova, uint64_t length);
  // The device changes its own state bytes [offset, offset+length). Only in a
  // running state. During pre-copy, the PAGE records already sent that cover
  // the range are queued for re-sending (PrecopyInfo::dirty_bytes).
  absl::Status SimulateStateWrite(uint64_t offset, uint64_t length);

 private:
  class Core;    // all state, shared with the DataStreams
  class Stream;  // the DataStream handed out by SetState

  EmulatedDevice(EmulatedDeviceConfig config, std::shared_ptr<Core> core);

  const EmulatedDeviceConfig config_;
  const std::shared_ptr<Core> core_;
  // Runs Core's workload; joinable only when a rate is set.
  std::thread workload_;
};

}  // namespace migd::device

#endif  // MIGD_DEVICE_EMULATED_DEVICE_H_
