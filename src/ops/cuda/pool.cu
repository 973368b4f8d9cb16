/// @brief CUDA pooling, NHWC: max pooling (ceil mode, windows clipped to the input so padding
/// never wins) and global average pooling. Same results as src/ops/cpu/pool.cpp, bit for bit.
///
/// Max pooling forward: each output element (n, oh, ow, c) is computed by one thread; a block
/// is 32 channels (a warp: contiguous reads) by 8 pixels, and a thread does the index math of
/// its pixel once for all the channels it takes (c, c + 32, ...). The window is visited in
/// row-major order, seeded by its first in-bounds element and updated with `x > m ? x : m`,
/// exactly the CPU's expression (so NaN handling is identical too).
///
/// Max pooling backward is a GATHER, not a scatter: each input element (n, h, w, c) (same
/// thread layout as forward) visits the (at most ceil(k/s)^2) windows containing (h, w) in
/// row-major (oh, ow) order and adds dy of those windows whose FIRST maximum (first in-bounds
/// position, row-major, with x == y, as the CPU's `done` mask) is (h, w). Windows overlap (k=3,
/// s=2), so a scatter would need atomicAdd, whose order (and float sum) varies from run to run;
/// the gather writes each dx element exactly once (dx is overwritten, no memset needed), with
/// no atomics, and adds the contributions in the same (oh, ow) order, starting from +0, as the
/// CPU's `dxi += hit ? dy : 0` loop — the same float sum. No argmax is stored; like the CPU we
/// re-derive it from the forward's x and y.
///
/// Global average pooling: one thread per (n, c), summing the H*W pixels in order in float and
/// then multiplying by 1/(H W) — the CPU's exact sequence of float operations, deterministic.
/// Backward: one thread per dx element, dy * 1/(H W).
///
/// x and y may be fp32, bf16 or fp16 (one dtype for both; act.cuh): the max of 16-bit values
/// is one of them, so storing it back is exact, and comparisons are made on the widened
/// values, as the CPU's bf16 path.
#include <algorithm>

#include "act.cuh"
#include "common.cuh"
#include "kernel_math.cuh"
#include "firetrain/ops/pool.hpp"

