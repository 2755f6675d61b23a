// migd/host/sriov.cc

#include "migd/host/sriov.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "migd/host/names.h"

namespace migd::host {
namespace {

absl::Status Prefixed(absl::string_view prefix, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

// The sysfs directory of an existing PCI device at `address`, normalized
// into `bdf`.
absl::StatusOr<std::string> DeviceDir(const Sysfs& sysfs,
                                      absl::string_view address,
                                      std::string* bdf) {
  absl::StatusOr<std::string> a = NormalizePciAddress(address);
  if (!a.ok()) return a.status();
  *bdf = *a;
  std::string dir = absl::StrCat("/sys/bus/pci/devices/", *a);
  if (!sysfs.Exists(dir)) {
    return absl::NotFoundError(absl::StrCat(
        "pci device ", *a, " does not exist (no ", sysfs.Path(dir), ")"));
  }
  return dir;
}

absl::StatusOr<int> ReadCount(const Sysfs& sysfs, absl::string_view dir,
                              absl::string_view bdf, absl::string_view file) {
  const std::string path = absl::StrCat(dir, "/", file);
  absl::StatusOr<std::string> text = sysfs.Read(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) {
      return absl::FailedPreconditionError(
          absl::StrCat("pci device ", bdf, " has no SR-IOV capability (no ",
                       sysfs.Path(path), ")"));
    }
    return text.status();
  }
  int n = -1;
  if (!absl::SimpleAtoi(*text, &n) || n < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(sysfs.Path(path), " reads \"", *text, "\", not a count"));
  }
  return n;
}

absl::StatusOr<int> Count(const Sysfs& sysfs, absl::string_view pf,
                          absl::string_view file) {
  std::string bdf;
  absl::StatusOr<std::string> dir = DeviceDir(sysfs, pf, &bdf);
  if (!dir.ok()) return dir.status();
  return ReadCount(sysfs, *dir, bdf, file);
}

}  // namespace

absl::StatusOr<std::vector<VirtualFunction>> ListVfs(const Sysfs& sysfs,
                                                     absl::string_view pf) {
  std::string bdf;
  absl::StatusOr<std::string> dir = DeviceDir(sysfs, pf, &bdf);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<std::vector<std::string>> entries = sysfs.List(*dir);
  if (!entries.ok()) return entries.status();
  std::vector<VirtualFunction> vfs;
  for (const std::string& e : *entries) {
    absl::string_view rest = e;
    int index = -1;
    if (!absl::ConsumePrefix(&rest, "virtfn") ||
        !absl::SimpleAtoi(rest, &index) || index < 0) {
      continue;
    }
    absl::StatusOr<std::string> vf = sysfs.LinkName(absl::StrCat(*dir, "/", e));
    if (!vf.ok()) return Prefixed(absl::StrCat("PF ", bdf, ": "), vf.status());
    vfs.push_back({index, *std::move(vf)});
  }
  // By N, not by name: virtfn10 sorts before virtfn2 as text.
  std::sort(vfs.begin(), vfs.end(),
            [](const VirtualFunction& a, const VirtualFunction& b) {
              return a.index < b.index;
            });
  return vfs;
}

absl::StatusOr<int> TotalVfs(const Sysfs& sysfs, absl::string_view pf) {
  return Count(sysfs, pf, "sriov_totalvfs");
}

absl::StatusOr<int> NumVfs(const Sysfs& sysfs, absl::string_view pf) {
  return Count(sysfs, pf, "sriov_numvfs");
}

