// Per-centre loops of the fused angle path (repflow_angle.h). A centre's real slots are gathered into
// compact scratch rows; its packed angles are already compact. The small products run with the input
// channel outermost, so consecutive updates go to different rows (no FMA latency chain) and the inner
// loop is over contiguous output channels (GCC vectorises it; one instantiation per instruction set,
// isa.h).
#include "deepmd/kernels/repflow_angle.h"

#include <algorithm>
#include <vector>

#include "deepmd/kernels/isa.h"
#include "deepmd/kernels/rows.h"

namespace deepmd::kernels {
namespace {

template <typename T>
struct Scratch {
  std::vector<int64_t> idx;  // real slots
  std::vector<T> sw, pe, qe, pa, qa, y, dy, z, dz, gy, gz, gqe, gqa, gsw, wet, wat;
  void Reserve(int64_t nang, int64_t a, int64_t e) {
    const size_t n = static_cast<size_t>(nang);
    idx.resize(n);
    for (std::vector<T>* v : {&sw, &gsw}) v->resize(n);
    for (std::vector<T>* v : {&pe, &qe, &y, &dy, &gy, &gqe}) v->resize(n * e);
    for (std::vector<T>* v : {&pa, &qa, &z, &dz, &gz, &gqa}) v->resize(n * a);
    wet.resize(a * e);
    wat.resize(a * a);
  }
};

template <typename T>
Scratch<T>& ThreadScratch() {
  thread_local Scratch<T> s;
  return s;
}

// Compacts a centre's real slots: their indices, switches and p, q rows. Returns their count.
template <typename T>
__attribute__((always_inline)) inline int64_t Gather(const AngleInputs<T>& in, int64_t b, Scratch<T>& s) {
  const int64_t A = in.nang, a = in.a, e = in.e;
  const bool* real = in.real + b * A;
  int64_t n = 0;
  for (int64_t j = 0; j < A; ++j) {
    if (!real[j]) continue;
    const int64_t row = b * A + j;
    s.idx[n] = j;
    s.sw[n] = in.sw[row];
    std::copy_n(in.pe + row * e, e, s.pe.data() + n * e);
    std::copy_n(in.qe + row * e, e, s.qe.data() + n * e);
    std::copy_n(in.pa + row * a, a, s.pa.data() + n * a);
    std::copy_n(in.qa + row * a, a, s.qa.data() + n * a);
    ++n;
  }
  return n;
}

template <int W, typename T>
__attribute__((always_inline)) inline void ForwardRange(const AngleInputs<T>& in, const AngleOutputs<T>& out,
                                                        int64_t b0, int64_t b1) {
  const int64_t A = in.nang, a = in.a, e = in.e;
  // locals, so that the stores below cannot alias them (GCC vectorises the loops only then)
  const T alpha = in.alpha, inv_scale = in.inv_scale;
  const T* __restrict res = in.res;
  Scratch<T>& s = ThreadScratch<T>();
  s.Reserve(A, a, e);
  for (int64_t b = b0; b < b1; ++b) {
    T* red = out.reduced + b * A * e;
    std::fill(red, red + A * e, T(0));
    const int64_t n = Gather(in, b, s);
    const T* ang = in.angle + in.offset[b] * a;
    T* ang_out = out.angle_new + in.offset[b] * a;
    for (int64_t jj = 0; jj < n; ++jj) {
      const T* x = ang + jj * n * a;  // row j: [n, a]
      // edge message: reduced_j = sw_j / scale * sum_k sw_k act(...)
      Affine<W>(x, in.we, s.pe.data() + jj * e, s.qe.data(), s.y.data(), n, a, e);
      Apply<false>(in.act, s.y.data(), static_cast<T*>(nullptr), n * e);
      T* __restrict rj = red + s.idx[jj] * e;
      for (int64_t kk = 0; kk < n; ++kk) {
        const T skk = s.sw[kk];
        const T* __restrict yk = s.y.data() + kk * e;
        for (int64_t o = 0; o < e; ++o) rj[o] += skk * yk[o];
      }
      const T c = s.sw[jj] * inv_scale;
      for (int64_t o = 0; o < e; ++o) rj[o] *= c;
      if (!in.update) continue;
      // angle self update
      Affine<W>(x, in.wa, s.pa.data() + jj * a, s.qa.data(), s.z.data(), n, a, a);
      Apply<false>(in.act, s.z.data(), static_cast<T*>(nullptr), n * a);
      T* __restrict dst = ang_out + jj * n * a;
      const T* __restrict z = s.z.data();
      for (int64_t kk = 0; kk < n; ++kk) {
        for (int64_t o = 0; o < a; ++o) dst[kk * a + o] = alpha * x[kk * a + o] + res[o] * z[kk * a + o];
      }
    }
  }
}

template <int W, typename T>
__attribute__((always_inline)) inline void BackwardRange(const AngleInputs<T>& in, const AngleGradients<T>& g,
                                                         int64_t b0, int64_t b1) {
  const int64_t A = in.nang, a = in.a, e = in.e;
  const T alpha = in.alpha, inv_scale = in.inv_scale;
  const T* __restrict res = in.res;
  Scratch<T>& s = ThreadScratch<T>();
  s.Reserve(A, a, e);
  for (int64_t c = 0; c < a; ++c) {  // transposed weights: the gradient loops run over angle channels
    for (int64_t o = 0; o < e; ++o) s.wet[o * a + c] = in.we[c * e + o];
    for (int64_t o = 0; o < a; ++o) s.wat[o * a + c] = in.wa[c * a + o];
  }
  for (int64_t b = b0; b < b1; ++b) {
    std::fill(g.sw + b * A, g.sw + (b + 1) * A, T(0));
    std::fill(g.pe + b * A * e, g.pe + (b + 1) * A * e, T(0));
    std::fill(g.qe + b * A * e, g.qe + (b + 1) * A * e, T(0));
    std::fill(g.pa + b * A * a, g.pa + (b + 1) * A * a, T(0));
    std::fill(g.qa + b * A * a, g.qa + (b + 1) * A * a, T(0));
    const int64_t n = Gather(in, b, s);
    const T* ang = in.angle + in.offset[b] * a;
    const T* gang = g.g_angle_new + in.offset[b] * a;
    T* gx_out = g.angle + in.offset[b] * a;
    std::fill(s.gqe.begin(), s.gqe.begin() + n * e, T(0));
    std::fill(s.gqa.begin(), s.gqa.begin() + n * a, T(0));
    std::fill(s.gsw.begin(), s.gsw.begin() + n, T(0));
    for (int64_t jj = 0; jj < n; ++jj) {
      const int64_t j = s.idx[jj];
      const T* x = ang + jj * n * a;
      // edge message: u = act(y), reduced_j = sw_j / scale * sum_k sw_k u_k
      Affine<W>(x, in.we, s.pe.data() + jj * e, s.qe.data(), s.y.data(), n, a, e);
      Apply<true>(in.act, s.y.data(), s.dy.data(), n * e);
      const T* __restrict gr = g.g_reduced + (b * A + j) * e;
      const T sj = s.sw[jj] * inv_scale;
      T* __restrict gpe = g.pe + (b * A + j) * e;
      T gsw_j = 0;
      for (int64_t kk = 0; kk < n; ++kk) {
        const T* __restrict uk = s.y.data() + kk * e;
        const T* __restrict dk = s.dy.data() + kk * e;
        T* __restrict gyk = s.gy.data() + kk * e;
        T* __restrict gqk = s.gqe.data() + kk * e;
        T t = 0;
        for (int64_t o = 0; o < e; ++o) t += gr[o] * uk[o];
        gsw_j += s.sw[kk] * t;
        s.gsw[kk] += sj * t;
        const T ck = sj * s.sw[kk];
        for (int64_t o = 0; o < e; ++o) {
          const T gy = ck * gr[o] * dk[o];
          gyk[o] = gy;
          gqk[o] += gy;
        }
      }
      AddColumnSums<W>(s.gy.data(), n, e, gpe);
      s.gsw[jj] += gsw_j * inv_scale;
      T* __restrict gx = gx_out + jj * n * a;
      if (!in.update) {
        std::fill(gx, gx + n * a, T(0));
        AddBack<W>(s.gy.data(), s.wet.data(), gx, n, e, a);
        continue;
      }
      // angle self update: angle_new = alpha angle + res act(z)
      Affine<W>(x, in.wa, s.pa.data() + jj * a, s.qa.data(), s.z.data(), n, a, a);
      Apply<true>(in.act, s.z.data(), s.dz.data(), n * a);
      T* __restrict gpa = g.pa + (b * A + j) * a;
      const T* __restrict gk = gang + jj * n * a;  // row j of the incoming gradient: [n, a]
      for (int64_t kk = 0; kk < n; ++kk) {
        const T* __restrict dk = s.dz.data() + kk * a;
        T* __restrict gzk = s.gz.data() + kk * a;
        T* __restrict gqk = s.gqa.data() + kk * a;
        for (int64_t o = 0; o < a; ++o) {
          const T gz = res[o] * gk[kk * a + o] * dk[o];
          gzk[o] = gz;
          gqk[o] += gz;
          gx[kk * a + o] = alpha * gk[kk * a + o];
        }
      }
      AddColumnSums<W>(s.gz.data(), n, a, gpa);
      // d/d angle_jk = alpha g + W_e gy + W_a gz
      AddBack<W>(s.gy.data(), s.wet.data(), gx, n, e, a);
      AddBack<W>(s.gz.data(), s.wat.data(), gx, n, a, a);
    }
    for (int64_t kk = 0; kk < n; ++kk) {
      const int64_t k = s.idx[kk];
      g.sw[b * A + k] += s.gsw[kk];
      T* gqe = g.qe + (b * A + k) * e;
      T* gqa = g.qa + (b * A + k) * a;
      for (int64_t o = 0; o < e; ++o) gqe[o] += s.gqe[kk * e + o];
      for (int64_t o = 0; o < a; ++o) gqa[o] += s.gqa[kk * a + o];
    }
  }
}

}  // namespace

void PairOffsets(const bool* real, int64_t nb, int64_t nang, int64_t* offset) {
  offset[0] = 0;
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n = 0;
    for (int64_t j = 0; j < nang; ++j) n += real[b * nang + j] ? 1 : 0;
    offset[b + 1] = offset[b] + n * n;
  }
}

