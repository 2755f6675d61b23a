// migd/server/driver_preference.h
//
// A vendor plugin's say in how a host PCI device is bound to a VFIO driver:
// which driver (the host's driver choice, migd/host/modalias.h, asks
// through host::ModulePreferenceFn), and what the host needs before that
// driver probes the device (host::Binder calls host::PrepareHostFn between
// the unbind and the probe). Both answer from the plugin that claims the
// device (plugins::Registry::ClaimantOf), told what sysfs says of the
// device at the time of asking (as a configured vfio device's facts are
// read): its preferred_driver (ABI 2), its prepare_host. Apart from
// HostService so that migd/host knows no plugin.

#ifndef MIGD_SERVER_DRIVER_PREFERENCE_H_
#define MIGD_SERVER_DRIVER_PREFERENCE_H_

#include <map>
#include <string>

#include "migd/host/binder.h"
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

// Calls the prepare_host of the plugin in `registry` (not owned; must
// outlive the result) that claims the PCI device a bind is moving to a VFIO
// driver, told of the device as PluginDriverPreference tells it (at that
// point it is on no driver). Logs which plugin it asked. OK without asking
// when no plugin claims the device, and for a device on another bus than
// PCI (plugins are told of PCI devices only). Errors, which fail the bind:
// kFailedPrecondition naming the plugin, the device and the plugin's text
// when its prepare_host fails, or naming both plugins when two claim the
// device alike.
host::PrepareHostFn PluginPrepareHost(
    const plugins::Registry* registry, std::string sysfs_root,
    std::map<std::string, std::string> device_names = {});

}  // namespace migd::server

#endif  // MIGD_SERVER_DRIVER_PREFERENCE_H_
