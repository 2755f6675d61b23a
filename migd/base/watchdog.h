// migd/base/watchdog.h
//
// Fires a callback when no progress was reported for a while. Every phase of a
// migration runs under one, so a peer that stops talking (or a device that
// stops producing data) fails the job instead of hanging it: the callback
// typically cancels the gRPC call the job is blocked in.

#ifndef MIGD_BASE_WATCHDOG_H_
#define MIGD_BASE_WATCHDOG_H_

#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace migd::base {

class Watchdog {
 public:
  // Starts watching: `on_expire` runs once, on the watchdog's thread, if Kick()
  // is not called for `timeout`. An infinite timeout never fires.
  Watchdog(absl::Duration timeout, std::function<void()> on_expire);

  // Stops the watchdog; on_expire will not run after this returns.
  ~Watchdog();

  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Reports progress: the timeout starts again.
  void Kick();

  // True once on_expire ran.
  bool expired() const;

 private:
  void Loop();

  const absl::Duration timeout_;
  std::function<void()> on_expire_;
  mutable absl::Mutex mu_;
  absl::Time last_kick_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool expired_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace migd::base

#endif  // MIGD_BASE_WATCHDOG_H_
