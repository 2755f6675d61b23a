#include "migd/base/watchdog.h"

#include <utility>

#include "absl/time/clock.h"
#include "migd/base/thread_name.h"

namespace migd::base {

Watchdog::Watchdog(absl::Duration timeout, std::function<void()> on_expire)
    : timeout_(timeout),
      on_expire_(std::move(on_expire)),
      last_kick_(absl::Now()) {
  thread_ = std::thread([this] {
    NameThisThread("watchdog");
    Loop();
  });
}

Watchdog::~Watchdog() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void Watchdog::Kick() {
  absl::MutexLock lock(&mu_);
  last_kick_ = absl::Now();
}

bool Watchdog::expired() const {
  absl::MutexLock lock(&mu_);
  return expired_;
}

void Watchdog::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    absl::Time due = timeout_ == absl::InfiniteDuration()
                         ? absl::InfiniteFuture()
                         : last_kick_ + timeout_;
    if (absl::Now() >= due) {
      expired_ = true;
      // Run the callback with the lock held: the destructor cannot return
      // (and the callback's captures cannot die) while it runs.
      on_expire_();
      return;
    }
    // Wake at the due time, or early when stopping.
    mu_.AwaitWithDeadline(absl::Condition(&stopping_), due);
  }
}

}  // namespace migd::base
