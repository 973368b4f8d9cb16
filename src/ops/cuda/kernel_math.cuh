/// @brief Internal header of the CUDA backend: the per-element bodies of the kernels whose index
/// math is not trivial (max pooling forward and its gather-form backward, dropout, the OIHW <->
/// OHWI weight reorders), written as __host__ __device__ functions with no CUDA dependency, so
/// that tests/test_cuda_kernel_math.cpp runs them on the CPU against the cpu:: ops in every
/// build, GPU or not. The kernels (pool.cu, elementwise.cu, conv2d.cu) call these functions
/// once per output element.
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

// y[i] of y (N, OH, OW, C), i = ((n*OH + oh)*OW + ow)*C + c.
template <class T>
FT_HD inline float maxpool_forward_at(const PoolDims& d, const T* __restrict__ x,
                                                    int64_t i) {
  int64_t r = i;
  const int c = int(r % d.C);
  r /= d.C;
  const int ow = int(r % d.OW);
  r /= d.OW;
  const int oh = int(r % d.OH);
  const int64_t n = r / d.OH;
  const T* xn = x + n * d.H * d.W * d.C + c;
  float m = 0.f;
  bool first = true;
  for (int a = 0; a < d.k; ++a) {
    const int h = oh * d.st - d.pad + a;
    if (h < 0 || h >= d.H) continue;
    for (int b = 0; b < d.k; ++b) {
      const int w = ow * d.st - d.pad + b;
      if (w < 0 || w >= d.W) continue;
      const float v = load(xn, (int64_t(h) * d.W + w) * d.C);
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

// dx[i] of dx (N, H, W, C), i = ((n*H + h)*W + w)*C + c.
template <class T>
FT_HD inline float maxpool_backward_at(const PoolDims& d, const T* __restrict__ x,
                                                     const T* __restrict__ y,
                                                     const float* __restrict__ dy, int64_t i) {
  int64_t r = i;
  const int c = int(r % d.C);
  r /= d.C;
  const int w = int(r % d.W);
  r /= d.W;
  const int h = int(r % d.H);
  const int64_t n = r / d.H;
  const T* xn = x + n * d.H * d.W * d.C + c;  // x[n, ., ., c] at (hh*W + ww)*C
  const float xv = load(x, i);

  // Windows (oh, ow) containing (h, w): oh*st - pad <= h <= oh*st - pad + k - 1.
  const int hp = h + d.pad, wp = w + d.pad;  // >= 0
  const int oh_lo = hp - d.k + 1 <= 0 ? 0 : (hp - d.k + 1 + d.st - 1) / d.st;
  const int oh_hi = imin(hp / d.st, d.OH - 1);
  const int ow_lo = wp - d.k + 1 <= 0 ? 0 : (wp - d.k + 1 + d.st - 1) / d.st;
  const int ow_hi = imin(wp / d.st, d.OW - 1);

  float s = 0.f;
  for (int oh = oh_lo; oh <= oh_hi; ++oh) {
    const int h0 = oh * d.st - d.pad;  // window rows [h0, h0 + k), clipped to [0, H)
    for (int ow = ow_lo; ow <= ow_hi; ++ow) {
      const int w0 = ow * d.st - d.pad;
      const int64_t o = ((n * d.OH + oh) * d.OW + ow) * d.C + c;
      const float yv = load(y, o);
      if (!(xv == yv)) continue;  // not a maximum of this window (or NaN, as the CPU)
      // (h, w) is THE first maximum iff no in-bounds position before it in row-major window
      // order equals y.
      bool earlier = false;
      const int hb = imax(h0, 0), wb = imax(w0, 0), we = imin(w0 + d.k, d.W);
      for (int hh = hb; hh <= h && !earlier; ++hh) {
        const int wend = hh < h ? we : w;  // exclusive
        for (int ww = wb; ww < wend; ++ww)
          if (load(xn, (int64_t(hh) * d.W + ww) * d.C) == yv) {
            earlier = true;
            break;
          }
      }
      if (!earlier) s += dy[o];
    }
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Dropout.

// out[i] = keep ? in[i] * scale : 0 over (N, H, W, C); i = ((n*H + h)*W + w)*C + c.
template <class T>
FT_HD inline float dropout_at(int H, int W, int C, int c_off, float p, float scale,
                                            uint64_t seed, uint64_t step,
                                            const int64_t* samples, const T* in, int64_t i) {
  int64_t r = i;
  const int c = int(r % C);
  r /= C;
  const int w = int(r % W);
  r /= W;
  const int h = int(r % H);
  const int64_t n = r / H;
  const uint64_t s = uint64_t(samples[n]);
  const uint64_t elem = (uint64_t(c + c_off) * H + h) * W + w;  // NCHW-logical, as on the CPU
  return dropout_keep(seed, step, s, elem, p) ? load(in, i) * scale : 0.f;
}


// ---------------------------------------------------------------------------------------------
// Weight layouts: OIHW (torch, the parameter arena) and OHWI (= KRSC, cuDNN's NHWC filters).

/// For element i of an OHWI tensor (O, k, k, C), the index of the same weight in OIHW (O, C, k, k).
FT_HD inline int64_t oihw_index_of_ohwi(int64_t i, int C, int k) {
  const int64_t c = i % C;
  int64_t t = i / C;
  const int64_t kx = t % k;
  t /= k;
  const int64_t ky = t % k;
  const int64_t o = t / k;
  return ((o * C + c) * k + ky) * k + kx;
}
/// For element i of an OIHW tensor (O, C, k, k), the index of the same weight in OHWI (O, k, k, C).
FT_HD inline int64_t ohwi_index_of_oihw(int64_t i, int C, int k) {
  const int64_t kx = i % k;
  int64_t t = i / k;
  const int64_t ky = t % k;
  t /= k;
  const int64_t c = t % C;
  const int64_t o = t / C;
  return ((o * k + ky) * k + kx) * C + c;
}

}  // namespace ft::cuda
