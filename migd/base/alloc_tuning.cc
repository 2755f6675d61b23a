#include "migd/base/alloc_tuning.h"

#include <malloc.h>

namespace migd::base {

void TuneAllocatorForBulkTransfer() {
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_ARENA_MAX, 4);
}

}  // namespace migd::base
