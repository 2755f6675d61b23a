#include "migd/journal/journal_observer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/base/thread_name.h"

namespace migd::journal {
namespace {

// The destination's phases after COMMIT, which end in a write of their own.
bool Held(v1::Phase phase) {
  return phase == v1::PHASE_LOADING || phase == v1::PHASE_RESUMING;
}

// The destination's RESUMING write-ahead point, which is written at once
// and synced by the writer (journal_observer.h).
bool SyncedByWriter(const v1::Migration& record) {
  return record.role() == v1::ROLE_DESTINATION &&
         record.phase() == v1::PHASE_RESUMING;
}

}  // namespace

JournalObserver::JournalObserver(Journal* journal, absl::Duration downtime_hold)
    : journal_(journal), downtime_hold_(downtime_hold) {
  writer_ = std::thread([this] {
    base::NameThisThread("journal");
    WriterLoop();
  });
}

JournalObserver::~JournalObserver() {
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = true;
    ++changes_;
  }
  writer_.join();
}

bool JournalObserver::Seen::SameAs(const Seen& other) const {
  return phase == other.phase && notices == other.notices &&
         state_changes == other.state_changes && committed == other.committed &&
         peer_identity == other.peer_identity;
}

JournalObserver::Seen JournalObserver::Of(const v1::Migration& record,
                                          uint64_t revision) {
  Seen s;
  s.revision = revision;
  s.phase = record.phase();
  s.notices = record.notices_size();
  s.state_changes = record.state_changes_size();
  s.committed = record.committed();
  s.peer_identity = record.peer_identity();
  return s;
}

void JournalObserver::LogFailure(const v1::Migration& record,
                                 absl::string_view why, const absl::Status& s) {
  base::LogError("job ", record.job_id(), ": cannot journal \"", why,
                 "\": ", s.ToString());
}

absl::Status JournalObserver::Store(const v1::Migration& record,
                                    uint64_t revision, Journal::Sync sync) {
  absl::Status s = journal_->Record(record, sync);
  if (s.ok()) {
    absl::MutexLock lock(&queue_mu_);
    uint64_t& stored = stored_[record.job_id()];
    stored = std::max(stored, revision);
    if (sync == Journal::Sync::kLater) SyncLaterLocked();
  }
  return s;
}

void JournalObserver::SyncLaterLocked() {
  const absl::Time due = absl::Now() + downtime_hold_;
  sync_due_ = sync_pending_ ? std::min(sync_due_, due) : due;
  sync_pending_ = true;
  // A writer that wakes by then anyway is not woken now: the wake-up would
  // cost this thread, which is in the downtime.
  if (writer_wakes_ == absl::InfinitePast() || sync_due_ < writer_wakes_) {
    ++changes_;
  }
}

absl::Status JournalObserver::BeforeAct(const v1::Migration& record,
                                        uint64_t revision,
                                        absl::string_view what) {
  absl::MutexLock write(&write_mu_);
  // A record newer than `record`, queued meanwhile: stored in its place.
  v1::Migration newer;
  uint64_t to_store = revision;
  {
    absl::MutexLock lock(&queue_mu_);
    auto stored = stored_.find(record.job_id());
    if (stored != stored_.end() && stored->second >= revision) {
      // The writer stored a newer record while this call waited for it.
      return absl::OkStatus();
    }
    auto queued = queued_.find(record.job_id());
    if (queued != queued_.end()) {
      if (queued->second.revision > revision) {
        newer = std::move(queued->second.record);
        to_store = queued->second.revision;
      }
      queued_.erase(queued);
    }
    // The job enters the journal at its first write-ahead point.
    auto [seen, entered] = seen_.try_emplace(record.job_id());
    if (entered || revision > seen->second.revision) {
      seen->second = Of(record, revision);
    }
  }
  if (absl::Status s = Store(
          to_store == revision ? record : newer, to_store,
          SyncedByWriter(record) ? Journal::Sync::kLater : Journal::Sync::kNow);
      !s.ok()) {
    return base::Error(
        s.code(), v1::ERROR_REASON_JOURNAL,
        absl::StrCat("cannot journal job ", record.job_id(), " before ", what,
                     ", so it was not done: ", s.message()));
  }
  return absl::OkStatus();
}

