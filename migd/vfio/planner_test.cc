#include "migd/vfio/planner.h"

#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migd/vfio/uapi.h"

namespace migd::vfio {

// Readable failure messages (found by ADL, so not in the unnamed namespace).
void PrintTo(MigState s, std::ostream* os) { *os << MigStateName(s); }

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr MigState kE = MigState::kError;
constexpr MigState kS = MigState::kStop;
constexpr MigState kR = MigState::kRunning;
constexpr MigState kSC = MigState::kStopCopy;
constexpr MigState kRS = MigState::kResuming;
constexpr MigState kRP = MigState::kRunningP2P;
constexpr MigState kPC = MigState::kPreCopy;
constexpr MigState kPCP = MigState::kPreCopyP2P;

constexpr MigState kAllStates[] = {kE, kS, kR, kSC, kRS, kRP, kPC, kPCP};

constexpr MigFlags kBasic = kMigStopCopy;
constexpr MigFlags kWithP2P = kMigStopCopy | kMigP2P;
constexpr MigFlags kWithPreCopy = kMigStopCopy | kMigPreCopy;
constexpr MigFlags kWithAll = kMigStopCopy | kMigP2P | kMigPreCopy;

// One (from, to) request and what the kernel does with it: the states it
// passes through (excluding `from`), or a refusal.
struct Case {
  MigState from;
  MigState to;
  bool refused;
  std::vector<MigState> path;
};

Case Path(MigState from, MigState to, std::vector<MigState> path) {
  return {from, to, false, std::move(path)};
}
Case Refused(MigState from, MigState to) { return {from, to, true, {}}; }

std::string PathName(const std::vector<MigState>& path) {
  return "[" +
         absl::StrJoin(path, ", ",
                       [](std::string* out, MigState s) {
                         out->append(MigStateName(s));
                       }) +
         "]";
}

// Expected results, worked out by hand from vfio_from_fsm_table and
// state_flags_table in drivers/vfio/vfio_main.c. Each lists all 64 pairs.

std::vector<Case> StopCopyOnlyCases() {
  return {
      // from ERROR
      Refused(kE, kE),
      Refused(kE, kS),
      Refused(kE, kR),
      Refused(kE, kSC),
      Refused(kE, kRS),
      Refused(kE, kRP),
      Refused(kE, kPC),
      Refused(kE, kPCP),
      // from STOP
      Refused(kS, kE),
      Path(kS, kS, {}),
      Path(kS, kR, {kR}),
      Path(kS, kSC, {kSC}),
      Path(kS, kRS, {kRS}),
      Refused(kS, kRP),
      Refused(kS, kPC),
      Refused(kS, kPCP),
      // from RUNNING
      Refused(kR, kE),
      Path(kR, kS, {kS}),
      Path(kR, kR, {}),
      Path(kR, kSC, {kS, kSC}),
      Path(kR, kRS, {kS, kRS}),
      Refused(kR, kRP),
      Refused(kR, kPC),
      Refused(kR, kPCP),
      // from STOP_COPY
      Refused(kSC, kE),
      Path(kSC, kS, {kS}),
      Path(kSC, kR, {kS, kR}),
      Path(kSC, kSC, {}),
      Path(kSC, kRS, {kS, kRS}),
      Refused(kSC, kRP),
      Refused(kSC, kPC),
      Refused(kSC, kPCP),
      // from RESUMING
      Refused(kRS, kE),
      Path(kRS, kS, {kS}),
      Path(kRS, kR, {kS, kR}),
      Path(kRS, kSC, {kS, kSC}),
      Path(kRS, kRS, {}),
      Refused(kRS, kRP),
      Refused(kRS, kPC),
      Refused(kRS, kPCP),
      // from RUNNING_P2P (not advertised)
      Refused(kRP, kE),
      Refused(kRP, kS),
      Refused(kRP, kR),
      Refused(kRP, kSC),
      Refused(kRP, kRS),
      Refused(kRP, kRP),
      Refused(kRP, kPC),
      Refused(kRP, kPCP),
      // from PRE_COPY (not advertised)
      Refused(kPC, kE),
      Refused(kPC, kS),
      Refused(kPC, kR),
      Refused(kPC, kSC),
      Refused(kPC, kRS),
      Refused(kPC, kRP),
      Refused(kPC, kPC),
      Refused(kPC, kPCP),
      // from PRE_COPY_P2P (not advertised)
      Refused(kPCP, kE),
      Refused(kPCP, kS),
      Refused(kPCP, kR),
      Refused(kPCP, kSC),
      Refused(kPCP, kRS),
      Refused(kPCP, kRP),
      Refused(kPCP, kPC),
      Refused(kPCP, kPCP),
  };
}

std::vector<Case> P2PCases() {
  return {
      // from ERROR
      Refused(kE, kE),
      Refused(kE, kS),
      Refused(kE, kR),
      Refused(kE, kSC),
      Refused(kE, kRS),
      Refused(kE, kRP),
      Refused(kE, kPC),
      Refused(kE, kPCP),
      // from STOP
      Refused(kS, kE),
      Path(kS, kS, {}),
      Path(kS, kR, {kRP, kR}),
      Path(kS, kSC, {kSC}),
      Path(kS, kRS, {kRS}),
      Path(kS, kRP, {kRP}),
      Refused(kS, kPC),
      Refused(kS, kPCP),
      // from RUNNING
      Refused(kR, kE),
      Path(kR, kS, {kRP, kS}),
      Path(kR, kR, {}),
      Path(kR, kSC, {kRP, kS, kSC}),
      Path(kR, kRS, {kRP, kS, kRS}),
      Path(kR, kRP, {kRP}),
      Refused(kR, kPC),
      Refused(kR, kPCP),
      // from STOP_COPY
      Refused(kSC, kE),
      Path(kSC, kS, {kS}),
      Path(kSC, kR, {kS, kRP, kR}),
      Path(kSC, kSC, {}),
      Path(kSC, kRS, {kS, kRS}),
      Path(kSC, kRP, {kS, kRP}),
      Refused(kSC, kPC),
      Refused(kSC, kPCP),
      // from RESUMING
      Refused(kRS, kE),
      Path(kRS, kS, {kS}),
      Path(kRS, kR, {kS, kRP, kR}),
      Path(kRS, kSC, {kS, kSC}),
      Path(kRS, kRS, {}),
      Path(kRS, kRP, {kS, kRP}),
      Refused(kRS, kPC),
      Refused(kRS, kPCP),
      // from RUNNING_P2P
      Refused(kRP, kE),
      Path(kRP, kS, {kS}),
      Path(kRP, kR, {kR}),
      Path(kRP, kSC, {kS, kSC}),
      Path(kRP, kRS, {kS, kRS}),
      Path(kRP, kRP, {}),
      Refused(kRP, kPC),
      Refused(kRP, kPCP),
      // from PRE_COPY (not advertised)
      Refused(kPC, kE),
      Refused(kPC, kS),
      Refused(kPC, kR),
      Refused(kPC, kSC),
      Refused(kPC, kRS),
      Refused(kPC, kRP),
      Refused(kPC, kPC),
      Refused(kPC, kPCP),
      // from PRE_COPY_P2P (not advertised)
      Refused(kPCP, kE),
      Refused(kPCP, kS),
      Refused(kPCP, kR),
      Refused(kPCP, kSC),
      Refused(kPCP, kRS),
      Refused(kPCP, kRP),
      Refused(kPCP, kPC),
      Refused(kPCP, kPCP),
  };
}

std::vector<Case> PreCopyCases() {
  return {
      // from ERROR
      Refused(kE, kE),
      Refused(kE, kS),
      Refused(kE, kR),
      Refused(kE, kSC),
      Refused(kE, kRS),
      Refused(kE, kRP),
      Refused(kE, kPC),
      Refused(kE, kPCP),
      // from STOP
      Refused(kS, kE),
      Path(kS, kS, {}),
      Path(kS, kR, {kR}),
      Path(kS, kSC, {kSC}),
      Path(kS, kRS, {kRS}),
      Refused(kS, kRP),
      Path(kS, kPC, {kR, kPC}),
      Refused(kS, kPCP),
      // from RUNNING
      Refused(kR, kE),
      Path(kR, kS, {kS}),
      Path(kR, kR, {}),
      Path(kR, kSC, {kS, kSC}),
      Path(kR, kRS, {kS, kRS}),
      Refused(kR, kRP),
      Path(kR, kPC, {kPC}),
      Refused(kR, kPCP),
      // from STOP_COPY
      Refused(kSC, kE),
      Path(kSC, kS, {kS}),
      Path(kSC, kR, {kS, kR}),
      Path(kSC, kSC, {}),
      Path(kSC, kRS, {kS, kRS}),
      Refused(kSC, kRP),
      Refused(kSC, kPC),
      Refused(kSC, kPCP),
      // from RESUMING
      Refused(kRS, kE),
      Path(kRS, kS, {kS}),
      Path(kRS, kR, {kS, kR}),
      Path(kRS, kSC, {kS, kSC}),
      Path(kRS, kRS, {}),
      Refused(kRS, kRP),
      Path(kRS, kPC, {kS, kR, kPC}),
      Refused(kRS, kPCP),
      // from RUNNING_P2P (not advertised)
      Refused(kRP, kE),
      Refused(kRP, kS),
      Refused(kRP, kR),
      Refused(kRP, kSC),
      Refused(kRP, kRS),
      Refused(kRP, kRP),
      Refused(kRP, kPC),
      Refused(kRP, kPCP),
      // from PRE_COPY
      Refused(kPC, kE),
      Path(kPC, kS, {kR, kS}),
      Path(kPC, kR, {kR}),
      Path(kPC, kSC, {kSC}),
      Path(kPC, kRS, {kR, kS, kRS}),
      Refused(kPC, kRP),
      Path(kPC, kPC, {}),
      Refused(kPC, kPCP),
      // from PRE_COPY_P2P (not advertised)
      Refused(kPCP, kE),
      Refused(kPCP, kS),
      Refused(kPCP, kR),
      Refused(kPCP, kSC),
      Refused(kPCP, kRS),
      Refused(kPCP, kRP),
      Refused(kPCP, kPC),
      Refused(kPCP, kPCP),
  };
}

std::vector<Case> P2PAndPreCopyCases() {
  return {
      // from ERROR
      Refused(kE, kE),
      Refused(kE, kS),
      Refused(kE, kR),
      Refused(kE, kSC),
      Refused(kE, kRS),
      Refused(kE, kRP),
      Refused(kE, kPC),
      Refused(kE, kPCP),
      // from STOP
      Refused(kS, kE),
      Path(kS, kS, {}),
      Path(kS, kR, {kRP, kR}),
      Path(kS, kSC, {kSC}),
      Path(kS, kRS, {kRS}),
      Path(kS, kRP, {kRP}),
      Path(kS, kPC, {kRP, kR, kPC}),
      Path(kS, kPCP, {kRP, kPCP}),
      // from RUNNING
      Refused(kR, kE),
      Path(kR, kS, {kRP, kS}),
      Path(kR, kR, {}),
      Path(kR, kSC, {kRP, kS, kSC}),
      Path(kR, kRS, {kRP, kS, kRS}),
      Path(kR, kRP, {kRP}),
      Path(kR, kPC, {kPC}),
      Path(kR, kPCP, {kRP, kPCP}),
      // from STOP_COPY
      Refused(kSC, kE),
      Path(kSC, kS, {kS}),
      Path(kSC, kR, {kS, kRP, kR}),
      Path(kSC, kSC, {}),
      Path(kSC, kRS, {kS, kRS}),
      Path(kSC, kRP, {kS, kRP}),
      Refused(kSC, kPC),
      Refused(kSC, kPCP),
      // from RESUMING
      Refused(kRS, kE),
      Path(kRS, kS, {kS}),
      Path(kRS, kR, {kS, kRP, kR}),
      Path(kRS, kSC, {kS, kSC}),
      Path(kRS, kRS, {}),
      Path(kRS, kRP, {kS, kRP}),
      Path(kRS, kPC, {kS, kRP, kR, kPC}),
      Path(kRS, kPCP, {kS, kRP, kPCP}),
      // from RUNNING_P2P
      Refused(kRP, kE),
      Path(kRP, kS, {kS}),
      Path(kRP, kR, {kR}),
      Path(kRP, kSC, {kS, kSC}),
      Path(kRP, kRS, {kS, kRS}),
      Path(kRP, kRP, {}),
      Path(kRP, kPC, {kR, kPC}),
      Path(kRP, kPCP, {kPCP}),
      // from PRE_COPY
      Refused(kPC, kE),
      Path(kPC, kS, {kR, kRP, kS}),
      Path(kPC, kR, {kR}),
      Path(kPC, kSC, {kPCP, kSC}),
      Path(kPC, kRS, {kR, kRP, kS, kRS}),
      Path(kPC, kRP, {kR, kRP}),
      Path(kPC, kPC, {}),
      Path(kPC, kPCP, {kPCP}),
      // from PRE_COPY_P2P
      Refused(kPCP, kE),
      Path(kPCP, kS, {kRP, kS}),
      Path(kPCP, kR, {kRP, kR}),
      Path(kPCP, kSC, {kSC}),
      Path(kPCP, kRS, {kRP, kS, kRS}),
      Path(kPCP, kRP, {kRP}),
      Path(kPCP, kPC, {kPC}),
      Path(kPCP, kPCP, {}),
  };
}

void ExpectMatchesKernel(MigFlags flags, const std::vector<Case>& cases) {
  // The expected table itself must cover each pair exactly once.
  std::set<std::pair<MigState, MigState>> pairs;
  for (const Case& c : cases) pairs.insert({c.from, c.to});
  ASSERT_EQ(cases.size(), 64u);
  ASSERT_EQ(pairs.size(), 64u);

  for (const Case& c : cases) {
    SCOPED_TRACE(MigStateName(c.from) + " -> " + MigStateName(c.to) + " with " +
                 MigFlagsName(flags));
    absl::StatusOr<std::vector<MigState>> plan = PlanArcs(flags, c.from, c.to);
    absl::StatusOr<MigState> next = NextState(flags, c.from, c.to);
    if (c.refused) {
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition)
          << (plan.ok() ? PathName(*plan) : plan.status().ToString());
      EXPECT_EQ(next.status().code(), absl::StatusCode::kFailedPrecondition);
      continue;
    }
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(*plan, c.path)
        << "got " << PathName(*plan) << ", want " << PathName(c.path);
    ASSERT_TRUE(next.ok()) << next.status();
    EXPECT_EQ(*next, c.path.empty() ? c.to : c.path.front());
  }
}

