/// @brief CUDA in-place scaling x *= a (the gradient arena's unscale): one grid-stride kernel,
/// asynchronous on the compute stream. __fmul_rn rounds exactly as the CPU's product, so both
/// backends give the same floats.
#include "common.cuh"
#include "firetrain/ops/scale.hpp"

namespace ft::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void scale_kernel(int64_t n, float a, float* __restrict__ x) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] = __fmul_rn(x[i], a);
}

}  // namespace

void scale_inplace(int64_t n, float a, float* x) {
  if (n <= 0) return;
  scale_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(n, a, x);
  FT_CUDA_LAUNCH();
}

}  // namespace ft::cuda
