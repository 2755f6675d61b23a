// migd/server/device_backend.h
//
// The narrow interface between the agent's device configuration and the
// backends that drive devices. A backend is registered under a kind, the
// first word of the config lines it owns ("emulated", "vfio"); the
// configuration (device_config.h) hands each line to the backend of its
// kind and knows no backend by name, so a new backend is a new registration,
// not a change to the configuration.
//
// A backend parses a line into a DeviceSpec (one configured device, not yet
// opened) and opens specs through a DeviceOpener, one per build: a build
// opens many devices, and what they share (the VFIO backend's container and
// its one open group per IOMMU group) lives in the opener.

#ifndef MIGD_SERVER_DEVICE_BACKEND_H_
#define MIGD_SERVER_DEVICE_BACKEND_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "migd/device/device.h"
#include "migd/device/fd_handoff.h"
#include "migd/device/vfio_paths.h"
#include "migd/plugins/plugin.h"

namespace migd::server {

// One configured device before it is opened. Immutable once parsed.
class DeviceSpec {
 public:
  virtual ~DeviceSpec() = default;

  // The name the agent will know the device by (unique per agent).
  virtual const std::string& name() const = 0;

  // The kind of the backend that made this spec and opens it.
  virtual std::string kind() const = 0;

  // A key two specs share exactly when they name the same kernel device
  // ("bdf=0000:00:04.0"), so that one device is not configured twice;
  // nullopt for a device no other spec can name (an emulated one).
  virtual std::optional<std::string> AddressKey() const = 0;

  // Adds to `facts` what only the configuration knows of the device (an
  // emulated device's parameters; a kernel device's address and what sysfs,
  // under `paths`, says of it). Called after the device was opened, with the
  // facts every device has (name, backend, migration flags) filled in. Never
  // fails: what cannot be read is left empty.
  virtual void AddFacts(plugins::DeviceFacts& facts,
                        const device::VfioPaths& paths) const = 0;
};

// What a build of the configured devices may vary (tests use fakes).
struct BuildOptions {
  // Where sysfs and /dev are (tests use a fake tree).
  device::VfioPaths vfio_paths;
  // How long a device handed over by a VMM waits for its VMM's message.
  absl::Duration handoff_timeout = device::kDefaultHandoffTimeout;
  // The VF token this agent stored for a PF (a normalized PCI address), a
  // secret; nullopt when none (server/vf_tokens.h). A VF opened by bdf=
  // without vf_token= presents its PF's. Unset: none.
  std::function<std::optional<std::string>(const std::string& pf)> vf_token_for;
};

// Opens the devices of one build. Not thread-safe: a build is one thread.
// The devices keep what they share open after the opener goes.
class DeviceOpener {
 public:
  virtual ~DeviceOpener() = default;

  // Opens the device `spec` describes. kInvalidArgument when `spec` was not
  // made by this opener's backend; otherwise the backend's error (kNotFound
  // for a kernel device that is not there, ...), naming the device.
  virtual absl::StatusOr<std::unique_ptr<device::Device>> Open(
      const DeviceSpec& spec) = 0;
};

// A device backend. Stateless: one instance serves every parse and build.
class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  // The first word of the config lines this backend owns: one word, no
  // spaces, not starting with '#'.
  virtual std::string kind() const = 0;

  // Parses one config line whose first word is kind() (trimmed; words
  // separated by spaces or tabs). kInvalidArgument naming the bad token; the
  // caller adds the line number. A secret in the line (a VF token) is never
  // repeated in an error.
  virtual absl::StatusOr<std::unique_ptr<DeviceSpec>> Parse(
      absl::string_view line) const = 0;

  // An opener for one build.
  virtual std::unique_ptr<DeviceOpener> NewOpener(
      const BuildOptions& options) const = 0;
};

// The backends an agent has, by kind. Filled at start, then read-only:
// thread-safe to read.
class DeviceBackends {
 public:
  // kAlreadyExists naming the kind when a backend has it already;
  // kInvalidArgument when the kind is not one word (empty, with spaces, or
  // starting with '#', which would make its lines blank or comments).
  absl::Status Register(std::unique_ptr<DeviceBackend> backend);

  // The backend registered under `kind`; nullptr when none.
  const DeviceBackend* Find(absl::string_view kind) const;

  // The registered kinds, sorted.
  std::vector<std::string> Kinds() const;

 private:
  std::map<std::string, std::unique_ptr<DeviceBackend>, std::less<>> backends_;
};

}  // namespace migd::server

#endif  // MIGD_SERVER_DEVICE_BACKEND_H_