TEST(PlanArcs, MatchesKernelForStopCopyOnlyDevice) {
  ExpectMatchesKernel(kBasic, StopCopyOnlyCases());
}

TEST(PlanArcs, MatchesKernelForP2PDevice) {
  ExpectMatchesKernel(kWithP2P, P2PCases());
}

TEST(PlanArcs, MatchesKernelForPreCopyDevice) {
  ExpectMatchesKernel(kWithPreCopy, PreCopyCases());
}

TEST(PlanArcs, MatchesKernelForP2PAndPreCopyDevice) {
  ExpectMatchesKernel(kWithAll, P2PAndPreCopyCases());
}

TEST(PlanArcs, EveryArcOfEveryPathIsASingleStepArc) {
  for (MigFlags flags : {kBasic, kWithP2P, kWithPreCopy, kWithAll}) {
    for (MigState from : kAllStates) {
      for (MigState to : kAllStates) {
        absl::StatusOr<std::vector<MigState>> plan = PlanArcs(flags, from, to);
        if (!plan.ok()) continue;
        MigState cur = from;
        for (MigState next : *plan) {
          EXPECT_TRUE(IsSingleStepArc(cur, next))
              << MigStateName(cur) << " -> " << MigStateName(next) << " in "
              << MigStateName(from) << " -> " << MigStateName(to) << " with "
              << MigFlagsName(flags);
          EXPECT_TRUE(StateSupported(flags, next));
          cur = next;
        }
      }
    }
  }
}

