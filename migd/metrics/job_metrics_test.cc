#include "migd/metrics/job_metrics.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace migd::metrics {
namespace {

class JobMetricsTest : public testing::Test {
 protected:
  JobMetricsTest()
      : registry_(std::make_shared<prometheus::Registry>()),
        metrics_(*registry_, [this] { return now_; }) {}

  // The value of the sample line that starts with `series` ("name{labels}"
  // with labels in the order the text format prints them: sorted), or -1
  // when there is none.
  double Value(const std::string& series) const {
    const std::string text =
        prometheus::TextSerializer().Serialize(registry_->Collect());
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (absl::StartsWith(line, absl::StrCat(series, " "))) {
        return std::stod(std::string(line.substr(series.size() + 1)));
      }
    }
    return -1;
  }

  void Change(const v1::Migration& record) {
    metrics_.AfterChange(record, ++revision_, "change");
  }

  absl::Time now_ = absl::FromUnixSeconds(1000);
  uint64_t revision_ = 0;
  std::shared_ptr<prometheus::Registry> registry_;
  JobMetrics metrics_;
};

v1::Migration Record(const std::string& id, v1::Role role, v1::Phase phase) {
  v1::Migration m;
  m.set_job_id(id);
  m.set_role(role);
  m.set_phase(phase);
  return m;
}

TEST_F(JobMetricsTest, ASucceededSourceJobCountsItsPhasesBytesAndDowntime) {
  v1::Migration m = Record("j1", v1::ROLE_SOURCE, v1::PHASE_CONNECTING);
  Change(m);
  EXPECT_EQ(Value("migd_migrations_started_total{role=\"source\"}"), 1);
  EXPECT_EQ(
      Value("migd_migrations_in_flight{phase=\"connecting\",role=\"source\"}"),
      1);

  m.set_phase(v1::PHASE_PRE_COPY);
  m.set_precopy_bytes(1000);
  m.mutable_precopy()->set_dirty_rate_bytes_per_second(500);
  m.mutable_precopy()->set_iteration(3);
  Change(m);
  EXPECT_EQ(
      Value("migd_migrations_in_flight{phase=\"connecting\",role=\"source\"}"),
      0);
  EXPECT_EQ(
      Value("migd_migrations_in_flight{phase=\"pre_copy\",role=\"source\"}"),
      1);
  EXPECT_EQ(Value("migd_dirty_rate_bytes_per_second"), 500);
  EXPECT_EQ(Value("migd_transferred_bytes_total{phase=\"precopy\",role="
                  "\"source\"}"),
            1000);

  m.set_phase(v1::PHASE_STOP_COPY);
  m.set_stop_copy_bytes(400);
  Change(m);
  EXPECT_EQ(Value("migd_dirty_rate_bytes_per_second"), 0);
  now_ += absl::Milliseconds(250);

  m.set_phase(v1::PHASE_SUCCEEDED);
  m.set_stop_copy_bytes(600);
  m.mutable_downtime()->set_nanos(30'000'000);
  m.mutable_downtime_breakdown()->mutable_stop_copy_transfer()->set_nanos(
      20'000'000);
  m.mutable_downtime_breakdown()->mutable_load()->set_nanos(6'000'000);
  m.mutable_downtime_breakdown()->mutable_resume()->set_nanos(4'000'000);
  m.set_throughput_bytes_per_second(2e9);
  Change(m);
  EXPECT_EQ(Value("migd_migrations_total{outcome=\"succeeded\",reason=\"none\","
                  "role=\"source\"}"),
            1);
  EXPECT_EQ(
      Value("migd_migrations_in_flight{phase=\"stop_copy\",role=\"source\"}"),
      0);
  EXPECT_EQ(Value("migd_transferred_bytes_total{phase=\"stopcopy\",role="
                  "\"source\"}"),
            600);
  EXPECT_EQ(Value("migd_downtime_seconds_count{role=\"source\"}"), 1);
  EXPECT_DOUBLE_EQ(Value("migd_downtime_seconds_sum{role=\"source\"}"), 0.03);
  EXPECT_EQ(Value("migd_downtime_seconds_bucket{role=\"source\",le=\"0.025\"}"),
            0);
  EXPECT_EQ(Value("migd_downtime_seconds_bucket{role=\"source\",le=\"0.05\"}"),
            1);
  EXPECT_DOUBLE_EQ(Value("migd_downtime_part_seconds_sum{part=\"load\",role="
                         "\"source\"}"),
                   0.006);
  EXPECT_DOUBLE_EQ(Value("migd_switchover_seconds_sum{role=\"source\"}"), 0.25);
  EXPECT_EQ(Value("migd_precopy_iterations_sum{role=\"source\"}"), 3);
  EXPECT_EQ(Value("migd_transfer_throughput_bytes_per_second_sum{role="
                  "\"source\"}"),
            2e9);
}

