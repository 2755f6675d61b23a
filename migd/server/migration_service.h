// migd/server/migration_service.h
//
// migd.v1.MigrationService: the control plane API. Validates every request
// before anything touches a device, turns requests into source or destination
// jobs, and reports jobs. Errors keep their gRPC code and carry the
// machine-readable reason in the "migd-error-reason" trailer.

#ifndef MIGD_SERVER_MIGRATION_SERVICE_H_
#define MIGD_SERVER_MIGRATION_SERVICE_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/device/device.h"
#include "migd/migration/device_registry.h"
#include "migd/migration/in_doubt.h"
#include "migd/migration/job_observer.h"
#include "migd/migration/job_table.h"
#include "migd/migration/transfer_gate.h"
#include "migd/security/credentials.h"
#include "migd/server/compatibility.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace migd::server {

struct MigrationServiceOptions {
  // Used when a request's policy leaves them unset.
  absl::Duration default_phase_timeout = absl::Seconds(60);
  uint32_t default_chunk_bytes = 1 << 20;
  // Fault injection for tests (see SourceJobOptions).
  std::optional<uint64_t> corrupt_chunk_sequence;
  std::optional<uint64_t> drop_stream_after;
  // Device state a destination job may hold in flight (DestinationJob's
  // memory_cap_bytes: two chunks a data stream). A source job holds two
  // chunks whatever its streams.
  uint64_t transfer_memory_cap = uint64_t{64} << 20;
  // How this agent dials destinations (and whether identities exist at all:
  // with insecure credentials none can be named or checked). Insecure when
  // null.
  std::shared_ptr<security::Credentials> credentials;
  // How long a prepared job's transfer token is accepted.
  absl::Duration token_ttl = absl::Minutes(10);
  // Source jobs that move state at once (transfer_gate.h); the others wait
  // in line, in the order they started. 0: no limit.
  uint32_t max_concurrent_migrations = 2;
  // Follow every job this service creates (the journal).
  migration::JobObservers observers;
  // How a source job whose completion did not arrive asks the destination
  // for the outcome (the dial is made here).
  migration::InDoubtOptions outcome;
  // The plugins' view of the devices: descriptors a source sends, the check
  // a prepared destination runs, ListPlugins, CheckMigration. Null: none
  // (no descriptors sent, no checks but the job's own).
  const Compatibility* compatibility = nullptr;

  // What the agent knows of each configured device on its host, by name:
  // its PCI ids ("1ac3:0101:1ac3:0080", for a PrepareIncoming by class) and
  // its host address (a PCI address or mdev UUID, for
  // DeviceProgress.host_address). Devices missing here have neither.
  struct HostFacts {
    std::string pci_ids;
    std::string host_address;
  };
  std::map<std::string, HostFacts> host_facts;
  // A PrepareIncoming by PCI class that none of the configured devices
  // satisfies, or by an mdev type, allocates a device (HostService's
  // allocator, owner = the job id, key = the source device): a PCI device
  // of the ids, bound to its VFIO driver, or a new mdev instance of the
  // type. Returns what AllocateDevices answers for that one request. Null:
  // no allocation.
  std::function<absl::StatusOr<v1::AllocatedDevice>(
      const std::string& job, const std::string& key,
      const v1::DeviceClass& device_class)>
      allocate;
  // Releases everything job `job` was allocated.
  std::function<absl::Status(const std::string& job)> release_allocations;
  // Opens an allocated device as the config line "vfio NAME SOURCE" would:
  // SOURCE is "bdf=0000:5e:01.3" or "mdev=<uuid>".
  std::function<absl::StatusOr<std::unique_ptr<device::Device>>(
      const std::string& name, const std::string& source)>
      open_vfio;
};

// The name PrepareIncoming gives the `n`-th device it allocates for `job`
// (DevicePair.destination_class): "alloc-<job>-<n>". Recovery opens a dead
// job's devices again under the names its record gives.
std::string AllocatedDeviceName(absl::string_view job, int n);

// Closes and removes from `devices` every device named for `job` by
// AllocatedDeviceName. A device that loaded the VM's state stays open after
// its job (it holds the VM, or its only copy) until its owner releases it:
// HostService.ReleaseDevices calls this first, since a device the agent
// holds open cannot be unbound. kFailedPrecondition (DEVICE_BUSY) naming
// the job when a job holds one of them; then none is removed.
absl::Status CloseAllocatedDevices(migration::DeviceRegistry& devices,
                                   absl::string_view job);

