// migd/server/emulated_backend.h
//
// The "emulated" device backend: userspace devices with the full uAPI
// contract (device/emulated_device.h), for the demo, loopback tests and
// benchmarks. Config lines are device/emulated_spec.h's:
//
//   emulated NAME [size=] [seed=] [format=] [flags=] [fail_arc=] ...
//
// Opening a spec generates the device's content; nothing is shared between
// the devices of a build.

#ifndef MIGD_SERVER_EMULATED_BACKEND_H_
#define MIGD_SERVER_EMULATED_BACKEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/device/emulated_device.h"
#include "migd/server/device_backend.h"

namespace migd::server {

inline constexpr char kEmulatedKind[] = "emulated";

// One configured emulated device.
class EmulatedSpec final : public DeviceSpec {
 public:
  // `config` is not validated here: Parse and EmulatedFromList do that, and
  // opening validates again.
  explicit EmulatedSpec(device::EmulatedDeviceConfig config)
      : config_(std::move(config)) {}

  const device::EmulatedDeviceConfig& config() const { return config_; }

  const std::string& name() const override { return config_.name; }
  std::string kind() const override { return kEmulatedKind; }
  // None: an emulated device is its own, nothing else can name it.
  std::optional<std::string> AddressKey() const override {
    return std::nullopt;
  }
  // The parameters that decide whether its state loads elsewhere:
  // "format=N size=N".
  void AddFacts(plugins::DeviceFacts& facts,
                const device::VfioPaths& paths) const override;

 private:
  const device::EmulatedDeviceConfig config_;
};

class EmulatedBackend final : public DeviceBackend {
 public:
  std::string kind() const override { return kEmulatedKind; }
  // device::ParseEmulatedDeviceLine's errors.
  absl::StatusOr<std::unique_ptr<DeviceSpec>> Parse(
      absl::string_view line) const override;
  // Errors name the device ("device emu0: ...").
  std::unique_ptr<DeviceOpener> NewOpener(
      const BuildOptions& options) const override;
};

// Emulated devices named in a comma-separated list (the --emulated_devices
// flag), all of `state_size` bytes; each device's content seed mixes `seed`
// with its name, so devices on one agent differ and the same name and seed
// always give the same state. kInvalidArgument naming a device that would
// not be created (a bad name, a bad size).
absl::StatusOr<std::vector<std::unique_ptr<DeviceSpec>>> EmulatedFromList(
    absl::string_view names, uint64_t state_size, uint64_t seed);

}  // namespace migd::server

#endif  // MIGD_SERVER_EMULATED_BACKEND_H_
