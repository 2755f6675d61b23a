#include "migd/security/identity.h"

#include <grpc/grpc_security_constants.h>

namespace migd::security {
namespace {

std::string First(const grpc::AuthContext& context, const char* property) {
  std::vector<grpc::string_ref> values = context.FindPropertyValues(property);
  if (values.empty()) return "";
  return std::string(values[0].data(), values[0].size());
}

}  // namespace

std::string PeerIdentity(const grpc::AuthContext& context) {
  std::string uri = First(context, GRPC_PEER_URI_PROPERTY_NAME);
  if (!uri.empty()) return uri;
  return First(context, GRPC_PEER_DNS_PROPERTY_NAME);
}

std::string PeerCertificatePem(const grpc::AuthContext& context) {
  return First(context, GRPC_X509_PEM_CERT_PROPERTY_NAME);
}

}  // namespace migd::security
