// migd/libvirt/agent_client.h
//
// The hook's Agent over gRPC: the local agent's HostService, reached like
// migctl reaches it (mutual TLS with a certificate whose identity the
// agent's policy gives the operator role, or plaintext when the agent runs
// --insecure). Each call has a deadline: libvirt waits for the hook, and a
// hung hook hangs the domain's operation.

#ifndef MIGD_LIBVIRT_AGENT_CLIENT_H_
#define MIGD_LIBVIRT_AGENT_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "migd/libvirt/hook.h"
#include "proto/migd/v1/host.grpc.pb.h"

namespace migd::libvirt {

class GrpcAgent final : public Agent {
 public:
  // `agent` names the agent in errors ("127.0.0.1:7070").
  GrpcAgent(std::shared_ptr<grpc::Channel> channel, std::string agent,
            absl::Duration timeout);

  absl::StatusOr<std::vector<Allocation>> Allocate(
      const std::string& owner,
      const std::vector<DeviceRequest>& devices) override;
  absl::StatusOr<std::vector<Allocation>> Release(
      const std::string& owner) override;
  absl::StatusOr<std::vector<Allocation>> List(
      const std::string& owner) override;
  absl::Status Bind(const std::string& address,
                    const std::string& driver) override;

 private:
  std::unique_ptr<v1::HostService::Stub> stub_;
  std::string agent_;
  absl::Duration timeout_;
};

}  // namespace migd::libvirt

#endif  // MIGD_LIBVIRT_AGENT_CLIENT_H_
