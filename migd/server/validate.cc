#include "migd/server/validate.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "migd/base/reason.h"

namespace migd::server {
namespace {

using base::InvalidRequest;

bool IsDnsNameOrIPv4(absl::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '.') return false;
  }
  return host.front() != '-' && host.front() != '.';
}

bool IsBracketedIPv6(absl::string_view host) {
  if (host.size() < 4 || host.front() != '[' || host.back() != ']') {
    return false;
  }
  for (char c : host.substr(1, host.size() - 2)) {
    if (!absl::ascii_isxdigit(c) && c != ':' && c != '.') return false;
  }
  return true;
}

}  // namespace

absl::Status ValidateJobId(absl::string_view job_id) {
  if (job_id.empty()) return InvalidRequest("job_id is empty");
  if (job_id.size() > 64) {
    return InvalidRequest(
        absl::StrCat("job_id is ", job_id.size(),
                     " characters long; at most 64 are allowed"));
  }
  for (char c : job_id) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-') {
      return InvalidRequest(
          absl::StrCat("job_id \"", absl::CHexEscape(job_id),
                       "\" has a character outside [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateIdentity(absl::string_view field,
                              absl::string_view identity, bool required) {
  if (identity.empty()) {
    return required
               ? InvalidRequest(absl::StrCat(
                     field,
                     " is empty (the identity, a URI or DNS subject "
                     "alternative name, of the other agent's certificate)"))
               : absl::OkStatus();
  }
  if (identity.size() > 512) {
    return InvalidRequest(absl::StrCat(field, " is longer than 512 bytes"));
  }
  for (char c : identity) {
    if (c <= ' ' || c > '~') {
      return InvalidRequest(absl::StrCat(field, " \"",
                                         absl::CHexEscape(identity),
                                         "\" has a space or a non-printable "
                                         "character"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAddress(absl::string_view field,
                             absl::string_view address) {
  if (address.empty()) return InvalidRequest(absl::StrCat(field, " is empty"));
  size_t colon = address.rfind(':');
  auto bad = [&](absl::string_view why) {
    return InvalidRequest(absl::StrCat(field, " \"", absl::CHexEscape(address),
                                       "\" is not host:port (", why, ")"));
  };
  if (colon == absl::string_view::npos) return bad("no port");
  absl::string_view host = address.substr(0, colon);
  absl::string_view port_text = address.substr(colon + 1);
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 1 || port > 65535 ||
      port_text.empty() || !absl::ascii_isdigit(port_text.front())) {
    return bad("port must be 1..65535");
  }
  if (!IsDnsNameOrIPv4(host) && !IsBracketedIPv6(host)) {
    return bad("bad host");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<migration::DevicePair>> ValidateDevicePairs(
    const google::protobuf::RepeatedPtrField<v1::DevicePair>& pairs,
    bool local_is_source) {
  if (pairs.empty()) return InvalidRequest("devices is empty");
  std::set<std::string> sources, destinations;
  std::vector<migration::DevicePair> out;
  for (int i = 0; i < pairs.size(); ++i) {
    const v1::DevicePair& p = pairs[i];
    if (local_is_source && p.has_destination_class()) {
      return InvalidRequest(absl::StrCat(
          "devices[", i,
          "]: destination_class is for PrepareIncoming (the destination "
          "picks the device; name the device it picked here)"));
    }
    if (p.source_device().empty() || p.destination_device().empty()) {
      return InvalidRequest(
          absl::StrCat("devices[", i,
                       "]: source_device and destination_device "
                       "must both be set"));
    }
    if (!sources.insert(p.source_device()).second) {
      return InvalidRequest(absl::StrCat("devices[", i, "]: source device ",
                                         p.source_device(),
                                         " is listed twice"));
    }
    if (!destinations.insert(p.destination_device()).second) {
      return InvalidRequest(
          absl::StrCat("devices[", i, "]: destination device ",
                       p.destination_device(), " is listed twice"));
    }
    if (local_is_source) {
      out.push_back({p.source_device(), p.destination_device()});
    } else {
      out.push_back({p.destination_device(), p.source_device()});
    }
  }
  return out;
}

}  // namespace migd::server
