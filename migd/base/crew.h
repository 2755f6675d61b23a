// migd/base/crew.h
//
// A fixed set of threads that run one task together, each with its own
// index, and are done when every one of them is (fork and join), as many
// times as asked. A job of several data streams sends each stream's chunks
// on a thread of that stream's own: the threads start with the job, not
// with every pre-copy pass, and cost one wake-up each per pass, none per
// chunk.
//
// Thread-safe; one Run at a time (a second waits for the first).

#ifndef MIGD_BASE_CREW_H_
#define MIGD_BASE_CREW_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace migd::base {

class Crew {
 public:
  // Starts `size` threads (at least one), each named `name` (thread_name.h).
  Crew(size_t size, const std::string& name);

  // Ends and joins the threads, after a Run under way returned.
  ~Crew();

  Crew(const Crew&) = delete;
  Crew& operator=(const Crew&) = delete;

  size_t size() const { return threads_.size(); }

  // Runs task(k) on thread k, for every k in [0, size()) at once, and
  // returns when every call returned. The task says itself how its calls
  // share work and stop early (one failing tells the others through what
  // they share).
  void Run(absl::FunctionRef<void(size_t)> task) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop(size_t index);

  absl::Mutex run_mu_;  // one Run at a time
  absl::Mutex mu_;
  // The task of the Run under way, and how many of its calls still run.
  const absl::FunctionRef<void(size_t)>* task_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  size_t running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // last: they use the members above
};

}  // namespace migd::base

#endif  // MIGD_BASE_CREW_H_
