// Per-centre loops of the fused three-body embedding (three_body.h): a centre's real slots are compacted,
// its n² pairs form the rows of each layer's [n², width] scratch (pair jk at row j n + k), and the layer
// products are rows.h's register-blocked ones.
#include "deepmd/kernels/three_body.h"

#include <algorithm>
#include <vector>

#include "deepmd/kernels/isa.h"
#include "deepmd/kernels/rows.h"

namespace deepmd::kernels {
namespace {

template <typename T>
struct Scratch {
  std::vector<int64_t> idx;
  std::vector<T> r, pj, pk, s, ds;
  std::vector<std::vector<T>> y, d;  // per layer 0 .. L: outputs and activation derivatives [n², width]
  std::vector<T> dy, dx;
  void Reserve(const ThreeBodyInputs<T>& in) {
    const size_t n = static_cast<size_t>(in.nnei), pairs = n * n;
    const size_t nl = in.layers.size() + 1;
    idx.resize(n);
    r.resize(n * 3);
    pj.resize(n * in.h0);
    pk.resize(n * in.h0);
    s.resize(pairs);
    ds.resize(pairs);
    y.resize(nl);
    d.resize(nl);
    size_t widest = static_cast<size_t>(in.h0);
    for (size_t l = 0; l < nl; ++l) {
      const size_t width = static_cast<size_t>(l == 0 ? in.h0 : in.layers[l - 1].out);
      widest = std::max(widest, width);
      y[l].resize(pairs * width);
      d[l].resize(pairs * width);
    }
    dy.resize(pairs * widest);
    dx.resize(pairs * widest);
  }
};

template <typename T>
Scratch<T>& ThreadScratch() {
  thread_local Scratch<T> s;
  return s;
}

// y[rows, out] += x[rows, in] W and its transpose product dx[rows, in] += dz[rows, out] Wᵀ.
template <int W, typename T>
__attribute__((always_inline)) inline void MulAdd(const T* x, const EmbeddingLayer<T>& L, T* y, int64_t rows) {
  AddBack<W>(x, L.w, y, rows, L.in, L.out);
}
template <int W, typename T>
__attribute__((always_inline)) inline void MulAddBack(const T* dz, const EmbeddingLayer<T>& L, T* dx, int64_t rows) {
  AddBack<W>(dz, L.wt, dx, rows, L.out, L.in);
}

// Compacts centre b's real slots and forms s_jk. Returns n.
template <typename T>
__attribute__((always_inline)) inline int64_t Gather(const ThreeBodyInputs<T>& in, int64_t b, Scratch<T>& s) {
  const int64_t N = in.nnei, h0 = in.h0;
  int64_t n = 0;
  for (int64_t j = 0; j < N; ++j) {
    const int64_t slot = b * N + j;
    if (!in.real[slot]) continue;
    s.idx[n] = j;
    for (int x = 0; x < 3; ++x) s.r[n * 3 + x] = in.r[slot * 3 + x];
    CopyRow(in.pj + slot * h0, h0, s.pj.data() + n * h0);
    CopyRow(in.pk + slot * h0, h0, s.pk.data() + n * h0);
    ++n;
  }
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t k = 0; k < n; ++k) {
      s.s[j * n + k] = s.r[j * 3] * s.r[k * 3] + s.r[j * 3 + 1] * s.r[k * 3 + 1] + s.r[j * 3 + 2] * s.r[k * 3 + 2];
    }
  }
  return n;
}