namespace ft::cuda {

namespace {

constexpr int kThreads = 256;
static_assert(kThreads <= 256, "fits_int32 assumes grid strides below 2^28");

// Block shape of the max pooling kernels: kPoolCx channels (a warp) by kPoolPx pixels. Each
// thread takes one pixel at a time (grid-stride over pixels) and the channels c = threadIdx.x,
// c + kPoolCx, ... of it, so the pixel's index decomposition and window range are computed
// once per pixel rather than once per element; a warp reads and writes contiguous channels.
// Index type I: int when both x and y fit (with_index of max_numel), else int64_t.
constexpr int kPoolCx = 32;
constexpr int kPoolPx = 8;

template <class I, class T>
__global__ void __launch_bounds__(kPoolCx* kPoolPx)
    maxpool_forward_kernel(PoolDims d, I pixels, const T* __restrict__ x, T* __restrict__ y) {
  for (I p = I(blockIdx.x) * I(kPoolPx) + I(threadIdx.y); p < pixels;
       p += I(gridDim.x) * I(kPoolPx)) {
    const Pixel<I> o = pixel_of(p, d.OH, d.OW);
    for (int c = int(threadIdx.x); c < d.C; c += kPoolCx)
      store(y, p * I(d.C) + I(c), maxpool_forward_px(d, x, o, c));
  }
}

template <class I, class T>
__global__ void __launch_bounds__(kPoolCx* kPoolPx)
    maxpool_backward_kernel(PoolDims d, I pixels, const T* __restrict__ x,
                            const T* __restrict__ y, const float* __restrict__ dy,
                            float* __restrict__ dx) {
  for (I p = I(blockIdx.x) * I(kPoolPx) + I(threadIdx.y); p < pixels;
       p += I(gridDim.x) * I(kPoolPx)) {
    const Pixel<I> q = pixel_of(p, d.H, d.W);
    const PoolWindows win = windows_of(d, q.h, q.w);
    for (int c = int(threadIdx.x); c < d.C; c += kPoolCx)
      dx[p * I(d.C) + I(c)] = maxpool_backward_px(d, x, y, dy, q, win, c);
  }
}

struct CudaMaxPool final : MaxPool2d::Impl {
  explicit CudaMaxPool(const PoolShape& s) : s_(s) {}
  PoolDims dims(int N) const {
    return PoolDims{N, s_.H, s_.W, s_.C, s_.OH(), s_.OW(), s_.k, s_.stride, s_.pad};
  }
  /// Elements of the larger of x and y, which sets the kernels' index type (y may be the
  /// larger one: padding in ceil mode can make OH > H).
  static int64_t max_numel(const PoolDims& d) {
    return int64_t(d.N) * d.C * std::max(int64_t(d.H) * d.W, int64_t(d.OH) * d.OW);
  }
  void forward(int N, ConstAct x, Act y) override {
    FT_REQUIRE(x.dtype() == y.dtype(), "max pooling: x and y must have one dtype");
    const PoolDims d = dims(N);
    const int64_t pixels = int64_t(N) * d.OH * d.OW;
    if (pixels <= 0 || d.C <= 0) return;
    const dim3 block(kPoolCx, kPoolPx);
    const unsigned g = grid_for(pixels, kPoolPx);
    with_dtype(x.dtype(), [&](auto t) {
      with_index(max_numel(d), [&](auto it) {
        using T = decltype(t);
        using I = decltype(it);
        maxpool_forward_kernel<I, T><<<g, block, 0, stream()>>>(d, I(pixels), typed<T>(x),
                                                                typed<T>(y));
      });
    });
    FT_CUDA_LAUNCH();
  }
  void backward(int N, ConstAct x, ConstAct y, const float* dy, float* dx) override {
    FT_REQUIRE(x.dtype() == y.dtype(), "max pooling: x and y must have one dtype");
    const PoolDims d = dims(N);
    const int64_t pixels = int64_t(N) * d.H * d.W;
    if (pixels <= 0 || d.C <= 0) return;
    const dim3 block(kPoolCx, kPoolPx);
    const unsigned g = grid_for(pixels, kPoolPx);
    with_dtype(x.dtype(), [&](auto t) {
      with_index(max_numel(d), [&](auto it) {
        using T = decltype(t);
        using I = decltype(it);
        maxpool_backward_kernel<I, T><<<g, block, 0, stream()>>>(d, I(pixels), typed<T>(x),
                                                                 typed<T>(y), dy, dx);
      });
    });
    FT_CUDA_LAUNCH();
  }
  PoolShape s_;
};

// y (N, C); one thread per (n, c), sequential over the P = H*W pixels.
template <class T>
__global__ void global_avgpool_forward_kernel(int N, int P, int C, float inv,
                                              const T* __restrict__ x, float* __restrict__ y) {
  const int64_t total = int64_t(N) * C;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t n = i / C;
    const int64_t c = i - n * C;
    const T* xn = x + n * P * C + c;
    float s = 0.f;
    for (int p = 0; p < P; ++p) s += load(xn, int64_t(p) * C);
    y[i] = s * inv;
  }
}

// dx (N, P, C) = dy (N, C) * inv; index type I as the max pooling kernels.
template <class I>
__global__ void global_avgpool_backward_kernel(I total, int P, int C, float inv,
                                               const float* __restrict__ dy,
                                               float* __restrict__ dx) {
  for (I i = thread_index<I>(); i < total; i += grid_stride<I>()) {
    const I c = i % I(C);
    const I n = i / (I(P) * I(C));
    dx[i] = dy[n * I(C) + c] * inv;
  }
}

}  // namespace

std::unique_ptr<MaxPool2d::Impl> make_maxpool2d(const PoolShape& s) {
  return std::make_unique<CudaMaxPool>(s);
}

void global_avgpool_forward(int N, int H, int W, int C, ConstAct x, float* y) {
  const int P = H * W;
  if (N <= 0 || C <= 0 || P <= 0) return;
  const float inv = 1.0f / float(P);  // the CPU's expression
  const int64_t total = int64_t(N) * C;
  with_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    global_avgpool_forward_kernel<T><<<grid_for(total, kThreads), kThreads, 0, stream()>>>(
        N, P, C, inv, typed<T>(x), y);
  });
  FT_CUDA_LAUNCH();
}

void global_avgpool_backward(int N, int H, int W, int C, const float* dy, float* dx) {
  const int P = H * W;
  if (N <= 0 || C <= 0 || P <= 0) return;
  const float inv = 1.0f / float(P);
  const int64_t total = int64_t(N) * P * C;
  with_index(total, [&](auto it) {
    using I = decltype(it);
    global_avgpool_backward_kernel<I><<<grid_for(total, kThreads), kThreads, 0, stream()>>>(
        I(total), P, C, inv, dy, dx);
  });
  FT_CUDA_LAUNCH();
}

}  // namespace ft::cuda
