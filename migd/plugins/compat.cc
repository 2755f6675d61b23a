#include "migd/plugins/compat.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/base/reason.h"
#include "migd/vfio/uapi.h"

namespace migd::plugins {
namespace {

std::string PluginText(const std::string& name) {
  return name.empty() ? "(none)" : name;
}

}  // namespace

std::map<std::string, Binding> BindDevices(
    const Registry& registry, const std::vector<DeviceFacts>& facts) {
  std::map<std::string, Binding> out;
  for (const DeviceFacts& f : facts) {
    Binding b;
    b.facts = f;
    absl::StatusOr<const Plugin*> claimant = registry.ClaimantOf(f);
    if (claimant.ok()) {
      b.plugin = *claimant;
    } else {
      b.claim = claimant.status();
    }
    out.emplace(f.name, std::move(b));
  }
  return out;
}

absl::StatusOr<v1::CompatDescriptor> DescribeSource(const Binding& device) {
  if (!device.claim.ok()) return device.claim;
  v1::CompatDescriptor out;
  if (device.plugin == nullptr) return out;
  out.set_plugin(device.plugin->name());
  out.set_plugin_version(device.plugin->version());
  absl::StatusOr<Descriptor> d = device.plugin->Describe(device.facts);
  if (absl::IsUnimplemented(d.status())) return out;
  if (!d.ok()) return d.status();
  out.set_data(d->bytes);
  out.set_summary(d->summary);
  return out;
}

absl::StatusOr<std::optional<Incompatibility>> CheckDestination(
    const Binding& device, uint64_t migration_flags,
    const v1::DeviceDescriptor& source) {
  if (!device.claim.ok()) return device.claim;
  if (source.kind() != device.facts.backend) {
    return Incompatibility{"kind", source.kind(), device.facts.backend, ""};
  }
  if ((migration_flags & vfio::kMigStopCopy) == 0) {
    return Incompatibility{"stop_copy", "yes",
                           "no (the device's driver cannot load a state)", ""};
  }
  const std::string local_plugin =
      device.plugin == nullptr ? "" : device.plugin->name();
  if (source.compat().plugin() != local_plugin) {
    return Incompatibility{"plugin", PluginText(source.compat().plugin()),
                           PluginText(local_plugin), ""};
  }
  if (device.plugin == nullptr) return std::nullopt;
  absl::StatusOr<Verdict> v =
      device.plugin->Check(device.facts, source.compat().data());
  if (!v.ok() && !absl::IsUnimplemented(v.status())) return v.status();
  if (v.ok() && !v->compatible) {
    return Incompatibility{v->field.empty() ? "descriptor" : v->field,
                           v->source_value, v->destination_value, v->message};
  }
  absl::StatusOr<Capabilities> caps =
      device.plugin->GetCapabilities(device.facts);
  if (caps.ok() && caps->max_state_bytes > 0 &&
      source.state_size_bytes() > caps->max_state_bytes) {
    return Incompatibility{
        "state_size", absl::StrCat(source.state_size_bytes(), " bytes"),
        absl::StrCat("at most ", caps->max_state_bytes, " bytes"), ""};
  }
  return std::nullopt;
}

absl::Status IncompatibleError(const std::string& destination_device,
                               const std::string& source_device,
                               const Incompatibility& why) {
  return base::Error(
      absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_INCOMPATIBLE,
      absl::StrCat("device ", destination_device, ": the state of source ",
                   "device ", source_device, " cannot load here: ", why.field,
                   " differs (source ", why.source_value, ", destination ",
                   why.destination_value, ")",
                   why.message.empty() ? "" : absl::StrCat(": ", why.message)));
}

}  // namespace migd::plugins
