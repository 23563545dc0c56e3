// The fused angle path of a DPA3 repflow layer (deepmd/dpkit/repflow_layer.py, update_angle, parallel
// update) on raw row-major buffers, per centre atom. Angles are packed: only real pairs are stored,
// centre b's n_b x n_b block (its real slots j, k in slot order) at rows [offset_b, offset_b + n_b^2).
// For real slots j, k of centre b:
//   u_jk  = act(angle_jk W_e + pe_j + qe_k)                 [e]  (edge_angle_linear1)
//   reduced_j = sw_j / scale * sum_k sw_k u_jk              [e]
//   v_jk  = act(angle_jk W_a + pa_j + qa_k)                 [a]  (angle_self_linear)
//   angle_new_jk = alpha angle_jk + res * v_jk              [a]  (the layer's update_style; skipped when
//                                                                 nothing reads it)
// Padded slots (real = false) are never read: their rows of `reduced` and of the gradients are zero,
// as in the padded formula, where every term that touches them is multiplied by a zero switch.
// Nothing of size [A, A, e] is formed; nothing at all is stored for padded pairs.
#ifndef DEEPMD_KERNELS_REPFLOW_ANGLE_H_
#define DEEPMD_KERNELS_REPFLOW_ANGLE_H_

#include <cstdint>

#include "deepmd/kernels/activation.h"

namespace deepmd::kernels {

template <typename T>
struct AngleInputs {
  int64_t nb = 0, nang = 0, a = 0, e = 0;  // centres, angle slots, angle and edge widths
  const T* angle = nullptr;                // [offset[nb], a]: packed real pairs
  const bool* real = nullptr;              // [nb, nang]
  const int64_t* offset = nullptr;         // [nb + 1]: first packed pair of each centre (PairOffsets)
  const T* sw = nullptr;                   // [nb, nang]
  const T* pe = nullptr;                   // [nb, nang, e]
  const T* qe = nullptr;                   // [nb, nang, e]
  const T* we = nullptr;                   // [a, e]
  const T* pa = nullptr;                   // [nb, nang, a]
  const T* qa = nullptr;                   // [nb, nang, a]
  const T* wa = nullptr;                   // [a, a]
  const T* res = nullptr;                  // [a]
  T alpha = 1, inv_scale = 1;
  Act act;
  bool update = true;  // false: angle_new is not computed (nothing reads it: the layer before a node-only one)
};

template <typename T>
struct AngleOutputs {
  T* reduced = nullptr;    // [nb, nang, e]
  T* angle_new = nullptr;  // [offset[nb], a]
};

// Gradients of a scalar loss w.r.t. the differentiable inputs, given its gradients w.r.t. the outputs.
template <typename T>
struct AngleGradients {
  const T* g_reduced = nullptr;    // [nb, nang, e]
  const T* g_angle_new = nullptr;  // [offset[nb], a]
  T* angle = nullptr;              // [offset[nb], a]
  T* sw = nullptr;                 // [nb, nang]
  T* pe = nullptr;                 // [nb, nang, e]
  T* qe = nullptr;                 // [nb, nang, e]
  T* pa = nullptr;                 // [nb, nang, a]
  T* qa = nullptr;                 // [nb, nang, a]
};

// offset[b] = sum over centres c < b of n_c^2 (n_c: real slots of c), offset[nb] = the packed pair count.
void PairOffsets(const bool* real, int64_t nb, int64_t nang, int64_t* offset);

// Centres [b0, b1); each writes only its own rows, so ranges may run on different threads.
void AngleForward(const AngleInputs<float>& in, const AngleOutputs<float>& out, int64_t b0, int64_t b1);
void AngleForward(const AngleInputs<double>& in, const AngleOutputs<double>& out, int64_t b0, int64_t b1);
// Recomputes the activations (nothing per angle is kept from the forward pass).
void AngleBackward(const AngleInputs<float>& in, const AngleGradients<float>& grad, int64_t b0, int64_t b1);
void AngleBackward(const AngleInputs<double>& in, const AngleGradients<double>& grad, int64_t b0, int64_t b1);

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_REPFLOW_ANGLE_H_
