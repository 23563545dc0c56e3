// The instruction sets the kernels are compiled for, and the one this CPU runs. Each kernel's entry
// points exist once per set, marked with the set's target attribute and instantiated with its widest
// vector (the W of rows.h): AVX-512F 64 bytes, AVX2 with FMA 32, the x86-64 baseline (SSE2) 16.
// Target attributes rather than -m flags: only those functions (and what they inline) use the wider
// instructions, so nothing compiled for AVX-512 can be linked into code that a CPU without it runs.
#ifndef DEEPMD_KERNELS_ISA_H_
#define DEEPMD_KERNELS_ISA_H_

#include <cstdlib>
#include <cstring>

namespace deepmd::kernels {

enum class Isa { kBaseline, kAvx2, kAvx512 };

#if defined(__x86_64__)
#define DEEPMD_KERNELS_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define DEEPMD_KERNELS_AVX2 __attribute__((target("avx2,fma")))
#else  // other architectures: the baseline build only
#define DEEPMD_KERNELS_AVX512
#define DEEPMD_KERNELS_AVX2
#endif

// The widest set this CPU supports (decided once). DEEPMD_KERNELS_ISA=avx2 or baseline caps it, so
// that the tests run the narrower builds on any CPU; a set the CPU lacks is never chosen.
inline Isa CpuIsa() {
  static const Isa isa = [] {
    const char* cap = std::getenv("DEEPMD_KERNELS_ISA");
    const bool baseline_only = cap && std::strcmp(cap, "baseline") == 0;
    const bool avx2_at_most = baseline_only || (cap && std::strcmp(cap, "avx2") == 0);
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!avx2_at_most && __builtin_cpu_supports("avx512f")) return Isa::kAvx512;
    if (!baseline_only && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
    return Isa::kBaseline;
  }();
  return isa;
}

inline const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "AVX-512";
    case Isa::kAvx2:
      return "AVX2+FMA";
    default:
      return "baseline (SSE2)";
  }
}

// Calls the version of an entry point compiled for this CPU's set.
template <typename... Args, typename... Given>
void ForThisCpu(void (*avx512)(Args...), void (*avx2)(Args...), void (*baseline)(Args...), Given&&... args) {
  switch (CpuIsa()) {
    case Isa::kAvx512:
      return avx512(args...);
    case Isa::kAvx2:
      return avx2(args...);
    default:
      return baseline(args...);
  }
}

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_ISA_H_
