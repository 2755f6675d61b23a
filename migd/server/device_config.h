// migd/server/device_config.h
//
// Which devices an agent manages, from its config file, and the build that
// opens them. The file has one device per line; blank lines and lines
// starting with '#' are ignored:
//
//   KIND NAME [key=value ...]
//
// KIND chooses the backend registered under it (device_backend.h), which
// parses the rest of the line and later opens the device; this file knows no
// backend by name (builtin_backends.h lists the agent's).

#ifndef MIGD_SERVER_DEVICE_CONFIG_H_
#define MIGD_SERVER_DEVICE_CONFIG_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/migration/device_registry.h"
#include "migd/server/device_backend.h"

namespace migd::server {

// Parses config file text, each line by the backend of its first word.
// Errors name the line number and the bad token: an unknown kind (listing
// the registered ones), or what the backend refused. A name used twice, or
// a kernel device (the same DeviceSpec::AddressKey) configured twice, is an
// error naming both lines.
absl::StatusOr<std::vector<std::unique_ptr<DeviceSpec>>> ParseDevicesConfig(
    absl::string_view text, const DeviceBackends& backends);

// Opens every device in `specs` through the backend of its kind, one opener
// per backend for the whole build (so a backend shares what its devices
// share), and registers them. A device found in a state other than RUNNING
// is logged, not changed. Errors name the device: a kind `backends` lacks
// (kInvalidArgument), the backend's error, a name registered already
// (kAlreadyExists). On error every device already opened is closed again.
absl::StatusOr<std::unique_ptr<migration::DeviceRegistry>> BuildDevices(
    const std::vector<std::unique_ptr<DeviceSpec>>& specs,
    const DeviceBackends& backends, const BuildOptions& options = {});

}  // namespace migd::server

#endif  // MIGD_SERVER_DEVICE_CONFIG_H_
