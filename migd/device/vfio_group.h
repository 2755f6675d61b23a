// migd/device/vfio_group.h
//
// Opens VFIO device fds the two ways the kernel offers, sharing what the
// kernel makes exclusive:
//
//  - group/container (every kernel): the device's IOMMU group from sysfs
//    (/sys/bus/pci/devices/<bdf>/iommu_group or
//    /sys/bus/mdev/devices/<uuid>/iommu_group) -> /dev/vfio/<N>,
//    VFIO_GROUP_SET_CONTAINER on a /dev/vfio/vfio container,
//    VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU), VFIO_GROUP_GET_DEVICE_FD("<bdf>" or
//    "<bdf> vf_token=<uuid>", or the mdev UUID). A group can be open in one
//    process only and a container holds several groups, so a VfioOpener keeps
//    one open group per group number and puts every group in one container
//    (a second container only when the kernel refuses to share the first).
//  - cdev + iommufd (6.6+ kernels built with CONFIG_VFIO_DEVICE_CDEV and
//    CONFIG_IOMMUFD; Debian's are not): open /dev/vfio/devices/vfioX,
//    VFIO_DEVICE_BIND_IOMMUFD to one shared /dev/iommu, IOMMU_IOAS_ALLOC
//    (once), VFIO_DEVICE_ATTACH_IOMMUFD_PT.
//
// Each opened fd comes with a keepalive (its group and container, or the
// iommufd) that the device holds until its fd is closed; the opener itself
// only remembers them weakly, so it may go away before the devices do. The
// owner is whoever builds devices; there is no global state. Thread-safe.
//
// The VF token is a secret: it goes to the kernel and nowhere else (not in
// errors, not in logs), and the buffers that carried it are wiped.

#ifndef MIGD_DEVICE_VFIO_GROUP_H_
#define MIGD_DEVICE_VFIO_GROUP_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "migd/base/unique_fd.h"
#include "migd/device/vfio_paths.h"
#include "migd/device/vfio_syscalls.h"

namespace migd::device {

// A VFIO container (/dev/vfio/vfio) with the type1v2 IOMMU set. Its fd is what
// a VMM-like user maps DMA through (VFIO_IOMMU_MAP_DMA).
class VfioContainer {
 public:
  explicit VfioContainer(base::UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }

 private:
  const base::UniqueFd fd_;
};

// An open VFIO group (/dev/vfio/<N>) attached to a container.
class VfioGroup {
 public:
  VfioGroup(int number, base::UniqueFd fd,
            std::shared_ptr<VfioContainer> container)
      : number_(number), container_(std::move(container)), fd_(std::move(fd)) {}
  int number() const { return number_; }
  int fd() const { return fd_.get(); }
  const std::shared_ptr<VfioContainer>& container() const { return container_; }

 private:
  const int number_;
  // Declared before fd_: the group is closed (leaving the container) first.
  const std::shared_ptr<VfioContainer> container_;
  const base::UniqueFd fd_;
};

// /dev/iommu with one IO address space that every cdev device attaches to.
class VfioIommufd {
 public:
  VfioIommufd(base::UniqueFd fd, uint32_t ioas_id)
      : fd_(std::move(fd)), ioas_id_(ioas_id) {}
  int fd() const { return fd_.get(); }
  uint32_t ioas_id() const { return ioas_id_; }

 private:
  const base::UniqueFd fd_;
  const uint32_t ioas_id_;
};

// An open VFIO device fd, the address errors name it by, and what must stay
// open as long as the fd is.
struct VfioDeviceFd {
  base::UniqueFd fd;
  std::string address;
  std::shared_ptr<const void> keepalive;
};

class VfioOpener {
 public:
  explicit VfioOpener(VfioPaths paths = {},
                      VfioSyscalls syscalls = VfioSyscalls::Real());

  VfioOpener(const VfioOpener&) = delete;
  VfioOpener& operator=(const VfioOpener&) = delete;

  const VfioPaths& paths() const { return paths_; }

