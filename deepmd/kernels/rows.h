// Small dense products over the rows of a per-centre scratch block, shared by the fused kernels
// (GCC vectorises the loops over output channels). Each helper takes W, the width in bytes of the
// widest vector of the instruction set its caller is compiled for (isa.h): a block of 4 rows x 2
// vectors then fills 8 of the registers on every set, where 64-byte vectors on AVX2 would spill.
#ifndef DEEPMD_KERNELS_ROWS_H_
#define DEEPMD_KERNELS_ROWS_H_

#include <cstdint>
#include <cstring>

namespace deepmd::kernels {

// The products below work on blocks of R rows x whole vectors of output channels held in registers
// (GCC's vector extensions: W-byte vectors, W/2-byte ones for a remaining half, single channels last):
// each weight row loaded feeds R FMAs and nothing is stored until the block is done.

template <typename T, int kBytes>
struct Lanes {
  typedef T V __attribute__((vector_size(kBytes)));
  static constexpr int kN = kBytes / static_cast<int>(sizeof(T));
};

template <typename V, typename T>
__attribute__((always_inline)) inline V Load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
__attribute__((always_inline)) inline void Store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// The rows q[k, :] of an Affine: consecutive rows of one matrix, or rows anywhere (gathered ones, read in
// place instead of copied).
template <typename T>
struct DenseRows {
  const T* q;
  int64_t width;
  const T* operator[](int64_t k) const { return q + k * width; }
  DenseRows Skip(int64_t k) const { return {q + k * width, width}; }
};
template <typename T>
struct RowPointers {
  const T* const* rows;
  const T* operator[](int64_t k) const { return rows[k]; }
  RowPointers Skip(int64_t k) const { return {rows + k}; }
};

// y[r, o0 : o0 + CV vectors] (+)= sum_c x[r, c] w[c, ...] for R rows (x [R, a], w [a, width], y [R, width]).
// kInit: the block starts from p[o] + q[r][o] (Affine), otherwise from y[r, o] (accumulate).
template <int R, int CV, int kBytes, bool kInit, typename T, typename Q>
__attribute__((always_inline)) inline void Block(const T* __restrict x, const T* __restrict w, const T* __restrict p,
                                                 const Q& q, T* __restrict y, int64_t a, int64_t width, int64_t o0) {
  using V = typename Lanes<T, kBytes>::V;
  constexpr int L = Lanes<T, kBytes>::kN;
  V acc[R][CV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < CV; ++v) {
      const int64_t o = o0 + v * L;
      acc[r][v] = kInit ? Load<V>(p + o) + Load<V>(q[r] + o) : Load<V>(y + r * width + o);
    }
  }
  for (int64_t c = 0; c < a; ++c) {
    V wc[CV];
    for (int v = 0; v < CV; ++v) wc[v] = Load<V>(w + c * width + o0 + v * L);
    for (int r = 0; r < R; ++r) {
      const V xc = V{} + x[r * a + c];
      for (int v = 0; v < CV; ++v) acc[r][v] += xc * wc[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < CV; ++v) Store(y + r * width + o0 + v * L, acc[r][v]);
  }
}

template <int W, int R, bool kInit, typename T, typename Q>
__attribute__((always_inline)) inline void BlockRows(const T* __restrict x, const T* __restrict w,
                                                     const T* __restrict p, const Q& q, T* __restrict y, int64_t a,
                                                     int64_t width) {
  constexpr int L = Lanes<T, W>::kN, H = L / 2;
  int64_t o0 = 0;
  for (; o0 + 2 * L <= width; o0 += 2 * L) Block<R, 2, W, kInit>(x, w, p, q, y, a, width, o0);
  if (o0 + L <= width) {
    Block<R, 1, W, kInit>(x, w, p, q, y, a, width, o0);
    o0 += L;
  }
  if constexpr (H > 1) {
    if (o0 + H <= width) {
      Block<R, 1, W / 2, kInit>(x, w, p, q, y, a, width, o0);
      o0 += H;
    }
  }
  for (; o0 < width; ++o0) {  // the last few channels one by one
    for (int r = 0; r < R; ++r) {
      T acc = kInit ? p[o0] + q[r][o0] : y[r * width + o0];
      for (int64_t c = 0; c < a; ++c) acc += x[r * a + c] * w[c * width + o0];
      y[r * width + o0] = acc;
    }
  }
}

template <int W, bool kInit, typename T, typename Q>
__attribute__((always_inline)) inline void Rows(const T* __restrict x, const T* __restrict w, const T* __restrict p,
                                                const Q& q, T* __restrict y, int64_t n, int64_t a, int64_t width) {
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) BlockRows<W, 4, kInit>(x + k * a, w, p, q.Skip(k), y + k * width, a, width);
  for (; k < n; ++k) BlockRows<W, 1, kInit>(x + k * a, w, p, q.Skip(k), y + k * width, a, width);
}

