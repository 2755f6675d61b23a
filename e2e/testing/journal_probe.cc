#include "e2e/testing/journal_probe.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace migd::e2e {
namespace {

std::string PhaseText(v1::Phase phase) {
  std::string name = v1::Phase_Name(phase);
  return name.rfind("PHASE_", 0) == 0 ? name.substr(6) : name;
}

}  // namespace

absl::StatusOr<std::optional<v1::Phase>> JournaledPhase(
    absl::string_view state_dir, absl::string_view job) {
  const std::string path = absl::StrCat(state_dir, "/journal.sqlite3");
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return std::optional<v1::Phase>();
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  struct Close {
    sqlite3* db;
    ~Close() { sqlite3_close_v2(db); }
  } close{db};
  if (rc != SQLITE_OK) {
    return absl::InternalError(
        absl::StrCat("open ", path, ": ", sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* stmt = nullptr;
  rc = sqlite3_prepare_v2(db, "SELECT phase FROM jobs WHERE job_id = ?", -1,
                          &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return absl::InternalError(
        absl::StrCat("query ", path, ": ", sqlite3_errmsg(db)));
  }
  sqlite3_bind_text(stmt, 1, job.data(), static_cast<int>(job.size()),
                    SQLITE_TRANSIENT);
  std::optional<v1::Phase> phase;
  rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    phase = static_cast<v1::Phase>(sqlite3_column_int(stmt, 0));
    rc = sqlite3_step(stmt);
  }
  const std::string error = sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) {
    return absl::InternalError(absl::StrCat("query ", path, ": ", error));
  }
  return phase;
}

// Waits until the journal in `state_dir` holds `job` in one of `phases`.

absl::Status WaitForJournaledPhase(absl::string_view state_dir,
                                   absl::string_view job,
                                   const std::set<v1::Phase>& phases,
                                   absl::Time deadline) {
  std::string last = "no record";
  for (;;) {
    absl::StatusOr<std::optional<v1::Phase>> now =
        JournaledPhase(state_dir, job);
    if (!now.ok()) return now.status();
    if (now->has_value() && phases.count(**now) > 0) return absl::OkStatus();
    if (now->has_value()) last = PhaseText(**now);
    if (absl::Now() > deadline) {
      std::vector<std::string> wanted;
      for (v1::Phase p : phases) wanted.push_back(PhaseText(p));
      return absl::DeadlineExceededError(
          absl::StrCat("journal in ", state_dir, ": job ", job, " is ", last,
                       ", not ", absl::StrJoin(wanted, " or ")));
    }
    absl::SleepFor(absl::Milliseconds(5));  // polling the condition
  }
}

}  // namespace migd::e2e
