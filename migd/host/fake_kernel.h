// migd/host/fake_kernel.h
//
// A fake sysfs tree under $TEST_TMPDIR and a fake kernel that answers
// writes to it, for migd/host's tests. The tree holds regular files and
// relative symlinks laid out as the kernel's are (/sys/bus/<bus>/devices,
// drivers, drivers_probe, /sys/module, /sys/kernel/iommu_groups,
// /sys/class/mdev_bus, /sys/bus/mdev/devices); the library reads it with
// plain reads, as it reads the real one. Writes reach the fake through
// SysfsWriter and change the tree as the kernel would:
//
//   driver_override := name   sets it ("\n" or "" clears it to "(null)");
//   <dev>/driver/unbind       removes the device's `driver` link (and the
//                             driver's link back);
//   drivers_probe := dev      binds an unbound device to the driver its
//                             driver_override names, when that driver is
//                             registered (else to nothing: an override
//                             excludes every other driver), or, without an
//                             override, to the first driver (by name) whose
//                             ids include the device's;
//   sriov_numvfs := n         creates or destroys VF directories and the
//                             virtfnN/physfn links (EBUSY non-zero to
//                             non-zero, ERANGE above sriov_totalvfs, ENOENT
//                             with no PF driver);
//   mdev create / remove      create or remove instances.
//
// A write to anything else (new_id included) fails with EACCES. Every write
// is recorded, in order, as "<path as written, below the root> := <value>".
// What is not modelled: real probe routines, asynchronous probing, device
// removal waiting for users, uevents, and the kernel's EBUSY on a group
// someone holds (tests inject GroupUsage for that).

#ifndef MIGD_HOST_FAKE_KERNEL_H_
#define MIGD_HOST_FAKE_KERNEL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "migd/host/iommu_group.h"
#include "migd/host/mdev.h"
#include "migd/host/modules.h"
#include "migd/host/sysfs.h"

namespace migd::host::testing {

struct FakePciDevice {
  std::string bdf;
  uint16_t vendor = 0x15b3;
  uint16_t device = 0x101e;
  uint16_t subsystem_vendor = 0x15b3;
  uint16_t subsystem_device = 0x0080;
  uint32_t pci_class = 0x020000;
  int group = -1;                     // no IOMMU group when < 0
  std::optional<std::string> driver;  // bound at creation
};

// A driver a module registers.
struct FakeDriver {
  std::string bus = "pci";
  std::string name;    // under /sys/bus/<bus>/drivers
  std::string module;  // under /sys/module
  // Device IDs it binds without an override: "15b3:101e" for PCI, the
  // device's modalias for platform devices. Empty: override only (VFIO
  // drivers).
  std::vector<std::string> ids;
  // "vfio_pci_core" / "vfio_platform_base": the module holds that core.
  std::string core;
};

class FakeKernel final : public SysfsWriter, public ModuleLoader {
 public:
  FakeKernel();  // a fresh, empty tree
  ~FakeKernel() override;
  FakeKernel(const FakeKernel&) = delete;
  FakeKernel& operator=(const FakeKernel&) = delete;

  // The root (canonical: no symlinks in it).
  const std::string& root() const { return root_; }
  // The tree, read directly, written through this fake kernel.
  Sysfs sysfs() { return Sysfs(root_, this); }

