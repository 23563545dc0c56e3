// The fused edge path of a DPA3 repflow layer (deepmd/dpkit/repflow_layer.py, parallel update) on raw
// row-major buffers, per centre atom b and its real neighbour slots j (row r_j of the extended atoms):
//   y_j   = act(q_b + p_{r_j} + edge_j W)                  [F]  node_edge_linear | edge_self_linear
//   msg_b = sum_j sw_j y_j[:m] / e_norm                     [m]  the edge messages (m = heads x n_dim)
//   eself_j = y_j[m:]                                       [F - m] the edge self update (empty if F == m)
//   hg_edge_b = sum_j h2sw_j^T edge_j                       [3, e]  the grrg products' inputs
//   hg_node_b = sum_j h2sw_j^T node_ext_{r_j}               [3, n]
// p = node_ext W1 and q = node W0 + b are small dense products the graph keeps; the kernel reads p and
// node_ext at the neighbours' rows, so neither the gathered [nb, N, n] rows nor the per-edge [nb, N, F]
// activations exist. Padded slots (row < 0) are never read: their eself rows are zero, and so are their
// gradients (in the padded formula each term touching them is multiplied by a zero switch).
// With the edge update (self_scale set, F - m = e), the eself output is the layer's new edge instead:
//   edge_new_j = alpha edge_j + self_scale ⊙ y_j[m:] + (j < nang ? head_j : tail)    [e], every slot
// (the update_style's combine with the angle update's term already scaled: head [nb, nang, e] per angle
// slot, tail [e] the constant beyond the angle list of smooth_edge_update), so that no [nb, N, e]
// temporary of the combine exists; a padded slot's row is alpha edge_j + its head or tail.
#ifndef DEEPMD_KERNELS_REPFLOW_EDGE_H_
#define DEEPMD_KERNELS_REPFLOW_EDGE_H_

#include <cstdint>

#include "deepmd/kernels/activation.h"

namespace deepmd::kernels {

template <typename T>
struct EdgeInputs {
  int64_t nb = 0, nnei = 0, e = 0, n = 0, f = 0, m = 0;  // centres, slots, edge/node/linear/message widths
  int64_t rows = 0;                                      // extended atoms (rows of p and node_ext)
  const T* edge = nullptr;                               // [nb, nnei, e]
  const int64_t* nbr = nullptr;                          // [nb, nnei]: row of each slot, -1 when padded
  const T* sw = nullptr;                                 // [nb, nnei]
  const T* h2sw = nullptr;                               // [nb, nnei, 3]
  const T* node_ext = nullptr;                           // [rows, n]
  const T* p = nullptr;                                  // [rows, f]
  const T* q = nullptr;                                  // [nb, f]
  const T* w = nullptr;                                  // [e, f]
  T inv_norm = 1;
  Act act;
  // the edge update (nullptr self_scale: eself is the update itself)
  const T* self_scale = nullptr;  // [e]
  const T* head = nullptr;        // [nb, nang, e]
  const T* tail = nullptr;        // [e]
  int64_t nang = 0;
  T alpha = 1;
};

template <typename T>
struct EdgeOutputs {
  T* msg = nullptr;      // [nb, m]
  T* eself = nullptr;    // [nb, nnei, f - m]
  T* hg_edge = nullptr;  // [nb, 3, e]
  T* hg_node = nullptr;  // [nb, 3, n]
};

// Gradients of a scalar loss w.r.t. the differentiable inputs, given its gradients w.r.t. the outputs.
template <typename T>
struct EdgeGradients {
  const T* g_msg = nullptr;      // [nb, m]
  const T* g_eself = nullptr;    // [nb, nnei, f - m] (with the edge update: of edge_new)
  const T* g_hg_edge = nullptr;  // [nb, 3, e]
  const T* g_hg_node = nullptr;  // [nb, 3, n]
  T* edge = nullptr;             // [nb, nnei, e]
  T* sw = nullptr;               // [nb, nnei]
  T* h2sw = nullptr;             // [nb, nnei, 3]
  T* node_ext = nullptr;         // [rows, n]: accumulated (neighbours are shared), zeroed by the caller
  T* p = nullptr;                // [rows, f]: accumulated, zeroed by the caller
  T* q = nullptr;                // [nb, f]
  T* head = nullptr;             // [nb, nang, e] (the edge update only)
};

// Centres [b0, b1); each writes only its own rows, so ranges may run on different threads. A row index
// outside [0, rows) is refused by the caller (the op checks every index once).
void EdgeForward(const EdgeInputs<float>& in, const EdgeOutputs<float>& out, int64_t b0, int64_t b1);
void EdgeForward(const EdgeInputs<double>& in, const EdgeOutputs<double>& out, int64_t b0, int64_t b1);
// Recomputes the activations. Adds into the shared rows of node_ext and p, so one range at a time.
void EdgeBackward(const EdgeInputs<float>& in, const EdgeGradients<float>& grad, int64_t b0, int64_t b1);
void EdgeBackward(const EdgeInputs<double>& in, const EdgeGradients<double>& grad, int64_t b0, int64_t b1);

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_REPFLOW_EDGE_H_
