#include "migd/device/emulated_device.h"

#include <fcntl.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "migd/base/crc32c.h"
#include "migd/base/log.h"
#include "migd/base/thread_name.h"
#include "migd/base/unique_fd.h"
#include "migd/device/vfio_errors.h"
#include "migd/vfio/planner.h"

namespace migd::device {
namespace {

using vfio::MigState;
using vfio::MigStateName;

constexpr char kMagic[8] = {'M', 'I', 'G', 'D', 'E', 'M', 'U', '1'};
constexpr uint8_t kRecordPage = 1;
constexpr uint8_t kRecordEnd = 2;
constexpr size_t kHeaderBytes = 8 + 4 + 8;
constexpr size_t kPageHeaderBytes = 1 + 8 + 4;  // type, offset, length
constexpr size_t kEndBytes = 1 + 4 + 8;         // type, crc, size
// The kernel's limit: PAGE_SIZE / sizeof(struct
// vfio_device_feature_dma_logging_range).
constexpr size_t kMaxDmaRanges = 4096 / 16;
constexpr uint64_t kPayload = EmulatedDevice::kPageRecordPayload;

using Clock = std::chrono::steady_clock;

// One workload step: short enough that a pre-copy loop polling every few
// milliseconds sees the rates as smooth.
constexpr absl::Duration kWorkloadStep = absl::Milliseconds(2);
// The longest stretch one step makes up for: a thread descheduled for long
// does not catch up in one burst.
constexpr int64_t kMaxStepNs = 100 * 1000 * 1000;
// Keep the workload's pseudo-random streams apart from the content's.
constexpr uint64_t kDirtyPageSalt = 0x64697274792d7067ull;  // "dirty-pg"
constexpr uint64_t kDirtyFillSalt = 0x64697274792d666cull;  // "dirty-fl"
constexpr uint64_t kDmaPageSalt = 0x646d612d70616765ull;    // "dma-page"

// Copies loaded content into the device's memory the way a device's DMA
// would: past the cache. The content is not read again until the load is
// validated or saved, so non-temporal stores skip fetching each destination
// line first and leave the cache to the transfer's own buffers; here that
// halves the cost of the load's copy against memcpy into cold memory, and
// the load's copy is the destination's largest cost per byte.
void CopyPastCache(uint8_t* dst, const uint8_t* src, size_t n) {
#if defined(__SSE2__)
  constexpr size_t kLine = 64;
  const size_t head = std::min<size_t>(
      n, (kLine - reinterpret_cast<uintptr_t>(dst) % kLine) % kLine);
  std::memcpy(dst, src, head);
  size_t i = head;
  for (; i + kLine <= n; i += kLine) {
    const auto* s = reinterpret_cast<const __m128i*>(src + i);
    auto* d = reinterpret_cast<__m128i*>(dst + i);
    const __m128i a = _mm_loadu_si128(s);
    const __m128i b = _mm_loadu_si128(s + 1);
    const __m128i c = _mm_loadu_si128(s + 2);
    const __m128i e = _mm_loadu_si128(s + 3);
    _mm_stream_si128(d, a);
    _mm_stream_si128(d + 1, b);
    _mm_stream_si128(d + 2, c);
    _mm_stream_si128(d + 3, e);
  }
  std::memcpy(dst + i, src + i, n - i);
  // Non-temporal stores are weakly ordered: fence them before the lock that
  // publishes the content is released.
  _mm_sfence();
#else
  std::memcpy(dst, src, n);
#endif
}

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{p[i]} << (8 * i);
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

uint64_t NumPages(uint64_t state_size) {
  return (state_size + kPayload - 1) / kPayload;
}

uint64_t PageLen(uint64_t state_size, uint64_t page) {
  return std::min(kPayload, state_size - page * kPayload);
}

// Bytes of the PAGE records for pages [first, NumPages).
uint64_t PageRecordBytesFrom(uint64_t state_size, uint64_t first) {
  const uint64_t pages = NumPages(state_size);
  if (first >= pages) return 0;
  return (pages - first) * kPageHeaderBytes + (state_size - first * kPayload);
}

// splitmix64: fast, and every seed gives a full-period, well-mixed sequence.
uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<uint8_t> GenerateContent(uint64_t seed, uint64_t size) {
  std::vector<uint8_t> content(size);
  uint64_t x = seed;
  uint64_t i = 0;
  for (; i + 8 <= size; i += 8) PutU64(&content[i], SplitMix64(x));
  if (i < size) {
    uint8_t tail[8];
    PutU64(tail, SplitMix64(x));
    std::memcpy(&content[i], tail, size - i);
  }
  return content;
}

// Element `n` of the pseudo-random stream `salt` of `seed` (splitmix64 is
// counter based: element n mixes seed + (n+1) * gamma).
uint64_t Pseudo(uint64_t seed, uint64_t salt, uint64_t n) {
  uint64_t x = (seed ^ salt) + n * 0x9e3779b97f4a7c15ull;
  return SplitMix64(x);
}

// Whole units due for `elapsed` at `rate` per second; the sub-unit rest
// carries over in `*frac` (units * ns).
uint64_t UnitsDue(uint64_t rate, Clock::duration elapsed, uint64_t* frac) {
  const int64_t ns = std::clamp<int64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count(), 0,
      kMaxStepNs);
  const unsigned __int128 total =
      static_cast<unsigned __int128>(rate) * static_cast<uint64_t>(ns) + *frac;
  *frac = static_cast<uint64_t>(total % 1000000000u);
  return static_cast<uint64_t>(total / 1000000000u);
}

// write(2) until all of `data` is written; errno on failure.
int WriteFully(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

absl::Status WithPrefix(const absl::Status& s, absl::string_view prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

std::string ArcName(MigState from, MigState to) {
  return absl::StrCat(MigStateName(from), " -> ", MigStateName(to));
}

// A save session: produces the stream lazily from the device content, one
// item (header, PAGE record or END) at a time.
struct SaveSession {
  enum class Item { kNone, kHeader, kInitialPage, kDirtyPage, kEnd };

  // The item being emitted: `prefix` then content[payload_offset,
  // +payload_len).
  Item item = Item::kNone;
  uint8_t prefix[kHeaderBytes] = {};
  size_t prefix_len = 0;
  uint64_t payload_offset = 0;
  uint64_t payload_len = 0;
  uint64_t item_pos = 0;  // bytes of the item already emitted

  bool header_queued = false;
  uint64_t next_initial_page = 0;   // pages below this were queued once
  std::set<uint64_t> dirty_pages;   // queued pages dirtied since: re-send
  uint64_t dirty_record_bytes = 0;  // PAGE record bytes of dirty_pages
  bool end_queued = false;
  uint64_t stream_pos = 0;  // bytes handed to Read so far
  // CRC32C of content[0, crc_end) as the initial pages went out, while that
  // range stays unchanged: the END record's CRC without a cold pass over the
  // whole state at the end of stop-copy (downtime, for a large state).
  uint32_t running_crc = 0;
  uint64_t crc_end = 0;
  bool crc_valid = true;

  uint64_t ItemRemaining() const { return prefix_len + payload_len - item_pos; }
};

// A load session: a streaming parser over arbitrarily segmented writes,
// applying PAGE records into a staging buffer.
struct LoadSession {
  enum class Parse {
    kHeader,
    kType,
    kPageHeader,
    kPagePayload,
    kEndBody,
    kDone
  };

  std::vector<uint8_t> staging;
  Parse parse = Parse::kHeader;
  uint8_t acc[kHeaderBytes] = {};  // the fixed-size part being accumulated
  size_t acc_len = 0;
  uint64_t page_offset = 0;     // next staging byte of the current PAGE
  uint64_t page_remaining = 0;  // payload bytes of the current PAGE still due
  uint64_t record_start = 0;    // stream offset of the current record
  uint64_t stream_pos = 0;      // bytes consumed
  uint32_t end_crc = 0;
  // CRC32C of staging[0, crc_end), kept while the pages arrive in order (a
  // stop-copy stream), so validating at RESUMING -> STOP costs nothing; a
  // page written anywhere else (a pre-copy re-send) turns it off and the
  // whole content is checked there instead.
  uint32_t running_crc = 0;
  uint64_t crc_end = 0;
  bool in_order = true;
  absl::Status error;  // first fatal error; the load is dead after it
};

}  // namespace

bool IsValidEmulatedDeviceName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

namespace {

// OK when the device takes `arc` (a knob's, named `knob`) with its flags.
absl::Status CheckArc(const EmulatedDeviceConfig& config, const MigArc& arc,
                      absl::string_view knob, const std::string& who) {
  const std::string name = absl::StrCat(knob, " ", ArcName(arc.from, arc.to));
  if (!vfio::MigStateFromRaw(static_cast<uint32_t>(arc.from)) ||
      !vfio::MigStateFromRaw(static_cast<uint32_t>(arc.to)) ||
      arc.from == arc.to) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, name, " is not an arc"));
  }
  absl::StatusOr<MigState> next =
      vfio::NextState(config.flags, arc.from, arc.to);
  if (!next.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, name, " is never taken: ", next.status().message()));
  }
  if (*next != arc.to) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, name, " is never taken with flags ",
                     vfio::MigFlagsName(config.flags), ": the device goes ",
                     ArcName(arc.from, *next), " first"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateEmulatedDeviceConfig(const EmulatedDeviceConfig& config) {
  if (!IsValidEmulatedDeviceName(config.name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("emulated device name \"", absl::CEscape(config.name),
                     "\" is not [A-Za-z0-9._:-]{1,64}"));
  }
  const std::string who = absl::StrCat("emulated device ", config.name, ": ");
  if (config.state_format == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, "state_format must be > 0"));
  }
  if (config.state_size == 0 ||
      config.state_size > EmulatedDevice::kMaxStateSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, "state_size ", config.state_size, " not in 1..",
                     EmulatedDevice::kMaxStateSize));
  }
  if ((config.flags & ~vfio::kMigKnownFlags) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%sflags 0x%x carry unknown bits 0x%x", who,
                        config.flags, config.flags & ~vfio::kMigKnownFlags));
  }
  if ((config.flags & vfio::kMigStopCopy) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, "flags ", vfio::MigFlagsName(config.flags),
        " lack STOP_COPY, which every migratable device must support"));
  }
  if (config.fail_arc.has_value()) {
    if (absl::Status s = CheckArc(config, *config.fail_arc, "fail_arc", who);
        !s.ok()) {
      return s;
    }
  }
  if (config.slow_arc.has_value()) {
    const SlowArc& slow = *config.slow_arc;
    if (absl::Status s = CheckArc(config, slow.arc, "slow_arc", who); !s.ok()) {
      return s;
    }
    if (slow.duration <= absl::ZeroDuration() || slow.duration > kMaxSlowArc) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, "slow_arc ", ArcName(slow.arc.from, slow.arc.to), " takes ",
          absl::FormatDuration(slow.duration), ", not in (0, ",
          absl::FormatDuration(kMaxSlowArc), "]"));
    }
  }
  if (config.corrupt_stream_at.has_value()) {
    const uint64_t len = EmulatedDevice::FullStreamSize(config.state_size);
    if (*config.corrupt_stream_at >= len) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, "corrupt_stream_at ", *config.corrupt_stream_at,
                       " is past the end of the ", len, "-byte save stream"));
    }
  }
  if (config.fail_read.has_value()) {
    const ReadFault& f = *config.fail_read;
    const uint64_t len = EmulatedDevice::FullStreamSize(config.state_size);
    if (f.offset >= len) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, "fail_read offset ", f.offset,
                       " is past the end of the ", len, "-byte save stream"));
    }
    if (f.err <= 0 || f.err == ENOMSG || f.err == EINTR || f.err == EAGAIN ||
        f.err == EWOULDBLOCK) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, "fail_read errno ", f.err,
          " is not a fault (ENOMSG is the temporary end of pre-copy data; "
          "EINTR and EAGAIN are retried)"));
    }
  }
  if (config.dirty_rate > EmulatedDevice::kMaxDirtyRate) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, "dirty_rate ", config.dirty_rate, " bytes/s is over the limit of ",
        EmulatedDevice::kMaxDirtyRate));
  }
  if (config.dma_rate > EmulatedDevice::kMaxDmaRate) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, "dma_rate ", config.dma_rate, " writes/s is over the limit of ",
        EmulatedDevice::kMaxDmaRate));
  }
  if (config.dma_write_log.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, "dma_write_log \"", absl::CEscape(config.dma_write_log),
        "\" contains a NUL byte"));
  }
  return absl::OkStatus();
}

