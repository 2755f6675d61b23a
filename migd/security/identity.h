// migd/security/identity.h
//
// A peer's identity, read from its TLS certificate as gRPC reports it: the
// first URI SAN (spiffe://...), else the first DNS SAN. Empty when the peer
// presented no certificate, or one without such a SAN, or when the
// connection is not TLS (--insecure).

#ifndef MIGD_SECURITY_IDENTITY_H_
#define MIGD_SECURITY_IDENTITY_H_

#include <string>

#include "grpcpp/security/auth_context.h"

namespace migd::security {

std::string PeerIdentity(const grpc::AuthContext& context);

// The peer's leaf certificate (PEM) as the handshake reported it; "" without.
std::string PeerCertificatePem(const grpc::AuthContext& context);

}  // namespace migd::security

#endif  // MIGD_SECURITY_IDENTITY_H_
