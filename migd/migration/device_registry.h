// migd/migration/device_registry.h
//
// The devices an agent manages and which job holds each. A device belongs to at
// most one job at a time; claiming is all-or-nothing so two jobs never end up
// with half of each other's devices.
//
// Thread-safe. A device is removed only by Remove (a device the agent added
// for one job, e.g. one PrepareIncoming allocated), which refuses a claimed
// device; a pointer from Find stays valid until its device is removed, one
// from Hold as long as it is held.

#ifndef MIGD_MIGRATION_DEVICE_REGISTRY_H_
#define MIGD_MIGRATION_DEVICE_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "migd/device/device.h"

namespace migd::migration {

class DeviceRegistry {
 public:
  // kAlreadyExists when a device of that name is registered.
  absl::Status Add(std::unique_ptr<device::Device> device);

  // Registered device names, sorted.
  std::vector<std::string> Names() const;

  // nullptr when unknown.
  device::Device* Find(const std::string& name) const;

  // The device, kept open while the caller holds it even when it is
  // removed meanwhile; nullptr when unknown.
  std::shared_ptr<device::Device> Hold(const std::string& name) const;

  // Job holding `name`, empty when free or unknown.
  std::string Owner(const std::string& name) const;

  // Claims every device in `names` for `job`, or none: kNotFound
  // (DEVICE_NOT_FOUND) naming an unknown device, kFailedPrecondition
  // (DEVICE_BUSY) naming a device another job holds, kInvalidArgument when a
  // name repeats.
  absl::StatusOr<std::vector<device::Device*>> Claim(
      const std::vector<std::string>& names, const std::string& job);

  // Releases every device `job` holds.
  void Release(const std::string& job);

  // Takes device `name` out of the registry and closes it (at once, or
  // when the last Hold lets go). kNotFound (DEVICE_NOT_FOUND) when unknown;
  // kFailedPrecondition (DEVICE_BUSY) naming the job when one holds it.
  absl::Status Remove(const std::string& name);

 private:
  struct Entry {
    std::shared_ptr<device::Device> device;
    std::string owner;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> devices_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_DEVICE_REGISTRY_H_
