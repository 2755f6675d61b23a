// migd/base/thread_name.h
//
// Names the calling thread, so that top -H, perf, gdb and /proc/PID/task/*/comm
// say which of an agent's threads is which ("src-job", "dst-load", ...) rather
// than the name each inherits from whoever started it (a gRPC server thread,
// "grpcpp_sync_ser"). The transfer benchmark reports each thread's CPU time
// under these names, and the busiest one as the job's busiest stage.
//
// Linux keeps at most 15 bytes of a name: longer names are cut there. Naming
// is best effort and never fails the caller.

#ifndef MIGD_BASE_THREAD_NAME_H_
#define MIGD_BASE_THREAD_NAME_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace migd::base {

// The longest name the kernel keeps (TASK_COMM_LEN - 1).
inline constexpr size_t kMaxThreadNameBytes = 15;

// Sets the calling thread's name to the first kMaxThreadNameBytes bytes of
// `name`.
void NameThisThread(std::string_view name);

// The calling thread's name; empty if it cannot be read.
std::string ThisThreadName();

}  // namespace migd::base

#endif  // MIGD_BASE_THREAD_NAME_H_
