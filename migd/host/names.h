// migd/host/names.h
//
// Checks every name host code puts into a sysfs path or writes to a sysfs
// attribute: PCI addresses, platform device names, mdev UUIDs and kernel
// module names; and the PCI ids a device class names. A name is checked before
// it becomes part of a path, so nothing a caller passes can walk out of the
// directory it is meant for
// ("..", "/", a newline that would end a sysfs value early).
// The device config (migd/device/vfio_spec.h) checks PCI addresses and VF
// tokens with these too, the libvirt hook its classes' ids.

#ifndef MIGD_HOST_NAMES_H_
#define MIGD_HOST_NAMES_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migd::host {

// "0000:00:04.0" from a PCI address "DOMAIN:BUS:DEVICE.FUNCTION": domain 4 to
// 8 hex digits, bus 2, device 2 (<= 0x1f), function 1 (0-7); either case in,
// lowercase out (sysfs names PCI devices in lowercase). kInvalidArgument
// naming the text otherwise.
absl::StatusOr<std::string> NormalizePciAddress(absl::string_view text);

// A UUID in 8-4-4-4-12 hex form, lowercased (sysfs names mdev instances in
// lowercase). kInvalidArgument otherwise; the message never repeats `text`
// (a UUID may be a VF token, a secret).
absl::StatusOr<std::string> NormalizeUuid(absl::string_view text);

// OK for a device name that is one sysfs directory entry: a platform device
// ("fff51000.ethernet", "AMDI0010:00") or an mdev parent ("mbochs"):
// [A-Za-z0-9._:@+-]{1,128}, not "." or "..". kInvalidArgument otherwise.
absl::Status ValidateDeviceName(absl::string_view name);

// A kernel module's canonical name: [A-Za-z0-9_-]{1,55} with every '-'
// made '_' ("vfio-pci" -> "vfio_pci"), as modprobe, modules.alias and
// /sys/module spell it. kInvalidArgument otherwise.
absl::StatusOr<std::string> CanonicalModuleName(absl::string_view text);

// PCI ids as a device class names them.
struct PciIds {
  uint16_t vendor = 0;
  uint16_t device = 0;
  std::optional<uint16_t> subsystem_vendor;  // both or neither
  std::optional<uint16_t> subsystem_device;
};

// "VVVV:DDDD" or "VVVV:DDDD:SVVV:SDDD" (4 hex digits each, either case);
// kInvalidArgument naming the text otherwise.
absl::StatusOr<PciIds> ParsePciIds(absl::string_view text);

// "1ac3:0101", "1ac3:0101:1ac3:0080" (lowercase).
std::string FormatPciIds(const PciIds& ids);

}  // namespace migd::host

#endif  // MIGD_HOST_NAMES_H_
