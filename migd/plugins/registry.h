// migd/plugins/registry.h
//
// The vendor plugins an agent loaded, registered by name, and which one
// speaks for each device. Loading a directory takes every `*.so` in it, in
// name order; a plugin that fails to load (not a shared object, no entry
// point, a newer ABI, a name taken already) is reported with its reason and
// skipped, so that one bad file never keeps the agent from serving the
// devices the others (or the generic behaviour) handle.
//
// A device belongs to the plugin with the highest claim; no claim (every
// plugin says 0) means the generic behaviour from the device's migration
// flags; two plugins tying at the highest claim is an error naming both (an
// operator removes one, or a vendor makes its claim more specific).
//
// Filled at start, then read-only: thread-safe to read.

#ifndef MIGD_PLUGINS_REGISTRY_H_
#define MIGD_PLUGINS_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migd/plugins/plugin.h"

struct migd_plugin;

namespace migd::plugins {

// A plugin file that did not load, and why.
struct LoadFailure {
  std::string path;
  std::string reason;
};

class Registry {
 public:
  explicit Registry(PluginLog log = nullptr) : log_(std::move(log)) {}

  // dlopens `path`, resolves MIGD_PLUGIN_ENTRY_SYMBOL and registers the
  // table it returns. kFailedPrecondition naming the path: dlopen's error,
  // no entry point, what Plugin::Adopt refuses, or a name already taken
  // (naming the file that has it).
  absl::Status Load(const std::string& path);

  // Load for every "*.so" file in `dir`, in name order. Returns what failed
  // (each one also logged); kNotFound only when `dir` exists but cannot be
  // read. A missing directory loads nothing and is no error (no plugins
  // installed).
  absl::StatusOr<std::vector<LoadFailure>> LoadDirectory(
      const std::string& dir);

  // Registers a table linked into the caller (tests, built-ins) as if
  // loaded from `path`.
  absl::Status Adopt(const migd_plugin* table, const std::string& path);

  // The plugin with the highest claim on `device`; nullptr when none
  // claims it. kFailedPrecondition naming both plugins and their claim when
  // two tie at the highest.
  absl::StatusOr<const Plugin*> ClaimantOf(const DeviceFacts& device) const;

  // By name; nullptr when none has it.
  const Plugin* Find(const std::string& name) const;

  // In name order.
  std::vector<const Plugin*> List() const;

 private:
  absl::Status Register(std::unique_ptr<Plugin> plugin);

  PluginLog log_;
  std::map<std::string, std::unique_ptr<Plugin>> plugins_;
};

}  // namespace migd::plugins

#endif  // MIGD_PLUGINS_REGISTRY_H_
