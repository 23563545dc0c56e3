// The activations a repflow layer applies inside the fused kernels, with their derivatives, over
// contiguous buffers. The loops are branch-free so GCC vectorises them (exp is a Cephes-style polynomial
// with round-to-nearest range reduction, ~1 ulp in float, ~1-2 ulp in double).
#ifndef DEEPMD_KERNELS_ACTIVATION_H_
#define DEEPMD_KERNELS_ACTIVATION_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace deepmd::kernels {

// deepmd/dpkit/network.py's Activation kinds that the kernels evaluate.
enum class ActKind : int64_t { kNone = 0, kTanh = 1, kSilu = 7, kSilut = 8 };

// silut:T is silu below T and tanh(slope (x - T)) + shift above it.
struct Act {
  ActKind kind = ActKind::kNone;
  double threshold = 0, slope = 0, shift = 0;
};

// True for the kinds the kernels implement.
inline bool IsSupported(int64_t kind) { return kind == 0 || kind == 1 || kind == 7 || kind == 8; }

__attribute__((always_inline)) inline float Exp(float x) {
  x = x > 88.0f ? 88.0f : x;        // e^88 < FLT_MAX, 2^127 is the largest scale built below
  x = x < -87.0f ? -87.0f : x;      // keeps the scale 2^n normal
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // n from t's bits (t - magic is n exactly, one unit per ulp): no float-to-int conversion, which is
  // undefined for a NaN input; unsigned, so that no shift of a negative value is either (a NaN input
  // gives a NaN p, so any scale returns NaN)
  int32_t t_bits;
  std::memcpy(&t_bits, &t, sizeof(t_bits));
  const uint32_t bits = static_cast<uint32_t>(t_bits - 0x4B400000 + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// double: the same construction with a degree-13 polynomial on |r| <= ln2 / 2 (truncation below 1e-17
// relative; ~1-2 ulp in all), so that loops over doubles vectorise too (libm's exp is a call per value).
// Below -708 it returns e^-708 (~3e-308) instead of a subnormal or zero, and above 709 e^709.
__attribute__((always_inline)) inline double Exp(double x) {
  x = x > 709.0 ? 709.0 : x;
  x = x < -708.0 ? -708.0 : x;
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const double t = x * 1.4426950408889634074 + magic;
  const double n = t - magic;
  const double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1 / 13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r * r + r + 1.0;
  int64_t t_bits;
  std::memcpy(&t_bits, &t, sizeof(t_bits));
  const uint64_t bits = static_cast<uint64_t>(t_bits - 0x4338000000000000LL + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// 1 / (1 + e) for e >= 0 (the logistic's denominator). float: a guess from the exponent bits refined by
// Newton steps (the relative error squares each step: 12.5% -> 4e-8, a third of an ulp, in three), all
// FMAs, where a vector division costs several times as much on these CPUs; double: a division, as the
// reference.
__attribute__((always_inline)) inline float Logistic(float e) {
  // keeps the guess's bit arithmetic in range; written so that a NaN passes through (and the Newton steps
  // return NaN) instead of being clamped into a finite number
  const float d = e > 1e30f ? 1e30f : 1.0f + e;
  int32_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  bits = 0x7EF311C7 - bits;
  float r;
  std::memcpy(&r, &bits, sizeof(r));
  for (int i = 0; i < 3; ++i) r = r * (2.0f - d * r);
  return r;
}

__attribute__((always_inline)) inline double Logistic(double e) { return 1.0 / (1.0 + e); }

__attribute__((always_inline)) inline float Tanh(float x) {
  const float e = Exp(2.0f * x);
  return 1.0f - 2.0f * Logistic(e);
}

// double: the same form (absolute error ~1e-16 near 0, where libm's is relative).
__attribute__((always_inline)) inline double Tanh(double x) {
  const double e = Exp(2.0 * x);
  return 1.0 - 2.0 * Logistic(e);
}

// y[i] <- f(y[i]); with D, d[i] <- f'(y[i]) as well (D is a compile-time switch so each loop stays
// one straight-line body).
template <bool D, typename T>
__attribute__((always_inline)) inline void Apply(const Act& act, T* __restrict y, T* __restrict d, int64_t n) {
  switch (act.kind) {
    case ActKind::kNone:
      if (D) {
        for (int64_t i = 0; i < n; ++i) d[i] = T(1);
      }
      return;
    case ActKind::kTanh:
      for (int64_t i = 0; i < n; ++i) {
        const T t = Tanh(y[i]);
        y[i] = t;
        if (D) d[i] = T(1) - t * t;
      }
      return;
    case ActKind::kSilu:
      for (int64_t i = 0; i < n; ++i) {
        const T x = y[i];
        const T s = Logistic(Exp(-x));
        y[i] = x * s;
        if (D) d[i] = s * (T(1) + x * (T(1) - s));
      }
      return;
    case ActKind::kSilut: {
      const T thr = static_cast<T>(act.threshold), slope = static_cast<T>(act.slope);
      const T shift = static_cast<T>(act.shift);
      for (int64_t i = 0; i < n; ++i) {
        // One exp serves both branches: e^-x below the threshold, e^(2 slope (x - T)) above it.
        const T x = y[i];
        const bool low = x < thr;
        const T e = Exp(low ? -x : T(2) * slope * (x - thr));
        const T s = Logistic(e);
        const T th = T(1) - T(2) * s;  // tanh(slope (x - T)) = 1 - 2 / (e + 1)
        y[i] = low ? x * s : th + shift;
        if (D) d[i] = low ? s * (T(1) + x * (T(1) - s)) : slope * (T(1) - th * th);
      }
      return;
    }
  }
}

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_ACTIVATION_H_
