// migd/device/vfio_device.h
//
// The kernel VFIO backend: a Device on a real VFIO device fd, driving the
// migration uAPI v2 with the kernel's own ioctls (VFIO_DEVICE_FEATURE
// MIGRATION / MIG_DEVICE_STATE / MIG_DATA_SIZE / DMA_LOGGING_START, REPORT,
// STOP; VFIO_DEVICE_RESET; VFIO_MIG_GET_PRECOPY_INFO and read()/write() on the
// data fd through VfioDataStream).
//
// State changes walk vfio::PlanArcs one arc (one SET ioctl) at a time, the
// same path the kernel would take for a far target, so that when an arc fails
// the error names it and the state the device was left in (GetState asks the
// kernel). Errors keep the errno (vfio_errors.h).
//
// Where the fd comes from is not this class's business: VfioOpener opens it
// through a group/container or a cdev + iommufd, fd_handoff receives it from a
// VMM. Closing the device never changes its migration state (a VMM may still
// own it).

#ifndef MIGD_DEVICE_VFIO_DEVICE_H_
#define MIGD_DEVICE_VFIO_DEVICE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "migd/base/unique_fd.h"
#include "migd/device/device.h"
#include "migd/device/vfio_data_stream.h"
#include "migd/device/vfio_syscalls.h"
#include "migd/vfio/uapi.h"

namespace migd::device {

class VfioDevice final : public Device {
 public:
  // Wraps the VFIO device fd `fd`. `name` is the agent's name for the device;
  // `address` is where it is (PCI address, mdev UUID, cdev path, or the name a
  // VMM handed it over under). Errors name both: "device edu0
  // (0000:00:04.0): ..." (just the address when the two are equal). `keepalive`
  // holds whatever must stay open while the fd is (its group and container, or
  // its iommufd); it is released after the fd is closed.
  //
  // `driver` is the driver the device is bound to as sysfs names it
  // ("vfio-pci"), for messages; empty when not known.
  //
  // Reads VFIO_DEVICE_FEATURE_MIGRATION once. A device whose driver offers
  // no migration (ENOTTY or EOPNOTSUPP: plain vfio-pci on a device without a
  // variant driver) opens all the same, with flags 0: it is listed, and
  // CheckMigratable, GetState, SetState and GetStopCopySize answer
  // kFailedPrecondition saying so (no ioctl) -- "device nvf0 (0000:03:00.1):
  // its driver vfio-pci offers no VFIO migration
  // (VFIO_DEVICE_FEATURE_MIGRATION: ENOTTY); bind a variant driver that
  // does". Other errors of that ioctl fail the open; so do flags that lack
  // STOP_COPY (kFailedPrecondition: the uAPI requires it).
  static absl::StatusOr<std::unique_ptr<VfioDevice>> Create(
      std::string name, std::string address, base::UniqueFd fd,
      std::shared_ptr<const void> keepalive = nullptr,
      VfioSyscalls syscalls = VfioSyscalls::Real(), std::string driver = "");

  // Ends any data session (its stream fails afterwards) and closes the fd.
  ~VfioDevice() override;

  VfioDevice(const VfioDevice&) = delete;
  VfioDevice& operator=(const VfioDevice&) = delete;

  const std::string& address() const { return address_; }
  int fd() const { return fd_.get(); }

