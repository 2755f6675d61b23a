#include "cli/format.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"

namespace migd::cli {
namespace {

// Strips `prefix` from an enum value name; the number when the name is empty
// (a value this build does not know).
std::string ShortEnumName(const std::string& name, absl::string_view prefix,
                          int value) {
  if (name.empty()) return absl::StrCat(value);
  absl::string_view s = name;
  if (absl::StartsWith(s, prefix)) s.remove_prefix(prefix.size());
  return std::string(s);
}

}  // namespace

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB",
                                           "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024.0;
  int unit = 0;
  // Round first so 1023.96 KiB shows as "1.0 MiB", not "1024.0 KiB".
  while (std::round(value * 10.0) / 10.0 >= 1024.0 && unit < 5) {
    value /= 1024.0;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string HumanRate(double bytes_per_second) {
  if (!std::isfinite(bytes_per_second) || bytes_per_second < 0) return "-";
  if (bytes_per_second >= 18446744073709551615.0) return "-";
  return absl::StrCat(
      HumanBytes(static_cast<uint64_t>(std::llround(bytes_per_second))), "/s");
}

std::string HumanDuration(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return "inf";
  if (d == -absl::InfiniteDuration()) return "-inf";
  if (d < absl::ZeroDuration()) return absl::StrCat("-", HumanDuration(-d));
  if (d == absl::ZeroDuration()) return "0s";
  if (d < absl::Microseconds(1)) return "<1us";
  if (d < absl::Milliseconds(1)) {
    return absl::StrCat(absl::ToInt64Microseconds(d), "us");
  }
  if (d < absl::Milliseconds(10)) {
    return absl::StrFormat("%.1fms", absl::ToDoubleMilliseconds(d));
  }
  if (d < absl::Seconds(1)) {
    return absl::StrCat(absl::ToInt64Milliseconds(d), "ms");
  }
  if (d < absl::Seconds(10)) {
    return absl::StrFormat("%.2fs", absl::ToDoubleSeconds(d));
  }
  if (d < absl::Seconds(60)) {
    return absl::StrFormat("%.1fs", absl::ToDoubleSeconds(d));
  }
  if (d < absl::Hours(1)) {
    int64_t s = absl::ToInt64Seconds(d);
    return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  }
  int64_t m = absl::ToInt64Minutes(d);
  return absl::StrFormat("%dh%02dm", m / 60, m % 60);
}

std::string FormatPercent(uint64_t done, uint64_t total) {
  if (total == 0) return "--%";
  if (done >= total) return "100%";
  // Floor, so 100% only shows once everything is done.
  int pct = static_cast<int>(static_cast<long double>(done) * 100.0L /
                             static_cast<long double>(total));
  return absl::StrCat(std::clamp(pct, 0, 99), "%");
}

std::string DeviceStateName(migd::v1::DeviceState state) {
  return ShortEnumName(migd::v1::DeviceState_Name(state), "DEVICE_STATE_",
                       state);
}

std::string PhaseName(migd::v1::Phase phase) {
  return ShortEnumName(migd::v1::Phase_Name(phase), "PHASE_", phase);
}

std::string RoleName(migd::v1::Role role) {
  return ShortEnumName(migd::v1::Role_Name(role), "ROLE_", role);
}

std::string ReasonName(migd::v1::ErrorReason reason) {
  return ShortEnumName(migd::v1::ErrorReason_Name(reason), "ERROR_REASON_",
                       reason);
}

std::string MigrationFlagsString(uint64_t flags) {
  std::vector<std::string> parts;
  if (flags & 1) parts.push_back("STOP_COPY");
  if (flags & 2) parts.push_back("P2P");
  if (flags & 4) parts.push_back("PRE_COPY");
  uint64_t unknown = flags & ~uint64_t{7};
  if (unknown != 0) parts.push_back(absl::StrFormat("0x%x", unknown));
  if (parts.empty()) return "-";
  return absl::StrJoin(parts, "|");
}

bool IsTerminal(migd::v1::Phase phase) {
  return phase == migd::v1::PHASE_SUCCEEDED ||
         phase == migd::v1::PHASE_FAILED || phase == migd::v1::PHASE_CANCELLED;
}

absl::Duration ToAbslDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::Time ToAbslTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line.append(2, ' ');
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size(), ' ');
    }
    // No trailing spaces even when the last cells are empty.
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

