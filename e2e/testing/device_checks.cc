#include "e2e/testing/device_checks.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace migd::e2e {

std::string StateName(v1::DeviceState state) {
  return v1::DeviceState_Name(state);
}

std::string Describe(const v1::Device& device) {
  return absl::StrCat(StateName(device.state()), "/", device.state_digest(),
                      "/job:", device.job_id());
}

std::string Describe(const DeviceMapT& devices) {
  std::string out;
  for (const auto& [name, device] : devices) {
    absl::StrAppend(&out, name, "=", Describe(device), " ");
  }
  return out;
}

void ExpectDevices(absl::string_view agent, const DeviceMapT& devices,
                   const std::vector<std::string>& names, v1::DeviceState state,
                   const DeviceMapT* digests) {
  for (const std::string& name : names) {
    SCOPED_TRACE(absl::StrCat(agent, " device ", name));
    auto it = devices.find(name);
    ASSERT_NE(it, devices.end()) << Describe(devices);
    EXPECT_EQ(StateName(it->second.state()), StateName(state));
    EXPECT_EQ(it->second.job_id(), "") << "device still held by a job";
    if (digests != nullptr) {
      EXPECT_EQ(it->second.state_digest(), digests->at(name).state_digest())
          << "device state differs";
    }
  }
}

}  // namespace migd::e2e
