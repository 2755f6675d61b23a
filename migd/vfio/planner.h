// migd/vfio/planner.h
//
// Plans the single-step arcs the kernel takes between two VFIO migration
// states. The kernel walks these arcs itself when given a far target
// (vfio_mig_get_next_state in drivers/vfio/vfio_main.c); migd plans the same
// path so that, when an arc fails, it knows which state the device was left in,
// and so that an emulated device walks exactly what a kernel driver would.

#ifndef MIGD_VFIO_PLANNER_H_
#define MIGD_VFIO_PLANNER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "migd/vfio/uapi.h"

namespace migd::vfio {

// True when `from` -> `to` is one of the kernel's single-step arcs
// (ignoring whether the device's flags allow either state). Includes the arcs
// only devices without some optional state take: RUNNING <-> STOP (no P2P) and
// PRE_COPY -> STOP_COPY (PRE_COPY without P2P).
bool IsSingleStepArc(MigState from, MigState to);

// The next state the kernel moves to on the way from `cur` to `target` for a
// device advertising `flags`. kFailedPrecondition when the kernel would refuse
// (ERROR as either end, STOP_COPY -> PRE_COPY*, or a state the flags do not
// allow); kInvalidArgument when `flags` lack STOP_COPY. Returns `target` when
// cur == target, as the kernel does.
absl::StatusOr<MigState> NextState(MigFlags flags, MigState cur,
                                   MigState target);

// Returns the arcs from `from` to `to` for a device advertising `flags`
// (VFIO_MIGRATION_* bits), in order, excluding `from` and including `to`.
// Empty when from == to. Fails as NextState does.
absl::StatusOr<std::vector<MigState>> PlanArcs(MigFlags flags, MigState from,
                                               MigState to);

}  // namespace migd::vfio

#endif  // MIGD_VFIO_PLANNER_H_
