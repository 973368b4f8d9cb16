/// @brief CPU pooling: max pooling (ceil mode; windows are clipped to the input, so padding
/// never wins, as in torch) and global average pooling, NHWC.
#include "firetrain/ops/pool.hpp"

#include <algorithm>
#include <vector>

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
// Fashion-MNIST step; this forward is a plain vmaxps loop.)
namespace {
struct CpuMaxPool final : MaxPool2d::Impl {
  explicit CpuMaxPool(const PoolShape& s) : s_(s) {}
  void forward(int N, const float* x, float* y) override;
  void backward(int N, const float* x, const float* y, const float* dy, float* dx) override;
  PoolShape s_;
};
}  // namespace

void CpuMaxPool::forward(int N, const float* x, float* y) {
  const int H = s_.H, W = s_.W, C = s_.C, OH = s_.OH(), OW = s_.OW();
  const int k = s_.k, st = s_.stride, pad = s_.pad;
#pragma omp parallel for collapse(2)
  for (int n = 0; n < N; ++n)
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow) {
        float* yo = y + ((int64_t(n) * OH + oh) * OW + ow) * C;
        bool first = true;
        for (int i = 0; i < k; ++i) {
          const int h = oh * st - pad + i;
          if (h < 0 || h >= H) continue;
          for (int j = 0; j < k; ++j) {
            const int w = ow * st - pad + j;
            if (w < 0 || w >= W) continue;
            const float* xi = x + ((int64_t(n) * H + h) * W + w) * C;
            if (first) {
#pragma omp simd
              for (int c = 0; c < C; ++c) yo[c] = xi[c];
              first = false;
            } else {
#pragma omp simd
              for (int c = 0; c < C; ++c) yo[c] = xi[c] > yo[c] ? xi[c] : yo[c];
            }
          }
        }
      }
}

void CpuMaxPool::backward(int N, const float* x, const float* y, const float* dy, float* dx) {
  const int H = s_.H, W = s_.W, C = s_.C, OH = s_.OH(), OW = s_.OW();
  const int k = s_.k, st = s_.stride, pad = s_.pad;
#pragma omp parallel
  {
    std::vector<uint8_t> done(static_cast<size_t>(C));
#pragma omp for
    for (int n = 0; n < N; ++n) {
      float* dxn = dx + int64_t(n) * H * W * C;
      const float* xn = x + int64_t(n) * H * W * C;
      std::fill(dxn, dxn + int64_t(H) * W * C, 0.f);
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          const int64_t o = ((int64_t(n) * OH + oh) * OW + ow) * C;
          const float* yo = y + o;
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
              const float* xi = xn + p;
              float* dxi = dxn + p;
#pragma omp simd
              for (int c = 0; c < C; ++c) {
                const bool hit = !dn[c] && xi[c] == yo[c];
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

void global_avgpool_forward(int N, int H, int W, int C, const float* x, float* y) {
  const int P = H * W;
  const float inv = 1.0f / float(P);
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    float* yn = y + int64_t(n) * C;
    for (int c = 0; c < C; ++c) yn[c] = 0.f;
    const float* xn = x + int64_t(n) * P * C;
    for (int p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) yn[c] += xn[int64_t(p) * C + c];
    for (int c = 0; c < C; ++c) yn[c] *= inv;
  }
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
