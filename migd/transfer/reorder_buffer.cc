#include "migd/transfer/reorder_buffer.h"

#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/base/reason.h"

namespace migd::transfer {
namespace {

absl::Status Corrupt(absl::string_view message) {
  return base::Error(absl::StatusCode::kDataLoss,
                     v1::ERROR_REASON_STREAM_CORRUPTED, message);
}

std::string Range(uint64_t offset, uint64_t length) {
  return absl::StrCat("[", offset, ", ", offset + length, ")");
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReorderBuffer>> ReorderBuffer::Create(
    const ReorderBufferOptions& options) {
  if (options.num_devices == 0 || options.max_chunk_bytes == 0 ||
      options.cap_bytes / 2 < options.max_chunk_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reorder buffer: need devices > 0 (", options.num_devices,
        "), max_chunk_bytes > 0 (", options.max_chunk_bytes,
        ") and cap_bytes (", options.cap_bytes, ") >= 2 * max_chunk_bytes"));
  }
  return std::unique_ptr<ReorderBuffer>(new ReorderBuffer(options));
}

ReorderBuffer::ReorderBuffer(const ReorderBufferOptions& options)
    : options_(options), devices_(options.num_devices) {}

absl::Status ReorderBuffer::CheckLocked(const DecodedRequest& chunk) const {
  if (!chunk.is_chunk()) {
    return absl::InvalidArgumentError(
        "reorder buffer: only data chunks can be reordered");
  }
  const ChunkHeader& h = chunk.header();
  const uint64_t len = chunk.payload_size();
  if (h.device >= devices_.size()) {
    return Corrupt(absl::StrCat("chunk for device ", h.device,
                                " of a session with ", devices_.size(),
                                " devices"));
  }
  if (len == 0 || len > options_.max_chunk_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reorder buffer: device ", h.device, " chunk at offset ", h.offset,
        " has ", len, " bytes; 1..", options_.max_chunk_bytes, " allowed"));
  }
  if (h.offset > UINT64_MAX - len) {
    return Corrupt(absl::StrCat("device ", h.device, ": chunk at offset ",
                                h.offset, " runs past 2^64"));
  }
  const DeviceQueue& q = devices_[h.device];
  if (h.offset < q.delivered) {
    return Corrupt(absl::StrCat(
        "device ", h.device, ": chunk ", Range(h.offset, len),
        " overlaps bytes already delivered (up to ", q.delivered, ")"));
  }
  if (q.end.has_value() && h.offset + len > *q.end) {
    return Corrupt(absl::StrCat("device ", h.device, ": chunk ",
                                Range(h.offset, len),
                                " runs past the device's end at ", *q.end));
  }
  auto next = q.pending.lower_bound(h.offset);
  if (next != q.pending.end() && next->first < h.offset + len) {
    return Corrupt(
        absl::StrCat("device ", h.device, ": chunk ", Range(h.offset, len),
                     next->first == h.offset ? " duplicates " : " overlaps ",
                     "chunk ", Range(next->first, next->second.length)));
  }
  if (next != q.pending.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.length > h.offset) {
      return Corrupt(absl::StrCat("device ", h.device, ": chunk ",
                                  Range(h.offset, len), " overlaps chunk ",
                                  Range(prev->first, prev->second.length)));
    }
  }
  return absl::OkStatus();
}

bool ReorderBuffer::FitsLocked(const DecodedRequest& chunk) const {
  const uint64_t len = chunk.payload_size();
  const bool fills_gap =
      chunk.header().offset == devices_[chunk.header().device].delivered;
  // A chunk the writer cannot take yet leaves room for one that it can.
  const uint64_t limit = fills_gap
                             ? options_.cap_bytes
                             : options_.cap_bytes - options_.max_chunk_bytes;
  return held_bytes_ + len <= limit;
}

void ReorderBuffer::AddLocked(DecodedRequest chunk) {
  const ChunkHeader h = chunk.header();
  const uint64_t len = chunk.payload_size();
  devices_[h.device].pending.emplace(h.offset, Held{len, std::move(chunk)});
  held_bytes_ += len;
  ++held_chunks_;
  if (held_bytes_ > peak_held_bytes_) peak_held_bytes_ = held_bytes_;
}

absl::Status ReorderBuffer::Insert(DecodedRequest chunk, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  bool stalled = false;
  for (;;) {
    if (!cancelled_.ok()) return cancelled_;
    // Checked again after every wait: another stream may have delivered the
    // same range meanwhile.
    if (absl::Status s = CheckLocked(chunk); !s.ok()) return s;
    if (FitsLocked(chunk)) break;
    if (!stalled) {
      stalled = true;
      ++stalls_;
    }
    auto can_retry = [this, &chunk]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !cancelled_.ok() || FitsLocked(chunk);
    };
    if (!mu_.AwaitWithDeadline(absl::Condition(&can_retry), deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "reorder buffer: device ", chunk.header().device, " chunk at offset ",
          chunk.header().offset, " found no room under the ",
          options_.cap_bytes, "-byte cap until the deadline"));
    }
  }
  AddLocked(std::move(chunk));
  return absl::OkStatus();
}

