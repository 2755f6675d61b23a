// migd/server/driver_preference.h
//
// A vendor plugin's say in which VFIO driver a PCI device gets: the host's
// driver choice (migd/host/modalias.h) asks through host::ModulePreferenceFn,
// and this answers from the plugins. The plugin asked is the one that
// claims the device (plugins::Registry::ClaimantOf), told what sysfs says
// of the device now (as a configured vfio device's facts are read), and
// what it names is its preferred_driver (ABI 2). Apart from HostService so
// that migd/host knows no plugin.

#ifndef MIGD_SERVER_DRIVER_PREFERENCE_H_
#define MIGD_SERVER_DRIVER_PREFERENCE_H_

#include <map>
#include <string>

#include "migd/host/modalias.h"
#include "migd/plugins/registry.h"

namespace migd::server {

// The preference of the plugin in `registry` (not owned; must outlive the
// result) that claims PCI device `bdf`, read below `sysfs_root` ("" the real
// /). `device_names` gives the agent's name of a configured device by its
// address (the plugins know it by that name); others are named by address.
// None when no plugin claims the device or the claimant names no module; an
// error when two plugins claim it alike or the claimant's preferred_driver
// fails.
host::ModulePreferenceFn PluginDriverPreference(
    const plugins::Registry* registry, std::string sysfs_root,
    std::map<std::string, std::string> device_names = {});

}  // namespace migd::server

#endif  // MIGD_SERVER_DRIVER_PREFERENCE_H_
