// Weighted sums over a centre's neighbours of their gathered rows, the g1 side of a DPA2 repformer layer
// (deepmd/dpkit/repformer_layer.py: the convolution with g1_out_conv, and drrd's h2ᵀ g1 moments), on raw
// row-major buffers. For centre b and its real slots j (nbr_j >= 0; -1 marks a padded one):
//   conv_b = Σ_j w_j a_j ⊙ x_{nbr_j}        [F]     (a: per-slot rows, or their projection a_j Wa + ba)
//   hx_b   = Σ_j w_j h2_j ⊗ x_{nbr_j}       [3, F]  (x: the rows of every atom, local and ghost: g1_ext)
// so neither the gathered [nb, nnei, F] neighbour rows nor their masked, switched copies exist. Padded
// slots are never read; their rows of every gradient are zero.
#ifndef DEEPMD_KERNELS_NEIGHBOR_SUMS_H_
#define DEEPMD_KERNELS_NEIGHBOR_SUMS_H_

#include <cstdint>

namespace deepmd::kernels {

template <typename T>
struct SumsInputs {
  int64_t nb = 0, nnei = 0, f = 0, rows = 0;  // centres, slots, channels, rows of x
  bool has_a = true;                          // false: no conv (a and conv are empty)
  const T* a = nullptr;                       // [nb, nnei, f], or [nb, nnei, c] with a projection
  int64_t c = 0;                              // > 0: the conv's rows are a_j Wa + ba (e.g. proj_g1g2(g2))
  const T* wa = nullptr;                      // [c, f]
  const T* wat = nullptr;                     // [f, c]
  const T* ba = nullptr;                      // [f]
  const T* x = nullptr;                       // [rows, f]
  const int64_t* nbr = nullptr;               // [nb, nnei]: a row of x, or -1
  const T* w = nullptr;                       // [nb, nnei]
  const T* h2 = nullptr;                      // [nb, nnei, 3]
};

template <typename T>
struct SumsOutputs {
  T* conv = nullptr;  // [nb, f]
  T* hx = nullptr;    // [nb, 3, f]
};

// Gradients w.r.t. a, x, w and h2 given those w.r.t. conv and hx. x's rows are shared between centres:
// the backward adds into them, so one range runs at a time (x's gradient must start zeroed).
template <typename T>
struct SumsGradients {
  const T* g_conv = nullptr;  // [nb, f]
  const T* g_hx = nullptr;    // [nb, 3, f]
  T* a = nullptr;             // [nb, nnei, f] (or [nb, nnei, c] with a projection)
  T* x = nullptr;             // [rows, f], accumulated into
  T* w = nullptr;             // [nb, nnei]
  T* h2 = nullptr;            // [nb, nnei, 3]
};

// Centres [b0, b1) write only their own rows, so forward ranges may run on different threads.
void SumsForward(const SumsInputs<float>& in, const SumsOutputs<float>& out, int64_t b0, int64_t b1);
void SumsForward(const SumsInputs<double>& in, const SumsOutputs<double>& out, int64_t b0, int64_t b1);
void SumsBackward(const SumsInputs<float>& in, const SumsGradients<float>& grad, int64_t b0, int64_t b1);
void SumsBackward(const SumsInputs<double>& in, const SumsGradients<double>& grad, int64_t b0, int64_t b1);

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_NEIGHBOR_SUMS_H_