namespace {

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// "emu0 -> dst0" from the source's point of view, whichever side `m` is.
std::string PairString(const migd::v1::Migration& m,
                       const migd::v1::DeviceProgress& d) {
  if (m.role() == migd::v1::ROLE_DESTINATION) {
    return absl::StrCat(OrDash(d.peer_device()), " -> ", OrDash(d.device()));
  }
  return absl::StrCat(OrDash(d.device()), " -> ", OrDash(d.peer_device()));
}

std::string ProgressString(uint64_t done, uint64_t total) {
  if (total == 0) return HumanBytes(done);
  return absl::StrCat(HumanBytes(done), " / ", HumanBytes(total), " (",
                      FormatPercent(done, total), ")");
}

std::string FormatTimestamp(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", ToAbslTime(t),
                          absl::UTCTimeZone());
}

// Throughput as the agent reported it, or computed from the transfer time.
double Throughput(const migd::v1::Migration& m) {
  if (m.throughput_bytes_per_second() > 0) {
    return m.throughput_bytes_per_second();
  }
  absl::Duration t = ToAbslDuration(m.transfer_time());
  if (t > absl::ZeroDuration() && m.bytes_done() > 0) {
    return static_cast<double>(m.bytes_done()) / absl::ToDoubleSeconds(t);
  }
  return -1;
}

}  // namespace

std::string FormatDevicesTable(const migd::v1::ListDevicesResponse& response) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "KIND", "STATE", "FLAGS", "JOB", "SIZE", "DIGEST"}};
  for (const auto& d : response.devices()) {
    rows.push_back(
        {d.name(), OrDash(d.kind()), DeviceStateName(d.state()),
         MigrationFlagsString(d.migration_flags()), OrDash(d.job_id()),
         d.state_size_bytes() > 0 ? HumanBytes(d.state_size_bytes()) : "-",
         OrDash(d.state_digest())});
  }
  return FormatTable(rows);
}

std::string FormatMigrationsTable(
    const migd::v1::ListMigrationsResponse& response) {
  std::vector<std::vector<std::string>> rows = {
      {"JOB", "ROLE", "PHASE", "PEER", "PROGRESS", "DEVICES"}};
  for (const auto& m : response.migrations()) {
    std::vector<std::string> pairs;
    for (const auto& d : m.devices()) pairs.push_back(PairString(m, d));
    rows.push_back({m.job_id(), RoleName(m.role()), PhaseName(m.phase()),
                    OrDash(m.peer()),
                    ProgressString(m.bytes_done(), m.bytes_total()),
                    pairs.empty() ? "-" : absl::StrJoin(pairs, ", ")});
  }
  return FormatTable(rows);
}

