// migd/host/modules.h
//
// Kernel modules and the drivers they register. Two names, kept apart:
//
//   - a module name is what modprobe, modules.alias and /sys/module use:
//     underscores only ("vfio_pci", "acme_vfio_pci"; names.h,
//     CanonicalModuleName, turns '-' into '_' as modprobe does);
//   - a driver name is the directory under /sys/bus/<bus>/drivers/, chosen
//     by the driver's source: "vfio-pci" for module vfio_pci,
//     "acme_vfio_pci" for acme_vfio_pci, "vfio-platform" for vfio_platform.
//
// The one is found from the other only once the module is loaded (or built
// in): the kernel links /sys/module/<module>/drivers/<bus>:<driver> to each
// driver a module registers, so nothing here guesses a driver name from a
// module name.
//
// Loading goes through a ModuleLoader so that tests (and a host that
// forbids loading) can put their own in its place; the real one runs
// /sbin/modprobe with fork and exec, never through a shell.

#ifndef MIGD_HOST_MODULES_H_
#define MIGD_HOST_MODULES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/host/sysfs.h"

namespace migd::host {

// Loads kernel modules.
class ModuleLoader {
 public:
  virtual ~ModuleLoader() = default;

  // Loads `module` (a canonical module name) and what it depends on; OK
  // when it is already loaded or built in. kNotFound naming the module
  // when no such module exists for the running kernel; another error
  // naming it and saying why otherwise.
  virtual absl::Status Load(const std::string& module) = 0;
};

// Runs `<modprobe> -- <module>` (fork, exec, wait; stdout and stderr
// captured for the error message). Needs CAP_SYS_MODULE; a process that
// ignores SIGCHLD cannot wait for it (ECHILD), which is reported as such.
class ModprobeLoader final : public ModuleLoader {
 public:
  explicit ModprobeLoader(std::string modprobe = "/sbin/modprobe");

  // kNotFound when modprobe says the module was not found; kInternal when
  // modprobe cannot be run; kFailedPrecondition for any other failure,
  // with modprobe's exit status and its words.
  absl::Status Load(const std::string& module) override;

 private:
  std::string modprobe_;
};

// The driver that `module` (canonical name) registers on `bus` ("pci",
// "platform"): NAME in /sys/module/<module>/drivers/<bus>:NAME. kNotFound
// when the module is not loaded or registers no driver on that bus;
// kFailedPrecondition naming them when it registers more than one.
absl::StatusOr<std::string> DriverOfModule(const Sysfs& sysfs,
                                           absl::string_view module,
                                           absl::string_view bus);

}  // namespace migd::host

#endif  // MIGD_HOST_MODULES_H_
