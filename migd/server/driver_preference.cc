// migd/server/driver_preference.cc

#include "migd/server/driver_preference.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/base/log.h"
#include "migd/device/vfio_paths.h"
#include "migd/device/vfio_spec.h"
#include "migd/server/vfio_backend.h"

namespace migd::server {
namespace {

// What the plugins are told of the host PCI device `bdf` now: what a
// configured "vfio NAME bdf=ADDR" device's plugin is told, NAME the agent's
// name of it in `names`, else its address.
plugins::DeviceFacts HostPciFacts(
    const std::string& root, const std::map<std::string, std::string>& names,
    const std::string& bdf) {
  device::VfioDeviceConfig config;
  auto own = names.find(bdf);
  config.name = own != names.end() ? own->second : bdf;
  config.source = device::VfioDeviceConfig::Source::kPci;
  config.address = bdf;
  device::VfioPaths paths;
  paths.sys = absl::StrCat(root, "/sys");
  plugins::DeviceFacts facts;
  facts.name = config.name;
  facts.backend = kVfioKind;
  VfioSpec(std::move(config)).AddFacts(facts, paths);
  return facts;
}

}  // namespace

host::ModulePreferenceFn PluginDriverPreference(
    const plugins::Registry* registry, std::string sysfs_root,
    std::map<std::string, std::string> device_names) {
  return [registry, root = std::move(sysfs_root),
          names = std::move(device_names)](const std::string& bdf)
             -> absl::StatusOr<std::optional<host::ModulePreference>> {
    const plugins::DeviceFacts facts = HostPciFacts(root, names, bdf);
    absl::StatusOr<const plugins::Plugin*> plugin = registry->ClaimantOf(facts);
    if (!plugin.ok()) return plugin.status();
    if (*plugin == nullptr) return std::nullopt;
    absl::StatusOr<std::string> module = (*plugin)->PreferredDriver(facts);
    if (!module.ok()) return module.status();
    if (module->empty()) return std::nullopt;
    return host::ModulePreference{*module,
                                  absl::StrCat("plugin ", (*plugin)->name())};
  };
}

host::PrepareHostFn PluginPrepareHost(
    const plugins::Registry* registry, std::string sysfs_root,
    std::map<std::string, std::string> device_names) {
  return [registry, root = std::move(sysfs_root),
          names = std::move(device_names)](
             host::Bus bus, const std::string& bdf) -> absl::Status {
    if (bus != host::Bus::kPci) return absl::OkStatus();
    const plugins::DeviceFacts facts = HostPciFacts(root, names, bdf);
    absl::StatusOr<const plugins::Plugin*> plugin = registry->ClaimantOf(facts);
    if (!plugin.ok()) return plugin.status();
    if (*plugin == nullptr) return absl::OkStatus();
    // The plugin's failure comes as kInternal, which a bind keeps for a
    // rollback that failed: the host is not ready for the device, a
    // precondition of the bind.
    if (absl::Status s = (*plugin)->PrepareHost(facts); !s.ok()) {
      return absl::FailedPreconditionError(s.message());
    }
    // The loader answers OK for a plugin without prepare_host too: say what
    // was asked, not what was done (the plugin logs that itself).
    base::LogInfo("host: pci device ", bdf,
                  facts.name != bdf ? absl::StrCat(" (", facts.name, ")") : "",
                  ": asked plugin ", (*plugin)->name(),
                  ", which claims it, to prepare the host before its VFIO "
                  "driver probes it: OK");
    return absl::OkStatus();
  };
}

}  // namespace migd::server
