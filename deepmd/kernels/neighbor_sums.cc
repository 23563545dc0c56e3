// Per-centre loops of the neighbour sums (neighbor_sums.h): one pass over a centre's real slots, each
// neighbour's row of x read in place (a projection of the conv rows, where asked, is one register-blocked
// product per centre, rows.h); the channel loops are contiguous (GCC vectorises them, one instantiation
// per instruction set, isa.h).
#include "deepmd/kernels/neighbor_sums.h"

#include <algorithm>
#include <vector>

#include "deepmd/kernels/isa.h"
#include "deepmd/kernels/rows.h"

namespace deepmd::kernels {
namespace {

template <typename T>
struct Scratch {
  std::vector<int64_t> idx;   // a centre's real slots
  std::vector<T> ar, ap, ga;  // their a rows [n, c], projected rows [n, f], gradients [n, f]
  std::vector<T> t;           // [f]
  void Reserve(const SumsInputs<T>& in) {
    const size_t n = static_cast<size_t>(in.nnei), f = static_cast<size_t>(in.f), c = static_cast<size_t>(in.c);
    idx.resize(n);
    ar.resize(n * c);
    ap.resize(n * f);
    ga.resize(n * f);
    t.resize(f);
  }
};

template <typename T>
Scratch<T>& ThreadScratch() {
  thread_local Scratch<T> s;
  return s;
}

// Centre b's real slots into s.idx; with a projection, their rows a_j Wa + ba into s.ap. Returns n.
template <int W, typename T>
__attribute__((always_inline)) inline int64_t Compact(const SumsInputs<T>& in, int64_t b, Scratch<T>& s) {
  const int64_t N = in.nnei, f = in.f, c = in.c;
  int64_t n = 0;
  for (int64_t j = 0; j < N; ++j) {
    if (in.nbr[b * N + j] >= 0) s.idx[n++] = j;
  }
  if (in.has_a && c > 0) {
    for (int64_t jj = 0; jj < n; ++jj) {
      CopyRow(in.a + (b * N + s.idx[jj]) * c, c, s.ar.data() + jj * c);
      CopyRow(in.ba, f, s.ap.data() + jj * f);
    }
    AddBack<W>(s.ar.data(), in.wa, s.ap.data(), n, c, f);
  }
  return n;
}

// The conv row of compact slot jj: the projected one, or a's own.
template <typename T>
__attribute__((always_inline)) inline const T* ConvRow(const SumsInputs<T>& in, int64_t b, int64_t jj,
                                                       const Scratch<T>& s) {
  return in.c > 0 ? s.ap.data() + jj * in.f : in.a + (b * in.nnei + s.idx[jj]) * in.f;
}

template <int W, typename T>
__attribute__((always_inline)) inline void ForwardRange(const SumsInputs<T>& in, const SumsOutputs<T>& out, int64_t b0,
                                                        int64_t b1) {
  const int64_t N = in.nnei, f = in.f;
  const bool has_a = in.has_a;
  Scratch<T>& s = ThreadScratch<T>();
  s.Reserve(in);
  for (int64_t b = b0; b < b1; ++b) {
    T* __restrict conv = has_a ? out.conv + b * f : nullptr;
    T* __restrict h0 = out.hx + b * 3 * f;
    T* __restrict h1 = h0 + f;
    T* __restrict h2 = h1 + f;
    if (has_a) std::fill(conv, conv + f, T(0));
    std::fill(h0, h0 + 3 * f, T(0));
    const int64_t n = Compact<W>(in, b, s);
    for (int64_t jj = 0; jj < n; ++jj) {
      const int64_t slot = b * N + s.idx[jj];
      const T* __restrict x = in.x + in.nbr[slot] * f;
      const T w = in.w[slot];
      const T c0 = w * in.h2[slot * 3], c1 = w * in.h2[slot * 3 + 1], c2 = w * in.h2[slot * 3 + 2];
      if (has_a) {
        const T* __restrict a = ConvRow(in, b, jj, s);
        for (int64_t o = 0; o < f; ++o) conv[o] += w * a[o] * x[o];
      }
      for (int64_t o = 0; o < f; ++o) {
        h0[o] += c0 * x[o];
        h1[o] += c1 * x[o];
        h2[o] += c2 * x[o];
      }
    }
  }
}

template <int W, typename T>
__attribute__((always_inline)) inline void BackwardRange(const SumsInputs<T>& in, const SumsGradients<T>& g, int64_t b0,
                                                         int64_t b1) {
  const int64_t N = in.nnei, f = in.f, c = in.c;
  const bool has_a = in.has_a;
  const int64_t a_width = c > 0 ? c : f;
  Scratch<T>& s = ThreadScratch<T>();
  s.Reserve(in);
  T* __restrict t = s.t.data();
  for (int64_t b = b0; b < b1; ++b) {
    const T* __restrict gc = has_a ? g.g_conv + b * f : nullptr;
    const T* __restrict g0 = g.g_hx + b * 3 * f;
    const T* __restrict g1 = g0 + f;
    const T* __restrict g2 = g1 + f;
    if (has_a) std::fill(g.a + b * N * a_width, g.a + (b + 1) * N * a_width, T(0));
    std::fill(g.w + b * N, g.w + (b + 1) * N, T(0));
    std::fill(g.h2 + b * N * 3, g.h2 + (b + 1) * N * 3, T(0));
    const int64_t n = Compact<W>(in, b, s);
    for (int64_t jj = 0; jj < n; ++jj) {
      const int64_t slot = b * N + s.idx[jj], row = in.nbr[slot];
      const T* __restrict x = in.x + row * f;
      T* __restrict gx = g.x + row * f;
      const T w = in.w[slot];
      const T e0 = in.h2[slot * 3], e1 = in.h2[slot * 3 + 1], e2 = in.h2[slot * 3 + 2];
      // t = g_conv ⊙ a + Σ_d h2_d g_hx_d: d/dx_row = w t, d/dw = x · t, d/dh2_d = w g_hx_d · x
      if (has_a) {
        const T* __restrict a = ConvRow(in, b, jj, s);
        T* __restrict ga = c > 0 ? s.ga.data() + jj * f : g.a + slot * f;
        for (int64_t o = 0; o < f; ++o) {
          t[o] = gc[o] * a[o] + e0 * g0[o] + e1 * g1[o] + e2 * g2[o];
          ga[o] = w * gc[o] * x[o];
        }
      } else {
        for (int64_t o = 0; o < f; ++o) t[o] = e0 * g0[o] + e1 * g1[o] + e2 * g2[o];
      }
      for (int64_t o = 0; o < f; ++o) gx[o] += w * t[o];
      g.w[slot] = Dot<W>(x, t, f);
      g.h2[slot * 3] = w * Dot<W>(g0, x, f);
      g.h2[slot * 3 + 1] = w * Dot<W>(g1, x, f);
      g.h2[slot * 3 + 2] = w * Dot<W>(g2, x, f);
    }
    if (has_a && c > 0) {  // a_j Wa + ba: d/da_j = ga_j Waᵀ
      std::fill(s.ar.begin(), s.ar.begin() + n * c, T(0));
      AddBack<W>(s.ga.data(), in.wat, s.ar.data(), n, f, c);
      for (int64_t jj = 0; jj < n; ++jj) CopyRow(s.ar.data() + jj * c, c, g.a + (b * N + s.idx[jj]) * c);
    }
  }
}

template <typename T>
DEEPMD_KERNELS_AVX512 void Forward512(const SumsInputs<T>& in, const SumsOutputs<T>& out, int64_t b0, int64_t b1) {
  ForwardRange<64>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Forward256(const SumsInputs<T>& in, const SumsOutputs<T>& out, int64_t b0, int64_t b1) {
  ForwardRange<32>(in, out, b0, b1);
}
template <typename T>
void Forward128(const SumsInputs<T>& in, const SumsOutputs<T>& out, int64_t b0, int64_t b1) {
  ForwardRange<16>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX512 void Backward512(const SumsInputs<T>& in, const SumsGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<64>(in, g, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Backward256(const SumsInputs<T>& in, const SumsGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<32>(in, g, b0, b1);
}
template <typename T>
void Backward128(const SumsInputs<T>& in, const SumsGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<16>(in, g, b0, b1);
}

}  // namespace

void SumsForward(const SumsInputs<float>& in, const SumsOutputs<float>& out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<float>, Forward256<float>, Forward128<float>, in, out, b0, b1);
}
void SumsForward(const SumsInputs<double>& in, const SumsOutputs<double>& out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<double>, Forward256<double>, Forward128<double>, in, out, b0, b1);
}
void SumsBackward(const SumsInputs<float>& in, const SumsGradients<float>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<float>, Backward256<float>, Backward128<float>, in, g, b0, b1);
}
void SumsBackward(const SumsInputs<double>& in, const SumsGradients<double>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<double>, Backward256<double>, Backward128<double>, in, g, b0, b1);
}

}  // namespace deepmd::kernels