namespace {

// Rows of "label  value", labels padded to the widest, each line starting
// with `indent`. A value's further lines (after '\n') line up under its
// first. No trailing spaces.
std::string FormatLabeled(
    const std::vector<std::pair<std::string, std::string>>& rows,
    absl::string_view indent) {
  size_t width = 0;
  for (const auto& [label, value] : rows) width = std::max(width, label.size());
  std::string out;
  for (const auto& [label, value] : rows) {
    bool first = true;
    for (absl::string_view line : absl::StrSplit(value, '\n')) {
      std::string text = absl::StrCat(
          indent, first ? label : "",
          std::string(width - (first ? label.size() : 0), ' '), "  ", line);
      text.erase(text.find_last_not_of(' ') + 1);
      absl::StrAppend(&out, text, "\n");
      first = false;
    }
  }
  return out;
}

std::string Plural(uint64_t n, absl::string_view one, absl::string_view many) {
  return absl::StrCat(n, " ", n == 1 ? one : many);
}

bool HasPrecopy(const migd::v1::Migration& m) {
  return m.has_precopy() || m.precopy_bytes() > 0;
}

// "converged", "in progress", "did not converge; switched over anyway", ...
std::string ConvergenceString(const migd::v1::Migration& m) {
  if (m.precopy().converged()) return "converged";
  switch (m.phase()) {
    case migd::v1::PHASE_CONNECTING:
    case migd::v1::PHASE_PRE_COPY:
      return "not converged yet";
    case migd::v1::PHASE_STOP_COPY:
    case migd::v1::PHASE_LOADING:
    case migd::v1::PHASE_RESUMING:
      return "did not converge; switching over anyway";
    case migd::v1::PHASE_SUCCEEDED:
      return "did not converge; switched over anyway";
    default:
      break;
  }
  if (m.failure().reason() == migd::v1::ERROR_REASON_NOT_CONVERGED) {
    return "did not converge";
  }
  return "stopped before converging";
}

std::string SplitString(uint64_t precopy, uint64_t stop_copy) {
  return absl::StrCat(HumanBytes(precopy), " pre-copy, ", HumanBytes(stop_copy),
                      " stop-copy");
}

// The job's notices, one per line; "" when none.
std::string NoticesString(const migd::v1::Migration& m) {
  return absl::StrJoin(m.notices(), "\n");
}

// A source job's wait for a transfer slot: "waiting for a transfer slot, 2
// jobs ahead (1.2s so far)", "waited 3.4s for a transfer slot".
std::string QueueString(const migd::v1::TransferQueue& q) {
  const std::string waited = HumanDuration(ToAbslDuration(q.waited()));
  if (!q.waiting())
    return absl::StrCat("waited ", waited, " for a transfer slot");
  return absl::StrCat("waiting for a transfer slot, ",
                      q.ahead() == 0
                          ? std::string("next in line")
                          : Plural(q.ahead(), "job", "jobs") + " ahead",
                      " (", waited, " so far)");
}

// For a job IN_DOUBT: why, how the outcome is sought, and what a person can
// do about it, as labelled rows; once it ended, how it was settled.
void InDoubtRows(const migd::v1::Migration& m,
                 std::vector<std::pair<std::string, std::string>>* rows) {
  const migd::v1::InDoubt& d = m.in_doubt();
  if (m.phase() != migd::v1::PHASE_IN_DOUBT) {
    if (!d.resolution().empty()) rows->push_back({"resolved", d.resolution()});
    return;
  }
  const bool source = m.role() == migd::v1::ROLE_SOURCE;
  rows->push_back(
      {"in doubt",
       absl::StrCat(source ? "COMMIT went out; whether the destination runs "
                             "the devices is not known"
                           : "whether the source still runs the devices is "
                             "not known",
                    d.reason().empty() ? "" : absl::StrCat("\n", d.reason()))});
  if (source) {
    rows->push_back(
        {"asked", d.attempts() == 0
                      ? "the destination, not answered yet"
                      : absl::StrCat("the destination ",
                                     Plural(d.attempts(), "time", "times"),
                                     "; last answer: ", d.last_answer())});
  }
  const std::string j = m.job_id();
  rows->push_back(
      {"to do",
       source ? absl::StrCat(
                    "nothing while the destination can still answer: the "
                    "devices stay\n"
                    "stopped until it does. If it never can (gone for "
                    "good), decide:\n"
                    "  migctl resolve ",
                    j,
                    " --outcome=source       resume the devices here\n"
                    "  migctl resolve ",
                    j, " --outcome=destination  they run there; release them")
              : absl::StrCat("the devices stay as they are until an operator "
                             "decides:\n"
                             "  migctl resolve ",
                             j,
                             " --outcome=destination  resume the devices here\n"
                             "  migctl resolve ",
                             j,
                             " --outcome=source       they run on the source; "
                             "reset them")});
}

}  // namespace

std::string HumanBytesPair(uint64_t done, uint64_t total) {
  if (total == 0) return HumanBytes(done);
  std::string a = HumanBytes(done);
  std::string b = HumanBytes(total);
  absl::string_view unit_a = absl::string_view(a).substr(a.find(' '));
  absl::string_view unit_b = absl::string_view(b).substr(b.find(' '));
  if (unit_a == unit_b) a.resize(a.size() - unit_a.size());
  return absl::StrCat(a, "/", b);
}

std::string FormatDowntimeBreakdown(const migd::v1::DowntimeBreakdown& b,
                                    const google::protobuf::Duration* total) {
  std::vector<std::string> parts;
  auto add = [&parts](bool has, const google::protobuf::Duration& d,
                      absl::string_view name) {
    if (has) {
      parts.push_back(
          absl::StrCat(name, " ", HumanDuration(ToAbslDuration(d))));
    }
  };
  add(b.has_stop_copy_transfer(), b.stop_copy_transfer(), "stop-copy");
  add(b.has_load(), b.load(), "load");
  add(b.has_resume(), b.resume(), "resume");
  std::string joined = absl::StrJoin(parts, ", ");
  const google::protobuf::Duration* t = b.has_total() ? &b.total() : total;
  if (t == nullptr) return joined;
  std::string out = HumanDuration(ToAbslDuration(*t));
  if (!joined.empty()) absl::StrAppend(&out, " (", joined, ")");
  return out;
}

std::string FormatDowntime(const migd::v1::Migration& m) {
  const google::protobuf::Duration* total =
      m.has_downtime() ? &m.downtime() : nullptr;
  if (m.has_downtime_breakdown()) {
    std::string out = FormatDowntimeBreakdown(m.downtime_breakdown(), total);
    if (!out.empty()) return out;
  }
  if (total != nullptr) return HumanDuration(ToAbslDuration(*total));
  return "-";
}