// The embedding of the centre's n² pairs, layer by layer into s.y (and, with D, the activations'
// derivatives into s.d).
template <int W, bool D, typename T>
__attribute__((always_inline)) inline void Embed(const ThreeBodyInputs<T>& in, int64_t n, Scratch<T>& s) {
  const int64_t h0 = in.h0, pairs = n * n;
  T* __restrict y0 = s.y[0].data();
  const T* __restrict ws = in.ws;
  const T* __restrict b0 = in.b0;
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t k = 0; k < n; ++k) {
      const T sjk = s.s[j * n + k];
      const T* __restrict pj = s.pj.data() + j * h0;
      const T* __restrict pk = s.pk.data() + k * h0;
      T* __restrict z = y0 + (j * n + k) * h0;
      for (int64_t o = 0; o < h0; ++o) z[o] = sjk * ws[o] + pj[o] + pk[o] + b0[o];
    }
  }
  Apply<D>(in.act, y0, s.d[0].data(), pairs * h0);
  for (int64_t p = 0; p < pairs; ++p) {
    for (int64_t o = 0; o < h0; ++o) y0[p * h0 + o] *= in.idt0[o];
  }
  for (size_t l = 0; l < in.layers.size(); ++l) {
    const EmbeddingLayer<T>& L = in.layers[l];
    const T* __restrict x = s.y[l].data();
    T* __restrict y = s.y[l + 1].data();
    for (int64_t p = 0; p < pairs; ++p) CopyRow(L.b, L.out, y + p * L.out);
    MulAdd<W>(x, L, y, pairs);
    Apply<D>(in.act, y, s.d[l + 1].data(), pairs * L.out);
    for (int64_t p = 0; p < pairs; ++p) {
      T* __restrict yp = y + p * L.out;
      const T* __restrict xp = x + p * L.in;
      for (int64_t o = 0; o < L.out; ++o) yp[o] *= L.idt[o];
      if (L.residual == 1) {
        for (int64_t o = 0; o < L.out; ++o) yp[o] += xp[o];
      } else if (L.residual == 2) {
        for (int64_t o = 0; o < L.in; ++o) {
          yp[o] += xp[o];
          yp[L.in + o] += xp[o];
        }
      }
    }
  }
}

template <int W, typename T>
__attribute__((always_inline)) inline void ForwardRange(const ThreeBodyInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  const int64_t width = in.Width();
  Scratch<T>& s = ThreadScratch<T>();
  s.Reserve(in);
  for (int64_t b = b0; b < b1; ++b) {
    T* __restrict o = out + b * width;
    std::fill(o, o + width, T(0));
    const int64_t n = Gather(in, b, s);
    Embed<W, false>(in, n, s);
    const T* __restrict y = s.y[in.layers.size()].data();
    for (int64_t p = 0; p < n * n; ++p) {
      const T sp = s.s[p];
      for (int64_t c = 0; c < width; ++c) o[c] += sp * y[p * width + c];
    }
  }
}

