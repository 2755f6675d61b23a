// migd/vfio/planner.cc
//
// A transcription of vfio_mig_get_next_state() from drivers/vfio/vfio_main.c
// (Linux 6.2+, with the PRE_COPY states), plus the fix that ends the skip loop
// at ERROR (in the unfixed kernel, STOP_COPY -> PRE_COPY* on a pre-copy
// device spins forever there).

#include "migd/vfio/planner.h"

#include <array>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace migd::vfio {
namespace {

using Table = std::array<std::array<MigState, kNumMigStates>, kNumMigStates>;

constexpr int Idx(MigState s) { return static_cast<int>(s); }

// vfio_from_fsm_table: [cur][target] is the next state on the way from cur to
// target, before states the device does not advertise are skipped. ERROR marks
// a refused transition. Rows and entries are in the kernel's source order.
constexpr Table BuildFsmTable() {
  constexpr MigState STOP = MigState::kStop;
  constexpr MigState RUNNING = MigState::kRunning;
  constexpr MigState PRE_COPY = MigState::kPreCopy;
  constexpr MigState PRE_COPY_P2P = MigState::kPreCopyP2P;
  constexpr MigState STOP_COPY = MigState::kStopCopy;
  constexpr MigState RESUMING = MigState::kResuming;
  constexpr MigState RUNNING_P2P = MigState::kRunningP2P;
  constexpr MigState ERROR = MigState::kError;

  struct Entry {
    MigState cur, target, next;
  };
  constexpr Entry kEntries[] = {
      // [VFIO_DEVICE_STATE_STOP]
      {STOP, STOP, STOP},
      {STOP, RUNNING, RUNNING_P2P},
      {STOP, PRE_COPY, RUNNING_P2P},
      {STOP, PRE_COPY_P2P, RUNNING_P2P},
      {STOP, STOP_COPY, STOP_COPY},
      {STOP, RESUMING, RESUMING},
      {STOP, RUNNING_P2P, RUNNING_P2P},
      {STOP, ERROR, ERROR},
      // [VFIO_DEVICE_STATE_RUNNING]
      {RUNNING, STOP, RUNNING_P2P},
      {RUNNING, RUNNING, RUNNING},
      {RUNNING, PRE_COPY, PRE_COPY},
      {RUNNING, PRE_COPY_P2P, RUNNING_P2P},
      {RUNNING, STOP_COPY, RUNNING_P2P},
      {RUNNING, RESUMING, RUNNING_P2P},
      {RUNNING, RUNNING_P2P, RUNNING_P2P},
      {RUNNING, ERROR, ERROR},
      // [VFIO_DEVICE_STATE_PRE_COPY]
      {PRE_COPY, STOP, RUNNING},
      {PRE_COPY, RUNNING, RUNNING},
      {PRE_COPY, PRE_COPY, PRE_COPY},
      {PRE_COPY, PRE_COPY_P2P, PRE_COPY_P2P},
      {PRE_COPY, STOP_COPY, PRE_COPY_P2P},
      {PRE_COPY, RESUMING, RUNNING},
      {PRE_COPY, RUNNING_P2P, RUNNING},
      {PRE_COPY, ERROR, ERROR},
      // [VFIO_DEVICE_STATE_PRE_COPY_P2P]
      {PRE_COPY_P2P, STOP, RUNNING_P2P},
      {PRE_COPY_P2P, RUNNING, RUNNING_P2P},
      {PRE_COPY_P2P, PRE_COPY, PRE_COPY},
      {PRE_COPY_P2P, PRE_COPY_P2P, PRE_COPY_P2P},
      {PRE_COPY_P2P, STOP_COPY, STOP_COPY},
      {PRE_COPY_P2P, RESUMING, RUNNING_P2P},
      {PRE_COPY_P2P, RUNNING_P2P, RUNNING_P2P},
      {PRE_COPY_P2P, ERROR, ERROR},
      // [VFIO_DEVICE_STATE_STOP_COPY]
      {STOP_COPY, STOP, STOP},
      {STOP_COPY, RUNNING, STOP},
      {STOP_COPY, PRE_COPY, ERROR},
      {STOP_COPY, PRE_COPY_P2P, ERROR},
      {STOP_COPY, STOP_COPY, STOP_COPY},
      {STOP_COPY, RESUMING, STOP},
      {STOP_COPY, RUNNING_P2P, STOP},
      {STOP_COPY, ERROR, ERROR},
      // [VFIO_DEVICE_STATE_RESUMING]
      {RESUMING, STOP, STOP},
      {RESUMING, RUNNING, STOP},
      {RESUMING, PRE_COPY, STOP},
      {RESUMING, PRE_COPY_P2P, STOP},
      {RESUMING, STOP_COPY, STOP},
      {RESUMING, RESUMING, RESUMING},
      {RESUMING, RUNNING_P2P, STOP},
      {RESUMING, ERROR, ERROR},
      // [VFIO_DEVICE_STATE_RUNNING_P2P]
      {RUNNING_P2P, STOP, STOP},
      {RUNNING_P2P, RUNNING, RUNNING},
      {RUNNING_P2P, PRE_COPY, RUNNING},
      {RUNNING_P2P, PRE_COPY_P2P, PRE_COPY_P2P},
      {RUNNING_P2P, STOP_COPY, STOP},
      {RUNNING_P2P, RESUMING, STOP},
      {RUNNING_P2P, RUNNING_P2P, RUNNING_P2P},
      {RUNNING_P2P, ERROR, ERROR},
      // [VFIO_DEVICE_STATE_ERROR]
      {ERROR, STOP, ERROR},
      {ERROR, RUNNING, ERROR},
      {ERROR, PRE_COPY, ERROR},
      {ERROR, PRE_COPY_P2P, ERROR},
      {ERROR, STOP_COPY, ERROR},
      {ERROR, RESUMING, ERROR},
      {ERROR, RUNNING_P2P, ERROR},
      {ERROR, ERROR, ERROR},
  };
  static_assert(std::size(kEntries) == kNumMigStates * kNumMigStates);

  Table table{};
  std::array<std::array<bool, kNumMigStates>, kNumMigStates> seen{};
  for (const Entry& e : kEntries) {
    // Not a constant expression (so a compile error) if an entry repeats.
    if (seen[Idx(e.cur)][Idx(e.target)]) throw "duplicate table entry";
    seen[Idx(e.cur)][Idx(e.target)] = true;
    table[Idx(e.cur)][Idx(e.target)] = e.next;
  }
  return table;
}

constexpr Table kFsmTable = BuildFsmTable();

// The flags a state needs beyond what the device advertises, for messages.
std::string MissingFlagsName(MigFlags flags, MigState s) {
  std::vector<std::string> missing;
  if (!(flags & kMigStopCopy)) missing.push_back("VFIO_MIGRATION_STOP_COPY");
  if (IsP2PState(s) && !(flags & kMigP2P)) {
    missing.push_back("VFIO_MIGRATION_P2P");
  }
  if ((s == MigState::kPreCopy || s == MigState::kPreCopyP2P) &&
      !(flags & kMigPreCopy)) {
    missing.push_back("VFIO_MIGRATION_PRE_COPY");
  }
  return absl::StrJoin(missing, "|");
}

absl::Status CheckEnds(MigFlags flags, MigState cur, MigState target) {
  if (!(flags & kMigStopCopy)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device advertises ", MigFlagsName(flags),
                     ", which lacks the mandatory VFIO_MIGRATION_STOP_COPY"));
  }
  for (MigState s : {cur, target}) {
    if (!MigStateFromRaw(static_cast<uint32_t>(s)).has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("no such migration state: ", MigStateName(s)));
    }
  }
  if (cur == MigState::kError) {
    return absl::FailedPreconditionError(
        absl::StrCat("no arc from ERROR to ", MigStateName(target),
                     ": ERROR is left only by VFIO_DEVICE_RESET"));
  }
  if (target == MigState::kError) {
    return absl::FailedPreconditionError(
        absl::StrCat("no arc from ", MigStateName(cur),
                     " to ERROR: ERROR cannot be requested"));
  }
  for (MigState s : {cur, target}) {
    if (!StateSupported(flags, s)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "state ", MigStateName(s), " needs ", MissingFlagsName(flags, s),
          "; device advertises ", MigFlagsName(flags)));
    }
  }
  return absl::OkStatus();
}

