#include "migd/migration/job_table.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migd/base/reason.h"

namespace migd::migration {

JobTable::~JobTable() {
  CancelAll();
  std::map<std::string, Entry> jobs;
  {
    absl::MutexLock lock(&mu_);
    jobs.swap(jobs_);
  }
  jobs.clear();  // SourceJob destructors join their threads, outside the lock
}

absl::Status JobTable::Reserve(const std::string& id) {
  absl::MutexLock lock(&mu_);
  if (jobs_.count(id) != 0 || !reserved_.insert(id).second) {
    return base::Error(
        absl::StatusCode::kAlreadyExists, v1::ERROR_REASON_JOB_EXISTS,
        absl::StrCat("job ", id, " already exists on this agent"));
  }
  return absl::OkStatus();
}

void JobTable::Unreserve(const std::string& id) {
  absl::MutexLock lock(&mu_);
  reserved_.erase(id);
}

void JobTable::AddSource(std::unique_ptr<SourceJob> job) {
  absl::MutexLock lock(&mu_);
  std::string id = job->job()->id();
  reserved_.erase(id);
  Entry& e = jobs_[id];
  e.job = job->job();
  e.source = std::move(job);
  e.order = next_order_++;
}

void JobTable::AddDestination(std::shared_ptr<DestinationJob> job) {
  absl::MutexLock lock(&mu_);
  std::string id = job->job()->id();
  reserved_.erase(id);
  Entry& e = jobs_[id];
  e.job = job->job();
  e.destination = std::move(job);
  e.order = next_order_++;
}

absl::StatusOr<std::shared_ptr<Job>> JobTable::Find(
    const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) {
    return base::Error(absl::StatusCode::kNotFound,
                       v1::ERROR_REASON_JOB_NOT_FOUND,
                       absl::StrCat("no job ", id, " on this agent"));
  }
  return it->second.job;
}

std::shared_ptr<DestinationJob> JobTable::FindDestination(
    const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second.destination;
}

SourceJob* JobTable::FindSource(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second.source.get();
}

void JobTable::AddRestored(std::shared_ptr<Job> job) {
  absl::MutexLock lock(&mu_);
  std::string id = job->id();
  Entry& e = jobs_[id];
  e.job = std::move(job);
  e.restored = true;
  e.order = next_order_++;
}

std::vector<std::shared_ptr<Job>> JobTable::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<const Entry*> entries;
  for (const auto& [id, e] : jobs_) entries.push_back(&e);
  std::sort(entries.begin(), entries.end(),
            [](const Entry* a, const Entry* b) { return a->order > b->order; });
  std::vector<std::shared_ptr<Job>> out;
  for (const Entry* e : entries) out.push_back(e->job);
  return out;
}

absl::StatusOr<std::shared_ptr<Job>> JobTable::Cancel(const std::string& id) {
  std::shared_ptr<Job> job;
  std::shared_ptr<DestinationJob> destination;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) {
      return base::Error(absl::StatusCode::kNotFound,
                         v1::ERROR_REASON_JOB_NOT_FOUND,
                         absl::StrCat("no job ", id, " on this agent"));
    }
    job = it->second.job;
    destination = it->second.destination;
  }
  if (destination != nullptr) {
    destination->Cancel();
  } else {
    job->RequestCancel();
  }
  return job;
}

bool JobTable::AwaitAllEnded(absl::Duration timeout) const {
  absl::Time deadline = absl::Now() + timeout;
  std::vector<std::shared_ptr<Job>> running;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, e] : jobs_) {
      if (!e.restored) running.push_back(e.job);
    }
  }
  for (const std::shared_ptr<Job>& job : running) {
    uint64_t seen = Job::kNoVersion;
    v1::MigrationEvent event;
    while (!job->terminal()) {
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      job->WaitForChange(&seen, left, &event);
    }
  }
  return true;
}

void JobTable::CancelAll() {
  std::vector<std::string> ids;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, e] : jobs_) {
      if (!e.restored && !e.job->terminal()) ids.push_back(id);
    }
  }
  for (const std::string& id : ids) (void)Cancel(id);
}

}  // namespace migd::migration
