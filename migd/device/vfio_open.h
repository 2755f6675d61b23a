// migd/device/vfio_open.h
//
// Builds a VfioDevice from its config line (vfio_spec.h): opens the device
// fd the way the config says (group/container, mdev, cdev + iommufd, or a
// VMM's fd handoff) and wraps it.

#ifndef MIGD_DEVICE_VFIO_OPEN_H_
#define MIGD_DEVICE_VFIO_OPEN_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migd/device/fd_handoff.h"
#include "migd/device/vfio_device.h"
#include "migd/device/vfio_group.h"
#include "migd/device/vfio_spec.h"

namespace migd::device {

// Opens the device `config` describes (validated first: kInvalidArgument)
// through `opener`, which shares groups and containers across the devices it
// opens. fd_socket devices wait at most `handoff_timeout` for the VMM's
// message; their address is the name the VMM sent. Errors name the device
// (its config name and its address); when a VF's open fails and its PF is on
// vfio-pci, the error says that the PF owner's VF token is needed and how to
// get it.
absl::StatusOr<std::unique_ptr<VfioDevice>> OpenVfioDevice(
    const VfioDeviceConfig& config, VfioOpener& opener,
    absl::Duration handoff_timeout = kDefaultHandoffTimeout);

// The PF of the PCI device `bdf` (its sysfs `physfn` link below
// `paths.sys`), normalized; nullopt when it is no VF.
std::optional<std::string> PfOfVf(const std::string& bdf,
                                  const VfioPaths& paths);

}  // namespace migd::device

#endif  // MIGD_DEVICE_VFIO_OPEN_H_
