// migd/server/device_facts.h
//
// What plugins are told about each configured device (plugins::DeviceFacts):
// what every device says of itself (name, backend, migration flags) and what
// only its configuration knows, which each DeviceSpec adds (a kernel
// device's address and what sysfs says of it, read once at start; an
// emulated device's state format and size, which decide whether its state
// loads elsewhere).

#ifndef MIGD_SERVER_DEVICE_FACTS_H_
#define MIGD_SERVER_DEVICE_FACTS_H_

#include <memory>
#include <vector>

#include "migd/device/device.h"
#include "migd/device/vfio_paths.h"
#include "migd/migration/device_registry.h"
#include "migd/plugins/plugin.h"
#include "migd/server/device_backend.h"

namespace migd::server {

// The facts of every device in `specs` that `devices` has, in `specs`'
// order: BasicFacts, then what the spec adds (DeviceSpec::AddFacts, sysfs
// under `paths`). A sysfs file that cannot be read leaves its fact empty (a
// plugin that needs it does not claim the device); nothing here fails.
std::vector<plugins::DeviceFacts> FactsOf(
    const std::vector<std::unique_ptr<DeviceSpec>>& specs,
    const migration::DeviceRegistry& devices,
    const device::VfioPaths& paths = {});

// The facts of a device nothing more is known of: name, backend, flags.
plugins::DeviceFacts BasicFacts(device::Device& device);

}  // namespace migd::server

#endif  // MIGD_SERVER_DEVICE_FACTS_H_
