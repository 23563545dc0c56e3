// A DPA3 descriptor's geometry (deepmd/dpkit/dpa3.py with env.py: deepmd-kit's env_mat, its
// normalisation, the switches and the angle list with its packed cosines) on raw row-major buffers, per
// centre atom. For centre b (row `centre_b` of the coordinates, type t) and its slot j (row nbr_j, -1 when
// padded), d_j = x_{nbr_j} - x_{centre_b}, L_j = |d_j|, q_j = 1 / (L_j + protection):
//   sw_j      = switch(L_j; e_rcut_smth, e_rcut)                          (0 at padded slots)
//   h2sw_j    = sw_j ((d_j q_j² sw_j - davg[t, j, 1:]) / dstd[t, j, 1:])     (0 at padded slots)
//   edge_in_j = L_j (edge_init_use_dist) or (q_j sw_j - davg[t, j, 0]) / dstd[t, j, 0]
//               (padded: 0, or -davg[t, j, 0] / dstd[t, j, 0], the reference's values there)
//   angle slot j < min(a_sel, nnei): real when slot j is and L_j < a_rcut; a_sw_j = switch(L_j; a_rcut_smth,
//   a_rcut); u_j = d_j / (L_j + 1e-6); cosine_jk = (u_j · u_k)(1 - 1e-6) for real angle slots j, k, packed
//   centre by centre, j then k (repflow_angle.h's layout).
// switch: the quintic of env.smooth_weight or env.exp_switch. A centre of type -1 (virtual) is not
// normalised (davg 0, dstd 1), as env.normalize.
#ifndef DEEPMD_KERNELS_REPFLOW_ENV_H_
#define DEEPMD_KERNELS_REPFLOW_ENV_H_

#include <cstdint>

namespace deepmd::kernels {

template <typename T>
struct EnvInputs {
  int64_t nb = 0, nnei = 0, ntypes = 0;
  const T* coord = nullptr;         // [rows, 3]
  const int64_t* nbr = nullptr;     // [nb, nnei]: a row of coord, -1 for a padded slot
  const int64_t* centre = nullptr;  // [nb]: the centre's row of coord
  const int64_t* ctype = nullptr;   // [nb]: the centre's type, -1 for a virtual one
  const T* davg = nullptr;          // [ntypes, nnei, 4]
  const T* dstd = nullptr;          // [ntypes, nnei, 4]
  double e_rcut = 0, e_rcut_smth = 0, a_rcut = 0, a_rcut_smth = 0, protection = 0;  // cast where used, as
                                                                                    // torch casts scalars
  bool exp_switch = false, edge_dist = false;
  int64_t ncut = 0;  // angle candidates: slots j < ncut (min(a_sel, nnei); 0 without angles)
  // The angle list, once known (EnvAngleSlots, then EnvPack): A slots per centre, its mask and the
  // first packed pair of each centre.
  int64_t nang = 0;
  const bool* a_mask = nullptr;     // [nb, nang]
  const int64_t* offset = nullptr;  // [nb + 1]
};

template <typename T>
struct EnvOutputs {
  T* h2sw = nullptr;     // [nb, nnei, 3]
  T* sw = nullptr;       // [nb, nnei]
  T* edge_in = nullptr;  // [nb, nnei]
  T* a_sw = nullptr;     // [nb, nang]
  T* cosine = nullptr;   // [offset[nb]]
};

// Gradients w.r.t. the outputs (nullptr: not used, zero) and the coordinates' gradient they give.
template <typename T>
struct EnvGradients {
  const T* g_h2sw = nullptr;
  const T* g_sw = nullptr;
  const T* g_edge_in = nullptr;
  const T* g_a_sw = nullptr;
  const T* g_cosine = nullptr;
  T* coord = nullptr;  // [rows, 3], accumulated into (the caller zeroes it)
};

// The edge outputs of centres [b0, b1) and their angle candidates: a_real [nb, ncut] (real slot within
// a_rcut). Each centre writes only its own rows.
void EnvEdges(const EnvInputs<float>& in, const EnvOutputs<float>& out, bool* a_real, int64_t b0, int64_t b1);
void EnvEdges(const EnvInputs<double>& in, const EnvOutputs<double>& out, bool* a_real, int64_t b0, int64_t b1);
// a_sw and the packed cosines of centres [b0, b1) (in.nang, in.a_mask and in.offset set).
void EnvAngles(const EnvInputs<float>& in, const EnvOutputs<float>& out, int64_t b0, int64_t b1);
void EnvAngles(const EnvInputs<double>& in, const EnvOutputs<double>& out, int64_t b0, int64_t b1);
// Adds every centre's contribution to grad.coord: neighbours' rows are shared, so one range, one thread.
void EnvBackward(const EnvInputs<float>& in, const EnvGradients<float>& grad);
void EnvBackward(const EnvInputs<double>& in, const EnvGradients<double>& grad);

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_REPFLOW_ENV_H_
