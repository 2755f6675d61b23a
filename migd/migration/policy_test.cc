#include "migd/migration/policy.h"

#include "gtest/gtest.h"

namespace migd::migration {
namespace {

IterationStats Stats(uint32_t iteration, uint64_t remaining, double bandwidth,
                     bool acked = true,
                     absl::Duration elapsed = absl::Seconds(1)) {
  IterationStats s;
  s.iteration = iteration;
  s.remaining_bytes = remaining;
  s.bandwidth = bandwidth;
  s.all_acked = acked;
  s.elapsed = elapsed;
  return s;
}

TEST(Decide, SwitchesOverWhenRemainingOverBandwidthFitsTheLimit) {
  ConvergencePolicy p;
  p.downtime_limit = absl::Milliseconds(100);
  std::string why;
  // 10 MB at 200 MB/s = 50 ms.
  EXPECT_EQ(Decide(p, Stats(3, 10'000'000, 200e6), &why), Verdict::kSwitchOver);
  EXPECT_NE(why.find("converged at iteration 3"), std::string::npos) << why;
  // 30 MB at 200 MB/s = 150 ms.
  EXPECT_EQ(Decide(p, Stats(3, 30'000'000, 200e6), &why), Verdict::kContinue);
}

TEST(Decide, NeverSwitchesOverBeforeEveryAck) {
  ConvergencePolicy p;
  std::string why;
  EXPECT_EQ(Decide(p, Stats(1, 0, 1e9, /*acked=*/false), &why),
            Verdict::kContinue);
  p.max_iterations = 1;
  EXPECT_EQ(Decide(p, Stats(5, 0, 1e9, /*acked=*/false), &why),
            Verdict::kContinue);
}

TEST(Decide, IterationCapSwitchesOverOrFailsByPolicy) {
  ConvergencePolicy p;
  p.max_iterations = 4;
  p.downtime_limit = absl::Milliseconds(1);
  std::string why;
  EXPECT_EQ(Decide(p, Stats(3, 1 << 30, 1e8), &why), Verdict::kContinue);
  EXPECT_EQ(Decide(p, Stats(4, 1 << 30, 1e8), &why),
            Verdict::kSwitchOverForced);
  EXPECT_NE(why.find("did not converge within 4 iterations"), std::string::npos)
      << why;
  p.fail_if_not_converged = true;
  EXPECT_EQ(Decide(p, Stats(4, 1 << 30, 1e8), &why), Verdict::kFail);
}

TEST(Decide, TimeCapCounts) {
  ConvergencePolicy p;
  p.max_precopy_time = absl::Seconds(10);
  p.downtime_limit = absl::Milliseconds(1);
  p.fail_if_not_converged = true;
  std::string why;
  EXPECT_EQ(Decide(p, Stats(2, 1 << 30, 1e8, true, absl::Seconds(11)), &why),
            Verdict::kFail);
  EXPECT_NE(why.find("of pre-copy"), std::string::npos) << why;
}

TEST(Decide, NothingLeftToPrecopyEndsPrecopyByPolicy) {
  ConvergencePolicy p;
  p.downtime_limit = absl::Milliseconds(1);
  IterationStats s = Stats(2, 1 << 30, 1e8);
  std::string why;
  EXPECT_EQ(Decide(p, s, &why), Verdict::kContinue);
  s.idle = true;
  EXPECT_EQ(Decide(p, s, &why), Verdict::kSwitchOverForced);
  EXPECT_NE(why.find("the state pre-copy can move"), std::string::npos) << why;
}

TEST(ExpectedDowntime, UnknownBandwidthIsInfiniteUnlessNothingRemains) {
  EXPECT_EQ(ExpectedDowntime(Stats(1, 100, 0)), absl::InfiniteDuration());
  EXPECT_EQ(ExpectedDowntime(Stats(1, 0, 0)), absl::ZeroDuration());
  EXPECT_EQ(ExpectedDowntime(Stats(1, 1000, 1000)), absl::Seconds(1));
}

}  // namespace
}  // namespace migd::migration
