#include "migd/security/authorizer.h"

#include <grpc/grpc_security_constants.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/base/log.h"
#include "migd/security/identity.h"

namespace migd::security {
namespace {

std::string Property(const grpc::AuthContext& context, const char* name) {
  std::vector<grpc::string_ref> values = context.FindPropertyValues(name);
  if (values.empty()) return "";
  return std::string(values[0].data(), values[0].size());
}

}  // namespace

absl::StatusOr<std::shared_ptr<Authorizer>> Authorizer::Load(
    const std::string& ca_path, const std::string& policy_path) {
  absl::StatusOr<std::unique_ptr<TrustStore>> trust = TrustStore::Load(ca_path);
  if (!trust.ok()) return trust.status();
  absl::StatusOr<Policy> policy = Policy::Load(policy_path);
  if (!policy.ok()) return policy.status();
  return std::make_shared<Authorizer>(*std::move(trust), *std::move(policy));
}

Authorizer::Authorizer(std::unique_ptr<TrustStore> trust, Policy policy)
    : trust_(std::move(trust)), policy_(std::move(policy)) {}

grpc::Status Authorizer::Check(absl::string_view method,
                               const grpc::AuthContext& peer) {
  absl::Status verified =
      trust_->Verify(PeerCertificatePem(peer),
                     Property(peer, GRPC_X509_PEM_CERT_CHAIN_PROPERTY_NAME));
  if (!verified.ok()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        std::string(verified.message()));
  }
  const std::string identity = PeerIdentity(peer);
  if (identity.empty()) {
    return grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        "the client certificate has no URI or DNS subject alternative name, "
        "so it names no identity the policy could know");
  }
  const RoleSet roles = policy_.RolesOf(identity);
  if (roles == 0) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("identity ", identity,
                                     " is not in this agent's policy"));
  }
  if ((roles & RolesAllowedFor(method)) == 0) {
    return grpc::Status(
        grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat(identity, " (roles: ", RoleSetName(roles),
                     ") may not call ", method));
  }
  return grpc::Status::OK;
}

grpc::Status Authorizer::Process(const InputMetadata& auth_metadata,
                                 grpc::AuthContext* context,
                                 OutputMetadata* /*consumed_auth_metadata*/,
                                 OutputMetadata* /*response_metadata*/) {
  std::string method = "(unknown method)";
  if (auto it = auth_metadata.find(":path"); it != auth_metadata.end()) {
    method.assign(it->second.data(), it->second.size());
  }
  grpc::Status status = Check(method, *context);
  if (!status.ok()) {
    // Refused as unauthenticated, the certificate's name proves nothing.
    std::string identity = PeerIdentity(*context);
    std::string who =
        identity.empty() ? "(no identity)"
        : status.error_code() == grpc::StatusCode::UNAUTHENTICATED
            ? absl::StrCat("unverified ", identity)
            : identity;
    base::LogWarning("refused ", method, " from ", who, ": ",
                     status.error_message());
  }
  return status;
}

}  // namespace migd::security