  // The PCI device at `bdf` (NormalizePciAddress) through its group. With
  // `vf_token` (a UUID), asks for "<bdf> vf_token=<uuid>", as a VF of a PF
  // owned by a userspace driver requires. Errors (kNotFound, kUnavailable,
  // kPermissionDenied, kFailedPrecondition, kUnimplemented, ...) name the
  // device and the step, and say what to check.
  absl::StatusOr<VfioDeviceFd> OpenPci(
      absl::string_view bdf, const std::optional<std::string>& vf_token);

  // The mediated device `uuid` through its group (device name: the UUID).
  absl::StatusOr<VfioDeviceFd> OpenMdev(absl::string_view uuid);

  // The VFIO device cdev `path` ("/dev/vfio/devices/vfioN", resolved below
  // VfioPaths::dev), bound to the shared iommufd and attached to its IOAS.
  // kUnimplemented when the kernel lacks cdev/iommufd (CdevSupport). With
  // `vf_token`, binds with VFIO_DEVICE_BIND_FLAG_TOKEN (kernels that predate
  // it refuse with EINVAL).
  absl::StatusOr<VfioDeviceFd> OpenCdev(
      absl::string_view path, const std::optional<std::string>& vf_token);

  // OK when this kernel offers VFIO device cdevs and iommufd (/dev/iommu and
  // /dev/vfio/devices exist); kUnimplemented saying which is missing.
  absl::Status CdevSupport() const;

  // The IOMMU group number of the device whose sysfs directory is
  // `sysfs_device_dir` (it has an "iommu_group" link to .../iommu_groups/<N>).
  // kNotFound when the directory does not exist; kFailedPrecondition when it
  // has no group (the IOMMU is off).
  absl::StatusOr<int> IommuGroupOf(const std::string& sysfs_device_dir) const;

  // What is open now (groups, containers, iommufds held by live devices).
  size_t open_groups() const;
  size_t open_containers() const;

 private:
  // Opens (or shares) group `number` for the device at `sysfs_dir` and asks
  // it for `kernel_name`, which may carry a secret.
  absl::StatusOr<VfioDeviceFd> OpenInGroup(const std::string& sysfs_dir,
                                           const std::string& address,
                                           std::string kernel_name);
  absl::StatusOr<std::shared_ptr<VfioGroup>> GroupLocked(
      int number, const std::string& address, const std::string& sysfs_dir)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::shared_ptr<VfioContainer>> NewContainer(
      const std::string& address) const;
  absl::StatusOr<std::shared_ptr<VfioIommufd>> IommufdLocked(
      const std::string& address) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits out EINTR.
  int Ioctl(int fd, unsigned long request, void* arg) const;

  const VfioPaths paths_;
  const VfioSyscalls sys_;

  mutable absl::Mutex mu_;
  std::map<int, std::weak_ptr<VfioGroup>> groups_ ABSL_GUARDED_BY(mu_);
  std::vector<std::weak_ptr<VfioContainer>> containers_ ABSL_GUARDED_BY(mu_);
  std::weak_ptr<VfioIommufd> iommufd_ ABSL_GUARDED_BY(mu_);
};

// Sets the VF token of the SR-IOV PF whose VFIO device fd is `device_fd`
// (`address` names it in errors): VFIO_DEVICE_FEATURE with
// VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN and the 16
// bytes of `token` (a UUID). Every later open of one of the PF's VFs must
// present it. The kernel keeps it while the PF stays bound to vfio-pci (its
// fd closing does not clear it), but whoever opens the PF next may set
// another. kInvalidArgument for a malformed token (never echoed);
// kUnimplemented when the device is no vfio-pci PF (ENOTTY); the errno
// status otherwise. The buffer that carried the token is wiped.
absl::Status SetPciVfToken(int device_fd, const std::string& address,
                           absl::string_view token,
                           const VfioSyscalls& syscalls);

}  // namespace migd::device

#endif  // MIGD_DEVICE_VFIO_GROUP_H_
