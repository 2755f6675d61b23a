// migd/plugins/compat.h
//
// Whether a device's state can move from one host to another, decided
// before any of it moves. Each device is bound to the plugin that speaks for
// it (Registry::ClaimantOf), or to none. On the source, the plugin describes
// the device (an opaque descriptor and a summary) and the descriptor travels
// in the session header (DeviceDescriptor.compat); on the destination, the
// checks below decide, in this order, the first difference being the answer:
//
//   1. kind: the backend that drives each device ("emulated", "vfio");
//   2. stop_copy: the destination device can load a state at all (its
//      driver advertises STOP_COPY);
//   3. plugin: the same plugin (by name) speaks for both devices, or none
//      for either: a descriptor is read only by the plugin that made it;
//   4. the plugin's own check of the descriptor against the local device
//      (firmware, board id, state format, ...);
//   5. state_size: the source's state fits what the destination's plugin
//      says the device can hold (when it says).
//
// Core code: it knows no vendor, only what plugins answer.

#ifndef MIGD_PLUGINS_COMPAT_H_
#define MIGD_PLUGINS_COMPAT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migd/plugins/plugin.h"
#include "migd/plugins/registry.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::plugins {

// A device and the plugin that speaks for it.
struct Binding {
  DeviceFacts facts;
  // Null: no plugin claims the device (the generic behaviour).
  const Plugin* plugin = nullptr;
  // Not OK when two plugins claim the device at the same score: every use
  // of the device fails with it until an operator removes one.
  absl::Status claim;
};

// The binding of every device in `facts`, by device name.
std::map<std::string, Binding> BindDevices(
    const Registry& registry, const std::vector<DeviceFacts>& facts);

// Source side: DeviceDescriptor.compat for the device. No plugin: an empty
// descriptor. A plugin without describe: its name and version only (its
// check on the destination gets an empty descriptor). The claim's error, or
// the plugin's describe failing, is returned as is (the migration does not
// start).
absl::StatusOr<v1::CompatDescriptor> DescribeSource(const Binding& device);

// A difference that keeps the state from loading.
struct Incompatibility {
  std::string field;
  std::string source_value;
  std::string destination_value;
  std::string message;  // the plugin's words, when it had some
};

// Destination side: the checks above for the source device `source` (its
// session-header descriptor) against the local `device`, whose driver
// advertises `migration_flags`. nullopt when compatible. An error when a
// plugin cannot tell (its check failed) or the claim is in conflict.
absl::StatusOr<std::optional<Incompatibility>> CheckDestination(
    const Binding& device, uint64_t migration_flags,
    const v1::DeviceDescriptor& source);

// kFailedPrecondition with ERROR_REASON_INCOMPATIBLE: "device dst0: the
// source device src0's state cannot load here: state_format differs
// (source 1, destination 2)", plus the plugin's message.
absl::Status IncompatibleError(const std::string& destination_device,
                               const std::string& source_device,
                               const Incompatibility& why);

}  // namespace migd::plugins

#endif  // MIGD_PLUGINS_COMPAT_H_
