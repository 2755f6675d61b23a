// migd/host/sysfs.h
//
// The sysfs access every other file in migd/host goes through. Paths are
// given as the kernel names them ("/sys/bus/pci/devices/0000:03:00.1/driver")
// and read below a root prefix: "" (or "/") on a host, a temporary directory
// in tests, where every path the library touches is <root>/sys/...,
// <root>/lib/modules/... or <root>/dev/.... Error messages name the path as
// opened, root included.
//
// Every write goes through one SysfsWriter, the single seam where host code
// changes the kernel's state: the kernel's (KernelSysfsWriter) on a host, a
// fake kernel in tests that changes the fake tree the way the kernel would.
// The kernel's writer knows nothing of tests.

#ifndef MIGD_HOST_SYSFS_H_
#define MIGD_HOST_SYSFS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migd::host {

// Where sysfs writes go.
class SysfsWriter {
 public:
  virtual ~SysfsWriter() = default;

  // Writes `value` to the attribute at `path` (root included) in one
  // write(2): the kernel handles each write as one whole value, so a value
  // split across writes would be two values. The attribute must exist (a
  // write never creates a file). On failure, SysfsWriteError's status.
  virtual absl::Status Write(const std::string& path,
                             absl::string_view value) = 0;
};

// The kernel's sysfs: open(O_WRONLY | O_TRUNC), one write(2), close.
class KernelSysfsWriter final : public SysfsWriter {
 public:
  absl::Status Write(const std::string& path, absl::string_view value) override;
};

// The status of a failed write of `value` to `path` with errno `err`: the
// code absl::ErrnoToStatus gives (ENOENT and ENODEV kNotFound, EBUSY
// kFailedPrecondition, EINVAL kInvalidArgument, ENOMEM and ENOSPC
// kResourceExhausted, ...) and "write \"<value>\" to <path>: <errno
// text>". Shared by every SysfsWriter so errors read the same in tests.
absl::Status SysfsWriteError(const std::string& path, absl::string_view value,
                             int err);

// Reads and writes sysfs below a root. Cheap to copy; the writer is not
// owned and must outlive every copy.
class Sysfs {
 public:
  // `root`: "" or "/" for the host's own files; a trailing '/' is dropped.
  // `writer`: where writes go; null for the kernel's.
  explicit Sysfs(absl::string_view root = "", SysfsWriter* writer = nullptr);

  // The root prefix, without a trailing '/' ("" on a host).
  const std::string& root() const { return root_; }

  // `path` (absolute, as the kernel names it) below the root.
  std::string Path(absl::string_view path) const;

  // The attribute's content with leading and trailing whitespace removed
  // ("0x1ac3\n" -> "0x1ac3"). kNotFound when it does not exist; the errno
  // status naming the path otherwise.
  absl::StatusOr<std::string> Read(absl::string_view path) const;

  // Writes `value` to the attribute through the writer (see SysfsWriter).
  absl::Status Write(absl::string_view path, absl::string_view value) const;

  // The target of the symlink at `path`, as stored
  // ("../../../bus/pci/drivers/vfio-pci"). kNotFound when there is no such
  // link; kFailedPrecondition when `path` is not a symlink.
  absl::StatusOr<std::string> LinkTarget(absl::string_view path) const;

  // The last component of LinkTarget: "vfio-pci" for a device's `driver`,
  // "12" for `iommu_group`, "0000:03:00.0" for a VF's `physfn`. Errors as
  // LinkTarget.
  absl::StatusOr<std::string> LinkName(absl::string_view path) const;

  // The names in the directory at `path`, sorted, without "." and "..".
  // kNotFound when it does not exist.
  absl::StatusOr<std::vector<std::string>> List(absl::string_view path) const;

  // True when `path` exists (following symlinks: a link to nothing does
  // not).
  bool Exists(absl::string_view path) const;

 private:
  std::string root_;
  SysfsWriter* writer_;
};

}  // namespace migd::host

#endif  // MIGD_HOST_SYSFS_H_
