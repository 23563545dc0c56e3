// Per-centre loops of the fused edge path (repflow_edge.h). A centre's real slots are listed (their p and
// node_ext rows read in place, their edges copied into compact rows only when padded slots lie between
// them), the linear and its activation evaluated on those rows (rows.h), and the messages reduced before
// the next centre: nothing per edge outlives its centre.
#include "deepmd/kernels/repflow_edge.h"

#include <algorithm>
#include <vector>

#include "deepmd/kernels/isa.h"
#include "deepmd/kernels/rows.h"

namespace deepmd::kernels {
namespace {

template <typename T>
struct EdgeScratch {
  std::vector<int64_t> slot, row;  // real slots and their rows
  std::vector<const T*> p_rows;    // the real slots' rows of p, read in place
  std::vector<T> x, y, dy, gy, gx, wt;
  const T* edges = nullptr;  // the centre's compact edge rows: in place when its real slots are 0..n-1
  void Reserve(int64_t nnei, int64_t e, int64_t f) {
    const size_t n = static_cast<size_t>(nnei);
    slot.resize(n);
    row.resize(n);
    p_rows.resize(n);
    for (std::vector<T>* v : {&x, &gx}) v->resize(n * e);
    for (std::vector<T>* v : {&y, &dy, &gy}) v->resize(n * f);
    wt.resize(e * f);
  }
};

template <typename T>
EdgeScratch<T>& ThreadEdgeScratch() {
  thread_local EdgeScratch<T> s;
  return s;
}

// Lists centre b's real slots (their rows of p, read in place; their edges, copied only when padded slots
// lie between them) and evaluates y = q_b + p_r + edge W and its activation (with the derivative when D).
// Returns the real-slot count.
template <int W, bool D, typename T>
__attribute__((always_inline)) inline int64_t Evaluate(const EdgeInputs<T>& in, int64_t b, EdgeScratch<T>& s) {
  const int64_t N = in.nnei, e = in.e, f = in.f;
  const int64_t* __restrict nbr = in.nbr + b * N;
  int64_t n = 0;
  for (int64_t j = 0; j < N; ++j) {
    const int64_t r = nbr[j];
    if (r < 0) continue;
    s.slot[n] = j;
    s.row[n] = r;
    s.p_rows[n] = in.p + r * f;
    ++n;
  }
  const T* edge = in.edge + b * N * e;
  if (n == 0 || s.slot[n - 1] == n - 1) {  // increasing slots ending at n-1 are 0..n-1: compact already
    s.edges = edge;
  } else {
    for (int64_t k = 0; k < n; ++k) CopyRow(edge + s.slot[k] * e, e, s.x.data() + k * e);
    s.edges = s.x.data();
  }
  AffineGathered<W>(s.edges, in.w, in.q + b * f, s.p_rows.data(), s.y.data(), n, e, f);
  Apply<D>(in.act, s.y.data(), D ? s.dy.data() : static_cast<T*>(nullptr), n * f);
  return n;
}

// out[d, :] = sum_k h_k[d] row_k for the 3 directions (h_k centre b's h2sw row of slot k, rows of `width`).
template <typename T, typename RowOf>
__attribute__((always_inline)) inline void Moments(const EdgeInputs<T>& in, const EdgeScratch<T>& s, int64_t b,
                                                   int64_t n, int64_t width, RowOf row_of, T* __restrict out) {
  std::fill(out, out + 3 * width, T(0));
  const T* __restrict h2sw = in.h2sw + b * in.nnei * 3;
  for (int64_t k = 0; k < n; ++k) {
    const T* __restrict rk = row_of(k);
    const T* __restrict h = h2sw + s.slot[k] * 3;
    for (int64_t d = 0; d < 3; ++d) {
      const T hd = h[d];
      T* __restrict od = out + d * width;
      for (int64_t c = 0; c < width; ++c) od[c] += hd * rk[c];
    }
  }
}

template <int W, typename T>
__attribute__((always_inline)) inline void ForwardRange(const EdgeInputs<T>& in, const EdgeOutputs<T>& out, int64_t b0,
                                                        int64_t b1) {
  const int64_t N = in.nnei, e = in.e, nd = in.n, f = in.f, m = in.m, se = f - m;
  const T inv_norm = in.inv_norm;
  EdgeScratch<T>& s = ThreadEdgeScratch<T>();
  s.Reserve(N, e, f);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n = Evaluate<W, false>(in, b, s);
    T* __restrict msg = out.msg + b * m;
    std::fill(msg, msg + m, T(0));
    for (int64_t k = 0; k < n; ++k) {
      const T c = in.sw[b * N + s.slot[k]] * inv_norm;
      const T* __restrict yk = s.y.data() + k * f;
      for (int64_t o = 0; o < m; ++o) msg[o] += c * yk[o];
    }
    if (se > 0 && in.self_scale) {  // edge_new = alpha edge + self_scale y[m:] + (head or tail)
      T* edge_new = out.eself + b * N * e;
      const T* __restrict edge = in.edge + b * N * e;
      const T* __restrict scale = in.self_scale;
      const T alpha = in.alpha;
      for (int64_t j = 0; j < N; ++j) {
        const T* __restrict angle = j < in.nang ? in.head + (b * in.nang + j) * e : in.tail;
        T* __restrict row = edge_new + j * e;
        for (int64_t o = 0; o < e; ++o) row[o] = alpha * edge[j * e + o] + angle[o];
      }
      for (int64_t k = 0; k < n; ++k) {
        const T* __restrict yk = s.y.data() + k * f + m;
        T* __restrict row = edge_new + s.slot[k] * e;
        for (int64_t o = 0; o < e; ++o) row[o] += scale[o] * yk[o];
      }
    } else if (se > 0) {
      T* eself = out.eself + b * N * se;
      std::fill(eself, eself + N * se, T(0));
      for (int64_t k = 0; k < n; ++k) CopyRow(s.y.data() + k * f + m, se, eself + s.slot[k] * se);
    }
    Moments(
        in, s, b, n, e, [&](int64_t k) { return s.edges + k * e; }, out.hg_edge + b * 3 * e);
    Moments(
        in, s, b, n, nd, [&](int64_t k) { return in.node_ext + s.row[k] * nd; }, out.hg_node + b * 3 * nd);
  }
}

template <int W, typename T>
__attribute__((always_inline)) inline void BackwardRange(const EdgeInputs<T>& in, const EdgeGradients<T>& g, int64_t b0,
                                                         int64_t b1) {
  const int64_t N = in.nnei, e = in.e, nd = in.n, f = in.f, m = in.m, se = f - m;
  const T inv_norm = in.inv_norm;
  const T* __restrict scale = in.self_scale;
  EdgeScratch<T>& s = ThreadEdgeScratch<T>();
  s.Reserve(N, e, f);
  for (int64_t c = 0; c < e; ++c) {  // transposed weight: the edge gradient loop runs over edge channels
    for (int64_t o = 0; o < f; ++o) s.wt[o * e + c] = in.w[c * f + o];
  }
  for (int64_t b = b0; b < b1; ++b) {
    std::fill(g.edge + b * N * e, g.edge + (b + 1) * N * e, T(0));
    std::fill(g.sw + b * N, g.sw + (b + 1) * N, T(0));
    std::fill(g.h2sw + b * N * 3, g.h2sw + (b + 1) * N * 3, T(0));
    T* __restrict gq = g.q + b * f;
    std::fill(gq, gq + f, T(0));
    const int64_t n = Evaluate<W, true>(in, b, s);
    // the edge gradients of compact rows go straight to their slots
    T* const gx_rows = s.edges == in.edge + b * N * e ? g.edge + b * N * e : s.gx.data();
    const T* __restrict gm = g.g_msg + b * m;
    const T* __restrict ghe = g.g_hg_edge + b * 3 * e;
    const T* __restrict ghn = g.g_hg_node + b * 3 * nd;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t j = s.slot[k], r = s.row[k];
      const T* __restrict u = s.y.data() + k * f;
      const T* __restrict du = s.dy.data() + k * f;
      T* __restrict gy = s.gy.data() + k * f;
      // msg = sum sw u[:m] / norm
      const T c = in.sw[b * N + j] * inv_norm;
      for (int64_t o = 0; o < m; ++o) gy[o] = c * gm[o] * du[o];
      g.sw[b * N + j] = Dot<W>(gm, u, m) * inv_norm;
      const T* __restrict ges = g.g_eself + (b * N + j) * se;
      if (scale) {
        for (int64_t o = 0; o < se; ++o) gy[m + o] = scale[o] * ges[o] * du[m + o];
      } else {
        for (int64_t o = 0; o < se; ++o) gy[m + o] = ges[o] * du[m + o];
      }
      T* __restrict gp = g.p + r * f;
      for (int64_t o = 0; o < f; ++o) {
        gp[o] += gy[o];
        gq[o] += gy[o];
      }
      // the moments: hg_edge = sum h2sw^T edge, hg_node = sum h2sw^T node_ext
      const T* __restrict h = in.h2sw + (b * N + j) * 3;
      const T* __restrict xk = s.edges + k * e;
      const T* __restrict node = in.node_ext + r * nd;
      T* __restrict gx = gx_rows + k * e;
      T* __restrict gnode = g.node_ext + r * nd;
      for (int64_t d = 0; d < 3; ++d) g.h2sw[(b * N + j) * 3 + d] = Dot2<W>(ghe + d * e, xk, e, ghn + d * nd, node, nd);
      for (int64_t i = 0; i < e; ++i) gx[i] = h[0] * ghe[i] + h[1] * ghe[e + i] + h[2] * ghe[2 * e + i];
      for (int64_t i = 0; i < nd; ++i) gnode[i] += h[0] * ghn[i] + h[1] * ghn[nd + i] + h[2] * ghn[2 * nd + i];
    }
    // d/d edge_j = W gy_j + the moments' part
    AddBack<W>(s.gy.data(), s.wt.data(), gx_rows, n, f, e);
    if (gx_rows == s.gx.data()) {
      for (int64_t k = 0; k < n; ++k) CopyRow(s.gx.data() + k * e, e, g.edge + (b * N + s.slot[k]) * e);
    }
    if (in.self_scale) {  // edge_new's own terms: alpha edge and the angle update's head
      const T* __restrict gn = g.g_eself + b * N * e;
      T* __restrict ge = g.edge + b * N * e;
      const T alpha = in.alpha;
      for (int64_t i = 0; i < N * e; ++i) ge[i] += alpha * gn[i];
      CopyRow(gn, in.nang * e, g.head + b * in.nang * e);
    }
  }
}

}  // namespace

