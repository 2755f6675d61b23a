// migd/dirty/tracker.h
//
// DMA dirty-page tracking for one job: starts the devices' DMA logging over the
// requested IOVA ranges, collects their bitmaps each pre-copy iteration and a
// final time after they stopped, and holds what the VMM has not taken yet.
// Pending bitmaps of one (device, range) are merged with OR, so memory stays
// bounded by one bitmap per range per device however slow the consumer is,
// and no dirty page is ever dropped.
//
// The kernel's rule: a device that cannot report (no DMA logging, or a report
// that fails, e.g. EOPNOTSUPP on kernels without the IOVA-bitmap helpers)
// must be treated as having dirtied every page. Such ranges are served with
// all_dirty set, and the tracker says so through its notices.
//
// Thread-safe.

#ifndef MIGD_DIRTY_TRACKER_H_
#define MIGD_DIRTY_TRACKER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/device/device.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::dirty {

// kInvalidArgument naming the problem unless: page_size is a power of two
// >= 4096, 1..256 ranges (the kernel's PAGE_SIZE/16 limit), each page aligned,
// non-empty and not overlapping another, at most 2^28 pages in all.
absl::Status ValidateTracking(uint64_t page_size,
                              const std::vector<device::IovaRange>& ranges);

class Tracker {
 public:
  Tracker(std::vector<device::Device*> devices, uint64_t page_size,
          std::vector<device::IovaRange> ranges);

  // Stops logging on devices where it was started.
  ~Tracker();

  // Starts DMA logging on every device. A device that cannot log is tracked
  // as all-dirty (see notices()); only unexpected errors fail.
  absl::Status Start();

  // Reads and clears every device's bitmaps into the pending set. `final`
  // marks the collection after the devices stopped; after it the tracker is
  // closed and consumers drain what is left.
  void Collect(uint32_t iteration, bool final);

  // Stops logging (idempotent).
  void Stop();

  // Waits until something is pending or the tracker closed and drained, at
  // most `timeout`; moves the pending bitmaps into `out`. Returns false once
  // closed and nothing is left.
  bool Take(absl::Duration timeout, std::vector<v1::DirtyPages>* out);

  // Ends the stream early (job failed or cancelled): consumers return.
  void Close();

  // "device emu1: DMA logging unavailable (...): every page is reported
  // dirty", one per such device.
  std::vector<std::string> notices() const;

 private:
  struct Slot {
    size_t device = 0;
    size_t range = 0;
    std::vector<uint64_t> bits;  // pending, ORed
    bool all_dirty = false;
    bool pending = false;
    uint32_t iteration = 0;
    bool final = false;
  };

  void MarkAllDirty(size_t device, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::vector<device::Device*> devices_;
  const uint64_t page_size_;
  const std::vector<device::IovaRange> ranges_;

  mutable absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);  // device-major
  std::vector<bool> logging_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> unable_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> notices_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace migd::dirty

#endif  // MIGD_DIRTY_TRACKER_H_
