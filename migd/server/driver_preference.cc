// migd/server/driver_preference.cc

#include "migd/server/driver_preference.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/device/vfio_paths.h"
#include "migd/device/vfio_spec.h"
#include "migd/server/vfio_backend.h"

namespace migd::server {

host::ModulePreferenceFn PluginDriverPreference(
    const plugins::Registry* registry, std::string sysfs_root,
    std::map<std::string, std::string> device_names) {
  return [registry, root = std::move(sysfs_root),
          names = std::move(device_names)](const std::string& bdf)
             -> absl::StatusOr<std::optional<host::ModulePreference>> {
    // What a configured "vfio NAME bdf=ADDR" device's plugin is told.
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

}  // namespace migd::server
