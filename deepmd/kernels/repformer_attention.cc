// Per-centre loops of the fused g2 attention (repformer_attention.h). A centre's real slots' g2 rows are
// gathered into compact scratch rows; head by head their queries [n, nd], keys (and keys transposed
// [nd, n]) and values [n, nv] are projected there. The products are rows.h's register-blocked ones, the
// map's element-wise steps one pass per row.
#include "deepmd/kernels/repformer_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "deepmd/kernels/activation.h"
#include "deepmd/kernels/isa.h"
#include "deepmd/kernels/rows.h"

namespace deepmd::kernels {
namespace {

template <typename T>
struct Scratch {
  std::vector<int64_t> idx;  // real slots
  std::vector<T> sw, h2;     // [n], [n, 3]
  // per pair [n, n]: switch product s, the logits' factor g, the map's factor c = s hh / √3, hh / √3
  std::vector<T> s, g, c, hh3;
  // per head: the map (w = q kᵀ, p = softmax, a = p c) and the gradients of the backward
  std::vector<T> w, p, a, at, da, dw, dwt, ds, dhh;
  std::vector<T> qh, kh, kt, vh, vt, o, go, dq, dk, dv;  // [n, nd] / [nd, n] / [n, nv] / [nv, n]
  std::vector<T> g2, out, gout, dg2;                     // [n, ng2]
  void Reserve(int64_t nnei, int64_t ng2, int64_t nd, int64_t nv) {
    const size_t n = static_cast<size_t>(nnei);
    idx.resize(n);
    sw.resize(n);
    h2.resize(n * 3);
    for (std::vector<T>* x : {&s, &g, &c, &hh3, &w, &p, &a, &at, &da, &dw, &dwt, &ds, &dhh}) x->resize(n * n);
    for (std::vector<T>* x : {&qh, &kh, &kt, &dq, &dk}) x->resize(n * nd);
    for (std::vector<T>* x : {&vh, &vt, &o, &go, &dv}) x->resize(n * nv);
    for (std::vector<T>* x : {&g2, &out, &gout, &dg2}) x->resize(n * ng2);
  }
};

template <typename T>
Scratch<T>& ThreadScratch() {
  thread_local Scratch<T> s;
  return s;
}

// y[rows, cols] += x[rows, inner] m[inner, cols] (rows.h's register-blocked product).
template <int W, typename T>
__attribute__((always_inline)) inline void MulAdd(const T* x, const T* m, T* y, int64_t rows, int64_t inner,
                                                  int64_t cols) {
  AddBack<W>(x, m, y, rows, inner, cols);
}

// y[rows, cols] = bias + x[rows, inner] m[inner, cols].
template <int W, typename T>
__attribute__((always_inline)) inline void Project(const T* x, const T* m, const T* bias, T* y, int64_t rows,
                                                   int64_t inner, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) CopyRow(bias, cols, y + r * cols);
  MulAdd<W>(x, m, y, rows, inner, cols);
}

template <typename T>
__attribute__((always_inline)) inline void Transpose(const T* __restrict x, int64_t rows, int64_t cols,
                                                     T* __restrict y) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) y[c * rows + r] = x[r * cols + c];
  }
}

// Compacts centre b's real slots (indices, switches, h2 and g2 rows) and forms the pair factors. Returns n.
template <typename T>
__attribute__((always_inline)) inline int64_t Gather(const AttentionInputs<T>& in, int64_t b, Scratch<T>& s) {
  const int64_t N = in.nnei, ng2 = in.ng2;
  const bool* real = in.real + b * N;
  int64_t n = 0;
  for (int64_t j = 0; j < N; ++j) {
    if (!real[j]) continue;
    s.idx[n] = j;
    s.sw[n] = in.sw[b * N + j];
    for (int x = 0; x < 3; ++x) s.h2[n * 3 + x] = in.h2[(b * N + j) * 3 + x];
    CopyRow(in.g2 + (b * N + j) * ng2, ng2, s.g2.data() + n * ng2);
    ++n;
  }
  const T inv_nd = T(1) / std::sqrt(static_cast<T>(in.nd)), inv3 = T(1) / std::sqrt(T(3));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t k = 0; k < n; ++k) {
      const T hh = s.h2[j * 3] * s.h2[k * 3] + s.h2[j * 3 + 1] * s.h2[k * 3 + 1] + s.h2[j * 3 + 2] * s.h2[k * 3 + 2];
      const T sjk = in.smooth ? s.sw[j] * s.sw[k] : T(1);
      s.s[j * n + k] = sjk;
      s.g[j * n + k] = in.gate ? hh * inv_nd : inv_nd;
      s.hh3[j * n + k] = hh * inv3;
      s.c[j * n + k] = sjk * hh * inv3;
    }
  }
  return n;
}

