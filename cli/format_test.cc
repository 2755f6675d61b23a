#include "cli/format.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "proto/migd/v1/host.pb.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::cli {
namespace {

TEST(HumanBytes, BelowOneKibIsExactBytes) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1), "1 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
}

TEST(HumanBytes, BinaryUnitsWithOneDecimal) {
  EXPECT_EQ(HumanBytes(1024), "1.0 KiB");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(32ull << 20), "32.0 MiB");
  EXPECT_EQ(HumanBytes(96ull << 20), "96.0 MiB");
  EXPECT_EQ(HumanBytes((3ull << 30) / 2), "1.5 GiB");
  EXPECT_EQ(HumanBytes(5ull << 40), "5.0 TiB");
}

TEST(HumanBytes, RoundsUpIntoTheNextUnitInsteadOf1024) {
  EXPECT_EQ(HumanBytes((1ull << 20) - 1), "1.0 MiB");
  EXPECT_EQ(HumanBytes((1ull << 30) - 1), "1.0 GiB");
}

TEST(HumanBytes, LargestValueFits) {
  EXPECT_EQ(HumanBytes(std::numeric_limits<uint64_t>::max()), "16.0 EiB");
}

TEST(HumanBytesPair, SharesTheUnitWhenBothHaveIt) {
  EXPECT_EQ(HumanBytesPair(80ull << 20, 96ull << 20), "80.0/96.0 MiB");
  EXPECT_EQ(HumanBytesPair(20, 100), "20/100 B");
  EXPECT_EQ(HumanBytesPair(512 << 10, 96ull << 20), "512.0 KiB/96.0 MiB");
  EXPECT_EQ(HumanBytesPair(0, 96ull << 20), "0 B/96.0 MiB");
  EXPECT_EQ(HumanBytesPair(5 << 10, 0), "5.0 KiB");
}

TEST(HumanRate, AppendsPerSecond) {
  EXPECT_EQ(HumanRate(0), "0 B/s");
  EXPECT_EQ(HumanRate(80.0 * 1024 * 1024), "80.0 MiB/s");
}

TEST(HumanRate, UnknownRatesAreADash) {
  EXPECT_EQ(HumanRate(-1), "-");
  EXPECT_EQ(HumanRate(std::nan("")), "-");
  EXPECT_EQ(HumanRate(std::numeric_limits<double>::infinity()), "-");
}

TEST(HumanDuration, PicksAUnitPerMagnitude) {
  EXPECT_EQ(HumanDuration(absl::ZeroDuration()), "0s");
  EXPECT_EQ(HumanDuration(absl::Nanoseconds(110)), "<1us");
  EXPECT_EQ(HumanDuration(absl::Microseconds(850)), "850us");
  EXPECT_EQ(HumanDuration(absl::Microseconds(2500)), "2.5ms");
  EXPECT_EQ(HumanDuration(absl::Milliseconds(120)), "120ms");
  EXPECT_EQ(HumanDuration(absl::Milliseconds(1250)), "1.25s");
  EXPECT_EQ(HumanDuration(absl::Seconds(42)), "42.0s");
  EXPECT_EQ(HumanDuration(absl::Seconds(125)), "2m05s");
  EXPECT_EQ(HumanDuration(absl::Minutes(62)), "1h02m");
}

TEST(HumanDuration, NegativeAndInfinite) {
  EXPECT_EQ(HumanDuration(-absl::Milliseconds(120)), "-120ms");
  EXPECT_EQ(HumanDuration(absl::InfiniteDuration()), "inf");
}

TEST(FormatPercent, FloorsAndClamps) {
  EXPECT_EQ(FormatPercent(0, 100), "0%");
  EXPECT_EQ(FormatPercent(999, 1000), "99%");
  EXPECT_EQ(FormatPercent(1000, 1000), "100%");
  EXPECT_EQ(FormatPercent(2000, 1000), "100%");
  EXPECT_EQ(FormatPercent(5, 0), "--%");
}

TEST(EnumNames, DropTheTypePrefix) {
  EXPECT_EQ(DeviceStateName(migd::v1::DEVICE_STATE_RUNNING_P2P), "RUNNING_P2P");
  EXPECT_EQ(PhaseName(migd::v1::PHASE_STOP_COPY), "STOP_COPY");
  EXPECT_EQ(RoleName(migd::v1::ROLE_DESTINATION), "DESTINATION");
  EXPECT_EQ(ReasonName(migd::v1::ERROR_REASON_BAD_TOKEN), "BAD_TOKEN");
}

TEST(EnumNames, UnknownValuesShowTheirNumber) {
  EXPECT_EQ(PhaseName(static_cast<migd::v1::Phase>(99)), "99");
}

TEST(MigrationFlagsString, NamesEachBit) {
  EXPECT_EQ(MigrationFlagsString(0), "-");
  EXPECT_EQ(MigrationFlagsString(1), "STOP_COPY");
  EXPECT_EQ(MigrationFlagsString(7), "STOP_COPY|P2P|PRE_COPY");
  EXPECT_EQ(MigrationFlagsString(5 | 0x10), "STOP_COPY|PRE_COPY|0x10");
}

TEST(FormatTable, AlignsColumnsWithoutTrailingSpaces) {
  EXPECT_EQ(FormatTable({{"A", "BB", "C"}, {"long", "x", ""}}),
            "A     BB  C\n"
            "long  x\n");
}