uint64_t EmulatedDevice::FullStreamSize(uint64_t state_size) {
  return kHeaderBytes + PageRecordBytesFrom(state_size, 0) + kEndBytes;
}

// All device state, behind one mutex. Shared by the device and its streams so
// a stream never dangles; `session_id_` tells a stream whether its session is
// still the live one.
//
// The workload (RunWorkload, on the device's thread) takes the same mutex, so
// it acts only between calls, never in the middle of an arc or a read.
class EmulatedDevice::Core : public std::enable_shared_from_this<Core> {
 public:
  Core(const EmulatedDeviceConfig& config, std::vector<uint8_t> content,
       base::UniqueFd dma_write_log)
      : config_(config),
        who_(absl::StrCat("device ", config.name, ": ")),
        dma_write_log_(std::move(dma_write_log)),
        content_(std::move(content)) {}

  absl::StatusOr<MigState> GetState() {
    absl::MutexLock l(&mu_);
    return state_;
  }

  absl::StatusOr<std::unique_ptr<DataStream>> SetState(MigState target);
  absl::StatusOr<uint64_t> GetStopCopySize();
  absl::Status Reset();
  absl::StatusOr<std::string> StateDigest();
  absl::Status StartDmaLogging(uint64_t page_size,
                               const std::vector<IovaRange>& ranges);
  absl::Status ReportDmaLogging(uint64_t iova, uint64_t length,
                                uint64_t page_size,
                                std::vector<uint64_t>* bitmap);
  absl::Status StopDmaLogging();
  absl::Status SimulateDmaWrite(uint64_t iova, uint64_t length);
  absl::Status SimulateStateWrite(uint64_t offset, uint64_t length);