// Head h's queries, keys (and their transpose) and values of the real slots, compact.
template <int W, typename T>
__attribute__((always_inline)) inline void ProjectHead(const AttentionInputs<T>& in, int64_t h, int64_t n,
                                                       Scratch<T>& s) {
  const int64_t ng2 = in.ng2, nd = in.nd, nv = in.nv;
  Project<W>(s.g2.data(), in.wq + h * ng2 * nd, in.bq + h * nd, s.qh.data(), n, ng2, nd);
  Project<W>(s.g2.data(), in.wk + h * ng2 * nd, in.bk + h * nd, s.kh.data(), n, ng2, nd);
  Project<W>(s.g2.data(), in.wv + h * ng2 * nv, in.bv + h * nv, s.vh.data(), n, ng2, nv);
  Transpose(s.kh.data(), n, nd, s.kt.data());
}

// Head h's map: w = q kᵀ, p = the (smoothed, gated) softmax over each row, a = p c. `pad`: the padded
// slots counted in the smooth softmax's denominator (each contributes e^{-shift - max}).
template <int W, typename T>
__attribute__((always_inline)) inline void Map(const AttentionInputs<T>& in, int64_t n, int64_t pad, Scratch<T>& s) {
  const T shift = in.shift;
  const bool smooth = in.smooth;
  std::fill(s.w.begin(), s.w.begin() + n * n, T(0));
  MulAdd<W>(s.qh.data(), s.kt.data(), s.w.data(), n, in.nd, n);
  for (int64_t j = 0; j < n; ++j) {
    const T* __restrict w = s.w.data() + j * n;
    const T* __restrict g = s.g.data() + j * n;
    const T* __restrict sj = s.s.data() + j * n;
    const T* __restrict c = s.c.data() + j * n;
    T* __restrict p = s.p.data() + j * n;
    T* __restrict a = s.a.data() + j * n;
    T m = pad > 0 ? -shift : -std::numeric_limits<T>::infinity();
    for (int64_t k = 0; k < n; ++k) {
      const T x = smooth ? w[k] * g[k] * sj[k] + shift * (sj[k] - T(1)) : w[k] * g[k];
      p[k] = x;
      m = std::max(m, x);
    }
    T sum = pad > 0 ? static_cast<T>(pad) * Exp(-shift - m) : T(0);
    for (int64_t k = 0; k < n; ++k) p[k] = Exp(p[k] - m);  // apart from the sum: this loop vectorises
    for (int64_t k = 0; k < n; ++k) sum += p[k];
    const T inv = T(1) / sum;
    for (int64_t k = 0; k < n; ++k) {
      p[k] *= inv;
      a[k] = p[k] * c[k];
    }
  }
}

template <int W, typename T>
__attribute__((always_inline)) inline void ForwardRange(const AttentionInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  const int64_t N = in.nnei, ng2 = in.ng2, nh = in.nh, nv = in.nv;
  Scratch<T>& s = ThreadScratch<T>();
  s.Reserve(N, ng2, in.nd, nv);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n = Gather(in, b, s);
    const int64_t pad = in.smooth ? N - n : 0;
    for (int64_t j = 0; j < n; ++j) CopyRow(in.bo, ng2, s.out.data() + j * ng2);
    for (int64_t h = 0; h < nh; ++h) {
      ProjectHead<W>(in, h, n, s);
      Map<W>(in, n, pad, s);
      std::fill(s.o.begin(), s.o.begin() + n * nv, T(0));
      MulAdd<W>(s.a.data(), s.vh.data(), s.o.data(), n, n, nv);
      MulAdd<W>(s.o.data(), in.wo + h * nv * ng2, s.out.data(), n, nv, ng2);
    }
    for (int64_t j = 0; j < N; ++j) CopyRow(in.bo, ng2, out + (b * N + j) * ng2);  // padded rows: bo
    for (int64_t j = 0; j < n; ++j) CopyRow(s.out.data() + j * ng2, ng2, out + (b * N + s.idx[j]) * ng2);
  }
}

