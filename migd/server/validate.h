// migd/server/validate.h
//
// Checks on what callers send, before anything touches a device: job ids,
// device lists, peer addresses, policy values. Every error is
// kInvalidArgument (INVALID_REQUEST) and names the field and the bad value.

#ifndef MIGD_SERVER_VALIDATE_H_
#define MIGD_SERVER_VALIDATE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_field.h"
#include "migd/migration/job.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::server {

// [A-Za-z0-9._-]{1,64}.
absl::Status ValidateJobId(absl::string_view job_id);

// An agent identity (a certificate's URI or DNS SAN) named in a request:
// printable ASCII without spaces, 1..512 bytes. `required` says whether empty
// is an error. INVALID_REQUEST naming `field` otherwise.
absl::Status ValidateIdentity(absl::string_view field,
                              absl::string_view identity, bool required);

// "host:port" with a port in 1..65535 and a host that is a DNS name, an IPv4
// address, or a bracketed IPv6 address ("[::1]:7070").
absl::Status ValidateAddress(absl::string_view field,
                             absl::string_view address);

// A non-empty list of pairs with non-empty names, no name twice on either side.
absl::StatusOr<std::vector<migration::DevicePair>> ValidateDevicePairs(
    const google::protobuf::RepeatedPtrField<v1::DevicePair>& pairs,
    bool local_is_source);

}  // namespace migd::server

#endif  // MIGD_SERVER_VALIDATE_H_
