// The decisions at the end of a migration: for every combination of what the
// source knows and what the destination says, which side runs the devices.

#include "migd/migration/commit.h"

#include "gtest/gtest.h"

namespace migd::migration {
namespace {

constexpr v1::Outcome kAnswers[] = {
    v1::OUTCOME_UNSPECIFIED, v1::OUTCOME_RUNNING_HERE, v1::OUTCOME_NOT_RUN,
    v1::OUTCOME_UNKNOWN};

TEST(SourceEnd, AfterCommitADestinationRunningTheDevicesStopsThemHere) {
  EXPECT_EQ(LocalEndName(SourceEnd(true, v1::OUTCOME_RUNNING_HERE)),
            LocalEndName(LocalEnd::kRunThere));
}

TEST(SourceEnd, AfterCommitADestinationThatDidNotRunThemResumesThemHere) {
  EXPECT_EQ(LocalEndName(SourceEnd(true, v1::OUTCOME_NOT_RUN)),
            LocalEndName(LocalEnd::kRunHere));
}

TEST(SourceEnd, AfterCommitNoAnswerOrUnknownKeepsTheJobInDoubt) {
  for (v1::Outcome o : {v1::OUTCOME_UNSPECIFIED, v1::OUTCOME_UNKNOWN,
                        static_cast<v1::Outcome>(99)}) {
    EXPECT_EQ(LocalEndName(SourceEnd(true, o)),
              LocalEndName(LocalEnd::kStayInDoubt))
        << OutcomeName(o);
  }
}

TEST(SourceEnd, AfterCommitTheSourceResumesOnlyOnNotRun) {
  for (v1::Outcome o : kAnswers) {
    EXPECT_EQ(SourceEnd(true, o) == LocalEnd::kRunHere,
              o == v1::OUTCOME_NOT_RUN)
        << OutcomeName(o);
  }
}

TEST(SourceEnd, BeforeCommitTheSourceResumesWhateverTheDestinationSays) {
  for (v1::Outcome o :
       {v1::OUTCOME_UNSPECIFIED, v1::OUTCOME_NOT_RUN, v1::OUTCOME_UNKNOWN}) {
    EXPECT_EQ(LocalEndName(SourceEnd(false, o)),
              LocalEndName(LocalEnd::kRunHere))
        << OutcomeName(o);
  }
}

// A destination cannot run devices it never got COMMIT for; one that says it
// does contradicts the protocol, and resuming could run the VM twice.
TEST(SourceEnd, BeforeCommitADestinationClaimingToRunIsLeftToAPerson) {
  EXPECT_EQ(LocalEndName(SourceEnd(false, v1::OUTCOME_RUNNING_HERE)),
            LocalEndName(LocalEnd::kStayInDoubt));
}

TEST(OperatorEnd, SourceMeansTheSourceRunsOnEitherSide) {
  EXPECT_EQ(LocalEndName(OperatorEnd(v1::ROLE_SOURCE, v1::RESOLUTION_SOURCE)),
            LocalEndName(LocalEnd::kRunHere));
  EXPECT_EQ(
      LocalEndName(OperatorEnd(v1::ROLE_DESTINATION, v1::RESOLUTION_SOURCE)),
      LocalEndName(LocalEnd::kRunThere));
}

TEST(OperatorEnd, DestinationMeansTheDestinationRunsOnEitherSide) {
  EXPECT_EQ(
      LocalEndName(OperatorEnd(v1::ROLE_SOURCE, v1::RESOLUTION_DESTINATION)),
      LocalEndName(LocalEnd::kRunThere));
  EXPECT_EQ(LocalEndName(
                OperatorEnd(v1::ROLE_DESTINATION, v1::RESOLUTION_DESTINATION)),
            LocalEndName(LocalEnd::kRunHere));
}

TEST(OperatorEnd, NoDecisionOrNoRoleDecidesNothing) {
  EXPECT_EQ(
      LocalEndName(OperatorEnd(v1::ROLE_SOURCE, v1::RESOLUTION_UNSPECIFIED)),
      LocalEndName(LocalEnd::kStayInDoubt));
  EXPECT_EQ(
      LocalEndName(OperatorEnd(v1::ROLE_UNSPECIFIED, v1::RESOLUTION_SOURCE)),
      LocalEndName(LocalEnd::kStayInDoubt));
}

// Whatever the operator chooses, exactly one side runs the devices.
TEST(OperatorEnd, ExactlyOneSideRuns) {
  for (v1::Resolution r : {v1::RESOLUTION_SOURCE, v1::RESOLUTION_DESTINATION}) {
    EXPECT_NE(OperatorEnd(v1::ROLE_SOURCE, r) == LocalEnd::kRunHere,
              OperatorEnd(v1::ROLE_DESTINATION, r) == LocalEnd::kRunHere);
  }
}

TEST(AnswerFor, AResumedOrResumingDestinationRunsTheDevices) {
  for (v1::Phase p : {v1::PHASE_SUCCEEDED, v1::PHASE_RESUMING}) {
    DestinationAnswer a = AnswerFor(p);
    EXPECT_EQ(OutcomeName(a.outcome), "RUNNING_HERE") << v1::Phase_Name(p);
    EXPECT_FALSE(a.abort_first);
  }
}

TEST(AnswerFor, AnEndedJobThatFailedNeverRan) {
  for (v1::Phase p : {v1::PHASE_FAILED, v1::PHASE_CANCELLED}) {
    DestinationAnswer a = AnswerFor(p);
    EXPECT_EQ(OutcomeName(a.outcome), "NOT_RUN") << v1::Phase_Name(p);
    EXPECT_FALSE(a.abort_first);
  }
}

TEST(AnswerFor, AJobInDoubtCannotTell) {
  DestinationAnswer a = AnswerFor(v1::PHASE_IN_DOUBT);
  EXPECT_EQ(OutcomeName(a.outcome), "UNKNOWN");
  EXPECT_FALSE(a.abort_first);
}

// NOT_RUN about a job that could still resume would be a promise it cannot
// keep: it is aborted first.
TEST(AnswerFor, AJobThatHasNotResumedIsAbortedBeforeNotRun) {
  for (v1::Phase p : {v1::PHASE_PREPARED, v1::PHASE_STOP_COPY,
                      v1::PHASE_PRE_COPY, v1::PHASE_LOADING,
                      v1::PHASE_ROLLING_BACK, v1::PHASE_UNSPECIFIED}) {
    DestinationAnswer a = AnswerFor(p);
    EXPECT_EQ(OutcomeName(a.outcome), "NOT_RUN") << v1::Phase_Name(p);
    EXPECT_TRUE(a.abort_first) << v1::Phase_Name(p);
  }
}

// The source and the destination's answer together never run the devices on
// both sides: whenever the destination says it runs them, the source does
// not resume.
TEST(Commit, NoAnswerEverRunsTheDevicesOnBothSides) {
  for (int phase = v1::Phase_MIN; phase <= v1::Phase_MAX; ++phase) {
    DestinationAnswer a = AnswerFor(static_cast<v1::Phase>(phase));
    for (bool committed : {false, true}) {
      if (a.outcome == v1::OUTCOME_RUNNING_HERE) {
        EXPECT_NE(LocalEndName(SourceEnd(committed, a.outcome)),
                  LocalEndName(LocalEnd::kRunHere))
            << v1::Phase_Name(static_cast<v1::Phase>(phase));
      }
    }
  }
}

TEST(OutcomeName, WithoutItsPrefix) {
  EXPECT_EQ(OutcomeName(v1::OUTCOME_NOT_RUN), "NOT_RUN");
  EXPECT_EQ(OutcomeName(static_cast<v1::Outcome>(42)), "42");
}

}  // namespace
}  // namespace migd::migration
