#include "cli/progress.h"

#include <sstream>
#include <string>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::cli {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

migd::v1::Migration Job(migd::v1::Phase phase, uint64_t done, uint64_t total) {
  migd::v1::Migration m;
  m.set_job_id("j1");
  m.set_phase(phase);
  m.set_bytes_done(done);
  m.set_bytes_total(total);
  return m;
}

migd::v1::MigrationEvent Event(const migd::v1::Migration& m,
                               const std::string& message = "") {
  migd::v1::MigrationEvent e;
  *e.mutable_migration() = m;
  e.set_message(message);
  return e;
}

// A source job in PRE_COPY at iteration `iteration`: 80 of 96 MiB moved,
// 16 MiB left, 12 ms of downtime expected.
migd::v1::Migration PrecopyJob(uint32_t iteration = 3) {
  migd::v1::Migration m = Job(migd::v1::PHASE_PRE_COPY, 80 * kMiB, 96 * kMiB);
  migd::v1::PrecopyProgress* p = m.mutable_precopy();
  p->set_iteration(iteration);
  p->set_remaining_bytes(16 * kMiB);
  p->mutable_expected_downtime()->set_nanos(12000000);
  p->set_bandwidth_bytes_per_second(300.0 * kMiB);
  return m;
}

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(ThroughputMeter, UnknownUntilTwoSamples) {
  ThroughputMeter meter;
  EXPECT_LT(meter.Rate(), 0);
  meter.Add(kT0, 0);
  EXPECT_LT(meter.Rate(), 0);
  meter.Add(kT0 + absl::Seconds(1), 10 * kMiB);
  EXPECT_DOUBLE_EQ(meter.Rate(), 10.0 * kMiB);
}

TEST(ThroughputMeter, MeasuresOverTheWindowOnly) {
  ThroughputMeter meter(absl::Seconds(2));
  meter.Add(kT0, 0);
  meter.Add(kT0 + absl::Seconds(1), 100 * kMiB);  // a fast start...
  meter.Add(kT0 + absl::Seconds(3), 102 * kMiB);  // ...then slow
  meter.Add(kT0 + absl::Seconds(5), 104 * kMiB);
  EXPECT_DOUBLE_EQ(meter.Rate(), 1.0 * kMiB);
}

TEST(ThroughputMeter, SameInstantSamplesGiveNoRate) {
  ThroughputMeter meter;
  meter.Add(kT0, 0);
  meter.Add(kT0, 5);
  EXPECT_LT(meter.Rate(), 0);
}

TEST(ThroughputMeter, FewerBytesThanBeforeStartsOver) {
  ThroughputMeter meter;
  meter.Add(kT0, 50);
  meter.Add(kT0 + absl::Seconds(1), 100);
  meter.Add(kT0 + absl::Seconds(2), 10);
  EXPECT_LT(meter.Rate(), 0);
}

TEST(RenderBar, FillsTheDoneFractionWithAHead) {
  EXPECT_EQ(RenderBar(0, 100, 10), "[          ]");
  EXPECT_EQ(RenderBar(25, 100, 10), "[==>       ]");
  EXPECT_EQ(RenderBar(99, 100, 10), "[=========>]");
  EXPECT_EQ(RenderBar(100, 100, 10), "[==========]");
  EXPECT_EQ(RenderBar(500, 100, 10), "[==========]");
}

TEST(RenderBar, UnknownTotalIsBlank) {
  EXPECT_EQ(RenderBar(5, 0, 4), "[    ]");
}

TEST(RenderProgressLine, FillsExactlyTheWidthAt80Columns) {
  std::string line = RenderProgressLine(
      Job(migd::v1::PHASE_STOP_COPY, 12 * kMiB, 96 * kMiB), 45.3 * kMiB, 80);
  EXPECT_EQ(line,
            "STOP_COPY    [====>                            ] "
            "12.0/96.0 MiB   12%  45.3 MiB/s");
  EXPECT_EQ(line.size(), 80u);
}

TEST(RenderProgressLine, BarShrinksWithTheWidth) {
  std::string line = RenderProgressLine(
      Job(migd::v1::PHASE_PRE_COPY, 48 * kMiB, 96 * kMiB), -1, 60);
  EXPECT_EQ(line,
            "PRE_COPY     [============>            ] 48.0/96.0 MiB   50%");
  EXPECT_EQ(line.size(), 60u);
}