TEST(FormatDevicesTable, OneRowPerDeviceWithDashesForEmptyFields) {
  migd::v1::ListDevicesResponse resp;
  auto* d = resp.add_devices();
  d->set_name("emu0");
  d->set_kind("emulated");
  d->set_migration_flags(7);
  d->set_state(migd::v1::DEVICE_STATE_RUNNING);
  d->set_state_size_bytes(32ull << 20);
  d->set_state_digest("crc32c:0badf00d");
  auto* e = resp.add_devices();
  e->set_name("0000:3b:00.1");
  e->set_kind("vfio");
  e->set_migration_flags(1);
  e->set_state(migd::v1::DEVICE_STATE_RESUMING);
  e->set_job_id("job-1");
  EXPECT_EQ(FormatDevicesTable(resp),
            "NAME          KIND      STATE     FLAGS                   JOB    "
            "SIZE      DIGEST\n"
            "emu0          emulated  RUNNING   STOP_COPY|P2P|PRE_COPY  -      "
            "32.0 MiB  crc32c:0badf00d\n"
            "0000:3b:00.1  vfio      RESUMING  STOP_COPY               job-1  "
            "-         -\n");
}

migd::v1::Migration SucceededSourceJob() {
  migd::v1::Migration m;
  m.set_job_id("demo-1");
  m.set_role(migd::v1::ROLE_SOURCE);
  m.set_phase(migd::v1::PHASE_SUCCEEDED);
  m.set_peer("127.0.0.1:7071");
  m.set_bytes_done(96ull << 20);
  m.set_bytes_total(96ull << 20);
  m.mutable_created()->set_seconds(1700000000);
  m.mutable_finished()->set_seconds(1700000002);
  m.mutable_finished()->set_nanos(500000000);
  m.mutable_downtime()->set_nanos(150000000);
  m.mutable_transfer_time()->set_seconds(2);
  m.set_throughput_bytes_per_second(48.0 * 1024 * 1024);
  for (int i = 0; i < 2; ++i) {
    auto* d = m.add_devices();
    d->set_device(absl::StrCat("emu", i));
    d->set_peer_device(absl::StrCat("dst", i));
    d->set_state(migd::v1::DEVICE_STATE_STOP);
    d->set_bytes_done(48ull << 20);
    d->set_bytes_total(48ull << 20);
  }
  return m;
}

TEST(FormatSummary, ShowsBytesTimeThroughputDowntimeAndDevices) {
  EXPECT_EQ(FormatSummary(SucceededSourceJob()),
            "Job demo-1 SUCCEEDED after 2.50s\n"
            "  transferred  96.0 MiB in 2.00s\n"
            "  throughput   48.0 MiB/s\n"
            "  downtime     150ms\n"
            "  devices      emu0 -> dst0  STOP  48.0 MiB\n"
            "               emu1 -> dst1  STOP  48.0 MiB\n");
}

TEST(FormatSummary, FailedJobShowsReasonAndPartialBytes) {
  migd::v1::Migration m;
  m.set_job_id("j");
  m.set_role(migd::v1::ROLE_DESTINATION);
  m.set_phase(migd::v1::PHASE_FAILED);
  m.set_bytes_done(1024);
  m.set_bytes_total(4096);
  m.mutable_failure()->set_reason(migd::v1::ERROR_REASON_STATE_REJECTED);
  m.mutable_failure()->set_message("dst0: RESUMING -> STOP failed");
  auto* d = m.add_devices();
  d->set_device("dst0");
  d->set_peer_device("emu0");
  d->set_state(migd::v1::DEVICE_STATE_RUNNING);
  d->set_bytes_done(1024);
  EXPECT_EQ(FormatSummary(m),
            "Job j FAILED\n"
            "  transferred  1.0 KiB of 4.0 KiB\n"
            "  throughput   -\n"
            "  downtime     -\n"
            "  failure      STATE_REJECTED: dst0: RESUMING -> STOP failed\n"
            "  devices      emu0 -> dst0  RUNNING  1.0 KiB\n");
}

TEST(FormatSummary, ComputesThroughputFromTransferTimeWhenNotReported) {
  migd::v1::Migration m = SucceededSourceJob();
  m.clear_throughput_bytes_per_second();
  m.mutable_transfer_time()->set_seconds(4);
  EXPECT_NE(FormatSummary(m).find("throughput   24.0 MiB/s\n"),
            std::string::npos);
}

google::protobuf::Duration Ms(int ms) {
  google::protobuf::Duration d;
  d.set_seconds(ms / 1000);
  d.set_nanos((ms % 1000) * 1000000);
  return d;
}

