#include "migd/security/tls_context.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include "absl/strings/str_cat.h"
#include "migd/security/openssl_util.h"

namespace migd::security {

std::string TakeOpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

absl::StatusOr<SslCtxPtr> NewTlsContext(const TlsFiles& files, TlsSide side) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(side == TlsSide::kServer ? TLS_server_method()
                                                     : TLS_client_method()));
  if (ctx == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot make a TLS context: ", TakeOpenSslErrors()));
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  if (SSL_CTX_set_ciphersuites(ctx.get(), kDataCipherSuites) != 1) {
    return absl::InternalError(
        absl::StrCat("TLS cipher suites refused: ", TakeOpenSslErrors()));
  }
  // The server picks from its own order, so both ends use the cheapest.
  SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE |
                                     SSL_OP_NO_TICKET |
                                     SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), files.cert.c_str()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert ", files.cert, " does not load: ", TakeOpenSslErrors()));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), files.key.c_str(),
                                  SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_key ", files.key, " does not load or match ",
                     files.cert, ": ", TakeOpenSslErrors()));
  }
  if (SSL_CTX_load_verify_locations(ctx.get(), files.ca.c_str(), nullptr) !=
      1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_ca ", files.ca, " does not load: ", TakeOpenSslErrors()));
  }
  SSL_CTX_set_verify(
      ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return ctx;
}

std::string TlsPeerIdentity(const SSL* ssl) {
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (peer == nullptr) return "";
  return Describe(peer).identity;
}

}  // namespace migd::security