std::string FormatPrecopyOutcome(const migd::v1::Migration& m) {
  if (!m.has_precopy()) return "";
  return absl::StrCat(
      Plural(m.precopy().iteration(), "iteration", "iterations"), ", ",
      ConvergenceString(m));
}

std::string FormatPrecopySummary(const migd::v1::Migration& m) {
  if (!HasPrecopy(m)) return "";
  std::string split = SplitString(m.precopy_bytes(), m.stop_copy_bytes());
  if (!m.has_precopy()) return split;
  return absl::StrCat(FormatPrecopyOutcome(m), "; ", split);
}

std::string FormatPrecopyEstimate(const migd::v1::PrecopyProgress& p) {
  std::vector<std::string> parts = {
      absl::StrCat(HumanBytes(p.remaining_bytes()), " left")};
  if (p.has_expected_downtime()) {
    parts.push_back(
        absl::StrCat("expected downtime ",
                     HumanDuration(ToAbslDuration(p.expected_downtime()))));
  }
  if (p.dirty_rate_bytes_per_second() > 0) {
    parts.push_back(
        absl::StrCat("dirty ", HumanRate(p.dirty_rate_bytes_per_second())));
  }
  if (p.bandwidth_bytes_per_second() > 0) {
    parts.push_back(
        absl::StrCat("bandwidth ", HumanRate(p.bandwidth_bytes_per_second())));
  }
  return absl::StrJoin(parts, ", ");
}

std::string FormatMigrationDetails(const migd::v1::Migration& m) {
  std::vector<std::pair<std::string, std::string>> rows = {
      {"job", m.job_id()},
      {"role", RoleName(m.role())},
      {"phase", PhaseName(m.phase())},
      {"peer", OrDash(m.peer())},
  };
  if (!m.peer_identity().empty())
    rows.push_back({"peer id", m.peer_identity()});
  InDoubtRows(m, &rows);
  if (m.has_queue()) rows.push_back({"queue", QueueString(m.queue())});
  rows.push_back({"progress", ProgressString(m.bytes_done(), m.bytes_total())});
  if (m.has_created())
    rows.push_back({"created", FormatTimestamp(m.created())});
  if (m.has_finished()) {
    rows.push_back({"finished", FormatTimestamp(m.finished())});
  }
  if (m.has_transfer_time()) {
    rows.push_back(
        {"transfer",
         absl::StrCat(HumanDuration(ToAbslDuration(m.transfer_time())), " at ",
                      HumanRate(Throughput(m)))});
  }
  if (m.has_precopy()) {
    rows.push_back({"pre-copy", FormatPrecopyOutcome(m)});
    rows.push_back({"estimate", FormatPrecopyEstimate(m.precopy())});
  }
  if (HasPrecopy(m)) {
    rows.push_back(
        {"moved", SplitString(m.precopy_bytes(), m.stop_copy_bytes())});
  }
  if (m.has_downtime() || m.has_downtime_breakdown()) {
    rows.push_back({"downtime", FormatDowntime(m)});
  }
  if (m.has_failure()) {
    rows.push_back({"failure", absl::StrCat(ReasonName(m.failure().reason()),
                                            ": ", m.failure().message())});
  }
  if (m.notices_size() > 0) rows.push_back({"notices", NoticesString(m)});
  std::string out = FormatLabeled(rows, "");
  if (m.devices_size() > 0) {
    absl::StrAppend(&out, "devices\n");
    bool precopy = HasPrecopy(m);
    std::vector<std::vector<std::string>> devs;
    for (const auto& d : m.devices()) {
      std::vector<std::string> row = {
          "", PairString(m, d), DeviceStateName(d.state()),
          ProgressString(d.bytes_done(), d.bytes_total())};
      if (precopy) {
        std::string split = SplitString(d.precopy_bytes(), d.stop_copy_bytes());
        if (d.initial_data_acked()) absl::StrAppend(&split, ", acked");
        row.push_back(split);
      }
      if (d.has_downtime()) {
        std::string downtime = FormatDowntimeBreakdown(d.downtime());
        if (!downtime.empty())
          row.push_back(absl::StrCat("downtime ", downtime));
      }
      devs.push_back(std::move(row));
    }
    // The empty first cell indents each row by FormatTable's two-space gap.
    absl::StrAppend(&out, FormatTable(devs));
  }
  return out;
}

