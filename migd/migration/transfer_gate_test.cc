#include "migd/migration/transfer_gate.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace migd::migration {
namespace {

TEST(TransferGate, TakesFreeSlotsAtOnceAndNoMore) {
  TransferGate gate(2);
  std::optional<TransferGate::Slot> a = gate.TryTake();
  std::optional<TransferGate::Slot> b = gate.TryTake();
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_FALSE(gate.TryTake().has_value());
  EXPECT_EQ(gate.held(), 2u);
  a->Reset();
  EXPECT_EQ(gate.held(), 1u);
  EXPECT_TRUE(gate.TryTake().has_value());  // taken, and given back at once
  EXPECT_EQ(gate.held(), 1u);
}

TEST(TransferGate, NoLimitNeverWaits) {
  TransferGate gate(0);
  std::vector<TransferGate::Slot> slots;
  for (int i = 0; i < 100; ++i) {
    std::optional<TransferGate::Slot> s = gate.TryTake();
    ASSERT_TRUE(s.has_value());
    slots.push_back(*std::move(s));
  }
  std::unique_ptr<TransferGate::Turn> turn = gate.Join();
  std::vector<size_t> seen;
  absl::StatusOr<TransferGate::Slot> slot =
      turn->Wait([&](size_t ahead) { seen.push_back(ahead); });
  ASSERT_TRUE(slot.ok());
  EXPECT_TRUE(seen.empty());  // it never waited
  EXPECT_EQ(gate.held(), 101u);
}

// Turns take the slots given back in the order they joined, and each hears
// how many are ahead of it as that changes.
TEST(TransferGate, TurnsTakeSlotsInTheOrderTheyJoined) {
  TransferGate gate(1);
  std::optional<TransferGate::Slot> first = gate.TryTake();
  ASSERT_TRUE(first.has_value());
  constexpr int kTurns = 4;
  std::vector<std::unique_ptr<TransferGate::Turn>> turns;
  for (int i = 0; i < kTurns; ++i) turns.push_back(gate.Join());
  EXPECT_EQ(gate.waiting(), 4u);

  absl::Mutex mu;
  std::vector<int> order;
  std::vector<std::vector<size_t>> ahead(kTurns);
  std::vector<std::thread> threads;
  for (int i = 0; i < kTurns; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<TransferGate::Slot> slot = turns[i]->Wait([&](size_t n) {
        absl::MutexLock lock(&mu);
        ahead[i].push_back(n);
      });
      ASSERT_TRUE(slot.ok()) << slot.status();
      {
        absl::MutexLock lock(&mu);
        order.push_back(i);
      }
      absl::SleepFor(absl::Milliseconds(5));
      // The slot goes back as `slot` goes out of scope.
    });
  }
  // Every turn is waiting before the first slot comes back.
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](std::vector<std::vector<size_t>>* a) {
          for (const auto& v : *a)
            if (v.empty()) return false;
          return true;
        },
        &ahead));
  }
  first->Reset();
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
  for (int i = 0; i < kTurns; ++i) {
    // i ahead at first, then fewer, down to none.
    ASSERT_FALSE(ahead[i].empty());
    EXPECT_EQ(ahead[i].front(), static_cast<size_t>(i)) << "turn " << i;
    EXPECT_EQ(ahead[i].back(), 0u) << "turn " << i;
  }
  EXPECT_EQ(gate.held(), 0u);
  EXPECT_EQ(gate.waiting(), 0u);
}

TEST(TransferGate, NewcomerDoesNotPassTheLine) {
  TransferGate gate(1);
  std::optional<TransferGate::Slot> first = gate.TryTake();
  std::unique_ptr<TransferGate::Turn> waiting = gate.Join();
  first->Reset();
  // The slot given back is the waiting turn's, taken or not.
  EXPECT_FALSE(gate.TryTake().has_value());
  absl::StatusOr<TransferGate::Slot> slot = waiting->Wait([](size_t) {});
  ASSERT_TRUE(slot.ok());
  EXPECT_EQ(gate.held(), 1u);
}

TEST(TransferGate, LeaveWakesTheWaitWithItsCause) {
  TransferGate gate(1);
  std::optional<TransferGate::Slot> first = gate.TryTake();
  std::unique_ptr<TransferGate::Turn> turn = gate.Join();
  absl::Notification waiting;
  absl::Status got;
  std::thread t([&] {
    absl::StatusOr<TransferGate::Slot> slot = turn->Wait([&](size_t) {
      if (!waiting.HasBeenNotified()) waiting.Notify();
    });
    got = slot.status();
  });
  waiting.WaitForNotification();
  turn->Leave(absl::CancelledError("cancelled by request"));
  t.join();
  EXPECT_EQ(got, absl::CancelledError("cancelled by request"));
  EXPECT_EQ(gate.waiting(), 0u);
  EXPECT_EQ(gate.held(), 1u);
  turn->Leave(absl::AbortedError("again"));  // a no-op
}

TEST(TransferGate, LeaveBeforeWaitIsWhatWaitReturns) {
  TransferGate gate(1);
  std::optional<TransferGate::Slot> first = gate.TryTake();
  std::unique_ptr<TransferGate::Turn> turn = gate.Join();
  turn->Leave(absl::UnavailableError("shutting down"));
  EXPECT_EQ(turn->Wait([](size_t) {}).status(),
            absl::UnavailableError("shutting down"));
}

// A turn that leaves, or goes, after it was given a slot and before it took
// it gives the slot to the next in line: no slot is lost.
TEST(TransferGate, ASlotGivenToATurnThatLeavesGoesToTheNext) {
  TransferGate gate(1);
  std::optional<TransferGate::Slot> first = gate.TryTake();
  std::unique_ptr<TransferGate::Turn> a = gate.Join();
  std::unique_ptr<TransferGate::Turn> b = gate.Join();
  std::unique_ptr<TransferGate::Turn> c = gate.Join();
  first->Reset();  // a's now, not taken yet
  a->Leave(absl::CancelledError("cancelled"));
  EXPECT_FALSE(a->Wait([](size_t) {}).ok());
  b.reset();  // b's now, and b is gone
  std::vector<size_t> seen;
  absl::StatusOr<TransferGate::Slot> slot =
      c->Wait([&](size_t n) { seen.push_back(n); });
  ASSERT_TRUE(slot.ok());
  EXPECT_TRUE(seen.empty());  // its slot was there when it asked
  EXPECT_EQ(gate.held(), 1u);
  slot->Reset();
  EXPECT_EQ(gate.held(), 0u);
}

TEST(TransferGate, SlotsAndTurnsOutliveTheGate) {
  std::optional<TransferGate::Slot> slot;
  std::unique_ptr<TransferGate::Turn> turn;
  {
    TransferGate gate(1);
    slot = gate.TryTake();
    turn = gate.Join();
  }
  slot->Reset();
  EXPECT_TRUE(turn->Wait([](size_t) {}).ok());
}

}  // namespace
}  // namespace migd::migration
