#include "migd/base/crew.h"

#include <algorithm>

#include "migd/base/thread_name.h"

namespace migd::base {

Crew::Crew(size_t size, const std::string& name) {
  size = std::max<size_t>(size, 1);
  threads_.reserve(size);
  for (size_t k = 0; k < size; ++k) {
    threads_.emplace_back([this, k, name] {
      NameThisThread(name);
      Loop(k);
    });
  }
}

Crew::~Crew() {
  {
    absl::MutexLock run(&run_mu_);
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void Crew::Run(absl::FunctionRef<void(size_t)> task) {
  absl::MutexLock run(&run_mu_);
  absl::MutexLock lock(&mu_);
  task_ = &task;
  running_ = threads_.size();
  ++generation_;
  auto done = [this]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  mu_.Await(absl::Condition(&done));
  task_ = nullptr;
}

void Crew::Loop(size_t index) {
  uint64_t seen = 0;
  for (;;) {
    const absl::FunctionRef<void(size_t)>* task;
    {
      absl::MutexLock lock(&mu_);
      auto called = [this, &seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || generation_ != seen;
      };
      mu_.Await(absl::Condition(&called));
      if (stopping_) return;
      seen = generation_;
      task = task_;
    }
    (*task)(index);
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

}  // namespace migd::base
