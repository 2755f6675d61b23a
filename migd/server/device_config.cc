#include "migd/server/device_config.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "migd/base/reason.h"
#include "migd/device/emulated_spec.h"

namespace migd::server {

absl::StatusOr<std::vector<device::EmulatedDeviceConfig>> ParseDevicesConfig(
    absl::string_view text) {
  std::vector<device::EmulatedDeviceConfig> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (trimmed.empty() || trimmed.front() == '#') continue;
    auto config = device::ParseEmulatedDeviceLine(trimmed);
    if (!config.ok()) {
      return base::Annotate(config.status(), absl::StrCat("line ", line_no));
    }
    out.push_back(*std::move(config));
  }
  return out;
}

absl::StatusOr<std::vector<device::EmulatedDeviceConfig>> EmulatedFromList(
    absl::string_view names, uint64_t state_size, uint64_t seed) {
  std::vector<device::EmulatedDeviceConfig> out;
  for (absl::string_view name : absl::StrSplit(names, ',', absl::SkipEmpty())) {
    device::EmulatedDeviceConfig c;
    c.name = std::string(absl::StripAsciiWhitespace(name));
    c.state_size = state_size;
    // FNV-1a of the name, mixed with the seed.
    uint64_t h = 1469598103934665603ull;
    for (char ch : c.name)
      h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
    c.seed = seed * 0x9E3779B97F4A7C15ull ^ h;
    if (absl::Status s = device::ValidateEmulatedDeviceConfig(c); !s.ok()) {
      return base::Annotate(s,
                            absl::StrCat("emulated device \"", c.name, "\""));
    }
    out.push_back(std::move(c));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<migration::DeviceRegistry>> BuildDevices(
    const std::vector<device::EmulatedDeviceConfig>& configs) {
  auto registry = std::make_unique<migration::DeviceRegistry>();
  for (const device::EmulatedDeviceConfig& c : configs) {
    auto d = device::EmulatedDevice::Create(c);
    if (!d.ok()) {
      return base::Annotate(d.status(), absl::StrCat("device ", c.name));
    }
    if (absl::Status s = registry->Add(*std::move(d)); !s.ok()) return s;
  }
  return registry;
}

}  // namespace migd::server
