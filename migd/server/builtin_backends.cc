#include "migd/server/builtin_backends.h"

#include <memory>

#include "migd/server/emulated_backend.h"
#include "migd/server/vfio_backend.h"

namespace migd::server {

absl::StatusOr<DeviceBackends> BuiltinDeviceBackends() {
  DeviceBackends backends;
  if (absl::Status s = backends.Register(std::make_unique<EmulatedBackend>());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = backends.Register(std::make_unique<VfioBackend>());
      !s.ok()) {
    return s;
  }
  return backends;
}

}  // namespace migd::server
