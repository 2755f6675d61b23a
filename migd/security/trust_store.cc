#include "migd/security/trust_store.h"

#include <sys/stat.h>

#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "migd/base/log.h"
#include "migd/security/openssl_util.h"

namespace migd::security {

struct TrustStore::Bundle {
  X509StorePtr store;
};

namespace {

absl::StatusOr<std::shared_ptr<TrustStore::Bundle>> LoadBundle(
    const std::string& path) {
  absl::StatusOr<std::string> pem = ReadSmallFile("CA bundle", path);
  if (!pem.ok()) return pem.status();
  std::vector<X509Ptr> certs = ParsePemCertificates(*pem);
  if (certs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CA bundle ", path, " holds no PEM certificate"));
  }
  auto bundle = std::make_shared<TrustStore::Bundle>();
  bundle->store.reset(X509_STORE_new());
  for (X509Ptr& c : certs) X509_STORE_add_cert(bundle->store.get(), c.get());
  return bundle;
}

struct StackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
struct CtxFree {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};

std::string Why(int err, X509* cert) {
  CertificateInfo info = Describe(cert);
  std::string who = absl::StrCat("client certificate ", info.subject,
                                 info.identity.empty() ? "" : " (",
                                 info.identity,
                                 info.identity.empty() ? "" : ")");
  switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return absl::StrCat(who, " expired at ",
                          absl::FormatTime(absl::RFC3339_sec, info.not_after,
                                           absl::UTCTimeZone()));
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return absl::StrCat(who, " is not valid before ",
                          absl::FormatTime(absl::RFC3339_sec, info.not_before,
                                           absl::UTCTimeZone()));
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      return absl::StrCat(who,
                          " is not signed by a CA this agent trusts (--tls_ca)");
    default:
      return absl::StrCat(who, " refused: ", X509_verify_cert_error_string(err));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<TrustStore>> TrustStore::Load(
    const std::string& ca_path) {
  std::unique_ptr<TrustStore> store(new TrustStore(ca_path));
  {
    absl::MutexLock lock(&store->mu_);
    struct stat st;
    if (stat(ca_path.c_str(), &st) == 0) {
      store->ino_ = st.st_ino;
      store->size_ = st.st_size;
      store->mtime_ = st.st_mtim;
    }
    absl::StatusOr<std::shared_ptr<Bundle>> bundle = LoadBundle(ca_path);
    if (!bundle.ok()) return bundle.status();
    store->bundle_ = *std::move(bundle);
  }
  return store;
}

TrustStore::~TrustStore() = default;

std::shared_ptr<TrustStore::Bundle> TrustStore::Current() {
  absl::MutexLock lock(&mu_);
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) return bundle_;
  if (st.st_ino == ino_ && st.st_size == size_ &&
      st.st_mtim.tv_sec == mtime_.tv_sec &&
      st.st_mtim.tv_nsec == mtime_.tv_nsec) {
    return bundle_;
  }
  absl::StatusOr<std::shared_ptr<Bundle>> bundle = LoadBundle(path_);
  if (!bundle.ok()) {
    // Half-written file, perhaps: keep the last good bundle, try again on
    // the next call, say so once.
    if (!reload_failed_) {
      base::LogWarning("CA bundle changed but does not load; still using the "
                       "previous one: ",
                       bundle.status().message());
      reload_failed_ = true;
    }
    return bundle_;
  }
  ino_ = st.st_ino;
  size_ = st.st_size;
  mtime_ = st.st_mtim;
  reload_failed_ = false;
  bundle_ = *std::move(bundle);
  base::LogInfo("CA bundle ", path_, " reloaded");
  return bundle_;
}

absl::Status TrustStore::Verify(absl::string_view leaf_pem,
                                absl::string_view chain_pem) {
  std::vector<X509Ptr> leaf = ParsePemCertificates(leaf_pem);
  if (leaf.empty()) {
    return absl::UnauthenticatedError(
        "no client certificate: this agent requires mutual TLS (present a "
        "certificate signed by a CA in its --tls_ca)");
  }
  std::unique_ptr<STACK_OF(X509), StackFree> untrusted(sk_X509_new_null());
  for (X509Ptr& c : ParsePemCertificates(chain_pem)) {
    sk_X509_push(untrusted.get(), c.release());
  }
  std::shared_ptr<Bundle> bundle = Current();
  std::unique_ptr<X509_STORE_CTX, CtxFree> ctx(X509_STORE_CTX_new());
  if (ctx == nullptr ||
      X509_STORE_CTX_init(ctx.get(), bundle->store.get(), leaf[0].get(),
                          untrusted.get()) != 1) {
    ERR_clear_error();
    return absl::InternalError("cannot set up certificate verification");
  }
  // A client certificate: check it is meant for TLS clients.
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  int ok = X509_verify_cert(ctx.get());
  int err = X509_STORE_CTX_get_error(ctx.get());
  ERR_clear_error();
  if (ok != 1) return absl::UnauthenticatedError(Why(err, leaf[0].get()));
  return absl::OkStatus();
}

}  // namespace migd::security
