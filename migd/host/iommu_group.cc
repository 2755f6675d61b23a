// migd/host/iommu_group.cc

#include "migd/host/iommu_group.h"

#include <errno.h>
#include <fcntl.h>

#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "migd/base/unique_fd.h"

namespace migd::host {
namespace {

// Drivers that keep a group viable without being VFIO drivers (above).
bool ManagesOwnDma(absl::string_view driver) {
  return driver == "pci-stub" || driver == "pcieport";
}

}  // namespace

absl::StatusOr<int> IommuGroupOf(const Sysfs& sysfs,
                                 absl::string_view device_dir,
                                 absl::string_view device) {
  const std::string link = absl::StrCat(device_dir, "/iommu_group");
  absl::StatusOr<std::string> name = sysfs.LinkName(link);
  if (!name.ok()) {
    if (!sysfs.Exists(device_dir)) {
      return absl::NotFoundError(absl::StrCat("device ", device,
                                              " does not exist (no ",
                                              sysfs.Path(device_dir), ")"));
    }
    if (absl::IsNotFound(name.status())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", device, " is in no IOMMU group (no ", sysfs.Path(link),
          "): VFIO needs an IOMMU (is it on? intel_iommu=on / amd_iommu=on)"));
    }
    return name.status();
  }
  int group = -1;
  if (!absl::SimpleAtoi(*name, &group) || group < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device, ": ", sysfs.Path(link), " points at \"",
                     *name, "\", not a group number"));
  }
  return group;
}

absl::StatusOr<std::optional<std::string>> BoundDriver(
    const Sysfs& sysfs, absl::string_view device_dir) {
  absl::StatusOr<std::string> name =
      sysfs.LinkName(absl::StrCat(device_dir, "/driver"));
  if (absl::IsNotFound(name.status())) return std::nullopt;
  if (!name.ok()) return name.status();
  return std::optional<std::string>(*std::move(name));
}

bool OnVfioDriver(const Sysfs& sysfs, absl::string_view device_dir) {
  absl::StatusOr<std::optional<std::string>> driver =
      BoundDriver(sysfs, device_dir);
  if (!driver.ok() || !driver->has_value()) return false;
  if (**driver == "vfio-pci" || **driver == "vfio-platform") return true;
  // A built-in driver may have no `module` link: then it is not counted.
  absl::StatusOr<std::string> module =
      sysfs.LinkName(absl::StrCat(device_dir, "/driver/module"));
  if (!module.ok()) return false;
  for (absl::string_view core : {"vfio_pci_core", "vfio_platform_base"}) {
    if (sysfs.Exists(
            absl::StrCat("/sys/module/", core, "/holders/", *module))) {
      return true;
    }
  }
  return false;
}

absl::Status CheckGroupViable(const Sysfs& sysfs, int group,
                              absl::string_view except) {
  const std::string dir =
      absl::StrCat("/sys/kernel/iommu_groups/", group, "/devices");
  absl::StatusOr<std::vector<std::string>> members = sysfs.List(dir);
  if (!members.ok()) {
    return absl::Status(
        members.status().code(),
        absl::StrCat("IOMMU group ", group, ": ", members.status().message()));
  }
  std::vector<std::string> in_the_way;
  for (const std::string& m : *members) {
    if (m == except) continue;
    const std::string member_dir = absl::StrCat(dir, "/", m);
    absl::StatusOr<std::optional<std::string>> driver =
        BoundDriver(sysfs, member_dir);
    if (!driver.ok()) {
      return absl::Status(driver.status().code(),
                          absl::StrCat("IOMMU group ", group, ": device ", m,
                                       ": ", driver.status().message()));
    }
    if (!driver->has_value() || ManagesOwnDma(**driver) ||
        OnVfioDriver(sysfs, member_dir)) {
      continue;
    }
    in_the_way.push_back(absl::StrCat(m, " is bound to ", **driver));
  }
  if (!in_the_way.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "IOMMU group ", group,
        " is not viable: ", absl::StrJoin(in_the_way, ", "),
        " (every device in the group must be on a VFIO driver, pci-stub, "
        "pcieport or no driver; bind or unbind those first)"));
  }
  return absl::OkStatus();
}

DevVfioGroupUsage::DevVfioGroupUsage(std::string root)
    : root_(std::move(root)) {
  while (!root_.empty() && root_.back() == '/') root_.pop_back();
}

absl::StatusOr<bool> DevVfioGroupUsage::InUse(int group) {
  const std::string path = absl::StrCat(root_, "/dev/vfio/", group);
  base::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.valid()) return false;
  const int err = errno;
  if (err == EBUSY) return true;
  if (err == ENOENT) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot tell whether IOMMU group ", group, " is in use: ", path,
        " does not exist (no legacy VFIO group interface, or a no-IOMMU "
        "group)"));
  }
  return absl::ErrnoToStatus(
      err, absl::StrCat("cannot tell whether IOMMU group ", group,
                        " is in use: open ", path));
}

}  // namespace migd::host
