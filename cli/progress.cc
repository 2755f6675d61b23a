#include "cli/progress.h"

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "cli/format.h"

namespace migd::cli {

void ThroughputMeter::Add(absl::Time now, uint64_t bytes_done) {
  if (!samples_.empty() && bytes_done < samples_.back().second) {
    samples_.clear();
  }
  samples_.emplace_back(now, bytes_done);
  // Keep one sample at or before the window start, so the rate covers the
  // whole window rather than only the samples strictly inside it.
  while (samples_.size() > 2 && samples_[1].first <= now - window_) {
    samples_.pop_front();
  }
}

double ThroughputMeter::Rate() const {
  if (samples_.size() < 2) return -1;
  const auto& [t0, b0] = samples_.front();
  const auto& [t1, b1] = samples_.back();
  if (t1 <= t0) return -1;
  return static_cast<double>(b1 - b0) / absl::ToDoubleSeconds(t1 - t0);
}

std::string RenderBar(uint64_t done, uint64_t total, int inner) {
  inner = std::max(inner, 1);
  std::string bar(inner, ' ');
  if (total > 0 && done > 0) {
    if (done >= total) {
      bar.assign(inner, '=');
    } else {
      int filled = static_cast<int>(static_cast<long double>(done) * inner /
                                    static_cast<long double>(total));
      filled = std::clamp(filled, 0, inner - 1);
      bar.replace(0, filled, filled, '=');
      bar[filled] = '>';
    }
  }
  return absl::StrCat("[", bar, "]");
}

namespace {

// Pre-copy progress is shown while the job is in PRE_COPY and reports it.
bool ShowsPrecopy(const migd::v1::Migration& m) {
  return m.phase() == migd::v1::PHASE_PRE_COPY && m.has_precopy();
}

std::string ExpectedDowntime(const migd::v1::PrecopyProgress& p) {
  return HumanDuration(ToAbslDuration(p.expected_downtime()));
}

}  // namespace

std::string RenderProgressLine(const migd::v1::Migration& m, double rate,
                               int width) {
  width = std::max(width, 1);
  uint64_t done = m.bytes_done();
  uint64_t total = m.bytes_total();
  if (m.phase() == migd::v1::PHASE_SUCCEEDED && total == 0) done = total = 1;
  // Padded to the longest phase name so the bar does not jump between phases.
  std::string phase = absl::StrFormat("%-12s", PhaseName(m.phase()));
  std::string base =
      absl::StrCat(" ", HumanBytesPair(m.bytes_done(), m.bytes_total()), "  ",
                   absl::StrFormat("%4s", FormatPercent(done, total)));
  if (ShowsPrecopy(m)) {
    const migd::v1::PrecopyProgress& p = m.precopy();
    absl::StrAppend(&base, "  it ", p.iteration(), "  ",
                    HumanBytes(p.remaining_bytes()), " left");
    if (p.has_expected_downtime()) {
      absl::StrAppend(&base, "  ~", ExpectedDowntime(p));
    }
  }
  std::string with_rate = base;
  if (rate >= 0) absl::StrAppend(&with_rate, "  ", HumanRate(rate));
  // The tails to try with a bar, most complete first: in PRE_COPY the rate
  // gives way to the bar before the bar gives way to the text.
  std::vector<std::string> tails = {with_rate};
  if (ShowsPrecopy(m) && with_rate != base) tails.push_back(base);
  std::string line;
  for (const std::string& tail : tails) {
    int inner = width - static_cast<int>(phase.size() + 1 + 2 + tail.size());
    if (inner >= 10) {
      line = absl::StrCat(phase, " ", RenderBar(done, total, inner), tail);
      break;
    }
  }
  if (line.empty()) {
    // No room for a bar: the most complete text that fits, else the shortest.
    line = absl::StrCat(phase, tails.back());
    for (const std::string& tail : tails) {
      if (static_cast<int>(phase.size() + tail.size()) <= width) {
        line = absl::StrCat(phase, tail);
        break;
      }
    }
  }
  if (static_cast<int>(line.size()) > width) line.resize(width);
  line.erase(line.find_last_not_of(' ') + 1);
  return line;
}

std::string RenderPlainLine(const migd::v1::Migration& m, double rate,
                            absl::Duration elapsed,
                            const std::string& message) {
  std::string line =
      absl::StrCat("[", HumanDuration(elapsed), "] ", PhaseName(m.phase()), " ",
                   HumanBytesPair(m.bytes_done(), m.bytes_total()));
  if (m.bytes_total() > 0) {
    absl::StrAppend(&line, " ", FormatPercent(m.bytes_done(), m.bytes_total()));
  }
  if (rate >= 0) absl::StrAppend(&line, " ", HumanRate(rate));
  if (ShowsPrecopy(m)) {
    const migd::v1::PrecopyProgress& p = m.precopy();
    absl::StrAppend(&line, " (it ", p.iteration(), ", ",
                    HumanBytes(p.remaining_bytes()), " left");
    if (p.has_expected_downtime()) {
      absl::StrAppend(&line, ", ~", ExpectedDowntime(p), " downtime");
    }
    if (p.converged()) absl::StrAppend(&line, ", converged");
    absl::StrAppend(&line, ")");
  } else if (m.phase() == migd::v1::PHASE_STOP_COPY && m.has_precopy()) {
    // The switchover: say what pre-copy achieved before it.
    absl::StrAppend(&line, " (pre-copy: ", FormatPrecopyOutcome(m), ")");
  }
  if (!message.empty()) absl::StrAppend(&line, ": ", message);
  return line;
}

std::vector<int> ProgressPrinter::Key(const migd::v1::Migration& m) const {
  std::vector<int> key = {m.phase()};
  for (const auto& d : m.devices()) key.push_back(d.state());
  // A move in the line for a transfer slot, and its end.
  if (m.queue().waiting()) key.push_back(static_cast<int>(m.queue().ahead()));
  key.push_back(m.queue().waiting() ? 1 : 0);
  // A new pre-copy iteration, or convergence, is a step a person follows.
  if (ShowsPrecopy(m)) {
    key.push_back(static_cast<int>(m.precopy().iteration()));
    key.push_back(m.precopy().converged() ? 1 : 0);
  }
  return key;
}

void ProgressPrinter::OnEvent(const migd::v1::MigrationEvent& event,
                              absl::Time now) {
  const migd::v1::Migration& m = event.migration();
  meter_.Add(now, m.bytes_done());
  switch (mode_) {
    case Mode::kJson:
      *out_ << ToJson(m, /*compact=*/true) << "\n" << std::flush;
      return;
    case Mode::kPlain: {
      std::vector<int> key = Key(m);
      bool changed = !have_last_ || key != last_key_;
      bool moved = have_last_ && m.bytes_done() != last_bytes_ &&
                   now - last_print_ >= absl::Seconds(1);
      if (changed || moved || IsTerminal(m.phase())) {
        *out_ << RenderPlainLine(m, meter_.Rate(), now - start_,
                                 event.message())
              << "\n"
              << std::flush;
        last_print_ = now;
        last_bytes_ = m.bytes_done();
      }
      have_last_ = true;
      last_key_ = std::move(key);
      return;
    }
    case Mode::kTerminal: {
      bool phase_changed = !have_last_ || last_key_.empty() ||
                           last_key_[0] != static_cast<int>(m.phase());
      // Clear the bar's line, keep phase changes as lines above the bar.
      *out_ << "\r\x1b[K";
      if (phase_changed) {
        *out_ << RenderPlainLine(m, meter_.Rate(), now - start_,
                                 event.message())
              << "\n";
      }
      *out_ << RenderProgressLine(m, meter_.Rate(), width_) << std::flush;
      bar_drawn_ = true;
      have_last_ = true;
      last_key_ = Key(m);
      return;
    }
  }
}

void ProgressPrinter::Finish() {
  if (mode_ == Mode::kTerminal && bar_drawn_) {
    *out_ << "\n" << std::flush;
    bar_drawn_ = false;
  }
}

}  // namespace migd::cli
