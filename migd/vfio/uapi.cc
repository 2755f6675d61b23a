// migd/vfio/uapi.cc

#include "migd/vfio/uapi.h"

#include <array>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace migd::vfio {
namespace {

// The typed values must stay the kernel's values.
static_assert(kMigStopCopy == VFIO_MIGRATION_STOP_COPY);
static_assert(kMigP2P == VFIO_MIGRATION_P2P);
static_assert(kMigPreCopy == VFIO_MIGRATION_PRE_COPY);
static_assert(static_cast<uint32_t>(MigState::kError) ==
              VFIO_DEVICE_STATE_ERROR);
static_assert(static_cast<uint32_t>(MigState::kStop) == VFIO_DEVICE_STATE_STOP);
static_assert(static_cast<uint32_t>(MigState::kRunning) ==
              VFIO_DEVICE_STATE_RUNNING);
static_assert(static_cast<uint32_t>(MigState::kStopCopy) ==
              VFIO_DEVICE_STATE_STOP_COPY);
static_assert(static_cast<uint32_t>(MigState::kResuming) ==
              VFIO_DEVICE_STATE_RESUMING);
static_assert(static_cast<uint32_t>(MigState::kRunningP2P) ==
              VFIO_DEVICE_STATE_RUNNING_P2P);
static_assert(static_cast<uint32_t>(MigState::kPreCopyP2P) ==
              static_cast<uint32_t>(MigState::kPreCopy) + 1);
static_assert(static_cast<uint32_t>(MigState::kPreCopyP2P) + 1 ==
              kNumMigStates);

// Indexed by the kernel's state value.
constexpr std::array<absl::string_view, kNumMigStates> kStateNames = {
    "ERROR",    "STOP",        "RUNNING",  "STOP_COPY",
    "RESUMING", "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P",
};

}  // namespace

std::string MigStateName(MigState s) {
  const uint32_t raw = static_cast<uint32_t>(s);
  if (raw < kStateNames.size()) return std::string(kStateNames[raw]);
  return absl::StrCat("INVALID(", raw, ")");
}

std::optional<MigState> ParseMigState(absl::string_view name) {
  for (uint32_t raw = 0; raw < kStateNames.size(); ++raw) {
    if (absl::EqualsIgnoreCase(name, kStateNames[raw])) {
      return static_cast<MigState>(raw);
    }
  }
  return std::nullopt;
}

std::optional<MigState> MigStateFromRaw(uint32_t raw) {
  if (raw >= static_cast<uint32_t>(kNumMigStates)) return std::nullopt;
  return static_cast<MigState>(raw);
}

std::string MigFlagsName(MigFlags flags) {
  std::vector<std::string> parts;
  if (flags & kMigStopCopy) parts.push_back("STOP_COPY");
  if (flags & kMigP2P) parts.push_back("P2P");
  if (flags & kMigPreCopy) parts.push_back("PRE_COPY");
  if (const MigFlags unknown = flags & ~kMigKnownFlags; unknown != 0) {
    parts.push_back(absl::StrCat("0x", absl::Hex(unknown)));
  }
  if (parts.empty()) return "NONE";
  return absl::StrJoin(parts, "|");
}

bool IsRunningState(MigState s) {
  switch (s) {
    case MigState::kRunning:
    case MigState::kRunningP2P:
    case MigState::kPreCopy:
    case MigState::kPreCopyP2P:
      return true;
    default:
      return false;
  }
}

bool IsSavingState(MigState s) {
  switch (s) {
    case MigState::kStopCopy:
    case MigState::kPreCopy:
    case MigState::kPreCopyP2P:
      return true;
    default:
      return false;
  }
}

bool IsP2PState(MigState s) {
  return s == MigState::kRunningP2P || s == MigState::kPreCopyP2P;
}

bool StateSupported(MigFlags flags, MigState s) {
  // The kernel's state_flags_table, except that ERROR (~0U there, so that no
  // caller can ask for it) counts as a state any migratable device can be in.
  MigFlags required;
  switch (s) {
    case MigState::kError:
    case MigState::kStop:
    case MigState::kRunning:
    case MigState::kStopCopy:
    case MigState::kResuming:
      required = kMigStopCopy;
      break;
    case MigState::kRunningP2P:
      required = kMigStopCopy | kMigP2P;
      break;
    case MigState::kPreCopy:
      required = kMigStopCopy | kMigPreCopy;
      break;
    case MigState::kPreCopyP2P:
      required = kMigStopCopy | kMigP2P | kMigPreCopy;
      break;
    default:
      return false;
  }
  return (flags & required) == required;
}

}  // namespace migd::vfio
