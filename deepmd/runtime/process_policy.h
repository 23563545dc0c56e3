// Process-wide settings the runtime depends on: glibc's malloc behaviour and the thread pools of
// LibTorch and of the BLAS it calls. Explicit, so that a host (the LAMMPS launcher and pair style, the
// tools) chooses them once and logs them; a DeepPot whose host chose none applies the default policy
// (PolicyFromEnvironment) at its first call.
#ifndef DEEPMD_RUNTIME_PROCESS_POLICY_H_
#define DEEPMD_RUNTIME_PROCESS_POLICY_H_

#include <string>

#include "absl/status/statusor.h"

namespace deepmd::runtime {

struct ProcessPolicy {
  // glibc keeps freed memory for the next step (host_memory.h); DEEPMD_MALLOC=system: false. Once
  // applied it stays for the process (mallopt cannot be undone safely).
  bool keep_freed_memory = true;
  // LibTorch's intra-op threads on this rank; 0 keeps LibTorch's default.
  int threads = 0;
  // OpenBLAS's own thread pool (LibTorch's float64 matrix products run in it), as many as `threads`.
  // OpenBLAS gives every thread a buffer, allocated on first use: with a pool per rank sized for the
  // whole machine, running out of memory made it retry forever inside the BLAS instead of failing in
  // LibTorch (a std::bad_alloc the runtime reports). 0 keeps OpenBLAS's default.
  int blas_threads = 0;
  // Denormal floats flushed to zero (FTZ/DAZ) on the thread that applies the policy, the rank's
  // compute thread; DEEPMD_DENORMALS=ieee: false. Small float32 activations and switch values far
  // from their active range are denormal, and the CPU's slow path for them made a float32 DPA3 step
  // 1.5x slower in Python (docs/performance.md; no difference measured in the C++ step so far); results
  // change by less than 1e-38 (float64: 1e-307).
  // LibTorch's worker threads, when DEEPMD_NUM_THREADS > 1, keep IEEE denormals.
  bool flush_denormals = true;
};

// The default policy for a process that is one of several ranks (`multi_rank`) or alone: threads from
// DEEPMD_NUM_THREADS (not a positive integer: an error naming it; above the hardware threads: capped,
// and `warning` says so), else 1 per rank on several ranks and LibTorch's default alone; BLAS threads
// the same; DEEPMD_MALLOC=system keeps glibc's malloc defaults; DEEPMD_DENORMALS=ieee keeps denormal
// floats (any other value: an error naming it).
absl::StatusOr<ProcessPolicy> PolicyFromEnvironment(bool multi_rank, std::string* warning = nullptr);

// Applies `policy`; `by_host`: the host chose it, so DeepPots leave the process-wide settings alone.
void ApplyProcessPolicy(const ProcessPolicy& policy, bool by_host = true);
bool HostChoseProcessPolicy();

// What is in force now, for logs: "malloc keeps freed memory, denormals flushed to zero, 1 LibTorch
// thread(s), 1 OpenBLAS thread(s) per rank".
std::string DescribeProcessPolicy();

// OpenBLAS's thread count in this process; 0 when OpenBLAS is not loaded.
int BlasThreads();

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_PROCESS_POLICY_H_
