#include "migd/security/openssl_util.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "absl/time/time.h"

namespace migd::security {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

BioPtr MemoryBio(absl::string_view text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// No passphrase prompt on a terminal: an encrypted key simply fails.
int NoPassphrase(char*, int, int, void*) { return -1; }

absl::Time AsnTime(const ASN1_TIME* t) {
  struct tm tm = {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTM(tm, absl::UTCTimeZone());
}

}  // namespace

std::vector<X509Ptr> ParsePemCertificates(absl::string_view pem) {
  std::vector<X509Ptr> out;
  BioPtr bio = MemoryBio(pem);
  while (bio != nullptr) {
    X509* x = PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr);
    if (x == nullptr) break;
    out.emplace_back(x);
  }
  ERR_clear_error();
  return out;
}

EvpPkeyPtr ParsePemPrivateKey(absl::string_view pem) {
  BioPtr bio = MemoryBio(pem);
  EvpPkeyPtr key;
  if (bio != nullptr) {
    key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase,
                                      nullptr));
  }
  ERR_clear_error();
  return key;
}

CertificateInfo Describe(X509* cert) {
  CertificateInfo info;
  if (char* s = X509_NAME_oneline(X509_get_subject_name(cert), nullptr, 0)) {
    info.subject = s;
    OPENSSL_free(s);
  }
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)) {
    if (char* hex = BN_bn2hex(bn)) {
      info.serial = hex;
      OPENSSL_free(hex);
    }
    BN_free(bn);
  }
  info.not_before = AsnTime(X509_get0_notBefore(cert));
  info.not_after = AsnTime(X509_get0_notAfter(cert));
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  std::string dns;
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_URI && n->type != GEN_DNS) continue;
    const ASN1_IA5STRING* v = n->d.ia5;
    std::string value(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                      ASN1_STRING_length(v));
    if (n->type == GEN_URI && info.identity.empty()) info.identity = value;
    if (n->type == GEN_DNS && dns.empty()) dns = value;
  }
  if (info.identity.empty()) info.identity = dns;
  GENERAL_NAMES_free(names);
  ERR_clear_error();
  return info;
}

}  // namespace migd::security