absl::Status SetNumVfs(const Sysfs& sysfs, GroupUsage& usage,
                       absl::string_view pf, int n) {
  std::string bdf;
  absl::StatusOr<std::string> dir = DeviceDir(sysfs, pf, &bdf);
  if (!dir.ok()) return dir.status();
  const std::string what = absl::StrCat("PF ", bdf, ": set ", n, " VFs");
  absl::StatusOr<int> total = ReadCount(sysfs, *dir, bdf, "sriov_totalvfs");
  if (!total.ok()) return Prefixed(what + ": ", total.status());
  if (n < 0 || n > *total) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": asks for ", n, " VFs; the device supports 0 to ", *total));
  }
  absl::StatusOr<int> current = ReadCount(sysfs, *dir, bdf, "sriov_numvfs");
  if (!current.ok()) return Prefixed(what + ": ", current.status());
  if (*current == n) return absl::OkStatus();

  absl::StatusOr<std::optional<std::string>> driver = BoundDriver(sysfs, *dir);
  if (!driver.ok()) return Prefixed(what + ": ", driver.status());
  if (!driver->has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what,
        " refused: the PF is on no driver, and the kernel creates VFs "
        "through the PF's driver (bind it to its own driver, or to "
        "vfio-pci loaded with enable_sriov=1)"));
  }
  if (*current > 0) {
    absl::StatusOr<std::vector<VirtualFunction>> vfs = ListVfs(sysfs, bdf);
    if (!vfs.ok()) return Prefixed(what + ": ", vfs.status());
    for (const VirtualFunction& vf : *vfs) {
      const std::string vf_dir = absl::StrCat("/sys/bus/pci/devices/", vf.bdf);
      if (!OnVfioDriver(sysfs, vf_dir)) continue;
      absl::StatusOr<int> group = IommuGroupOf(sysfs, vf_dir, vf.bdf);
      if (!group.ok()) return Prefixed(what + ": ", group.status());
      absl::StatusOr<bool> busy = usage.InUse(*group);
      if (!busy.ok()) return Prefixed(what + ": ", busy.status());
      if (*busy) {
        return absl::FailedPreconditionError(absl::StrCat(
            what, " refused: VF ", vf.index, " (", vf.bdf,
            ") is in use (IOMMU group ", *group,
            " is held by another process, e.g. a VMM; destroying the VF "
            "would block until it lets go); nothing was changed"));
      }
    }
  }

  const std::string numvfs = absl::StrCat(*dir, "/sriov_numvfs");
  if (*current > 0 && n > 0) {
    // The kernel's rule: a non-zero count changes only through 0.
    if (absl::Status s = sysfs.Write(numvfs, "0"); !s.ok()) {
      return Prefixed(
          absl::StrCat(what, ": removing the ", *current,
                       " VFs first (the kernel changes a count only through "
                       "0) failed: "),
          s);
    }
  }
  if (absl::Status s = sysfs.Write(numvfs, absl::StrCat(n)); !s.ok()) {
    std::string account;
    if (*current > 0 && n > 0) {
      absl::Status back = sysfs.Write(numvfs, absl::StrCat(*current));
      account = back.ok() ? absl::StrCat(
                                "; sriov_numvfs restored to ", *current,
                                " (new VFs: their drivers and overrides start "
                                "afresh)")
                          : absl::StrCat("; restoring sriov_numvfs to ",
                                         *current, " FAILED too (",
                                         back.message(), "): the PF has 0 VFs");
      if (!back.ok()) {
        return absl::InternalError(
            absl::StrCat(what, " failed: ", s.message(), account));
      }
    }
    return absl::Status(s.code(),
                        absl::StrCat(what, " failed: ", s.message(), account));
  }
  absl::StatusOr<int> now = ReadCount(sysfs, *dir, bdf, "sriov_numvfs");
  if (!now.ok()) return Prefixed(what + ": verify: ", now.status());
  if (*now != n) {
    return absl::InternalError(absl::StrCat(
        what, ": the write succeeded but sriov_numvfs reads ", *now));
  }
  return absl::OkStatus();
}

absl::StatusOr<PfOfVf> PhysicalFunctionOf(const Sysfs& sysfs,
                                          absl::string_view vf) {
  std::string bdf;
  absl::StatusOr<std::string> dir = DeviceDir(sysfs, vf, &bdf);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<std::string> pf =
      sysfs.LinkName(absl::StrCat(*dir, "/physfn"));
  if (!pf.ok()) {
    if (absl::IsNotFound(pf.status())) {
      return absl::NotFoundError(
          absl::StrCat("pci device ", bdf, " is not a VF (no ",
                       sysfs.Path(absl::StrCat(*dir, "/physfn")), ")"));
    }
    return pf.status();
  }
  absl::StatusOr<std::vector<VirtualFunction>> vfs = ListVfs(sysfs, *pf);
  if (!vfs.ok()) {
    return Prefixed(absl::StrCat("VF ", bdf, ": its PF: "), vfs.status());
  }
  for (const VirtualFunction& v : *vfs) {
    if (v.bdf == bdf) return PfOfVf{*pf, v.index};
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "VF ", bdf, ": its PF ", *pf, " lists it in no virtfn<N> link"));
}

}  // namespace migd::host
