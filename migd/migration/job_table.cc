#include "migd/migration/job_table.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migd/base/reason.h"
#include "migd/base/thread_name.h"

namespace migd::migration {

JobTable::~JobTable() {
  CancelAll();
  StopResolvers();
  std::map<std::string, Entry> jobs;
  {
    absl::MutexLock lock(&mu_);
    jobs.swap(jobs_);
  }
  for (auto& [id, e] : jobs) {
    if (e.resolver != nullptr && e.resolver->joinable()) e.resolver->join();
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

void JobTable::AddInDoubt(std::shared_ptr<InDoubt> in_doubt) {
  absl::MutexLock lock(&mu_);
  Entry& e = jobs_[in_doubt->job()->id()];
  if (e.in_doubt != nullptr) return;  // taken up already
  if (e.job == nullptr) {
    e.job = in_doubt->job();
    e.restored = true;
    e.order = next_order_++;
  }
  e.in_doubt = in_doubt;
  if (in_doubt->asks()) {
    e.resolver = std::make_unique<std::thread>([in_doubt] {
      base::NameThisThread("in-doubt");
      in_doubt->Run();
    });
  }
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
  if (job->phase() == v1::PHASE_IN_DOUBT) {
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_IN_DOUBT,
        absl::StrCat("job ", id,
                     " is IN_DOUBT: whether the destination runs the devices "
                     "is not known, and a cancel cannot say which side "
                     "should; it ends when the other side answers, or with "
                     "an operator's decision (migctl resolve ",
                     id, " --outcome=source|destination)"));
  }
  if (destination != nullptr) {
    destination->Cancel();
  } else {
    job->RequestCancel();
  }
  return job;
}

absl::StatusOr<std::shared_ptr<Job>> JobTable::Resolve(
    const std::string& id, v1::Resolution resolution, const std::string& who) {
  std::shared_ptr<Job> job;
  std::shared_ptr<InDoubt> in_doubt;
  SourceJob* source = nullptr;
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
    in_doubt = it->second.in_doubt;
    // Source jobs live as long as the table.
    source = it->second.source.get();
    destination = it->second.destination;
  }
  absl::Status s;
  if (in_doubt != nullptr) {
    s = in_doubt->Resolve(resolution, who);
  } else if (source != nullptr) {
    s = source->Resolve(resolution, who);
  } else if (destination != nullptr) {
    s = destination->Resolve(resolution, who);
  } else {
    s = base::Error(absl::StatusCode::kFailedPrecondition,
                    v1::ERROR_REASON_NOT_IN_DOUBT,
                    absl::StrCat("job ", id, " is ", PhaseName(job->phase()),
                                 ", not IN_DOUBT: only a job whose outcome is "
                                 "in doubt is resolved"));
  }
  if (!s.ok()) return s;
  return job;
}

void JobTable::StopResolvers() {
  std::vector<std::shared_ptr<InDoubt>> in_doubt;
  std::vector<SourceJob*> sources;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, e] : jobs_) {
      if (e.in_doubt != nullptr) in_doubt.push_back(e.in_doubt);
      if (e.source != nullptr) sources.push_back(e.source.get());
    }
  }
  for (const auto& d : in_doubt) d->Stop();
  for (SourceJob* s : sources) s->StopResolving();
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
    while (!job->terminal() && job->phase() != v1::PHASE_IN_DOUBT) {
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
      if (!e.restored && !e.job->terminal() &&
          e.job->phase() != v1::PHASE_IN_DOUBT) {
        ids.push_back(id);
      }
    }
  }
  for (const std::string& id : ids) (void)Cancel(id);
}

}  // namespace migd::migration
