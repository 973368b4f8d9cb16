/// @brief CUDA softmax cross-entropy with top-1/top-5 counts (contract: loss.hpp).
///
/// One block of 256 threads per sample (grid-stride over samples). Per sample, as the CPU:
///   zmax = max_k z[k]                                   (float; exact in any order)
///   sum  = sum_k exp(double(z[k] - zmax))               (double)
///   lse  = log(sum) + zmax;  loss = lse - z[y]          (double)
///   rank = #{k : z[k] > z[y] or (z[k] == z[y] and k < y)}   (torch.argmax/topk tie order)
///   dlogits[k] = float((exp(double(z[k]) - lse) - [k == y]) / denom)
/// The block reductions are fixed-shape trees (warp shuffles, then one warp over the warp
/// partials), so results are deterministic run to run; the double sum is added in a different
/// order than the CPU's sequential loop, which changes it by a few ulps of a double (~1e-16
/// relative) — far below float resolution, so loss and dlogits agree with the CPU to float
/// rounding. The rank is an exact integer count, so top-1/top-5 are identical to the CPU.
///
/// Per-sample (loss, rank) go to a small device scratch, are copied back on the compute stream
/// (which waits for the kernel), and are summed on the host IN SAMPLE ORDER, the CPU's order of
/// summation — deterministic and independent of the grid. A label outside [0, K) (undefined
/// behaviour on the CPU) is reported as rank -1 and turned into an ft::Error here instead of
/// an out-of-bounds read.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common.cuh"
#include "firetrain/ops/loss.hpp"

namespace ft::cuda {

namespace {

constexpr int kThreads = 256;  // a multiple of 32 (the reductions assume full warps)

struct SampleResult {
  double loss;
  int rank;  // -1: label out of range
  int pad_;
};

struct MaxOp {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct SumOp {
  template <class T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};

// Reduces v over the block (blockDim.x a multiple of 32) and returns the result to every
// thread. smem holds 32 T. Fixed reduction tree: deterministic for a given blockDim.
template <class T, class Op>
__device__ T block_allreduce(T v, T identity, Op op, T* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = int(blockDim.x + 31) >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
  __syncthreads();  // smem may still be read from a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? smem[lane] : identity;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0) smem[0] = v;
  }
  __syncthreads();
  return smem[0];
}

__global__ void __launch_bounds__(kThreads)
    softmax_xent_kernel(int n, int K, const float* __restrict__ logits,
                        const int32_t* __restrict__ labels, double denom,
                        float* __restrict__ dlogits, SampleResult* __restrict__ out) {
  __shared__ float s_f[32];
  __shared__ double s_d[32];
  __shared__ int s_i[32];
  for (int i = blockIdx.x; i < n; i += gridDim.x) {  // uniform per block: barriers are safe
    const float* z = logits + int64_t(i) * K;
    const int y = labels[i];
    const bool valid = y >= 0 && y < K;

    float m = -INFINITY;
    for (int k = threadIdx.x; k < K; k += blockDim.x) m = z[k] > m ? z[k] : m;
    const float zmax = block_allreduce(m, -INFINITY, MaxOp{}, s_f);

    double s = 0.0;
    for (int k = threadIdx.x; k < K; k += blockDim.x) s += exp(double(z[k] - zmax));
    const double sum = block_allreduce(s, 0.0, SumOp{}, s_d);
    const double lse = log(sum) + zmax;

    const float zy = valid ? z[y] : 0.f;
    int above = 0;
    if (valid)
      for (int k = threadIdx.x; k < K; k += blockDim.x)
        above += z[k] > zy || (z[k] == zy && k < y);
    const int rank = block_allreduce(above, 0, SumOp{}, s_i);

    if (threadIdx.x == 0) {
      out[i].loss = lse - zy;
      out[i].rank = valid ? rank : -1;
      out[i].pad_ = 0;
    }
    if (dlogits) {
      float* d = dlogits + int64_t(i) * K;
      for (int k = threadIdx.x; k < K; k += blockDim.x)
        d[k] = float((exp(double(z[k]) - lse) - (k == y ? 1.0 : 0.0)) / denom);
    }
  }
}

// Device scratch for the per-sample results; grows, never shrinks, never freed (process
// lifetime; freeing from a static destructor would race the runtime's unloading).
SampleResult* scratch(int n) {
  static SampleResult* p = nullptr;
  static int cap = 0;
  if (n > cap) {
    int want = cap ? cap : 256;
    while (want < n) want = want > (1 << 29) ? n : want * 2;
    SampleResult* q = static_cast<SampleResult*>(alloc(size_t(want) * sizeof(SampleResult)));
    if (p) release(p);  // cudaFree waits for work that may still use the old block
    p = q;
    cap = want;
  }
  return p;
}

}  // namespace

LossStats softmax_xent(int n, int K, const float* logits, const int32_t* labels, double denom,
                       float* dlogits) {
  LossStats st;
  if (n <= 0) return st;
  FT_REQUIRE(K > 0, "softmax_xent: no classes");
  SampleResult* d_out = scratch(n);
  const unsigned grid = n < 65535 * 16 ? unsigned(n) : 65535u * 16u;
  softmax_xent_kernel<<<grid, kThreads, 0, stream()>>>(n, K, logits, labels, denom, dlogits,
                                                       d_out);
  FT_CUDA_LAUNCH();
  std::vector<SampleResult> h(static_cast<size_t>(n));
  FT_CUDA(cudaMemcpyAsync(h.data(), d_out, size_t(n) * sizeof(SampleResult),
                          cudaMemcpyDeviceToHost, stream()));
  FT_CUDA(cudaStreamSynchronize(stream()));
  for (int i = 0; i < n; ++i) {  // sample order, as the CPU
    if (h[size_t(i)].rank < 0)
      throw Error("softmax_xent: the label of local sample " + std::to_string(i) +
                  " is outside [0, " + std::to_string(K) + ") on " + where_am_i());
    st.loss_sum += h[size_t(i)].loss;
    st.correct1 += h[size_t(i)].rank == 0;
    st.correct5 += h[size_t(i)].rank < 5;
  }
  return st;
}

}  // namespace ft::cuda