TEST(PlanArcs, RunningToStopCopyPassesThroughP2PWhenAdvertised) {
  EXPECT_THAT(*PlanArcs(kWithP2P, kR, kSC), ElementsAre(kRP, kS, kSC));
  EXPECT_THAT(*PlanArcs(kWithAll, kR, kSC), ElementsAre(kRP, kS, kSC));
}

TEST(PlanArcs, RunningToStopCopyGoesStraightToStopWithoutP2P) {
  EXPECT_THAT(*PlanArcs(kBasic, kR, kSC), ElementsAre(kS, kSC));
  EXPECT_THAT(*PlanArcs(kWithPreCopy, kR, kSC), ElementsAre(kS, kSC));
}

TEST(PlanArcs, PreCopyP2PToStopCopyIsOneArc) {
  EXPECT_THAT(*PlanArcs(kWithAll, kPCP, kSC), ElementsAre(kSC));
}

TEST(PlanArcs, PreCopyToStopCopyPassesThroughPreCopyP2PWhenAdvertised) {
  EXPECT_THAT(*PlanArcs(kWithAll, kPC, kSC), ElementsAre(kPCP, kSC));
  EXPECT_THAT(*PlanArcs(kWithPreCopy, kPC, kSC), ElementsAre(kSC));
}

TEST(PlanArcs, RunningToResumingWithP2PQuiescesThenStops) {
  EXPECT_THAT(*PlanArcs(kWithP2P, kR, kRS), ElementsAre(kRP, kS, kRS));
}

