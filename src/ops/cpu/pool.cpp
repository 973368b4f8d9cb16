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
// so the max over the window vectorizes over C (oneDNN 2.6's NHWC max pooling took ~18% of a
// Fashion-MNIST step; this forward is a plain vmaxps loop). Forward also stores, per output
// element, the window position (row-major, 0..k*k-1) of its first maximum (torch's rule: a
// later equal value does not replace it), one byte each. Backward is then a gather over the
// inputs: each input position sums, over the windows that contain it, in row-major window
// order, the dy of those whose stored position is this one; every dx element is written once,
// with no zero fill and no reading of x or y. (It was a scatter that re-found each maximum from
// x and y: 45 ms of a 618 ms squeezenet1_0 step, batch 32. The sums and their order are the
// same, so the result is the same bit for bit on finite inputs; with a NaN first in a window
// the window keeps it, and its gradient now goes there instead of being dropped.) Backward uses
// the positions of the last forward when given that forward's x, y and batch (the net's
// contract); otherwise it runs the forward's search on x again first. bf16 (x and y of the same
// dtype): the same loops on values widened to fp32, where max and equality are exact, so the
// result is the fp32 one bit for bit; y keeps the winning input's bits.
namespace {
using cpu::ld;
using cpu::st_exact;

struct CpuMaxPool final : MaxPool2d::Impl {
  explicit CpuMaxPool(const PoolShape& s) : s_(s) {
    FT_REQUIRE(s.k * s.k <= 256, "max pooling window over 16x16: positions do not fit a byte");
  }
  void forward(int N, ConstAct x, Act y) override {
    if (x.is_bf16())  // (y's checked accessor rejects a y of the other dtype)
      fwd(N, x.bf16(), y.bf16());
    else
      fwd(N, x.f32(), y.f32());
    from_ = {x.raw(), y.raw(), N};
  }
  void backward(int N, ConstAct x, ConstAct y, const float* dy, float* dx) override {
    if (!(from_.x == x.raw() && from_.y == y.raw() && from_.N == N)) {
      // Not the last forward's tensors: find the maxima of these.
      if (x.is_bf16())
        refind(N, x.bf16());
      else
        refind(N, x.f32());
      from_ = {x.raw(), y.raw(), N};
    }
    bwd(N, dy, dx);
  }
  template <class T>
  void fwd(int N, const T* x, T* y);
  /// The positions of x's maxima by the forward's own search (y is not written).
  template <class T>
  void refind(int N, const T* x);
  void bwd(int N, const float* dy, float* dx);
  size_t kept_bytes() const override { return arg_.size(); }
  PoolShape s_;
  std::vector<uint8_t> arg_;  // (N, OH, OW, C): window position of each output's maximum
  struct From {
    const void* x = nullptr;
    const void* y = nullptr;
    int N = 0;
  } from_;
};
}  // namespace

template <class T>
void CpuMaxPool::fwd(int N, const T* x, T* y) {
  const int H = s_.H, W = s_.W, C = s_.C, OH = s_.OH(), OW = s_.OW();
  const int k = s_.k, st = s_.stride, pad = s_.pad;
  arg_.resize(size_t(N) * OH * OW * C);
  uint8_t* arg = arg_.data();
#pragma omp parallel
  {
    std::vector<float> pos(static_cast<size_t>(C));  // the running argmax, as floats (same lanes)
    float* ps = pos.data();
#pragma omp for collapse(2)
    for (int n = 0; n < N; ++n)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          const int64_t o = ((int64_t(n) * OH + oh) * OW + ow) * C;
          T* yo = y + o;
          bool first = true;
          for (int i = 0; i < k; ++i) {
            const int h = oh * st - pad + i;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < k; ++j) {
              const int w = ow * st - pad + j;
              if (w < 0 || w >= W) continue;
              const T* xi = x + ((int64_t(n) * H + h) * W + w) * C;
              const float p = float(i * k + j);
              if (first) {
#pragma omp simd
                for (int c = 0; c < C; ++c) yo[c] = xi[c], ps[c] = p;  // (bit copy)
                first = false;
              } else {
#pragma omp simd
                for (int c = 0; c < C; ++c) {
                  const float a = ld(xi, c), b = ld(yo, c);
                  const bool gt = a > b;  // strict: the first maximum stays
                  st_exact(yo, c, gt ? a : b);  // (a max of bf16 values is one)
                  ps[c] = gt ? p : ps[c];
                }
              }
            }
          }
          uint8_t* ao = arg + o;
#pragma omp simd
          for (int c = 0; c < C; ++c) ao[c] = uint8_t(ps[c]);
        }
  }
}

template <class T>
void CpuMaxPool::refind(int N, const T* x) {
  // The forward's own search (into scratch: y is the caller's and stays as it is), so the
  // positions follow the same rule, NaNs included (a window starting with a NaN keeps it).
  std::vector<T> y(size_t(N) * s_.OH() * s_.OW() * s_.C);
  fwd(N, x, y.data());
}

void CpuMaxPool::bwd(int N, const float* dy, float* dx) {
  const int H = s_.H, W = s_.W, C = s_.C, OH = s_.OH(), OW = s_.OW();
  const int k = s_.k, st = s_.stride, pad = s_.pad;
  const uint8_t* arg = arg_.data();
#pragma omp parallel for collapse(2)
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      // Windows (oh, ow) containing (h, w): oh*st - pad <= h <= oh*st - pad + k - 1.
      const int oh0 = std::max(0, (h + pad - k + st) / st), oh1 = std::min(OH - 1, (h + pad) / st);
      for (int w = 0; w < W; ++w) {
        const int ow0 = std::max(0, (w + pad - k + st) / st);
        const int ow1 = std::min(OW - 1, (w + pad) / st);
        float* dxi = dx + ((int64_t(n) * H + h) * W + w) * C;
#pragma omp simd
        for (int c = 0; c < C; ++c) dxi[c] = 0.f;
        for (int oh = oh0; oh <= oh1; ++oh)
          for (int ow = ow0; ow <= ow1; ++ow) {
            const int p = (h - (oh * st - pad)) * k + (w - (ow * st - pad));
            const int64_t o = ((int64_t(n) * OH + oh) * OW + ow) * C;
            const uint8_t* ao = arg + o;
            const float* dyo = dy + o;
#pragma omp simd
            for (int c = 0; c < C; ++c) dxi[c] += int(ao[c]) == p ? dyo[c] : 0.f;
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
