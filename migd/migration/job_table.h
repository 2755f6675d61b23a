// migd/migration/job_table.h
//
// Every job an agent runs or ran, by id: the records the API reads and the
// runners that drive them. Ids are unique per agent; an id is reserved while a
// job is being set up, so two concurrent calls cannot create the same job.
//
// Thread-safe.

#ifndef MIGD_MIGRATION_JOB_TABLE_H_
#define MIGD_MIGRATION_JOB_TABLE_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/migration/destination_job.h"
#include "migd/migration/in_doubt.h"
#include "migd/migration/job.h"
#include "migd/migration/source_job.h"

namespace migd::migration {

class JobTable {
 public:
  // Cancels every running job and waits for the source jobs to finish
  // rolling back.
  ~JobTable();

  // kAlreadyExists (JOB_EXISTS) when the id is taken or being set up.
  absl::Status Reserve(const std::string& id);
  // Gives back a reservation whose job was not created.
  void Unreserve(const std::string& id);

  // Registers a started job under its (reserved) id.
  void AddSource(std::unique_ptr<SourceJob> job);
  void AddDestination(std::shared_ptr<DestinationJob> job);
  // A job read back from the journal at start (no runner drives it): the API
  // reports it, its id stays taken. Ended jobs, and jobs left IN_DOUBT,
  // which only their InDoubt (AddInDoubt) ends: shutdown does not wait for
  // them.
  void AddRestored(std::shared_ptr<Job> job);
  // Takes up a restored job left IN_DOUBT (added with AddRestored first):
  // `in_doubt` ends it, asking on a thread of its own when it asks someone,
  // or when an operator resolves it.
  void AddInDoubt(std::shared_ptr<InDoubt> in_doubt);

  // kNotFound (JOB_NOT_FOUND) for an unknown id.
  absl::StatusOr<std::shared_ptr<Job>> Find(const std::string& id) const;
  // nullptr when no destination job of that id exists.
  std::shared_ptr<DestinationJob> FindDestination(const std::string& id) const;
  // nullptr when no source job of that id exists. Source jobs live as long as
  // the table.
  SourceJob* FindSource(const std::string& id) const;

  // Newest first.
  std::vector<std::shared_ptr<Job>> List() const;

  // CancelMigration: kNotFound for an unknown id; a no-op on an ended job;
  // kFailedPrecondition (IN_DOUBT) for a job IN_DOUBT, which only Resolve
  // ends.
  absl::StatusOr<std::shared_ptr<Job>> Cancel(const std::string& id);

  // ResolveMigration: an operator's decision (`who`: the caller's identity)
  // for a job IN_DOUBT (InDoubt::Resolve). kNotFound for an unknown id;
  // kFailedPrecondition (NOT_IN_DOUBT) for a job in another phase.
  absl::StatusOr<std::shared_ptr<Job>> Resolve(const std::string& id,
                                               v1::Resolution resolution,
                                               const std::string& who);

  // Cancels every job that has not ended and is not IN_DOUBT (agent
  // shutdown).
  void CancelAll();

  // Agent shutdown: every job IN_DOUBT (or getting there) stops asking its
  // peer and stays IN_DOUBT for recovery at the next start.
  void StopResolvers();

  // Waits until every job has ended or is IN_DOUBT, at most `timeout`. True
  // when they have.
  bool AwaitAllEnded(absl::Duration timeout) const;

 private:
  struct Entry {
    std::shared_ptr<Job> job;
    std::unique_ptr<SourceJob> source;
    std::shared_ptr<DestinationJob> destination;
    // A restored job IN_DOUBT, and the thread asking for its outcome.
    std::shared_ptr<InDoubt> in_doubt;
    std::unique_ptr<std::thread> resolver;
    bool restored = false;
    uint64_t order = 0;
  };

  mutable absl::Mutex mu_;
  std::set<std::string> reserved_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Entry> jobs_ ABSL_GUARDED_BY(mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace migd::migration

#endif  // MIGD_MIGRATION_JOB_TABLE_H_
