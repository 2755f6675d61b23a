// migd/libvirt/libvirt_check.h
//
// Whether libvirt itself accepts a domain definition: the definition is
// parsed and validated by libvirt's own domain parser (the library's
// in-process "test" driver, which parses and validates like the qemu
// driver's XML layer does, against the RNG schema with
// VIR_DOMAIN_DEFINE_VALIDATE, but starts nothing and needs no daemon), then
// dropped. The hook checks what it received and what it prints: libvirt
// refuses a migration whose filtered definition it cannot parse, and an
// error named here is clearer than libvirt's "invalid XML" later.
//
// Namespaced elements of other drivers (qemu:commandline) pass the schema
// check; the test driver keeps no state between calls that matters here.

#ifndef MIGD_LIBVIRT_LIBVIRT_CHECK_H_
#define MIGD_LIBVIRT_LIBVIRT_CHECK_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace migd::libvirt {

// OK when libvirt's parser accepts `xml` as a domain definition;
// kInvalidArgument with libvirt's own message otherwise; kUnavailable when
// the library cannot open its test driver.
absl::Status CheckWithLibvirt(absl::string_view xml);

}  // namespace migd::libvirt

#endif  // MIGD_LIBVIRT_LIBVIRT_CHECK_H_
