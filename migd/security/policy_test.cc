#include "migd/security/policy.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace migd::security {
namespace {

using ::testing::HasSubstr;

constexpr RoleSet kOperator = static_cast<RoleSet>(Role::kOperator);
constexpr RoleSet kObserver = static_cast<RoleSet>(Role::kObserver);
constexpr RoleSet kAgent = static_cast<RoleSet>(Role::kAgent);

std::string Migration(const std::string& method) {
  return "/migd.v1.MigrationService/" + method;
}

TEST(PolicyParse, SkipsCommentsAndBlankLines) {
  absl::StatusOr<Policy> p = Policy::Parse(
      "# identity  roles\n"
      "\n"
      "   \n"
      "spiffe://x/op   operator   # the control plane\n"
      "\t# indented comment\n"
      "spiffe://x/dash\tobserver\n",
      "test.conf");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->size(), 2u);
  EXPECT_EQ(p->RolesOf("spiffe://x/op"), kOperator);
  EXPECT_EQ(p->RolesOf("spiffe://x/dash"), kObserver);
}

TEST(PolicyParse, GivesAnIdentitySeveralRoles) {
  absl::StatusOr<Policy> p =
      Policy::Parse("spiffe://x/host7 operator,agent\n", "test.conf");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->RolesOf("spiffe://x/host7"), kOperator | kAgent);
}

TEST(PolicyParse, AcceptsAnEmptyPolicy) {
  absl::StatusOr<Policy> p = Policy::Parse("# nobody\n", "test.conf");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->size(), 0u);
}

TEST(PolicyParse, UnknownRoleIsAnErrorNamingOriginAndLine) {
  absl::StatusOr<Policy> p = Policy::Parse(
      "# header\nspiffe://x/a agent\nspiffe://x/b admin\n", "site.conf");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("site.conf:3"));
  EXPECT_THAT(p.status().message(), HasSubstr("admin"));
}

TEST(PolicyParse, DuplicateIdentityIsAnErrorNamingOriginAndLine) {
  absl::StatusOr<Policy> p = Policy::Parse(
      "spiffe://x/a agent\n\nspiffe://x/a operator\n", "site.conf");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("site.conf:3"));
  EXPECT_THAT(p.status().message(), HasSubstr("spiffe://x/a"));
}

TEST(PolicyParse, LineWithoutRolesIsAnErrorNamingOriginAndLine) {
  absl::StatusOr<Policy> p =
      Policy::Parse("spiffe://x/a agent\nspiffe://x/lonely\n", "site.conf");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("site.conf:2"));
  EXPECT_THAT(p.status().message(), HasSubstr("spiffe://x/lonely"));
}

TEST(PolicyRolesOf, UnknownIdentityHasNoRoles) {
  absl::StatusOr<Policy> p = Policy::Parse("spiffe://x/a agent\n", "t");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->RolesOf("spiffe://x/b"), 0u);
  EXPECT_EQ(p->RolesOf(""), 0u);
}

TEST(RolesAllowedFor, OperatorMayCallEveryMigrationServiceMethod) {
  for (const char* m :
       {"StartMigration", "PrepareIncoming", "CancelMigration",
        "ResolveMigration", "ListDevices", "GetMigration", "WatchMigration",
        "ListMigrations", "WatchDirtyPages", "CheckMigration", "ListPlugins"}) {
    EXPECT_NE(RolesAllowedFor(Migration(m)) & kOperator, 0u) << m;
  }
}

TEST(RolesAllowedFor, ObserverMayCallOnlyTheReadMethods) {
  for (const char* m : {"ListDevices", "GetMigration", "WatchMigration",
                        "ListMigrations", "WatchDirtyPages", "ListPlugins"}) {
    EXPECT_EQ(RolesAllowedFor(Migration(m)), kOperator | kObserver) << m;
  }
  // A dry run dials the destination as this agent and moves probe bytes.
  for (const char* m : {"StartMigration", "PrepareIncoming", "CancelMigration",
                        "ResolveMigration", "CheckMigration"}) {
    EXPECT_EQ(RolesAllowedFor(Migration(m)), kOperator) << m;
  }
}

// Deciding where an in-doubt job's devices run is the operator's alone: not
// an observer's, and not an agent's (a peer agent asks GetOutcome instead).
TEST(RolesAllowedFor, OnlyTheOperatorMayResolveAJobInDoubt) {
  EXPECT_EQ(RolesAllowedFor(Migration("ResolveMigration")), kOperator);
}

TEST(RolesAllowedFor, TransferServiceIsForAgentsOnly) {
  EXPECT_EQ(RolesAllowedFor("/migd.v1.TransferService/Transfer"), kAgent);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.TransferService/GetOutcome"), kAgent);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.TransferService/CheckCompatibility"),
            kAgent);
}

