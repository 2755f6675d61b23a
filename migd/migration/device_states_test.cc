#include "migd/migration/device_states.h"

#include <string>

#include "gtest/gtest.h"

namespace migd::migration {
namespace {

using vfio::MigState;

struct Row {
  MigState state;
  FoundStateAction source;
  FoundStateAction destination;
};

// The table of device_states.h, every state of the uAPI.
constexpr Row kTable[] = {
    {MigState::kRunning, FoundStateAction::kUse, FoundStateAction::kArc},
    {MigState::kStop, FoundStateAction::kRefuse, FoundStateAction::kArc},
    {MigState::kRunningP2P, FoundStateAction::kRefuse,
     FoundStateAction::kReset},
    {MigState::kPreCopy, FoundStateAction::kRefuse, FoundStateAction::kReset},
    {MigState::kPreCopyP2P, FoundStateAction::kRefuse,
     FoundStateAction::kReset},
    {MigState::kStopCopy, FoundStateAction::kRefuse, FoundStateAction::kReset},
    {MigState::kResuming, FoundStateAction::kRefuse, FoundStateAction::kReset},
    {MigState::kError, FoundStateAction::kRefuse, FoundStateAction::kReset},
};

TEST(RuleForFoundState, EveryStateHasOneRulePerRole) {
  static_assert(sizeof(kTable) / sizeof(kTable[0]) == vfio::kNumMigStates);
  for (const Row& row : kTable) {
    SCOPED_TRACE(vfio::MigStateName(row.state));
    FoundStateRule source = RuleForFoundState(DeviceRole::kSource, row.state);
    FoundStateRule destination =
        RuleForFoundState(DeviceRole::kDestination, row.state);
    EXPECT_EQ(source.action, row.source);
    EXPECT_EQ(destination.action, row.destination);
    EXPECT_FALSE(source.why.empty());
    EXPECT_FALSE(destination.why.empty());
  }
}

TEST(RuleForFoundState, LeftOversAreTheStatesADestinationResets) {
  for (const Row& row : kTable) {
    SCOPED_TRACE(vfio::MigStateName(row.state));
    EXPECT_EQ(IsLeftOverState(row.state),
              row.destination == FoundStateAction::kReset);
  }
}

TEST(RuleForFoundState, ASourceFoundInStopIsRefusedAsIdleWithWhatToDo) {
  FoundStateRule r = RuleForFoundState(DeviceRole::kSource, MigState::kStop);
  EXPECT_EQ(r.action, FoundStateAction::kRefuse);
  EXPECT_NE(r.why.find("idle"), std::string::npos) << r.why;
  EXPECT_NE(r.why.find("resumes it (RUNNING)"), std::string::npos) << r.why;
}

TEST(RuleForFoundState, ASourceLeftOverIsRefusedNotResetAndSaysWhoActs) {
  FoundStateRule r = RuleForFoundState(DeviceRole::kSource, MigState::kPreCopy);
  EXPECT_EQ(r.action, FoundStateAction::kRefuse);
  EXPECT_NE(r.why.find("left over"), std::string::npos) << r.why;
  EXPECT_NE(r.why.find("owner resumes it (RUNNING) or resets it"),
            std::string::npos)
      << r.why;
}

TEST(RuleForFoundState, ADestinationResumingIsResetNeverArced) {
  FoundStateRule r =
      RuleForFoundState(DeviceRole::kDestination, MigState::kResuming);
  EXPECT_EQ(r.action, FoundStateAction::kReset);
  EXPECT_NE(r.why.find("never sent through an arc"), std::string::npos)
      << r.why;
}

TEST(RuleForFoundState, AnUndefinedStateIsRefusedOnBothSides) {
  const auto undefined = static_cast<MigState>(42);
  EXPECT_EQ(RuleForFoundState(DeviceRole::kSource, undefined).action,
            FoundStateAction::kRefuse);
  EXPECT_EQ(RuleForFoundState(DeviceRole::kDestination, undefined).action,
            FoundStateAction::kRefuse);
  EXPECT_FALSE(IsLeftOverState(undefined));
}

TEST(FoundStateNote, SaysWhatEachRoleDoes) {
  EXPECT_NE(FoundStateNote(MigState::kStop).find("idle"), std::string::npos);
  EXPECT_NE(FoundStateNote(MigState::kResuming).find("resets it"),
            std::string::npos);
  EXPECT_NE(FoundStateNote(MigState::kRunning).find("a source migrates it"),
            std::string::npos);
}

}  // namespace
}  // namespace migd::migration
