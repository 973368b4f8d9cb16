/// @brief CUDA element-wise ops: ReLU, channel concat/split copies, add, copy, dropout.
///
/// All asynchronous on ft::cuda::stream(); one thread per OUTPUT element with grid-stride
/// loops and int64 indices (N*H*W*C can pass 2^31). The per-element math is the FT_HD
/// functions of elementwise.hpp (relu_fwd, relu_bwd, dropout_keep), shared with the CPU, so
/// results are bit-identical to cpu::. Every kernel writes each output element exactly once
/// from inputs it does not write (except the documented in-place cases, where element i reads
/// and writes only index i), so there are no races and no order dependence.
///
/// Dropout: the keep decision is dropout_keep(seed, step, samples[n], elem) with elem the
/// NCHW-logical index ((c_off + c)*H + h)*W + w (c_off: the part's first global channel of a
/// planar concat), exactly as cpu::dropout_apply; the scale is
/// 1/(1-p) (0 when p >= 1) computed once on the host in float, as on the CPU.
///
/// Activations (ConstAct / Act) may be fp32, bf16 or fp16: the kernels are templated on the
/// element types (act.cuh), load fp32, compute in fp32 and round each result once, as the
/// CPU's bf16 path does. Gradients are fp32.
#include <algorithm>

#include "act.cuh"
#include "common.cuh"
#include "kernel_math.cuh"
#include "firetrain/ops/elementwise.hpp"

namespace ft::cuda {

namespace {

constexpr int kThreads = 256;
static_assert(kThreads <= 256, "fits_int32 assumes grid strides below 2^28");

__global__ void relu_forward_kernel(int64_t n, const float* x, float* y) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) y[i] = relu_fwd(x[i]);
}

template <class T>
__global__ void relu_backward_kernel(int64_t n, const T* y, const float* dy, float* dx) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) dx[i] = relu_bwd(load(y, i), dy[i]);
}

// One thread per element of a (P, Ca): i = p*Ca + c.
__global__ void channel_copy_in_kernel(int64_t P, int Ca, int off, int Ctot, const float* a,
                                       float* y) {
  const int64_t total = P * Ca;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t p = i / Ca;
    const int64_t c = i - p * Ca;
    y[p * Ctot + off + c] = a[i];
  }
}

__global__ void channel_copy_out_kernel(int64_t P, int Ca, int off, int Ctot, const float* y,
                                        float* a) {
  const int64_t total = P * Ca;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t p = i / Ca;
    const int64_t c = i - p * Ca;
    a[i] = y[p * Ctot + off + c];
  }
}

// One thread per element of y/dy (P, Ca + Cb): i = p*C + c.
__global__ void concat_relu_backward_kernel(int64_t P, int Ca, int Cb, const float* y,
                                            const float* dy, float* da, float* db) {
  const int C = Ca + Cb;
  const int64_t total = P * C;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t p = i / C;
    const int c = int(i - p * C);
    const float g = relu_bwd(y[i], dy[i]);
    if (c < Ca)
      da[p * Ca + c] = g;
    else
      db[p * Cb + (c - Ca)] = g;
  }
}

template <class TX, class TY>
__global__ void add_inplace_kernel(int64_t n, const TX* x, TY* y) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) store(y, i, load(y, i) + load(x, i));
}

// Index type I: int when both tensors fit (fits_int32), else int64_t (a 64-bit division per
// element is a long emulated sequence on the GPU).
template <class I, class TX, class TY>
__global__ void strided_add_kernel(I total, int n, const TX* x, int ldx, TY* y, int ldy) {
  for (I i = thread_index<I>(); i < total; i += grid_stride<I>()) {
    const I p = i / I(n);
    const I c = i - p * I(n);
    store(y, p * I(ldy) + c, load(y, p * I(ldy) + c) + load(x, p * I(ldx) + c));
  }
}

template <class TX, class TY>
__global__ void convert_kernel(int64_t n, const TX* x, TY* y) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) store(y, i, load(x, i));
}

template <class I, class TI, class TO>
__global__ void dropout_kernel(I total, int H, int W, int C, int c_off, float p, float scale,
                               uint64_t seed, uint64_t step, const int64_t* samples,
                               const TI* in, TO* out) {
  for (I i = thread_index<I>(); i < total; i += grid_stride<I>())
    store(out, i, dropout_at(H, W, C, c_off, p, scale, seed, step, samples, in, i));
}