TEST_F(JobMetricsTest, AFailedDestinationJobCountsItsReason) {
  v1::Migration m = Record("j2", v1::ROLE_DESTINATION, v1::PHASE_PREPARED);
  Change(m);
  m.set_phase(v1::PHASE_FAILED);
  m.mutable_failure()->set_reason(v1::ERROR_REASON_INCOMPATIBLE);
  Change(m);
  EXPECT_EQ(Value("migd_migrations_started_total{role=\"destination\"}"), 1);
  EXPECT_EQ(Value("migd_migrations_total{outcome=\"failed\",reason="
                  "\"incompatible\",role=\"destination\"}"),
            1);
  EXPECT_EQ(Value("migd_migrations_in_flight{phase=\"prepared\",role="
                  "\"destination\"}"),
            0);
  // A failed job observes no downtime.
  EXPECT_EQ(Value("migd_downtime_seconds_count{role=\"destination\"}"), -1);
}

TEST_F(JobMetricsTest, ACancelledJobIsNotAFailure) {
  v1::Migration m = Record("j3", v1::ROLE_SOURCE, v1::PHASE_CONNECTING);
  Change(m);
  m.set_phase(v1::PHASE_CANCELLED);
  m.mutable_failure()->set_reason(v1::ERROR_REASON_CANCELLED);
  Change(m);
  EXPECT_EQ(Value("migd_migrations_total{outcome=\"cancelled\",reason="
                  "\"cancelled\",role=\"source\"}"),
            1);
}

TEST_F(JobMetricsTest, AJobReadBackFromTheJournalIsNotStartedAgain) {
  // Recovery after a restart: the job is first seen rolling back, with
  // what it moved before the restart and recovery's notice.
  v1::Migration m = Record("j4", v1::ROLE_SOURCE, v1::PHASE_ROLLING_BACK);
  m.set_precopy_bytes(5000);
  m.add_notices("device emu1 has no DMA logging");
  Change(m);
  m.add_notices("recovery: devices emu0 back to RUNNING");
  m.set_phase(v1::PHASE_FAILED);
  m.mutable_failure()->set_reason(v1::ERROR_REASON_AGENT_RESTARTED);
  Change(m);
  EXPECT_EQ(Value("migd_migrations_started_total{role=\"source\"}"), -1);
  EXPECT_EQ(Value("migd_transferred_bytes_total{phase=\"precopy\",role="
                  "\"source\"}"),
            -1);
  EXPECT_EQ(Value("migd_job_notices_total{kind=\"recovery\",role=\"source\"}"),
            1);
  EXPECT_EQ(Value("migd_job_notices_total{kind=\"other\",role=\"source\"}"),
            -1);
  EXPECT_EQ(Value("migd_migrations_total{outcome=\"failed\",reason="
                  "\"agent_restarted\",role=\"source\"}"),
            1);
}

TEST_F(JobMetricsTest, BytesNeverGoBackAndEachByteCountsOnce) {
  v1::Migration m = Record("j5", v1::ROLE_SOURCE, v1::PHASE_CONNECTING);
  Change(m);
  m.set_phase(v1::PHASE_PRE_COPY);
  m.set_precopy_bytes(300);
  Change(m);
  Change(m);                 // the same record again (another device's change)
  m.set_precopy_bytes(200);  // an older record arriving late
  Change(m);
  m.set_precopy_bytes(700);
  Change(m);
  EXPECT_EQ(Value("migd_transferred_bytes_total{phase=\"precopy\",role="
                  "\"source\"}"),
            700);
}

