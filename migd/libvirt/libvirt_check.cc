#include "migd/libvirt/libvirt_check.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"

namespace migd::libvirt {
namespace {

struct ConnectCloser {
  void operator()(virConnectPtr c) const { virConnectClose(c); }
};
struct DomainFreer {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};

// libvirt's message for the last error of this thread.
std::string LastError() {
  virErrorPtr e = virGetLastError();
  return e != nullptr && e->message != nullptr ? e->message : "unknown error";
}

// Errors are returned, never printed by libvirt's default handler.
void Quiet(void*, virErrorPtr) {}

}  // namespace

absl::Status CheckWithLibvirt(absl::string_view xml) {
  virSetErrorFunc(nullptr, Quiet);
  // test:///default is one in-memory driver per process, shared by its
  // connections; it starts with a sample domain named "test", which a
  // definition of that name would collide with: it goes first.
  std::unique_ptr<virConnect, ConnectCloser> conn(
      virConnectOpen("test:///default"));
  if (conn == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("libvirt: cannot open its test driver: ", LastError()));
  }
  if (std::unique_ptr<virDomain, DomainFreer> sample(
          virDomainLookupByName(conn.get(), "test"));
      sample != nullptr) {
    virDomainDestroy(sample.get());
    virDomainUndefine(sample.get());
  }
  const std::string text(xml);
  std::unique_ptr<virDomain, DomainFreer> domain(virDomainDefineXMLFlags(
      conn.get(), text.c_str(), VIR_DOMAIN_DEFINE_VALIDATE));
  if (domain == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("libvirt does not accept the definition: ", LastError()));
  }
  virDomainUndefine(domain.get());
  return absl::OkStatus();
}

}  // namespace migd::libvirt
