#include "migd/metrics/job_metrics.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "migd/migration/job.h"

namespace migd::metrics {
namespace {

std::string RoleLabel(v1::Role role) {
  switch (role) {
    case v1::ROLE_SOURCE:
      return "source";
    case v1::ROLE_DESTINATION:
      return "destination";
    default:
      return "unspecified";
  }
}

std::string OutcomeLabel(v1::Phase phase) {
  switch (phase) {
    case v1::PHASE_SUCCEEDED:
      return "succeeded";
    case v1::PHASE_CANCELLED:
      return "cancelled";
    default:
      return "failed";
  }
}

double Seconds(const google::protobuf::Duration& d) {
  return static_cast<double>(d.seconds()) + d.nanos() / 1e9;
}

// Downtime: a millisecond to a minute; the limit a policy sets is usually
// in the tens to hundreds of milliseconds, where the buckets are densest.
prometheus::Histogram::BucketBoundaries DowntimeBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
          0.3,   0.5,    0.75,  1,    2.5,   5,    10,    30,  60};
}

prometheus::Histogram::BucketBoundaries IterationBuckets() {
  return {0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100};
}

// 10 MB/s to 20 GB/s.
prometheus::Histogram::BucketBoundaries ThroughputBuckets() {
  return {1e7,   5e7, 1e8, 2.5e8, 5e8,  7.5e8, 1e9,
          1.5e9, 2e9, 3e9, 5e9,   1e10, 2e10};
}

// A wait for a transfer slot: none to an hour (a line of jobs that take
// minutes each).
prometheus::Histogram::BucketBoundaries WaitBuckets() {
  return {0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
}

// The phases a job is first seen in when it starts in this process; a job
// first seen in another phase was read back from the journal.
bool IsFirstPhase(v1::Phase phase) {
  return phase == v1::PHASE_CONNECTING || phase == v1::PHASE_PREPARED;
}

}  // namespace

std::string PhaseLabel(v1::Phase phase) {
  absl::string_view name = v1::Phase_Name(phase);
  if (name.empty()) return "unknown";
  absl::ConsumePrefix(&name, "PHASE_");
  return absl::AsciiStrToLower(name);
}

std::string ReasonLabel(v1::ErrorReason reason) {
  if (reason == v1::ERROR_REASON_UNSPECIFIED) return "none";
  absl::string_view name = v1::ErrorReason_Name(reason);
  if (name.empty()) return "unknown";
  absl::ConsumePrefix(&name, "ERROR_REASON_");
  return absl::AsciiStrToLower(name);
}

JobMetrics::JobMetrics(prometheus::Registry& registry,
                       std::function<absl::Time()> now)
    : now_(std::move(now)),
      started_(prometheus::BuildCounter()
                   .Name("migd_migrations_started_total")
                   .Help("Migration jobs started on this agent, by role")
                   .Register(registry)),
      finished_(prometheus::BuildCounter()
                    .Name("migd_migrations_total")
                    .Help("Migration jobs ended, by role, outcome "
                          "(succeeded, failed, cancelled) and error reason")
                    .Register(registry)),
      in_flight_(prometheus::BuildGauge()
                     .Name("migd_migrations_in_flight")
                     .Help("Migration jobs not ended, by role and phase")
                     .Register(registry)),
      bytes_(prometheus::BuildCounter()
                 .Name("migd_transferred_bytes_total")
                 .Help("Device state moved, while the devices ran (precopy) "
                       "and while they were stopped (stopcopy)")
                 .Register(registry)),
      downtime_(prometheus::BuildHistogram()
                    .Name("migd_downtime_seconds")
                    .Help("Downtime of each succeeded migration: from the "
                          "first device stopping to the last one running")
                    .Register(registry)),
      downtime_part_(prometheus::BuildHistogram()
                         .Name("migd_downtime_part_seconds")
                         .Help("Where the downtime went: stop_copy_transfer, "
                               "load, resume")
                         .Register(registry)),
      switchover_(prometheus::BuildHistogram()
                      .Name("migd_switchover_seconds")
                      .Help("From a job entering STOP_COPY to its success, "
                            "as this agent saw it")
                      .Register(registry)),
      iterations_(prometheus::BuildHistogram()
                      .Name("migd_precopy_iterations")
                      .Help("Pre-copy iterations of each ended job that "
                            "pre-copied")
                      .Register(registry)),
      throughput_(prometheus::BuildHistogram()
                      .Name("migd_transfer_throughput_bytes_per_second")
                      .Help("Device state bytes per second over each "
                            "succeeded job's transfer")
                      .Register(registry)),
      dirty_rate_(prometheus::BuildGauge()
                      .Name("migd_dirty_rate_bytes_per_second")
                      .Help("Rate at which running devices produce new state, "
                            "summed over the jobs in pre-copy")
                      .Register(registry)
                      .Add({})),
      waiting_(prometheus::BuildGauge()
                   .Name("migd_migrations_waiting")
                   .Help("Source jobs waiting for a transfer slot "
                         "(--max_concurrent_migrations)")
                   .Register(registry)
                   .Add({})),
      wait_(prometheus::BuildHistogram()
                .Name("migd_migration_wait_seconds")
                .Help("How long each source job that waited for a transfer "
                      "slot waited, until it got one or left the line")
                .Register(registry)
                .Add({}, WaitBuckets())),
      notices_(prometheus::BuildCounter()
                   .Name("migd_job_notices_total")
                   .Help("Notices on jobs, by kind: recovery (what the agent "
                         "did after a restart), other")
                   .Register(registry)) {}

absl::Status JobMetrics::BeforeAct(const v1::Migration& record,
                                   uint64_t revision, absl::string_view what) {
  return absl::OkStatus();
}

