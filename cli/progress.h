// cli/progress.h
//
// Shows a running job while migctl watches it: a progress bar redrawn in place
// on a terminal, one plain line per change when the output is a file or pipe,
// or one JSON object per event for programs. Rendering is separated from
// printing so the exact text at a given width is testable.

#ifndef MIGD_CLI_PROGRESS_H_
#define MIGD_CLI_PROGRESS_H_

#include <cstdint>
#include <deque>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::cli {

// Transfer rate over a sliding window of (time, bytes done) samples.
class ThroughputMeter {
 public:
  explicit ThroughputMeter(absl::Duration window = absl::Seconds(3))
      : window_(window) {}

  // Records that `bytes_done` bytes had moved at `now`. A count lower than the
  // previous one (a new job) starts over.
  void Add(absl::Time now, uint64_t bytes_done);

  // Bytes per second between the oldest sample in the window and the newest;
  // -1 while fewer than two samples with distinct times are known.
  double Rate() const;

 private:
  absl::Duration window_;
  std::deque<std::pair<absl::Time, uint64_t>> samples_;
};

// One line of at most `width` columns:
//   "STOP_COPY    [=========>          ] 12.0/96.0 MiB   12%  45.3 MiB/s"
// In PRE_COPY, once the job reports pre-copy progress, the iteration, the
// state left to move and the expected downtime follow the percentage:
//   "PRE_COPY     [=====>   ] 80.0/96.0 MiB   83%  it 3  16.0 MiB left  ~12ms"
// The bar takes the columns the text leaves. When fewer than 10 would remain,
// the rate is dropped first in PRE_COPY, then the bar; the text is cut at
// `width` when even that does not fit. `rate` < 0 leaves the rate out.
std::string RenderProgressLine(const migd::v1::Migration& m, double rate,
                               int width);

// The bar alone: "[" + `inner` columns + "]", `inner` >= 1: '=' for the done
// fraction (floor) with a '>' head, spaces for the rest; blank when nothing is
// done or the total is unknown (0), all '=' when done >= total > 0.
std::string RenderBar(uint64_t done, uint64_t total, int inner);

// A line for logs: "[1.25s] STOP_COPY 12.0/96.0 MiB 12% 45.3 MiB/s: msg"
// (no trailing newline; the rate and ": msg" only when known / non-empty).
// In PRE_COPY with pre-copy progress, before the message:
// " (it 3, 16.0 MiB left, ~12ms downtime[, converged])"; in STOP_COPY after
// pre-copy, how pre-copy ended: " (pre-copy: 3 iterations, converged)".
std::string RenderPlainLine(const migd::v1::Migration& m, double rate,
                            absl::Duration elapsed, const std::string& message);

// Prints the events of one watched job.
class ProgressPrinter {
 public:
  enum class Mode {
    kTerminal,  // a bar redrawn in place; phase changes kept as lines above it
    kPlain,     // a line per phase/device-state change and per pre-copy
                // iteration, else at most 1 per s
    kJson,      // one compact Migration JSON per event
  };

  ProgressPrinter(Mode mode, std::ostream* out, int width, absl::Time start)
      : mode_(mode), out_(out), width_(width), start_(start) {}

  // Shows `event`, received at `now`.
  void OnEvent(const migd::v1::MigrationEvent& event, absl::Time now);

  // Leaves the terminal on a fresh line; call once the watch is over.
  void Finish();

  // The rate measured so far (see ThroughputMeter::Rate).
  double rate() const { return meter_.Rate(); }

 private:
  // Phase, device states and (in PRE_COPY) the pre-copy iteration and
  // convergence: what counts as a change for kPlain.
  std::vector<int> Key(const migd::v1::Migration& m) const;

  Mode mode_;
  std::ostream* out_;
  int width_;
  absl::Time start_;
  ThroughputMeter meter_;
  bool have_last_ = false;
  std::vector<int> last_key_;
  uint64_t last_bytes_ = 0;
  absl::Time last_print_ = absl::InfinitePast();
  bool bar_drawn_ = false;
};

}  // namespace migd::cli

#endif  // MIGD_CLI_PROGRESS_H_