TEST(RenderProgressLine, DropsTheBarWhenNarrow) {
  std::string line = RenderProgressLine(
      Job(migd::v1::PHASE_STOP_COPY, 12 * kMiB, 96 * kMiB), 45.3 * kMiB, 50);
  EXPECT_EQ(line, "STOP_COPY    12.0/96.0 MiB   12%  45.3 MiB/s");
}

TEST(RenderProgressLine, CutsAtTheWidthWhenEvenTheTextDoesNotFit) {
  std::string line = RenderProgressLine(
      Job(migd::v1::PHASE_STOP_COPY, 12 * kMiB, 96 * kMiB), 45.3 * kMiB, 20);
  EXPECT_EQ(line, "STOP_COPY    12.0/96");
}

TEST(RenderProgressLine, NeverWiderThanAskedAtAnyWidth) {
  for (int width = 1; width <= 200; ++width) {
    std::string line = RenderProgressLine(
        Job(migd::v1::PHASE_ROLLING_BACK, 1234567, 7654321), 1e9, width);
    EXPECT_LE(static_cast<int>(line.size()), width) << width;
  }
}

TEST(RenderProgressLine, SucceededWithUnknownTotalShowsAFullBar) {
  std::string line =
      RenderProgressLine(Job(migd::v1::PHASE_SUCCEEDED, 0, 0), -1, 40);
  EXPECT_EQ(line, "SUCCEEDED    [===============] 0 B  100%");
  EXPECT_EQ(line.size(), 40u);
}

TEST(RenderProgressLine, PreCopyShowsIterationRemainingAndExpectedDowntime) {
  std::string line = RenderProgressLine(PrecopyJob(), 45.3 * kMiB, 100);
  EXPECT_EQ(line,
            "PRE_COPY     [====================>    ] 80.0/96.0 MiB   83%  "
            "it 3  16.0 MiB left  ~12ms  45.3 MiB/s");
  EXPECT_EQ(line.size(), 100u);
}

TEST(RenderProgressLine, PreCopyDropsTheRateBeforeTheBar) {
  std::string line = RenderProgressLine(PrecopyJob(), 45.3 * kMiB, 80);
  EXPECT_EQ(line,
            "PRE_COPY     [==============>  ] 80.0/96.0 MiB   83%  it 3  "
            "16.0 MiB left  ~12ms");
  EXPECT_EQ(line.size(), 80u);
}

TEST(RenderProgressLine, PreCopyWithoutRoomForABarKeepsTheEstimate) {
  EXPECT_EQ(RenderProgressLine(PrecopyJob(), 45.3 * kMiB, 62),
            "PRE_COPY     80.0/96.0 MiB   83%  it 3  16.0 MiB left  ~12ms");
  EXPECT_EQ(RenderProgressLine(PrecopyJob(), 45.3 * kMiB, 40),
            "PRE_COPY     80.0/96.0 MiB   83%  it 3");
}

TEST(RenderProgressLine, PreCopyWithUnknownBandwidthLeavesOutTheDowntime) {
  migd::v1::Migration m = PrecopyJob();
  m.mutable_precopy()->clear_expected_downtime();
  EXPECT_EQ(RenderProgressLine(m, -1, 80),
            "PRE_COPY     [====================>   ] 80.0/96.0 MiB   83%  "
            "it 3  16.0 MiB left");
}

TEST(RenderProgressLine, PreCopyEstimateOnlyWhileInPreCopy) {
  migd::v1::Migration m = PrecopyJob();
  m.set_phase(migd::v1::PHASE_STOP_COPY);
  EXPECT_EQ(RenderProgressLine(m, -1, 60),
            "STOP_COPY    [====================>    ] 80.0/96.0 MiB   83%");
}

TEST(RenderPlainLine, PreCopyShowsIterationRemainingAndExpectedDowntime) {
  EXPECT_EQ(RenderPlainLine(PrecopyJob(), 45.3 * kMiB, absl::Seconds(2),
                            "pre-copy iteration 3"),
            "[2.00s] PRE_COPY 80.0/96.0 MiB 83% 45.3 MiB/s (it 3, 16.0 MiB "
            "left, ~12ms downtime): pre-copy iteration 3");
  migd::v1::Migration converged = PrecopyJob(5);
  converged.mutable_precopy()->set_converged(true);
  converged.mutable_precopy()->clear_expected_downtime();
  EXPECT_EQ(RenderPlainLine(converged, -1, absl::Seconds(2), ""),
            "[2.00s] PRE_COPY 80.0/96.0 MiB 83% (it 5, 16.0 MiB left, "
            "converged)");
}