prometheus::Gauge& JobMetrics::InFlight(v1::Role role, v1::Phase phase) {
  return in_flight_.Add(
      {{"role", RoleLabel(role)}, {"phase", PhaseLabel(phase)}});
}

void JobMetrics::AfterChange(const v1::Migration& record, uint64_t revision,
                             absl::string_view message) {
  absl::MutexLock lock(&mu_);
  if (ended_.count(record.job_id()) != 0) return;
  auto [it, added] = jobs_.try_emplace(record.job_id());
  Tracked& job = it->second;
  if (added) {
    if (IsFirstPhase(record.phase())) {
      started_.Add({{"role", RoleLabel(record.role())}}).Increment();
    }
    // A job read back from the journal: what it moved was counted by the
    // process that moved it.
    job.precopy_bytes = record.precopy_bytes();
    job.stopcopy_bytes = record.stop_copy_bytes();
    job.notices = IsFirstPhase(record.phase()) ? 0 : record.notices_size();
  }
  CountBytes(record, job);
  CountNotices(record, job);
  FollowQueue(record, job);
  if (record.phase() != job.phase) EnterPhase(record, job);
  const double rate = record.phase() == v1::PHASE_PRE_COPY
                          ? record.precopy().dirty_rate_bytes_per_second()
                          : 0;
  if (rate != job.dirty_rate) {
    dirty_rate_.Increment(rate - job.dirty_rate);
    job.dirty_rate = rate;
  }
  if (migration::IsTerminal(record.phase())) {
    End(record, job);
    jobs_.erase(it);
    ended_.insert(record.job_id());
    ended_order_.push_back(record.job_id());
    if (ended_order_.size() > kEndedMemory) {
      ended_.erase(ended_order_.front());
      ended_order_.pop_front();
    }
  }
}

void JobMetrics::CountBytes(const v1::Migration& record, Tracked& job) {
  const std::string role = RoleLabel(record.role());
  if (record.precopy_bytes() > job.precopy_bytes) {
    bytes_.Add({{"role", role}, {"phase", "precopy"}})
        .Increment(
            static_cast<double>(record.precopy_bytes() - job.precopy_bytes));
    job.precopy_bytes = record.precopy_bytes();
  }
  if (record.stop_copy_bytes() > job.stopcopy_bytes) {
    bytes_.Add({{"role", role}, {"phase", "stopcopy"}})
        .Increment(
            static_cast<double>(record.stop_copy_bytes() - job.stopcopy_bytes));
    job.stopcopy_bytes = record.stop_copy_bytes();
  }
}

void JobMetrics::CountNotices(const v1::Migration& record, Tracked& job) {
  for (int i = job.notices; i < record.notices_size(); ++i) {
    const std::string kind =
        absl::StartsWith(record.notices(i), "recovery:") ? "recovery" : "other";
    notices_.Add({{"role", RoleLabel(record.role())}, {"kind", kind}})
        .Increment();
  }
  job.notices = std::max(job.notices, record.notices_size());
}

void JobMetrics::FollowQueue(const v1::Migration& record, Tracked& job) {
  // A job that ends while waiting leaves the line as it ends.
  const bool waiting =
      record.queue().waiting() && !migration::IsTerminal(record.phase());
  if (waiting == job.waiting) return;
  if (waiting) {
    waiting_.Increment();
  } else {
    waiting_.Decrement();
    wait_.Observe(Seconds(record.queue().waited()));
  }
  job.waiting = waiting;
}

void JobMetrics::EnterPhase(const v1::Migration& record, Tracked& job) {
  if (job.phase != v1::PHASE_UNSPECIFIED) {
    InFlight(record.role(), job.phase).Decrement();
  }
  if (!migration::IsTerminal(record.phase())) {
    InFlight(record.role(), record.phase()).Increment();
  }
  if (record.phase() == v1::PHASE_STOP_COPY) job.stop_copy_began = now_();
  job.phase = record.phase();
}

void JobMetrics::End(const v1::Migration& record, const Tracked& job) {
  const std::string role = RoleLabel(record.role());
  finished_
      .Add({{"role", role},
            {"outcome", OutcomeLabel(record.phase())},
            {"reason", ReasonLabel(record.phase() == v1::PHASE_SUCCEEDED
                                       ? v1::ERROR_REASON_UNSPECIFIED
                                       : record.failure().reason())}})
      .Increment();
  if (record.has_precopy()) {
    iterations_.Add({{"role", role}}, IterationBuckets())
        .Observe(record.precopy().iteration());
  }
  if (record.phase() != v1::PHASE_SUCCEEDED) return;
  if (record.has_downtime()) {
    downtime_.Add({{"role", role}}, DowntimeBuckets())
        .Observe(Seconds(record.downtime()));
  }
  if (record.has_downtime_breakdown()) {
    const v1::DowntimeBreakdown& b = record.downtime_breakdown();
    const std::pair<const char*, const google::protobuf::Duration*> parts[] = {
        {"stop_copy_transfer", &b.stop_copy_transfer()},
        {"load", &b.load()},
        {"resume", &b.resume()}};
    for (const auto& [part, d] : parts) {
      downtime_part_.Add({{"role", role}, {"part", part}}, DowntimeBuckets())
          .Observe(Seconds(*d));
    }
  }
  if (job.stop_copy_began != absl::InfinitePast()) {
    switchover_.Add({{"role", role}}, DowntimeBuckets())
        .Observe(absl::ToDoubleSeconds(now_() - job.stop_copy_began));
  }
  if (record.throughput_bytes_per_second() > 0) {
    throughput_.Add({{"role", role}}, ThroughputBuckets())
        .Observe(record.throughput_bytes_per_second());
  }
}

}  // namespace migd::metrics
