// migd/host/allocator.h
//
// Picks a free device of a class for an owner (a libvirt domain, a job),
// puts it on its VFIO driver (or creates an mdev instance), and releases it
// again: the host side of HostService's AllocateDevices, ReleaseDevices and
// ListAllocations, and of a PrepareIncoming that names a device class.
//
// A class is a PCI device by ids ("1ac3:0101", "1ac3:0101:1ac3:0080", hex,
// either case) or an mdev type, on a named parent or the first (by name)
// that has an instance available.
//
// A PCI device is free when it matches the ids, no allocation holds it, no
// job of the agent holds it (AllocatorOptions::claimed_by), migd did not
// bind it by hand (BindDevice: the operator's), its VFIO group is not held
// by another process, and its IOMMU group is viable. Among the free ones:
// those already on the chosen driver first, then the lowest address. The
// driver: the one the request names, else migd's choice (modalias.h).
//
// Each call is all-or-nothing: the allocation is recorded durably before
// its device moves (allocation_store.h), and when a later device of the
// call fails, the ones the call allocated are released again, in reverse;
// the error names the request that failed and why. Allocating again for an
// owner and key it holds returns the same device (after finishing a bind or
// creation a crash cut short). Calls are serialized: two calls racing for
// the last free device never both get it.
//
// What moves devices is HostActions: the agent's HostService (its checks,
// its per-device locks, its binding store), or RecordedHostActions here.
//
// Errors: kInvalidArgument for a malformed request; kNotFound when no
// device of the class exists; kFailedPrecondition with the cause "busy"
// (AllocatorCause) when every candidate is taken (the message lists them
// and their holders) or a key is held for another class; with "store" when
// the record cannot be written (nothing moved); else the HostActions error.

#ifndef MIGD_HOST_ALLOCATOR_H_
#define MIGD_HOST_ALLOCATOR_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "migd/host/allocation_store.h"
#include "migd/host/binder.h"
#include "migd/host/binding_store.h"
#include "migd/host/iommu_group.h"
#include "migd/host/modalias.h"
#include "migd/host/modules.h"
#include "migd/host/names.h"
#include "migd/host/sysfs.h"

namespace migd::host {

struct DeviceClass {
  std::string pci_ids;      // either this
  std::string mdev_type;    // or this,
  std::string mdev_parent;  // optionally with this
};

// "1ac3:0101", "mdev mbochs-small", "mdev mbochs-small on mbochs".
std::string DescribeClass(const DeviceClass& c);

struct DeviceRequest {
  std::string key;
  DeviceClass device_class;
  // PCI: the module to bind to ("vfio_pci"); empty: migd's choice.
  std::string driver;
};

// Where the statuses the allocator makes itself say what went wrong:
// "busy" (nothing free, a key held for another class), "store" (the record
// could not be written), "" for the others.
std::string AllocatorCause(const absl::Status& status);

// What the allocator does to the host.
class HostActions {
 public:
  virtual ~HostActions() = default;

  struct Bound {
    std::string driver;    // the driver the device is on now
    bool changed = false;  // false: it was there already
  };
  // Binds PCI device `bdf` to `module` ("" migd's choice), recording the
  // bind durably first so that UnbindPci returns it after a restart.
  virtual absl::StatusOr<Bound> BindPci(const std::string& bdf,
                                        const std::string& module) = 0;
  // Returns `bdf` to where it was before migd bound it; OK when migd has no
  // record of binding it.
  virtual absl::Status UnbindPci(const std::string& bdf) = 0;
  // Creates an instance `uuid` of `type` on `parent`.
  virtual absl::Status CreateMdev(const std::string& parent,
                                  const std::string& type,
                                  const std::string& uuid) = 0;
  // Removes instance `uuid`; OK when there is none.
  virtual absl::Status RemoveMdev(const std::string& uuid) = 0;
};

// HostActions through Binder and a BindingStore (record, bind, forget the
// record on failure; unbind, forget), without a service's locks.
class RecordedHostActions final : public HostActions {
 public:
  // Not owned; must outlive this.
  RecordedHostActions(Sysfs sysfs, ModuleLoader& modules, GroupUsage& usage,
                      BindingStore& bindings, std::string kernel_release = "")
      : sysfs_(std::move(sysfs)),
        modules_(modules),
        usage_(usage),
        bindings_(bindings),
        kernel_release_(std::move(kernel_release)) {}

  absl::StatusOr<Bound> BindPci(const std::string& bdf,
                                const std::string& module) override;
  absl::Status UnbindPci(const std::string& bdf) override;
  absl::Status CreateMdev(const std::string& parent, const std::string& type,
                          const std::string& uuid) override;
  absl::Status RemoveMdev(const std::string& uuid) override;

 private:
  Sysfs sysfs_;
  ModuleLoader& modules_;
  GroupUsage& usage_;
  BindingStore& bindings_;
  std::string kernel_release_;
};

struct AllocatorOptions {
  // The job of the agent holding the device `host_name` (a PCI address),
  // "" when none; null: none ever.
  std::function<std::string(const std::string& host_name)> claimed_by;
  // What migd bound by hand: such a device is the operator's, not free.
  // Null: none.
  const BindingStore* bindings = nullptr;
  // The kernel whose modules.alias decides the driver ("" the running one).
  std::string kernel_release;
  // A vendor plugin's preferred driver for a device, for a request that
  // names none (modalias.h). Null: none.
  ModulePreferenceFn module_preference;
};

class Allocator {
 public:
  // `sysfs` is read only; `usage`, `actions` and `store` are not owned and
  // must outlive the allocator.
  Allocator(Sysfs sysfs, GroupUsage& usage, HostActions& actions,
            AllocationStore& store, AllocatorOptions options = {});

  // Allocates a device for each request, for `owner`, in request order (see
  // above). Returns the allocations in request order.
  absl::StatusOr<std::vector<Allocation>> Allocate(
      const std::string& owner, const std::vector<DeviceRequest>& requests);

  // Releases everything `owner` holds, in reverse order of allocation: a
  // PCI device the allocation bound returns to its original driver, an mdev
  // instance is removed. Returns what was released (empty: nothing held).
  // When a device cannot be released its allocation stays (a later call
  // retries) and the error names it and what was released.
  absl::StatusOr<std::vector<Allocation>> Release(const std::string& owner);

  // Every allocation, in order; only `owner`'s when it is not empty.
  std::vector<Allocation> List(const std::string& owner = "") const;

  // The allocation holding `host_name` (a PCI address, an mdev UUID).
  std::optional<Allocation> Holding(const std::string& host_name) const;

 private:
  // Picks, records and takes a device for `request`.
  absl::StatusOr<Allocation> AllocateOne(const std::string& owner,
                                         const DeviceRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Allocation> AllocatePci(const std::string& owner,
                                         const DeviceRequest& request,
                                         const PciIds& ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Allocation> AllocateMdev(const std::string& owner,
                                          const DeviceRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes what a crash may have cut short of `a`, held already.
  absl::Status Finish(const Allocation& a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns `a`'s device and forgets it.
  absl::Status ReleaseOne(const Allocation& a)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Sysfs sysfs_;
  GroupUsage& usage_;
  HostActions& actions_;
  AllocationStore& store_;
  const AllocatorOptions options_;
  mutable absl::Mutex mu_;
};

}  // namespace migd::host

#endif  // MIGD_HOST_ALLOCATOR_H_
