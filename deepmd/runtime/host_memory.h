#ifndef DEEPMD_RUNTIME_HOST_MEMORY_H_
#define DEEPMD_RUNTIME_HOST_MEMORY_H_

namespace deepmd::runtime {

// Makes glibc keep freed memory for reuse instead of returning it to the kernel, once per process.
//
// A step allocates and frees the same large activations in every layer (hundreds of MB at a few
// thousand atoms). By default glibc serves each with a fresh mmap, so every step pays a page fault and
// a kernel zero-fill per 4 KiB touched: on a 2-core machine that was a third of a DPA3 step. With
// mmap off and the heap trimmed only beyond 2 GiB free at its top (mallopt takes an int), the next
// layer reuses warm pages. The process keeps about its peak footprint (what an MD run needs anyway).
// Process-wide: it applies to the host (LAMMPS) too, which allocates little per step.
//
// Part of the process policy (process_policy.h): DEEPMD_MALLOC=system leaves glibc's defaults alone.
void KeepFreedMemory();

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_HOST_MEMORY_H_