TEST(PlanArcs, SameStateIsAnEmptyPath) {
  for (MigState s : {kS, kR, kSC, kRS, kRP, kPC, kPCP}) {
    absl::StatusOr<std::vector<MigState>> plan = PlanArcs(kWithAll, s, s);
    ASSERT_TRUE(plan.ok()) << MigStateName(s) << ": " << plan.status();
    EXPECT_THAT(*plan, IsEmpty()) << MigStateName(s);
  }
}

TEST(PlanArcs, StopCopyBackToPreCopyIsRefusedNamingBothStates) {
  absl::StatusOr<std::vector<MigState>> plan = PlanArcs(kWithAll, kSC, kPC);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("no arc from STOP_COPY to PRE_COPY"));

  plan = PlanArcs(kWithAll, kSC, kPCP);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("no arc from STOP_COPY to PRE_COPY_P2P"));
}

TEST(PlanArcs, UnadvertisedTargetIsRefusedNamingTheMissingFlag) {
  absl::StatusOr<std::vector<MigState>> plan = PlanArcs(kWithP2P, kR, kPC);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("state PRE_COPY needs VFIO_MIGRATION_PRE_COPY; device "
                        "advertises STOP_COPY|P2P"));

  plan = PlanArcs(kBasic, kR, kRP);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("state RUNNING_P2P needs VFIO_MIGRATION_P2P; device "
                        "advertises STOP_COPY"));

  plan = PlanArcs(kBasic, kR, kPCP);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("state PRE_COPY_P2P needs "
                        "VFIO_MIGRATION_P2P|VFIO_MIGRATION_PRE_COPY"));
}

