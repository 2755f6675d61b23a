#include "migd/migration/device_registry.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/base/reason.h"

namespace migd::migration {

absl::Status DeviceRegistry::Add(std::unique_ptr<device::Device> device) {
  absl::MutexLock lock(&mu_);
  std::string name = device->name();
  if (devices_.count(name) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("device ", name, " is configured twice"));
  }
  devices_[name] =
      Entry{std::shared_ptr<device::Device>(std::move(device)), ""};
  return absl::OkStatus();
}

std::vector<std::string> DeviceRegistry::Names() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& [name, entry] : devices_) names.push_back(name);
  return names;
}

device::Device* DeviceRegistry::Find(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = devices_.find(name);
  return it == devices_.end() ? nullptr : it->second.device.get();
}

std::shared_ptr<device::Device> DeviceRegistry::Hold(
    const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = devices_.find(name);
  return it == devices_.end() ? nullptr : it->second.device;
}

std::string DeviceRegistry::Owner(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = devices_.find(name);
  return it == devices_.end() ? "" : it->second.owner;
}

absl::StatusOr<std::vector<device::Device*>> DeviceRegistry::Claim(
    const std::vector<std::string>& names, const std::string& job) {
  absl::MutexLock lock(&mu_);
  std::set<std::string> seen;
  std::vector<device::Device*> out;
  for (const std::string& name : names) {
    if (!seen.insert(name).second) {
      return base::Error(absl::StatusCode::kInvalidArgument,
                         v1::ERROR_REASON_INVALID_REQUEST,
                         absl::StrCat("device ", name, " is listed twice"));
    }
    auto it = devices_.find(name);
    if (it == devices_.end()) {
      return base::Error(
          absl::StatusCode::kNotFound, v1::ERROR_REASON_DEVICE_NOT_FOUND,
          absl::StrCat("no device named \"", name, "\" on this agent"));
    }
    if (!it->second.owner.empty()) {
      return base::Error(
          absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_BUSY,
          absl::StrCat("device ", name, " belongs to job ", it->second.owner));
    }
    out.push_back(it->second.device.get());
  }
  for (const std::string& name : names) devices_[name].owner = job;
  return out;
}

void DeviceRegistry::Release(const std::string& job) {
  absl::MutexLock lock(&mu_);
  for (auto& [name, entry] : devices_) {
    if (entry.owner == job) entry.owner.clear();
  }
}

absl::Status DeviceRegistry::Remove(const std::string& name) {
  std::shared_ptr<device::Device> device;  // closed after the lock
  absl::MutexLock lock(&mu_);
  auto it = devices_.find(name);
  if (it == devices_.end()) {
    return base::Error(
        absl::StatusCode::kNotFound, v1::ERROR_REASON_DEVICE_NOT_FOUND,
        absl::StrCat("no device named \"", name, "\" on this agent"));
  }
  if (!it->second.owner.empty()) {
    return base::Error(absl::StatusCode::kFailedPrecondition,
                       v1::ERROR_REASON_DEVICE_BUSY,
                       absl::StrCat("device ", name, " belongs to job ",
                                    it->second.owner, ": not removed"));
  }
  device = std::move(it->second.device);
  devices_.erase(it);
  return absl::OkStatus();
}

}  // namespace migd::migration