  // The device is gone: end the session, free the content (a stream may
  // keep the Core alive for a while) and make RunWorkload return.
  void Shutdown();

  // The workload thread's body: acts at the configured rates while the
  // device is in the states they apply to, sleeps otherwise; returns after
  // Shutdown.
  void RunWorkload();

  // DataStream calls, for the session `id`.
  absl::StatusOr<ReadResult> Read(uint64_t id, absl::Span<uint8_t> buf);
  absl::StatusOr<size_t> Write(uint64_t id, absl::Span<const uint8_t> data);
  absl::StatusOr<PrecopyInfo> GetPrecopyInfo(uint64_t id);

 private:
  struct DmaRange {
    uint64_t iova;
    uint64_t length;
    std::vector<uint64_t> bits;  // one per logging page
  };
  struct DmaLog {
    uint64_t page_size;
    std::vector<DmaRange> ranges;  // sorted by iova
    uint64_t pages = 0;            // logging pages in all ranges
  };

  absl::StatusOr<std::unique_ptr<DataStream>> SetStateLocked(MigState target)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes one arc, as a driver's step function does.
  absl::StatusOr<std::unique_ptr<DataStream>> StepLocked(MigState next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::unique_ptr<DataStream> OpenSessionLocked(bool save)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndSessionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckSessionLocked(uint64_t id, bool save) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Validates the loaded stream (RESUMING -> STOP).
  absl::Status FinishLoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Consumes bytes into the load parser; sets load_->error on a bad stream.
  void ParseLocked(absl::Span<const uint8_t> data)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ParseFixedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the next save item; false when none is available now.
  bool NextItemLocked(SaveSession& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetPageItemLocked(SaveSession& s, SaveSession::Item kind, uint64_t page)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t InitialRemainingLocked(const SaveSession& s) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t DirtyRemainingLocked(const SaveSession& s) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t ContentCrcLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Bookkeeping after content_[offset, +length) changed: the digest cache,
  // and the re-send queue of a save session.
  void ContentChangedLocked(uint64_t offset, uint64_t length)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The device DMA-writes [iova, +length): marks the logged pages and queues
  // the dma_write_log line. Only while DMA logging is started.
  void DmaWriteLocked(uint64_t iova, uint64_t length)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes the queued dma_write_log lines; the first failure turns the log
  // (and the DMA workload) off for good and is returned then and after.
  absl::Status FlushDmaWriteLogLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // kUnimplemented, for a device configured without DMA logging.
  absl::Status NoDmaLoggingError() const;

  // Workload. Called after every change of state_, dma_ or shut_down_:
  // recomputes which workloads are active and starts the clock of one that
  // just became active, so time spent inactive is never made up for.
  void UpdateWorkloadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WorkloadWakeLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shut_down_ || dirty_active_ || dma_active_;
  }
  // Performs what is due since the last step.
  void WorkloadStepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DirtyContentLocked(uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DmaWorkloadLocked(uint64_t writes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const EmulatedDeviceConfig config_;
  const std::string who_;  // "device NAME: ", the prefix of every error
  const base::UniqueFd dma_write_log_;  // fd -1 when not configured

  absl::Mutex mu_;
  MigState state_ ABSL_GUARDED_BY(mu_) = MigState::kRunning;
  std::vector<uint8_t> content_ ABSL_GUARDED_BY(mu_);
  // The previous content after a load, kept to stage the next one: freeing
  // gigabytes at RESUMING -> STOP would put the unmapping on the downtime.
  std::vector<uint8_t> spare_ ABSL_GUARDED_BY(mu_);
  std::optional<uint32_t> content_crc_ ABSL_GUARDED_BY(mu_);  // cache
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // The live session (0: none). At most one of save_/load_ is set.
  uint64_t session_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_session_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<SaveSession> save_ ABSL_GUARDED_BY(mu_);
  std::optional<LoadSession> load_ ABSL_GUARDED_BY(mu_);
  std::optional<DmaLog> dma_ ABSL_GUARDED_BY(mu_);
  std::string dma_log_pending_ ABSL_GUARDED_BY(mu_);  // lines not yet written
  absl::Status dma_log_status_ ABSL_GUARDED_BY(mu_);  // first write failure

  // Workload state.
  bool dirty_active_ ABSL_GUARDED_BY(mu_) = false;
  bool dma_active_ ABSL_GUARDED_BY(mu_) = false;
  Clock::time_point dirty_mark_ ABSL_GUARDED_BY(mu_);  // accounted up to
  Clock::time_point dma_mark_ ABSL_GUARDED_BY(mu_);
  uint64_t dirty_frac_ ABSL_GUARDED_BY(mu_) = 0;  // UnitsDue's carry
  uint64_t dma_frac_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dirty_choices_ ABSL_GUARDED_BY(mu_) = 0;    // records chosen so far
  uint64_t dirty_fills_ ABSL_GUARDED_BY(mu_) = 0;      // fill words drawn
  uint64_t dirty_page_ ABSL_GUARDED_BY(mu_) = 0;       // record being rewritten
  uint64_t dirty_page_left_ ABSL_GUARDED_BY(mu_) = 0;  // its bytes still due
  uint64_t dma_writes_ ABSL_GUARDED_BY(mu_) = 0;       // workload writes so far
};

class EmulatedDevice::Stream final : public DataStream {
 public:
  Stream(std::shared_ptr<Core> core, uint64_t id)
      : core_(std::move(core)), id_(id) {}

  absl::StatusOr<ReadResult> Read(absl::Span<uint8_t> buf) override {
    return core_->Read(id_, buf);
  }
  absl::StatusOr<size_t> Write(absl::Span<const uint8_t> data) override {
    return core_->Write(id_, data);
  }
  absl::StatusOr<PrecopyInfo> GetPrecopyInfo() override {
    return core_->GetPrecopyInfo(id_);
  }

 private:
  const std::shared_ptr<Core> core_;
  const uint64_t id_;
};

// ---- States and arcs. ----

absl::StatusOr<std::unique_ptr<DataStream>> EmulatedDevice::Core::SetState(
    MigState target) {
  absl::MutexLock l(&mu_);
  absl::StatusOr<std::unique_ptr<DataStream>> r = SetStateLocked(target);
  UpdateWorkloadLocked();
  return r;
}

absl::StatusOr<std::unique_ptr<DataStream>>
EmulatedDevice::Core::SetStateLocked(MigState target) {
  if (!vfio::MigStateFromRaw(static_cast<uint32_t>(target))) {
    return absl::InvalidArgumentError(absl::StrCat(
        who_, "no such migration state ", static_cast<uint32_t>(target)));
  }
  absl::StatusOr<std::vector<MigState>> arcs =
      vfio::PlanArcs(config_.flags, state_, target);
  if (!arcs.ok()) {
    return WithPrefix(
        arcs.status(),
        absl::StrCat(who_, "cannot move ", ArcName(state_, target), ": "));
  }
  std::unique_ptr<DataStream> stream;
  for (MigState next : *arcs) {
    // The kernel never passes through a saving state mid-path, so only the
    // last arc may open a session (drivers WARN_ON otherwise).
    if (stream != nullptr) {
      EndSessionLocked();
      return absl::InternalError(
          absl::StrCat(who_, "plan to ", MigStateName(target),
                       " opened a data session before its last arc"));
    }
    absl::StatusOr<std::unique_ptr<DataStream>> r = StepLocked(next);
    if (!r.ok()) return r.status();
    stream = *std::move(r);
  }
  return stream;
}

absl::StatusOr<std::unique_ptr<DataStream>> EmulatedDevice::Core::StepLocked(
    MigState next) {
  const MigState cur = state_;
  const std::string arc = ArcName(cur, next);
  if (config_.slow_arc.has_value() && config_.slow_arc->arc.from == cur &&
      config_.slow_arc->arc.to == next) {
    // Busy for the whole arc, as a driver holding its state mutex is.
    absl::SleepFor(config_.slow_arc->duration);
  }
  if (config_.fail_arc.has_value() && config_.fail_arc->from == cur &&
      config_.fail_arc->to == next) {
    EndSessionLocked();
    state_ = MigState::kError;
    return absl::InternalError(
        absl::StrCat(who_, "arc ", arc,
                     " failed: injected fault (fail_arc); device is in ERROR"));
  }
  if (cur == MigState::kResuming) {
    // The only arc out of RESUMING is to STOP, where the state is validated.
    absl::Status s = FinishLoadLocked();
    if (!s.ok()) {
      EndSessionLocked();
      state_ = MigState::kError;
      return WithPrefix(s, absl::StrCat(who_, arc, ": "));
    }
    spare_ = std::move(content_);
    content_ = std::move(load_->staging);
    content_crc_ = load_->end_crc;
    EndSessionLocked();
    state_ = next;
    return nullptr;
  }
  const bool was_saving = vfio::IsSavingState(cur);
  const bool saving = vfio::IsSavingState(next);
  std::unique_ptr<DataStream> stream;
  if (next == MigState::kResuming) {
    stream = OpenSessionLocked(/*save=*/false);
  } else if (saving && !was_saving) {
    stream = OpenSessionLocked(/*save=*/true);
  } else if (was_saving && !saving) {
    EndSessionLocked();
  }
  // Saving -> saving (PRE_COPY <-> PRE_COPY_P2P, PRE_COPY* -> STOP_COPY) keeps
  // the session; in STOP_COPY the stream goes on to END and EOF.
  state_ = next;
  return stream;
}

std::unique_ptr<DataStream> EmulatedDevice::Core::OpenSessionLocked(bool save) {
  EndSessionLocked();
  session_id_ = ++last_session_id_;
  if (save) {
    save_.emplace();
  } else {
    load_.emplace();
    load_->staging = std::move(spare_);
    load_->staging.assign(config_.state_size, 0);
  }
  return std::make_unique<Stream>(shared_from_this(), session_id_);
}

void EmulatedDevice::Core::EndSessionLocked() {
  session_id_ = 0;
  save_.reset();
  load_.reset();
}

absl::Status EmulatedDevice::Core::CheckSessionLocked(uint64_t id,
                                                      bool save) const {
  if (shut_down_) {
    return absl::FailedPreconditionError(
        absl::StrCat(who_, "data stream used after the device was destroyed"));
  }
  if (id != session_id_) {
    return absl::FailedPreconditionError(
        absl::StrCat(who_,
                     "data session ended (the device left the saving/resuming "
                     "states; now ",
                     MigStateName(state_), ")"));
  }
  if (save && !save_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat(who_, "read or precopy info on a load (RESUMING) stream"));
  }
  if (!save && !load_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat(who_, "write on a save stream"));
  }
  return absl::OkStatus();
}

absl::Status EmulatedDevice::Core::Reset() {
  absl::MutexLock l(&mu_);
  EndSessionLocked();
  state_ = MigState::kRunning;
  UpdateWorkloadLocked();
  return absl::OkStatus();
}

void EmulatedDevice::Core::Shutdown() {
  absl::MutexLock l(&mu_);
  EndSessionLocked();
  shut_down_ = true;
  std::vector<uint8_t>().swap(content_);
  dma_.reset();
  UpdateWorkloadLocked();
}

// ---- Workload. ----

void EmulatedDevice::Core::UpdateWorkloadLocked() {
  const bool dirty =
      !shut_down_ && config_.dirty_rate > 0 && vfio::IsRunningState(state_);
  const bool dma =
      !shut_down_ && config_.dma_rate > 0 && dma_.has_value() &&
      dma_log_status_.ok() &&
      (state_ == MigState::kRunning || state_ == MigState::kPreCopy);
  const Clock::time_point now = Clock::now();
  if (dirty && !dirty_active_) {
    dirty_mark_ = now;
    dirty_frac_ = 0;
  }
  if (dma && !dma_active_) {
    dma_mark_ = now;
    dma_frac_ = 0;
  }
  dirty_active_ = dirty;
  dma_active_ = dma;
}

void EmulatedDevice::Core::RunWorkload() {
  absl::MutexLock l(&mu_);
  UpdateWorkloadLocked();
  for (;;) {
    // Sleep (no polling) until a workload applies or the device is gone.
    mu_.Await(absl::Condition(this, &Core::WorkloadWakeLocked));
    if (shut_down_) return;
    if (mu_.AwaitWithTimeout(absl::Condition(&shut_down_), kWorkloadStep)) {
      return;
    }
    WorkloadStepLocked();
  }
}

void EmulatedDevice::Core::WorkloadStepLocked() {
  const Clock::time_point now = Clock::now();
  if (dirty_active_) {
    const uint64_t bytes =
        UnitsDue(config_.dirty_rate, now - dirty_mark_, &dirty_frac_);
    dirty_mark_ = now;
    DirtyContentLocked(bytes);
  }
  if (dma_active_) {
    const uint64_t writes =
        UnitsDue(config_.dma_rate, now - dma_mark_, &dma_frac_);
    dma_mark_ = now;
    DmaWorkloadLocked(writes);
    if (absl::Status s = FlushDmaWriteLogLocked(); !s.ok()) {
      UpdateWorkloadLocked();  // the DMA workload stops
    }
  }
}

void EmulatedDevice::Core::DirtyContentLocked(uint64_t bytes) {
  const uint64_t size = config_.state_size;
  while (bytes > 0) {
    if (dirty_page_left_ == 0) {
      dirty_page_ = Pseudo(config_.seed, kDirtyPageSalt, dirty_choices_++) %
                    NumPages(size);
      dirty_page_left_ = PageLen(size, dirty_page_);
    }
    const uint64_t offset = dirty_page_ * kPayload +
                            (PageLen(size, dirty_page_) - dirty_page_left_);
    const uint64_t n = std::min(bytes, dirty_page_left_);
    for (uint64_t i = 0; i < n; i += 8) {
      uint8_t word[8];
      PutU64(word, Pseudo(config_.seed, kDirtyFillSalt, dirty_fills_++));
      std::memcpy(&content_[offset + i], word, std::min<uint64_t>(8, n - i));
    }
    ContentChangedLocked(offset, n);
    bytes -= n;
    dirty_page_left_ -= n;
  }
}

void EmulatedDevice::Core::DmaWorkloadLocked(uint64_t writes) {
  const DmaLog& log = *dma_;
  for (uint64_t w = 0; w < writes; ++w) {
    uint64_t page =
        Pseudo(config_.seed, kDmaPageSalt, dma_writes_++) % log.pages;
    uint64_t iova = 0;
    for (const DmaRange& r : log.ranges) {
      const uint64_t pages = r.length / log.page_size;
      if (page < pages) {
        iova = r.iova + page * log.page_size;
        break;
      }
      page -= pages;
    }
    DmaWriteLocked(iova, log.page_size);
  }
}

// ---- Content. ----

uint32_t EmulatedDevice::Core::ContentCrcLocked() {
  if (!content_crc_.has_value()) {
    content_crc_ = base::Crc32c(content_.data(), content_.size());
  }
  return *content_crc_;
}

absl::StatusOr<std::string> EmulatedDevice::Core::StateDigest() {
  absl::MutexLock l(&mu_);
  uint8_t size[8];
  PutU64(size, config_.state_size);
  const uint32_t crc = base::Crc32cExtend(ContentCrcLocked(), size, 8);
  return absl::StrFormat("crc32c:%08x", crc);
}

absl::Status EmulatedDevice::Core::SimulateStateWrite(uint64_t offset,
                                                      uint64_t length) {
  absl::MutexLock l(&mu_);
  if (!vfio::IsRunningState(state_)) {
    return absl::FailedPreconditionError(
        absl::StrCat(who_, "state changes only while running, not in ",
                     MigStateName(state_)));
  }
  if (length == 0 || offset >= config_.state_size ||
      length > config_.state_size - offset) {
    return absl::InvalidArgumentError(
        absl::StrCat(who_, "state write [", offset, ", +", length,
                     ") outside the ", config_.state_size, "-byte state"));
  }
  // Any deterministic change will do; the digest must move.
  for (uint64_t i = offset; i < offset + length; ++i) content_[i] ^= 0x5a;
  ContentChangedLocked(offset, length);
  return absl::OkStatus();
}

void EmulatedDevice::Core::ContentChangedLocked(uint64_t offset,
                                                uint64_t length) {
  content_crc_.reset();
  if (save_.has_value()) {
    SaveSession& s = *save_;
    if (offset < s.crc_end) s.crc_valid = false;
    const uint64_t last = (offset + length - 1) / kPayload;
    for (uint64_t page = offset / kPayload; page <= last; ++page) {
      // A page not yet queued goes out with its new bytes anyway.
      if (page >= s.next_initial_page) break;
      if (s.dirty_pages.insert(page).second) {
        s.dirty_record_bytes +=
            kPageHeaderBytes + PageLen(config_.state_size, page);
      }
    }
  }
}

// ---- Save. ----

void EmulatedDevice::Core::SetPageItemLocked(SaveSession& s,
                                             SaveSession::Item kind,
                                             uint64_t page) {
  s.item = kind;
  s.payload_offset = page * kPayload;
  s.payload_len = PageLen(config_.state_size, page);
  s.prefix[0] = kRecordPage;
  PutU64(&s.prefix[1], s.payload_offset);
  PutU32(&s.prefix[9], static_cast<uint32_t>(s.payload_len));
  s.prefix_len = kPageHeaderBytes;
  s.item_pos = 0;
}

bool EmulatedDevice::Core::NextItemLocked(SaveSession& s) {
  if (!s.header_queued) {
    s.header_queued = true;
    s.item = SaveSession::Item::kHeader;
    std::memcpy(s.prefix, kMagic, 8);
    PutU32(&s.prefix[8], config_.state_format);
    PutU64(&s.prefix[12], config_.state_size);
    s.prefix_len = kHeaderBytes;
    s.payload_len = 0;
    s.item_pos = 0;
    return true;
  }
  if (s.next_initial_page < NumPages(config_.state_size)) {
    SetPageItemLocked(s, SaveSession::Item::kInitialPage,
                      s.next_initial_page++);
    return true;
  }
  if (!s.dirty_pages.empty()) {
    const uint64_t page = *s.dirty_pages.begin();
    s.dirty_pages.erase(s.dirty_pages.begin());
    s.dirty_record_bytes -=
        kPageHeaderBytes + PageLen(config_.state_size, page);
    SetPageItemLocked(s, SaveSession::Item::kDirtyPage, page);
    return true;
  }
  // END only once the device is stopped: only then is the content final.
  if (state_ == MigState::kStopCopy && !s.end_queued) {
    s.end_queued = true;
    if (!content_crc_.has_value() && s.crc_valid &&
        s.crc_end == content_.size()) {
      content_crc_ = s.running_crc;
    }
    s.item = SaveSession::Item::kEnd;
    s.prefix[0] = kRecordEnd;
    PutU32(&s.prefix[1], ContentCrcLocked());
    PutU64(&s.prefix[5], config_.state_size);
    s.prefix_len = kEndBytes;
    s.payload_len = 0;
    s.item_pos = 0;
    return true;
  }
  s.item = SaveSession::Item::kNone;
  s.prefix_len = s.payload_len = s.item_pos = 0;
  return false;
}

absl::StatusOr<ReadResult> EmulatedDevice::Core::Read(uint64_t id,
                                                      absl::Span<uint8_t> buf) {
  absl::MutexLock l(&mu_);
  if (absl::Status st = CheckSessionLocked(id, /*save=*/true); !st.ok()) {
    return st;
  }
  SaveSession& s = *save_;
  if (buf.empty()) return ReadResult::Data(0);
  if (config_.fail_read.has_value()) {
    // Like a driver whose device went away under the reader: the bytes up
    // to the offset, then only errors.
    const ReadFault& f = *config_.fail_read;
    if (s.stream_pos >= f.offset) {
      return AppendToMessage(
          VfioErrnoError(config_.name, "data stream read", VfioOp::kDataRead,
                         f.err),
          absl::StrCat(" (fault knob fail_read at stream offset ", f.offset,
                       ")"));
    }
    buf = buf.first(static_cast<size_t>(
        std::min<uint64_t>(buf.size(), f.offset - s.stream_pos)));
  }
  size_t n = 0;
  while (n < buf.size()) {
    if (s.ItemRemaining() == 0 && !NextItemLocked(s)) break;
    size_t take = static_cast<size_t>(
        std::min<uint64_t>(buf.size() - n, s.ItemRemaining()));
    // The item is prefix then payload; copy from whichever `item_pos` is in.
    if (s.item_pos < s.prefix_len) {
      take = std::min<size_t>(take, s.prefix_len - s.item_pos);
      std::memcpy(&buf[n], &s.prefix[s.item_pos], take);
    } else {
      const uint64_t from = s.payload_offset + (s.item_pos - s.prefix_len);
      std::memcpy(&buf[n], &content_[from], take);
      if (s.crc_valid && from == s.crc_end) {  // hot in cache now
        s.running_crc = base::Crc32cExtend(s.running_crc, &buf[n], take);
        s.crc_end += take;
      }
    }
    n += take;
    s.item_pos += take;
  }
  if (config_.corrupt_stream_at.has_value()) {
    const uint64_t at = *config_.corrupt_stream_at;
    if (at >= s.stream_pos && at < s.stream_pos + n) {
      buf[at - s.stream_pos] ^= 0xff;
    }
  }
  s.stream_pos += n;
  if (n > 0) return ReadResult::Data(n);
  // Nothing more now: the end in STOP_COPY; in PRE_COPY*, what the kernel
  // says with ENOMSG (more comes after the device dirties state or moves on
  // to STOP_COPY).
  return state_ == MigState::kStopCopy ? ReadResult::EndOfStream()
                                       : ReadResult::NoDataNow();
}

uint64_t EmulatedDevice::Core::InitialRemainingLocked(
    const SaveSession& s) const {
  uint64_t n = s.header_queued ? 0 : kHeaderBytes;
  if (s.item == SaveSession::Item::kHeader ||
      s.item == SaveSession::Item::kInitialPage) {
    n += s.ItemRemaining();
  }
  return n + PageRecordBytesFrom(config_.state_size, s.next_initial_page);
}

uint64_t EmulatedDevice::Core::DirtyRemainingLocked(
    const SaveSession& s) const {
  uint64_t n = s.dirty_record_bytes;
  if (s.item == SaveSession::Item::kDirtyPage) n += s.ItemRemaining();
  return n;
}

absl::StatusOr<PrecopyInfo> EmulatedDevice::Core::GetPrecopyInfo(uint64_t id) {
  absl::MutexLock l(&mu_);
  if (absl::Status st = CheckSessionLocked(id, /*save=*/true); !st.ok()) {
    return st;
  }
  if (state_ != MigState::kPreCopy && state_ != MigState::kPreCopyP2P) {
    return absl::FailedPreconditionError(
        absl::StrCat(who_, "precopy info only in PRE_COPY states, not in ",
                     MigStateName(state_)));
  }
  PrecopyInfo info;
  info.initial_bytes = InitialRemainingLocked(*save_);
  info.dirty_bytes = DirtyRemainingLocked(*save_);
  return info;
}

absl::StatusOr<uint64_t> EmulatedDevice::Core::GetStopCopySize() {
  absl::MutexLock l(&mu_);
  if (!save_.has_value()) return FullStreamSize(config_.state_size);
  const SaveSession& s = *save_;
  uint64_t n = InitialRemainingLocked(s) + DirtyRemainingLocked(s);
  if (s.item == SaveSession::Item::kEnd) n += s.ItemRemaining();
  if (!s.end_queued) n += kEndBytes;
  return n;
}

// ---- Load. ----

absl::StatusOr<size_t> EmulatedDevice::Core::Write(
    uint64_t id, absl::Span<const uint8_t> data) {
  absl::MutexLock l(&mu_);
  if (absl::Status st = CheckSessionLocked(id, /*save=*/false); !st.ok()) {
    return st;
  }
  if (config_.load_rate > 0 && !data.empty()) {
    // A slow load (the load_rate knob). The wait releases the device, so
    // its other calls go on, and ends early when the session does: a reset
    // must not wait for a load it abandons.
    auto ended = [this, id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return shut_down_ || session_id_ != id;
    };
    mu_.AwaitWithTimeout(
        absl::Condition(&ended),
        absl::Seconds(static_cast<double>(data.size()) / config_.load_rate));
    if (absl::Status st = CheckSessionLocked(id, /*save=*/false); !st.ok()) {
      return st;
    }
  }
  if (load_->error.ok()) ParseLocked(data);
  if (!load_->error.ok()) {
    return WithPrefix(load_->error, absl::StrCat(who_, "load failed: "));
  }
  return data.size();
}

void EmulatedDevice::Core::ParseLocked(absl::Span<const uint8_t> data) {
  LoadSession& L = *load_;
  size_t i = 0;
  while (i < data.size() && L.error.ok()) {
    switch (L.parse) {
      case LoadSession::Parse::kType: {
        const uint8_t type = data[i];
        L.record_start = L.stream_pos;
        ++i;
        ++L.stream_pos;
        if (type == kRecordPage) {
          L.parse = LoadSession::Parse::kPageHeader;
        } else if (type == kRecordEnd) {
          L.parse = LoadSession::Parse::kEndBody;
        } else {
          L.error = absl::DataLossError(
              absl::StrFormat("unknown record type 0x%02x at stream offset %d",
                              type, L.record_start));
        }
        L.acc_len = 0;
        break;
      }
      case LoadSession::Parse::kPagePayload: {
        const size_t take = static_cast<size_t>(
            std::min<uint64_t>(data.size() - i, L.page_remaining));
        CopyPastCache(&L.staging[L.page_offset], &data[i], take);
        if (L.in_order && L.page_offset == L.crc_end) {
          L.running_crc = base::Crc32cExtend(L.running_crc, &data[i], take);
          L.crc_end += take;
        } else {
          L.in_order = false;
        }
        i += take;
        L.stream_pos += take;
        L.page_offset += take;
        L.page_remaining -= take;
        if (L.page_remaining == 0) L.parse = LoadSession::Parse::kType;
        break;
      }
      case LoadSession::Parse::kDone:
        L.error = absl::DataLossError(absl::StrCat(
            "trailing bytes after the END record at stream offset ",
            L.stream_pos));
        break;
      case LoadSession::Parse::kHeader:
      case LoadSession::Parse::kPageHeader:
      case LoadSession::Parse::kEndBody: {
        const size_t want =
            L.parse == LoadSession::Parse::kHeader       ? kHeaderBytes
            : L.parse == LoadSession::Parse::kPageHeader ? kPageHeaderBytes - 1
                                                         : kEndBytes - 1;
        const size_t take = std::min(data.size() - i, want - L.acc_len);
        std::memcpy(&L.acc[L.acc_len], &data[i], take);
        i += take;
        L.stream_pos += take;
        L.acc_len += take;
        if (L.acc_len == want) L.error = ParseFixedLocked();
        break;
      }
    }
  }
}

// Interprets a complete fixed-size part (header, PAGE header, END body) in
// load_->acc and moves the parser on.
absl::Status EmulatedDevice::Core::ParseFixedLocked() {
  LoadSession& L = *load_;
  const uint8_t* p = L.acc;
  L.acc_len = 0;
  switch (L.parse) {
    case LoadSession::Parse::kHeader: {
      if (std::memcmp(p, kMagic, 8) != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "bad stream magic \"",
            absl::CEscape(
                absl::string_view(reinterpret_cast<const char*>(p), 8)),
            "\" (want \"MIGDEMU1\": not an emulated device's stream)"));
      }
      const uint32_t format = GetU32(p + 8);
      if (format != config_.state_format) {
        return absl::InvalidArgumentError(absl::StrCat(
            "stream of state format ", format, " (this device reads format ",
            config_.state_format, ")"));
      }
      const uint64_t size = GetU64(p + 12);
      if (size != config_.state_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "state size ", size, " != device state size ", config_.state_size));
      }
      L.parse = LoadSession::Parse::kType;
      return absl::OkStatus();
    }
    case LoadSession::Parse::kPageHeader: {
      const uint64_t offset = GetU64(p);
      const uint32_t length = GetU32(p + 8);
      if (offset > config_.state_size || length > config_.state_size - offset) {
        return absl::DataLossError(
            absl::StrCat("PAGE record at stream offset ", L.record_start,
                         " covers [", offset, ", +", length, "), outside the ",
                         config_.state_size, "-byte state"));
      }
      L.page_offset = offset;
      L.page_remaining = length;
      L.parse = length == 0 ? LoadSession::Parse::kType
                            : LoadSession::Parse::kPagePayload;
      return absl::OkStatus();
    }
    case LoadSession::Parse::kEndBody: {
      L.end_crc = GetU32(p);
      const uint64_t size = GetU64(p + 4);
      if (size != config_.state_size) {
        return absl::DataLossError(absl::StrCat(
            "END record at stream offset ", L.record_start, " says state size ",
            size, ", header said ", config_.state_size));
      }
      L.parse = LoadSession::Parse::kDone;
      return absl::OkStatus();
    }
    default:
      return absl::InternalError("parser out of step");
  }
}