void JournalObserver::AfterChange(const v1::Migration& record,
                                  uint64_t revision,
                                  absl::string_view message) {
  const Seen now = Of(record, revision);
  const bool ended = IsTerminal(now.phase);
  {
    absl::MutexLock lock(&queue_mu_);
    auto it = seen_.find(record.job_id());
    // A job enters the journal at its first write-ahead point: one refused
    // before it (a StartMigration that never got going) has nothing to
    // recover, and a record of it would have recovery act on devices that
    // are no longer its own.
    if (it == seen_.end()) return;
    // A write-ahead point took a newer record already.
    if (revision <= it->second.revision) return;
    if (it->second.SameAs(now)) return;  // progress only
    if (!ended) {
      it->second = now;
      const absl::Time at = absl::Now();
      const absl::Time due = Held(now.phase) ? at + downtime_hold_ : at;
      auto [queued, fresh] = queued_.try_emplace(record.job_id());
      queued->second.record = record;
      queued->second.revision = revision;
      // A record replacing one not yet written is due no later than it.
      queued->second.due = fresh ? due : std::min(queued->second.due, due);
      if (queued->second.due < writer_wakes_) ++changes_;
      return;
    }
    seen_.erase(it);  // nothing changes after the end
  }
  // The end is written at once (a restart must not recover a finished job)
  // and synced by the writer a little later: the destination's end is in
  // the downtime, before its completion goes out, and an agent that
  // crashes keeps what it wrote (journal_observer.h).
  absl::MutexLock write(&write_mu_);
  {
    absl::MutexLock lock(&queue_mu_);
    queued_.erase(record.job_id());
  }
  absl::Status s = journal_->Record(record, Journal::Sync::kLater);
  if (!s.ok()) LogFailure(record, message, s);
  absl::MutexLock lock(&queue_mu_);
  stored_.erase(record.job_id());
  if (s.ok()) SyncLaterLocked();
}

JournalObserver::Queue::iterator JournalObserver::DueLocked(absl::Time now,
                                                            absl::Time* next) {
  for (auto it = queued_.begin(); it != queued_.end(); ++it) {
    if (stopping_ || flushing_ > 0 || it->second.due <= now) return it;
    *next = std::min(*next, it->second.due);
  }
  return queued_.end();
}

bool JournalObserver::SyncDueLocked(absl::Time now, absl::Time* next) {
  if (!sync_pending_) return false;
  if (stopping_ || flushing_ > 0 || sync_due_ <= now) return true;
  *next = std::min(*next, sync_due_);
  return false;
}

void JournalObserver::WriterLoop() {
  for (;;) {
    bool sync = false;
    {
      absl::MutexLock lock(&queue_mu_);
      for (;;) {
        if (stopping_ && queued_.empty() && !sync_pending_) return;
        absl::Time next = absl::InfiniteFuture();
        const absl::Time now = absl::Now();
        if (DueLocked(now, &next) != queued_.end()) break;
        if (SyncDueLocked(now, &next)) {
          sync = true;
          break;
        }
        const uint64_t changes = changes_;
        auto changed = [this, changes]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(
                           queue_mu_) { return changes_ != changes; };
        writer_wakes_ = next;
        queue_mu_.AwaitWithDeadline(absl::Condition(&changed), next);
        writer_wakes_ = absl::InfinitePast();
      }
    }
    // write_mu_ first (the order BeforeAct takes them in); the queue may
    // have changed meanwhile.
    absl::MutexLock write(&write_mu_);
    if (sync) {
      {
        absl::MutexLock lock(&queue_mu_);
        sync_pending_ = false;
        ++writing_;
      }
      if (absl::Status s = journal_->SyncNow(); !s.ok()) {
        base::LogError("journal: cannot sync the records written without it: ",
                       s.ToString());
      }
      absl::MutexLock lock(&queue_mu_);
      --writing_;
      continue;
    }
    v1::Migration record;
    uint64_t revision = 0;
    {
      absl::MutexLock lock(&queue_mu_);
      absl::Time next = absl::InfiniteFuture();
      auto it = DueLocked(absl::Now(), &next);
      if (it == queued_.end()) continue;
      record = std::move(it->second.record);
      revision = it->second.revision;
      queued_.erase(it);
      auto stored = stored_.find(record.job_id());
      if (stored != stored_.end() && stored->second >= revision) {
        continue;  // older than what a write-ahead point stored
      }
      ++writing_;
    }
    if (absl::Status s = Store(record, revision, Journal::Sync::kNow);
        !s.ok()) {
      LogFailure(record, "phase change", s);
    }
    absl::MutexLock lock(&queue_mu_);
    --writing_;
  }
}

void JournalObserver::Flush() {
  absl::MutexLock lock(&queue_mu_);
  ++flushing_;
  ++changes_;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return queued_.empty() && !sync_pending_ && writing_ == 0;
  };
  queue_mu_.Await(absl::Condition(&idle));
  --flushing_;
}

}  // namespace migd::journal