// A source job that pre-copied in 3 iterations and converged, with a
// downtime breakdown and a notice.
migd::v1::Migration PrecopiedSourceJob() {
  migd::v1::Migration m = SucceededSourceJob();
  m.set_bytes_done(100ull << 20);
  m.set_bytes_total(100ull << 20);
  m.set_precopy_bytes(94ull << 20);
  m.set_stop_copy_bytes(6ull << 20);
  m.mutable_precopy()->set_iteration(3);
  m.mutable_precopy()->set_remaining_bytes(5ull << 20);
  *m.mutable_precopy()->mutable_expected_downtime() = Ms(12);
  m.mutable_precopy()->set_dirty_rate_bytes_per_second(4.0 * (1 << 20));
  m.mutable_precopy()->set_bandwidth_bytes_per_second(400.0 * (1 << 20));
  m.mutable_precopy()->set_converged(true);
  *m.mutable_downtime() = Ms(41);
  migd::v1::DowntimeBreakdown* b = m.mutable_downtime_breakdown();
  *b->mutable_total() = Ms(41);
  *b->mutable_stop_copy_transfer() = Ms(12);
  *b->mutable_load() = Ms(28);
  *b->mutable_resume() = Ms(1);
  m.add_notices("device emu1 has no DMA logging: every page is reported dirty");
  for (int i = 0; i < 2; ++i) {
    auto* d = m.mutable_devices(i);
    d->set_bytes_done(50ull << 20);
    d->set_bytes_total(50ull << 20);
    d->set_precopy_bytes(47ull << 20);
    d->set_stop_copy_bytes(3ull << 20);
    d->set_initial_data_acked(true);
    *d->mutable_downtime()->mutable_stop_copy_transfer() = Ms(6);
    *d->mutable_downtime()->mutable_load() = Ms(14);
  }
  return m;
}

TEST(FormatDowntime, TotalWithTheBreakdownsParts) {
  migd::v1::Migration m = PrecopiedSourceJob();
  EXPECT_EQ(FormatDowntime(m),
            "41ms (stop-copy 12ms, load 28ms, resume 1.0ms)");
  m.mutable_downtime_breakdown()->clear_total();
  m.mutable_downtime_breakdown()->clear_resume();
  EXPECT_EQ(FormatDowntime(m), "41ms (stop-copy 12ms, load 28ms)");
}

TEST(FormatDowntime, TotalAloneOrADash) {
  migd::v1::Migration m = SucceededSourceJob();
  EXPECT_EQ(FormatDowntime(m), "150ms");
  m.clear_downtime();
  EXPECT_EQ(FormatDowntime(m), "-");
}

TEST(FormatDowntimeBreakdown, PartsAloneWithoutATotal) {
  migd::v1::DowntimeBreakdown b;
  EXPECT_EQ(FormatDowntimeBreakdown(b), "");
  *b.mutable_load() = Ms(14);
  EXPECT_EQ(FormatDowntimeBreakdown(b), "load 14ms");
  google::protobuf::Duration total = Ms(20);
  EXPECT_EQ(FormatDowntimeBreakdown(b, &total), "20ms (load 14ms)");
}

TEST(FormatPrecopySummary, IterationsConvergenceAndTheByteSplit) {
  EXPECT_EQ(FormatPrecopySummary(PrecopiedSourceJob()),
            "3 iterations, converged; 94.0 MiB pre-copy, 6.0 MiB stop-copy");
  EXPECT_EQ(FormatPrecopySummary(SucceededSourceJob()), "");
}

TEST(FormatPrecopySummary, SaysWhenItDidNotConverge) {
  migd::v1::Migration m = PrecopiedSourceJob();
  m.mutable_precopy()->set_converged(false);
  m.mutable_precopy()->set_iteration(1);
  EXPECT_EQ(FormatPrecopySummary(m),
            "1 iteration, did not converge; switched over anyway; 94.0 MiB "
            "pre-copy, 6.0 MiB stop-copy");
  m.set_phase(migd::v1::PHASE_FAILED);
  m.mutable_failure()->set_reason(migd::v1::ERROR_REASON_NOT_CONVERGED);
  EXPECT_EQ(FormatPrecopySummary(m).substr(0, 30),
            "1 iteration, did not converge;");
  m.mutable_failure()->set_reason(migd::v1::ERROR_REASON_CANCELLED);
  EXPECT_EQ(FormatPrecopySummary(m).substr(0, 38),
            "1 iteration, stopped before converging");
}

TEST(FormatPrecopyOutcome, IterationsAndConvergence) {
  migd::v1::Migration m = PrecopiedSourceJob();
  EXPECT_EQ(FormatPrecopyOutcome(m), "3 iterations, converged");
  m.set_phase(migd::v1::PHASE_STOP_COPY);
  m.mutable_precopy()->set_converged(false);
  EXPECT_EQ(FormatPrecopyOutcome(m),
            "3 iterations, did not converge; switching over anyway");
  EXPECT_EQ(FormatPrecopyOutcome(SucceededSourceJob()), "");
}

TEST(FormatPrecopySummary, DestinationHasOnlyTheByteSplit) {
  migd::v1::Migration m;
  m.set_role(migd::v1::ROLE_DESTINATION);
  m.set_precopy_bytes(94ull << 20);
  m.set_stop_copy_bytes(6ull << 20);
  EXPECT_EQ(FormatPrecopySummary(m), "94.0 MiB pre-copy, 6.0 MiB stop-copy");
}

TEST(FormatPrecopyEstimate, LeavesOutWhatIsUnknown) {
  migd::v1::PrecopyProgress p = PrecopiedSourceJob().precopy();
  EXPECT_EQ(FormatPrecopyEstimate(p),
            "5.0 MiB left, expected downtime 12ms, dirty 4.0 MiB/s, "
            "bandwidth 400.0 MiB/s");
  p.clear_expected_downtime();
  p.set_dirty_rate_bytes_per_second(0);
  p.set_bandwidth_bytes_per_second(0);
  EXPECT_EQ(FormatPrecopyEstimate(p), "5.0 MiB left");
}

