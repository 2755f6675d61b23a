#include "migd/server/device_facts.h"

#include <utility>

namespace migd::server {

plugins::DeviceFacts BasicFacts(device::Device& device) {
  plugins::DeviceFacts f;
  f.name = device.name();
  f.backend = device.kind();
  absl::StatusOr<vfio::MigFlags> flags = device.GetFlags();
  if (flags.ok()) f.migration_flags = *flags;
  return f;
}

std::vector<plugins::DeviceFacts> FactsOf(
    const std::vector<std::unique_ptr<DeviceSpec>>& specs,
    const migration::DeviceRegistry& devices, const device::VfioPaths& paths) {
  std::vector<plugins::DeviceFacts> out;
  for (const std::unique_ptr<DeviceSpec>& spec : specs) {
    device::Device* d = devices.Find(spec->name());
    if (d == nullptr) continue;
    plugins::DeviceFacts f = BasicFacts(*d);
    spec->AddFacts(f, paths);
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace migd::server
