// migd/metrics/job_metrics.h
//
// Prometheus metrics of the jobs, fed through the job observer seam (the
// same one the journal follows), so that no runner knows of them. Every
// family lives in the registry the caller passes; the exposer serves it.
//
// Families (role is "source" or "destination"):
//   migd_migrations_started_total{role}
//   migd_migrations_total{role,outcome,reason}   outcome succeeded|failed|
//       cancelled; reason the failure's ErrorReason ("timeout",
//       "incompatible"), "none" for a success
//   migd_migrations_in_flight{role,phase}        jobs not ended, by phase
//       ("pre_copy", "stop_copy", "in_doubt", ...)
//   migd_transferred_bytes_total{role,phase}     device state moved while
//       the devices ran ("precopy") and while they were stopped ("stopcopy")
//   migd_downtime_seconds{role}                  per succeeded job
//   migd_downtime_part_seconds{role,part}        where it went:
//       stop_copy_transfer, load, resume
//   migd_switchover_seconds{role}                from the job entering
//       STOP_COPY to its success, as this agent saw it
//   migd_precopy_iterations{role}                per ended job with pre-copy
//   migd_transfer_throughput_bytes_per_second{role}  per succeeded job
//   migd_dirty_rate_bytes_per_second             sum over jobs in pre-copy
//   migd_migrations_waiting                      source jobs waiting for a
//       transfer slot (--max_concurrent_migrations)
//   migd_migration_wait_seconds                  per source job that waited,
//       how long, once it got its slot or left the line
//   migd_job_notices_total{role,kind}            notices a person should
//       know of, by kind ("recovery" for what recovery did after a restart,
//       "other")
//
// Jobs the agent read back from its journal at start are not counted as
// started here: they started in an earlier process. A job refused before
// it got going (a StartMigration the destination turned down) counts as
// started and failed, with its reason. A job is counted once when it ends;
// changes its record still gets afterwards are not counted.

#ifndef MIGD_METRICS_JOB_METRICS_H_
#define MIGD_METRICS_JOB_METRICS_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "migd/migration/job_observer.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace migd::metrics {

// "pre_copy" for PHASE_PRE_COPY: the label value of a phase.
std::string PhaseLabel(v1::Phase phase);
// "timeout" for ERROR_REASON_TIMEOUT; "none" for UNSPECIFIED.
std::string ReasonLabel(v1::ErrorReason reason);

class JobMetrics final : public migration::JobObserver {
 public:
  // Registers the families in `registry`, which outlives this. `now` is
  // the clock switchover durations are measured with.
  explicit JobMetrics(prometheus::Registry& registry,
                      std::function<absl::Time()> now = absl::Now);

  // Counts nothing: metrics follow what happened, not what is about to.
  absl::Status BeforeAct(const v1::Migration& record, uint64_t revision,
                         absl::string_view what) override;
  void AfterChange(const v1::Migration& record, uint64_t revision,
                   absl::string_view message) override;

 private:
  // What is known of a job not ended yet.
  struct Tracked {
    v1::Phase phase = v1::PHASE_UNSPECIFIED;
    uint64_t precopy_bytes = 0;
    uint64_t stopcopy_bytes = 0;
    double dirty_rate = 0;
    int notices = 0;
    bool waiting = false;  // for a transfer slot
    absl::Time stop_copy_began = absl::InfinitePast();
  };

  void CountBytes(const v1::Migration& record, Tracked& job);
  void CountNotices(const v1::Migration& record, Tracked& job);
  void FollowQueue(const v1::Migration& record, Tracked& job);
  void EnterPhase(const v1::Migration& record, Tracked& job);
  void End(const v1::Migration& record, const Tracked& job);
  prometheus::Gauge& InFlight(v1::Role role, v1::Phase phase);

  std::function<absl::Time()> now_;
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Counter>& bytes_;
  prometheus::Family<prometheus::Histogram>& downtime_;
  prometheus::Family<prometheus::Histogram>& downtime_part_;
  prometheus::Family<prometheus::Histogram>& switchover_;
  prometheus::Family<prometheus::Histogram>& iterations_;
  prometheus::Family<prometheus::Histogram>& throughput_;
  prometheus::Gauge& dirty_rate_;
  prometheus::Gauge& waiting_;
  prometheus::Histogram& wait_;
  prometheus::Family<prometheus::Counter>& notices_;

  // How many ended jobs' ids are remembered, so that a change a record
  // still gets after its end (a late progress or device state) does not
  // count the job again.
  static constexpr size_t kEndedMemory = 4096;

  absl::Mutex mu_;
  std::map<std::string, Tracked> jobs_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> ended_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> ended_order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::metrics

#endif  // MIGD_METRICS_JOB_METRICS_H_