std::string FormatSummary(const migd::v1::Migration& m) {
  std::string head =
      absl::StrCat("Job ", m.job_id(), " ", PhaseName(m.phase()));
  if (m.has_created() && m.has_finished()) {
    absl::StrAppend(
        &head, " after ",
        HumanDuration(ToAbslTime(m.finished()) - ToAbslTime(m.created())));
  }
  std::string out = absl::StrCat(head, "\n");
  std::vector<std::pair<std::string, std::string>> rows;
  std::string moved = HumanBytes(m.bytes_done());
  if (m.bytes_total() > 0 && m.bytes_total() != m.bytes_done()) {
    absl::StrAppend(&moved, " of ", HumanBytes(m.bytes_total()));
  }
  if (m.has_transfer_time()) {
    absl::StrAppend(&moved, " in ",
                    HumanDuration(ToAbslDuration(m.transfer_time())));
  }
  rows.push_back({"transferred", moved});
  rows.push_back({"throughput", HumanRate(Throughput(m))});
  if (HasPrecopy(m)) rows.push_back({"pre-copy", FormatPrecopySummary(m)});
  rows.push_back({"downtime", FormatDowntime(m)});
  if (m.has_failure()) {
    rows.push_back({"failure", absl::StrCat(ReasonName(m.failure().reason()),
                                            ": ", m.failure().message())});
  }
  if (m.notices_size() > 0) rows.push_back({"notices", NoticesString(m)});
  if (m.devices_size() > 0) {
    bool precopy = HasPrecopy(m);
    std::vector<std::vector<std::string>> devs;
    for (const auto& d : m.devices()) {
      std::vector<std::string> row = {PairString(m, d),
                                      DeviceStateName(d.state()),
                                      HumanBytes(d.bytes_done())};
      if (precopy) {
        row.push_back(absl::StrCat(
            "(", SplitString(d.precopy_bytes(), d.stop_copy_bytes()), ")"));
      }
      devs.push_back(std::move(row));
    }
    std::string table = FormatTable(devs);
    table.pop_back();  // FormatLabeled ends each line itself
    rows.push_back({"devices", table});
  }
  absl::StrAppend(&out, FormatLabeled(rows, "  "));
  return out;
}

std::vector<uint64_t> DirtyPageAddresses(const migd::v1::DirtyPages& p) {
  std::vector<uint64_t> out;
  const uint64_t page = p.page_size();
  if (page == 0) return out;
  const uint64_t pages = p.length() / page + (p.length() % page != 0 ? 1 : 0);
  if (p.all_dirty()) {
    out.reserve(pages);
    for (uint64_t n = 0; n < pages; ++n) out.push_back(p.iova() + n * page);
    return out;
  }
  const std::string& bits = p.bitmap();
  for (uint64_t byte = 0; byte < bits.size() && byte * 8 < pages; ++byte) {
    const auto b = static_cast<unsigned char>(bits[byte]);
    for (int bit = 0; bit < 8 && b != 0; ++bit) {
      const uint64_t n = byte * 8 + bit;
      if (n < pages && (b & (1u << bit)) != 0) {
        out.push_back(p.iova() + n * page);
      }
    }
  }
  return out;
}

std::string FormatDirtyPages(const migd::v1::DirtyPages& p) {
  const std::vector<uint64_t> pages = DirtyPageAddresses(p);
  std::string list;
  if (p.all_dirty()) {
    list = "all";
  } else if (pages.empty()) {
    list = "-";
  } else {
    list = absl::StrJoin(pages, ",", [](std::string* out, uint64_t a) {
      absl::StrAppend(out, "0x", absl::Hex(a));
    });
  }
  return absl::StrCat("device=", p.device(), " iteration=", p.iteration(),
                      " final=", p.final() ? "true" : "false",
                      " all_dirty=", p.all_dirty() ? "true" : "false",
                      " range=0x", absl::Hex(p.iova()), "+0x",
                      absl::Hex(p.length()), " page_size=", p.page_size(),
                      " dirty=", pages.size(), " pages=", list);
}

std::string BlockerKindWords(migd::v1::MigrationBlocker::Kind kind) {
  switch (kind) {
    case migd::v1::MigrationBlocker::KIND_NO_MIGRATION_SUPPORT:
      return "no migration support";
    case migd::v1::MigrationBlocker::KIND_INCOMPATIBLE:
      return "incompatible";
    case migd::v1::MigrationBlocker::KIND_DEVICE_BUSY:
      return "device busy";
    case migd::v1::MigrationBlocker::KIND_DEVICE_NOT_FOUND:
      return "no such device";
    case migd::v1::MigrationBlocker::KIND_P2P_MIX:
      return "mixed P2P support";
    case migd::v1::MigrationBlocker::KIND_DESTINATION_UNREACHABLE:
      return "destination unreachable";
    case migd::v1::MigrationBlocker::KIND_PLUGIN_CONFLICT:
      return "plugin conflict";
    default:
      return "blocked";
  }
}

