#include "migd/security/redact.h"

#include "absl/strings/str_replace.h"

namespace migd::security {

std::string Redacted(absl::string_view secret) {
  return secret.empty() ? "<empty>" : "<redacted>";
}

std::string RedactFrom(absl::string_view text, absl::string_view secret) {
  if (secret.empty()) return std::string(text);
  return absl::StrReplaceAll(text, {{secret, Redacted(secret)}});
}

}  // namespace migd::security
