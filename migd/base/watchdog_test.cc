#include "migd/base/watchdog.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace migd::base {
namespace {

TEST(Watchdog, FiresWhenNotKicked) {
  absl::Notification fired;
  Watchdog w(absl::Milliseconds(20), [&] { fired.Notify(); });
  EXPECT_TRUE(fired.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(w.expired());
}

TEST(Watchdog, KicksKeepItQuiet) {
  std::atomic<int> fired{0};
  {
    Watchdog w(absl::Seconds(5), [&] { ++fired; });
    for (int i = 0; i < 5; ++i) w.Kick();
  }  // destroyed long before the timeout
  EXPECT_EQ(fired.load(), 0);
}

TEST(Watchdog, InfiniteTimeoutNeverFiresAndStopsPromptly) {
  std::atomic<int> fired{0};
  {
    Watchdog w(absl::InfiniteDuration(), [&] { ++fired; });
  }
  EXPECT_EQ(fired.load(), 0);
}

}  // namespace
}  // namespace migd::base