class MigrationServiceImpl final : public v1::MigrationService::Service {
 public:
  MigrationServiceImpl(migration::DeviceRegistry* devices,
                       migration::JobTable* jobs,
                       MigrationServiceOptions options);

  grpc::Status ListDevices(grpc::ServerContext* context,
                           const v1::ListDevicesRequest* request,
                           v1::ListDevicesResponse* response) override;
  grpc::Status PrepareIncoming(grpc::ServerContext* context,
                               const v1::PrepareIncomingRequest* request,
                               v1::PrepareIncomingResponse* response) override;
  grpc::Status StartMigration(grpc::ServerContext* context,
                              const v1::StartMigrationRequest* request,
                              v1::Migration* response) override;
  grpc::Status GetMigration(grpc::ServerContext* context,
                            const v1::GetMigrationRequest* request,
                            v1::Migration* response) override;
  grpc::Status WatchMigration(
      grpc::ServerContext* context, const v1::WatchMigrationRequest* request,
      grpc::ServerWriter<v1::MigrationEvent>* writer) override;
  grpc::Status CancelMigration(grpc::ServerContext* context,
                               const v1::CancelMigrationRequest* request,
                               v1::Migration* response) override;
  grpc::Status ListMigrations(grpc::ServerContext* context,
                              const v1::ListMigrationsRequest* request,
                              v1::ListMigrationsResponse* response) override;
  grpc::Status WatchDirtyPages(
      grpc::ServerContext* context, const v1::WatchDirtyPagesRequest* request,
      grpc::ServerWriter<v1::DirtyPages>* writer) override;
  // The operator's decision for a job IN_DOUBT, logged with the caller's
  // identity and noted in the job.
  grpc::Status ResolveMigration(grpc::ServerContext* context,
                                const v1::ResolveMigrationRequest* request,
                                v1::Migration* response) override;
  // A dry run of StartMigration (Compatibility::CheckMigration): the
  // request is validated as StartMigration's is, without a token.
  grpc::Status CheckMigration(grpc::ServerContext* context,
                              const v1::CheckMigrationRequest* request,
                              v1::CheckMigrationResponse* response) override;
  grpc::Status ListPlugins(grpc::ServerContext* context,
                           const v1::ListPluginsRequest* request,
                           v1::ListPluginsResponse* response) override;

 private:
  // The destination devices of PrepareIncoming's pairs that name a class,
  // picked (and, for an allocated device, opened and added to the
  // registry, its name appended to `added`), in `pairs`' destination_device.
  // The caller holds the job id reserved and pick_mu_.
  // `added`: the allocated devices' names -> their host addresses (a PCI
  // address, an mdev UUID).
  absl::Status PickByClass(
      const std::string& job,
      google::protobuf::RepeatedPtrField<v1::DevicePair>* pairs,
      std::map<std::string, std::string>* added)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pick_mu_);
  // Allocates a device of `pair`'s destination_class (a PCI class or an
  // mdev type) for `job`, opens it as device "alloc-<job>-<n>", adds it to
  // the registry and to `added` (from the allocation on, so that a failure
  // releases it) and names it in `pair`. `what` names the pair in errors,
  // `why` says why a configured device would not do ("" for none).
  absl::Status AllocateForPair(const std::string& job, const std::string& what,
                               const std::string& why, int n,
                               v1::DevicePair& pair,
                               std::map<std::string, std::string>* added)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pick_mu_);
  // Sets each pair's host_address from options_.host_facts (and `extra`).
  void FillHostAddresses(
      std::vector<migration::DevicePair>& pairs,
      const std::map<std::string, std::string>& extra = {}) const;

  // Reserves the job id and claims this agent's devices of `pairs` for it;
  // on error neither stays taken.
  absl::StatusOr<std::vector<device::Device*>> ReserveAndClaim(
      const std::string& id, const std::vector<migration::DevicePair>& pairs);

  bool secure() const { return !options_.credentials->insecure(); }

  migration::DeviceRegistry* const devices_;
  migration::JobTable* const jobs_;
  const MigrationServiceOptions options_;
  migration::TransferGate gate_;
  // Serializes picking devices by class, so that two PrepareIncomings do
  // not pick the same free device.
  absl::Mutex pick_mu_;
};

}  // namespace migd::server

#endif  // MIGD_SERVER_MIGRATION_SERVICE_H_
