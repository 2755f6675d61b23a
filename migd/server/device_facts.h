// migd/server/device_facts.h
//
// What plugins are told about each configured device (plugins::DeviceFacts):
// its backend and, for a kernel device, what sysfs says of it (PCI ids,
// the bound driver, the modalias, an mdev's type), read once at start. An
// emulated device's parameters are its state format and size, which is what
// decides whether its state loads elsewhere.

#ifndef MIGD_SERVER_DEVICE_FACTS_H_
#define MIGD_SERVER_DEVICE_FACTS_H_

#include <vector>

#include "migd/device/vfio_group.h"
#include "migd/migration/device_registry.h"
#include "migd/plugins/plugin.h"
#include "migd/server/device_config.h"

namespace migd::server {

// The facts of every device in `configs` that `devices` has. A sysfs file
// that cannot be read leaves its fact empty (a plugin that needs it does
// not claim the device); nothing here fails.
std::vector<plugins::DeviceFacts> FactsOf(
    const std::vector<DeviceConfig>& configs,
    const migration::DeviceRegistry& devices,
    const device::VfioPaths& paths = {});

// The facts of a device nothing more is known of: name, backend, flags.
plugins::DeviceFacts BasicFacts(device::Device& device);

}  // namespace migd::server

#endif  // MIGD_SERVER_DEVICE_FACTS_H_