absl::Status ReorderBuffer::TryInsert(DecodedRequest* chunk) {
  absl::MutexLock lock(&mu_);
  if (!cancelled_.ok()) return cancelled_;
  if (absl::Status s = CheckLocked(*chunk); !s.ok()) return s;
  if (!FitsLocked(*chunk)) {
    ++stalls_;
    return absl::ResourceExhaustedError(
        absl::StrCat("reorder buffer full (", held_bytes_, " of ",
                     options_.cap_bytes, " bytes held)"));
  }
  AddLocked(std::move(*chunk));
  *chunk = DecodedRequest();
  return absl::OkStatus();
}

bool ReorderBuffer::ReadyLocked(uint32_t device) const {
  const DeviceQueue& q = devices_[device];
  return !q.pending.empty() && q.pending.begin()->first == q.delivered;
}

bool ReorderBuffer::DoneLocked(uint32_t device) const {
  const DeviceQueue& q = devices_[device];
  return q.end.has_value() && q.delivered == *q.end;
}

DecodedRequest ReorderBuffer::TakeLocked(uint32_t device) {
  DeviceQueue& q = devices_[device];
  auto it = q.pending.begin();
  DecodedRequest chunk = std::move(it->second.chunk);
  const uint64_t len = it->second.length;
  q.pending.erase(it);
  q.delivered += len;
  held_bytes_ -= len;
  --held_chunks_;
  return chunk;
}

absl::StatusOr<DecodedRequest> ReorderBuffer::Pop(uint32_t device,
                                                  absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  if (device >= devices_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("reorder buffer: no device ", device));
  }
  auto can_proceed = [this, device]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !cancelled_.ok() || ReadyLocked(device) || DoneLocked(device);
  };
  if (!mu_.AwaitWithDeadline(absl::Condition(&can_proceed), deadline)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "reorder buffer: device ", device, " got no chunk at offset ",
        devices_[device].delivered, " until the deadline"));
  }
  if (!cancelled_.ok()) return cancelled_;
  if (ReadyLocked(device)) return TakeLocked(device);
  return absl::OutOfRangeError(absl::StrCat(
      "device ", device, " ended at ", devices_[device].delivered, " bytes"));
}

std::optional<DecodedRequest> ReorderBuffer::TryPop(uint32_t device) {
  absl::MutexLock lock(&mu_);
  if (device >= devices_.size() || !cancelled_.ok() || !ReadyLocked(device)) {
    return std::nullopt;
  }
  return TakeLocked(device);
}

absl::Status ReorderBuffer::EndDevice(uint32_t device, uint64_t total_bytes) {
  absl::MutexLock lock(&mu_);
  if (device >= devices_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("reorder buffer: no device ", device));
  }
  DeviceQueue& q = devices_[device];
  if (q.end.has_value() && *q.end != total_bytes) {
    return Corrupt(absl::StrCat("device ", device, " ended twice: at ", *q.end,
                                " and at ", total_bytes, " bytes"));
  }
  if (q.delivered > total_bytes) {
    return Corrupt(absl::StrCat("device ", device, " ends at ", total_bytes,
                                " bytes but ", q.delivered,
                                " were already delivered"));
  }
  if (!q.pending.empty()) {
    auto last = std::prev(q.pending.end());
    if (last->first + last->second.length > total_bytes) {
      return Corrupt(absl::StrCat(
          "device ", device, " ends at ", total_bytes, " bytes but chunk ",
          Range(last->first, last->second.length), " arrived"));
    }
  }
  q.end = total_bytes;
  return absl::OkStatus();
}

bool ReorderBuffer::device_complete(uint32_t device) const {
  absl::MutexLock lock(&mu_);
  return device < devices_.size() && DoneLocked(device);
}

void ReorderBuffer::Cancel(absl::Status why) {
  if (why.ok()) why = absl::CancelledError("reorder buffer cancelled");
  absl::MutexLock lock(&mu_);
  if (cancelled_.ok()) cancelled_ = std::move(why);
}

uint64_t ReorderBuffer::delivered_offset(uint32_t device) const {
  absl::MutexLock lock(&mu_);
  return device < devices_.size() ? devices_[device].delivered : 0;
}

uint64_t ReorderBuffer::held_bytes() const {
  absl::MutexLock lock(&mu_);
  return held_bytes_;
}

size_t ReorderBuffer::held_chunks() const {
  absl::MutexLock lock(&mu_);
  return held_chunks_;
}

uint64_t ReorderBuffer::peak_held_bytes() const {
  absl::MutexLock lock(&mu_);
  return peak_held_bytes_;
}

uint64_t ReorderBuffer::stalls() const {
  absl::MutexLock lock(&mu_);
  return stalls_;
}

}  // namespace migd::transfer
