#include "migd/server/device_config.h"

#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/device/emulated_spec.h"
#include "migd/device/vfio_open.h"
#include "migd/migration/device_states.h"

namespace migd::server {
namespace {

// The first word of a config line.
absl::string_view Kind(absl::string_view line) {
  return line.substr(0, line.find_first_of(" \t"));
}

}  // namespace

const std::string& DeviceConfigName(const DeviceConfig& config) {
  return std::visit([](const auto& c) -> const std::string& { return c.name; },
                    config);
}

absl::StatusOr<std::vector<DeviceConfig>> ParseDevicesConfig(
    absl::string_view text) {
  std::vector<DeviceConfig> out;
  std::map<std::string, int> name_lines;
  std::map<std::string, int> address_lines;  // "bdf=0000:00:04.0" -> line
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (trimmed.empty() || trimmed.front() == '#') continue;
    const std::string where = absl::StrCat("line ", line_no);
    const absl::string_view kind = Kind(trimmed);
    DeviceConfig config;
    if (kind == "emulated") {
      auto c = device::ParseEmulatedDeviceLine(trimmed);
      if (!c.ok()) return base::Annotate(c.status(), where);
      config = *std::move(c);
    } else if (kind == "vfio") {
      auto c = device::ParseVfioDeviceLine(trimmed);
      if (!c.ok()) return base::Annotate(c.status(), where);
      const std::string key =
          absl::StrCat(device::VfioSourceKey(c->source), "=", c->address);
      if (auto [it, fresh] = address_lines.emplace(key, line_no); !fresh) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": device ", c->name, ": ", key,
                         " is already configured on line ", it->second));
      }
      config = *std::move(c);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": bad token \"", kind,
                       "\": unknown device kind (want emulated or vfio)"));
    }
    const std::string& name = DeviceConfigName(config);
    if (auto [it, fresh] = name_lines.emplace(name, line_no); !fresh) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": device name \"", name,
                       "\" is already used on line ", it->second));
    }
    out.push_back(std::move(config));
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
    const std::vector<DeviceConfig>& configs, const BuildOptions& options) {
  auto registry = std::make_unique<migration::DeviceRegistry>();
  // Shares groups and containers across the kernel devices built here; the
  // devices keep what they use open after it goes.
  device::VfioOpener opener(options.vfio_paths);
  for (const DeviceConfig& config : configs) {
    absl::StatusOr<std::unique_ptr<device::Device>> d;
    if (const auto* e = std::get_if<device::EmulatedDeviceConfig>(&config)) {
      auto made = device::EmulatedDevice::Create(*e);
      if (made.ok()) {
        d = std::unique_ptr<device::Device>(*std::move(made));
      } else {
        d = base::Annotate(made.status(), absl::StrCat("device ", e->name));
      }
    } else {
      const auto& v = std::get<device::VfioDeviceConfig>(config);
      auto opened = device::OpenVfioDevice(v, opener, options.handoff_timeout);
      if (opened.ok()) {
        absl::StatusOr<vfio::MigFlags> flags = (*opened)->GetFlags();
        base::LogInfo("device ", v.name, ": kernel VFIO device ",
                      (*opened)->address(), " (",
                      device::VfioSourceKey(v.source), "=", v.address,
                      v.vf_token.has_value() ? ", with a VF token" : "",
                      "), migration flags ",
                      flags.ok() ? vfio::MigFlagsName(*flags) : "?");
        d = std::unique_ptr<device::Device>(*std::move(opened));
      } else {
        d = opened.status();
      }
    }
    if (!d.ok()) return d.status();
    // Devices are found in any state (a driver may keep it across close and
    // reopen). Nothing is changed here, where the role a device will have is
    // not known: the job that uses it applies the rule for the state it
    // finds (migration/device_states.h). What is found other than RUNNING is
    // said once, at open.
    if (absl::StatusOr<vfio::MigState> found = (*d)->GetState();
        found.ok() && *found != vfio::MigState::kRunning) {
      std::string what = absl::StrCat("device ", (*d)->name(), ": found in ",
                                      vfio::MigStateName(*found), ", ",
                                      migration::FoundStateNote(*found));
      if (migration::IsLeftOverState(*found)) {
        base::LogWarning(what);
      } else {
        base::LogInfo(what);
      }
    }
    if (absl::Status s = registry->Add(*std::move(d)); !s.ok()) return s;
  }
  return registry;
}

absl::StatusOr<std::unique_ptr<migration::DeviceRegistry>> BuildDevices(
    const std::vector<device::EmulatedDeviceConfig>& configs) {
  return BuildDevices(
      std::vector<DeviceConfig>(configs.begin(), configs.end()));
}

}  // namespace migd::server