std::string FormatBlocker(const migd::v1::MigrationBlocker& b) {
  std::string out = absl::StrCat(b.side().empty() ? "" : b.side() + ", ",
                                 BlockerKindWords(b.kind()));
  if (!b.message().empty()) absl::StrAppend(&out, ": ", b.message());
  if (!b.field().empty()) {
    absl::StrAppend(&out, "; ", b.field(), ": source ",
                    OrDash(b.source_value()), ", destination ",
                    OrDash(b.destination_value()));
  }
  if (!b.remedy().empty()) absl::StrAppend(&out, "; remedy: ", b.remedy());
  return out;
}

namespace {

// "emulated: emulated device, format 1", the plugin alone without a
// summary, "no plugin: ..." without a plugin, "-" when nothing is known.
std::string PluginString(const std::string& plugin,
                         const std::string& summary) {
  if (plugin.empty() && summary.empty()) return "-";
  std::string out = plugin.empty() ? "no plugin" : plugin;
  if (!summary.empty()) absl::StrAppend(&out, ": ", summary);
  return out;
}

}  // namespace

std::string FormatCheckReport(const migd::v1::CheckMigrationResponse& r,
                              const std::string& destination) {
  int blocked = 0;
  for (const auto& d : r.devices()) blocked += d.migratable() ? 0 : 1;
  const std::string to =
      absl::StrCat(destination, " (",
                   r.destination_identity().empty()
                       ? std::string("no identity")
                       : absl::StrCat("identity ", r.destination_identity()),
                   ")");
  std::string out;
  if (r.migratable()) {
    out = absl::StrCat(
        "MIGRATABLE: ", Plural(r.devices_size(), "device", "devices"), " to ",
        to);
  } else if (blocked > 0) {
    out = absl::StrCat("BLOCKED: ", blocked, " of ",
                       Plural(r.devices_size(), "device", "devices"),
                       " cannot migrate to ", to);
  } else {
    out = absl::StrCat("BLOCKED: cannot migrate to ", to);
  }
  absl::StrAppend(
      &out, "; bandwidth ",
      r.bandwidth_bytes_per_second() > 0
          ? HumanRate(static_cast<double>(r.bandwidth_bytes_per_second()))
          : std::string("not measured"),
      ", predicted downtime ",
      r.has_predicted_downtime()
          ? HumanDuration(ToAbslDuration(r.predicted_downtime()))
          : std::string("unknown"),
      "\n");
  for (const auto& d : r.devices()) {
    absl::StrAppend(&out, OrDash(d.source_device()), " -> ",
                    OrDash(d.destination_device()), "  ",
                    d.migratable() ? "migratable" : "BLOCKED", "\n");
    std::vector<std::pair<std::string, std::string>> rows = {
        {"source", PluginString(d.source_plugin(), d.source_summary())},
        {"destination",
         PluginString(d.destination_plugin(), d.destination_summary())},
        {"stop-copy",
         d.stop_copy_bytes() > 0 ? HumanBytes(d.stop_copy_bytes()) : "-"},
    };
    for (const auto& b : d.blockers()) {
      rows.push_back({"blocker", FormatBlocker(b)});
    }
    absl::StrAppend(&out, FormatLabeled(rows, "  "));
  }
  return out;
}

std::string FormatPlugins(const migd::v1::ListPluginsResponse& r) {
  const std::string dir = r.plugin_dir().empty()
                              ? std::string("(no plugin directory)")
                              : absl::StrCat("from ", r.plugin_dir());
  std::string out;
  if (r.plugins_size() == 0) {
    out = absl::StrCat("No plugins loaded ", dir, "\n");
  } else {
    out = absl::StrCat("Plugins loaded ", dir, ":\n");
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "VERSION", "ABI", "DEVICES", "PATH", "DESCRIPTION"}};
    for (const auto& p : r.plugins()) {
      rows.push_back(
          {OrDash(p.name()), OrDash(p.version()), absl::StrCat(p.abi_version()),
           p.devices().empty() ? "-" : absl::StrJoin(p.devices(), ", "),
           OrDash(p.path()), OrDash(p.description())});
    }
    absl::StrAppend(&out, FormatTable(rows));
  }
  if (r.failures_size() > 0) {
    absl::StrAppend(&out, "Failed to load:\n");
    for (const auto& f : r.failures()) {
      absl::StrAppend(&out, "  ", f.path(), ": ", OrDash(f.reason()), "\n");
    }
  }
  if (r.conflicts_size() > 0) {
    absl::StrAppend(&out, "Conflicts:\n");
    for (const auto& c : r.conflicts()) absl::StrAppend(&out, "  ", c, "\n");
  }
  return out;
}

