// migd/host/modalias.h
//
// Which VFIO driver module a PCI device gets: its own variant driver when a
// module says it drives the device, else plain vfio-pci. VFIO variant
// drivers declare the devices they drive with "vfio_pci:" aliases, which
// depmod collects into <root>/lib/modules/<release>/modules.alias (one file
// for the whole tree, updates/ and extra/ included):
//
//   alias vfio_pci:v00001AC3d00000101sv*sd*bc*sc*i* acme_vfio_pci
//   alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci
//
// A device's own sysfs `modalias` reads
// "pci:v00001AC3d00000101sv00001AC3sd00000080bc02sc00i00"; with "pci:"
// replaced by "vfio_pci:" it is matched against each pattern with
// fnmatch(3). The most specific match wins, the one with the fewest '*'
// (libvirt 10.0's rule; Debian 12's libvirt 9.0 cannot choose).
//
// A vendor plugin may prefer a module for a device (the plugin ABI's
// preferred_driver); the order is: the operator's explicit choice, the
// plugin's preference, the most specific alias, vfio_pci.
//
// The result is a module name (underscores, as modules.alias, modprobe and
// /sys/module spell it), not a driver name: the name a driver registers
// under /sys/bus/pci/drivers/ is the driver's own choice ("vfio-pci" for
// module vfio_pci) and is known once the module is loaded (modules.h,
// DriverOfModule).

#ifndef MIGD_HOST_MODALIAS_H_
#define MIGD_HOST_MODALIAS_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migd::host {

// One "alias vfio_pci:... MODULE" line of modules.alias.
struct VfioPciAlias {
  std::string pattern;  // "vfio_pci:v00001AC3d00000101sv*sd*bc*sc*i*"
  std::string module;   // "acme_vfio_pci"
};

// The "vfio_pci:" aliases in modules.alias text, in file order. Blank lines,
// '#' comments and other aliases are skipped. kInvalidArgument naming
// `source` and the line number for an "alias" line that is not "alias
// PATTERN MODULE".
absl::StatusOr<std::vector<VfioPciAlias>> ParseVfioPciAliases(
    absl::string_view text, absl::string_view source);

// "<root>/lib/modules/<release>/modules.alias"; an empty `release` is the
// running kernel's (uname -r).
std::string ModulesAliasPath(absl::string_view root,
                             absl::string_view release = "");

// Reads and parses ModulesAliasPath(root, release). kNotFound naming the
// path when it does not exist (depmod has not run for that kernel).
absl::StatusOr<std::vector<VfioPciAlias>> LoadVfioPciAliases(
    absl::string_view root, absl::string_view release = "");

// The module a device gets, and why in words.
struct VfioModuleChoice {
  std::string module;  // canonical: "acme_vfio_pci", "vfio_pci"
  // "alias vfio_pci:v00001AC3d00000101sv*sd*bc*sc*i* of acme_vfio_pci
  // matches (5 wildcards)", "no vfio_pci alias matches: vfio-pci",
  // "chosen explicitly: acme_vfio_pci", "preferred by plugin acme: alias
  // vfio_pci:v00001AC3d00000101sv*sd*bc*sc*i* of acme_vfio_pci matches".
  std::string reason;
};

// A module someone other than the operator prefers for a device.
struct ModulePreference {
  std::string module;  // as given: a module or driver name
  std::string source;  // who prefers it, for the reason: "plugin acme"
};

// The preference for the PCI device `bdf`, if any: what a vendor plugin
// says (the server wires it to the plugin that claims the device). An
// error when it cannot be told (the plugin failed, two plugins claim the
// device alike).
using ModulePreferenceFn =
    std::function<absl::StatusOr<std::optional<ModulePreference>>(
        const std::string& bdf)>;

// Chooses the module for `device` (its name, for messages) whose sysfs
// modalias is `modalias`:
//   - `explicit_module` when not empty (a module or driver name; '-' becomes
//     '_'): an operator's choice overrides everything else;
//   - else `preference`'s module, when given, checked as CheckModuleFits
//     checks a named driver;
//   - else the module of the matching alias with the fewest '*'; one module
//     matching through several aliases is one candidate;
//   - else "vfio_pci".
// kInvalidArgument when `modalias` is not a "pci:" modalias or
// `explicit_module` is not a module name; kFailedPrecondition naming both
// modules, their patterns and the device when two different modules match
// with the same fewest wildcards (choose one explicitly), and naming the
// preference's source when its module is no module name or does not fit
// the device (no choice rather than another driver than the one wanted).
absl::StatusOr<VfioModuleChoice> ChooseVfioPciModule(
    absl::string_view device, absl::string_view modalias,
    const std::vector<VfioPciAlias>& aliases,
    absl::string_view explicit_module = "",
    const std::optional<ModulePreference>& preference = std::nullopt);

// ChooseVfioPciModule for PCI device `bdf` without an explicit module,
// with the preference `prefer` gives for it (none when `prefer` is null).
// `prefer`'s error is kFailedPrecondition naming the device.
absl::StatusOr<VfioModuleChoice> ChooseVfioPciModuleFor(
    const std::string& bdf, absl::string_view modalias,
    const std::vector<VfioPciAlias>& aliases, const ModulePreferenceFn& prefer);

// Whether `module` (a module or driver name; '-' becomes '_') may drive the
// device `device` (its name, for messages) whose sysfs modalias is
// `modalias`, by `aliases` (modules.alias): the check of a driver the
// operator names, which ChooseVfioPciModule takes on trust.
//   - A module with "vfio_pci:" aliases (a variant driver) drives only the
//     devices one of them matches, matched as ChooseVfioPciModule matches
//     ("pci:" made "vfio_pci:", fnmatch(3)). vfio_pci's own catch-all alias
//     (vfio_pci:v*d*sv*sd*bc*sc*i*) matches every device.
//   - A module with no "vfio_pci:" alias at all (pci-stub, a variant driver
//     depmod knows no aliases of) is not checked: it fits.
// Returns why it fits, in words ("alias vfio_pci:v00001AC3d00000101sv*sd*bc*
// sc*i* of acme_vfio_pci matches", "module pci_stub has no vfio_pci alias:
// not checked against the device"). kFailedPrecondition naming the module,
// its aliases, the device, its ids and modalias when none of its aliases
// matches; kInvalidArgument when `modalias` is not a "pci:" modalias or
// `module` is not a module name.
absl::StatusOr<std::string> CheckModuleFits(
    absl::string_view device, absl::string_view modalias,
    const std::vector<VfioPciAlias>& aliases, absl::string_view module);

}  // namespace migd::host

#endif  // MIGD_HOST_MODALIAS_H_