TEST(FormatSummary, ShowsPreCopyDowntimeBreakdownAndNotices) {
  EXPECT_EQ(
      FormatSummary(PrecopiedSourceJob()),
      "Job demo-1 SUCCEEDED after 2.50s\n"
      "  transferred  100.0 MiB in 2.00s\n"
      "  throughput   48.0 MiB/s\n"
      "  pre-copy     3 iterations, converged; 94.0 MiB pre-copy, 6.0 MiB "
      "stop-copy\n"
      "  downtime     41ms (stop-copy 12ms, load 28ms, resume 1.0ms)\n"
      "  notices      device emu1 has no DMA logging: every page is reported "
      "dirty\n"
      "  devices      emu0 -> dst0  STOP  50.0 MiB  (47.0 MiB pre-copy, 3.0 "
      "MiB stop-copy)\n"
      "               emu1 -> dst1  STOP  50.0 MiB  (47.0 MiB pre-copy, 3.0 "
      "MiB stop-copy)\n");
}

TEST(FormatSummary, EveryNoticeOnItsOwnLine) {
  migd::v1::Migration m = SucceededSourceJob();
  m.add_notices("first");
  m.add_notices("second");
  EXPECT_NE(FormatSummary(m).find("  notices      first\n"
                                  "               second\n"),
            std::string::npos)
      << FormatSummary(m);
}

TEST(FormatMigrationsTable, ShowsPairsFromTheSourceSide) {
  migd::v1::ListMigrationsResponse resp;
  *resp.add_migrations() = SucceededSourceJob();
  migd::v1::Migration* dst = resp.add_migrations();
  dst->set_job_id("demo-0");
  dst->set_role(migd::v1::ROLE_DESTINATION);
  dst->set_phase(migd::v1::PHASE_PREPARED);
  dst->set_peer("src");
  auto* d = dst->add_devices();
  d->set_device("dst9");
  d->set_peer_device("emu9");
  EXPECT_EQ(FormatMigrationsTable(resp),
            "JOB     ROLE         PHASE      PEER            PROGRESS          "
            "          DEVICES\n"
            "demo-1  SOURCE       SUCCEEDED  127.0.0.1:7071  96.0 MiB / 96.0 "
            "MiB (100%)  emu0 -> dst0, emu1 -> dst1\n"
            "demo-0  DESTINATION  PREPARED   src             0 B               "
            "          emu9 -> dst9\n");
}