std::string FormatHostDevice(const migd::v1::HostDevice& d) {
  std::string out;
  const auto line = [&out](absl::string_view key, absl::string_view value) {
    absl::StrAppend(&out, key, ": ", value, "\n");
  };
  const auto or_none = [](const std::string& s) {
    return s.empty() ? std::string("(none)") : s;
  };
  line("address", d.address());
  line("bus", d.bus());
  line("ids", absl::StrFormat("%04x:%04x", d.vendor_id(), d.device_id()));
  line("subsystem", absl::StrFormat("%04x:%04x", d.subsystem_vendor_id(),
                                    d.subsystem_device_id()));
  line("class", absl::StrFormat("0x%06x", d.class_code()));
  line("driver", or_none(d.driver()));
  line("driver_override", or_none(d.driver_override()));
  line("modalias", or_none(d.modalias()));
  if (d.choice_error().empty()) {
    line("vfio_module", or_none(d.chosen_module()));
    line("vfio_driver",
         d.chosen_driver().empty() ? "(not loaded)" : d.chosen_driver());
    line("vfio_choice", d.choice_reason());
  } else {
    line("vfio_choice_error", d.choice_error());
  }
  line("iommu_group",
       d.iommu_group() < 0 ? "(none)" : absl::StrCat(d.iommu_group()));
  line("group_viable", d.group_viable()
                           ? "yes"
                           : absl::StrCat("no: ", d.group_not_viable_reason()));
  line("in_use", d.in_use() ? "yes" : "no");
  if (d.bound_by_migd()) {
    const migd::v1::MigdBinding& b = d.migd_binding();
    line("bound_by_migd",
         absl::StrCat("yes: to ", b.driver(), "; unbind returns it to ",
                      or_none(b.original_driver()), " with driver_override ",
                      or_none(b.original_driver_override())));
  } else {
    line("bound_by_migd", "no");
  }
  if (!d.agent_device().empty()) {
    line("agent_device", d.agent_device());
    line("job", or_none(d.job_id()));
  }
  if (d.has_sriov_pf()) {
    line("sriov_totalvfs", absl::StrCat(d.sriov_pf().total_vfs()));
    line("sriov_numvfs", absl::StrCat(d.sriov_pf().num_vfs()));
    for (const auto& vf : d.sriov_pf().vfs()) {
      line("vf", absl::StrCat(vf.index(), " ", vf.address()));
    }
  }
  if (d.has_sriov_vf()) {
    line("physfn",
         absl::StrCat(d.sriov_vf().pf_address(), " vf ", d.sriov_vf().index()));
  }
  for (const auto& t : d.mdev_types()) {
    line("mdev_type",
         absl::StrCat(t.id(), " available=", t.available_instances(), " api=",
                      OrDash(t.device_api()), " name=", OrDash(t.name())));
  }
  for (const auto& m : d.mdevs()) {
    line("mdev", absl::StrCat(m.uuid(), " ", m.type()));
  }
  for (const auto& n : d.notices()) line("notice", n);
  return out;
}

std::string FormatMdevTypes(const migd::v1::ListMdevTypesResponse& r) {
  std::string out = absl::StrCat("parent: ", r.parent(), "\n");
  std::vector<std::vector<std::string>> rows = {
      {"TYPE", "AVAILABLE", "API", "NAME"}};
  for (const auto& t : r.types()) {
    rows.push_back({t.id(), absl::StrCat(t.available_instances()),
                    OrDash(t.device_api()), OrDash(t.name())});
  }
  absl::StrAppend(&out, FormatTable(rows));
  if (r.instances_size() == 0) {
    absl::StrAppend(&out, "instances: none\n");
  } else {
    absl::StrAppend(&out, "instances:\n");
    std::vector<std::vector<std::string>> instances = {{"UUID", "TYPE"}};
    for (const auto& m : r.instances()) {
      instances.push_back({m.uuid(), m.type()});
    }
    absl::StrAppend(&out, FormatTable(instances));
  }
  return out;
}

