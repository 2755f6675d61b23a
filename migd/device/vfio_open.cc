// migd/device/vfio_open.cc

#include "migd/device/vfio_open.h"

#include <limits.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/device/vfio_errors.h"

namespace migd::device {
namespace {

// The driver sysfs says a PCI device or an mdev is bound to ("vfio-pci"),
// for messages; empty when not known (a cdev, a handed-over fd, no link).
std::string DriverOf(const VfioDeviceConfig& config, const VfioPaths& paths) {
  using Source = VfioDeviceConfig::Source;
  std::string link;
  if (config.source == Source::kPci) {
    link =
        absl::StrCat(paths.sys, "/bus/pci/devices/", config.address, "/driver");
  } else if (config.source == Source::kMdev) {
    link = absl::StrCat(paths.sys, "/bus/mdev/devices/", config.address,
                        "/driver");
  } else {
    return "";
  }
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  const absl::string_view target(buf, static_cast<size_t>(n));
  const size_t slash = target.rfind('/');
  return std::string(
      slash == absl::string_view::npos ? target : target.substr(slash + 1));
}

// The last component of the symlink `link`'s target; empty when unreadable.
std::string LinkBase(const std::string& link) {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  const absl::string_view target(buf, static_cast<size_t>(n));
  const size_t slash = target.rfind('/');
  return std::string(
      slash == absl::string_view::npos ? target : target.substr(slash + 1));
}

// A VF's failed open, said plainly when its PF is on vfio-pci (which then
// asks every VF open for the PF owner's token); `s` unchanged otherwise.
absl::Status ExplainVfOpen(const absl::Status& s,
                           const VfioDeviceConfig& config,
                           const VfioPaths& paths) {
  if (config.source != VfioDeviceConfig::Source::kPci) return s;
  const std::optional<std::string> pf = PfOfVf(config.address, paths);
  if (!pf.has_value()) return s;
  if (LinkBase(absl::StrCat(paths.sys, "/bus/pci/devices/", *pf, "/driver")) !=
      "vfio-pci") {
    return s;
  }
  const std::string lead = absl::StrCat(
      "VF ", config.address, " belongs to PF ", *pf,
      ", which vfio-pci drives with SR-IOV enabled: opening it needs the PF "
      "owner's VF token");
  const std::string detail = absl::StrCat("; the open failed: ", s.message());
  if (config.vf_token.has_value()) {
    return absl::Status(s.code(),
                        absl::StrCat(lead,
                                     ", and the vf_token given is not it (or "
                                     "was refused)",
                                     detail));
  }
  return absl::Status(
      s.code(),
      absl::StrCat(lead, " (migctl host vf-token ", *pf,
                   " makes this agent the owner, or give vf_token= on the "
                   "device line)",
                   detail));
}

}  // namespace

std::optional<std::string> PfOfVf(const std::string& bdf,
                                  const VfioPaths& paths) {
  const std::string pf =
      LinkBase(absl::StrCat(paths.sys, "/bus/pci/devices/", bdf, "/physfn"));
  if (pf.empty()) return std::nullopt;
  absl::StatusOr<std::string> normalized = NormalizePciAddress(pf);
  if (!normalized.ok()) return std::nullopt;
  return *normalized;
}

absl::StatusOr<std::unique_ptr<VfioDevice>> OpenVfioDevice(
    const VfioDeviceConfig& config, VfioOpener& opener,
    absl::Duration handoff_timeout) {
  if (absl::Status s = ValidateVfioDeviceConfig(config); !s.ok()) return s;
  using Source = VfioDeviceConfig::Source;
  absl::StatusOr<VfioDeviceFd> fd;
  switch (config.source) {
    case Source::kPci:
      fd = opener.OpenPci(config.address, config.vf_token);
      break;
    case Source::kMdev:
      fd = opener.OpenMdev(config.address);
      break;
    case Source::kCdev:
      fd = opener.OpenCdev(config.address, config.vf_token);
      break;
    case Source::kFdSocket: {
      absl::StatusOr<HandedOverFd> got =
          FetchFd(config.address, handoff_timeout);
      if (!got.ok()) {
        fd = got.status();
        break;
      }
      VfioDeviceFd handed;
      handed.fd = std::move(got->fd);
      handed.address = std::move(got->name);
      fd = std::move(handed);
      break;
    }
  }
  if (!fd.ok()) {
    // The opener names the device by its address; add the agent's name.
    return PrefixMessage(ExplainVfOpen(fd.status(), config, opener.paths()),
                         absl::StrCat("vfio device ", config.name, ": "));
  }
  return VfioDevice::Create(config.name, std::move(fd->address),
                            std::move(fd->fd), std::move(fd->keepalive),
                            VfioSyscalls::Real(),
                            DriverOf(config, opener.paths()));
}

}  // namespace migd::device
