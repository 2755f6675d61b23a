#include "migd/transfer/buffer_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace migd::transfer {
namespace internal {

// One mapped buffer. Owned by its PoolCore for the core's whole life.
struct PoolSlot {
  uint8_t* mem = nullptr;
  size_t mapped = 0;  // bytes mapped (whole pages)
  // Set while the buffer is lent to gRPC as a slice: the pool's memory must
  // outlive the slice even if everything else let go of the pool.
  std::shared_ptr<PoolCore> keepalive;
};

class PoolCore : public std::enable_shared_from_this<PoolCore> {
 public:
  PoolCore(size_t buffer_bytes, size_t mapped_bytes, size_t max_buffers)
      : buffer_bytes_(buffer_bytes),
        mapped_bytes_(mapped_bytes),
        max_buffers_(max_buffers) {}

  ~PoolCore() {
    for (auto& slot : slots_) munmap(slot->mem, slot->mapped);
  }

  // Takes a free buffer or maps a new one. nullopt (with *why set) when none
  // is available now; *why is OK when waiting could help.
  std::optional<PooledBuffer> TryTake(absl::Status* why) {
    PoolSlot* slot = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (!cancelled_.ok()) {
        *why = cancelled_;
        return std::nullopt;
      }
      if (!free_.empty()) {
        slot = free_.back();
        free_.pop_back();
        MarkLentLocked();
        return PooledBuffer(shared_from_this(), slot);
      }
      if (slots_.size() + mapping_ >= max_buffers_) {
        *why = absl::OkStatus();
        return std::nullopt;
      }
      ++mapping_;  // reserve the slot; map outside the lock
    }
    // MAP_POPULATE: the buffer is about to be filled whole, and one populate
    // call costs far less than a page fault per 4 KiB on the data path.
    void* mem = mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    const int err = errno;
    absl::MutexLock lock(&mu_);
    --mapping_;
    if (mem == MAP_FAILED) {
      *why = absl::ResourceExhaustedError(
          absl::StrCat("buffer pool: mapping a ", mapped_bytes_,
                       "-byte buffer failed: ", strerror(err)));
      return std::nullopt;
    }
    auto owned = std::make_unique<PoolSlot>();
    owned->mem = static_cast<uint8_t*>(mem);
    owned->mapped = mapped_bytes_;
    slot = owned.get();
    slots_.push_back(std::move(owned));
    MarkLentLocked();
    return PooledBuffer(shared_from_this(), slot);
  }

  absl::StatusOr<PooledBuffer> Acquire(absl::Time deadline) {
    bool waited = false;
    for (;;) {
      absl::Status why;
      std::optional<PooledBuffer> b = TryTake(&why);
      if (b.has_value()) return *std::move(b);
      if (!why.ok()) return why;
      absl::MutexLock lock(&mu_);
      if (!waited) {
        waited = true;
        ++waits_;
      }
      auto can_proceed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !cancelled_.ok() || !free_.empty() ||
               slots_.size() + mapping_ < max_buffers_;
      };
      if (!mu_.AwaitWithDeadline(absl::Condition(&can_proceed), deadline)) {
        return absl::DeadlineExceededError(absl::StrCat(
            "buffer pool: all ", max_buffers_, " buffers of ", buffer_bytes_,
            " bytes stayed in use until the deadline"));
      }
    }
  }

  void Release(PoolSlot* slot) {
    absl::MutexLock lock(&mu_);
    free_.push_back(slot);
    --in_use_;
  }

  void Cancel(absl::Status why) {
    if (why.ok()) why = absl::CancelledError("buffer pool cancelled");
    absl::MutexLock lock(&mu_);
    if (cancelled_.ok()) cancelled_ = std::move(why);
  }

  size_t buffer_bytes() const { return buffer_bytes_; }
  size_t max_buffers() const { return max_buffers_; }
  size_t in_use() const {
    absl::MutexLock lock(&mu_);
    return in_use_;
  }
  size_t peak_in_use() const {
    absl::MutexLock lock(&mu_);
    return peak_in_use_;
  }
  size_t allocated() const {
    absl::MutexLock lock(&mu_);
    return slots_.size();
  }
  uint64_t waits() const {
    absl::MutexLock lock(&mu_);
    return waits_;
  }

 private:
  void MarkLentLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++in_use_;
    if (in_use_ > peak_in_use_) peak_in_use_ = in_use_;
  }

  const size_t buffer_bytes_;
  const size_t mapped_bytes_;
  const size_t max_buffers_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<PoolSlot>> slots_ ABSL_GUARDED_BY(mu_);
  std::vector<PoolSlot*> free_ ABSL_GUARDED_BY(mu_);  // LIFO: warm buffers
  size_t mapping_ ABSL_GUARDED_BY(mu_) = 0;  // being mapped outside the lock
  size_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
  size_t peak_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t waits_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status cancelled_ ABSL_GUARDED_BY(mu_);
};