  // Device.
  const std::string& name() const override { return name_; }
  std::string kind() const override { return "vfio"; }
  // The flags read at Create (they never change for a bound driver); 0 for
  // a device without migration.
  absl::StatusOr<vfio::MigFlags> GetFlags() override;
  // kFailedPrecondition when the driver offers no VFIO migration (above).
  absl::Status CheckMigratable() override { return no_migration_; }
  absl::StatusOr<vfio::MigState> GetState() override;
  // One SET per planned arc. A refused target (the planner's
  // kFailedPrecondition) issues no ioctl. On a failed arc: the code of
  // VfioErrnoCode(kSetArc, errno), and a message naming the arc, the walk and
  // the state the kernel reports afterwards:
  //   device edu0 (0000:00:04.0): SET_STATE RUNNING_P2P -> STOP: Input/output
  //   error (errno 5); on the way RUNNING -> STOP_COPY; device left in ERROR
  // The live data session survives only if the device is still in its group
  // of states (saving, or RESUMING).
  absl::StatusOr<std::unique_ptr<DataStream>> SetState(
      vfio::MigState target) override;
  // MIG_DATA_SIZE (Linux 6.2+; kUnimplemented before).
  absl::StatusOr<uint64_t> GetStopCopySize() override;
  // page_size: a power of two >= 4096 (a hint: the driver may pick another,
  // see dma_logging_page_size). Ranges: 1..(system page size / 16), non-empty,
  // aligned to page_size, non-overlapping, no overflow; else kInvalidArgument
  // before any ioctl. ENOTTY/EOPNOTSUPP (no DMA logging in this driver or
  // device) is kUnimplemented; EINVAL (e.g. already started) is
  // kFailedPrecondition.
  absl::Status StartDmaLogging(uint64_t page_size,
                               const std::vector<IovaRange>& ranges) override;
  // Zeroes `bitmap` (the kernel only sets bits), sizes it to one bit per
  // page_size page of [iova, iova+length), then DMA_LOGGING_REPORT.
  // page_size: a power of two >= 4096; length > 0; no overflow. EOPNOTSUPP is
  // kUnimplemented saying DMA logging reports are not supported by this
  // kernel/driver (VfioDmaReportError); on any error treat the range as dirty.
  absl::Status ReportDmaLogging(uint64_t iova, uint64_t length,
                                uint64_t page_size,
                                std::vector<uint64_t>* bitmap) override;
  absl::Status StopDmaLogging() override;
  // VFIO_DEVICE_RESET, retried a few times on EAGAIN (the PCI core could not
  // lock the device). Ends any data session. EINVAL (vfio-pci found no reset
  // method for the device) is kFailedPrecondition.
  absl::Status Reset() override;
  // kUnimplemented: a kernel device's state is opaque.
  absl::StatusOr<std::string> StateDigest() override;

  // VFIO_DEVICE_FEATURE_PROBE for DMA_LOGGING_START (SET): true when the
  // device supports DMA logging, false on ENOTTY/EOPNOTSUPP.
  absl::StatusOr<bool> ProbeDmaLogging();
  // The tracking page size the driver chose at the last successful
  // StartDmaLogging; 0 when logging is off.
  uint64_t dma_logging_page_size() const;

 private:
  VfioDevice(std::string name, std::string address, base::UniqueFd fd,
             std::shared_ptr<const void> keepalive, VfioSyscalls syscalls,
             vfio::MigFlags flags, absl::Status no_migration);

  // VFIO_DEVICE_FEATURE with `flags` and `size` bytes of `data` (copied in
  // and back out). Returns 0, or -1 with errno set.
  int Feature(uint32_t flags, void* data, size_t size);
  // Feature(), retried while it fails with EINTR.
  int FeatureNoEintr(uint32_t flags, void* data, size_t size);

  absl::StatusOr<vfio::MigState> GetStateLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One SET arc; the data fd the kernel returned (invalid when none).
  absl::StatusOr<base::UniqueFd> SetArcLocked(vfio::MigState from,
                                              vfio::MigState to)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  const std::string address_;
  const std::string who_;  // how errors name the device
  // Declared before fd_ so it is released after the fd is closed.
  const std::shared_ptr<const void> keepalive_;
  const base::UniqueFd fd_;
  const VfioSyscalls sys_;
  const vfio::MigFlags flags_;
  // OK, or why the device cannot migrate (its flags are then 0).
  const absl::Status no_migration_;
  const std::shared_ptr<VfioSessionTracker> sessions_;

  mutable absl::Mutex mu_;
  uint64_t dma_page_size_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace migd::device

#endif  // MIGD_DEVICE_VFIO_DEVICE_H_