TEST_F(JobMetricsTest, InDoubtIsInFlightUntilSettled) {
  v1::Migration m = Record("j6", v1::ROLE_SOURCE, v1::PHASE_CONNECTING);
  Change(m);
  m.set_phase(v1::PHASE_IN_DOUBT);
  Change(m);
  EXPECT_EQ(
      Value("migd_migrations_in_flight{phase=\"in_doubt\",role=\"source\"}"),
      1);
  m.set_phase(v1::PHASE_SUCCEEDED);
  Change(m);
  EXPECT_EQ(
      Value("migd_migrations_in_flight{phase=\"in_doubt\",role=\"source\"}"),
      0);
  // No STOP_COPY was seen in this process: no switchover is made up.
  EXPECT_EQ(Value("migd_switchover_seconds_count{role=\"source\"}"), -1);
}

TEST_F(JobMetricsTest, AJobInLineIsWaitingUntilItHasItsSlotOrEnds) {
  v1::Migration a = Record("j8", v1::ROLE_SOURCE, v1::PHASE_CONNECTING);
  a.mutable_queue()->set_waiting(true);
  a.mutable_queue()->set_ahead(1);
  Change(a);
  v1::Migration b = Record("j9", v1::ROLE_SOURCE, v1::PHASE_CONNECTING);
  b.mutable_queue()->set_waiting(true);
  b.mutable_queue()->set_ahead(2);
  Change(b);
  EXPECT_EQ(Value("migd_migrations_waiting"), 2);
  b.mutable_queue()->set_ahead(1);  // one ahead of it got its slot
  Change(b);
  EXPECT_EQ(Value("migd_migrations_waiting"), 2);
  EXPECT_EQ(Value("migd_migration_wait_seconds_count"), 0);

  // j8 gets its slot after 3 s; j9 is cancelled in line after 12 s.
  a.mutable_queue()->set_waiting(false);
  a.mutable_queue()->mutable_waited()->set_seconds(3);
  Change(a);
  EXPECT_EQ(Value("migd_migrations_waiting"), 1);
  b.set_phase(v1::PHASE_CANCELLED);
  b.mutable_queue()->mutable_waited()->set_seconds(12);
  Change(b);
  EXPECT_EQ(Value("migd_migrations_waiting"), 0);
  EXPECT_EQ(Value("migd_migration_wait_seconds_count"), 2);
  EXPECT_EQ(Value("migd_migration_wait_seconds_sum"), 15);
  EXPECT_EQ(Value("migd_migration_wait_seconds_bucket{le=\"5\"}"), 1);
}

TEST_F(JobMetricsTest, ChangesAfterTheEndDoNotCountTheJobAgain) {
  v1::Migration m = Record("j7", v1::ROLE_DESTINATION, v1::PHASE_PREPARED);
  Change(m);
  m.set_phase(v1::PHASE_SUCCEEDED);
  Change(m);
  m.set_stop_copy_bytes(100);  // late progress of an ended job
  Change(m);
  EXPECT_EQ(Value("migd_migrations_total{outcome=\"succeeded\",reason="
                  "\"none\",role=\"destination\"}"),
            1);
  EXPECT_EQ(Value("migd_transferred_bytes_total{phase=\"stopcopy\",role="
                  "\"destination\"}"),
            -1);
}

TEST(Labels, PhasesAndReasonsInPrometheusStyle) {
  EXPECT_EQ(PhaseLabel(v1::PHASE_STOP_COPY), "stop_copy");
  EXPECT_EQ(PhaseLabel(v1::PHASE_IN_DOUBT), "in_doubt");
  EXPECT_EQ(ReasonLabel(v1::ERROR_REASON_PEER_UNAVAILABLE), "peer_unavailable");
  EXPECT_EQ(ReasonLabel(v1::ERROR_REASON_UNSPECIFIED), "none");
}

}  // namespace
}  // namespace migd::metrics
