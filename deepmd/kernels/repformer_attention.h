// The fused g2 attention of a DPA2 repformer layer (deepmd/dpkit/repformer_layer.py: Atten2Map and
// Atten2MultiHeadApply with their linears, up to the layer norm) on raw row-major buffers, per centre atom.
// For centre b's real neighbour slots j, k (N slots in all, n of them real) and each head h:
//   q_j = g2_j Wq_h + bq_h,  k_j = g2_j Wk_h + bk_h,  v_j = g2_j Wv_h + bv_h
//   x_jk = (q_j · k_k) g_jk s_jk + shift (s_jk - 1)     g = h2_j·h2_k / √nd (gate) or 1 / √nd
//   A_jk = softmax_k(x_j)_k s_jk (h2_j·h2_k) / √3       s = sw_j sw_k (smooth) or 1
//   out_j = bo + Σ_h (Σ_k A_jk v_k) Wo_h
// The smooth softmax runs over all N slots: each padded one (sw = 0) has x = −shift, so the kernel adds
// N − n terms e^{−shift} to the denominator instead of forming them; without smooth it runs over real
// keys only, as deepmd-kit's −inf masking does. A padded slot's row of `out` is bo, as in the padded
// formula (whose every later use of it is masked); its rows of every gradient are zero. Neither the
// [nb, N, nh·nd] queries, keys and values nor the [nb, nh, N, N] maps exist outside a centre's scratch.
#ifndef DEEPMD_KERNELS_REPFORMER_ATTENTION_H_
#define DEEPMD_KERNELS_REPFORMER_ATTENTION_H_

#include <cstdint>

namespace deepmd::kernels {

template <typename T>
struct AttentionInputs {
  int64_t nb = 0, nnei = 0, ng2 = 0, nh = 0, nd = 0, nv = 0;  // centres, slots, g2 width, heads, key/value widths
  const T* g2 = nullptr;                                      // [nb, nnei, ng2]
  const T* h2 = nullptr;                                      // [nb, nnei, 3]
  const T* sw = nullptr;                                      // [nb, nnei]
  const bool* real = nullptr;                                 // [nb, nnei]
  // per head h: the linears' blocks, and their transposes for the backward
  const T* wq = nullptr;   // [nh, ng2, nd]
  const T* wk = nullptr;   // [nh, ng2, nd]
  const T* wv = nullptr;   // [nh, ng2, nv]
  const T* wo = nullptr;   // [nh, nv, ng2]
  const T* wqt = nullptr;  // [nh, nd, ng2]
  const T* wkt = nullptr;  // [nh, nd, ng2]
  const T* wvt = nullptr;  // [nh, nv, ng2]
  const T* wot = nullptr;  // [nh, ng2, nv]
  const T* bq = nullptr;   // [nh, nd]
  const T* bk = nullptr;   // [nh, nd]
  const T* bv = nullptr;   // [nh, nv]
  const T* bo = nullptr;   // [ng2]
  bool gate = true, smooth = true;
  T shift = 20;
};

// Gradients of a scalar loss w.r.t. g2, h2 and sw (real slots), given its gradient w.r.t. out.
template <typename T>
struct AttentionGradients {
  const T* g_out = nullptr;  // [nb, nnei, ng2]
  T* g2 = nullptr;           // [nb, nnei, ng2]
  T* h2 = nullptr;           // [nb, nnei, 3]
  T* sw = nullptr;           // [nb, nnei]
};

// Centres [b0, b1) write only their own rows (out [nb, nnei, ng2]), so ranges may run on different threads.
void AttentionForward(const AttentionInputs<float>& in, float* out, int64_t b0, int64_t b1);
void AttentionForward(const AttentionInputs<double>& in, double* out, int64_t b0, int64_t b1);
// Recomputes the attention map (nothing per pair is kept from the forward pass).
void AttentionBackward(const AttentionInputs<float>& in, const AttentionGradients<float>& grad, int64_t b0, int64_t b1);
void AttentionBackward(const AttentionInputs<double>& in, const AttentionGradients<double>& grad, int64_t b0,
                       int64_t b1);

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_REPFORMER_ATTENTION_H_
