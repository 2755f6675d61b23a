// migd/migration/device_registry.h
//
// The devices an agent manages and which job holds each. A device belongs to at
// most one job at a time; claiming is all-or-nothing so two jobs never end up
// with half of each other's devices.
//
// Thread-safe. Devices are never removed, so returned pointers stay valid for
// the registry's lifetime.

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

 private:
  struct Entry {
    std::unique_ptr<device::Device> device;
    std::string owner;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> devices_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_DEVICE_REGISTRY_H_
