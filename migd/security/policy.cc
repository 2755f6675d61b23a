#include "migd/security/policy.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "migd/security/tls_files.h"

namespace migd::security {
namespace {

constexpr Role kRoles[] = {Role::kOperator, Role::kObserver, Role::kAgent};

constexpr absl::string_view kMigrationService = "/migd.v1.MigrationService/";
constexpr absl::string_view kTransferService = "/migd.v1.TransferService/";
constexpr absl::string_view kHostService = "/migd.v1.HostService/";
constexpr absl::string_view kHealthService = "/grpc.health.v1.Health/";

// The methods of proto/migd/v1/*.proto and grpc.health.v1, by name: a method
// this table does not list is refused to everyone, so a method added to a
// service stays closed until it is given roles here.
constexpr absl::string_view kReadMethods[] = {
    "ListDevices",    "GetMigration",    "WatchMigration",
    "ListMigrations", "WatchDirtyPages", "ListPlugins"};
// CheckMigration changes no state, but it dials the destination with this
// agent's identity and moves probe bytes to it: an operator's call.
constexpr absl::string_view kWriteMethods[] = {
    "PrepareIncoming", "StartMigration", "CancelMigration", "ResolveMigration",
    "CheckMigration"};
// The data streams are not calls: they travel on the data channel, where
// the stream's identity must be the one the job's token is bound to.
constexpr absl::string_view kTransferMethods[] = {"Transfer", "GetOutcome",
                                                  "CheckCompatibility"};
constexpr absl::string_view kHealthMethods[] = {"Check", "Watch"};
// The host: reading is for operators and observers; changing a driver, a VF
// count or an mdev, and allocating or releasing devices, is the operator's
// alone.
constexpr absl::string_view kHostReadMethods[] = {
    "GetHostDevice", "ListMdevTypes", "ListAllocations"};
constexpr absl::string_view kHostWriteMethods[] = {
    "BindDevice", "UnbindDevice",    "SetVfCount",     "CreateMdev",
    "RemoveMdev", "AllocateDevices", "ReleaseDevices", "SetVfToken"};

template <size_t N>
bool OneOf(absl::string_view method, const absl::string_view (&names)[N]) {
  for (absl::string_view n : names) {
    if (method == n) return true;
  }
  return false;
}

RoleSet Bit(Role r) { return static_cast<RoleSet>(r); }

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kOperator:
      return "operator";
    case Role::kObserver:
      return "observer";
    case Role::kAgent:
      return "agent";
  }
  return "?";
}

std::string RoleSetName(RoleSet roles) {
  std::vector<absl::string_view> names;
  for (Role r : kRoles) {
    if (roles & Bit(r)) names.push_back(RoleName(r));
  }
  return names.empty() ? "none" : absl::StrJoin(names, ",");
}

RoleSet RolesAllowedFor(absl::string_view method) {
  if (absl::ConsumePrefix(&method, kMigrationService)) {
    if (OneOf(method, kReadMethods)) {
      return Bit(Role::kOperator) | Bit(Role::kObserver);
    }
    return OneOf(method, kWriteMethods) ? Bit(Role::kOperator) : 0;
  }
  if (absl::ConsumePrefix(&method, kTransferService)) {
    return OneOf(method, kTransferMethods) ? Bit(Role::kAgent) : 0;
  }
  if (absl::ConsumePrefix(&method, kHostService)) {
    if (OneOf(method, kHostReadMethods)) {
      return Bit(Role::kOperator) | Bit(Role::kObserver);
    }
    return OneOf(method, kHostWriteMethods) ? Bit(Role::kOperator) : 0;
  }
  if (absl::ConsumePrefix(&method, kHealthService)) {
    return OneOf(method, kHealthMethods) ? kAnyRole : 0;
  }
  return 0;
}

absl::StatusOr<Policy> Policy::Parse(absl::string_view text,
                                     absl::string_view origin) {
  Policy policy;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) {
      line = line.substr(0, hash);
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    auto where = [&] { return absl::StrCat(origin, ":", line_no, ": "); };
    std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (words.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), "want \"IDENTITY ROLE[,ROLE...]\", got \"", line, "\""));
    }
    RoleSet roles = 0;
    for (absl::string_view name : absl::StrSplit(words[1], ',')) {
      bool known = false;
      for (Role r : kRoles) {
        if (name == RoleName(r)) {
          roles |= Bit(r);
          known = true;
        }
      }
      if (!known) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), "unknown role \"", name,
                         "\" (roles: operator, observer, agent)"));
      }
    }
    auto [it, inserted] = policy.roles_.emplace(std::string(words[0]), roles);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), "identity ", words[0],
                       " is listed twice (give it every role on one line)"));
    }
  }
  return policy;
}

absl::StatusOr<Policy> Policy::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile("policy file", path);
  if (!text.ok()) return text.status();
  return Parse(*text, path);
}

RoleSet Policy::RolesOf(absl::string_view identity) const {
  if (identity.empty()) return 0;
  auto it = roles_.find(identity);
  return it == roles_.end() ? 0 : it->second;
}

}  // namespace migd::security
