// migd/server/host_service.h
//
// migd.v1.HostService: the host library (migd/host) over gRPC. Tells what
// sysfs says of a PCI device and what migd would do with it; binds devices
// to VFIO drivers and back, recording each bind durably first
// (host::BindingStore) so that an unbind after a restart returns the device
// to its original driver; sets SR-IOV VF counts; lists, creates and removes
// mdev instances.
//
// Order of a bind: every refusal is decided before anything changes (the
// device exists; no job of this agent holds it; no user holds its IOMMU
// group; the group is viable; migd did not bind it elsewhere; the driver is
// chosen; its module is loaded, which moves no device); then the record
// (the driver, the original driver and driver_override) is stored, then the
// binder moves the device, rolling back on failure, and the record is
// removed again when the bind failed. Between the binder's unbind and its
// probe the claiming vendor plugin prepares the host for the device
// (HostServiceOptions::prepare_host); its failure fails the bind like any
// other step. host/binding_store.h says what a crash at each step leaves.
// An unbind moves the device back first and removes the record after.
//
// Host changes are serialized per device (and an SR-IOV change with the
// PF's VFs, an mdev creation per parent): two binds of one device never
// interleave, different devices change at once.
//
// Allocation (AllocateDevices, ReleaseDevices, ListAllocations): the host
// library's host::Allocator picks the devices and records them
// (<state_dir>/host-allocations); it moves them through this service's own
// bind, unbind and mdev operations (the same checks, records and locks as
// BindDevice and the others). A device an allocation holds is refused to
// BindDevice, UnbindDevice and RemoveMdev (DEVICE_BUSY naming the owner).
//
// Errors: the host library's absl::Status gets a migd.v1.ErrorReason here
// (INVALID_REQUEST, DEVICE_NOT_FOUND, DEVICE_BUSY, HOST_PRECONDITION,
// JOURNAL, DEVICE_ERROR for a kernel write refused after the first write,
// INTERNAL) and goes out through transfer::ToGrpcStatus (the code, the
// message, the "migd-error-reason" trailer).

#ifndef MIGD_SERVER_HOST_SERVICE_H_
#define MIGD_SERVER_HOST_SERVICE_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "migd/host/allocation_store.h"
#include "migd/host/allocator.h"
#include "migd/host/binder.h"
#include "migd/host/binding_store.h"
#include "migd/host/iommu_group.h"
#include "migd/host/modalias.h"
#include "migd/host/modules.h"
#include "migd/host/sysfs.h"
#include "migd/migration/device_registry.h"
#include "migd/server/vf_tokens.h"
#include "proto/migd/v1/host.grpc.pb.h"

namespace migd::server {

struct HostServiceOptions {
  // The sysfs root (host::Sysfs): "" for the host's own /sys, /lib/modules
  // and /dev; a fake tree in tests.
  std::string sysfs_root;
  // Where sysfs writes go; null for the kernel's. Tests give a fake kernel
  // (host/fake_kernel.h): writes to a fake tree change nothing otherwise.
  host::SysfsWriter* writer = nullptr;
  // Not owned; must outlive the service. `bindings` may be null (an agent
  // without a state directory): then BindDevice and UnbindDevice of a bound
  // device are refused, since a bind could not be undone after a restart.
  host::ModuleLoader* modules = nullptr;
  host::GroupUsage* usage = nullptr;
  host::BindingStore* bindings = nullptr;
  // The allocations (next to `bindings`); null without a state directory:
  // then AllocateDevices is refused and ListAllocations lists nothing.
  host::AllocationStore* allocations = nullptr;
  // The agent's devices, to refuse changing one a job holds (null: none).
  const migration::DeviceRegistry* devices = nullptr;
  // The host name of each of the agent's devices: a normalized PCI address
  // or an mdev UUID -> the agent's device name.
  std::map<std::string, std::string> device_names;
  // The kernel whose modules.alias decides the driver choice ("": the
  // running one's, uname -r).
  std::string kernel_release;
  // What a vendor plugin prefers for a device, when the driver is migd's
  // choice (host::ChooseVfioPciModule's order: a named driver, then this,
  // then modules.alias). Null: no plugin preferences.
  host::ModulePreferenceFn module_preference;
  // Prepares the host for a PCI device that a bind or an allocation moves
  // to a VFIO driver, after it has left its driver and before that driver
  // probes it (host::PrepareHostFn; the agent wires the claiming plugin's
  // prepare_host). Null: nothing to prepare.
  host::PrepareHostFn prepare_host;
  // Called by ReleaseDevices(owner) before anything is released: closes
  // what the agent itself holds open of the owner's devices (a job's
  // allocated device that loaded the VM's state stays open until then; a
  // device held open cannot be unbound). An error refuses the release,
  // nothing released. Null: nothing to close.
  std::function<absl::Status(const std::string& owner)> before_release;
  // The VF tokens this agent owns (not owned; null without a state
  // directory: then SetVfToken is refused). An unbind of a PF whose token it
  // owns closes the PF and forgets the token first.
  VfTokens* vf_tokens = nullptr;
};

class HostServiceImpl final : public v1::HostService::Service {
 public:
  explicit HostServiceImpl(HostServiceOptions options);
  ~HostServiceImpl() override;

