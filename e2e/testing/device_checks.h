// e2e/testing/device_checks.h
//
// Checks on an agent's devices shared by the loopback tests: a map of them by
// name, a one-line description for failure messages and for comparing an
// agent's devices before and after, and the expectation that devices are in a
// state, free and (optionally) holding the state they held elsewhere.

#ifndef E2E_TESTING_DEVICE_CHECKS_H_
#define E2E_TESTING_DEVICE_CHECKS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::e2e {

// An agent's devices by name, as DeviceMap() (agent_process.h) returns them.
using DeviceMapT = std::map<std::string, v1::Device>;

// "DEVICE_STATE_RUNNING" rather than a number, so a mismatch reads.
std::string StateName(v1::DeviceState state);

// "STATE/digest/job:ID" for one device.
std::string Describe(const v1::Device& device);

// "name=STATE/digest/job:ID " for each device, in name order. Two maps
// describe alike exactly when each device has the same state, digest and job.
std::string Describe(const DeviceMapT& devices);

// Adds a gtest failure (traced with `agent` and the device's name) unless
// every device in `names` is in `devices`, in `state`, held by no job and,
// when `digests` is given, holds the digest it has in `digests`. A device
// missing from `devices` is a fatal failure that ends this check (not the
// caller: wrap in ASSERT_NO_FATAL_FAILURE to stop there), with the map
// described.
void ExpectDevices(absl::string_view agent, const DeviceMapT& devices,
                   const std::vector<std::string>& names, v1::DeviceState state,
                   const DeviceMapT* digests = nullptr);

}  // namespace migd::e2e

#endif  // E2E_TESTING_DEVICE_CHECKS_H_
