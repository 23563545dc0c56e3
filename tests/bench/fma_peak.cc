// This machine's floating-point peak as one thread reaches it: a loop of independent fused
// multiply-adds on 64-byte vectors (enough accumulators to cover the FMA latency), float32 and float64,
// in the widest instruction set the CPU has (target_clones). The denominator of "% of peak" in the
// kernel benchmark (tests/bench/angle_benchmark.py). Usage: fma_peak [--seconds=0.5]; prints JSON
// {"float32_gflops": ..., "float64_gflops": ...}.
#include <chrono>
#include <cstdio>
#include <cstring>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"

ABSL_FLAG(double, seconds, 0.5, "time per precision");

namespace {

constexpr int kAccumulators = 16;  // 4-cycle latency x 2 FMA pipes, doubled for slack
constexpr long kInner = 1 << 14;

template <typename T>
struct Vec {
  typedef T V __attribute__((vector_size(64)));
  static constexpr int kLanes = 64 / static_cast<int>(sizeof(T));
};

// kInner x kAccumulators vector FMAs; returns a value that depends on all of them (so none is removed).
template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default"), noinline)) T Burst(T seed) {
  using V = typename Vec<T>::V;
  V acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = V{} + (seed + static_cast<T>(i));
  const V a = V{} + static_cast<T>(0.999999), b = V{} + static_cast<T>(1e-7);
  for (long k = 0; k < kInner; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < kAccumulators; ++i) acc[i] = acc[i] * a + b;  // kept in registers once unrolled
  }
  T sum = 0;
  for (int i = 0; i < kAccumulators; ++i) {
    T lanes[Vec<T>::kLanes];
    std::memcpy(lanes, &acc[i], sizeof(lanes));
    for (T x : lanes) sum += x;
  }
  return sum;
}

template <typename T>
double Gflops(double seconds) {
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0, sink = 0;
  long bursts = 0;
  while (elapsed < seconds) {
    sink += static_cast<double>(Burst<T>(static_cast<T>(bursts % 7)));
    ++bursts;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (sink == 12345.678) std::fprintf(stderr, "\n");  // keeps the result alive
  const double flops = 2.0 * Vec<T>::kLanes * kAccumulators * kInner * static_cast<double>(bursts);
  return flops / elapsed / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const double f32 = Gflops<float>(seconds), f64 = Gflops<double>(seconds);
  std::printf("{\"float32_gflops\": %.2f, \"float64_gflops\": %.2f}\n", f32, f64);
  return 0;
}