template <int W, typename T>
__attribute__((always_inline)) inline void BackwardRange(const AttentionInputs<T>& in, const AttentionGradients<T>& g,
                                                         int64_t b0, int64_t b1) {
  const int64_t N = in.nnei, ng2 = in.ng2, nh = in.nh, nd = in.nd, nv = in.nv;
  const T shift = in.shift;
  const bool smooth = in.smooth, gate = in.gate;
  const T inv_nd = T(1) / std::sqrt(static_cast<T>(nd)), inv3 = T(1) / std::sqrt(T(3));
  Scratch<T>& s = ThreadScratch<T>();
  s.Reserve(N, ng2, nd, nv);
  for (int64_t b = b0; b < b1; ++b) {
    std::fill(g.g2 + b * N * ng2, g.g2 + (b + 1) * N * ng2, T(0));
    std::fill(g.h2 + b * N * 3, g.h2 + (b + 1) * N * 3, T(0));
    std::fill(g.sw + b * N, g.sw + (b + 1) * N, T(0));
    const int64_t n = Gather(in, b, s);
    const int64_t pad = in.smooth ? N - n : 0;
    for (int64_t j = 0; j < n; ++j) CopyRow(g.g_out + (b * N + s.idx[j]) * ng2, ng2, s.gout.data() + j * ng2);
    std::fill(s.dg2.begin(), s.dg2.begin() + n * ng2, T(0));
    std::fill(s.ds.begin(), s.ds.begin() + n * n, T(0));
    std::fill(s.dhh.begin(), s.dhh.begin() + n * n, T(0));
    for (int64_t h = 0; h < nh; ++h) {
      ProjectHead<W>(in, h, n, s);
      Map<W>(in, n, pad, s);
      // out += o Wo_h: the head's share of d/do
      std::fill(s.go.begin(), s.go.begin() + n * nv, T(0));
      MulAdd<W>(s.gout.data(), in.wot + h * ng2 * nv, s.go.data(), n, ng2, nv);
      // out = a v: da = go vᵀ, dv = aᵀ go
      Transpose(s.vh.data(), n, nv, s.vt.data());
      std::fill(s.da.begin(), s.da.begin() + n * n, T(0));
      MulAdd<W>(s.go.data(), s.vt.data(), s.da.data(), n, nv, n);
      Transpose(s.a.data(), n, n, s.at.data());
      std::fill(s.dv.begin(), s.dv.begin() + n * nv, T(0));
      MulAdd<W>(s.at.data(), s.go.data(), s.dv.data(), n, n, nv);
      // a = p c, p = softmax(x): dx = p (dp - Σ_k dp p); x = w g s + shift (s - 1) (smooth) or w g
      for (int64_t j = 0; j < n; ++j) {
        const T* __restrict da = s.da.data() + j * n;
        const T* __restrict p = s.p.data() + j * n;
        const T* __restrict c = s.c.data() + j * n;
        const T* __restrict w = s.w.data() + j * n;
        const T* __restrict gj = s.g.data() + j * n;
        const T* __restrict sj = s.s.data() + j * n;
        const T* __restrict hh3 = s.hh3.data() + j * n;
        T* __restrict dw = s.dw.data() + j * n;
        T* __restrict ds = s.ds.data() + j * n;
        T* __restrict dhh = s.dhh.data() + j * n;
        T r = 0;
        for (int64_t k = 0; k < n; ++k) r += da[k] * c[k] * p[k];
        for (int64_t k = 0; k < n; ++k) {
          const T dx = p[k] * (da[k] * c[k] - r);
          const T dap = da[k] * p[k];
          // the logits' factor g is hh / √nd with the gate: its share of d/dhh
          const T dg = gate ? dx * w[k] * sj[k] * inv_nd : T(0);
          dw[k] = dx * gj[k] * sj[k];
          dhh[k] += dg + dap * sj[k] * inv3;
          if (smooth) ds[k] += dx * (w[k] * gj[k] + shift) + dap * hh3[k];
        }
      }
      // w = q kᵀ: dq = dw k, dk = dwᵀ q
      std::fill(s.dq.begin(), s.dq.begin() + n * nd, T(0));
      MulAdd<W>(s.dw.data(), s.kh.data(), s.dq.data(), n, n, nd);
      Transpose(s.dw.data(), n, n, s.dwt.data());
      std::fill(s.dk.begin(), s.dk.begin() + n * nd, T(0));
      MulAdd<W>(s.dwt.data(), s.qh.data(), s.dk.data(), n, n, nd);
      // q, k, v = g2 W + b: d/dg2 += dq Wqᵀ + dk Wkᵀ + dv Wvᵀ
      MulAdd<W>(s.dq.data(), in.wqt + h * nd * ng2, s.dg2.data(), n, nd, ng2);
      MulAdd<W>(s.dk.data(), in.wkt + h * nd * ng2, s.dg2.data(), n, nd, ng2);
      MulAdd<W>(s.dv.data(), in.wvt + h * nv * ng2, s.dg2.data(), n, nv, ng2);
    }
    for (int64_t j = 0; j < n; ++j) CopyRow(s.dg2.data() + j * ng2, ng2, g.g2 + (b * N + s.idx[j]) * ng2);
    // s_jk = sw_j sw_k and hh_jk = h2_j · h2_k are symmetric: each slot collects its row and its column
    for (int64_t j = 0; j < n; ++j) {
      const int64_t row = b * N + s.idx[j];
      T gsw = 0, gh[3] = {0, 0, 0};
      for (int64_t k = 0; k < n; ++k) {
        const T dh = s.dhh[j * n + k] + s.dhh[k * n + j];
        for (int x = 0; x < 3; ++x) gh[x] += dh * s.h2[k * 3 + x];
        if (smooth) gsw += (s.ds[j * n + k] + s.ds[k * n + j]) * s.sw[k];
      }
      for (int x = 0; x < 3; ++x) g.h2[row * 3 + x] = gh[x];
      g.sw[row] = gsw;
    }
  }
}

