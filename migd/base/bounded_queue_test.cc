#include "migd/base/bounded_queue.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace migd::base {
namespace {

TEST(BoundedQueue, KeepsOrder) {
  BoundedQueue<int> q(3);
  ASSERT_TRUE(q.Push(1));
  ASSERT_TRUE(q.Push(2));
  ASSERT_TRUE(q.Push(3));
  EXPECT_EQ(q.Pop(), 1);
  EXPECT_EQ(q.Pop(), 2);
  EXPECT_EQ(q.Pop(), 3);
}

TEST(BoundedQueue, PushWaitsWhileFullUntilAPop) {
  BoundedQueue<int> q(1);
  ASSERT_TRUE(q.Push(1));
  absl::Notification pushed;
  std::thread producer([&] {
    EXPECT_TRUE(q.Push(2));
    pushed.Notify();
  });
  // Still full: the producer waits.
  EXPECT_FALSE(pushed.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.Pop(), 1);
  pushed.WaitForNotification();
  EXPECT_EQ(q.Pop(), 2);
  producer.join();
}

TEST(BoundedQueue, CloseDrainsThenEnds) {
  BoundedQueue<int> q(4);
  ASSERT_TRUE(q.Push(7));
  ASSERT_TRUE(q.Push(8));
  q.Close();
  EXPECT_FALSE(q.Push(9));
  EXPECT_EQ(q.Pop(), 7);
  EXPECT_EQ(q.Pop(), 8);
  EXPECT_EQ(q.Pop(), std::nullopt);
}

TEST(BoundedQueue, CloseWakesAWaitingConsumer) {
  BoundedQueue<int> q(1);
  std::optional<int> got = 5;
  std::thread consumer([&] { got = q.Pop(); });
  q.Close();
  consumer.join();
  EXPECT_EQ(got, std::nullopt);
}

TEST(BoundedQueue, CancelDropsQueuedItemsAndWakesAProducer) {
  BoundedQueue<std::shared_ptr<int>> q(1);
  auto first = std::make_shared<int>(1);
  ASSERT_TRUE(q.Push(first));
  bool second_pushed = true;
  std::thread producer(
      [&] { second_pushed = q.Push(std::make_shared<int>(2)); });
  q.Cancel();
  producer.join();
  EXPECT_FALSE(second_pushed);
  EXPECT_EQ(first.use_count(), 1);  // the queue let go of it
  EXPECT_EQ(q.Pop(), std::nullopt);
}

}  // namespace
}  // namespace migd::base
