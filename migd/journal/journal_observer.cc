#include "migd/journal/journal_observer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/base/thread_name.h"

namespace migd::journal {

JournalObserver::JournalObserver(Journal* journal) : journal_(journal) {
  writer_ = std::thread([this] {
    base::NameThisThread("journal");
    WriterLoop();
  });
}

JournalObserver::~JournalObserver() {
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = true;
  }
  writer_.join();
}

JournalObserver::Seen JournalObserver::Of(const v1::Migration& record) {
  Seen s;
  s.phase = record.phase();
  s.notices = record.notices_size();
  s.state_changes = record.state_changes_size();
  s.committed = record.committed();
  s.peer_identity = record.peer_identity();
  return s;
}

void JournalObserver::Write(const v1::Migration& record,
                            absl::string_view why) {
  if (absl::Status s = journal_->Record(record); !s.ok()) {
    base::LogError("job ", record.job_id(), ": cannot journal \"", why,
                   "\": ", s.ToString());
  }
}

absl::Status JournalObserver::BeforeAct(const v1::Migration& record,
                                        absl::string_view what) {
  absl::MutexLock write(&write_mu_);
  {
    // Whatever is queued for the job is older than this record.
    absl::MutexLock lock(&queue_mu_);
    queued_.erase(record.job_id());
    seen_[record.job_id()] = Of(record);
  }
  if (absl::Status s = journal_->Record(record); !s.ok()) {
    return base::Error(
        s.code(), v1::ERROR_REASON_JOURNAL,
        absl::StrCat("cannot journal job ", record.job_id(), " before ", what,
                     ", so it was not done: ", s.message()));
  }
  return absl::OkStatus();
}

void JournalObserver::AfterChange(const v1::Migration& record,
                                  absl::string_view message) {
  const Seen now = Of(record);
  const bool ended = IsTerminal(now.phase);
  {
    absl::MutexLock lock(&queue_mu_);
    auto it = seen_.find(record.job_id());
    // A job enters the journal at its first write-ahead point: one refused
    // before it (a StartMigration that never got going) has nothing to
    // recover, and a record of it would have recovery act on devices that
    // are no longer its own.
    if (it == seen_.end()) return;
    if (it->second.phase == now.phase && it->second.notices == now.notices &&
        it->second.state_changes == now.state_changes &&
        it->second.committed == now.committed &&
        it->second.peer_identity == now.peer_identity) {
      return;  // progress only
    }
    if (!ended) {
      seen_[record.job_id()] = now;
      queued_[record.job_id()] = record;
      return;
    }
    seen_.erase(record.job_id());  // nothing changes after the end
  }
  // The end is written at once: a restart must not recover a finished job.
  absl::MutexLock write(&write_mu_);
  {
    absl::MutexLock lock(&queue_mu_);
    queued_.erase(record.job_id());
  }
  Write(record, message);
}

void JournalObserver::WriterLoop() {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return !queued_.empty() || stopping_;
  };
  for (;;) {
    queue_mu_.LockWhen(absl::Condition(&ready));
    if (queued_.empty()) {  // stopping, and everything is written
      queue_mu_.Unlock();
      return;
    }
    queue_mu_.Unlock();
    // write_mu_ first (the order BeforeAct takes them in); the queue may
    // have been emptied by a BeforeAct meanwhile.
    write_mu_.Lock();
    queue_mu_.Lock();
    if (queued_.empty()) {
      queue_mu_.Unlock();
      write_mu_.Unlock();
      continue;
    }
    auto it = queued_.begin();
    v1::Migration record = std::move(it->second);
    queued_.erase(it);
    ++writing_;
    queue_mu_.Unlock();
    Write(record, "phase change");
    write_mu_.Unlock();
    absl::MutexLock lock(&queue_mu_);
    --writing_;
  }
}

void JournalObserver::Flush() {
  absl::MutexLock lock(&queue_mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return queued_.empty() && writing_ == 0;
  };
  queue_mu_.Await(absl::Condition(&idle));
}

}  // namespace migd::journal
