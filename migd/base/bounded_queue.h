// migd/base/bounded_queue.h
//
// A blocking FIFO of at most `capacity` items between producer and consumer
// threads. Push waits while the queue is full, Pop while it is empty; that
// wait is the backpressure. Close() ends the input: Pop drains what is queued
// and then returns nullopt. Cancel() ends both sides at once: queued items are
// dropped, Push returns false and Pop nullopt from then on.
//
// Thread-safe.

#ifndef MIGD_BASE_BOUNDED_QUEUE_H_
#define MIGD_BASE_BOUNDED_QUEUE_H_

#include <cstddef>
#include <deque>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace migd::base {

template <typename T>
class BoundedQueue {
 public:
  // `capacity` >= 1.
  explicit BoundedQueue(size_t capacity)
      : capacity_(capacity == 0 ? 1 : capacity) {}

  BoundedQueue(const BoundedQueue&) = delete;
  BoundedQueue& operator=(const BoundedQueue&) = delete;

  // Appends `item`, waiting for room. False (the item is dropped) once the
  // queue is closed or cancelled.
  bool Push(T item) {
    absl::MutexLock lock(&mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return items_.size() < capacity_ || closed_;
    };
    mu_.Await(absl::Condition(&room));
    if (closed_) return false;
    items_.push_back(std::move(item));
    return true;
  }

  // The oldest item, waiting for one. nullopt once closed and drained, or
  // cancelled.
  std::optional<T> Pop() {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !items_.empty() || closed_;
    };
    mu_.Await(absl::Condition(&ready));
    if (items_.empty()) return std::nullopt;
    std::optional<T> item(std::move(items_.front()));
    items_.pop_front();
    return item;
  }

  // No more Push: Pop returns what is queued, then nullopt.
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

  // Drops what is queued and ends both sides now.
  void Cancel() {
    std::deque<T> dropped;
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
      dropped.swap(items_);
    }
    // `dropped` goes here, outside the lock: an item's destructor may take
    // locks of its own.
  }

  size_t size() const {
    absl::MutexLock lock(&mu_);
    return items_.size();
  }

 private:
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<T> items_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace migd::base

#endif  // MIGD_BASE_BOUNDED_QUEUE_H_
