// migd/vfio/uapi.h
//
// The VFIO migration uAPI v2 as migd uses it: the kernel's structures and ioctl
// numbers (including those Debian 12's 6.1 <linux/vfio.h> lacks: PRE_COPY
// states, VFIO_MIG_GET_PRECOPY_INFO, MIG_DATA_SIZE), and typed wrappers for
// states and capability flags so the rest of migd never handles raw integers.

#ifndef MIGD_VFIO_UAPI_H_
#define MIGD_VFIO_UAPI_H_

#include <linux/types.h>
#include <linux/vfio.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

// ---- Kernel definitions missing from older headers (values from Linux 6.3+).
// ----

#ifndef VFIO_MIGRATION_PRE_COPY
#define VFIO_MIGRATION_PRE_COPY (1 << 2)
#endif

#ifndef VFIO_MIG_GET_PRECOPY_INFO
struct vfio_precopy_info {
  __u32 argsz;
  __u32 flags;
  __aligned_u64 initial_bytes;
  __aligned_u64 dirty_bytes;
};
#define VFIO_MIG_GET_PRECOPY_INFO _IO(VFIO_TYPE, VFIO_BASE + 21)
#endif

#ifndef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
struct vfio_device_feature_mig_data_size {
  __aligned_u64 stop_copy_length;
};
#define VFIO_DEVICE_FEATURE_MIG_DATA_SIZE 9
#endif

namespace migd::vfio {

// enum vfio_device_mig_state. PRE_COPY and PRE_COPY_P2P exist from Linux 6.2.
enum class MigState : uint32_t {
  kError = 0,
  kStop = 1,
  kRunning = 2,
  kStopCopy = 3,
  kResuming = 4,
  kRunningP2P = 5,
  kPreCopy = 6,
  kPreCopyP2P = 7,
};

inline constexpr int kNumMigStates = 8;

// VFIO_MIGRATION_* capability bits as reported by
// VFIO_DEVICE_FEATURE_MIGRATION.
using MigFlags = uint64_t;
inline constexpr MigFlags kMigStopCopy = 1u << 0;  // mandatory
inline constexpr MigFlags kMigP2P = 1u << 1;
inline constexpr MigFlags kMigPreCopy = 1u << 2;
inline constexpr MigFlags kMigKnownFlags = kMigStopCopy | kMigP2P | kMigPreCopy;

// "RUNNING_P2P", "PRE_COPY", ...; "INVALID(n)" for out-of-range values.
std::string MigStateName(MigState s);

// Parses a state name as MigStateName prints it (case-insensitive).
std::optional<MigState> ParseMigState(absl::string_view name);

// The state for a raw kernel value, or nullopt if the kernel has no such state.
std::optional<MigState> MigStateFromRaw(uint32_t raw);

// "STOP_COPY|P2P|PRE_COPY": known bits in bit order, then any unknown bits as
// one hex value ("STOP_COPY|0x10"); "NONE" for 0.
std::string MigFlagsName(MigFlags flags);

// True for the states in which the device may run (initiate DMA, change state):
// RUNNING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P.
bool IsRunningState(MigState s);

// True for the states that carry a save session (a readable data fd).
bool IsSavingState(MigState s);

// True for the P2P quiesced states (RUNNING_P2P, PRE_COPY_P2P).
bool IsP2PState(MigState s);

// True when `flags` allow the device to be in `s` (STOP_COPY is required for
// all; P2P states need kMigP2P; PRE_COPY states need kMigPreCopy). Unlike the
// kernel's state_flags_table (~0U for ERROR, so that ERROR can never be
// requested), ERROR counts as supported: a migratable device can end up there.
bool StateSupported(MigFlags flags, MigState s);

}  // namespace migd::vfio

#endif  // MIGD_VFIO_UAPI_H_