namespace {

// One instantiation per instruction set (isa.h), each with that set's widest vectors.
template <typename T>
DEEPMD_KERNELS_AVX512 void Forward512(const AngleInputs<T>& in, const AngleOutputs<T>& out, int64_t b0, int64_t b1) {
  ForwardRange<64>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Forward256(const AngleInputs<T>& in, const AngleOutputs<T>& out, int64_t b0, int64_t b1) {
  ForwardRange<32>(in, out, b0, b1);
}
template <typename T>
void Forward128(const AngleInputs<T>& in, const AngleOutputs<T>& out, int64_t b0, int64_t b1) {
  ForwardRange<16>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX512 void Backward512(const AngleInputs<T>& in, const AngleGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<64>(in, g, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Backward256(const AngleInputs<T>& in, const AngleGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<32>(in, g, b0, b1);
}
template <typename T>
void Backward128(const AngleInputs<T>& in, const AngleGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<16>(in, g, b0, b1);
}

}  // namespace

void AngleForward(const AngleInputs<float>& in, const AngleOutputs<float>& out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<float>, Forward256<float>, Forward128<float>, in, out, b0, b1);
}
void AngleForward(const AngleInputs<double>& in, const AngleOutputs<double>& out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<double>, Forward256<double>, Forward128<double>, in, out, b0, b1);
}
void AngleBackward(const AngleInputs<float>& in, const AngleGradients<float>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<float>, Backward256<float>, Backward128<float>, in, g, b0, b1);
}
void AngleBackward(const AngleInputs<double>& in, const AngleGradients<double>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<double>, Backward256<double>, Backward128<double>, in, g, b0, b1);
}

}  // namespace deepmd::kernels
