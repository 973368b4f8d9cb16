/// @brief CPU pooling: max pooling (ceil mode; windows are clipped to the input, so padding
/// never wins, as in torch) and global average pooling, NHWC.
#include "firetrain/ops/pool.hpp"

#include <algorithm>
#include <vector>

#include "act_cpu.hpp"
#include "firetrain/core/error.hpp"

namespace ft {

int PoolShape::out_size(int in, int k, int s, int p, bool ceil_mode) {
  int num = in + 2 * p - k;
  int out = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;  // last window must start inside the input
  return out;
}

// Max pooling is memory-bound; in NHWC every window position is a contiguous channel vector,
// so the max over the window vectorizes over C. No argmax is stored: backward finds, per
// channel, the first window position (row-major, as torch) whose input equals the output, from
// the x and y the layer keeps anyway. (oneDNN 2.6's NHWC max pooling took ~18% of a
// Fashion-MNIST step; this forward is a plain vmaxps loop.) bf16 (x and y of the same dtype):
// the same loops on values widened to fp32, where max and equality are exact, so the result is
// the fp32 one bit for bit; y keeps the winning input's bits.
namespace {
using cpu::ld;
using cpu::st_exact;

struct CpuMaxPool final : MaxPool2d::Impl {
  explicit CpuMaxPool(const PoolShape& s) : s_(s) {}
  void forward(int N, ConstAct x, Act y) override {
    if (x.is_bf16())  // (y's checked accessor rejects a y of the other dtype)
      fwd(N, x.bf16(), y.bf16());
    else
      fwd(N, x.f32(), y.f32());
  }
  void backward(int N, ConstAct x, ConstAct y, const float* dy, float* dx) override {
    if (x.is_bf16())
      bwd(N, x.bf16(), y.bf16(), dy, dx);
    else
      bwd(N, x.f32(), y.f32(), dy, dx);
  }
  template <class T>
  void fwd(int N, const T* x, T* y);
  template <class T>
  void bwd(int N, const T* x, const T* y, const float* dy, float* dx);
  PoolShape s_;
};
}  // namespace

template <class T>
void CpuMaxPool::fwd(int N, const T* x, T* y) {
  const int H = s_.H, W = s_.W, C = s_.C, OH = s_.OH(), OW = s_.OW();
  const int k = s_.k, st = s_.stride, pad = s_.pad;
#pragma omp parallel for collapse(2)
  for (int n = 0; n < N; ++n)
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow) {
        T* yo = y + ((int64_t(n) * OH + oh) * OW + ow) * C;
        bool first = true;
        for (int i = 0; i < k; ++i) {
          const int h = oh * st - pad + i;
          if (h < 0 || h >= H) continue;
          for (int j = 0; j < k; ++j) {
            const int w = ow * st - pad + j;
            if (w < 0 || w >= W) continue;
            const T* xi = x + ((int64_t(n) * H + h) * W + w) * C;
            if (first) {
#pragma omp simd
              for (int c = 0; c < C; ++c) yo[c] = xi[c];  // (bit copy)
              first = false;
            } else {
#pragma omp simd
              for (int c = 0; c < C; ++c) {
                const float a = ld(xi, c), b = ld(yo, c);
                st_exact(yo, c, a > b ? a : b);  // (a max of bf16 values is one)
              }
            }
          }
        }
      }
}

template <class T>
void CpuMaxPool::bwd(int N, const T* x, const T* y, const float* dy, float* dx) {
  const int H = s_.H, W = s_.W, C = s_.C, OH = s_.OH(), OW = s_.OW();
  const int k = s_.k, st = s_.stride, pad = s_.pad;
#pragma omp parallel
  {
    std::vector<uint8_t> done(static_cast<size_t>(C));
#pragma omp for
    for (int n = 0; n < N; ++n) {
      float* dxn = dx + int64_t(n) * H * W * C;
      const T* xn = x + int64_t(n) * H * W * C;
      std::fill(dxn, dxn + int64_t(H) * W * C, 0.f);
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          const int64_t o = ((int64_t(n) * OH + oh) * OW + ow) * C;
          const T* yo = y + o;
          const float* dyo = dy + o;
          std::fill(done.begin(), done.end(), uint8_t(0));
          uint8_t* dn = done.data();
          for (int i = 0; i < k; ++i) {
            const int h = oh * st - pad + i;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < k; ++j) {
              const int w = ow * st - pad + j;
              if (w < 0 || w >= W) continue;
              const int64_t p = (int64_t(h) * W + w) * C;
              const T* xi = xn + p;
              float* dxi = dxn + p;
#pragma omp simd
              for (int c = 0; c < C; ++c) {
                const bool hit = !dn[c] && ld(xi, c) == ld(yo, c);
                dxi[c] += hit ? dyo[c] : 0.f;
                dn[c] |= uint8_t(hit);
              }
            }
          }
        }
    }
  }
}

namespace cpu {

std::unique_ptr<MaxPool2d::Impl> make_maxpool2d(const PoolShape& s) {
  return std::make_unique<CpuMaxPool>(s);
}

void global_avgpool_forward(int N, int H, int W, int C, ConstAct x, float* y) {
  const int P = H * W;
  const float inv = 1.0f / float(P);
  visit(x, [&](auto* x0) {
#pragma omp parallel for
    for (int n = 0; n < N; ++n) {
      float* yn = y + int64_t(n) * C;
      for (int c = 0; c < C; ++c) yn[c] = 0.f;
      const auto* xn = x0 + int64_t(n) * P * C;
      for (int p = 0; p < P; ++p)
        for (int c = 0; c < C; ++c) yn[c] += ld(xn, int64_t(p) * C + c);
      for (int c = 0; c < C; ++c) yn[c] *= inv;
    }
  });
}

void global_avgpool_backward(int N, int H, int W, int C, const float* dy, float* dx) {
  const int P = H * W;
  const float inv = 1.0f / float(P);
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    const float* dyn = dy + int64_t(n) * C;
    float* dxn = dx + int64_t(n) * P * C;
    for (int p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) dxn[int64_t(p) * C + c] = dyn[c] * inv;
  }
}

}  // namespace cpu
}  // namespace ft
