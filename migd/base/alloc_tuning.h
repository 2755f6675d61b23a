// migd/base/alloc_tuning.h
//
// The heap settings of a process that moves bulk data through gRPC. Called
// once at the start of main, before any thread exists.

#ifndef MIGD_BASE_ALLOC_TUNING_H_
#define MIGD_BASE_ALLOC_TUNING_H_

namespace migd::base {

// gRPC's receive buffers come and go by the megabyte: keeps freed memory in
// the heap rather than returning it to the kernel and faulting it back in for
// every chunk, but bounds what the heap keeps (a few arenas, trimmed past
// 64 MiB) so the process stays small.
void TuneAllocatorForBulkTransfer();

}  // namespace migd::base

#endif  // MIGD_BASE_ALLOC_TUNING_H_