absl::Status EmulatedDevice::Core::FinishLoadLocked() {
  const LoadSession& L = *load_;
  if (!L.error.ok()) return L.error;
  switch (L.parse) {
    case LoadSession::Parse::kHeader:
      if (L.stream_pos == 0) {
        return absl::DataLossError("empty stream: no header");
      }
      return absl::DataLossError(
          absl::StrCat("stream truncated in the header (", L.stream_pos, " of ",
                       kHeaderBytes, " bytes)"));
    case LoadSession::Parse::kType:
      return absl::DataLossError(absl::StrCat(
          "no END record (stream truncated after ", L.stream_pos, " bytes?)"));
    case LoadSession::Parse::kPageHeader:
    case LoadSession::Parse::kPagePayload:
      return absl::DataLossError(absl::StrCat(
          "stream truncated inside the PAGE record at stream offset ",
          L.record_start));
    case LoadSession::Parse::kEndBody:
      return absl::DataLossError(absl::StrCat(
          "stream truncated inside the END record at stream offset ",
          L.record_start));
    case LoadSession::Parse::kDone:
      break;
  }
  const uint32_t crc = L.in_order && L.crc_end == L.staging.size()
                           ? L.running_crc
                           : base::Crc32c(L.staging.data(), L.staging.size());
  if (crc != L.end_crc) {
    return absl::DataLossError(absl::StrFormat(
        "loaded content CRC32C %08x != END record's %08x (stream corrupted)",
        crc, L.end_crc));
  }
  return absl::OkStatus();
}

