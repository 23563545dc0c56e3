// This machine's floating-point peak as one thread reaches it: a loop of independent fused
// multiply-adds on the widest vectors of the CPU's instruction set (deepmd/kernels/isa.h: the set the
// kernels run), enough accumulators to cover the FMA latency and few enough to stay in registers,
// float32 and float64. The denominator of "% of peak" in the
// kernel benchmark (tests/bench/angle_benchmark.py). Usage: fma_peak [--seconds=0.5]; prints JSON
// {"float32_gflops": ..., "float64_gflops": ...}.
#include <chrono>
#include <cstdio>
#include <cstring>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "deepmd/kernels/isa.h"

ABSL_FLAG(double, seconds, 0.5, "time per precision");

namespace {

constexpr long kInner = 1 << 14;

// W-byte vectors; 12 accumulators (4-cycle latency x 2 FMA pipes, with slack) fit the 16 registers of
// AVX2 and SSE2 next to the two constants.
template <typename T, int W>
struct Vec {
  typedef T V __attribute__((vector_size(W)));
  static constexpr int kLanes = W / static_cast<int>(sizeof(T));
};
constexpr int kAccumulators = 12;

// kInner x kAccumulators vector FMAs; returns a value that depends on all of them (so none is removed).
template <typename T, int W>
__attribute__((always_inline)) inline T Burst(T seed) {
  using V = typename Vec<T, W>::V;
  V acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = V{} + (seed + static_cast<T>(i));
  const V a = V{} + static_cast<T>(0.999999), b = V{} + static_cast<T>(1e-7);
  for (long k = 0; k < kInner; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < kAccumulators; ++i) acc[i] = acc[i] * a + b;  // kept in registers once unrolled
  }
  T sum = 0;
  for (int i = 0; i < kAccumulators; ++i) {
    T lanes[Vec<T, W>::kLanes];
    std::memcpy(lanes, &acc[i], sizeof(lanes));
    for (T x : lanes) sum += x;
  }
  return sum;
}

template <typename T>
DEEPMD_KERNELS_AVX512 __attribute__((noinline)) void Burst512(T seed, T* result) {
  *result = Burst<T, 64>(seed);
}
template <typename T>
DEEPMD_KERNELS_AVX2 __attribute__((noinline)) void Burst256(T seed, T* result) {
  *result = Burst<T, 32>(seed);
}
template <typename T>
__attribute__((noinline)) void Burst128(T seed, T* result) {
  *result = Burst<T, 16>(seed);
}

int Lanes(int bytes_per_value) {
  const int bytes = deepmd::kernels::CpuIsa() == deepmd::kernels::Isa::kAvx512 ? 64
                    : deepmd::kernels::CpuIsa() == deepmd::kernels::Isa::kAvx2 ? 32
                                                                               : 16;
  return bytes / bytes_per_value;
}

template <typename T>
double Gflops(double seconds) {
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0, sink = 0;
  long bursts = 0;
  while (elapsed < seconds) {
    T result;
    deepmd::kernels::ForThisCpu(Burst512<T>, Burst256<T>, Burst128<T>, static_cast<T>(bursts % 7), &result);
    sink += static_cast<double>(result);
    ++bursts;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (sink == 12345.678) std::fprintf(stderr, "\n");  // keeps the result alive
  const double flops = 2.0 * Lanes(sizeof(T)) * kAccumulators * kInner * static_cast<double>(bursts);
  return flops / elapsed / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const double f32 = Gflops<float>(seconds), f64 = Gflops<double>(seconds);
  std::printf("{\"float32_gflops\": %.2f, \"float64_gflops\": %.2f, \"isa\": \"%s\"}\n", f32, f64,
              deepmd::kernels::IsaName(deepmd::kernels::CpuIsa()));
  return 0;
}