TEST(RenderPlainLine, SwitchoverSaysHowPreCopyEnded) {
  migd::v1::Migration m = PrecopyJob(4);
  m.set_phase(migd::v1::PHASE_STOP_COPY);
  m.mutable_precopy()->set_converged(true);
  EXPECT_EQ(RenderPlainLine(m, -1, absl::Seconds(2), "phase STOP_COPY"),
            "[2.00s] STOP_COPY 80.0/96.0 MiB 83% (pre-copy: 4 iterations, "
            "converged): phase STOP_COPY");
}

TEST(RenderPlainLine, ElapsedPhaseBytesPercentRateAndMessage) {
  EXPECT_EQ(
      RenderPlainLine(Job(migd::v1::PHASE_STOP_COPY, 12 * kMiB, 96 * kMiB),
                      45.3 * kMiB, absl::Milliseconds(1250), "phase STOP_COPY"),
      "[1.25s] STOP_COPY 12.0/96.0 MiB 12% 45.3 MiB/s: phase STOP_COPY");
  EXPECT_EQ(RenderPlainLine(Job(migd::v1::PHASE_CONNECTING, 0, 0), -1,
                            absl::ZeroDuration(), ""),
            "[0s] CONNECTING 0 B");
}

TEST(ProgressPrinter, JsonPrintsOneCompactObjectPerEvent) {
  std::ostringstream out;
  ProgressPrinter printer(ProgressPrinter::Mode::kJson, &out, 80, kT0);
  printer.OnEvent(Event(Job(migd::v1::PHASE_CONNECTING, 0, 10)), kT0);
  printer.OnEvent(Event(Job(migd::v1::PHASE_CONNECTING, 0, 10)), kT0);
  printer.OnEvent(Event(Job(migd::v1::PHASE_SUCCEEDED, 10, 10)), kT0);
  printer.Finish();
  std::string text = out.str();
  int lines = 0;
  for (char c : text) lines += c == '\n';
  EXPECT_EQ(lines, 3) << text;
  EXPECT_EQ(text.rfind("{\"job_id\":\"j1\"", 0), 0u) << text;
}

TEST(ProgressPrinter, PlainPrintsChangesAndThrottlesByteOnlyProgress) {
  std::ostringstream out;
  ProgressPrinter printer(ProgressPrinter::Mode::kPlain, &out, 80, kT0);
  auto t = [](int ms) { return kT0 + absl::Milliseconds(ms); };
  printer.OnEvent(Event(Job(migd::v1::PHASE_CONNECTING, 0, 100)), t(0));
  printer.OnEvent(Event(Job(migd::v1::PHASE_STOP_COPY, 0, 100)), t(100));
  printer.OnEvent(Event(Job(migd::v1::PHASE_STOP_COPY, 10, 100)), t(200));
  printer.OnEvent(Event(Job(migd::v1::PHASE_STOP_COPY, 20, 100)), t(1200));
  printer.OnEvent(Event(Job(migd::v1::PHASE_STOP_COPY, 20, 100)), t(2500));
  printer.OnEvent(Event(Job(migd::v1::PHASE_SUCCEEDED, 100, 100)), t(2600));
  printer.Finish();
  EXPECT_EQ(out.str(),
            "[0s] CONNECTING 0/100 B 0%\n"
            "[100ms] STOP_COPY 0/100 B 0% 0 B/s\n"
            "[1.20s] STOP_COPY 20/100 B 20% 17 B/s\n"
            "[2.60s] SUCCEEDED 100/100 B 100% 38 B/s\n");
}

