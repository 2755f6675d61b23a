// migd/host/sriov.h
//
// SR-IOV as sysfs shows it: a physical function (PF) with `sriov_totalvfs`
// can have up to that many virtual functions (VFs), created and destroyed by
// writing a count to its `sriov_numvfs`. The PF links each VF as
// `virtfn<N>` (N from 0); each VF links back as `physfn`.
//
// The kernel refuses to change a non-zero count to another non-zero count
// (EBUSY): SetNumVfs writes 0 first, then the new count, so every VF is
// destroyed and created anew (their drivers and driver_overrides start
// afresh). Creating VFs needs a PF driver that supports it (the PF's own
// driver, or vfio-pci loaded with enable_sriov=1, which also sets its VFs'
// driver_override to vfio-pci); whether the new VFs are probed is the PF's
// `sriov_drivers_autoprobe`.

#ifndef MIGD_HOST_SRIOV_H_
#define MIGD_HOST_SRIOV_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/host/iommu_group.h"
#include "migd/host/sysfs.h"

namespace migd::host {

// A VF: its index N (the PF's virtfn<N>) and its PCI address.
struct VirtualFunction {
  int index = 0;
  std::string bdf;
  bool operator==(const VirtualFunction&) const = default;
};

// The VFs of PF `pf` (a PCI address), ordered by index. Empty when it has
// none (or no SR-IOV). kInvalidArgument for a malformed address; kNotFound
// when the device does not exist.
absl::StatusOr<std::vector<VirtualFunction>> ListVfs(const Sysfs& sysfs,
                                                     absl::string_view pf);

// The PF's sriov_totalvfs and sriov_numvfs. kFailedPrecondition when the
// device has no SR-IOV capability (no sriov_totalvfs); kNotFound when it
// does not exist.
absl::StatusOr<int> TotalVfs(const Sysfs& sysfs, absl::string_view pf);
absl::StatusOr<int> NumVfs(const Sysfs& sysfs, absl::string_view pf);

// Gives PF `pf` `n` VFs: nothing when it has n already; else 0 first when
// it has some (the kernel's rule, above), then n; then verifies
// sriov_numvfs reads n. Refused, nothing written:
//   kInvalidArgument: n < 0, or n > sriov_totalvfs (naming both numbers);
//   kFailedPrecondition: no SR-IOV; the PF on no driver (the kernel creates
//     VFs through the PF's driver); a VF in use (on a VFIO driver whose
//     IOMMU group `usage` says is held: destroying it would block until its
//     user lets go).
// When writing n fails after 0 was written, the old count is written back
// (new VFs, as above) and the error says so.
absl::Status SetNumVfs(const Sysfs& sysfs, GroupUsage& usage,
                       absl::string_view pf, int n);

// A VF's PF and its index there.
struct PfOfVf {
  std::string pf;
  int index = 0;
  bool operator==(const PfOfVf&) const = default;
};

// The PF of VF `vf` (its `physfn` link) and the N of the PF's virtfn<N> that
// links to it. kNotFound when the device does not exist or is not a VF (no
// physfn); kFailedPrecondition when the PF does not list it.
absl::StatusOr<PfOfVf> PhysicalFunctionOf(const Sysfs& sysfs,
                                          absl::string_view vf);

}  // namespace migd::host

#endif  // MIGD_HOST_SRIOV_H_