std::string Host(const std::string& method) {
  return "/migd.v1.HostService/" + method;
}

// The full method names the authorizer sees for HostService.
TEST(RolesAllowedFor, OperatorAndObserverMayReadTheHost) {
  EXPECT_EQ(RolesAllowedFor("/migd.v1.HostService/GetHostDevice"),
            kOperator | kObserver);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.HostService/ListMdevTypes"),
            kOperator | kObserver);
}

TEST(RolesAllowedFor, OnlyTheOperatorMayChangeTheHost) {
  EXPECT_EQ(RolesAllowedFor("/migd.v1.HostService/BindDevice"), kOperator);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.HostService/UnbindDevice"), kOperator);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.HostService/SetVfCount"), kOperator);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.HostService/SetVfToken"), kOperator);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.HostService/CreateMdev"), kOperator);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.HostService/RemoveMdev"), kOperator);
}

TEST(RolesAllowedFor, OperatorAndObserverMayListAllocations) {
  EXPECT_EQ(RolesAllowedFor(Host("ListAllocations")), kOperator | kObserver);
}

TEST(RolesAllowedFor, OnlyTheOperatorMayAllocateAndReleaseDevices) {
  EXPECT_EQ(RolesAllowedFor(Host("AllocateDevices")), kOperator);
  EXPECT_EQ(RolesAllowedFor(Host("ReleaseDevices")), kOperator);
}

TEST(RolesAllowedFor, AgentMayCallNothingOfHostService) {
  for (const char* m :
       {"GetHostDevice", "ListMdevTypes", "BindDevice", "UnbindDevice",
        "SetVfCount", "CreateMdev", "RemoveMdev", "AllocateDevices",
        "ReleaseDevices", "ListAllocations", "SetVfToken"}) {
    EXPECT_EQ(RolesAllowedFor(Host(m)) & kAgent, 0u) << m;
  }
}

TEST(RolesAllowedFor, UnlistedHostServiceMethodIsRefusedToEveryone) {
  EXPECT_EQ(RolesAllowedFor(Host("NewId")), 0u);
  EXPECT_EQ(RolesAllowedFor(Host("BindDeviceX")), 0u);
  EXPECT_EQ(RolesAllowedFor(Host("")), 0u);
  // The service name is matched whole, in its package.
  EXPECT_EQ(RolesAllowedFor("/migd.v2.HostService/BindDevice"), 0u);
  EXPECT_EQ(RolesAllowedFor("/HostService/BindDevice"), 0u);
}

TEST(RolesAllowedFor, AgentMayNotCallMigrationService) {
  EXPECT_EQ(RolesAllowedFor(Migration("ListDevices")) & kAgent, 0u);
  EXPECT_EQ(RolesAllowedFor(Migration("StartMigration")) & kAgent, 0u);
}

TEST(RolesAllowedFor, HealthIsOpenToAnyRole) {
  EXPECT_EQ(RolesAllowedFor("/grpc.health.v1.Health/Check"), kAnyRole);
  EXPECT_EQ(RolesAllowedFor("/grpc.health.v1.Health/Watch"), kAnyRole);
}

TEST(RolesAllowedFor, UnknownServiceOrMethodIsRefusedToEveryone) {
  EXPECT_EQ(RolesAllowedFor("/migd.v1.Secret/Anything"), 0u);
  EXPECT_EQ(RolesAllowedFor("/grpc.reflection.v1alpha.ServerReflection/"
                            "ServerReflectionInfo"),
            0u);
  EXPECT_EQ(RolesAllowedFor(""), 0u);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.TransferService/"), 0u);
  // Protocol 1's data stream method: the data channel carries them now.
  EXPECT_EQ(RolesAllowedFor("/migd.v1.TransferService/TransferData"), 0u);
  EXPECT_EQ(RolesAllowedFor("/grpc.health.v1.Health/"), 0u);
}

TEST(RolesAllowedFor, UnlistedMethodOfAKnownServiceIsRefusedToEveryone) {
  EXPECT_EQ(RolesAllowedFor(Migration("DeleteEverything")), 0u);
  EXPECT_EQ(RolesAllowedFor(Migration("StartMigrationX")), 0u);
  EXPECT_EQ(RolesAllowedFor("/migd.v1.TransferService/Steal"), 0u);
  EXPECT_EQ(RolesAllowedFor("/grpc.health.v1.Health/Shutdown"), 0u);
}

TEST(RolesAllowedFor, EmptyMigrationServiceMethodIsRefused) {
  EXPECT_EQ(RolesAllowedFor("/migd.v1.MigrationService/"), 0u);
}

}  // namespace
}  // namespace migd::security
