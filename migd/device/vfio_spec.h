// migd/device/vfio_spec.h
//
// Parses and validates the agent's device config lines for kernel VFIO
// devices, and the addresses in them, so nothing unchecked reaches sysfs,
// /dev or a socket:
//
//   vfio NAME bdf=0000:00:04.0 [vf_token=UUID]       PCI device,
//   group/container vfio NAME mdev=UUID                              mediated
//   device, group/container vfio NAME cdev=/dev/vfio/devices/vfio0
//   [vf_token=UUID]   cdev + iommufd vfio NAME fd_socket=/path/to/vmm.sock fd
//   handed over by a VMM
//
// Exactly one of bdf, mdev, cdev, fd_socket. The VF token is a secret: it is
// never echoed in errors, logs or anything else this file produces.

#ifndef MIGD_DEVICE_VFIO_SPEC_H_
#define MIGD_DEVICE_VFIO_SPEC_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/host/names.h"

namespace migd::device {

struct VfioDeviceConfig {
  enum class Source { kPci, kMdev, kCdev, kFdSocket };

  // [A-Za-z0-9._:-]{1,64}.
  std::string name;
  Source source = Source::kPci;
  // Normalized: a PCI address "dddd:bb:dd.f" (lowercase hex), an mdev UUID
  // (lowercase), a cdev path "/dev/vfio/devices/vfioN", or an absolute socket
  // path.
  std::string address;
  // Lowercase UUID; only with kPci or kCdev. Secret.
  std::optional<std::string> vf_token;
};

// The config key of a source: "bdf", "mdev", "cdev", "fd_socket".
absl::string_view VfioSourceKey(VfioDeviceConfig::Source source);

// True when `name` matches [A-Za-z0-9._:-]{1,64}.
bool IsValidVfioDeviceName(absl::string_view name);

// PCI addresses ("0000:00:04.0") and UUIDs are checked by the host's rules
// (migd/host/names.h): the same names reach sysfs from there.
using host::NormalizePciAddress;
using host::NormalizeUuid;

// The 16 bytes of a UUID in text order (the kernel's uuid_t), for
// VFIO_DEVICE_BIND_FLAG_TOKEN. kInvalidArgument as NormalizeUuid.
absl::StatusOr<std::array<uint8_t, 16>> UuidBytes(absl::string_view text);

// OK for "/dev/vfio/devices/vfio<N>" (N decimal, no leading zeros).
absl::Status ValidateCdevPath(absl::string_view path);

// OK for an absolute path of a UNIX socket: shorter than sun_path (107
// bytes), no NUL or control characters, no "." or ".." components.
absl::Status ValidateSocketPath(absl::string_view path);

// OK when `config` is consistent: valid name, exactly one source with a valid
// address, vf_token a UUID and only with kPci or kCdev.
absl::Status ValidateVfioDeviceConfig(const VfioDeviceConfig& config);

// Parses one "vfio ..." line (words separated by spaces or tabs; each key at
// most once). kInvalidArgument naming the bad token otherwise (a vf_token
// value is shown as "vf_token=<redacted>"). Callers skip blank and comment
// lines themselves.
absl::StatusOr<VfioDeviceConfig> ParseVfioDeviceLine(absl::string_view line);

}  // namespace migd::device

#endif  // MIGD_DEVICE_VFIO_SPEC_H_
