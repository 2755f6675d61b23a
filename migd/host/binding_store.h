// migd/host/binding_store.h
//
// The durable record of what migd bound (binder.h's BindRecord), so that a
// device goes back to its original driver after the agent restarted: one
// small text file, <state_dir>/host-bindings, one line per device:
//
//   # migd host bindings v1
//   pci 0000:03:00.1 driver=vfio-pci original_driver=acme_core
//   original_override=
//
// (an empty value: none). Every change rewrites the whole file: a temporary
// file (host-bindings.tmp, mode 0600) is written and fsync'ed, renamed over
// the file, and the directory fsync'ed, so the file on disk is always the
// old set or the new one, never a mix, and a change is durable when Put or
// Remove returns OK. The file is owner-only (0600): it says which devices a
// VM's VFIO drivers hold.
//
// The order a bind follows (migd/server/host_service.cc), and what a crash
// at each step leaves:
//
//   1. Put(record: the driver migd binds to, the original driver and
//      driver_override read just before) -- a crash before it returns
//      leaves no record and the device untouched;
//   2. Binder::Bind: driver_override, unbind, probe -- a crash in between
//      leaves the record, and the device on its original driver with the
//      new driver_override, or on no driver: Binder::Unbind with the record
//      (`migctl host unbind`) returns it to its original driver, and a bind
//      to the same driver finishes the bind;
//   3. on success nothing more (the record is the bind); on failure Binder
//      rolls the device back, then Remove(device) -- a crash between the two
//      leaves a record of a device back on its original driver: an unbind
//      finds it there and only removes the record.
//
// An unbind is the reverse: Binder::Unbind, then Remove -- a crash between
// leaves the record of a device already back, which the next unbind removes.
// No crash leaves a device bound by migd without a record that points back
// to where it came from.
//
// Open refuses a file it cannot read back whole (kDataLoss naming the file
// and the line), so the agent does not start without knowing what it bound.
//
// Thread-safe: changes are serialized (one file rewrite at a time); reads
// see the last change that returned OK.

#ifndef MIGD_HOST_BINDING_STORE_H_
#define MIGD_HOST_BINDING_STORE_H_

#include <map>
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
#include "migd/host/binder.h"

namespace migd::host {

class BindingStore {
 public:
  // The file's name inside the state directory.
  static constexpr char kFileName[] = "host-bindings";

  // Reads <dir>/host-bindings (none yet: an empty store; the file is
  // created by the first change). `dir` must exist. Errors name the file:
  // kDataLoss, with the line number, for a line that is not a record (or a
  // device recorded twice); kFailedPrecondition when it is not a regular
  // file; the errno status when it cannot be read.
  static absl::StatusOr<std::unique_ptr<BindingStore>> Open(
      const std::string& dir);

  // The file's path.
  const std::string& path() const { return path_; }

  // The record of `device` (normalized, as in BindRecord) on `bus`; nullopt
  // when migd did not bind it.
  std::optional<BindRecord> Find(Bus bus, absl::string_view device) const;

  // Every record, by bus and device.
  std::vector<BindRecord> List() const;

  // Records `record` durably, replacing the device's earlier one (its
  // `changed` is not stored: every record is of a device migd moved).
  // kInvalidArgument for a device or driver name that is not one sysfs
  // entry; the errno status naming the file when writing fails, and then
  // nothing changed here and the file holds the old set (or, when only the
  // directory's fsync failed, perhaps the new one: a record of a device that
  // did not move is harmless, an unbind finds it where it was and removes
  // the record).
  absl::Status Put(const BindRecord& record);

  // Forgets `device`'s record durably; OK when there is none. Errors as
  // Put, with nothing changed.
  absl::Status Remove(Bus bus, absl::string_view device);

 private:
  using Key = std::pair<Bus, std::string>;

  explicit BindingStore(std::string dir, std::string path)
      : dir_(std::move(dir)), path_(std::move(path)) {}

  // Writes `records` as the whole file (temporary file, fsync, rename,
  // fsync of the directory).
  absl::Status WriteFile(const std::map<Key, BindRecord>& records) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  const std::string path_;
  mutable absl::Mutex mu_;
  std::map<Key, BindRecord> records_ ABSL_GUARDED_BY(mu_);
};

// One record as a line of the file, without the newline.
std::string FormatBindingLine(const BindRecord& record);

// The record a line holds; kInvalidArgument saying what is wrong otherwise.
absl::StatusOr<BindRecord> ParseBindingLine(absl::string_view line);

}  // namespace migd::host

#endif  // MIGD_HOST_BINDING_STORE_H_