// ---- DMA logging. ----

absl::Status EmulatedDevice::Core::NoDmaLoggingError() const {
  return absl::UnimplementedError(
      absl::StrCat(who_, "no DMA dirty logging (dma_logging=off)"));
}

absl::Status EmulatedDevice::Core::StartDmaLogging(
    uint64_t page_size, const std::vector<IovaRange>& ranges) {
  if (!config_.dma_logging) return NoDmaLoggingError();
  if (page_size < 4096 || !IsPowerOfTwo(page_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(who_, "DMA logging page size ", page_size,
                     " is not a power of two >= 4096"));
  }
  if (ranges.empty() || ranges.size() > kMaxDmaRanges) {
    return absl::InvalidArgumentError(
        absl::StrCat(who_, "DMA logging needs 1..", kMaxDmaRanges,
                     " ranges, got ", ranges.size()));
  }
  DmaLog log;
  log.page_size = page_size;
  for (const IovaRange& r : ranges) {
    if (r.length == 0 || r.iova % page_size != 0 || r.length % page_size != 0 ||
        r.length > std::numeric_limits<uint64_t>::max() - r.iova) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%sDMA logging range [0x%x, +0x%x) is empty, overflows or is not "
          "aligned to the %d-byte page",
          who_, r.iova, r.length, page_size));
    }
    const uint64_t pages = r.length / page_size;
    log.ranges.push_back(
        {r.iova, r.length, std::vector<uint64_t>((pages + 63) / 64, 0)});
    log.pages += pages;
  }
  std::sort(
      log.ranges.begin(), log.ranges.end(),
      [](const DmaRange& a, const DmaRange& b) { return a.iova < b.iova; });
  for (size_t i = 1; i < log.ranges.size(); ++i) {
    const DmaRange& a = log.ranges[i - 1];
    const DmaRange& b = log.ranges[i];
    if (b.iova < a.iova + a.length) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%sDMA logging ranges [0x%x, +0x%x) and [0x%x, +0x%x) overlap", who_,
          a.iova, a.length, b.iova, b.length));
    }
  }
  absl::MutexLock l(&mu_);
  if (dma_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat(who_, "DMA logging already started"));
  }
  dma_ = std::move(log);
  if (dma_write_log_.get() >= 0) {
    absl::StrAppendFormat(&dma_log_pending_,
                          "# start page_size=0x%x ranges=", page_size);
    for (size_t i = 0; i < dma_->ranges.size(); ++i) {
      absl::StrAppendFormat(&dma_log_pending_, "%s0x%x+0x%x", i ? "," : "",
                            dma_->ranges[i].iova, dma_->ranges[i].length);
    }
    dma_log_pending_ += "\n";
    // A log that cannot be written is reported by the writes, not here:
    // logging itself works.
    (void)FlushDmaWriteLogLocked();
  }
  UpdateWorkloadLocked();
  return absl::OkStatus();
}

