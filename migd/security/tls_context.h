// migd/security/tls_context.h
//
// OpenSSL contexts for the connections migd speaks TLS on itself, outside
// gRPC: the data channel that carries device state between agents
// (migd/transfer/data_connection.h). The same files and the same rules as
// the gRPC credentials (credentials.h): mutual TLS, the peer's chain must end
// at the CA bundle, and the peer's identity is the first URI SAN of its
// certificate, else the first DNS SAN (identity.h).
//
// TLS 1.3 only. The cipher suite is AES-128-GCM first: with AES-NI it is the
// cheapest AEAD OpenSSL offers, and its tag covers every byte on the wire.
// The files are read each time a context is made, so a rotated certificate
// is used for the next connection, as with gRPC.

#ifndef MIGD_SECURITY_TLS_CONTEXT_H_
#define MIGD_SECURITY_TLS_CONTEXT_H_

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "migd/security/tls_files.h"

namespace migd::security {

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

// The cipher suites offered, in order of preference (OpenSSL's syntax).
inline constexpr char kDataCipherSuites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_"
    "SHA256";

enum class TlsSide { kClient, kServer };

// A context for one side, from `files` (read now). Both sides present their
// certificate and require the peer's, verified against files.ca.
// kInvalidArgument (naming the file) when a file does not load, as
// CheckTlsFiles says.
absl::StatusOr<SslCtxPtr> NewTlsContext(const TlsFiles& files, TlsSide side);

// The identity of the peer of an established connection: first URI SAN,
// else first DNS SAN of its certificate; "" without a certificate.
std::string TlsPeerIdentity(const SSL* ssl);

// OpenSSL's error queue as text (and emptied); "" when it is empty.
std::string TakeOpenSslErrors();

}  // namespace migd::security

#endif  // MIGD_SECURITY_TLS_CONTEXT_H_
