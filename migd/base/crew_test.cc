#include "migd/base/crew.h"

#include <atomic>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "migd/base/thread_name.h"

namespace migd::base {
namespace {

TEST(Crew, RunsEveryIndexOnItsOwnNamedThreadAndJoins) {
  Crew crew(3, "crew-test");
  ASSERT_EQ(crew.size(), 3u);
  absl::Mutex mu;
  std::vector<int> calls(3, 0);
  std::set<std::thread::id> ids;
  std::vector<std::string> names;
  crew.Run([&](size_t k) {
    // Every call is under way before any returns: they run at once.
    absl::SleepFor(absl::Milliseconds(20));
    absl::MutexLock lock(&mu);
    ++calls[k];
    ids.insert(std::this_thread::get_id());
    names.push_back(ThisThreadName());
  });
  // Run returned: every call is done.
  EXPECT_EQ(calls, (std::vector<int>{1, 1, 1}));
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids.count(std::this_thread::get_id()), 0u);
  for (const std::string& n : names) EXPECT_EQ(n, "crew-test");
}

TEST(Crew, RunsAgainOnTheSameThreads) {
  Crew crew(2, "crew-test");
  absl::Mutex mu;
  std::vector<std::set<std::thread::id>> by_index(2);
  for (int round = 0; round < 50; ++round) {
    crew.Run([&](size_t k) {
      absl::MutexLock lock(&mu);
      by_index[k].insert(std::this_thread::get_id());
    });
  }
  EXPECT_EQ(by_index[0].size(), 1u);
  EXPECT_EQ(by_index[1].size(), 1u);
  EXPECT_NE(*by_index[0].begin(), *by_index[1].begin());
}

TEST(Crew, CallsThatWaitForEachOtherAllRun) {
  // A call that waits for another call of the same Run is not deadlocked:
  // all of them run at once, not one after the other.
  Crew crew(4, "crew-test");
  std::atomic<int> arrived{0};
  crew.Run([&](size_t) {
    ++arrived;
    while (arrived.load() < 4) absl::SleepFor(absl::Microseconds(100));
  });
  EXPECT_EQ(arrived.load(), 4);
}

TEST(Crew, AtLeastOneThread) {
  Crew crew(0, "crew-test");
  EXPECT_EQ(crew.size(), 1u);
  int calls = 0;
  crew.Run([&](size_t k) {
    EXPECT_EQ(k, 0u);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace migd::base
