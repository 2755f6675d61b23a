// migd/device/vfio_paths.h
//
// Where the kernel's VFIO files are: sysfs and /dev. Apart from the VFIO
// backend so that code that only passes the paths on (device configuration,
// plugins' device facts) does not depend on the backend itself.

#ifndef MIGD_DEVICE_VFIO_PATHS_H_
#define MIGD_DEVICE_VFIO_PATHS_H_

#include <string>

namespace migd::device {

// Where sysfs and /dev are. Tests point them at a temporary tree; config
// paths ("/dev/vfio/devices/vfio0") are resolved below `dev`.
struct VfioPaths {
  std::string sys = "/sys";
  std::string dev = "/dev";
};

}  // namespace migd::device

#endif  // MIGD_DEVICE_VFIO_PATHS_H_
