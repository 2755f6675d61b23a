// migd/security/authorizer.h
//
// The one place a call is authenticated and authorized. It runs in gRPC's
// server auth filter (an AuthMetadataProcessor on the server credentials),
// before any handler, for every method of every service on the agent's port,
// the async data streams included:
//   1. the client certificate must chain to the CA bundle and be valid now,
//      else UNAUTHENTICATED with the reason (no certificate, expired,
//      unknown CA);
//   2. its identity (identity.h) must be in the policy, else UNAUTHENTICATED
//      naming the identity;
//   3. one of the identity's roles must allow the method, else
//      PERMISSION_DENIED naming the method, the identity and its roles.
// Refusals are logged with the peer's identity and the method.
//
// Handlers that need the caller's identity (the transfer token is bound to
// one) read it again with PeerIdentity(context->auth_context()).

#ifndef MIGD_SECURITY_AUTHORIZER_H_
#define MIGD_SECURITY_AUTHORIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "migd/security/policy.h"
#include "migd/security/trust_store.h"

namespace migd::security {

class Authorizer final : public grpc::AuthMetadataProcessor {
 public:
  // Loads the CA bundle and the policy file; errors name the file and the
  // problem (an unknown role, say).
  static absl::StatusOr<std::shared_ptr<Authorizer>> Load(
      const std::string& ca_path, const std::string& policy_path);

  Authorizer(std::unique_ptr<TrustStore> trust, Policy policy);

  // The check runs inline: it touches no network, only memory and a stat().
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

  // The decision for one call, apart from gRPC's plumbing (for tests).
  grpc::Status Check(absl::string_view method, const grpc::AuthContext& peer);

 private:
  std::unique_ptr<TrustStore> trust_;
  const Policy policy_;
};

}  // namespace migd::security

#endif  // MIGD_SECURITY_AUTHORIZER_H_
