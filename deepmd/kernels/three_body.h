// The fused three-body embedding of DPA2's repinit (deepmd/dpkit/dpa2.py's ThreeBody, se_t_tebd with the
// type embedding concatenated: the first layer formed by blocks) on raw row-major buffers, per centre
// atom, over its real neighbour pairs only. For centre b's real slots j, k:
//   s_jk = r_j · r_k                                       (r: the normalised env matrix's direction rows)
//   y0 = act(s_jk ws + pj_j + pk_k + b0) idt0              (pj, pk: the type rows' products, per slot)
//   y_l = act(y_{l-1} W_l + b_l) idt_l [+ y_{l-1} or + (y_{l-1}, y_{l-1})]   l = 1 .. L
//   out_b = Σ_jk s_jk y_L                                  (the caller divides by nnei²)
// A pair with a padded or excluded slot has s = 0 in the padded formula (its direction row is zero:
// the caller checks that the stored averages of the direction components are zero), so it contributes
// nothing and is never formed: [nb, nnei, nnei, width] exists only as a centre's [n², width] scratch.
#ifndef DEEPMD_KERNELS_THREE_BODY_H_
#define DEEPMD_KERNELS_THREE_BODY_H_

#include <cstdint>
#include <vector>

#include "deepmd/kernels/activation.h"

namespace deepmd::kernels {

// One embedding layer l >= 1: y = act(x W + b) idt, plus x (residual 1) or (x, x) (residual 2).
template <typename T>
struct EmbeddingLayer {
  int64_t in = 0, out = 0, residual = 0;
  const T* w = nullptr;    // [in, out]
  const T* wt = nullptr;   // [out, in] (the backward's)
  const T* b = nullptr;    // [out]
  const T* idt = nullptr;  // [out]
};

template <typename T>
struct ThreeBodyInputs {
  int64_t nb = 0, nnei = 0, h0 = 0;
  const T* r = nullptr;        // [nb, nnei, 3]
  const bool* real = nullptr;  // [nb, nnei]
  const T* pj = nullptr;       // [nb, nnei, h0]
  const T* pk = nullptr;       // [nb, nnei, h0]
  const T* ws = nullptr;       // [h0]: the first layer's row of s
  const T* b0 = nullptr;       // [h0]
  const T* idt0 = nullptr;     // [h0]
  std::vector<EmbeddingLayer<T>> layers;
  Act act;
  int64_t Width() const { return layers.empty() ? h0 : layers.back().out; }
};

template <typename T>
struct ThreeBodyGradients {
  const T* g_out = nullptr;  // [nb, width]
  T* r = nullptr;            // [nb, nnei, 3]
  T* pj = nullptr;           // [nb, nnei, h0]
  T* pk = nullptr;           // [nb, nnei, h0]
};

// Centres [b0, b1) write only their own rows (out [nb, width]), so ranges may run on different threads.
void ThreeBodyForward(const ThreeBodyInputs<float>& in, float* out, int64_t b0, int64_t b1);
void ThreeBodyForward(const ThreeBodyInputs<double>& in, double* out, int64_t b0, int64_t b1);
// Recomputes the embedding (nothing per pair is kept from the forward pass).
void ThreeBodyBackward(const ThreeBodyInputs<float>& in, const ThreeBodyGradients<float>& grad, int64_t b0, int64_t b1);
void ThreeBodyBackward(const ThreeBodyInputs<double>& in, const ThreeBodyGradients<double>& grad, int64_t b0,
                       int64_t b1);

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_THREE_BODY_H_
