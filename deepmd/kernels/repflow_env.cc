// Per-slot loops of the DPA3 geometry (repflow_env.h). Each slot is a few dozen scalar operations on a
// 3-vector, so this is plain scalar code: what it replaces is dozens of graph passes over [nb, nnei, ·]
// tensors and their backward (gathers, scatters, where()s), not arithmetic. The operations follow the
// reference's order (divisions where it divides), so that float64 agrees to rounding.
#include "deepmd/kernels/repflow_env.h"

#include <cmath>
#include <vector>

#include "deepmd/kernels/activation.h"

namespace deepmd::kernels {
namespace {

constexpr double kUnitEps = 1e-6;  // dpa3.py: unit = d / (|d| + 1e-6), cosine = u_j·u_k (1 - 1e-6)

// Below e^-kExpFloor activation.h's Exp returns e^-kExpFloor (it keeps its scale normal) where the
// reference's exp gives a subnormal or 0 (flushed: the runtime flushes denormals).
template <typename T>
constexpr T kExpFloor = sizeof(T) == 4 ? T(87) : T(708);

// A real slot's geometry: d = x_nbr - x_centre, L = |d| (0 for coincident atoms, as env.safe_norm).
template <typename T>
struct Pair {
  T d[3], L;
};

template <typename T>
inline Pair<T> Geometry(const EnvInputs<T>& in, int64_t b, int64_t row) {
  const T* xc = in.coord + in.centre[b] * 3;
  const T* xn = in.coord + row * 3;
  Pair<T> p;
  for (int c = 0; c < 3; ++c) p.d[c] = xn[c] - xc[c];
  const T squared = p.d[0] * p.d[0] + p.d[1] * p.d[1] + p.d[2] * p.d[2];
  p.L = squared > T(0) ? std::sqrt(squared) : T(0);
  return p;
}

// env.smooth_weight or env.exp_switch at r, with its derivative (0 where the reference clamps r).
template <typename T>
inline void Switch(T r, double rmin, double rmax, bool exp_switch, T* w, T* dw) {
  if (exp_switch) {
    const bool clamped = r < T(0) || r > T(rmax);
    const T rc = r < T(0) ? T(0) : (r > T(rmax) ? T(rmax) : r);
    const T k = static_cast<T>(20.0 / rmin);
    const T e1 = Exp(k * (rc - static_cast<T>(rmin)));
    if (e1 > kExpFloor<T>) {  // e^-e1 underflows: the reference's switch and slope are exactly 0 there
      *w = *dw = T(0);
      return;
    }
    *w = Exp(-e1);
    *dw = clamped ? T(0) : -*w * e1 * k;
    return;
  }
  const bool clamped = r < T(rmin) || r > T(rmax);
  const T rc = r < T(rmin) ? T(rmin) : (r > T(rmax) ? T(rmax) : r);
  const T width = static_cast<T>(rmax - rmin);
  const T u = (rc - static_cast<T>(rmin)) / width;
  const T u2 = u * u;
  *w = u2 * u * (T(-6) * u2 + T(15) * u - T(10)) + T(1);
  *dw = clamped ? T(0) : T(-30) * u2 * (u - T(1)) * (u - T(1)) / width;
}

// The normalisation of centre b's slot j: davg and dstd rows, or 0 and 1 for a virtual centre.
template <typename T>
struct Normal {
  T avg[4], std[4];
};

template <typename T>
inline Normal<T> Normalisation(const EnvInputs<T>& in, int64_t b, int64_t j) {
  Normal<T> n;
  const int64_t t = in.ctype[b];
  for (int c = 0; c < 4; ++c) {
    n.avg[c] = t >= 0 ? in.davg[(t * in.nnei + j) * 4 + c] : T(0);
    n.std[c] = t >= 0 ? in.dstd[(t * in.nnei + j) * 4 + c] : T(1);
  }
  return n;
}

template <typename T>
void EdgesRange(const EnvInputs<T>& in, const EnvOutputs<T>& out, bool* a_real, int64_t b0, int64_t b1) {
  const int64_t N = in.nnei;
  const T protection = static_cast<T>(in.protection), a_rcut = static_cast<T>(in.a_rcut);
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t j = 0; j < N; ++j) {
      const int64_t s = b * N + j, row = in.nbr[s];
      T* h = out.h2sw + s * 3;
      const Normal<T> n = Normalisation(in, b, j);
      if (row < 0) {  // the reference's values at a padded slot: env 0, normalised
        h[0] = h[1] = h[2] = T(0);
        out.sw[s] = T(0);
        out.edge_in[s] = in.edge_dist ? T(0) : (T(0) - n.avg[0]) / n.std[0];
        if (j < in.ncut) a_real[b * in.ncut + j] = false;
        continue;
      }
      const Pair<T> p = Geometry(in, b, row);
      T w, dw;
      Switch(p.L, in.e_rcut_smth, in.e_rcut, in.exp_switch, &w, &dw);
      const T lp = p.L + protection;
      for (int c = 0; c < 3; ++c) h[c] = (p.d[c] / (lp * lp) * w - n.avg[c + 1]) / n.std[c + 1] * w;
      out.sw[s] = w;
      out.edge_in[s] = in.edge_dist ? p.L : (T(1) / lp * w - n.avg[0]) / n.std[0];
      if (j < in.ncut) a_real[b * in.ncut + j] = p.L < a_rcut;
    }
  }
}