absl::Status EmulatedDevice::Core::StopDmaLogging() {
  if (!config_.dma_logging) return NoDmaLoggingError();
  absl::MutexLock l(&mu_);
  if (dma_.has_value() && dma_write_log_.get() >= 0) {
    dma_log_pending_ += "# stop\n";
    (void)FlushDmaWriteLogLocked();
  }
  dma_.reset();
  UpdateWorkloadLocked();
  return absl::OkStatus();
}

void EmulatedDevice::Core::DmaWriteLocked(uint64_t iova, uint64_t length) {
  const uint64_t end = iova + length;
  for (DmaRange& r : dma_->ranges) {
    const uint64_t lo = std::max(iova, r.iova);
    const uint64_t hi = std::min(end, r.iova + r.length);
    if (lo >= hi) continue;
    const uint64_t first = (lo - r.iova) / dma_->page_size;
    const uint64_t last = (hi - 1 - r.iova) / dma_->page_size;
    for (uint64_t p = first; p <= last; ++p) {
      r.bits[p / 64] |= uint64_t{1} << (p % 64);
    }
  }
  if (dma_write_log_.get() >= 0 && dma_log_status_.ok()) {
    absl::StrAppendFormat(&dma_log_pending_, "0x%x 0x%x\n", iova, length);
  }
}

