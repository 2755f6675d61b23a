#include "migd/security/tls_files.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "migd/security/openssl_util.h"

namespace migd::security {

absl::StatusOr<std::string> ReadSmallFile(const std::string& what,
                                          const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not set"));
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    int err = errno;
    std::string msg = absl::StrCat(what, " ", path, ": ", strerror(err));
    return err == ENOENT   ? absl::NotFoundError(msg)
           : err == EACCES ? absl::PermissionDeniedError(msg)
                           : absl::InvalidArgumentError(msg);
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, " is not a regular file"));
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, " ", path, ": cannot be read"));
  }
  std::stringstream text;
  text << f.rdbuf();
  if (text.str().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, " is empty"));
  }
  return text.str();
}

absl::StatusOr<CertificateInfo> DescribeCertificate(const std::string& pem) {
  std::vector<X509Ptr> certs = ParsePemCertificates(pem);
  if (certs.empty()) {
    return absl::InvalidArgumentError("no PEM certificate");
  }
  return Describe(certs[0].get());
}

absl::Status CheckTlsFiles(const TlsFiles& files,
                           const std::string& flag_prefix) {
  const std::string cert_flag = flag_prefix + "cert";
  const std::string key_flag = flag_prefix + "key";
  const std::string ca_flag = flag_prefix + "ca";
  absl::StatusOr<std::string> cert_pem = ReadSmallFile(cert_flag, files.cert);
  if (!cert_pem.ok()) return cert_pem.status();
  std::vector<X509Ptr> chain = ParsePemCertificates(*cert_pem);
  if (chain.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        cert_flag, " ", files.cert, " holds no PEM certificate"));
  }
  absl::StatusOr<std::string> key_pem = ReadSmallFile(key_flag, files.key);
  if (!key_pem.ok()) return key_pem.status();
  EvpPkeyPtr key = ParsePemPrivateKey(*key_pem);
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_flag, " ", files.key,
        " holds no PEM private key (or one protected by a passphrase, "
        "which migd cannot use)"));
  }
  if (X509_check_private_key(chain[0].get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, " ", files.key,
                     " does not match the certificate in ", cert_flag, " ",
                     files.cert, " (", Describe(chain[0].get()).subject, ")"));
  }
  absl::StatusOr<std::string> ca_pem = ReadSmallFile(ca_flag, files.ca);
  if (!ca_pem.ok()) return ca_pem.status();
  if (ParsePemCertificates(*ca_pem).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        ca_flag, " ", files.ca, " holds no PEM certificate (an empty bundle "
        "would trust nobody)"));
  }
  return absl::OkStatus();
}

}  // namespace migd::security
