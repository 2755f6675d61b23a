// migd/security/policy.h
//
// Who may call what. A policy file maps identities (certificate SANs, such as
// spiffe://example.org/agent/host7 or a DNS name) to roles:
//
//   # identity                              roles (comma-separated)
//   spiffe://example.org/agent/host7         agent
//   spiffe://example.org/control-plane       operator
//   spiffe://example.org/dashboards          observer
//
// and each role to the methods it may call:
//   operator  every migd.v1.MigrationService and migd.v1.HostService method
//   observer  ListDevices, GetMigration, WatchMigration, ListMigrations,
//             WatchDirtyPages, ListPlugins of MigrationService and
//             GetHostDevice, ListMdevTypes of HostService (reads only)
//   agent     migd.v1.TransferService (another migd moving device state here)
// The operator alone may change the host: HostService's BindDevice,
// UnbindDevice, SetVfCount, CreateMdev, RemoveMdev.
// Any identity the policy knows may call grpc.health.v1.Health. A method the
// table does not list is refused to everyone.

#ifndef MIGD_SECURITY_POLICY_H_
#define MIGD_SECURITY_POLICY_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migd::security {

enum class Role : uint32_t {
  kOperator = 1 << 0,
  kObserver = 1 << 1,
  kAgent = 1 << 2,
};
using RoleSet = uint32_t;  // bits of Role

// "operator", "observer", "agent".
absl::string_view RoleName(Role role);
// "operator,agent"; "none" when empty.
std::string RoleSetName(RoleSet roles);

// The roles allowed to call `method`
// ("/migd.v1.MigrationService/StartMigration"), as a set; 0 when nobody may.
// Health checking answers kAnyRole.
inline constexpr RoleSet kAnyRole = ~RoleSet{0};
RoleSet RolesAllowedFor(absl::string_view method);

class Policy {
 public:
  // Parses policy text. kInvalidArgument naming `origin`, the line and the
  // problem: an unknown role, an identity given twice, a line without roles.
  // An empty policy is allowed (it refuses everyone).
  static absl::StatusOr<Policy> Parse(absl::string_view text,
                                      absl::string_view origin);
  // Reads and parses a file; errors name the file.
  static absl::StatusOr<Policy> Load(const std::string& path);

  // The roles of `identity`; 0 when the policy does not know it.
  RoleSet RolesOf(absl::string_view identity) const;
  size_t size() const { return roles_.size(); }

 private:
  std::map<std::string, RoleSet, std::less<>> roles_;
};

}  // namespace migd::security

#endif  // MIGD_SECURITY_POLICY_H_
