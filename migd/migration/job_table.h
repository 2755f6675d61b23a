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
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/migration/destination_job.h"
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
  // which nothing in this process will end: shutdown does not wait for them.
  void AddRestored(std::shared_ptr<Job> job);

  // kNotFound (JOB_NOT_FOUND) for an unknown id.
  absl::StatusOr<std::shared_ptr<Job>> Find(const std::string& id) const;
  // nullptr when no destination job of that id exists.
  std::shared_ptr<DestinationJob> FindDestination(const std::string& id) const;
  // nullptr when no source job of that id exists. Source jobs live as long as
  // the table.
  SourceJob* FindSource(const std::string& id) const;

  // Newest first.
  std::vector<std::shared_ptr<Job>> List() const;

  // CancelMigration: kNotFound for an unknown id; a no-op on an ended job.
  absl::StatusOr<std::shared_ptr<Job>> Cancel(const std::string& id);

  // Cancels every job that has not ended (agent shutdown).
  void CancelAll();

  // Waits until every job has ended, at most `timeout`. True when they have.
  bool AwaitAllEnded(absl::Duration timeout) const;

 private:
  struct Entry {
    std::shared_ptr<Job> job;
    std::unique_ptr<SourceJob> source;
    std::shared_ptr<DestinationJob> destination;
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