absl::Status EmulatedDevice::Core::FlushDmaWriteLogLocked() {
  if (!dma_log_status_.ok()) return dma_log_status_;
  if (dma_log_pending_.empty()) return absl::OkStatus();
  const int err = WriteFully(dma_write_log_.get(), dma_log_pending_);
  dma_log_pending_.clear();
  if (err != 0) {
    dma_log_status_ = absl::InternalError(absl::StrCat(
        who_, "cannot append to dma_write_log \"", config_.dma_write_log,
        "\": ", std::strerror(err), "; the log is incomplete from here on"));
    base::LogError(dma_log_status_.message());
  }
  return dma_log_status_;
}

absl::Status EmulatedDevice::Core::SimulateDmaWrite(uint64_t iova,
                                                    uint64_t length) {
  absl::MutexLock l(&mu_);
  if (length == 0 || length > std::numeric_limits<uint64_t>::max() - iova) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%sDMA write [0x%x, +0x%x) is empty or overflows", who_, iova, length));
  }
  if (!vfio::IsRunningState(state_)) {
    return absl::FailedPreconditionError(
        absl::StrCat(who_, "a device initiates DMA only while running, not in ",
                     MigStateName(state_)));
  }
  if (!dma_.has_value()) return absl::OkStatus();
  DmaWriteLocked(iova, length);
  if (absl::Status s = FlushDmaWriteLogLocked(); !s.ok()) {
    UpdateWorkloadLocked();
    return s;
  }
  return absl::OkStatus();
}

