// migd/device/vfio_open.cc

#include "migd/device/vfio_open.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/device/vfio_errors.h"

namespace migd::device {

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
    return PrefixMessage(fd.status(),
                         absl::StrCat("vfio device ", config.name, ": "));
  }
  return VfioDevice::Create(config.name, std::move(fd->address),
                            std::move(fd->fd), std::move(fd->keepalive));
}

}  // namespace migd::device
