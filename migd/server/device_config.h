// migd/server/device_config.h
//
// Which devices an agent manages, from its flags and an optional config file,
// and which backend drives each. The file has one device per line; blank
// lines and lines starting with '#' are ignored:
//
//   emulated NAME [size=] [seed=] [flags=] [fail_arc=] [corrupt_stream_at=]
//   vfio NAME bdf=0000:00:04.0 [vf_token=UUID]
//   vfio NAME mdev=UUID
//   vfio NAME cdev=/dev/vfio/devices/vfio0 [vf_token=UUID]
//   vfio NAME fd_socket=/path/to/vmm.sock
//
// (device/emulated_spec.h and device/vfio_spec.h define the keys.)

#ifndef MIGD_SERVER_DEVICE_CONFIG_H_
#define MIGD_SERVER_DEVICE_CONFIG_H_

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "migd/device/emulated_device.h"
#include "migd/device/fd_handoff.h"
#include "migd/device/vfio_group.h"
#include "migd/device/vfio_spec.h"
#include "migd/migration/device_registry.h"

namespace migd::server {

// One configured device; the alternative is its backend.
using DeviceConfig =
    std::variant<device::EmulatedDeviceConfig, device::VfioDeviceConfig>;

// The device's name.
const std::string& DeviceConfigName(const DeviceConfig& config);

// Parses config file text. Errors name the line number and the bad token; a
// name used twice, or a kernel device (same source and address) configured
// twice, is an error naming both lines.
absl::StatusOr<std::vector<DeviceConfig>> ParseDevicesConfig(
    absl::string_view text);

// Emulated devices named in a comma-separated list, all of `state_size`
// bytes; each device's content seed mixes `seed` with its name, so devices
// on one agent differ and the same name and seed always give the same state.
absl::StatusOr<std::vector<device::EmulatedDeviceConfig>> EmulatedFromList(
    absl::string_view names, uint64_t state_size, uint64_t seed);

struct BuildOptions {
  // Where sysfs and /dev are (tests use a fake tree).
  device::VfioPaths vfio_paths;
  // How long a fd_socket device waits for its VMM's message.
  absl::Duration handoff_timeout = device::kDefaultHandoffTimeout;
};

// Creates every device with its backend (emulated: generates the content;
// vfio: opens the device, sharing one VFIO container and one open group per
// IOMMU group across the kernel devices) and registers them. Errors name the
// device; on error every device already opened is closed again.
absl::StatusOr<std::unique_ptr<migration::DeviceRegistry>> BuildDevices(
    const std::vector<DeviceConfig>& configs, const BuildOptions& options = {});
absl::StatusOr<std::unique_ptr<migration::DeviceRegistry>> BuildDevices(
    const std::vector<device::EmulatedDeviceConfig>& configs);

}  // namespace migd::server

#endif  // MIGD_SERVER_DEVICE_CONFIG_H_