namespace {

// One instantiation per instruction set (isa.h), each with that set's widest vectors.
template <typename T>
DEEPMD_KERNELS_AVX512 void Forward512(const EdgeInputs<T>& in, const EdgeOutputs<T>& out, int64_t b0, int64_t b1) {
  ForwardRange<64>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Forward256(const EdgeInputs<T>& in, const EdgeOutputs<T>& out, int64_t b0, int64_t b1) {
  ForwardRange<32>(in, out, b0, b1);
}
template <typename T>
void Forward128(const EdgeInputs<T>& in, const EdgeOutputs<T>& out, int64_t b0, int64_t b1) {
  ForwardRange<16>(in, out, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX512 void Backward512(const EdgeInputs<T>& in, const EdgeGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<64>(in, g, b0, b1);
}
template <typename T>
DEEPMD_KERNELS_AVX2 void Backward256(const EdgeInputs<T>& in, const EdgeGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<32>(in, g, b0, b1);
}
template <typename T>
void Backward128(const EdgeInputs<T>& in, const EdgeGradients<T>& g, int64_t b0, int64_t b1) {
  BackwardRange<16>(in, g, b0, b1);
}

}  // namespace

void EdgeForward(const EdgeInputs<float>& in, const EdgeOutputs<float>& out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<float>, Forward256<float>, Forward128<float>, in, out, b0, b1);
}
void EdgeForward(const EdgeInputs<double>& in, const EdgeOutputs<double>& out, int64_t b0, int64_t b1) {
  ForThisCpu(Forward512<double>, Forward256<double>, Forward128<double>, in, out, b0, b1);
}
void EdgeBackward(const EdgeInputs<float>& in, const EdgeGradients<float>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<float>, Backward256<float>, Backward128<float>, in, g, b0, b1);
}
void EdgeBackward(const EdgeInputs<double>& in, const EdgeGradients<double>& g, int64_t b0, int64_t b1) {
  ForThisCpu(Backward512<double>, Backward256<double>, Backward128<double>, in, g, b0, b1);
}

}  // namespace deepmd::kernels
