// migd/server/builtin_backends.h
//
// The device backends linked into the agent, registered by kind. The one
// place that names them: main wires this registry to the configuration,
// which knows none of them.

#ifndef MIGD_SERVER_BUILTIN_BACKENDS_H_
#define MIGD_SERVER_BUILTIN_BACKENDS_H_

#include "absl/status/statusor.h"
#include "migd/server/device_backend.h"

namespace migd::server {

// A registry with the emulated (emulated_backend.h) and kernel VFIO
// (vfio_backend.h) backends. Fails only as DeviceBackends::Register does,
// were two built-in backends to claim one kind.
absl::StatusOr<DeviceBackends> BuiltinDeviceBackends();

}  // namespace migd::server

#endif  // MIGD_SERVER_BUILTIN_BACKENDS_H_
