// migd/host/mdev.h
//
// Mediated devices (mdev): a parent device whose driver offers virtual
// devices of some types, each instance named by a UUID.
//
//   /sys/class/mdev_bus/<parent>               -> the parent's directory
//     mdev_supported_types/<type>/name                 a description
//     mdev_supported_types/<type>/available_instances  how many more fit
//     mdev_supported_types/<type>/device_api           "vfio-pci", ...
//     mdev_supported_types/<type>/create               := <uuid> creates one
//     mdev_supported_types/<type>/devices/<uuid>       its instances
//   /sys/bus/mdev/devices/<uuid>               -> the instance's directory
//     remove                                           := 1 removes it
//     mdev_type                                        -> its type
//
// Parents are named as in /sys/class/mdev_bus: a PCI address for a PCI
// parent ("0000:00:02.0"), the device's name otherwise ("mbochs").

#ifndef MIGD_HOST_MDEV_H_
#define MIGD_HOST_MDEV_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/host/sysfs.h"

namespace migd::host {

// One type a parent offers.
struct MdevType {
  std::string id;    // the directory name: "mbochs-small", "i915-GVTg_V5_4"
  std::string name;  // `name`, empty when the driver gives none
  int available_instances = 0;
  std::string device_api;  // "vfio-pci"
  bool operator==(const MdevType&) const = default;
};

// One instance.
struct MdevInstance {
  std::string uuid;    // lowercase
  std::string parent;  // the parent's name
  std::string type;    // the type's id
  bool operator==(const MdevInstance&) const = default;
};

// The types `parent` offers, sorted by id. kNotFound when there is no such
// device; kFailedPrecondition when the device exists but offers no mdev
// types (its driver is not an mdev parent, or it is not loaded);
// kInvalidArgument for a malformed name.
absl::StatusOr<std::vector<MdevType>> ListMdevTypes(const Sysfs& sysfs,
                                                    absl::string_view parent);

// Every mdev instance, sorted by UUID; only `parent`'s when it is not empty.
absl::StatusOr<std::vector<MdevInstance>> ListMdevInstances(
    const Sysfs& sysfs, absl::string_view parent = "");

// Creates an instance of `type` on `parent` named `uuid` (validated and
// lowercased), or a fresh random (version 4) UUID when none is given; then
// verifies /sys/bus/mdev/devices/<uuid> exists. Returns the UUID. Refused,
// nothing written: errors as ListMdevTypes; kNotFound for a type the parent
// does not offer (naming the parent and the types it has);
// kResourceExhausted when the type has no available instances;
// kAlreadyExists when an instance with that UUID exists. A failed write is
// the kernel's errno status; a created instance that fails the check is
// removed again.
absl::StatusOr<std::string> CreateMdev(
    const Sysfs& sysfs, absl::string_view parent, absl::string_view type,
    std::optional<absl::string_view> uuid = std::nullopt);

// Removes instance `uuid` (its `remove` := "1") and verifies it is gone.
// kNotFound when there is no such instance; the kernel's errno status when
// it refuses (EBUSY while a user holds it open).
absl::Status RemoveMdev(const Sysfs& sysfs, absl::string_view uuid);

// A random version 4 UUID, lowercase, from getrandom(2); its errno status
// when that fails.
absl::StatusOr<std::string> RandomUuidV4();

}  // namespace migd::host

#endif  // MIGD_HOST_MDEV_H_