TEST(FormatMigrationDetails, ListsFieldsAndDevices) {
  std::string text = FormatMigrationDetails(SucceededSourceJob());
  EXPECT_NE(text.find("job       demo-1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("phase     SUCCEEDED\n"), std::string::npos) << text;
  EXPECT_NE(text.find("created   2023-11-14T22:13:20.000Z\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("downtime  150ms\n"), std::string::npos) << text;
  EXPECT_NE(text.find("transfer  2.00s at 48.0 MiB/s\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("devices\n  emu0 -> dst0  STOP  48.0 MiB / 48.0 MiB "
                      "(100%)\n"),
            std::string::npos)
      << text;
}

TEST(FormatMigrationDetails, ShowsPreCopyDowntimeNoticesAndDeviceSplits) {
  EXPECT_EQ(
      FormatMigrationDetails(PrecopiedSourceJob()),
      "job       demo-1\n"
      "role      SOURCE\n"
      "phase     SUCCEEDED\n"
      "peer      127.0.0.1:7071\n"
      "progress  100.0 MiB / 100.0 MiB (100%)\n"
      "created   2023-11-14T22:13:20.000Z\n"
      "finished  2023-11-14T22:13:22.500Z\n"
      "transfer  2.00s at 48.0 MiB/s\n"
      "pre-copy  3 iterations, converged\n"
      "estimate  5.0 MiB left, expected downtime 12ms, dirty 4.0 MiB/s, "
      "bandwidth 400.0 MiB/s\n"
      "moved     94.0 MiB pre-copy, 6.0 MiB stop-copy\n"
      "downtime  41ms (stop-copy 12ms, load 28ms, resume 1.0ms)\n"
      "notices   device emu1 has no DMA logging: every page is reported dirty\n"
      "devices\n"
      "  emu0 -> dst0  STOP  50.0 MiB / 50.0 MiB (100%)  47.0 MiB pre-copy, "
      "3.0 MiB stop-copy, acked  downtime stop-copy 6.0ms, load 14ms\n"
      "  emu1 -> dst1  STOP  50.0 MiB / 50.0 MiB (100%)  47.0 MiB pre-copy, "
      "3.0 MiB stop-copy, acked  downtime stop-copy 6.0ms, load 14ms\n");
}

TEST(FormatMigrationDetails, ASourceInLineSaysHowManyAreAheadAndForHowLong) {
  migd::v1::Migration m;
  m.set_job_id("j8");
  m.set_role(migd::v1::ROLE_SOURCE);
  m.set_phase(migd::v1::PHASE_CONNECTING);
  m.mutable_queue()->set_waiting(true);
  m.mutable_queue()->set_ahead(2);
  m.mutable_queue()->mutable_waited()->set_seconds(3);
  std::string text = FormatMigrationDetails(m);
  EXPECT_TRUE(absl::StrContains(
      text,
      "queue     waiting for a transfer slot, 2 jobs ahead (3.00s so far)\n"))
      << text;
  m.mutable_queue()->set_ahead(0);
  text = FormatMigrationDetails(m);
  EXPECT_TRUE(absl::StrContains(
      text,
      "queue     waiting for a transfer slot, next in line (3.00s so far)\n"))
      << text;
  m.mutable_queue()->set_waiting(false);
  m.mutable_queue()->mutable_waited()->set_seconds(5);
  text = FormatMigrationDetails(m);
  EXPECT_TRUE(
      absl::StrContains(text, "queue     waited 5.00s for a transfer slot\n"))
      << text;
  m.clear_queue();
  text = FormatMigrationDetails(m);
  EXPECT_FALSE(absl::StrContains(text, "queue")) << text;
}

TEST(FormatMigrationDetails, ASourceInDoubtSaysWhyWhatItAskedAndWhatToDo) {
  migd::v1::Migration m;
  m.set_job_id("j7");
  m.set_role(migd::v1::ROLE_SOURCE);
  m.set_phase(migd::v1::PHASE_IN_DOUBT);
  m.set_peer("10.0.0.6:7070");
  m.mutable_in_doubt()->set_reason(
      "COMMIT went out, the destination's completion did not come: gone");
  m.mutable_in_doubt()->set_attempts(1);
  m.mutable_in_doubt()->set_last_answer("UNKNOWN: job j7 is IN_DOUBT here");
  EXPECT_EQ(
      FormatMigrationDetails(m),
      "job       j7\n"
      "role      SOURCE\n"
      "phase     IN_DOUBT\n"
      "peer      10.0.0.6:7070\n"
      "in doubt  COMMIT went out; whether the destination runs the devices "
      "is not known\n"
      "          COMMIT went out, the destination's completion did not come: "
      "gone\n"
      "asked     the destination 1 time; last answer: UNKNOWN: job j7 is "
      "IN_DOUBT here\n"
      "to do     nothing while the destination can still answer: the devices "
      "stay\n"
      "          stopped until it does. If it never can (gone for good), "
      "decide:\n"
      "            migctl resolve j7 --outcome=source       resume the devices "
      "here\n"
      "            migctl resolve j7 --outcome=destination  they run there; "
      "release them\n"
      "progress  0 B\n");
}

TEST(FormatMigrationDetails, ADestinationInDoubtWaitsForAnOperator) {
  migd::v1::Migration m;
  m.set_job_id("j7");
  m.set_role(migd::v1::ROLE_DESTINATION);
  m.set_phase(migd::v1::PHASE_IN_DOUBT);
  std::string text = FormatMigrationDetails(m);
  EXPECT_NE(text.find("in doubt  whether the source still runs the devices "
                      "is not known\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("asked"), std::string::npos) << text;
  EXPECT_NE(text.find("migctl resolve j7 --outcome=destination  resume the "
                      "devices here\n"),
            std::string::npos)
      << text;
}

TEST(FormatMigrationDetails, AResolvedJobSaysHow) {
  migd::v1::Migration m;
  m.set_job_id("j7");
  m.set_role(migd::v1::ROLE_SOURCE);
  m.set_phase(migd::v1::PHASE_SUCCEEDED);
  m.mutable_in_doubt()->set_resolution("the destination answered RUNNING_HERE");
  std::string text = FormatMigrationDetails(m);
  EXPECT_NE(text.find("resolved  the destination answered RUNNING_HERE\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("to do"), std::string::npos) << text;
}

TEST(FormatMigrationDetails, LivePreCopySaysItHasNotConvergedYet) {
  migd::v1::Migration m = PrecopiedSourceJob();
  m.set_phase(migd::v1::PHASE_PRE_COPY);
  m.mutable_precopy()->set_converged(false);
  std::string text = FormatMigrationDetails(m);
  EXPECT_NE(text.find("pre-copy  3 iterations, not converged yet\n"),
            std::string::npos)
      << text;
}

TEST(ToJson, CompactIsOneLineWithProtoFieldNamesAndEnumNames) {
  migd::v1::Migration m;
  m.set_job_id("j1");
  m.set_phase(migd::v1::PHASE_STOP_COPY);
  m.set_bytes_done(5);
  m.mutable_downtime()->set_nanos(150000000);
  std::string json = ToJson(m, /*compact=*/true);
  EXPECT_EQ(json.find('\n'), std::string::npos) << json;
  EXPECT_NE(json.find("\"job_id\":\"j1\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"phase\":\"PHASE_STOP_COPY\""), std::string::npos)
      << json;
  // proto3 JSON writes 64-bit integers as strings.
  EXPECT_NE(json.find("\"bytes_done\":\"5\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"downtime\":\"0.150s\""), std::string::npos) << json;
  // Default values are present, so a script can rely on every key.
  EXPECT_NE(json.find("\"bytes_total\":\"0\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"role\":\"ROLE_UNSPECIFIED\""), std::string::npos)
      << json;
}

TEST(ToJson, IndentedFormHasNoTrailingNewline) {
  migd::v1::ListDevicesResponse resp;
  resp.add_devices()->set_name("emu0");
  std::string json = ToJson(resp, /*compact=*/false);
  EXPECT_NE(json.find("\n"), std::string::npos);
  EXPECT_NE(json.find("\"name\": \"emu0\""), std::string::npos) << json;
  EXPECT_NE(json.back(), '\n');
}

migd::v1::DirtyPages Pages(uint64_t iova, uint64_t length, uint64_t page,
                           const std::string& bitmap) {
  migd::v1::DirtyPages p;
  p.set_device("edu0");
  p.set_iova(iova);
  p.set_length(length);
  p.set_page_size(page);
  p.set_bitmap(bitmap);
  return p;
}

TEST(DirtyPageAddresses, SetBitsLeastSignificantFirstAcrossWords) {
  // Words are 64-bit little-endian: byte 8 starts the second word.
  std::string bits(16, '\0');
  bits[0] = 0x05;                      // pages 0 and 2
  bits[1] = static_cast<char>(0x80);   // page 15
  bits[8] = 0x01;                      // page 64
  bits[15] = static_cast<char>(0x80);  // page 127
  EXPECT_EQ(DirtyPageAddresses(Pages(0x100000, 128 * 4096, 4096, bits)),
            (std::vector<uint64_t>{0x100000, 0x102000, 0x10f000, 0x140000,
                                   0x17f000}));
}

TEST(DirtyPageAddresses, UsesThePageSizeAndIgnoresBitsPastTheRange) {
  std::string bits(8, '\0');
  bits[0] = static_cast<char>(0xff);  // only 3 pages in the range
  EXPECT_EQ(DirtyPageAddresses(Pages(0, 3 << 21, 2 << 20, bits)),
            (std::vector<uint64_t>{0, 2 << 20, 4 << 20}));
}

TEST(DirtyPageAddresses, AllDirtyIsEveryPageOfTheRange) {
  migd::v1::DirtyPages p = Pages(0x4000, 3 * 4096, 4096, "");
  p.set_all_dirty(true);
  EXPECT_EQ(DirtyPageAddresses(p),
            (std::vector<uint64_t>{0x4000, 0x5000, 0x6000}));
}

TEST(DirtyPageAddresses, NothingForAnEmptyOrShortBitmap) {
  EXPECT_TRUE(DirtyPageAddresses(Pages(0, 64 * 4096, 4096, "")).empty());
  EXPECT_TRUE(DirtyPageAddresses(Pages(0, 64 * 4096, 0, std::string(8, '\xff')))
                  .empty());
}

TEST(FormatDirtyPages, KeyValueLineWithHexPages) {
  migd::v1::DirtyPages p = Pages(0x200000, 0x100000, 4096, "\x09");
  p.set_iteration(3);
  EXPECT_EQ(FormatDirtyPages(p),
            "device=edu0 iteration=3 final=false all_dirty=false "
            "range=0x200000+0x100000 page_size=4096 dirty=2 "
            "pages=0x200000,0x203000");
  p.set_bitmap(std::string(32, '\0'));
  p.set_final(true);
  EXPECT_EQ(FormatDirtyPages(p),
            "device=edu0 iteration=3 final=true all_dirty=false "
            "range=0x200000+0x100000 page_size=4096 dirty=0 pages=-");
  p.set_all_dirty(true);
  EXPECT_EQ(FormatDirtyPages(p),
            "device=edu0 iteration=3 final=true all_dirty=true "
            "range=0x200000+0x100000 page_size=4096 dirty=256 pages=all");
}

TEST(IsTerminal, OnlyEndedPhases) {
  EXPECT_TRUE(IsTerminal(migd::v1::PHASE_SUCCEEDED));
  EXPECT_TRUE(IsTerminal(migd::v1::PHASE_FAILED));
  EXPECT_TRUE(IsTerminal(migd::v1::PHASE_CANCELLED));
  EXPECT_FALSE(IsTerminal(migd::v1::PHASE_ROLLING_BACK));
  EXPECT_FALSE(IsTerminal(migd::v1::PHASE_STOP_COPY));
}

// What `identity` learned from agent-a over TLS, with fixed times.
IdentityReport TlsReport() {
  IdentityReport r;
  r.name = "src";
  r.agent = "src (10.0.0.5:7070)";
  r.address = "10.0.0.5:7070";
  r.tls = true;
  r.expected_identity = "spiffe://x/agent/a";
  r.server = {"/CN=agent-a", "1000", "spiffe://x/agent/a",
              absl::FromUnixSeconds(1767225600),   // 2026-01-01
              absl::FromUnixSeconds(1798761600)};  // 2027-01-01
  r.client_certificate = "/etc/migd/operator.pem";
  r.client = {"/CN=operator", "1002", "spiffe://x/operator",
              absl::FromUnixSeconds(1767225600),
              absl::FromUnixSeconds(1798761600)};
  return r;
}

TEST(FormatIdentity, TheAgentsCertificateThenTheClients) {
  EXPECT_EQ(FormatIdentity(TlsReport()),
            "agent             src (10.0.0.5:7070)\n"
            "connection        mutual TLS; the agent's certificate was checked "
            "to carry spiffe://x/agent/a\n"
            "identity          spiffe://x/agent/a\n"
            "subject           /CN=agent-a\n"
            "serial            1000\n"
            "not before        2026-01-01T00:00:00Z\n"
            "not after         2027-01-01T00:00:00Z\n"
            "client identity   spiffe://x/operator\n"
            "client subject    /CN=operator\n"
            "client serial     1002\n"
            "client not after  2027-01-01T00:00:00Z\n"
            "client cert       /etc/migd/operator.pem\n");
}

TEST(FormatIdentity, ACertificateWithoutIdentityShowsADash) {
  IdentityReport r = TlsReport();
  r.expected_identity = "";
  r.server.identity = "";
  std::string text = FormatIdentity(r);
  EXPECT_NE(text.find("connection        mutual TLS; the agent's host was "
                      "checked against its certificate\n"
                      "identity          -\n"),
            std::string::npos)
      << text;
}

TEST(FormatIdentity, PlaintextHasNoIdentity) {
  IdentityReport r;
  r.name = r.agent = r.address = "127.0.0.1:7070";
  r.insecure_from = "--insecure";
  EXPECT_EQ(FormatIdentity(r),
            "agent       127.0.0.1:7070\n"
            "connection  plaintext (--insecure): nothing encrypted, no "
            "certificate, no identity\n");
}

TEST(IdentityJson, OneIndentedObject) {
  EXPECT_EQ(IdentityJson(TlsReport()),
            "{\n"
            "  \"agent\": \"src\",\n"
            "  \"address\": \"10.0.0.5:7070\",\n"
            "  \"tls\": true,\n"
            "  \"expected_identity\": \"spiffe://x/agent/a\",\n"
            "  \"identity\": \"spiffe://x/agent/a\",\n"
            "  \"subject\": \"/CN=agent-a\",\n"
            "  \"serial\": \"1000\",\n"
            "  \"not_before\": \"2026-01-01T00:00:00Z\",\n"
            "  \"not_after\": \"2027-01-01T00:00:00Z\",\n"
            "  \"client\": {\n"
            "    \"certificate\": \"/etc/migd/operator.pem\",\n"
            "    \"identity\": \"spiffe://x/operator\",\n"
            "    \"subject\": \"/CN=operator\",\n"
            "    \"serial\": \"1002\",\n"
            "    \"not_before\": \"2026-01-01T00:00:00Z\",\n"
            "    \"not_after\": \"2027-01-01T00:00:00Z\"\n"
            "  }\n"
            "}");
}

TEST(IdentityJson, QuotesWhatNeedsIt) {
  IdentityReport r = TlsReport();
  r.server.subject = "/CN=a \"b\"\\c\n";
  EXPECT_NE(
      IdentityJson(r).find("\"subject\": \"/CN=a \\\"b\\\"\\\\c\\u000a\""),
      std::string::npos)
      << IdentityJson(r);
}

TEST(FormatMigrationDetails, ThePeersIdentityWhenKnown) {
  migd::v1::Migration m;
  m.set_job_id("j1");
  m.set_peer("10.0.0.6:7070");
  EXPECT_EQ(FormatMigrationDetails(m).find("peer id"), std::string::npos);
  m.set_peer_identity("spiffe://x/agent/b");
  EXPECT_NE(FormatMigrationDetails(m).find("peer      10.0.0.6:7070\n"
                                           "peer id   spiffe://x/agent/b\n"
                                           "progress  "),
            std::string::npos)
      << FormatMigrationDetails(m);
}

TEST(BlockerKindWords, EveryKindInWords) {
  using B = migd::v1::MigrationBlocker;
  EXPECT_EQ(BlockerKindWords(B::KIND_NO_MIGRATION_SUPPORT),
            "no migration support");
  EXPECT_EQ(BlockerKindWords(B::KIND_INCOMPATIBLE), "incompatible");
  EXPECT_EQ(BlockerKindWords(B::KIND_DEVICE_BUSY), "device busy");
  EXPECT_EQ(BlockerKindWords(B::KIND_DEVICE_NOT_FOUND), "no such device");
  EXPECT_EQ(BlockerKindWords(B::KIND_P2P_MIX), "mixed P2P support");
  EXPECT_EQ(BlockerKindWords(B::KIND_DESTINATION_UNREACHABLE),
            "destination unreachable");
  EXPECT_EQ(BlockerKindWords(B::KIND_PLUGIN_CONFLICT), "plugin conflict");
  EXPECT_EQ(BlockerKindWords(B::KIND_UNSPECIFIED), "blocked");
  EXPECT_EQ(BlockerKindWords(static_cast<B::Kind>(99)), "blocked");
}

TEST(FormatBlocker, FieldAndRemedyOnlyWhenGiven) {
  migd::v1::MigrationBlocker b;
  b.set_kind(migd::v1::MigrationBlocker::KIND_DEVICE_BUSY);
  b.set_side("source");
  b.set_message("device emu0 belongs to job j7");
  EXPECT_EQ(FormatBlocker(b),
            "source, device busy: device emu0 belongs to job j7");
  b.set_kind(migd::v1::MigrationBlocker::KIND_INCOMPATIBLE);
  b.set_side("destination");
  b.set_message("dst0 cannot load it");
  b.set_field("firmware");
  b.set_source_value("2.1");
  b.set_remedy("pick a destination with firmware 2.1");
  EXPECT_EQ(FormatBlocker(b),
            "destination, incompatible: dst0 cannot load it; firmware: source "
            "2.1, destination -; remedy: pick a destination with firmware 2.1");
}

TEST(FormatCheckReport, ABlockedCheckWithoutBlockedDevicesStillSaysBlocked) {
  migd::v1::CheckMigrationResponse r;
  EXPECT_EQ(FormatCheckReport(r, "dst (10.0.0.6:7070)"),
            "BLOCKED: cannot migrate to dst (10.0.0.6:7070) (no identity); "
            "bandwidth not measured, predicted downtime unknown\n");
}

TEST(FormatCheckReport, ADeviceWithoutPluginsOrSize) {
  migd::v1::CheckMigrationResponse r;
  migd::v1::DeviceMigratability* d = r.add_devices();
  d->set_source_device("emu9");
  d->set_destination_device("dst9");
  d->set_source_summary("generic VFIO device");
  migd::v1::MigrationBlocker* b = d->add_blockers();
  b->set_kind(migd::v1::MigrationBlocker::KIND_DEVICE_NOT_FOUND);
  b->set_side("destination");
  b->set_message("no device dst9 on this agent");
  EXPECT_EQ(FormatCheckReport(r, "dst:1"),
            "BLOCKED: 1 of 1 device cannot migrate to dst:1 (no identity); "
            "bandwidth not measured, predicted downtime unknown\n"
            "emu9 -> dst9  BLOCKED\n"
            "  source       no plugin: generic VFIO device\n"
            "  destination  -\n"
            "  stop-copy    -\n"
            "  blocker      destination, no such device: no device dst9 on "
            "this agent\n");
}

TEST(FormatPlugins, NoPluginDirectory) {
  migd::v1::ListPluginsResponse r;
  EXPECT_EQ(FormatPlugins(r), "No plugins loaded (no plugin directory)\n");
  r.add_failures()->set_path("/p/a.so");
  EXPECT_EQ(FormatPlugins(r),
            "No plugins loaded (no plugin directory)\n"
            "Failed to load:\n"
            "  /p/a.so: -\n");
}

TEST(FormatHostDevice, APfBoundByMigdWithItsVfs) {
  migd::v1::HostDevice d;
  d.set_bus("pci");
  d.set_address("0000:07:00.0");
  d.set_vendor_id(0x15b3);
  d.set_device_id(0x1017);
  d.set_subsystem_vendor_id(0x15b3);
  d.set_subsystem_device_id(0x0080);
  d.set_class_code(0x020000);
  d.set_driver("vfio-pci");
  d.set_driver_override("vfio-pci");
  d.set_modalias("pci:v000015B3d00001017sv000015B3sd00000080bc02sc00i00");
  d.set_chosen_module("vfio_pci");
  d.set_chosen_driver("vfio-pci");
  d.set_choice_reason("no vfio_pci alias matches: vfio-pci");
  d.set_iommu_group(50);
  d.set_group_viable(true);
  d.set_bound_by_migd(true);
  d.mutable_migd_binding()->set_driver("vfio-pci");
  d.mutable_migd_binding()->set_original_driver("mlx5_core");
  d.mutable_sriov_pf()->set_total_vfs(2);
  d.mutable_sriov_pf()->set_num_vfs(1);
  auto* vf = d.mutable_sriov_pf()->add_vfs();
  vf->set_index(0);
  vf->set_address("0000:07:00.2");
  d.set_agent_device("pf0");
  d.add_notices("in use: cannot tell");
  EXPECT_EQ(FormatHostDevice(d),
            "address: 0000:07:00.0\n"
            "bus: pci\n"
            "ids: 15b3:1017\n"
            "subsystem: 15b3:0080\n"
            "class: 0x020000\n"
            "driver: vfio-pci\n"
            "driver_override: vfio-pci\n"
            "modalias: pci:v000015B3d00001017sv000015B3sd00000080bc02sc00i00\n"
            "vfio_module: vfio_pci\n"
            "vfio_driver: vfio-pci\n"
            "vfio_choice: no vfio_pci alias matches: vfio-pci\n"
            "iommu_group: 50\n"
            "group_viable: yes\n"
            "in_use: no\n"
            "bound_by_migd: yes: to vfio-pci; unbind returns it to mlx5_core "
            "with driver_override (none)\n"
            "agent_device: pf0\n"
            "job: (none)\n"
            "sriov_totalvfs: 2\n"
            "sriov_numvfs: 1\n"
            "vf: 0 0000:07:00.2\n"
            "notice: in use: cannot tell\n");
}

TEST(FormatHostDevice, NoDriverNoGroupAndNoChoice) {
  migd::v1::HostDevice d;
  d.set_bus("pci");
  d.set_address("0000:09:00.0");
  d.set_choice_error("two modules match alike");
  d.set_iommu_group(-1);
  d.set_group_not_viable_reason("in no IOMMU group");
  d.mutable_sriov_vf()->set_pf_address("0000:07:00.0");
  d.mutable_sriov_vf()->set_index(3);
  d.add_mdev_types()->set_id("mbochs-small");
  const std::string text = FormatHostDevice(d);
  for (const char* line :
       {"\ndriver: (none)\n", "\ndriver_override: (none)\n",
        "\nvfio_choice_error: two modules match alike\n",
        "\niommu_group: (none)\n", "\ngroup_viable: no: in no IOMMU group\n",
        "\nbound_by_migd: no\n", "\nphysfn: 0000:07:00.0 vf 3\n",
        "\nmdev_type: mbochs-small available=0 api=- name=-\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
  }
  EXPECT_EQ(text.find("vfio_module"), std::string::npos) << text;
}

TEST(FormatMdevTypes, TypesThenInstances) {
  migd::v1::ListMdevTypesResponse r;
  r.set_parent("mbochs");
  auto* t = r.add_types();
  t->set_id("mbochs-medium");
  t->set_available_instances(0);
  t->set_device_api("vfio-pci");
  t->set_name("medium");
  auto* m = r.add_instances();
  m->set_uuid("0b2a4d1e-1111-4222-8333-444455556666");
  m->set_type("mbochs-medium");
  EXPECT_EQ(FormatMdevTypes(r),
            "parent: mbochs\n"
            "TYPE           AVAILABLE  API       NAME\n"
            "mbochs-medium  0          vfio-pci  medium\n"
            "instances:\n"
            "UUID                                  TYPE\n"
            "0b2a4d1e-1111-4222-8333-444455556666  mbochs-medium\n");
}

}  // namespace
}  // namespace migd::cli