std::string FormatAllocations(
    const google::protobuf::RepeatedPtrField<migd::v1::AllocatedDevice>& d,
    absl::string_view none) {
  if (d.empty()) return absl::StrCat(none, "\n");
  std::vector<std::vector<std::string>> rows = {
      {"OWNER", "KEY", "DEVICE", "DRIVER"}};
  for (const migd::v1::AllocatedDevice& a : d) {
    if (a.mdev_uuid().empty()) {
      rows.push_back({a.owner(), a.key(), a.address(), OrDash(a.driver())});
    } else {
      rows.push_back(
          {a.owner(), a.key(), a.mdev_uuid(),
           absl::StrCat("mdev ", a.mdev_type(), " on ", a.mdev_parent())});
    }
  }
  return FormatTable(rows);
}

std::string FormatUtcTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

namespace {

// `text` as a JSON string, quotes included.
std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

// Members of a JSON object, one a line at `indent`; values already JSON.
std::string JsonObject(
    const std::vector<std::pair<std::string, std::string>>& members,
    const std::string& indent) {
  std::vector<std::string> lines;
  for (const auto& [key, value] : members) {
    lines.push_back(absl::StrCat(indent, "  ", JsonQuote(key), ": ", value));
  }
  return absl::StrCat("{\n", absl::StrJoin(lines, ",\n"), "\n", indent, "}");
}

// identity, subject, serial, not_before, not_after of `c` as JSON members.
std::vector<std::pair<std::string, std::string>> CertificateMembers(
    const security::CertificateInfo& c) {
  return {{"identity", JsonQuote(c.identity)},
          {"subject", JsonQuote(c.subject)},
          {"serial", JsonQuote(c.serial)},
          {"not_before", JsonQuote(FormatUtcTime(c.not_before))},
          {"not_after", JsonQuote(FormatUtcTime(c.not_after))}};
}

}  // namespace

std::string FormatIdentity(const IdentityReport& r) {
  std::vector<std::pair<std::string, std::string>> rows = {{"agent", r.agent}};
  if (!r.tls) {
    rows.push_back(
        {"connection", absl::StrCat("plaintext (", r.insecure_from,
                                    "): nothing encrypted, no certificate, no "
                                    "identity")});
    return FormatLabeled(rows, "");
  }
  rows.push_back(
      {"connection",
       r.expected_identity.empty()
           ? std::string("mutual TLS; the agent's host was checked against "
                         "its certificate")
           : absl::StrCat("mutual TLS; the agent's certificate was checked "
                          "to carry ",
                          r.expected_identity)});
  rows.push_back({"identity", OrDash(r.server.identity)});
  rows.push_back({"subject", OrDash(r.server.subject)});
  rows.push_back({"serial", OrDash(r.server.serial)});
  rows.push_back({"not before", FormatUtcTime(r.server.not_before)});
  rows.push_back({"not after", FormatUtcTime(r.server.not_after)});
  rows.push_back({"client identity", OrDash(r.client.identity)});
  rows.push_back({"client subject", OrDash(r.client.subject)});
  rows.push_back({"client serial", OrDash(r.client.serial)});
  rows.push_back({"client not after", FormatUtcTime(r.client.not_after)});
  rows.push_back({"client cert", r.client_certificate});
  return FormatLabeled(rows, "");
}

std::string IdentityJson(const IdentityReport& r) {
  std::vector<std::pair<std::string, std::string>> members = {
      {"agent", JsonQuote(r.name)},
      {"address", JsonQuote(r.address)},
      {"tls", r.tls ? "true" : "false"}};
  if (!r.tls) {
    members.push_back({"identity", "\"\""});
    return JsonObject(members, "");
  }
  members.push_back({"expected_identity", JsonQuote(r.expected_identity)});
  for (auto& m : CertificateMembers(r.server)) members.push_back(std::move(m));
  std::vector<std::pair<std::string, std::string>> client = {
      {"certificate", JsonQuote(r.client_certificate)}};
  for (auto& m : CertificateMembers(r.client)) client.push_back(std::move(m));
  members.push_back({"client", JsonObject(client, "  ")});
  return JsonObject(members, "");
}

std::string ToJson(const google::protobuf::Message& message, bool compact) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = !compact;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  auto status =
      google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) {
    // Hand-built so it stays valid JSON whatever the status text holds.
    return absl::StrCat("{\"error\":", JsonQuote(status.ToString()), "}");
  }
  while (!out.empty() && absl::ascii_isspace(out.back())) out.pop_back();
  return out;
}

}  // namespace migd::cli