template <int W, typename T>
__attribute__((always_inline)) inline void BackwardRange(const ThreeBodyInputs<T>& in, const ThreeBodyGradients<T>& g,
                                                         int64_t b0, int64_t b1) {
  const int64_t N = in.nnei, h0 = in.h0, width = in.Width(), nl = static_cast<int64_t>(in.layers.size());
  Scratch<T>& s = ThreadScratch<T>();
  s.Reserve(in);
  for (int64_t b = b0; b < b1; ++b) {
    std::fill(g.r + b * N * 3, g.r + (b + 1) * N * 3, T(0));
    std::fill(g.pj + b * N * h0, g.pj + (b + 1) * N * h0, T(0));
    std::fill(g.pk + b * N * h0, g.pk + (b + 1) * N * h0, T(0));
    const int64_t n = Gather(in, b, s), pairs = n * n;
    Embed<W, true>(in, n, s);
    // out = Σ_p s_p y_L[p]: dy_L = s_p g, ds_p = y_L[p] · g
    const T* __restrict go = g.g_out + b * width;
    const T* __restrict yl = s.y[nl].data();
    T* __restrict dy = s.dy.data();
    for (int64_t p = 0; p < pairs; ++p) {
      const T sp = s.s[p];
      T acc = 0;
      for (int64_t c = 0; c < width; ++c) {
        dy[p * width + c] = sp * go[c];
        acc += yl[p * width + c] * go[c];
      }
      s.ds[p] = acc;
    }
    for (int64_t l = nl; l >= 1; --l) {
      const EmbeddingLayer<T>& L = in.layers[l - 1];
      const T* __restrict dl = s.d[l].data();
      T* __restrict dyc = s.dy.data();
      T* __restrict dx = s.dx.data();
      std::fill(dx, dx + pairs * L.in, T(0));
      // y = act(z) idt + residual: d/dx = (dy idt act'(z)) Wᵀ + the residual's share
      if (L.residual == 1) {
        for (int64_t q = 0; q < pairs * L.in; ++q) dx[q] = dyc[q];
      } else if (L.residual == 2) {
        for (int64_t p = 0; p < pairs; ++p) {
          for (int64_t o = 0; o < L.in; ++o) dx[p * L.in + o] = dyc[p * L.out + o] + dyc[p * L.out + L.in + o];
        }
      }
      for (int64_t p = 0; p < pairs; ++p) {
        for (int64_t o = 0; o < L.out; ++o) dyc[p * L.out + o] *= L.idt[o] * dl[p * L.out + o];
      }
      MulAddBack<W>(dyc, L, dx, pairs);
      std::swap(s.dy, s.dx);
    }
    // layer 0: z0 = s ws + pj_j + pk_k + b0
    const T* __restrict d0 = s.d[0].data();
    T* __restrict dz = s.dy.data();
    T* __restrict gpj = g.pj;
    T* __restrict gpk = g.pk;
    for (int64_t j = 0; j < n; ++j) {
      T* __restrict pj = gpj + (b * N + s.idx[j]) * h0;
      for (int64_t k = 0; k < n; ++k) {
        const int64_t p = j * n + k;
        T* __restrict pk = gpk + (b * N + s.idx[k]) * h0;
        T acc = 0;
        for (int64_t o = 0; o < h0; ++o) {
          const T z = dz[p * h0 + o] * in.idt0[o] * d0[p * h0 + o];
          acc += z * in.ws[o];
          pj[o] += z;
          pk[o] += z;
        }
        s.ds[p] += acc;
      }
    }
    // s_jk = r_j · r_k
    for (int64_t j = 0; j < n; ++j) {
      T* __restrict gr = g.r + (b * N + s.idx[j]) * 3;
      for (int64_t k = 0; k < n; ++k) {
        const T c = s.ds[j * n + k] + s.ds[k * n + j];
        for (int x = 0; x < 3; ++x) gr[x] += c * s.r[k * 3 + x];
      }
    }
  }
}

// One instantiation per instruction set (isa.h), each with that set's widest vectors.
template <typename T>
DEEPMD_KERNELS_AVX512 void Forward512(const ThreeBodyInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  ForwardRange<64>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Forward256(const ThreeBodyInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  ForwardRange<32>(in, out, b0, b1);
}
template <typename T>
void Forward128(const ThreeBodyInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  ForwardRange<16>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX512 void Backward512(const ThreeBodyInputs<T>& in, const ThreeBodyGradients<T>& g, int64_t b0,
                                       int64_t b1) {
  BackwardRange<64>(in, g, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Backward256(const ThreeBodyInputs<T>& in, const ThreeBodyGradients<T>& g, int64_t b0,
                                     int64_t b1) {
  BackwardRange<32>(in, g, b0, b1);
}
template <typename T>
void Backward128(const ThreeBodyInputs<T>& in, const ThreeBodyGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<16>(in, g, b0, b1);
}

}  // namespace

void ThreeBodyForward(const ThreeBodyInputs<float>& in, float* out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<float>, Forward256<float>, Forward128<float>, in, out, b0, b1);
}
void ThreeBodyForward(const ThreeBodyInputs<double>& in, double* out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<double>, Forward256<double>, Forward128<double>, in, out, b0, b1);
}
void ThreeBodyBackward(const ThreeBodyInputs<float>& in, const ThreeBodyGradients<float>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<float>, Backward256<float>, Backward128<float>, in, g, b0, b1);
}
void ThreeBodyBackward(const ThreeBodyInputs<double>& in, const ThreeBodyGradients<double>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<double>, Backward256<double>, Backward128<double>, in, g, b0, b1);
}

}  // namespace deepmd::kernels