absl::Status EmulatedDevice::Core::ReportDmaLogging(
    uint64_t iova, uint64_t length, uint64_t page_size,
    std::vector<uint64_t>* bitmap) {
  if (!config_.dma_logging) return NoDmaLoggingError();
  if (bitmap == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(who_, "null bitmap"));
  }
  if (page_size < 4096 || !IsPowerOfTwo(page_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(who_, "DMA report page size ", page_size,
                     " is not a power of two >= 4096"));
  }
  if (length == 0 || length > std::numeric_limits<uint64_t>::max() - iova) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%sDMA report range [0x%x, +0x%x) is empty or overflows", who_, iova,
        length));
  }
  absl::MutexLock l(&mu_);
  if (!dma_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat(who_, "DMA logging report before start"));
  }
  const uint64_t end = iova + length;
  const uint64_t nbits = (length - 1) / page_size + 1;
  bitmap->assign((nbits + 63) / 64, 0);
  const uint64_t lps = dma_->page_size;
  for (DmaRange& r : dma_->ranges) {
    const uint64_t lo = std::max(iova, r.iova);
    const uint64_t hi = std::min(end, r.iova + r.length);
    if (lo >= hi) continue;
    const uint64_t first = (lo - r.iova) / lps;
    const uint64_t last = (hi - 1 - r.iova) / lps;
    for (uint64_t p = first; p <= last; ++p) {
      uint64_t& word = r.bits[p / 64];
      if (word == 0) {  // skip clean words quickly
        p |= 63;
        continue;
      }
      const uint64_t bit = uint64_t{1} << (p % 64);
      if ((word & bit) == 0) continue;
      word &= ~bit;
      // Mark every report page the logged page overlaps inside the range.
      const uint64_t a_lo = std::max(r.iova + p * lps, iova);
      const uint64_t a_hi = std::min(r.iova + p * lps + lps, end);
      for (uint64_t b = (a_lo - iova) / page_size;
           b <= (a_hi - 1 - iova) / page_size; ++b) {
        (*bitmap)[b / 64] |= uint64_t{1} << (b % 64);
      }
    }
  }
  return absl::OkStatus();
}

// ---- EmulatedDevice: a handle on the Core. ----

absl::StatusOr<std::unique_ptr<EmulatedDevice>> EmulatedDevice::Create(
    EmulatedDeviceConfig config) {
  if (absl::Status s = ValidateEmulatedDeviceConfig(config); !s.ok()) return s;
  base::UniqueFd log;
  if (!config.dma_write_log.empty()) {
    const int fd =
        ::open(config.dma_write_log.c_str(),
               O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int err = errno;
      return absl::ErrnoToStatus(
          err, absl::StrCat("emulated device ", config.name,
                            ": cannot create dma_write_log \"",
                            absl::CEscape(config.dma_write_log), "\""));
    }
    log = base::UniqueFd(fd);
  }
  auto core = std::make_shared<Core>(
      config, GenerateContent(config.seed, config.state_size), std::move(log));
  return std::unique_ptr<EmulatedDevice>(
      new EmulatedDevice(std::move(config), std::move(core)));
}

EmulatedDevice::EmulatedDevice(EmulatedDeviceConfig config,
                               std::shared_ptr<Core> core)
    : config_(std::move(config)), core_(std::move(core)) {
  if (config_.dirty_rate > 0 || config_.dma_rate > 0) {
    workload_ = std::thread([core = core_.get()] {
      base::NameThisThread("emu-workload");
      core->RunWorkload();
    });
  }
}

EmulatedDevice::~EmulatedDevice() {
  core_->Shutdown();
  if (workload_.joinable()) workload_.join();
}

absl::StatusOr<vfio::MigFlags> EmulatedDevice::GetFlags() {
  return config_.flags;
}
absl::StatusOr<MigState> EmulatedDevice::GetState() {
  return core_->GetState();
}
absl::StatusOr<std::unique_ptr<DataStream>> EmulatedDevice::SetState(
    MigState target) {
  return core_->SetState(target);
}
absl::StatusOr<uint64_t> EmulatedDevice::GetStopCopySize() {
  return core_->GetStopCopySize();
}
absl::Status EmulatedDevice::StartDmaLogging(
    uint64_t page_size, const std::vector<IovaRange>& ranges) {
  return core_->StartDmaLogging(page_size, ranges);
}
absl::Status EmulatedDevice::ReportDmaLogging(uint64_t iova, uint64_t length,
                                              uint64_t page_size,
                                              std::vector<uint64_t>* bitmap) {
  return core_->ReportDmaLogging(iova, length, page_size, bitmap);
}
absl::Status EmulatedDevice::StopDmaLogging() {
  return core_->StopDmaLogging();
}
absl::Status EmulatedDevice::Reset() { return core_->Reset(); }
absl::StatusOr<std::string> EmulatedDevice::StateDigest() {
  return core_->StateDigest();
}
absl::Status EmulatedDevice::SimulateDmaWrite(uint64_t iova, uint64_t length) {
  return core_->SimulateDmaWrite(iova, length);
}
absl::Status EmulatedDevice::SimulateStateWrite(uint64_t offset,
                                                uint64_t length) {
  return core_->SimulateStateWrite(offset, length);
}

}  // namespace migd::device