namespace {

// The destroy callback of a slice made by PooledBuffer::ToSlice. gRPC calls it
// once, on whatever thread drops the last reference.
void ReturnSlotToPool(void* user_data) {
  PoolSlot* slot = static_cast<PoolSlot*>(user_data);
  std::shared_ptr<PoolCore> core = std::move(slot->keepalive);
  core->Release(slot);
  // `core` may be the last reference: the pool's memory goes with it.
}

}  // namespace
}  // namespace internal

// ---- PooledBuffer ----

PooledBuffer::PooledBuffer(PooledBuffer&& other) noexcept
    : core_(std::move(other.core_)),
      slot_(std::exchange(other.slot_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

PooledBuffer& PooledBuffer::operator=(PooledBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    core_ = std::move(other.core_);
    slot_ = std::exchange(other.slot_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

PooledBuffer::~PooledBuffer() { reset(); }

uint8_t* PooledBuffer::data() const {
  return slot_ == nullptr ? nullptr : slot_->mem;
}

size_t PooledBuffer::capacity() const {
  return slot_ == nullptr ? 0 : core_->buffer_bytes();
}

absl::Span<uint8_t> PooledBuffer::writable() const {
  return absl::Span<uint8_t>(data(), capacity());
}

void PooledBuffer::set_size(size_t n) { size_ = std::min(n, capacity()); }

absl::Span<const uint8_t> PooledBuffer::contents() const {
  return absl::Span<const uint8_t>(data(), size_);
}

grpc::Slice PooledBuffer::ToSlice() && {
  internal::PoolSlot* slot = std::exchange(slot_, nullptr);
  const size_t n = std::exchange(size_, 0);
  if (slot == nullptr) return grpc::Slice();
  slot->keepalive = std::move(core_);
  return grpc::Slice(slot->mem, n, &internal::ReturnSlotToPool, slot);
}

void PooledBuffer::reset() {
  if (slot_ != nullptr) {
    core_->Release(std::exchange(slot_, nullptr));
  }
  core_.reset();
  size_ = 0;
}

// ---- BufferPool ----

absl::StatusOr<std::unique_ptr<BufferPool>> BufferPool::Create(
    size_t buffer_bytes, size_t max_buffers) {
  if (buffer_bytes == 0 || max_buffers == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("buffer pool: buffer_bytes (", buffer_bytes,
                     ") and max_buffers (", max_buffers, ") must be > 0"));
  }
  const long page = sysconf(_SC_PAGESIZE);
  const size_t page_bytes = page > 0 ? static_cast<size_t>(page) : 4096;
  if (buffer_bytes > std::numeric_limits<size_t>::max() - page_bytes ||
      max_buffers >
          std::numeric_limits<size_t>::max() / (buffer_bytes + page_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("buffer pool: ", max_buffers, " buffers of ", buffer_bytes,
                     " bytes overflow the address space"));
  }
  const size_t mapped =
      (buffer_bytes + page_bytes - 1) / page_bytes * page_bytes;
  return std::unique_ptr<BufferPool>(new BufferPool(
      std::make_shared<internal::PoolCore>(buffer_bytes, mapped, max_buffers)));
}

BufferPool::~BufferPool() {
  core_->Cancel(absl::CancelledError("buffer pool destroyed"));
}

absl::StatusOr<PooledBuffer> BufferPool::Acquire(absl::Time deadline) {
  return core_->Acquire(deadline);
}

std::optional<PooledBuffer> BufferPool::TryAcquire() {
  absl::Status why;
  return core_->TryTake(&why);
}

size_t BufferPool::Reserve(size_t n) {
  n = std::min(n, max_buffers());
  // Holding every buffer taken makes the pool map a new one for the next.
  std::vector<PooledBuffer> held;
  while (allocated() < n) {
    std::optional<PooledBuffer> b = TryAcquire();
    if (!b.has_value()) break;  // cancelled, or the kernel refused a mapping
    held.push_back(*std::move(b));
  }
  return allocated();
}

void BufferPool::Cancel(absl::Status why) { core_->Cancel(std::move(why)); }

size_t BufferPool::buffer_bytes() const { return core_->buffer_bytes(); }
size_t BufferPool::max_buffers() const { return core_->max_buffers(); }
size_t BufferPool::in_use() const { return core_->in_use(); }
size_t BufferPool::peak_in_use() const { return core_->peak_in_use(); }
size_t BufferPool::allocated() const { return core_->allocated(); }
uint64_t BufferPool::waits() const { return core_->waits(); }

}  // namespace migd::transfer
