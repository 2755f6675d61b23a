#include "migd/journal/journal_observer.h"

#include "absl/strings/str_cat.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"

namespace migd::journal {

JournalObserver::Seen JournalObserver::Of(const v1::Migration& record) {
  Seen s;
  s.phase = record.phase();
  s.notices = record.notices_size();
  s.committed = record.committed();
  s.peer_identity = record.peer_identity();
  return s;
}

absl::Status JournalObserver::BeforeAct(const v1::Migration& record,
                                        absl::string_view what) {
  if (absl::Status s = journal_->Record(record); !s.ok()) {
    return base::Error(
        s.code(), v1::ERROR_REASON_JOURNAL,
        absl::StrCat("cannot journal job ", record.job_id(), " before ", what,
                     ", so it was not done: ", s.message()));
  }
  absl::MutexLock lock(&mu_);
  seen_[record.job_id()] = Of(record);
  return absl::OkStatus();
}

void JournalObserver::AfterChange(const v1::Migration& record,
                                  absl::string_view message) {
  Seen now = Of(record);
  {
    absl::MutexLock lock(&mu_);
    auto it = seen_.find(record.job_id());
    if (it != seen_.end() && it->second.phase == now.phase &&
        it->second.notices == now.notices &&
        it->second.committed == now.committed &&
        it->second.peer_identity == now.peer_identity) {
      return;  // progress only
    }
    seen_[record.job_id()] = now;
  }
  if (IsTerminal(now.phase)) {
    absl::MutexLock lock(&mu_);
    seen_.erase(record.job_id());  // nothing changes after the end
  }
  if (absl::Status s = journal_->Record(record); !s.ok()) {
    base::LogError("job ", record.job_id(), ": cannot journal \"", message,
                   "\": ", s.ToString());
  }
}

}  // namespace migd::journal
