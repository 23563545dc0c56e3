#include "deepmd/runtime/host_memory.h"

#include <malloc.h>

#include <limits>

namespace deepmd::runtime {

void KeepFreedMemory() {
  static const bool configured = [] {
#ifdef __GLIBC__
    mallopt(M_MMAP_MAX, 0);  // large blocks come from the heap, not from fresh mappings
    // and freed ones stay there for the next step (up to 2 GiB free at the heap's top: mallopt takes an int)
    mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
#endif
    return true;
  }();
  (void)configured;
}

}  // namespace deepmd::runtime
