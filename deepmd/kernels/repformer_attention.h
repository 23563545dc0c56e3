// The fused g2 attention of a DPA2 repformer layer (deepmd/dpkit/repformer_layer.py: Atten2Map followed
// by Atten2MultiHeadApply's products, between their linears) on raw row-major buffers, per centre atom.
// For centre b's real neighbour slots j, k (N slots in all, n of them real) and each head h:
//   x_jk = (q_j · k_k) g_jk s_jk + shift (s_jk - 1)     g = h2_j·h2_k / √nd (gate) or 1 / √nd
//   A_jk = softmax_k(x_j)_k s_jk (h2_j·h2_k) / √3       s = sw_j sw_k (smooth) or 1
//   out_j = Σ_k A_jk v_k
// The smooth softmax runs over all N slots: each padded one (sw = 0) has x = −shift, so the kernel adds
// N − n terms e^{−shift} to the denominator instead of forming them; without smooth it runs over real
// keys only, as deepmd-kit's −inf masking does. Padded slots' rows of `out` and of every gradient are
// zero: in the padded formula every term that touches them is multiplied by a zero switch or masked.
// Nothing of size [nh, N, N] leaves a centre's scratch.
#ifndef DEEPMD_KERNELS_REPFORMER_ATTENTION_H_
#define DEEPMD_KERNELS_REPFORMER_ATTENTION_H_

#include <cstdint>

namespace deepmd::kernels {

template <typename T>
struct AttentionInputs {
  int64_t nb = 0, nnei = 0, nh = 0, nd = 0, nv = 0;  // centres, slots, heads, key and value widths per head
  const T* q = nullptr;                             // [nb, nnei, nh * nd], head-major (h * nd + d)
  const T* k = nullptr;                             // [nb, nnei, nh * nd]
  const T* v = nullptr;                             // [nb, nnei, nh * nv], head-major
  const T* h2 = nullptr;                            // [nb, nnei, 3]
  const T* sw = nullptr;                            // [nb, nnei]
  const bool* real = nullptr;                       // [nb, nnei]
  bool gate = true, smooth = true;
  T shift = 20;
};

// Gradients of a scalar loss w.r.t. q, k, v, h2 and sw (real slots), given its gradient w.r.t. out.
template <typename T>
struct AttentionGradients {
  const T* g_out = nullptr;  // [nb, nnei, nh * nv]
  T* q = nullptr;            // [nb, nnei, nh * nd]
  T* k = nullptr;            // [nb, nnei, nh * nd]
  T* v = nullptr;            // [nb, nnei, nh * nv]
  T* h2 = nullptr;           // [nb, nnei, 3]
  T* sw = nullptr;           // [nb, nnei]
};

// Centres [b0, b1) write only their own rows (out [nb, nnei, nh * nv]), so ranges may run on different threads.
void AttentionForward(const AttentionInputs<float>& in, float* out, int64_t b0, int64_t b1);
void AttentionForward(const AttentionInputs<double>& in, double* out, int64_t b0, int64_t b1);
// Recomputes the attention map (nothing per pair is kept from the forward pass).
void AttentionBackward(const AttentionInputs<float>& in, const AttentionGradients<float>& grad, int64_t b0,
                       int64_t b1);
void AttentionBackward(const AttentionInputs<double>& in, const AttentionGradients<double>& grad, int64_t b0,
                       int64_t b1);

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_REPFORMER_ATTENTION_H_
