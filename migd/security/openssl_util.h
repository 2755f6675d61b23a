// migd/security/openssl_util.h
//
// OpenSSL objects owned by unique_ptr, PEM parsing, and what a certificate
// says about itself. Internal to migd/security.

#ifndef MIGD_SECURITY_OPENSSL_UTIL_H_
#define MIGD_SECURITY_OPENSSL_UTIL_H_

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "migd/security/tls_files.h"

namespace migd::security {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct EvpPkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;
using X509StorePtr = std::unique_ptr<X509_STORE, X509StoreFree>;

// Every certificate in PEM text, in order; stops at the first block that is
// not a certificate. Leaves OpenSSL's error queue empty.
std::vector<X509Ptr> ParsePemCertificates(absl::string_view pem);

// The first private key in PEM text; null when there is none (or it needs a
// passphrase). Leaves OpenSSL's error queue empty.
EvpPkeyPtr ParsePemPrivateKey(absl::string_view pem);

CertificateInfo Describe(X509* cert);

}  // namespace migd::security

#endif  // MIGD_SECURITY_OPENSSL_UTIL_H_
