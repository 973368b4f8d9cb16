/// @brief CUDA convolution on cuDNN (legacy cudnnConvolution* API): NHWC fp32 activations,
/// torch OIHW weights in the parameter arena, bias + optional ReLU in small custom kernels.
///
/// Design (the contract is in include/firetrain/ops/conv2d.hpp; CPU semantics in
/// src/ops/cpu/conv2d.cpp):
///
/// * Layouts. x, y, dx, dy are NHWC tensors (cudnnSetTensor4dDescriptor takes N, C, H, W in
///   that order whatever the format). cuDNN's NHWC fp32 kernels want the filter in the same
///   format as the data, i.e. KRSC = OHWI (CUDNN_TENSOR_NHWC filter format; the filter
///   descriptor takes K, C, R, S). The arena holds OIHW, so forward reorders w OIHW -> OHWI into
///   a device copy once per step (a tiny kernel; SqueezeNet's weights are 1.2 M floats in all),
///   and backward-data reuses that copy when it gets the same `w` pointer as the last forward
///   (the CPU code's w_fwd_src rule). Backward-filter writes dw in OHWI into a scratch buffer
///   that a second tiny kernel transposes to OIHW. When k == 1 or C == 1 the two layouts are
///   the same bytes, and w / dw are used directly (no copy, no scratch): that is every 1x1
///   squeeze/expand convolution of SqueezeNet.
///
/// * Math type. The convolution descriptor is set to CUDNN_FMA_MATH: with CUDNN_DEFAULT_MATH,
///   cuDNN may run fp32 convolutions on TF32 tensor cores on Ampere and later (10-bit
///   mantissa), which breaks fp32 parity with the CPU (rel err <= 1e-4). FMA math restricts
///   cuDNN to true fp32 kernels. The descriptor keeps FMA math whatever an algorithm search
///   reports (the execution follows the descriptor); results reporting a tensor-op math type
///   are only taken as a last resort.
///
/// * Algorithms. Chosen once per (layer, batch size N) and cached in a std::map<int, Plan>:
///   by default with cudnnFind*AlgorithmEx (benchmarks on the real buffers of that first call,
///   with the shared workspace ft::cuda::workspace(kWorkspaceCap)), taking the fastest
///   *deterministic* algorithm whose workspace fits kWorkspaceCap (256 MiB), or the fastest
///   fitting one when no deterministic one does (for bit-identical reruns of one process; note
///   that a timing-based choice may differ between runs). FT_CUDNN_FIND=0 in the environment selects with
///   the cudnnGet*Algorithm_v7 heuristics instead (no benchmarking: the choice, hence the
///   rounding, is the same from run to run). The Find calls block the host; that happens once
///   per layer and batch size. Backward-data is chosen on the first backward with dx != null.
///
/// * Bias and ReLU. Forward: cudnnConvolutionForward (beta = 0) then one kernel y = relu?(y + b)
///   over NHWC (bias broadcast on the last dim). Backward: one kernel masks dy in place by
///   (y > 0) (when ReLU is fused and y is given) and computes per-chunk partial sums of dy over
///   the rows N*OH*OW; a second kernel sums the partials per channel in a fixed order (double
///   accumulator) into db. Deterministic: the chunking depends only on the shape.
///
/// Everything is queued on ft::cuda::stream() (the stream of the cuDNN handle) and is
/// asynchronous, except the one-off algorithm search.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common.cuh"

// The legacy cudnnConvolution* API is deprecated in cuDNN 9 (still shipped and supported); keep
// a build with CUDNN_WARN_DEPRECATED defined free of warnings.
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
#include "firetrain/core/error.hpp"
#include "firetrain/ops/conv2d.hpp"
#include "firetrain/ops/elementwise.hpp"

namespace ft {

namespace {

/// Largest cuDNN workspace an algorithm may ask for.
constexpr size_t kWorkspaceCap = size_t(256) << 20;

// ---------------------------------------------------------------------------------------------
// RAII holders for cuDNN descriptors (members destroy in reverse order even when a later member's
// constructor throws; destructors never throw).

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { FT_CUDNN(cudnnCreateTensorDescriptor(&d)); }
  ~TensorDesc() {
    if (d) cudnnDestroyTensorDescriptor(d);
  }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};

struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() { FT_CUDNN(cudnnCreateFilterDescriptor(&d)); }
  ~FilterDesc() {
    if (d) cudnnDestroyFilterDescriptor(d);
  }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};

struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() { FT_CUDNN(cudnnCreateConvolutionDescriptor(&d)); }
  ~ConvDesc() {
    if (d) cudnnDestroyConvolutionDescriptor(d);
  }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// ---------------------------------------------------------------------------------------------
// Kernels.

// out (O, k, k, C) <- in (O, C, k, k). One thread per output element.
__global__ void oihw_to_ohwi_kernel(int64_t total, int C, int k, const float* in, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % C;
    int64_t t = i / C;
    const int64_t kx = t % k;
    t /= k;
    const int64_t ky = t % k;
    const int64_t o = t / k;
    out[i] = in[((o * C + c) * k + ky) * k + kx];
  }
}

// out (O, C, k, k) <- in (O, k, k, C). One thread per output element.
__global__ void ohwi_to_oihw_kernel(int64_t total, int C, int k, const float* in, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t kx = i % k;
    int64_t t = i / k;
    const int64_t ky = t % k;
    t /= k;
    const int64_t c = t % C;
    const int64_t o = t / C;
    out[i] = in[((o * k + ky) * k + kx) * C + c];
  }
}

// y (n / O rows, O) = relu?(y + b), bias broadcast over the last (channel) dimension. Index type
// I is 32-bit when n fits (cheaper modulo), 64-bit otherwise.
template <class I>
__global__ void bias_act_kernel(I n, I O, const float* __restrict__ b, bool relu,
                                float* __restrict__ y) {
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < n; i += I(gridDim.x) * I(blockDim.x)) {
    const float v = y[i] + b[i % O];
    y[i] = relu ? relu_fwd(v) : v;
  }
}

constexpr int kBiasTx = 32;  // channels per block
constexpr int kBiasTy = 8;   // row lanes per block
constexpr int kBiasMaxChunks = 1024;
constexpr int64_t kBiasMinRows = 64;

// For the rows [chunk * rows_per_chunk, ...) of dy (P, O), chunk = blockIdx.y, and the channels
// c = blockIdx.x * 32 + threadIdx.x: optionally masks dy in place by (y > 0), and writes
// partial[chunk, c] = sum of (masked) dy over those rows. Each element of dy is visited by
// exactly one thread (chunks cover [0, P), threads of a column stride by kBiasTy).
__global__ void bias_grad_partial_kernel(int64_t P, int O, int64_t rows_per_chunk,
                                         const float* __restrict__ y, float* __restrict__ dy,
                                         float* __restrict__ partial) {
  __shared__ float sh[kBiasTy][kBiasTx + 1];
  const int c = blockIdx.x * kBiasTx + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(P, r0 + rows_per_chunk);
  float s = 0.f;
  if (c < O) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kBiasTy) {
      const int64_t i = r * O + c;
      float g = dy[i];
      if (y) {
        g = relu_bwd(y[i], g);
        dy[i] = g;
      }
      s += g;
    }
  }
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < O) {
    float t = 0.f;
    for (int j = 0; j < kBiasTy; ++j) t += sh[j][threadIdx.x];
    partial[int64_t(blockIdx.y) * O + c] = t;
  }
}

// db[c] = sum over chunks of partial[chunk, c], in chunk order, in double.
__global__ void bias_grad_final_kernel(int chunks, int O, const float* __restrict__ partial,
                                       float* __restrict__ db) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < O; c += gridDim.x * blockDim.x) {
    double s = 0.0;
    for (int j = 0; j < chunks; ++j) s += double(partial[int64_t(j) * O + c]);
    db[c] = float(s);
  }
}

// ---------------------------------------------------------------------------------------------
// Algorithm selection.

