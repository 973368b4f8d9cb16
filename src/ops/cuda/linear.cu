/// @brief CUDA fully connected layer on cuBLAS (column-major view of torch's row-major
/// tensors), fused ReLU/bias kernels, and the NHWC <-> NCHW transposes of the flatten.
///
/// A row-major (R, C) array is a column-major (C, R) one, so with cuBLAS (column-major):
///   forward:   Y[O×N] = Wᵀ_cm(O×I) · X_cm(I×N)      -> gemm(T, N, O, N, I, w, I, x, I, y, O)
///   dx:        DX[I×N] = W_cm(I×O) · DY_cm(O×N)     -> gemm(N, N, I, N, O, w, I, dy, O, dx, I)
///   dw:        DW[I×O] = X_cm(I×N) · DY_cmᵀ(N×O)    -> gemm(N, T, I, O, N, x, I, dy, O, dw, I)
/// FP32 math without TF32 (CUBLAS_DEFAULT_MATH), so CPU parity holds at 1e-4.
#include "act.cuh"
#include "common.cuh"
#include "firetrain/ops/elementwise.hpp"
#include "firetrain/ops/linear.hpp"

namespace ft::cuda {

namespace {

__global__ void bias_relu_kernel(int64_t n, int O, const float* b, bool relu, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float v = y[i] + b[i % O];
    y[i] = relu ? relu_fwd(v) : v;
  }
}

__global__ void relu_mask_kernel(int64_t n, const float* y, float* dy) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dy[i] = relu_bwd(y[i], dy[i]);
}

// db[o] = sum_n dy[n, o]: one thread per output, sequential over n (deterministic).
__global__ void bias_grad_kernel(int N, int O, const float* dy, float* db) {
  for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < O; o += gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int n = 0; n < N; ++n) s += dy[int64_t(n) * O + o];
    db[o] = s;
  }
}

// to_nchw: y[n, c, p] = x[n, p, c]; else the reverse. One thread per element of the output.
template <class T>
__global__ void transpose_kernel(int N, int64_t P, int C, bool to_nchw, const T* x, float* y) {
  const int64_t total = int64_t(N) * P * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (to_nchw) {  // i indexes (n, c, p)
      const int64_t p = i % P, c = (i / P) % C, n = i / (P * C);
      y[i] = load(x, (n * P + p) * C + c);
    } else {  // i indexes (n, p, c)
      const int64_t c = i % C, p = (i / C) % P, n = i / (P * C);
      y[i] = load(x, (n * C + c) * P + p);
    }
  }
}

}  // namespace

void linear_forward(int N, int I, int O, bool relu, const float* x, const float* w,
                    const float* b, float* y) {
  const float one = 1.f, zero = 0.f;
  FT_CUBLAS(cublasSgemm(blas(), CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, &one, w, I, x, I, &zero, y, O));
  const int64_t n = int64_t(N) * O;
  bias_relu_kernel<<<grid_for(n), 256, 0, stream()>>>(n, O, b, relu, y);
  FT_CUDA_LAUNCH();
}

void linear_backward(int N, int I, int O, bool relu, const float* x, const float* w,
                     const float* y, float* dy, float* dx, float* dw, float* db) {
  const float one = 1.f, zero = 0.f;
  if (relu && y) {
    const int64_t n = int64_t(N) * O;
    relu_mask_kernel<<<grid_for(n), 256, 0, stream()>>>(n, y, dy);
    FT_CUDA_LAUNCH();
  }
  if (dx)
    FT_CUBLAS(
        cublasSgemm(blas(), CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, &one, w, I, dy, O, &zero, dx, I));
  FT_CUBLAS(cublasSgemm(blas(), CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, &one, x, I, dy, O, &zero, dw, I));
  bias_grad_kernel<<<grid_for(O), 256, 0, stream()>>>(N, O, dy, db);
  FT_CUDA_LAUNCH();
}

// x of any dtype (AlexNet's 16-bit features are widened here: the classifier is fp32).
void nhwc_to_nchw(int N, int H, int W, int C, ConstAct x, float* y) {
  const int64_t P = int64_t(H) * W, n = int64_t(N) * P * C;
  with_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    transpose_kernel<T><<<grid_for(n), 256, 0, stream()>>>(N, P, C, true, typed<T>(x), y);
  });
  FT_CUDA_LAUNCH();
}

void nchw_to_nhwc(int N, int H, int W, int C, const float* x, float* y) {
  const int64_t P = int64_t(H) * W, n = int64_t(N) * P * C;
  transpose_kernel<float><<<grid_for(n), 256, 0, stream()>>>(N, P, C, false, x, y);
  FT_CUDA_LAUNCH();
}

}  // namespace ft::cuda