TEST(PlanArcs, UnadvertisedSourceIsRefused) {
  absl::StatusOr<std::vector<MigState>> plan = PlanArcs(kWithPreCopy, kRP, kS);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("state RUNNING_P2P needs VFIO_MIGRATION_P2P"));
}

TEST(PlanArcs, ErrorAsEitherEndIsRefused) {
  absl::StatusOr<std::vector<MigState>> plan = PlanArcs(kWithAll, kE, kR);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("no arc from ERROR to RUNNING"));
  EXPECT_THAT(plan.status().message(), HasSubstr("VFIO_DEVICE_RESET"));

  plan = PlanArcs(kWithAll, kR, kE);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("no arc from RUNNING to ERROR"));

  EXPECT_EQ(PlanArcs(kWithAll, kE, kE).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PlanArcs, FlagsWithoutStopCopyAreInvalidArgument) {
  for (MigFlags flags :
       {MigFlags{0}, kMigP2P, kMigPreCopy, kMigP2P | kMigPreCopy}) {
    for (MigState from : kAllStates) {
      for (MigState to : kAllStates) {
        EXPECT_EQ(PlanArcs(flags, from, to).status().code(),
                  absl::StatusCode::kInvalidArgument)
            << MigFlagsName(flags) << " " << MigStateName(from) << " -> "
            << MigStateName(to);
        EXPECT_EQ(NextState(flags, from, to).status().code(),
                  absl::StatusCode::kInvalidArgument);
      }
    }
  }
  EXPECT_THAT(PlanArcs(kMigP2P, kR, kS).status().message(),
              HasSubstr("device advertises P2P"));
  EXPECT_THAT(PlanArcs(kMigP2P, kR, kS).status().message(),
              HasSubstr("VFIO_MIGRATION_STOP_COPY"));
}