bool use_find() {
  static const bool v = [] {
    const char* e = std::getenv("FT_CUDNN_FIND");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return v;
}

bool tensor_op_math(cudnnMathType_t m) {
  return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

/// From perf results (sorted fastest first by cuDNN), the index of the algorithm to use, or -1:
/// among the successful ones whose workspace fits, the first non tensor-op deterministic one,
/// else the first non tensor-op one, else (last resort) the first deterministic, else the first.
/// The convolution descriptor stays at CUDNN_FMA_MATH whatever the result reports: that is what
/// the execution uses.
template <class Perf>
int pick(const std::vector<Perf>& perf, int returned) {
  int best = -1, best_rank = 4;
  for (int i = 0; i < returned; ++i) {
    const Perf& p = perf[size_t(i)];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kWorkspaceCap) continue;
    const int rank = (tensor_op_math(p.mathType) ? 2 : 0) + (p.determinism == CUDNN_DETERMINISTIC ? 0 : 1);
    if (rank < best_rank) best = i, best_rank = rank;
  }
  return best;
}

std::string shape_str(const ConvShape& s, int N) {
  return "N=" + std::to_string(N) + " C=" + std::to_string(s.C) + " O=" + std::to_string(s.O) +
         " " + std::to_string(s.H) + "x" + std::to_string(s.W) + " k=" + std::to_string(s.k) +
         " stride=" + std::to_string(s.stride) + " pad=" + std::to_string(s.pad);
}

// ---------------------------------------------------------------------------------------------

/// Descriptors and algorithms for one batch size.
struct Plan {
  TensorDesc x, y;  // NHWC (N, C, H, W) and (N, O, OH, OW)
  bool have_fwd = false, have_bwd_data = false, have_bwd_filter = false;
  cudnnConvolutionFwdAlgo_t fwd_algo{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo{};
  size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
  int bias_chunks = 1;
  int64_t bias_rows_per_chunk = 1;
};

struct CudaConv final : Conv2d::Impl {
  explicit CudaConv(const ConvShape& s);
  // fp32 only: f32() throws on a bf16 view (bf16 shapes are rejected by Conv2d on CUDA).
  void forward(int N, ConstAct x, const float* w, const float* b, Act y) override {
    run_forward(N, x.f32(), w, b, y.f32());
  }
  void backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx, float* dw,
                float* db) override {
    run_backward(N, x.f32(), w, y.f32(), dy, dx, dw, db);
  }
  void run_forward(int N, const float* x, const float* w, const float* b, float* y);
  void run_backward(int N, const float* x, const float* w, const float* y, float* dy, float* dx,
                    float* dw, float* db);

 private:
  Plan& plan_for(int N);
  /// The weights in the filter descriptor's layout (OHWI): w itself when that is the same
  /// bytes, else the device copy, remade unless it was made from `w` (reuse_ok).
  const float* weights_ohwi(const float* w, bool reuse_ok);
  void choose_fwd(Plan& p, int N, const float* x, const float* wk, float* y);
  void choose_bwd_data(Plan& p, int N, const float* wk, const float* dy, float* dx);
  void choose_bwd_filter(Plan& p, int N, const float* x, const float* dy, float* dwk);

  ConvShape s_;
  bool same_layout_;  // OIHW and OHWI are the same bytes (k == 1 or C == 1)
  FilterDesc wdesc_;  // NHWC (KRSC = OHWI) fp32, dims (O, C, k, k)
  ConvDesc conv_;
  std::map<int, std::unique_ptr<Plan>> plans_;
  Buffer w_ohwi_{Device::CUDA};   // reordered weights (when !same_layout_)
  Buffer dw_ohwi_{Device::CUDA};  // backward-filter output before the OIHW transpose
  Buffer bias_partial_{Device::CUDA};
  const float* w_src_ = nullptr;  // the weights w_ohwi_ was made from by the last forward
};

CudaConv::CudaConv(const ConvShape& s) : s_(s), same_layout_(s.k == 1 || s.C == 1) {
  FT_CUDNN(cudnnSetFilter4dDescriptor(wdesc_.d, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, s.O, s.C,
                                      s.k, s.k));
  FT_CUDNN(cudnnSetConvolution2dDescriptor(conv_.d, s.pad, s.pad, s.stride, s.stride, 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  FT_CUDNN(cudnnSetConvolutionMathType(conv_.d, CUDNN_FMA_MATH));
}

Plan& CudaConv::plan_for(int N) {
  auto it = plans_.find(N);
  if (it != plans_.end()) return *it->second;
  FT_REQUIRE(N > 0, "convolution batch size must be positive");
  auto p = std::make_unique<Plan>();
  const int OH = s_.OH(), OW = s_.OW();
  FT_CUDNN(cudnnSetTensor4dDescriptor(p->x.d, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, s_.C, s_.H,
                                      s_.W));
  FT_CUDNN(cudnnSetTensor4dDescriptor(p->y.d, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, N, s_.O, OH,
                                      OW));
  int n = 0, c = 0, h = 0, w = 0;
  FT_CUDNN(cudnnGetConvolution2dForwardOutputDim(conv_.d, p->x.d, wdesc_.d, &n, &c, &h, &w));
  FT_REQUIRE(n == N && c == s_.O && h == OH && w == OW,
             "cuDNN's convolution output shape differs from ConvShape's (" + shape_str(s_, N) +
                 ")");
  const int64_t P = int64_t(N) * OH * OW;
  int64_t rows = std::max<int64_t>(kBiasMinRows, (P + kBiasMaxChunks - 1) / kBiasMaxChunks);
  p->bias_rows_per_chunk = rows;
  p->bias_chunks = int((P + rows - 1) / rows);
  return *plans_.emplace(N, std::move(p)).first->second;
}

const float* CudaConv::weights_ohwi(const float* w, bool reuse_ok) {
  if (same_layout_) return w;
  const int64_t total = s_.weight_numel();
  if (w_ohwi_.size() != size_t(total)) w_ohwi_.resize(size_t(total));
  if (!(reuse_ok && w_src_ == w)) {
    oihw_to_ohwi_kernel<<<cuda::grid_for(total), 256, 0, cuda::stream()>>>(total, s_.C, s_.k, w,
                                                                          w_ohwi_.data());
    FT_CUDA_LAUNCH();
    w_src_ = w;
  }
  return w_ohwi_.data();
}

void CudaConv::choose_fwd(Plan& p, int N, const float* x, const float* wk, float* y) {
  cudnnHandle_t h = cuda::cudnn();
  int max_count = 0;
  FT_CUDNN(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(size_t(std::max(1, max_count)));
  int returned = 0;
  if (use_find()) {
    void* ws = cuda::workspace(kWorkspaceCap);
    FT_CUDNN(cudnnFindConvolutionForwardAlgorithmEx(h, p.x.d, x, wdesc_.d, wk, conv_.d, p.y.d, y,
                                                    int(perf.size()), &returned, perf.data(), ws,
                                                    kWorkspaceCap));
  } else {
    FT_CUDNN(cudnnGetConvolutionForwardAlgorithm_v7(h, p.x.d, wdesc_.d, conv_.d, p.y.d,
                                                    int(perf.size()), &returned, perf.data()));
  }
  const int i = pick(perf, returned);
  FT_REQUIRE(i >= 0, "cuDNN has no fp32 NHWC forward convolution algorithm for " +
                         shape_str(s_, N) + " within the workspace cap");
  p.fwd_algo = perf[size_t(i)].algo;
  size_t ws = 0;
  FT_CUDNN(cudnnGetConvolutionForwardWorkspaceSize(h, p.x.d, wdesc_.d, conv_.d, p.y.d, p.fwd_algo,
                                                   &ws));
  p.fwd_ws = std::max(ws, perf[size_t(i)].memory);
  p.have_fwd = true;
}

void CudaConv::choose_bwd_data(Plan& p, int N, const float* wk, const float* dy, float* dx) {
  cudnnHandle_t h = cuda::cudnn();
  int max_count = 0;
  FT_CUDNN(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_count));
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(size_t(std::max(1, max_count)));
  int returned = 0;
  if (use_find()) {
    void* ws = cuda::workspace(kWorkspaceCap);
    FT_CUDNN(cudnnFindConvolutionBackwardDataAlgorithmEx(h, wdesc_.d, wk, p.y.d, dy, conv_.d,
                                                         p.x.d, dx, int(perf.size()), &returned,
                                                         perf.data(), ws, kWorkspaceCap));
  } else {
    FT_CUDNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, wdesc_.d, p.y.d, conv_.d, p.x.d,
                                                         int(perf.size()), &returned,
                                                         perf.data()));
  }
  const int i = pick(perf, returned);
  FT_REQUIRE(i >= 0, "cuDNN has no fp32 NHWC backward-data algorithm for " + shape_str(s_, N) +
                         " within the workspace cap");
  p.bwd_data_algo = perf[size_t(i)].algo;
  size_t ws = 0;
  FT_CUDNN(cudnnGetConvolutionBackwardDataWorkspaceSize(h, wdesc_.d, p.y.d, conv_.d, p.x.d,
                                                        p.bwd_data_algo, &ws));
  p.bwd_data_ws = std::max(ws, perf[size_t(i)].memory);
  p.have_bwd_data = true;
}

void CudaConv::choose_bwd_filter(Plan& p, int N, const float* x, const float* dy, float* dwk) {
  cudnnHandle_t h = cuda::cudnn();
  int max_count = 0;
  FT_CUDNN(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max_count));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(size_t(std::max(1, max_count)));
  int returned = 0;
  if (use_find()) {
    void* ws = cuda::workspace(kWorkspaceCap);
    FT_CUDNN(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, p.x.d, x, p.y.d, dy, conv_.d,
                                                           wdesc_.d, dwk, int(perf.size()),
                                                           &returned, perf.data(), ws,
                                                           kWorkspaceCap));
  } else {
    FT_CUDNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x.d, p.y.d, conv_.d, wdesc_.d,
                                                           int(perf.size()), &returned,
                                                           perf.data()));
  }
  const int i = pick(perf, returned);
  FT_REQUIRE(i >= 0, "cuDNN has no fp32 NHWC backward-filter algorithm for " + shape_str(s_, N) +
                         " within the workspace cap");
  p.bwd_filter_algo = perf[size_t(i)].algo;
  size_t ws = 0;
  FT_CUDNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p.x.d, p.y.d, conv_.d, wdesc_.d,
                                                          p.bwd_filter_algo, &ws));
  p.bwd_filter_ws = std::max(ws, perf[size_t(i)].memory);
  p.have_bwd_filter = true;
}