template <class TI, class TO>
void dropout_apply(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                   const int64_t* samples, const TI* in, TO* out) {
  const int64_t total = int64_t(N) * H * W * C;
  if (total <= 0) return;
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;  // same float expression as the CPU
  const unsigned g = grid_for(total, kThreads);
  with_index(total, [&](auto it) {
    using I = decltype(it);
    dropout_kernel<I, TI, TO><<<g, kThreads, 0, stream()>>>(I(total), H, W, C, c_off, p, scale,
                                                            seed, step, samples, in, out);
  });
  FT_CUDA_LAUNCH();
}

}  // namespace

void relu_forward(int64_t n, const float* x, float* y) {
  if (n <= 0) return;
  relu_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(n, x, y);
  FT_CUDA_LAUNCH();
}

void relu_backward(int64_t n, ConstAct y, const float* dy, float* dx) {
  if (n <= 0) return;
  with_dtype(y.dtype(), [&](auto t) {
    using T = decltype(t);
    relu_backward_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream()>>>(n, typed<T>(y), dy,
                                                                               dx);
  });
  FT_CUDA_LAUNCH();
}

void channel_copy_in(int64_t P, int Ca, int off, int Ctot, const float* a, float* y) {
  if (P <= 0 || Ca <= 0) return;
  channel_copy_in_kernel<<<grid_for(P * Ca, kThreads), kThreads, 0, stream()>>>(P, Ca, off,
                                                                                 Ctot, a, y);
  FT_CUDA_LAUNCH();
}

void channel_copy_out(int64_t P, int Ca, int off, int Ctot, const float* y, float* a) {
  if (P <= 0 || Ca <= 0) return;
  channel_copy_out_kernel<<<grid_for(P * Ca, kThreads), kThreads, 0, stream()>>>(P, Ca, off,
                                                                                  Ctot, y, a);
  FT_CUDA_LAUNCH();
}

void concat_relu_backward(int64_t P, int Ca, int Cb, const float* y, const float* dy, float* da,
                          float* db) {
  const int64_t total = P * (int64_t(Ca) + Cb);
  if (total <= 0) return;
  concat_relu_backward_kernel<<<grid_for(total, kThreads), kThreads, 0, stream()>>>(
      P, Ca, Cb, y, dy, da, db);
  FT_CUDA_LAUNCH();
}

void add_inplace(int64_t n, ConstAct x, Act y) {
  if (n <= 0) return;
  with_dtype(x.dtype(), [&](auto tx) {
    with_dtype(y.dtype(), [&](auto ty) {
      using TX = decltype(tx);
      using TY = decltype(ty);
      add_inplace_kernel<TX, TY><<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
          n, typed<TX>(x), typed<TY>(y));
    });
  });
  FT_CUDA_LAUNCH();
}

void strided_add(int64_t P, int n, ConstAct x, int ldx, Act y, int ldy) {
  if (P <= 0 || n <= 0) return;
  with_dtype(x.dtype(), [&](auto tx) {
    with_dtype(y.dtype(), [&](auto ty) {
      using TX = decltype(tx);
      using TY = decltype(ty);
      const unsigned g = grid_for(P * n, kThreads);
      with_index(P * std::max(n, std::max(ldx, ldy)), [&](auto it) {
        using I = decltype(it);
        strided_add_kernel<I, TX, TY><<<g, kThreads, 0, stream()>>>(
            I(P * n), n, typed<TX>(x), ldx, typed<TY>(y), ldy);
      });
    });
  });
  FT_CUDA_LAUNCH();
}

void copy(int64_t n, ConstAct x, Act y) {
  if (n <= 0 || x.raw() == y.raw()) return;
  if (x.dtype() == y.dtype()) {
    FT_CUDA(cudaMemcpyAsync(y.raw(), x.raw(), size_t(n) * dtype_size(x.dtype()),
                            cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  with_dtype(x.dtype(), [&](auto tx) {
    with_dtype(y.dtype(), [&](auto ty) {
      using TX = decltype(tx);
      using TY = decltype(ty);
      convert_kernel<TX, TY><<<grid_for(n, kThreads), kThreads, 0, stream()>>>(n, typed<TX>(x),
                                                                               typed<TY>(y));
    });
  });
  FT_CUDA_LAUNCH();
}

void dropout_forward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                     const int64_t* samples, ConstAct x, Act y) {
  with_dtype(x.dtype(), [&](auto tx) {
    with_dtype(y.dtype(), [&](auto ty) {
      using TX = decltype(tx);
      using TY = decltype(ty);
      dropout_apply(N, H, W, C, c_off, p, seed, step, samples, typed<TX>(x), typed<TY>(y));
    });
  });
}

void dropout_backward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                      const int64_t* samples, const float* dy, float* dx) {
  dropout_apply(N, H, W, C, c_off, p, seed, step, samples, dy, dx);
}

}  // namespace ft::cuda
