// migd/server/compatibility.h
//
// The agent's vendor plugins at work: which plugin speaks for each device
// (bound once, at start), the descriptors a source sends, the checks a
// destination runs on them before any state moves, and the dry run
// (MigrationService.CheckMigration on the source, TransferService.
// CheckCompatibility on the destination) that reports, per device, whether
// it can migrate and what blocks it. The decisions themselves are
// plugins/compat.h's; this is where they meet the agent's devices and jobs.
//
// Thread-safe: bound at start, read-only after.

#ifndef MIGD_SERVER_COMPATIBILITY_H_
#define MIGD_SERVER_COMPATIBILITY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "migd/migration/device_registry.h"
#include "migd/plugins/compat.h"
#include "migd/plugins/registry.h"
#include "proto/migd/v1/migration.pb.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::server {

class Compatibility {
 public:
  // Binds every device of `devices` to its plugin in `registry`; `facts`
  // says what is known of each (a device without facts gets its name,
  // backend and flags). `failures` and `plugin_dir` are reported by
  // ListPlugins.
  Compatibility(std::unique_ptr<plugins::Registry> registry,
                std::vector<plugins::LoadFailure> failures,
                std::string plugin_dir,
                const std::vector<plugins::DeviceFacts>& facts,
                migration::DeviceRegistry* devices);

  // ListPlugins.
  v1::ListPluginsResponse List() const;

  // The loaded plugins (for the host's driver choice, driver_preference.h).
  const plugins::Registry& registry() const { return *registry_; }

  // Source: the compat descriptor of each device in `names`, in order. The
  // first error (a plugin conflict, a plugin's describe failing) names the
  // device.
  absl::StatusOr<std::vector<v1::CompatDescriptor>> Describe(
      const std::vector<std::string>& names) const;

  // Destination: the check a prepared job runs on its session header before
  // it accepts it. OK, or kFailedPrecondition (INCOMPATIBLE) naming the
  // device, the field and both values.
  absl::Status CheckSession(const v1::SessionHeader& header) const;

  // TransferService.CheckCompatibility: every device of `request`, as
  // CheckSession would, and whether the device is free to take a state
  // (found, held by no job, in a state a destination starts from).
  v1::CheckCompatibilityResponse CheckHere(
      const v1::CheckCompatibilityRequest& request) const;

  // MigrationService.CheckMigration, on the source: the devices here, then
  // the destination's answer over `dial` (a fresh channel), timed to
  // estimate the bandwidth. `pairs` are validated already. Fails only when
  // the request cannot be checked at all; an unreachable destination is a
  // blocker in the report.
  v1::CheckMigrationResponse CheckMigration(
      const std::vector<v1::DevicePair>& pairs,
      const std::function<std::shared_ptr<grpc::Channel>()>& dial) const;

 private:
  const plugins::Binding* Find(const std::string& device) const;

  std::unique_ptr<plugins::Registry> registry_;
  std::vector<plugins::LoadFailure> failures_;
  std::string plugin_dir_;
  std::map<std::string, plugins::Binding> bindings_;
  migration::DeviceRegistry* devices_;
};

}  // namespace migd::server

#endif  // MIGD_SERVER_COMPATIBILITY_H_
