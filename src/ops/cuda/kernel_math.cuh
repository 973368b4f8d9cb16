/// @brief Internal header of the CUDA backend: the per-element bodies of the kernels whose index
/// math is not trivial (max pooling forward and its gather-form backward, dropout, the OIHW <->
/// OHWI weight reorders and channel padding, one thread's part of the bias + ReLU and
/// bias-gradient passes), written as __host__ __device__ functions with no CUDA dependency, so
/// that tests/test_cuda_kernel_math.cpp runs them on the CPU against the cpu:: ops in every
/// build, GPU or not. The kernels (pool.cu, elementwise.cu, conv2d.cu) call these functions
/// for each element they compute.
#pragma once

#include <cstdint>

#include "act.cuh"
#include "firetrain/ops/elementwise.hpp"  // dropout_keep, FT_HD

namespace ft::cuda {

struct PoolDims {
  int N, H, W, C, OH, OW, k, st, pad;
};

FT_HD inline int imin(int a, int b) { return a < b ? a : b; }
FT_HD inline int imax(int a, int b) { return a > b ? a : b; }

// Index type I: int when every index of the tensors involved fits in 31 bits (the kernels'
// fits_int32()), else int64_t. The per-element index decomposition is a chain of divisions,
// and a 64-bit integer division is a long emulated sequence on NVIDIA GPUs where a 32-bit one
// is a few instructions; the results are the same for either type (the CPU test runs both).

/// A pixel (n, h, w) of an NHWC tensor, from its pixel index p = (n*H + h)*W + w.
template <class I>
struct Pixel {
  I n;
  int h, w;
};
template <class I>
FT_HD inline Pixel<I> pixel_of(I p, int H, int W) {
  Pixel<I> q;
  q.w = int(p % I(W));
  p /= I(W);
  q.h = int(p % I(H));
  q.n = p / I(H);
  return q;
}

// The max pooling kernels run one thread per (pixel, channel) with the channels of one pixel
// across a warp: the pixel's index decomposition (and, in backward, its window range) is
// computed once per pixel and used for every channel the thread handles (the *_px functions);
// the *_at functions are the same math for a flat element index (i = p*C + c).

/// y[o, c] for the output pixel o = (n, oh, ow) of y (N, OH, OW, C).
template <class T, class I>
FT_HD inline float maxpool_forward_px(const PoolDims& d, const T* __restrict__ x,
                                      const Pixel<I>& o, int c) {
  const T* xn = x + o.n * I(d.H) * I(d.W) * I(d.C) + c;
  float m = 0.f;
  bool first = true;
  for (int a = 0; a < d.k; ++a) {
    const int h = o.h * d.st - d.pad + a;
    if (h < 0 || h >= d.H) continue;
    for (int b = 0; b < d.k; ++b) {
      const int w = o.w * d.st - d.pad + b;
      if (w < 0 || w >= d.W) continue;
      const float v = load(xn, (I(h) * I(d.W) + I(w)) * I(d.C));
      if (first) {
        m = v;
        first = false;
      } else {
        m = v > m ? v : m;  // the CPU's expression
      }
    }
  }
  return m;
}

// y[i] of y (N, OH, OW, C), i = ((n*OH + oh)*OW + ow)*C + c.
template <class T, class I>
FT_HD inline float maxpool_forward_at(const PoolDims& d, const T* __restrict__ x, I i) {
  const I p = i / I(d.C);
  return maxpool_forward_px(d, x, pixel_of(p, d.OH, d.OW), int(i - p * I(d.C)));
}

/// The output windows (oh, ow) that contain the input position (h, w):
/// oh*st - pad <= h <= oh*st - pad + k - 1, likewise for w.
struct PoolWindows {
  int oh_lo, oh_hi, ow_lo, ow_hi;
};
FT_HD inline PoolWindows windows_of(const PoolDims& d, int h, int w) {
  const int hp = h + d.pad, wp = w + d.pad;  // >= 0
  PoolWindows r;
  r.oh_lo = hp - d.k + 1 <= 0 ? 0 : (hp - d.k + 1 + d.st - 1) / d.st;
  r.oh_hi = imin(hp / d.st, d.OH - 1);
  r.ow_lo = wp - d.k + 1 <= 0 ? 0 : (wp - d.k + 1 + d.st - 1) / d.st;
  r.ow_hi = imin(wp / d.st, d.OW - 1);
  return r;
}

/// dx[q, c] for the input pixel q = (n, h, w) of dx (N, H, W, C), win = windows_of(d, h, w).
template <class T, class I>
FT_HD inline float maxpool_backward_px(const PoolDims& d, const T* __restrict__ x,
                                       const T* __restrict__ y, const float* __restrict__ dy,
                                       const Pixel<I>& q, const PoolWindows& win, int c) {
  const T* xn = x + q.n * I(d.H) * I(d.W) * I(d.C) + c;  // x[n, ., ., c] at (hh*W + ww)*C
  const int h = q.h, w = q.w;
  const float xv = load(xn, (I(h) * I(d.W) + I(w)) * I(d.C));
  float s = 0.f;
  for (int oh = win.oh_lo; oh <= win.oh_hi; ++oh) {
    const int h0 = oh * d.st - d.pad;  // window rows [h0, h0 + k), clipped to [0, H)
    for (int ow = win.ow_lo; ow <= win.ow_hi; ++ow) {
      const int w0 = ow * d.st - d.pad;
      const I o = ((q.n * I(d.OH) + I(oh)) * I(d.OW) + I(ow)) * I(d.C) + I(c);
      const float yv = load(y, o);
      if (!(xv == yv)) continue;  // not a maximum of this window (or NaN, as the CPU)
      // (h, w) is THE first maximum iff no in-bounds position before it in row-major window
      // order equals y.
      bool earlier = false;
      const int hb = imax(h0, 0), wb = imax(w0, 0), we = imin(w0 + d.k, d.W);
      for (int hh = hb; hh <= h && !earlier; ++hh) {
        const int wend = hh < h ? we : w;  // exclusive
        for (int ww = wb; ww < wend; ++ww)
          if (load(xn, (I(hh) * I(d.W) + I(ww)) * I(d.C)) == yv) {
            earlier = true;
            break;
          }
      }
      if (!earlier) s += dy[o];
    }
  }
  return s;
}

// dx[i] of dx (N, H, W, C), i = ((n*H + h)*W + w)*C + c.
template <class T, class I>
FT_HD inline float maxpool_backward_at(const PoolDims& d, const T* __restrict__ x,
                                       const T* __restrict__ y, const float* __restrict__ dy,
                                       I i) {
  const I p = i / I(d.C);
  const Pixel<I> q = pixel_of(p, d.H, d.W);
  return maxpool_backward_px(d, x, y, dy, q, windows_of(d, q.h, q.w), int(i - p * I(d.C)));
}

// ---------------------------------------------------------------------------------------------
// Dropout.

// out[i] = keep ? in[i] * scale : 0 over (N, H, W, C); i = ((n*H + h)*W + w)*C + c.
template <class T, class I>
FT_HD inline float dropout_at(int H, int W, int C, int c_off, float p, float scale,
                              uint64_t seed, uint64_t step, const int64_t* samples, const T* in,
                              I i) {
  I r = i;
  const int c = int(r % I(C));
  r /= I(C);
  const int w = int(r % I(W));
  r /= I(W);
  const int h = int(r % I(H));
  const I n = r / I(H);
  const uint64_t s = uint64_t(samples[n]);
  const uint64_t elem = (uint64_t(c + c_off) * H + h) * W + w;  // NCHW-logical, as on the CPU
  return dropout_keep(seed, step, s, elem, p) ? load(in, i) * scale : 0.f;
}

/// Whether every index of tensors of at most n elements can be an int in a grid-stride loop
/// (index + stride stays below 2^31: grid_for grids of <= 256 threads per block stride by at
/// most 2^28).
FT_HD inline bool fits_int32(int64_t n) { return n <= (int64_t(1) << 30); }

/// Calls f(I{}) with I = int when fits_int32(n), else int64_t: the one place a kernel's index
/// type is chosen (the host-side twin of with_dtype).
template <class F>
void with_index(int64_t n, F&& f) {
  if (fits_int32(n))
    f(int{});
  else
    f(int64_t{});
}

// ---------------------------------------------------------------------------------------------
// Bias + activation (conv2d.cu's bias_act_kernel): one thread's grid-stride loop.

/// y[i] = relu?(in[i] + b[i % O]) for i = start, start + stride, ... below n, stored as TO: the
/// channel i % O is computed once and then advanced by stride % O (one add and compare per
/// element instead of an integer division).
template <class I, class TI, class TO>
FT_HD inline void bias_act_strided(I start, I stride, I n, int O, const float* __restrict__ b,
                                   bool relu, const TI* in, TO* y) {
  if (start >= n) return;
  int c = int(start % I(O));
  const int cs = int(stride % I(O));
  for (I i = start; i < n; i += stride) {
    const float v = load(in, i) + b[c];
    store(y, i, relu ? relu_fwd(v) : v);
    c += cs;
    if (c >= O) c -= O;
  }
}

// ---------------------------------------------------------------------------------------------
// Bias gradient (conv2d.cu's bias_grad_partial_kernel): one thread's part.

/// One thread's rows of the bias-gradient pass over dy (P, O), channel c: the rows r0,
/// r0 + STRIDE, ... below r1. Each g = dy[r, c] is masked by relu_bwd(y) when y is given; then
/// with dyh (16-bit convolutions) g is stored rounded into dyh and dy is only read, without dyh
/// (fp32) the masked g is written back into dy when y is given. Returns the float sum of the g
/// in row order. UNROLL rows per trip, their loads first: more bytes in flight per thread (the
/// pass is memory-bound); the sum order is the same for any UNROLL.
template <int STRIDE, int UNROLL, class TY, class TH>
FT_HD inline float bias_grad_rows(int64_t r0, int64_t r1, int O, int c, const TY* __restrict__ y,
                                  float* __restrict__ dy, TH* __restrict__ dyh) {
  float s = 0.f;
  for (int64_t r = r0; r < r1; r += int64_t(UNROLL) * STRIDE) {
    float g[UNROLL];
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t rr = r + int64_t(u) * STRIDE;
      g[u] = 0.f;
      if (rr < r1) {
        const int64_t i = rr * O + c;
        g[u] = dy[i];
        if (y) g[u] = relu_bwd(load(y, i), g[u]);
      }
    }
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t rr = r + int64_t(u) * STRIDE;
      if (rr < r1) {
        const int64_t i = rr * O + c;
        if (dyh)
          store(dyh, i, g[u]);
        else if (y)
          dy[i] = g[u];
        s += g[u];
      }
    }
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Weight layouts: OIHW (torch, the parameter arena) and OHWI (= KRSC, cuDNN's NHWC filters).
// The OHWI side may have ck >= C channels: a 16-bit convolution whose C is not a multiple of 8
// (the stems' C = 3 or 1) pads its input and weights with zero channels to ck (conv2d.cu).

/// For element i of an OHWI tensor (O, k, k, ck), the index of the same weight in OIHW
/// (O, C, k, k), or -1 for a padding channel (c >= C).
FT_HD inline int64_t oihw_index_of_ohwi(int64_t i, int C, int k, int ck) {
  const int64_t c = i % ck;
  int64_t t = i / ck;
  if (c >= C) return -1;
  const int64_t kx = t % k;
  t /= k;
  const int64_t ky = t % k;
  const int64_t o = t / k;
  return ((o * C + c) * k + ky) * k + kx;
}
/// For element i of an OIHW tensor (O, C, k, k), the index of the same weight in OHWI
/// (O, k, k, ck).
FT_HD inline int64_t ohwi_index_of_oihw(int64_t i, int C, int k, int ck) {
  const int64_t kx = i % k;
  int64_t t = i / k;
  const int64_t ky = t % k;
  t /= k;
  const int64_t c = t % C;
  const int64_t o = t / C;
  return ((o * k + ky) * k + kx) * ck + c;
}

// ---------------------------------------------------------------------------------------------
// Channel padding of activations (N, H, W, C) <-> (N, H, W, ck), ck >= C: the padded input of
// a 16-bit convolution (zeros in the extra channels), and its input gradient cut back to C.

/// Element i of the padded (P, ck) tensor: x[p, c] for c < C, else 0.
template <class T, class I>
FT_HD inline float pad_channels_at(I i, int C, int ck, const T* __restrict__ x) {
  const I p = i / I(ck);
  const int c = int(i - p * I(ck));
  return c < C ? load(x, p * I(C) + I(c)) : 0.f;
}
/// Element i of the (P, C) tensor cut from the padded (P, ck) one.
template <class T, class I>
FT_HD inline float unpad_channels_at(I i, int C, int ck, const T* __restrict__ xk) {
  const I p = i / I(C);
  return load(xk, p * I(ck) + (i - p * I(C)));
}

}  // namespace ft::cuda
