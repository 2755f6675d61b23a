#include "migd/server/device_config.h"

#include <functional>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/migration/device_states.h"
#include "migd/vfio/uapi.h"

namespace migd::server {
namespace {

// The first word of a config line.
absl::string_view Kind(absl::string_view line) {
  return line.substr(0, line.find_first_of(" \t"));
}

// "want a, b or c": what an unknown kind should have been.
std::string WantKinds(const DeviceBackends& backends) {
  const std::vector<std::string> kinds = backends.Kinds();
  if (kinds.empty()) return "no device kinds are registered";
  std::string out = "want ";
  for (size_t i = 0; i < kinds.size(); ++i) {
    if (i > 0) absl::StrAppend(&out, i + 1 == kinds.size() ? " or " : ", ");
    absl::StrAppend(&out, kinds[i]);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<DeviceSpec>>> ParseDevicesConfig(
    absl::string_view text, const DeviceBackends& backends) {
  std::vector<std::unique_ptr<DeviceSpec>> out;
  std::map<std::string, int> name_lines;
  std::map<std::string, int> address_lines;  // "bdf=0000:00:04.0" -> line
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (trimmed.empty() || trimmed.front() == '#') continue;
    const std::string where = absl::StrCat("line ", line_no);
    const absl::string_view kind = Kind(trimmed);
    const DeviceBackend* backend = backends.Find(kind);
    if (backend == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": bad token \"", kind,
                       "\": unknown device kind (", WantKinds(backends), ")"));
    }
    absl::StatusOr<std::unique_ptr<DeviceSpec>> spec = backend->Parse(trimmed);
    if (!spec.ok()) return base::Annotate(spec.status(), where);
    const std::string& name = (*spec)->name();
    if (std::optional<std::string> key = (*spec)->AddressKey();
        key.has_value()) {
      if (auto [it, fresh] = address_lines.emplace(*key, line_no); !fresh) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": device ", name, ": ", *key,
                         " is already configured on line ", it->second));
      }
    }
    if (auto [it, fresh] = name_lines.emplace(name, line_no); !fresh) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": device name \"", name,
                       "\" is already used on line ", it->second));
    }
    out.push_back(*std::move(spec));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<migration::DeviceRegistry>> BuildDevices(
    const std::vector<std::unique_ptr<DeviceSpec>>& specs,
    const DeviceBackends& backends, const BuildOptions& options) {
  auto registry = std::make_unique<migration::DeviceRegistry>();
  // One opener per backend for the whole build, made when its first device
  // is opened; the devices keep what they share open after it goes.
  std::map<std::string, std::unique_ptr<DeviceOpener>, std::less<>> openers;
  for (const std::unique_ptr<DeviceSpec>& spec : specs) {
    const std::string kind = spec->kind();
    auto opener = openers.find(kind);
    if (opener == openers.end()) {
      const DeviceBackend* backend = backends.Find(kind);
      if (backend == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("device ", spec->name(), ": unknown device kind \"",
                         kind, "\" (", WantKinds(backends), ")"));
      }
      opener = openers.emplace(kind, backend->NewOpener(options)).first;
    }
    absl::StatusOr<std::unique_ptr<device::Device>> d =
        opener->second->Open(*spec);
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

}  // namespace migd::server
