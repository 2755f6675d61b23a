// migd/host/iommu_group.h
//
// A device's IOMMU group, as far as binding it to VFIO is concerned: which
// group it is in, whether every other device in the group lets the group
// go to a user (viability), and whether a user holds the group now.
//
// The VFIO drivers, as migd counts them: "vfio-pci" and "vfio-platform", and
// every driver whose module uses vfio_pci_core or vfio_platform_base (it is
// listed in /sys/module/vfio_pci_core/holders/ or
// /sys/module/vfio_platform_base/holders/): the variant drivers
// (every <vendor>_vfio_pci) are built on the core.
//
// A group is viable when each of its devices is on no driver, on a VFIO
// driver, or on pci-stub or pcieport: since 5.19 the kernel lets a group go
// to a user when every bound driver manages its own DMA
// (driver_managed_dma), which vfio-pci and its variants, pci-stub and
// pcieport (PCIe ports, often in a group with the device behind them) do.
// A device on any other driver (a host NIC driver, say) does DMA the user
// could see: the kernel refuses the group, and migd refuses the bind before
// it starts.

#ifndef MIGD_HOST_IOMMU_GROUP_H_
#define MIGD_HOST_IOMMU_GROUP_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/host/sysfs.h"

namespace migd::host {

// The IOMMU group number of the device whose sysfs directory is `device_dir`
// (its `iommu_group` link: ".../kernel/iommu_groups/12" -> 12). `device`
// names it in errors. kFailedPrecondition when it has no group (no IOMMU,
// or the IOMMU is off: intel_iommu=on / amd_iommu=on); kNotFound when the
// device does not exist.
absl::StatusOr<int> IommuGroupOf(const Sysfs& sysfs,
                                 absl::string_view device_dir,
                                 absl::string_view device);

// The driver the device at `device_dir` is bound to (its `driver` link's
// name); nullopt when it is on none.
absl::StatusOr<std::optional<std::string>> BoundDriver(
    const Sysfs& sysfs, absl::string_view device_dir);

// True when the device at `device_dir` is bound to a VFIO driver (above).
bool OnVfioDriver(const Sysfs& sysfs, absl::string_view device_dir);

// OK when group `group` is viable (above), not counting device `except`
// (the device about to be bound; empty: count every device).
// kFailedPrecondition naming the group and each device in the way with its
// driver otherwise.
absl::Status CheckGroupViable(const Sysfs& sysfs, int group,
                              absl::string_view except = "");

// Whether a user (a VMM, another agent) holds an IOMMU group open.
class GroupUsage {
 public:
  virtual ~GroupUsage() = default;

  // True when group `group` is held by another process. An error when that
  // cannot be told.
  virtual absl::StatusOr<bool> InUse(int group) = 0;
};

// The kernel's answer: opens <root>/dev/vfio/<group> O_RDWR and closes it at
// once; the kernel lets one process hold a group (or a device of it through
// its cdev) and answers EBUSY to everyone else. The open itself holds the
// group for that instant: a VMM opening it at the same moment gets EBUSY
// and must retry. kFailedPrecondition when the node is missing (no legacy
// group interface, or a no-IOMMU group), the errno status otherwise.
class DevVfioGroupUsage final : public GroupUsage {
 public:
  explicit DevVfioGroupUsage(std::string root = "");
  absl::StatusOr<bool> InUse(int group) override;

 private:
  std::string root_;
};

}  // namespace migd::host

#endif  // MIGD_HOST_IOMMU_GROUP_H_
