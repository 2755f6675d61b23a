// migd/security/trust_store.h
//
// Verifies a peer's certificate chain against a CA bundle file, and says why
// a certificate is refused (expired, not yet valid, signed by an unknown CA,
// no certificate at all). The agent accepts any client certificate during
// the TLS handshake (the client still proves it holds the key) and verifies
// it here, per call: a refused client then gets UNAUTHENTICATED with the
// reason, instead of a handshake failure that tells it nothing.
//
// The bundle is read again when its file changes (checked on each call by
// its inode, size and modification time), so a rotated CA takes effect
// without a restart. Thread-safe.

#ifndef MIGD_SECURITY_TRUST_STORE_H_
#define MIGD_SECURITY_TRUST_STORE_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace migd::security {

class TrustStore {
 public:
  // Loads `ca_path`; kInvalidArgument (naming the file) when it holds no
  // certificate.
  static absl::StatusOr<std::unique_ptr<TrustStore>> Load(
      const std::string& ca_path);

  ~TrustStore();

  // Verifies `leaf_pem` (the peer's certificate) with the certificates of
  // `chain_pem` (as the peer sent them; may be empty) as untrusted
  // intermediates, against the bundle, at the current time. kUnauthenticated
  // with the reason and the certificate's subject otherwise. When the bundle
  // file changed and no longer loads, the last good bundle stays in use (and
  // the failure is logged once).
  absl::Status Verify(absl::string_view leaf_pem, absl::string_view chain_pem);

 // The loaded certificates (an X509_STORE); opaque outside trust_store.cc.
  struct Bundle;

 private:
  explicit TrustStore(std::string path) : path_(std::move(path)) {}
  // Reloads when the file changed. Returns the bundle to use.
  std::shared_ptr<Bundle> Current();

  const std::string path_;
  absl::Mutex mu_;
  std::shared_ptr<Bundle> bundle_ ABSL_GUARDED_BY(mu_);
  ino_t ino_ ABSL_GUARDED_BY(mu_) = 0;
  off_t size_ ABSL_GUARDED_BY(mu_) = 0;
  struct timespec mtime_ ABSL_GUARDED_BY(mu_) = {};
  bool reload_failed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace migd::security

#endif  // MIGD_SECURITY_TRUST_STORE_H_
