// migd/host/allocation_store.h
//
// The durable record of what the allocator (allocator.h) handed out, so
// that an agent restart keeps every allocation and ReleaseDevices still
// returns each device: one small text file next to host-bindings,
// <state_dir>/host-allocations, one line per allocated device, in the order
// they were allocated:
//
//   # migd host allocations v1
//   pci owner=dom-1 key=0000:3b:02.0 address=0000:5e:01.3 driver=vfio-pci
//   bound=yes mdev owner=dom-1 key=6f1c...  uuid=0b5e... parent=mbochs
//   type=mbochs-small
//
// `bound`: the allocation moved the device to `driver` (host-bindings then
// holds where it came from; a release unbinds it); "no": it was on the
// driver already, a release leaves it there.
//
// Written as host-bindings is (state_file.h: temporary file, fsync, rename,
// fsync of the directory; mode 0600), so the file is always the old set or
// the new one. Open refuses a file it cannot read back whole (kDataLoss
// naming the file and the line): without it the agent could not release
// what it allocated.
//
// Thread-safe; each change is durable when it returns OK.

#ifndef MIGD_HOST_ALLOCATION_STORE_H_
#define MIGD_HOST_ALLOCATION_STORE_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace migd::host {

// One allocated device.
struct Allocation {
  enum class Kind { kPci, kMdev };

  std::string owner;  // a libvirt domain's UUID, a job id
  std::string key;    // the caller's name for the device
  Kind kind = Kind::kPci;
  // PCI: the device and the driver it was put on; whether the allocation
  // moved it there (false: it was there already).
  std::string address;
  std::string driver;
  bool bound = false;
  // mdev: the instance the allocation created.
  std::string mdev_uuid;
  std::string mdev_parent;
  std::string mdev_type;

  // The device's host name: the PCI address or the mdev UUID.
  const std::string& host_name() const {
    return kind == Kind::kPci ? address : mdev_uuid;
  }
  bool operator==(const Allocation&) const = default;
};

// kInvalidArgument unless `text` may name an owner or a key: 1..128 of
// [A-Za-z0-9._:@+/-]. `what` ("owner") starts the message.
absl::Status ValidateAllocationName(absl::string_view what,
                                    absl::string_view text);

// One allocation as a line of the file, without the newline.
std::string FormatAllocationLine(const Allocation& a);

// The allocation a line holds; kInvalidArgument saying what is wrong.
absl::StatusOr<Allocation> ParseAllocationLine(absl::string_view line);

class AllocationStore {
 public:
  static constexpr char kFileName[] = "host-allocations";

  // Reads <dir>/host-allocations (none yet: empty; created by the first
  // change). Errors name the file: kDataLoss with the line for a line that
  // is not an allocation (or an owner's key, or a device, recorded twice);
  // kFailedPrecondition when `dir` is not a directory or the file is not a
  // regular file; the errno status when it cannot be read.
  static absl::StatusOr<std::unique_ptr<AllocationStore>> Open(
      const std::string& dir);

  const std::string& path() const { return path_; }

  // Every allocation, in the order they were made; only `owner`'s when it
  // is not empty.
  std::vector<Allocation> List(absl::string_view owner = "") const;

  // `owner`'s allocation under `key`; nullopt when there is none.
  std::optional<Allocation> Find(absl::string_view owner,
                                 absl::string_view key) const;

  // The allocation holding the device `host_name` (a PCI address, an mdev
  // UUID); nullopt when none does.
  std::optional<Allocation> Holding(absl::string_view host_name) const;

  // Records `a` durably, replacing the owner's earlier allocation under the
  // same key (in place), else appended. kInvalidArgument for a malformed
  // allocation, or a device another allocation holds; the errno status
  // naming the file when writing fails (nothing changed here).
  absl::Status Put(const Allocation& a);

  // Forgets `owner`'s allocation under `key` durably; OK when there is
  // none. Errors as Put.
  absl::Status Remove(absl::string_view owner, absl::string_view key);

 private:
  AllocationStore(std::string dir, std::string path)
      : dir_(std::move(dir)), path_(std::move(path)) {}

  absl::Status Write(const std::vector<Allocation>& all) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  const std::string path_;
  mutable absl::Mutex mu_;
  std::vector<Allocation> all_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::host

#endif  // MIGD_HOST_ALLOCATION_STORE_H_
