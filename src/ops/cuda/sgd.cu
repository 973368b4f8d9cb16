/// @brief CUDA SGD update fused over the whole parameter arena (torch.optim.SGD semantics):
///
///   g = grad + wd * w;  buf = first ? g : momentum * buf + g;  w -= lr * buf
///
/// One grid-stride kernel, one thread per parameter; asynchronous on the compute stream.
/// The three cases are the CPU's three loops: momentum == 0 never touches buf (it may be
/// null then), the first step stores buf = g. The arithmetic is written with the
/// round-to-nearest intrinsics (__fmul_rn/__fadd_rn), which nvcc never contracts into FMAs,
/// so every operation rounds exactly as the C++ source says and the result is the same
/// float as a CPU build that does not contract (FIRETRAIN_NATIVE=OFF); an -march=native CPU
/// build may use FMAs and differ in the last bit.
#include "common.cuh"
#include "firetrain/ops/sgd.hpp"

namespace ft::cuda {

namespace {

constexpr int kThreads = 256;

// mode 0: momentum == 0; 1: first step with momentum; 2: later steps with momentum.
__global__ void sgd_kernel(int64_t n, int mode, float lr, float momentum, float wd,
                           float* __restrict__ w, const float* __restrict__ grad,
                           float* __restrict__ buf) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float wi = w[i];
    const float g = __fadd_rn(grad[i], __fmul_rn(wd, wi));
    float step = g;
    if (mode == 2) step = __fadd_rn(__fmul_rn(momentum, buf[i]), g);
    if (mode != 0) buf[i] = step;
    w[i] = __fsub_rn(wi, __fmul_rn(lr, step));
  }
}

}  // namespace

void sgd_update(size_t n, float lr, float momentum, float weight_decay, bool first_step,
                float* w, const float* grad, float* buf) {
  if (n == 0) return;
  const int mode = momentum == 0.f ? 0 : (first_step ? 1 : 2);
  const int64_t len = static_cast<int64_t>(n);
  sgd_kernel<<<grid_for(len, kThreads), kThreads, 0, stream()>>>(len, mode, lr, momentum,
                                                                 weight_decay, w, grad, buf);
  FT_CUDA_LAUNCH();
}

}  // namespace ft::cuda