void CudaConv::run_forward(int N, const float* x, const float* w, const float* b, float* y) {
  Plan& p = plan_for(N);
  // Forward always remakes the copy: the weights may have been updated in place since the
  // last step (same pointer, new values).
  const float* wk = weights_ohwi(w, /*reuse_ok=*/false);
  if (!p.have_fwd) choose_fwd(p, N, x, wk, y);
  const float one = 1.f, zero = 0.f;
  void* ws = p.fwd_ws ? cuda::workspace(p.fwd_ws) : nullptr;
  FT_CUDNN(cudnnConvolutionForward(cuda::cudnn(), &one, p.x.d, x, wdesc_.d, wk, conv_.d,
                                   p.fwd_algo, ws, p.fwd_ws, &zero, p.y.d, y));
  const int64_t n = int64_t(N) * s_.OH() * s_.OW() * s_.O;
  if (n <= (int64_t(1) << 30))  // i + grid stride (< 2^28) stays below 2^31
    bias_act_kernel<int><<<cuda::grid_for(n), 256, 0, cuda::stream()>>>(int(n), s_.O, b, s_.relu,
                                                                        y);
  else
    bias_act_kernel<int64_t><<<cuda::grid_for(n), 256, 0, cuda::stream()>>>(n, s_.O, b, s_.relu,
                                                                            y);
  FT_CUDA_LAUNCH();
}

