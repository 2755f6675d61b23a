#include "migd/server/emulated_backend.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "migd/base/reason.h"
#include "migd/device/emulated_spec.h"

namespace migd::server {
namespace {

class EmulatedOpener final : public DeviceOpener {
 public:
  absl::StatusOr<std::unique_ptr<device::Device>> Open(
      const DeviceSpec& spec) override {
    const auto* e = dynamic_cast<const EmulatedSpec*>(&spec);
    if (e == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", spec.name(), ": a \"", spec.kind(),
                       "\" device given to the emulated backend"));
    }
    auto made = device::EmulatedDevice::Create(e->config());
    if (!made.ok()) {
      return base::Annotate(made.status(), absl::StrCat("device ", e->name()));
    }
    return std::unique_ptr<device::Device>(*std::move(made));
  }
};

}  // namespace

void EmulatedSpec::AddFacts(plugins::DeviceFacts& facts,
                            const device::VfioPaths& /*paths*/) const {
  facts.parameters = absl::StrCat("format=", config_.state_format,
                                  " size=", config_.state_size);
}

absl::StatusOr<std::unique_ptr<DeviceSpec>> EmulatedBackend::Parse(
    absl::string_view line) const {
  absl::StatusOr<device::EmulatedDeviceConfig> c =
      device::ParseEmulatedDeviceLine(line);
  if (!c.ok()) return c.status();
  return std::make_unique<EmulatedSpec>(*std::move(c));
}

std::unique_ptr<DeviceOpener> EmulatedBackend::NewOpener(
    const BuildOptions& /*options*/) const {
  return std::make_unique<EmulatedOpener>();
}

absl::StatusOr<std::vector<std::unique_ptr<DeviceSpec>>> EmulatedFromList(
    absl::string_view names, uint64_t state_size, uint64_t seed) {
  std::vector<std::unique_ptr<DeviceSpec>> out;
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
    out.push_back(std::make_unique<EmulatedSpec>(std::move(c)));
  }
  return out;
}

}  // namespace migd::server