  // --- building the tree (not recorded as writes) ---
  void AddDriver(const FakeDriver& driver);
  // A module Load() registers on first load.
  void AddLoadableModule(const FakeDriver& driver);
  void AddPciDevice(const FakePciDevice& device);
  // A platform device whose modalias is `id`.
  void AddPlatformDevice(const std::string& name, const std::string& id,
                         int group, std::optional<std::string> driver);
  // Binds as the kernel would at boot (both links).
  void BindNow(const std::string& bus, const std::string& device,
               const std::string& driver);
  // Gives PF `pf` SR-IOV: sriov_totalvfs = vfs.size(), sriov_numvfs 0; VF i
  // will be vfs[i] with device ID `vf_device`, in IOMMU group first_group +
  // i (none when first_group < 0).
  void AddSriov(const std::string& pf, std::vector<std::string> vfs,
                uint16_t vf_device, int first_group);
  // An mdev parent whose directory is `dir` (a kernel path; created when
  // missing), listed in /sys/class/mdev_bus as `name`, offering `types`.
  void AddMdevParent(const std::string& dir, const std::string& name,
                     const std::vector<MdevType>& types);
  void WriteFile(const std::string& kernel_path, absl::string_view content);

  // --- faults ---
  // Writes to a path ending in `suffix` (of `value` only, when given) fail
  // with `err`, changing nothing.
  void FailWrite(const std::string& suffix, int err,
                 std::optional<std::string> value = std::nullopt);
  // A probe that would bind `driver` fails: with `err` from the write, or,
  // when err is 0, quietly (the write succeeds, the device stays unbound,
  // as when the kernel swallows a probe routine's error).
  void FailProbe(const std::string& driver, int err);
  // Runs after every bind a probe makes (bus, device, driver).
  void OnBind(std::function<void(const std::string&, const std::string&,
                                 const std::string&)>
                  hook);

  // --- what happened ---
  const std::vector<std::string>& writes() const { return writes_; }
  const std::vector<std::string>& loads() const { return loads_; }
  void ClearWrites() { writes_.clear(); }
  // Every entry below the root: path -> "dir", "-> target" or "= content".
  std::map<std::string, std::string> Snapshot() const;

  // SysfsWriter, ModuleLoader.
  absl::Status Write(const std::string& path, absl::string_view value) override;
  absl::Status Load(const std::string& module) override;

 private:
  struct Sriov {
    std::vector<std::string> vfs;
    uint16_t vf_device = 0;
    int first_group = -1;
  };

  std::string P(absl::string_view kernel_path) const;
  void Mkdirs(const std::string& kernel_path);
  void Link(const std::string& link, const std::string& target);
  void Remove(const std::string& kernel_path);  // a file, link or tree
  std::string ReadFile(const std::string& kernel_path) const;
  void JoinGroup(const std::string& device_dir, const std::string& name,
                 int group);
  void UnbindNow(const std::string& bus, const std::string& device);
  std::optional<std::string> DriverOf(const std::string& bus,
                                      const std::string& device) const;

  absl::Status Probe(const std::string& path, const std::string& bus,
                     absl::string_view value);
  absl::Status SetNumVfs(const std::string& path, const std::string& pf,
                         absl::string_view value);
  absl::Status CreateMdev(const std::string& path, const std::string& type_dir,
                          absl::string_view value);
  absl::Status RemoveMdev(const std::string& path,
                          const std::string& instance_dir,
                          absl::string_view value);

  std::string root_;
  std::map<std::string, std::vector<FakeDriver>> drivers_;  // by bus
  std::map<std::string, FakeDriver> loadable_;              // by module
  std::map<std::string, Sriov> sriov_;                      // by PF
  struct WriteFault {
    std::string suffix;
    int err = 0;
    std::optional<std::string> value;
  };
  std::vector<WriteFault> fail_writes_;
  std::map<std::string, int> fail_probes_;
  std::function<void(const std::string&, const std::string&,
                     const std::string&)>
      on_bind_;
  std::vector<std::string> writes_;
  std::vector<std::string> loads_;
};

// The in-use answer tests give: groups in `busy` are held.
class FakeGroupUsage final : public GroupUsage {
 public:
  absl::StatusOr<bool> InUse(int group) override {
    asked.push_back(group);
    return busy.count(group) > 0;
  }
  std::set<int> busy;
  std::vector<int> asked;
};

}  // namespace migd::host::testing

#endif  // MIGD_HOST_FAKE_KERNEL_H_