  grpc::Status GetHostDevice(grpc::ServerContext* context,
                             const v1::GetHostDeviceRequest* request,
                             v1::HostDevice* response) override;
  grpc::Status BindDevice(grpc::ServerContext* context,
                          const v1::BindDeviceRequest* request,
                          v1::HostDevice* response) override;
  grpc::Status UnbindDevice(grpc::ServerContext* context,
                            const v1::UnbindDeviceRequest* request,
                            v1::HostDevice* response) override;
  grpc::Status SetVfCount(grpc::ServerContext* context,
                          const v1::SetVfCountRequest* request,
                          v1::HostDevice* response) override;
  grpc::Status SetVfToken(grpc::ServerContext* context,
                          const v1::SetVfTokenRequest* request,
                          v1::VfTokenResponse* response) override;
  grpc::Status ListMdevTypes(grpc::ServerContext* context,
                             const v1::ListMdevTypesRequest* request,
                             v1::ListMdevTypesResponse* response) override;
  grpc::Status CreateMdev(grpc::ServerContext* context,
                          const v1::CreateMdevRequest* request,
                          v1::Mdev* response) override;
  grpc::Status RemoveMdev(grpc::ServerContext* context,
                          const v1::RemoveMdevRequest* request,
                          v1::Mdev* response) override;
  grpc::Status AllocateDevices(grpc::ServerContext* context,
                               const v1::AllocateDevicesRequest* request,
                               v1::AllocateDevicesResponse* response) override;
  grpc::Status ReleaseDevices(grpc::ServerContext* context,
                              const v1::ReleaseDevicesRequest* request,
                              v1::ReleaseDevicesResponse* response) override;
  grpc::Status ListAllocations(grpc::ServerContext* context,
                               const v1::ListAllocationsRequest* request,
                               v1::ListAllocationsResponse* response) override;

  // The same operations as absl::Status with the reason attached, for
  // in-process callers and tests.
  absl::StatusOr<v1::HostDevice> Get(const std::string& address);
  absl::StatusOr<v1::HostDevice> Bind(const std::string& address,
                                      const std::string& driver);
  absl::StatusOr<v1::HostDevice> Unbind(const std::string& address,
                                        bool to_no_driver);
  absl::StatusOr<v1::HostDevice> SetVfs(const std::string& pf_address,
                                        uint32_t count);
  absl::StatusOr<v1::VfTokenResponse> OwnVfToken(const std::string& pf_address);
  absl::StatusOr<v1::ListMdevTypesResponse> MdevTypes(
      const std::string& parent);
  absl::StatusOr<v1::Mdev> CreateMdevInstance(const std::string& parent,
                                              const std::string& type,
                                              const std::string& uuid);
  absl::StatusOr<v1::Mdev> RemoveMdevInstance(const std::string& uuid);
  absl::StatusOr<v1::AllocateDevicesResponse> Allocate(
      const v1::AllocateDevicesRequest& request);
  absl::StatusOr<v1::ReleaseDevicesResponse> Release(const std::string& owner);
  v1::ListAllocationsResponse Allocations(const std::string& owner) const;

 private:
  class Locks;
  class CountingWriter;
  class Actions;

  // Bind, Unbind and RemoveMdevInstance without the refusal of a device an
  // allocation holds: what the allocator itself does.
  absl::StatusOr<v1::HostDevice> DoBind(const std::string& address,
                                        const std::string& driver);
  absl::StatusOr<v1::HostDevice> DoUnbind(const std::string& address,
                                          bool to_no_driver);
  absl::StatusOr<v1::Mdev> DoRemoveMdev(const std::string& uuid);
  // DEVICE_BUSY naming the owner when an allocation holds `host_name`.
  absl::Status RefuseAllocated(const std::string& host_name,
                               const std::string& what) const;

  // The device's facts (GetHostDevice), `bdf` normalized and existing.
  v1::HostDevice Describe(const host::Sysfs& sysfs, const std::string& bdf);
  // DEVICE_BUSY naming the job when a job of this agent holds the device
  // `host_name` (a PCI address or mdev UUID); `what` names the refused
  // operation.
  absl::Status RefuseClaimed(const std::string& host_name,
                             const std::string& what) const;
  // DEVICE_BUSY when the PCI device at `bdf` is on a VFIO driver and a
  // process holds its IOMMU group.
  absl::Status RefuseInUse(const host::Sysfs& sysfs, const std::string& bdf,
                           const std::string& what);

  // Where this service's writes go: options_.writer, else the kernel's.
  host::SysfsWriter* writer();

  const HostServiceOptions options_;
  host::KernelSysfsWriter kernel_writer_;
  std::unique_ptr<Locks> locks_;
  std::unique_ptr<Actions> actions_;
  std::unique_ptr<host::Allocator> allocator_;  // null without allocations
};

}  // namespace migd::server

#endif  // MIGD_SERVER_HOST_SERVICE_H_