// The loop of vfio_mig_get_next_state(), on ends already checked.
MigState NextHop(MigFlags flags, MigState cur, MigState target) {
  MigState next = kFsmTable[Idx(cur)][Idx(target)];
  while (next != MigState::kError && !StateSupported(flags, next)) {
    next = kFsmTable[Idx(next)][Idx(target)];
  }
  return next;
}

absl::Status NoArc(MigState cur, MigState target) {
  return absl::FailedPreconditionError(
      absl::StrCat("no arc from ", MigStateName(cur), " to ",
                   MigStateName(target), ": the kernel refuses it"));
}

}  // namespace

bool IsSingleStepArc(MigState from, MigState to) {
  using S = MigState;
  struct Arc {
    S from, to;
  };
  // Every arc some device configuration takes (the kernel's comment above
  // vfio_from_fsm_table lists them per VFIO_MIGRATION_* combination).
  static constexpr Arc kArcs[] = {
      {S::kResuming, S::kStop},       {S::kStop, S::kResuming},
      {S::kStop, S::kStopCopy},       {S::kStopCopy, S::kStop},
      {S::kRunning, S::kRunningP2P},  {S::kRunningP2P, S::kRunning},
      {S::kRunningP2P, S::kStop},     {S::kStop, S::kRunningP2P},
      {S::kRunning, S::kPreCopy},     {S::kPreCopy, S::kRunning},
      {S::kPreCopy, S::kStopCopy},    {S::kPreCopy, S::kPreCopyP2P},
      {S::kPreCopyP2P, S::kPreCopy},  {S::kPreCopyP2P, S::kRunningP2P},
      {S::kPreCopyP2P, S::kStopCopy}, {S::kRunningP2P, S::kPreCopyP2P},
      {S::kRunning, S::kStop},        {S::kStop, S::kRunning},
  };
  for (const Arc& a : kArcs) {
    if (a.from == from && a.to == to) return true;
  }
  return false;
}

absl::StatusOr<MigState> NextState(MigFlags flags, MigState cur,
                                   MigState target) {
  if (absl::Status s = CheckEnds(flags, cur, target); !s.ok()) return s;
  const MigState next = NextHop(flags, cur, target);
  if (next == MigState::kError) return NoArc(cur, target);
  return next;
}

absl::StatusOr<std::vector<MigState>> PlanArcs(MigFlags flags, MigState from,
                                               MigState to) {
  if (absl::Status s = CheckEnds(flags, from, to); !s.ok()) return s;
  std::vector<MigState> path;
  MigState cur = from;
  while (cur != to) {
    const MigState next = NextHop(flags, cur, to);
    // The kernel refuses the whole request up front only when the first hop
    // is ERROR; the table never leads to ERROR mid-path, but say so if it did.
    if (next == MigState::kError) return NoArc(cur, to);
    path.push_back(next);
    if (path.size() > kNumMigStates) {
      return absl::InternalError(
          absl::StrCat("no path from ", MigStateName(from), " to ",
                       MigStateName(to), " within ", kNumMigStates, " arcs"));
    }
    cur = next;
  }
  return path;
}

}  // namespace migd::vfio
