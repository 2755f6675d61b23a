// migd/plugins/plugin.h
//
// One loaded vendor plugin: the C table of vendor-plugins/include/migd/
// plugin.h behind C++ types and absl::Status errors, owning the shared
// object and the plugin's context. The agent's code never sees the C
// structures; a member the plugin does not provide (NULL, or beyond the
// table's struct_size because the plugin was built against an older header)
// answers kUnimplemented, and the caller falls back to the generic behaviour.
//
// Thread-safe as far as the plugin is (the ABI asks it to be).

#ifndef MIGD_PLUGINS_PLUGIN_H_
#define MIGD_PLUGINS_PLUGIN_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct migd_plugin;
struct migd_host;

namespace migd::plugins {

// What the agent knows of a device, as plugins see it (migd_device_info).
struct DeviceFacts {
  std::string name;
  std::string backend;      // "vfio", "emulated"
  std::string pci_address;  // empty when not PCI
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_device_id = 0;
  std::string driver;
  std::string modalias;
  std::string mdev_type;
  std::string sysfs_path;
  uint64_t migration_flags = 0;
  std::string parameters;  // "key=value ..."
};

struct Capabilities {
  bool migratable = true;
  std::string reason;  // why not, when !migratable
  std::string remedy;  // what to do instead
  uint64_t migration_flags = 0;
  std::string dirty_tracking;  // "device", "iommu", "none" or empty
  uint64_t dirty_page_sizes = 0;
  uint32_t max_concurrent_per_parent = 0;
  uint64_t max_state_bytes = 0;
};

struct Descriptor {
  std::string bytes;    // opaque to everyone but the plugin
  std::string summary;  // for people
};

struct Verdict {
  bool compatible = true;
  std::string field;
  std::string source_value;
  std::string destination_value;
  std::string message;
};

// Where a plugin's log lines go: (plugin name, level 0..2, message).
using PluginLog = std::function<void(const std::string& plugin, int level,
                                     const std::string& message)>;

class Plugin {
 public:
  // Takes a table returned by a plugin's entry point, checking it (ABI
  // version, size, name, claim) and calling its create. `handle` is the
  // dlopen handle that keeps the table alive (closed last; may be null for
  // a table linked into the caller, as tests do). `path` names the plugin
  // in errors. kFailedPrecondition naming the path and the problem: a newer
  // ABI (both versions), a table too small for the fields every version
  // has, no name or an invalid one, no claim, create failing.
  static absl::StatusOr<std::unique_ptr<Plugin>> Adopt(const migd_plugin* table,
                                                       void* handle,
                                                       const std::string& path,
                                                       PluginLog log);

  ~Plugin();
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;

  const std::string& name() const { return name_; }
  const std::string& version() const { return version_; }
  const std::string& description() const { return description_; }
  const std::string& path() const { return path_; }
  uint32_t abi_version() const;

  // The plugin's claim on `device`: 0 for none.
  int Claim(const DeviceFacts& device) const;

  // kUnimplemented when the plugin has no such function; otherwise the
  // plugin's answer, or an error naming the plugin, the device and its text.
  absl::StatusOr<Capabilities> GetCapabilities(const DeviceFacts& device) const;
  absl::StatusOr<Descriptor> Describe(const DeviceFacts& device) const;
  absl::StatusOr<Verdict> Check(const DeviceFacts& device,
                                const std::string& descriptor) const;
  absl::Status PrepareHost(const DeviceFacts& device) const;
  // The VFIO driver module the plugin wants `device` bound to (ABI 2's
  // preferred_driver, unchecked: the host's driver choice checks it); ""
  // when it has no preference or no such function. An error naming the
  // plugin and the device when the function fails.
  absl::StatusOr<std::string> PreferredDriver(const DeviceFacts& device) const;
  // Empty when the plugin has nothing to add.
  std::string ExplainErrno(const DeviceFacts& device,
                           const std::string& operation, int err) const;

 private:
  Plugin() = default;
  // Whether the table has `member` (it lies within struct_size and is set).
  template <typename Member>
  bool Has(Member migd_plugin::*member) const;
  absl::Status Failed(const char* what, const DeviceFacts& device, int rc,
                      const std::string& text) const;

  const migd_plugin* table_ = nullptr;
  void* handle_ = nullptr;
  void* context_ = nullptr;
  std::unique_ptr<migd_host> host_;
  PluginLog log_;
  std::string name_, version_, description_, path_;
};

}  // namespace migd::plugins

#endif  // MIGD_PLUGINS_PLUGIN_H_