// y[k, :] = p + q[k, :] + x[k, :] W for k < n (x [n, a], W [a, width], y and q [n, width]).
template <int W, typename T>
__attribute__((always_inline)) inline void Affine(const T* __restrict x, const T* __restrict w, const T* __restrict p,
                                                  const T* __restrict q, T* __restrict y, int64_t n, int64_t a,
                                                  int64_t width) {
  Rows<W, true>(x, w, p, DenseRows<T>{q, width}, y, n, a, width);
}

// The same with q's rows wherever they are: y[k, :] = p + q_rows[k][:] + x[k, :] W.
template <int W, typename T>
__attribute__((always_inline)) inline void AffineGathered(const T* __restrict x, const T* __restrict w,
                                                          const T* __restrict p, const T* const* q_rows,
                                                          T* __restrict y, int64_t n, int64_t a, int64_t width) {
  Rows<W, true>(x, w, p, RowPointers<T>{q_rows}, y, n, a, width);
}

// g[k, :] += d[k, :] Wt for k < n (d [n, width], Wt [width, a] the transposed weight, g [n, a]).
template <int W, typename T>
__attribute__((always_inline)) inline void AddBack(const T* __restrict d, const T* __restrict wt, T* __restrict g,
                                                   int64_t n, int64_t width, int64_t a) {
  Rows<W, false>(d, wt, static_cast<const T*>(nullptr), DenseRows<T>{nullptr, 0}, g, n, width, a);  // q unused
}

// out[o0 : o0 + one vector] += sum_k x[k, ...] (x [n, width]), summed in registers.
template <int kBytes, typename T>
__attribute__((always_inline)) inline void AddColumnSum(const T* __restrict x, int64_t n, int64_t width, int64_t o0,
                                                        T* __restrict out) {
  using V = typename Lanes<T, kBytes>::V;
  V even = V{}, odd = V{};  // two chains: an add's latency is longer than its issue interval
  int64_t k = 0;
  for (; k + 2 <= n; k += 2) {
    even += Load<V>(x + k * width + o0);
    odd += Load<V>(x + (k + 1) * width + o0);
  }
  if (k < n) even += Load<V>(x + k * width + o0);
  Store(out + o0, Load<V>(out + o0) + even + odd);
}

// out[o] += sum_k x[k, o] for o < width (x [n, width]): whole vectors of columns summed in registers, so
// that the sum is not a chain of stores and reloads of out.
template <int W, typename T>
__attribute__((always_inline)) inline void AddColumnSums(const T* __restrict x, int64_t n, int64_t width,
                                                         T* __restrict out) {
  constexpr int L = Lanes<T, W>::kN, H = L / 2;
  int64_t o = 0;
  for (; o + L <= width; o += L) AddColumnSum<W>(x, n, width, o, out);
  if constexpr (H > 1) {
    if (o + H <= width) {
      AddColumnSum<W / 2>(x, n, width, o, out);
      o += H;
    }
  }
  for (; o < width; ++o) {
    T sum = 0;
    for (int64_t k = 0; k < n; ++k) sum += x[k * width + o];
    out[o] += sum;
  }
}

// sum_i a[i] x[i] (i < na) + sum_i b[i] y[i] (i < nb) with one vector accumulator: one horizontal sum
// instead of one per dot product.
template <int W, typename T>
__attribute__((always_inline)) inline T Dot2(const T* __restrict a, const T* __restrict x, int64_t na,
                                             const T* __restrict b, const T* __restrict y, int64_t nb) {
  using V = typename Lanes<T, W>::V;
  constexpr int L = Lanes<T, W>::kN;
  V acc = V{};
  T tail = 0;
  int64_t i = 0;
  for (; i + L <= na; i += L) acc += Load<V>(a + i) * Load<V>(x + i);
  for (; i < na; ++i) tail += a[i] * x[i];
  for (i = 0; i + L <= nb; i += L) acc += Load<V>(b + i) * Load<V>(y + i);
  for (; i < nb; ++i) tail += b[i] * y[i];
  for (int l = 0; l < L; ++l) tail += acc[l];
  return tail;
}

template <int W, typename T>
__attribute__((always_inline)) inline T Dot(const T* __restrict a, const T* __restrict x, int64_t n) {
  return Dot2<W>(a, x, n, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), 0);
}

// to[0:n] = from[0:n], inline (std::copy_n of a run-time length is a library call per row).
template <typename T>
__attribute__((always_inline)) inline void CopyRow(const T* __restrict from, int64_t n, T* __restrict to) {
  for (int64_t i = 0; i < n; ++i) to[i] = from[i];
}

}  // namespace deepmd::kernels

#endif  // DEEPMD_KERNELS_ROWS_H_
