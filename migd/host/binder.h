// migd/host/binder.h
//
// Moves a device onto a VFIO driver and back, through the kernel's
// driver_override (never new_id: new_id makes a driver claim every unbound
// device with that ID, at once, in no order anyone chose):
//
//   1. driver_override := the VFIO driver (only that driver may now bind);
//   2. <dev>/driver/unbind := <device>, when it is on a driver;
//   3. the host is prepared for the device (PrepareHostFn, when the binder
//      has one): the device is on no driver now, and its VFIO driver has
//      not probed it yet, which is when a vendor's host setting must be
//      made (a devlink port function capability of a VF, say, which its
//      vendor documents as set while the VF is on no driver, and which the
//      variant driver reads as it probes);
//   4. /sys/bus/<bus>/drivers_probe := <device> (the kernel probes it
//      synchronously: when the write returns, the probe is over);
//   5. verify <dev>/driver names the VFIO driver, and that the IOMMU group
//      is still viable.
//
// Before step 1 nothing is written: the device must exist, must not be in
// use (on a VFIO driver whose group another process holds: unbinding it
// would block in the kernel until that process lets go), its IOMMU group
// must be viable (iommu_group.h) not counting the device itself, and the
// driver must be registered, its module loaded first when it is not.
//
// Any failure from step 1 on is rolled back in reverse, from whatever state
// the device is in: unbind from the driver it landed on (if any, and not its
// original), restore the original driver_override ("\n" clears it when it
// was "(null)"), re-probe so that it returns to its original driver (when it
// had one), and verify. The error names the step that failed, what the
// kernel said, and how the rollback went; kInternal when the rollback
// failed too (the message then says where the device was left).
//
// A module Bind loaded stays loaded when a later step fails: unloading it
// could take other devices with it, and a VFIO variant driver binds nothing
// by itself (its ID table is override-only). What step 3 did to the host
// stays too when a later step fails: there is no inverse to call (a
// plugin's prepare_host has none).
//
// PCI devices are named by address ("0000:03:00.1"); platform devices by
// their sysfs name ("fff51000.ethernet"), with the same steps on
// /sys/bus/platform and its vfio-platform driver. No platform driver offers
// VFIO migration today; platform binding is here so that the same agent can
// hand such a device to a VM, not migrate it.

#ifndef MIGD_HOST_BINDER_H_
#define MIGD_HOST_BINDER_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/host/iommu_group.h"
#include "migd/host/modules.h"
#include "migd/host/sysfs.h"

namespace migd::host {

enum class Bus { kPci, kPlatform };

// "pci", "platform": the name under /sys/bus.
absl::string_view BusName(Bus bus);

// Where a device is: its driver and its driver_override.
struct Binding {
  std::optional<std::string> driver;    // nullopt: on no driver
  std::optional<std::string> override;  // nullopt: "(null)", none
  bool operator==(const Binding&) const = default;
};

// What Bind did, for Unbind to undo.
struct BindRecord {
  Bus bus = Bus::kPci;
  std::string device;    // normalized: "0000:03:00.1", "fff51000.ethernet"
  std::string driver;    // the driver Bind put it on: "acme_vfio_pci"
  Binding original;      // where it was before
  bool changed = false;  // false: it was on `driver` already; nothing done
};

// Prepares the host for `device` on `bus` (normalized, as BindRecord names
// it) at step 3 of a bind that moves it to a VFIO driver: after it has left
// its driver, before that driver probes it. Not called when the device is
// on that driver already, nor by Unbind or UnbindToNoDriver. OK when there
// is nothing to prepare; an error fails the bind, which is rolled back
// (the error's code is the bind's, so kInternal would read as a failed
// rollback: return another). The server wires it to the vendor plugin
// that claims the device (its prepare_host); migd/host knows no plugin.
using PrepareHostFn =
    std::function<absl::Status(Bus bus, const std::string& device)>;

class Binder {
 public:
  // `modules` and `usage` are not owned and must outlive the binder.
  // `prepare_host` may be null: nothing to prepare.
  Binder(Sysfs sysfs, ModuleLoader& modules, GroupUsage& usage,
         PrepareHostFn prepare_host = nullptr);

  // Binds `device` on `bus` to the driver `module` registers (module names
  // as in modules.h; "vfio-pci" and "vfio_pci" are the same module), as
  // described above. OK with changed = false when it is on that driver
  // already. Errors, each naming the device:
  //   kInvalidArgument: `device` or `module` malformed;
  //   kNotFound: no such device, or no such module (modprobe's words);
  //   kFailedPrecondition: in use, no IOMMU group, group not viable,
  //     or the module registers no driver on the bus; nothing written;
  //   the failing step's code (rolled back) or kInternal (rollback failed)
  //     from step 1 on, PrepareHostFn's error included ("before the probe:
  //     <its message>").
  absl::StatusOr<BindRecord> Bind(Bus bus, absl::string_view device,
                                  absl::string_view module);

  // Returns the device `record` names to where it was before Bind (its
  // original driver and driver_override), rolling back as Bind does on a
  // failure. OK at once when it is there already. Also from where a Bind or
  // Unbind cut short between its steps (a crash) leaves it: on no driver,
  // or on its original driver with driver_override naming record.driver.
  // kFailedPrecondition, nothing written, when it is on another driver
  // (someone else moved it) or it is in use.
  absl::Status Unbind(const BindRecord& record);

  // Leaves `device` on no driver with no driver_override (a later probe
  // gives it its default driver). OK at once when it is so already;
  // kFailedPrecondition when it is in use; rolled back on failure.
  absl::Status UnbindToNoDriver(Bus bus, absl::string_view device);

  // Where `device` is now. kNotFound when it does not exist.
  absl::StatusOr<Binding> Current(Bus bus, absl::string_view device) const;

 private:
  Sysfs sysfs_;
  ModuleLoader& modules_;
  GroupUsage& usage_;
  PrepareHostFn prepare_host_;
};

}  // namespace migd::host

#endif  // MIGD_HOST_BINDER_H_