// The unit vectors of centre b's real angle slots (their count is returned) and their slots.
template <typename T>
inline int64_t Units(const EnvInputs<T>& in, int64_t b, std::vector<T>& u, std::vector<Pair<T>>& pairs,
                     std::vector<int64_t>& slots) {
  const T eps = static_cast<T>(kUnitEps);
  int64_t n = 0;
  for (int64_t j = 0; j < in.nang; ++j) {
    if (!in.a_mask[b * in.nang + j]) continue;
    const Pair<T> p = Geometry(in, b, in.nbr[b * in.nnei + j]);
    for (int c = 0; c < 3; ++c) u[n * 3 + c] = p.d[c] / (p.L + eps);
    pairs[n] = p;
    slots[n] = j;
    ++n;
  }
  return n;
}

template <typename T>
struct AngleScratch {
  std::vector<T> u, gu;
  std::vector<Pair<T>> pairs;
  std::vector<int64_t> slots;
  void Reserve(int64_t nang) {
    u.resize(nang * 3);
    gu.resize(nang * 3);
    pairs.resize(nang);
    slots.resize(nang);
  }
};

template <typename T>
void AnglesRange(const EnvInputs<T>& in, const EnvOutputs<T>& out, int64_t b0, int64_t b1) {
  const T keep = static_cast<T>(1.0 - kUnitEps);
  AngleScratch<T> s;
  s.Reserve(in.nang);
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t j = 0; j < in.nang; ++j) out.a_sw[b * in.nang + j] = T(0);
    const int64_t n = Units(in, b, s.u, s.pairs, s.slots);
    for (int64_t k = 0; k < n; ++k) {
      T w, dw;
      Switch(s.pairs[k].L, in.a_rcut_smth, in.a_rcut, in.exp_switch, &w, &dw);
      out.a_sw[b * in.nang + s.slots[k]] = w;
    }
    T* cosine = out.cosine + in.offset[b];
    for (int64_t j = 0; j < n; ++j) {
      const T* uj = s.u.data() + j * 3;
      for (int64_t k = 0; k < n; ++k) {
        const T* uk = s.u.data() + k * 3;
        cosine[j * n + k] = (uj[0] * uk[0] + uj[1] * uk[1] + uj[2] * uk[2]) * keep;
      }
    }
  }
}

// d/dd of the slot's outputs: g_L collects everything that depends on L; the direction's own terms go
// to g_d directly. Returns g_d + g_L dL/dd.
template <typename T>
inline void AddLengthGradient(const Pair<T>& p, T g_L, T* g_d) {
  if (p.L > T(0)) {
    for (int c = 0; c < 3; ++c) g_d[c] += g_L * p.d[c] / p.L;
  }
}

