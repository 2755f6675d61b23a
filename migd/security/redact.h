// migd/security/redact.h
//
// The one way a secret (a transfer token, a VF token, a key) is shown: never.
// Everything that would print a secret (logs, errors, job records, migctl)
// prints Redacted(secret) instead, so a search for the secret's value in any
// output finds nothing, and a reader still sees that a value was there.

#ifndef MIGD_SECURITY_REDACT_H_
#define MIGD_SECURITY_REDACT_H_

#include <string>

#include "absl/strings/string_view.h"

namespace migd::security {

// "<redacted>" for a non-empty secret, "<empty>" for an empty one. Says
// nothing about the value, not even its length.
std::string Redacted(absl::string_view secret);

// `text` with every occurrence of `secret` replaced by Redacted(secret), for
// text that may quote a secret it was given (a config line, a kernel
// device name "<bdf> vf_token=<uuid>"). An empty secret leaves text as is.
std::string RedactFrom(absl::string_view text, absl::string_view secret);

}  // namespace migd::security

#endif  // MIGD_SECURITY_REDACT_H_