TEST(ProgressPrinter, PlainPrintsDeviceStateChanges) {
  std::ostringstream out;
  ProgressPrinter printer(ProgressPrinter::Mode::kPlain, &out, 80, kT0);
  migd::v1::Migration m = Job(migd::v1::PHASE_STOP_COPY, 0, 0);
  m.add_devices()->set_state(migd::v1::DEVICE_STATE_RUNNING);
  printer.OnEvent(Event(m), kT0);
  m.mutable_devices(0)->set_state(migd::v1::DEVICE_STATE_STOP_COPY);
  printer.OnEvent(Event(m, "device emu0 STOP_COPY"), kT0);
  EXPECT_EQ(out.str(),
            "[0s] STOP_COPY 0 B\n"
            "[0s] STOP_COPY 0 B: device emu0 STOP_COPY\n");
}

TEST(ProgressPrinter, PlainPrintsEachMoveInTheLineForATransferSlot) {
  std::ostringstream out;
  ProgressPrinter printer(ProgressPrinter::Mode::kPlain, &out, 80, kT0);
  auto t = [](int ms) { return kT0 + absl::Milliseconds(ms); };
  migd::v1::Migration m = Job(migd::v1::PHASE_CONNECTING, 0, 100);
  m.mutable_queue()->set_waiting(true);
  m.mutable_queue()->set_ahead(1);
  printer.OnEvent(Event(m, "waiting for a transfer slot: 1 job(s) ahead"),
                  t(0));
  printer.OnEvent(Event(m, "progress"), t(100));  // same: quiet
  m.mutable_queue()->set_ahead(0);
  printer.OnEvent(Event(m, "waiting for a transfer slot: next in line"),
                  t(200));
  m.mutable_queue()->set_waiting(false);
  printer.OnEvent(Event(m, "waited 300ms for a transfer slot"), t(300));
  EXPECT_EQ(out.str(),
            "[0s] CONNECTING 0/100 B 0%: waiting for a transfer slot: 1 "
            "job(s) ahead\n"
            "[200ms] CONNECTING 0/100 B 0% 0 B/s: waiting for a transfer slot: "
            "next in line\n"
            "[300ms] CONNECTING 0/100 B 0% 0 B/s: waited 300ms for a transfer "
            "slot\n");
}

TEST(ProgressPrinter, PlainPrintsEachPreCopyIteration) {
  std::ostringstream out;
  ProgressPrinter printer(ProgressPrinter::Mode::kPlain, &out, 80, kT0);
  auto t = [](int ms) { return kT0 + absl::Milliseconds(ms); };
  migd::v1::Migration started = Job(migd::v1::PHASE_PRE_COPY, 0, 96 * kMiB);
  printer.OnEvent(Event(started, "phase PRE_COPY"), t(0));
  printer.OnEvent(Event(PrecopyJob(1), "pre-copy iteration 1"), t(100));
  printer.OnEvent(Event(PrecopyJob(1), "progress"), t(200));  // same: quiet
  migd::v1::Migration second = PrecopyJob(2);
  second.mutable_precopy()->set_converged(true);
  printer.OnEvent(Event(second, "pre-copy iteration 2"), t(300));
  EXPECT_EQ(out.str(),
            "[0s] PRE_COPY 0 B/96.0 MiB 0%: phase PRE_COPY\n"
            "[100ms] PRE_COPY 80.0/96.0 MiB 83% 800.0 MiB/s (it 1, 16.0 MiB "
            "left, ~12ms downtime): pre-copy iteration 1\n"
            "[300ms] PRE_COPY 80.0/96.0 MiB 83% 266.7 MiB/s (it 2, 16.0 MiB "
            "left, ~12ms downtime, converged): pre-copy iteration 2\n");
}

TEST(ProgressPrinter, TerminalRedrawsInPlaceAndKeepsPhaseChanges) {
  std::ostringstream out;
  ProgressPrinter printer(ProgressPrinter::Mode::kTerminal, &out, 60, kT0);
  printer.OnEvent(
      Event(Job(migd::v1::PHASE_STOP_COPY, 0, 100), "phase STOP_COPY"), kT0);
  printer.OnEvent(Event(Job(migd::v1::PHASE_STOP_COPY, 50, 100)),
                  kT0 + absl::Seconds(1));
  printer.Finish();
  EXPECT_EQ(out.str(),
            "\r\x1b[K[0s] STOP_COPY 0/100 B 0%: phase STOP_COPY\n"
            "STOP_COPY    [                               ] 0/100 B    0%"
            "\r\x1b[KSTOP_COPY    [===========>          ] 50/100 B   50%  "
            "50 B/s\n");
}

}  // namespace
}  // namespace migd::cli
