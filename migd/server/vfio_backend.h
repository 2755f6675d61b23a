// migd/server/vfio_backend.h
//
// The "vfio" device backend: kernel VFIO devices (device/vfio_device.h).
// Config lines are device/vfio_spec.h's:
//
//   vfio NAME bdf=0000:00:04.0 [vf_token=UUID]
//   vfio NAME mdev=UUID
//   vfio NAME cdev=/dev/vfio/devices/vfio0 [vf_token=UUID]
//   vfio NAME fd_socket=/path/to/vmm.sock
//
// The devices of one build share one VFIO container and one open group per
// IOMMU group (device::VfioOpener). What plugins are told of a PCI device or
// an mdev is read from sysfs once, at start.

#ifndef MIGD_SERVER_VFIO_BACKEND_H_
#define MIGD_SERVER_VFIO_BACKEND_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/device/vfio_spec.h"
#include "migd/server/device_backend.h"

namespace migd::server {

inline constexpr char kVfioKind[] = "vfio";

// One configured kernel VFIO device.
class VfioSpec final : public DeviceSpec {
 public:
  // `config` is not validated here: Parse does that, and opening validates
  // again.
  explicit VfioSpec(device::VfioDeviceConfig config)
      : config_(std::move(config)) {}

  const device::VfioDeviceConfig& config() const { return config_; }

  const std::string& name() const override { return config_.name; }
  std::string kind() const override { return kVfioKind; }
  // The source's config key and the normalized address: "bdf=0000:00:04.0",
  // "mdev=<uuid>", "cdev=/dev/vfio/devices/vfio0", "fd_socket=/path".
  std::optional<std::string> AddressKey() const override;
  // A PCI device: its address and, from <sys>/bus/pci/devices/<bdf>, the
  // vendor, device and subsystem ids, the modalias and the bound driver. An
  // mdev: from <sys>/bus/mdev/devices/<uuid>, its type and driver. A cdev or
  // a handed-over fd: nothing (its sysfs place is not known from the
  // config). A file that cannot be read leaves its fact empty (a plugin
  // that needs it does not claim the device).
  void AddFacts(plugins::DeviceFacts& facts,
                const device::VfioPaths& paths) const override;

 private:
  const device::VfioDeviceConfig config_;
};

class VfioBackend final : public DeviceBackend {
 public:
  std::string kind() const override { return kVfioKind; }
  // device::ParseVfioDeviceLine's errors (a VF token is never repeated).
  absl::StatusOr<std::unique_ptr<DeviceSpec>> Parse(
      absl::string_view line) const override;
  // Opens through one device::VfioOpener on options.vfio_paths; fd_socket
  // devices wait at most options.handoff_timeout. Errors are
  // device::OpenVfioDevice's (naming the device and its address).
  std::unique_ptr<DeviceOpener> NewOpener(
      const BuildOptions& options) const override;
};

}  // namespace migd::server

#endif  // MIGD_SERVER_VFIO_BACKEND_H_