TEST(PlanArcs, UnknownFlagBitsDoNotChangeThePath) {
  constexpr MigFlags kFuture = MigFlags{1} << 7;
  EXPECT_THAT(*PlanArcs(kWithP2P | kFuture, kR, kSC),
              ElementsAre(kRP, kS, kSC));
  EXPECT_THAT(*PlanArcs(kBasic | kFuture, kR, kSC), ElementsAre(kS, kSC));
}

TEST(PlanArcs, OutOfRangeStateIsInvalidArgument) {
  const MigState bogus = static_cast<MigState>(8);
  EXPECT_EQ(PlanArcs(kWithAll, bogus, kS).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanArcs(kWithAll, kS, bogus).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NextState, ReturnsTargetWhenAlreadyThere) {
  EXPECT_EQ(*NextState(kWithAll, kRP, kRP), kRP);
  EXPECT_EQ(*NextState(kBasic, kS, kS), kS);
}

TEST(NextState, SkipsStatesTheDeviceDoesNotAdvertise) {
  EXPECT_EQ(*NextState(kWithAll, kS, kR), kRP);
  EXPECT_EQ(*NextState(kBasic, kS, kR), kR);
  EXPECT_EQ(*NextState(kWithPreCopy, kPC, kSC), kSC);
  EXPECT_EQ(*NextState(kWithAll, kPC, kSC), kPCP);
}

TEST(NextState, RefusesWhatPlanArcsRefuses) {
  absl::StatusOr<MigState> next = NextState(kWithAll, kSC, kPC);
  EXPECT_EQ(next.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(next.status().message(),
              HasSubstr("no arc from STOP_COPY to PRE_COPY"));
}

TEST(IsSingleStepArc, HoldsForExactlyTheKernelsArcs) {
  // The arcs named in the comment above vfio_from_fsm_table, over all
  // combinations of the optional P2P and PRE_COPY features.
  const std::set<std::pair<MigState, MigState>> kArcs = {
      {kRS, kS},   {kS, kRS},   {kS, kSC},   {kSC, kS},   {kR, kRP},
      {kRP, kR},   {kRP, kS},   {kS, kRP},   {kR, kPC},   {kPC, kR},
      {kPC, kSC},  {kPC, kPCP}, {kPCP, kPC}, {kPCP, kRP}, {kPCP, kSC},
      {kRP, kPCP}, {kR, kS},    {kS, kR},
  };
  for (MigState from : kAllStates) {
    for (MigState to : kAllStates) {
      EXPECT_EQ(IsSingleStepArc(from, to), kArcs.count({from, to}) == 1)
          << MigStateName(from) << " -> " << MigStateName(to);
    }
  }
}

TEST(IsSingleStepArc, NeverLeadsFromStopCopyBackToPreCopy) {
  EXPECT_FALSE(IsSingleStepArc(kSC, kPC));
  EXPECT_FALSE(IsSingleStepArc(kSC, kPCP));
}

}  // namespace
}  // namespace migd::vfio