// One instantiation per instruction set (isa.h), each with that set's widest vectors.
template <typename T>
DEEPMD_KERNELS_AVX512 void Forward512(const AttentionInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  ForwardRange<64>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Forward256(const AttentionInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  ForwardRange<32>(in, out, b0, b1);
}
template <typename T>
void Forward128(const AttentionInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  ForwardRange<16>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX512 void Backward512(const AttentionInputs<T>& in, const AttentionGradients<T>& g, int64_t b0,
                                       int64_t b1) {
  BackwardRange<64>(in, g, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Backward256(const AttentionInputs<T>& in, const AttentionGradients<T>& g, int64_t b0,
                                     int64_t b1) {
  BackwardRange<32>(in, g, b0, b1);
}
template <typename T>
void Backward128(const AttentionInputs<T>& in, const AttentionGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<16>(in, g, b0, b1);
}

}  // namespace

void AttentionForward(const AttentionInputs<float>& in, float* out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<float>, Forward256<float>, Forward128<float>, in, out, b0, b1);
}
void AttentionForward(const AttentionInputs<double>& in, double* out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<double>, Forward256<double>, Forward128<double>, in, out, b0, b1);
}
void AttentionBackward(const AttentionInputs<float>& in, const AttentionGradients<float>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<float>, Backward256<float>, Backward128<float>, in, g, b0, b1);
}
void AttentionBackward(const AttentionInputs<double>& in, const AttentionGradients<double>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<double>, Backward256<double>, Backward128<double>, in, g, b0, b1);
}

}  // namespace deepmd::kernels