void CudaConv::run_backward(int N, const float* x, const float* w, const float* y, float* dy,
                            float* dx, float* dw, float* db) {
  Plan& p = plan_for(N);
  cudaStream_t st = cuda::stream();
  const int64_t P = int64_t(N) * s_.OH() * s_.OW();

  // 1. Mask dy by (y > 0) in place (fused ReLU) and reduce it over rows into db.
  {
    const size_t need = size_t(p.bias_chunks) * size_t(s_.O);
    if (bias_partial_.size() < need) bias_partial_.resize(need);
    dim3 block(kBiasTx, kBiasTy);
    dim3 grid(unsigned((s_.O + kBiasTx - 1) / kBiasTx), unsigned(p.bias_chunks));
    bias_grad_partial_kernel<<<grid, block, 0, st>>>(P, s_.O, p.bias_rows_per_chunk,
                                                     s_.relu ? y : nullptr, dy,
                                                     bias_partial_.data());
    FT_CUDA_LAUNCH();
    bias_grad_final_kernel<<<cuda::grid_for(s_.O, 128), 128, 0, st>>>(
        p.bias_chunks, s_.O, bias_partial_.data(), db);
    FT_CUDA_LAUNCH();
  }

  const float one = 1.f, zero = 0.f;
  // 2. dx: backward data with the OHWI weights (the forward's copy when w is the same).
  if (dx) {
    const float* wk = weights_ohwi(w, /*reuse_ok=*/true);
    if (!p.have_bwd_data) choose_bwd_data(p, N, wk, dy, dx);
    void* ws = p.bwd_data_ws ? cuda::workspace(p.bwd_data_ws) : nullptr;
    FT_CUDNN(cudnnConvolutionBackwardData(cuda::cudnn(), &one, wdesc_.d, wk, p.y.d, dy, conv_.d,
                                          p.bwd_data_algo, ws, p.bwd_data_ws, &zero, p.x.d, dx));
  }

  // 3. dw: backward filter into OHWI (dw itself when that is the same bytes), then to OIHW.
  const int64_t nw = s_.weight_numel();
  float* dwk = dw;
  if (!same_layout_) {
    if (dw_ohwi_.size() != size_t(nw)) dw_ohwi_.resize(size_t(nw));
    dwk = dw_ohwi_.data();
  }
  if (!p.have_bwd_filter) choose_bwd_filter(p, N, x, dy, dwk);
  void* ws = p.bwd_filter_ws ? cuda::workspace(p.bwd_filter_ws) : nullptr;
  FT_CUDNN(cudnnConvolutionBackwardFilter(cuda::cudnn(), &one, p.x.d, x, p.y.d, dy, conv_.d,
                                          p.bwd_filter_algo, ws, p.bwd_filter_ws, &zero, wdesc_.d,
                                          dwk));
  if (!same_layout_) {
    ohwi_to_oihw_kernel<<<cuda::grid_for(nw), 256, 0, st>>>(nw, s_.C, s_.k, dwk, dw);
    FT_CUDA_LAUNCH();
  }
}

