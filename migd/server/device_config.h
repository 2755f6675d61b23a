// migd/server/device_config.h
//
// Which devices an agent manages, from its flags and an optional config file.
// The file has one device per line ("emulated NAME key=value ..."); blank
// lines and lines starting with '#' are ignored.

#ifndef MIGD_SERVER_DEVICE_CONFIG_H_
#define MIGD_SERVER_DEVICE_CONFIG_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/device/emulated_device.h"
#include "migd/migration/device_registry.h"

namespace migd::server {

// Parses config file text; errors name the line number.
absl::StatusOr<std::vector<device::EmulatedDeviceConfig>> ParseDevicesConfig(
    absl::string_view text);

// Emulated devices named in a comma-separated list, all of `state_size`
// bytes; each device's content seed mixes `seed` with its name, so devices
// on one agent differ and the same name and seed always give the same state.
absl::StatusOr<std::vector<device::EmulatedDeviceConfig>> EmulatedFromList(
    absl::string_view names, uint64_t state_size, uint64_t seed);

// Creates the devices (generating emulated content) and registers them.
absl::StatusOr<std::unique_ptr<migration::DeviceRegistry>> BuildDevices(
    const std::vector<device::EmulatedDeviceConfig>& configs);

}  // namespace migd::server

#endif  // MIGD_SERVER_DEVICE_CONFIG_H_
