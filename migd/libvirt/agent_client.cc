#include "migd/libvirt/agent_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"

namespace migd::libvirt {
namespace {

// The agent's refusal as a status: its code and message, with the reason
// it attached (the "migd-error-reason" trailer) when there is one.
absl::Status FromGrpc(const grpc::Status& s, const grpc::ClientContext& context,
                      const std::string& agent, const char* method) {
  std::string reason;
  const auto& trailers = context.GetServerTrailingMetadata();
  if (auto it = trailers.find("migd-error-reason"); it != trailers.end()) {
    reason = std::string(it->second.data(), it->second.size());
  }
  return absl::Status(
      static_cast<absl::StatusCode>(s.error_code()),
      absl::StrCat("agent ", agent, ": ", method, ": ", s.error_message(),
                   reason.empty() ? "" : absl::StrCat(" [", reason, "]")));
}

Allocation FromProto(const v1::AllocatedDevice& d) {
  return Allocation{d.key(), d.address(), d.driver(), d.mdev_uuid()};
}

}  // namespace

GrpcAgent::GrpcAgent(std::shared_ptr<grpc::Channel> channel, std::string agent,
                     absl::Duration timeout)
    : stub_(v1::HostService::NewStub(std::move(channel))),
      agent_(std::move(agent)),
      timeout_(timeout) {}

absl::StatusOr<std::vector<Allocation>> GrpcAgent::Allocate(
    const std::string& owner, const std::vector<DeviceRequest>& devices) {
  v1::AllocateDevicesRequest request;
  request.set_owner(owner);
  for (const DeviceRequest& d : devices) {
    v1::DeviceRequest* r = request.add_devices();
    r->set_key(d.key);
    r->mutable_device_class()->set_pci_ids(d.pci_ids);
    r->mutable_device_class()->set_mdev_type(d.mdev_type);
    r->mutable_device_class()->set_mdev_parent(d.mdev_parent);
    r->set_driver(d.driver);
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  v1::AllocateDevicesResponse response;
  grpc::Status s = stub_->AllocateDevices(&context, request, &response);
  if (!s.ok()) return FromGrpc(s, context, agent_, "AllocateDevices");
  std::vector<Allocation> out;
  for (const v1::AllocatedDevice& d : response.devices()) {
    out.push_back(FromProto(d));
  }
  if (out.size() != devices.size()) {
    return absl::InternalError(absl::StrCat(
        "agent ", agent_, ": AllocateDevices answered ", out.size(),
        " device(s) for ", devices.size(), " requested"));
  }
  return out;
}

absl::StatusOr<std::vector<Allocation>> GrpcAgent::Release(
    const std::string& owner) {
  v1::ReleaseDevicesRequest request;
  request.set_owner(owner);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  v1::ReleaseDevicesResponse response;
  grpc::Status s = stub_->ReleaseDevices(&context, request, &response);
  if (!s.ok()) return FromGrpc(s, context, agent_, "ReleaseDevices");
  std::vector<Allocation> out;
  for (const v1::AllocatedDevice& d : response.released()) {
    out.push_back(FromProto(d));
  }
  return out;
}

absl::StatusOr<std::vector<Allocation>> GrpcAgent::List(
    const std::string& owner) {
  v1::ListAllocationsRequest request;
  request.set_owner(owner);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  v1::ListAllocationsResponse response;
  grpc::Status s = stub_->ListAllocations(&context, request, &response);
  if (!s.ok()) return FromGrpc(s, context, agent_, "ListAllocations");
  std::vector<Allocation> out;
  for (const v1::AllocatedDevice& d : response.devices()) {
    out.push_back(FromProto(d));
  }
  return out;
}

absl::Status GrpcAgent::Bind(const std::string& address,
                             const std::string& driver) {
  v1::BindDeviceRequest request;
  request.set_address(address);
  request.set_driver(driver);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  v1::HostDevice response;
  grpc::Status s = stub_->BindDevice(&context, request, &response);
  if (!s.ok()) return FromGrpc(s, context, agent_, "BindDevice");
  return absl::OkStatus();
}

}  // namespace migd::libvirt