template <typename T>
void Backward(const EnvInputs<T>& in, const EnvGradients<T>& g) {
  const int64_t N = in.nnei;
  const T protection = static_cast<T>(in.protection), eps = static_cast<T>(kUnitEps);
  const T keep = static_cast<T>(1.0 - kUnitEps);
  AngleScratch<T> s;
  s.Reserve(in.nang);
  for (int64_t b = 0; b < in.nb; ++b) {
    T* gc = g.coord + in.centre[b] * 3;
    auto scatter = [&](int64_t row, const T* g_d) {
      T* gn = g.coord + row * 3;
      for (int c = 0; c < 3; ++c) {
        gn[c] += g_d[c];
        gc[c] -= g_d[c];
      }
    };
    for (int64_t j = 0; j < N; ++j) {
      const int64_t sl = b * N + j, row = in.nbr[sl];
      if (row < 0) continue;
      const Pair<T> p = Geometry(in, b, row);
      const Normal<T> n = Normalisation(in, b, j);
      T w, dw;
      Switch(p.L, in.e_rcut_smth, in.e_rcut, in.exp_switch, &w, &dw);
      const T lp = p.L + protection, q = T(1) / lp;
      T g_w = g.g_sw ? g.g_sw[sl] : T(0), g_L = 0, g_env[4] = {0, 0, 0, 0}, g_d[3] = {0, 0, 0};
      if (g.g_h2sw) {  // h2sw_c = dm_c w, dm_c = (env_c - avg_c) / std_c
        const T* gh = g.g_h2sw + sl * 3;
        for (int c = 0; c < 3; ++c) {
          const T dm = (p.d[c] / (lp * lp) * w - n.avg[c + 1]) / n.std[c + 1];
          g_w += gh[c] * dm;
          g_env[c + 1] = gh[c] * w / n.std[c + 1];
        }
      }
      if (g.g_edge_in) {
        if (in.edge_dist) {
          g_L += g.g_edge_in[sl];
        } else {
          g_env[0] = g.g_edge_in[sl] / n.std[0];
        }
      }
      // env_0 = q w, env_c = d_c q² w, q = 1 / (L + protection)
      T g_q = g_env[0] * w;
      g_w += g_env[0] * q;
      for (int c = 0; c < 3; ++c) {
        g_d[c] += g_env[c + 1] * q * q * w;
        g_q += g_env[c + 1] * p.d[c] * T(2) * q * w;
        g_w += g_env[c + 1] * p.d[c] * q * q;
      }
      g_L += -g_q * q * q + g_w * dw;
      AddLengthGradient(p, g_L, g_d);
      scatter(row, g_d);
    }
    if (in.nang == 0) continue;
    // the angle list: a_sw_j = switch(L_j), cosine_jk = u_j·u_k (1 - 1e-6), u = d / (L + 1e-6)
    const int64_t n = Units(in, b, s.u, s.pairs, s.slots);
    const T* gcos = g.g_cosine ? g.g_cosine + in.offset[b] : nullptr;
    for (int64_t j = 0; j < n; ++j) {
      T* gu = s.gu.data() + j * 3;
      gu[0] = gu[1] = gu[2] = T(0);
      if (!gcos) continue;
      for (int64_t k = 0; k < n; ++k) {
        const T c = (gcos[j * n + k] + gcos[k * n + j]) * keep;
        for (int a = 0; a < 3; ++a) gu[a] += c * s.u[k * 3 + a];
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      const Pair<T>& p = s.pairs[j];
      T g_L = 0, g_d[3] = {0, 0, 0};
      if (g.g_a_sw) {
        T w, dw;
        Switch(p.L, in.a_rcut_smth, in.a_rcut, in.exp_switch, &w, &dw);
        g_L += g.g_a_sw[b * in.nang + s.slots[j]] * dw;
      }
      const T* gu = s.gu.data() + j * 3;
      const T le = p.L + eps;
      const T gu_d = gu[0] * p.d[0] + gu[1] * p.d[1] + gu[2] * p.d[2];
      for (int c = 0; c < 3; ++c) g_d[c] += gu[c] / le;
      g_L -= gu_d / (le * le);
      AddLengthGradient(p, g_L, g_d);
      scatter(in.nbr[b * N + s.slots[j]], g_d);
    }
  }
}

}  // namespace

void EnvEdges(const EnvInputs<float>& in, const EnvOutputs<float>& out, bool* a_real, int64_t b0, int64_t b1) {
  EdgesRange(in, out, a_real, b0, b1);
}
void EnvEdges(const EnvInputs<double>& in, const EnvOutputs<double>& out, bool* a_real, int64_t b0, int64_t b1) {
  EdgesRange(in, out, a_real, b0, b1);
}
void EnvAngles(const EnvInputs<float>& in, const EnvOutputs<float>& out, int64_t b0, int64_t b1) {
  AnglesRange(in, out, b0, b1);
}
void EnvAngles(const EnvInputs<double>& in, const EnvOutputs<double>& out, int64_t b0, int64_t b1) {
  AnglesRange(in, out, b0, b1);
}
void EnvBackward(const EnvInputs<float>& in, const EnvGradients<float>& grad) { Backward(in, grad); }
void EnvBackward(const EnvInputs<double>& in, const EnvGradients<double>& grad) { Backward(in, grad); }

}  // namespace deepmd::kernels
