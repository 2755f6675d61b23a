// migd/security/tls_files.h
//
// The three files mutual TLS needs (this side's certificate chain and key,
// and the CA bundle that peers' certificates must chain to), and the checks
// an agent or migctl runs before using them, so that a wrong file is named
// at start instead of showing up later as an opaque handshake failure.
// The files are read again while the process runs (credentials.h); these
// checks only run once.

#ifndef MIGD_SECURITY_TLS_FILES_H_
#define MIGD_SECURITY_TLS_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace migd::security {

struct TlsFiles {
  std::string cert;  // PEM: the leaf certificate, then any intermediates
  std::string key;   // PEM private key of the leaf (never logged)
  std::string ca;    // PEM bundle of the CAs peers must chain to
};

// What a certificate says about itself, for status output and logs.
struct CertificateInfo {
  std::string subject;
  std::string serial;       // hex, as openssl prints it
  std::string identity;     // first URI SAN, else first DNS SAN, else ""
  absl::Time not_before;
  absl::Time not_after;
};

// Checks that every file is readable and well formed: `cert` holds at least
// one certificate, `key` a private key that matches the certificate's public
// key, `ca` at least one certificate. kInvalidArgument (or kNotFound,
// kPermissionDenied for a file that cannot be read) naming the file and the
// problem ("--tls_key /x/y.key does not match the certificate in ...").
// `flag_prefix` names the settings in messages ("--tls_" for the agent).
absl::Status CheckTlsFiles(const TlsFiles& files,
                           const std::string& flag_prefix = "--tls_");

// Reads a whole file: kNotFound / kPermissionDenied / kInvalidArgument (a
// directory, empty) naming `what` and the path.
absl::StatusOr<std::string> ReadSmallFile(const std::string& what,
                                          const std::string& path);

// The first certificate of PEM text. kInvalidArgument when there is none.
absl::StatusOr<CertificateInfo> DescribeCertificate(const std::string& pem);

}  // namespace migd::security

#endif  // MIGD_SECURITY_TLS_FILES_H_