/// Two-part input (ConvShape::C2 > 0: x = [x1 (N, H, W, C) | x2 (N, H, W, C2)], a Fire
/// module's planar output): the parts are copied into one dense (N, H, W, C + C2) scratch
/// tensor and the dense convolution (C + C2 input channels, the same OIHW weights) runs on it;
/// backward recopies x, lets the dense convolution write the dense input gradient to scratch
/// and splits it into dx's two parts. Simple and obviously equal to the dense convolution, but
/// not zero-copy (the CPU backend runs one oneDNN convolution per part instead).
struct CudaConvTwoPart final : Conv2d::Impl {
  explicit CudaConvTwoPart(const ConvShape& s) : s_(s), dense_(dense_shape(s)) {}
  void forward(int N, ConstAct x, const float* w, const float* b, Act y) override {
    dense_.run_forward(N, concat(N, x.f32()), w, b, y.f32());
  }
  void backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx, float* dw,
                float* db) override {
    const float* xc = concat(N, x.f32());
    const int64_t P = int64_t(N) * s_.H * s_.W;
    float* dxc = nullptr;
    if (dx) {
      if (dxcat_.size() < size_t(P * s_.Ct())) dxcat_.resize(size_t(P * s_.Ct()));
      dxc = dxcat_.data();
    }
    dense_.run_backward(N, xc, w, y.f32(), dy, dxc, dw, db);
    if (dx) {
      cuda::channel_copy_out(P, s_.C, 0, s_.Ct(), dxc, dx);
      cuda::channel_copy_out(P, s_.C2, s_.C, s_.Ct(), dxc, dx + P * s_.C);
    }
  }

 private:
  static ConvShape dense_shape(ConvShape s) {
    s.C += s.C2;
    s.C2 = 0;
    return s;
  }
  // [x1 | x2] -> the dense concat in xcat_ (N, H, W, C + C2).
  const float* concat(int N, const float* x) {
    const int64_t P = int64_t(N) * s_.H * s_.W;
    if (xcat_.size() < size_t(P * s_.Ct())) xcat_.resize(size_t(P * s_.Ct()));
    cuda::channel_copy_in(P, s_.C, 0, s_.Ct(), x, xcat_.data());
    cuda::channel_copy_in(P, s_.C2, s_.C, s_.Ct(), x + P * s_.C, xcat_.data());
    return xcat_.data();
  }
  ConvShape s_;
  CudaConv dense_;
  Buffer xcat_{Device::CUDA}, dxcat_{Device::CUDA};
};

}  // namespace

namespace cuda {
std::unique_ptr<Conv2d::Impl> make_conv2d(const ConvShape& s) {
  if (s.C2 > 0) return std::make_unique<CudaConvTwoPart>(s);
  return std::make_unique<CudaConv>(s);
}
}  // namespace cuda

}  // namespace ft
