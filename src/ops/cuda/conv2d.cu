/// @brief CUDA convolution on cuDNN (legacy cudnnConvolution* API): NHWC activations (fp32, or
/// bf16 / fp16 on tensor cores), torch OIHW fp32 weights in the parameter arena, bias +
/// optional ReLU in small custom kernels.
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
///   with the shared workspace ft::cuda::workspace(workspace_cap())), taking the fastest
///   *deterministic* algorithm whose workspace fits workspace_cap() (1/16 of the free GPU
///   memory within [256 MiB, 2 GiB], or FT_CUDNN_WORKSPACE_MB), or the fastest fitting one when
///   no deterministic one does (for bit-identical reruns of one process; note that a
///   timing-based choice may differ between runs; FT_CUDNN_DETERMINISTIC=0 takes the fastest
///   whatever its determinism). FT_CUDNN_FIND=0 in the environment selects with
///   the cudnnGet*Algorithm_v7 heuristics instead (no benchmarking: the choice, hence the
///   rounding, is the same from run to run). The Find calls block the host; that happens once
///   per layer and batch size. Backward-data is chosen on the first backward with dx != null.
///
/// * Bias and ReLU. Forward: cudnnConvolutionForward (beta = 0) then one kernel y = relu?(y + b)
///   over NHWC (bias broadcast on the last dim). Backward: one kernel masks dy by (y > 0) (when
///   ReLU is fused and y is given; in place in fp32) and computes per-chunk partial sums of dy over
///   the rows N*OH*OW; a second kernel sums the partials per channel in a fixed order (double
///   accumulator) into db. Deterministic: the chunking depends only on the shape.
///
/// * 16-bit math (ConvShape::bf16 / fp16; --precision bf16|fp16 on CUDA). cuDNN's
///   PSEUDO_BFLOAT16 / PSEUDO_HALF configuration, as PyTorch's autocast runs it: x, w, y, dx,
///   dw and dy all of the 16-bit type T, accumulation in fp32 (convolution descriptor
///   CUDNN_DATA_FLOAT); the searches run with CUDNN_TENSOR_OP_MATH (tensor cores allowed) and
///   each call then runs with the math type its algorithm was timed with (as PyTorch does).
///   cuDNN's tensor-core kernels want C and O multiples of 8: a dense input whose C is not
///   (the stems' C = 3 or 1) is padded with zero channels to the next multiple of 8, in the
///   16-bit copies of x and of the weights that the layer makes anyway (kernel_channels;
///   FT_CONV_PAD_CHANNELS=0 turns it off); the padding's part of dx and dw is dropped when
///   they are widened. Other layers cuDNN has no 16-bit algorithm for run in fp32
///   (CudaConvHalf). The fp32 master weights are rounded (and reordered to OHWI) into a
///   per-layer T copy once per forward; an fp32 x (the first layer's image) is rounded into
///   shared scratch; y is T and the bias + ReLU kernel rounds it a second time (the CPU's
///   oneDNN rounds once: parity is within two bf16/fp16 ulps, see tests/test_cuda_ops.cpp).
///   Backward: the mask/bias kernel writes the masked dy rounded to T into shared scratch (and
///   leaves the fp32 dy unmasked: one write less); backward-data writes a T dx into shared
///   scratch that one kernel widens into the fp32 dx; backward-filter writes a T dw (OHWI)
///   that one kernel widens (and
///   transposes) into the fp32 OIHW dw — the weight gradient is thus rounded to T once, as with
///   autocast (whose fp32 master gradient is the widened bf16/fp16 gradient of the cast).
///   Shared scratch: a few grow-only device buffers of this file (Scratch below) reused by
///   every layer: all work is ordered on one stream, and growth synchronizes before freeing.
///
/// * Two-part input (ConvShape::C2 > 0, a Fire module's planar output): 1×1 stride-1 shapes
///   (all of SqueezeNet's) run as cuBLAS GEMMs straight on the two parts (CudaConvTwoPartGemm,
///   zero-copy, plan in two_part_gemm.hpp); other shapes, or every one with
///   FT_CONV_TWO_PART=copy, copy the parts into a dense scratch concat for cuDNN
///   (CudaConvTwoPart).
///
/// Everything is queued on ft::cuda::stream() (the stream of the cuDNN handle) and is
/// asynchronous, except the one-off algorithm search.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "act.cuh"
#include "common.cuh"
#include "kernel_math.cuh"
#include "two_part_gemm.hpp"

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

using cuda::load;
using cuda::store;
using cuda::typed;
using cuda::with_dtype;

/// Largest cuDNN workspace an algorithm may use (the search runs with a workspace this size):
/// FT_CUDNN_WORKSPACE_MB if set, else 1/16 of the GPU's free memory at the first search, within
/// [256 MiB, 2 GiB]. Measured on an H200 (SqueezeNet 1.0, batch 256): the best algorithms of
/// the 54x54 Fire layers ask for 334-478 MB; under the former fixed 256 MiB cap, cuDNN's
/// remaining fp32 backward-data algorithm took 108 ms for one of them (bench/gpu_conv_diag.sh).
size_t workspace_cap() {
  static const size_t v = [] {
    const char* e = std::getenv("FT_CUDNN_WORKSPACE_MB");
    if (e && *e) {
      char* end = nullptr;
      const unsigned long long mb = std::strtoull(e, &end, 10);
      if (*end || mb < 1 || mb > (size_t(1) << 24) || e[0] == '-')
        throw InputError(std::string("FT_CUDNN_WORKSPACE_MB=") + e +
                         ": expected a whole number of MiB, 1 or more");
      return size_t(mb) << 20;
    }
    size_t free = 0, total = 0;
    FT_CUDA(cudaMemGetInfo(&free, &total));
    return std::clamp(free / 16, size_t(256) << 20, size_t(2) << 30);
  }();
  return v;
}

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

// out (O, k, k, ck) <- in (O, C, k, k), converted to TO, zero in the padding channels c >= C.
// One thread per output element.
template <class TI, class TO>
__global__ void oihw_to_ohwi_kernel(int64_t total, int C, int k, int ck, const TI* in, TO* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = cuda::oihw_index_of_ohwi(i, C, k, ck);
    store(out, i, j < 0 ? 0.f : load(in, j));
  }
}

// out (O, C, k, k) <- in (O, k, k, ck), converted to TO (padding channels dropped). One thread
// per output element.
template <class TI, class TO>
__global__ void ohwi_to_oihw_kernel(int64_t total, int C, int k, int ck, const TI* in, TO* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    store(out, i, load(in, cuda::ohwi_index_of_oihw(i, C, k, ck)));
  }
}

// The channel padding of a 16-bit convolution's input and the cut-back of its input gradient
// (kernel_math.cuh). Index type I: int when the padded tensor fits (fits_int32).
template <class I, class TI, class TO>
__global__ void pad_channels_kernel(I total, int C, int ck, const TI* __restrict__ x,
                                    TO* __restrict__ xk) {
  for (I i = cuda::thread_index<I>(); i < total; i += cuda::grid_stride<I>())
    store(xk, i, cuda::pad_channels_at(i, C, ck, x));
}
template <class I, class TI>
__global__ void unpad_channels_kernel(I total, int C, int ck, const TI* __restrict__ xk,
                                      float* __restrict__ dx) {
  for (I i = cuda::thread_index<I>(); i < total; i += cuda::grid_stride<I>())
    dx[i] = cuda::unpad_channels_at(i, C, ck, xk);
}

// y (n / O rows, O) = relu?(in + b), bias broadcast over the last (channel) dimension, stored
// as TO (in place when in == y); the loop is cuda::bias_act_strided (kernel_math.cuh, tested on
// the CPU). Index type I is 32-bit when n fits, 64-bit otherwise.
template <class I, class TI, class TO>
__global__ void bias_act_kernel(I n, int O, const float* __restrict__ b, bool relu, const TI* in,
                                TO* y) {
  cuda::bias_act_strided(cuda::thread_index<I>(), cuda::grid_stride<I>(), n, O, b, relu, in, y);
}

template <class TI, class TO>
void bias_act(int64_t n, int O, const float* b, bool relu, const TI* in, TO* y) {
  cuda::with_index(n, [&](auto it) {
    using I = decltype(it);
    bias_act_kernel<I, TI, TO><<<cuda::grid_for(n), 256, 0, cuda::stream()>>>(I(n), O, b, relu,
                                                                              in, y);
  });
  FT_CUDA_LAUNCH();
}

constexpr int kBiasTx = 32;     // channels per block
constexpr int kBiasTy = 8;      // row lanes per block
constexpr int kBiasUnroll = 4;  // rows per loop trip of a thread (cuda::bias_grad_rows)
constexpr int kBiasMaxChunks = 1024;
constexpr int64_t kBiasMinRows = 64;

// For the rows [chunk * rows_per_chunk, ...) of dy (P, O), chunk = blockIdx.y, and the channels
// c = blockIdx.x * 32 + threadIdx.x: optionally masks dy by (y > 0), and writes
// partial[chunk, c] = sum of (masked) dy over those rows. Without dyh (fp32) the masked dy is
// written back in place (the convolutions' input); with dyh (16-bit), the masked dy rounded to
// the 16-bit type TH goes to dyh instead and dy is only read: 12 bytes per element (y, dy, dyh)
// rather than 16 (SqueezeNet 1.0's stem output at batch 256 has 292 M elements). Each element
// of dy is visited by exactly one thread (chunks cover [0, P), threads of a column stride by
// kBiasTy); the thread's loop is cuda::bias_grad_rows (kernel_math.cuh, tested on the CPU).
template <class TY, class TH>
__global__ void bias_grad_partial_kernel(int64_t P, int O, int64_t rows_per_chunk,
                                         const TY* __restrict__ y, float* __restrict__ dy,
                                         TH* __restrict__ dyh, float* __restrict__ partial) {
  __shared__ float sh[kBiasTy][kBiasTx + 1];
  const int c = blockIdx.x * kBiasTx + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(P, r0 + rows_per_chunk);
  const float s = c < O ? cuda::bias_grad_rows<kBiasTy, kBiasUnroll>(
                              r0 + threadIdx.y, r1, O, c, y, dy, dyh)
                        : 0.f;
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < O) {
    float t = 0.f;
    for (int j = 0; j < kBiasTy; ++j) t += sh[j][threadIdx.x];
    partial[int64_t(blockIdx.y) * O + c] = t;
  }
}

constexpr int kBiasFinalThreads = 128;  // threads per channel in the final sum (a power of 2)

// db[c] = the sum over chunks of partial[chunk, c] in double, one block per channel c: thread t
// sums the chunks t, t + 128, ... in order, then a fixed tree over the 128 thread sums (the
// same shape every call: deterministic). It was one thread per channel walking all (up to
// 1024) chunks in sequence, a chain of dependent L2 round trips with only O threads busy,
// once per convolution backward.
__global__ void __launch_bounds__(kBiasFinalThreads)
    bias_grad_final_kernel(int chunks, int O, const float* __restrict__ partial,
                           float* __restrict__ db) {
  __shared__ double sh[kBiasFinalThreads];
  const int c = blockIdx.x;
  double s = 0.0;
  for (int j = threadIdx.x; j < chunks; j += kBiasFinalThreads)
    s += double(partial[int64_t(j) * O + c]);
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int w = kBiasFinalThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) db[c] = float(sh[0]);
}

/// Step 1 of every convolution backward, over dy (P, O): masks dy by (y > 0) when y is given
/// (fused ReLU), sums it over the P rows into db (per-chunk partial sums in `partial`, then a
/// fixed-shape double sum per channel: deterministic, the chunking depends only on P). fp32
/// (dyh null): the mask is applied to dy in place. 16-bit: the masked dy rounded to dt goes to
/// dyh, and dy is left as it was (the contract of Conv2d::backward: 16-bit shapes leave no
/// usable values in dy).
void bias_backward(int64_t P, int O, DType dt, ConstAct y, float* dy, void* dyh, Buffer& partial,
                   float* db) {
  cudaStream_t st = cuda::stream();
  if (P <= 0) {  // an empty batch: no rows to launch over, db = 0
    FT_CUDA(cudaMemsetAsync(db, 0, size_t(O) * sizeof(float), st));
    return;
  }
  const int64_t rows = std::max<int64_t>(kBiasMinRows, (P + kBiasMaxChunks - 1) / kBiasMaxChunks);
  const int chunks = int((P + rows - 1) / rows);
  const size_t need = size_t(chunks) * size_t(O);
  if (partial.size() < need) partial.resize(need);
  dim3 block(kBiasTx, kBiasTy);
  dim3 grid(unsigned((O + kBiasTx - 1) / kBiasTx), unsigned(chunks));
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    // fp32: TH = float and no dyh (dy itself is the convolutions' input).
    bias_grad_partial_kernel<T, T><<<grid, block, 0, st>>>(
        P, O, rows, y ? typed<T>(y) : nullptr, dy, static_cast<T*>(dyh), partial.data());
  });
  FT_CUDA_LAUNCH();
  bias_grad_final_kernel<<<unsigned(O), kBiasFinalThreads, 0, st>>>(chunks, O, partial.data(),
                                                                     db);
  FT_CUDA_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
// Algorithm selection.

/// A switch that is on unless the environment variable is "0".
bool env_not_zero(const char* name) {
  const char* e = std::getenv(name);
  return !(e && std::strcmp(e, "0") == 0);
}

bool use_find() {
  static const bool v = env_not_zero("FT_CUDNN_FIND");
  return v;
}

/// FT_CUDNN_DETERMINISTIC=0: take the fastest algorithm even where it is non-deterministic
/// (PyTorch's default, torch.backends.cudnn.deterministic = False); default 1: prefer the
/// fastest deterministic one (a rerun of the same process gives the same bits).
bool prefer_deterministic() {
  static const bool v = env_not_zero("FT_CUDNN_DETERMINISTIC");
  return v;
}

bool tensor_op_math(cudnnMathType_t m) {
  return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

/// From perf results (sorted fastest first by cuDNN), the index of the algorithm to use, or -1.
/// fp32 (tensor_ops false): among the successful ones whose workspace fits, the first non
/// tensor-op deterministic one, else the first non tensor-op one, else (last resort) the first
/// deterministic, else the first; the convolution descriptor stays at CUDNN_FMA_MATH whatever
/// the result reports: that is what the execution uses. 16-bit (tensor_ops true): the first
/// deterministic one, else the first (tensor-op math is what we want there). With
/// FT_CUDNN_DETERMINISTIC=0, determinism is not preferred.
template <class Perf>
int pick(const std::vector<Perf>& perf, int returned, bool tensor_ops) {
  int best = -1, best_rank = 4;
  for (int i = 0; i < returned; ++i) {
    const Perf& p = perf[size_t(i)];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > workspace_cap()) continue;
    const int rank = (!tensor_ops && tensor_op_math(p.mathType) ? 2 : 0) +
                     (p.determinism == CUDNN_DETERMINISTIC || !prefer_deterministic() ? 0 : 1);
    if (rank < best_rank) best = i, best_rank = rank;
  }
  return best;
}

/// What cuDNN returned for a search, for messages: each algorithm with its status, time,
/// workspace, math type and determinism.
template <class Perf>
std::string perf_list(const std::vector<Perf>& perf, int returned) {
  if (returned <= 0) return "cuDNN returned no algorithm";
  std::string s;
  for (int i = 0; i < returned; ++i) {
    const Perf& p = perf[size_t(i)];
    char b[240];
    std::snprintf(b, sizeof b, "%s#%d algo %d: %s, %.3f ms, %.1f MB, %s math, %s",
                  i ? "; " : "", i, int(p.algo), cudnnGetErrorString(p.status), double(p.time),
                  double(p.memory) / 1e6, tensor_op_math(p.mathType) ? "tensor-op" : "FMA",
                  p.determinism == CUDNN_DETERMINISTIC ? "deterministic" : "non-deterministic");
    s += b;
  }
  return s;
}

/// FT_CONV_DEBUG=1: every algorithm choice is printed on stderr with the whole search result.
bool conv_debug() {
  static const bool v = [] {
    const char* e = std::getenv("FT_CONV_DEBUG");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return v;
}

std::string shape_str(const ConvShape& s, int N) {
  return "N=" + std::to_string(N) + " C=" + std::to_string(s.C) + " O=" + std::to_string(s.O) +
         " " + std::to_string(s.H) + "x" + std::to_string(s.W) + " k=" + std::to_string(s.k) +
         " stride=" + std::to_string(s.stride) + " pad=" + std::to_string(s.pad);
}

// ---------------------------------------------------------------------------------------------
// Shared scratch of the 16-bit path: grow-only device buffers reused by every convolution of
// the process (all their work is ordered on the one compute stream). Growth synchronizes the
// stream before freeing the old block (queued kernels may still use it), like the workspace.

enum ScratchSlot { kSlotX16, kSlotDy16, kSlotDx16, kSlotY32, kSlots };

void* scratch(ScratchSlot slot, size_t bytes) {
  struct Block {
    void* p = nullptr;
    size_t bytes = 0;
  };
  static Block blocks[kSlots];  // never freed (as the workspace: see cuda_device.cu)
  Block& b = blocks[slot];
  if (bytes > b.bytes) {
    const size_t mib = size_t(1) << 20;
    const size_t want = (bytes + mib - 1) / mib * mib;
    if (b.p) {
      cuda::synchronize();
      cuda::release(b.p);
      b.p = nullptr;
      b.bytes = 0;
    }
    b.p = cuda::alloc(want);
    b.bytes = want;
  }
  return b.p;
}

/// The activation dtype of a convolution shape: BF16, F16 or F32.
DType conv_dtype(const ConvShape& s) {
  return s.bf16 ? DType::BF16 : s.fp16 ? DType::F16 : DType::F32;
}

/// A convolution of dtype dt writes (forward) and reads (backward's ReLU mask) a y of dt.
void require_y_dtype(DType dt, ConstAct y, bool forward) {
  FT_REQUIRE(y.dtype() == dt, std::string("a ") + dtype_name(dt) +
                        (forward ? " convolution writes a " + std::string(dtype_name(dt)) +
                                       " output, got "
                                 : " convolution's output is " + std::string(dtype_name(dt)) +
                                       ", got ") +
                        dtype_name(y.dtype()));
}

/// A convolution of dtype dt reads an x of dt or (the first layer's image) fp32.
void require_input_dtype(DType dt, ConstAct x) {
  FT_REQUIRE(x.dtype() == dt || x.dtype() == DType::F32,
             std::string("a ") + dtype_name(dt) + " convolution takes an fp32 or " +
                 dtype_name(dt) + " input, got " + dtype_name(x.dtype()));
}

/// x (n elements) as dt: x itself, or (an fp32 x of a 16-bit convolution: the first layer's
/// image) its rounding in the shared scratch.
const void* input_as(DType dt, int64_t n, ConstAct x) {
  if (x.dtype() == dt) return x.raw();
  require_input_dtype(dt, x);
  void* xk = scratch(kSlotX16, size_t(n) * dtype_size(dt));
  with_dtype(dt, [&](auto t) { cuda::copy(n, x, Act(static_cast<decltype(t)*>(xk))); });
  return xk;
}

/// x (P pixels of C channels, fp32 or dt) as dt with ck > C channels, the extra ones zero, in
/// the shared scratch: the input of a channel-padded 16-bit convolution.
const void* input_padded(DType dt, int64_t P, int C, int ck, ConstAct x) {
  require_input_dtype(dt, x);
  const int64_t total = P * ck;
  void* xk = scratch(kSlotX16, size_t(total) * dtype_size(dt));
  const unsigned g = cuda::grid_for(total);
  with_dtype(x.dtype(), [&](auto tx) {
    with_dtype(dt, [&](auto tk) {
      using TX = decltype(tx);
      using TK = decltype(tk);
      cuda::with_index(total, [&](auto it) {
        using I = decltype(it);
        pad_channels_kernel<I, TX, TK><<<g, 256, 0, cuda::stream()>>>(
            I(total), C, ck, typed<TX>(x), static_cast<TK*>(xk));
      });
    });
  });
  FT_CUDA_LAUNCH();
  return xk;
}

/// The input channels a convolution's kernels see: C, or (16-bit, C not a multiple of 8: the
/// stems' C = 3 or 1) C rounded up to a multiple of 8 with zero channels, so that cuDNN's
/// tensor-core kernels apply (the NHWC 16-bit ones want C % 8 == 0; MLPerf's ResNet pads its
/// input likewise). The zeros add nothing to y or dw, and the padding's part of dx and dw is
/// dropped. FT_CONV_PAD_CHANNELS=0 turns it off (read when a layer is made), to compare.
/// CudaConv's inputs are dense (C2 == 0): the dense convolution over a copied two-part concat
/// (CudaConvTwoPart) is padded too when its C + C2 is not a multiple of 8 (none in SqueezeNet).
int kernel_channels(const ConvShape& s, DType dt) {
  if (dt == DType::F32 || s.C2 > 0 || s.C % 8 == 0 || !env_not_zero("FT_CONV_PAD_CHANNELS"))
    return s.Ct();
  return (s.C + 7) / 8 * 8;
}

/// The weights as a convolution's kernels read them: the fp32 OIHW arena itself (`direct`:
/// fp32 with OIHW and OHWI the same bytes, k == 1 or C == 1), or a per-layer copy of dtype dt,
/// reordered OIHW -> OHWI (with ck >= C channels, the extra ones zero: kernel_channels) unless
/// the two layouts are the same bytes (then only rounded).
class KernelWeights {
 public:
  KernelWeights(DType dt, const ConvShape& s, int ck)
      : s_(s), ck_(ck), same_layout_((s.k == 1 || s.Ct() == 1) && ck == s.Ct()),
        direct_(same_layout_ && dt == DType::F32), copy_(Device::CUDA, dt) {}
  /// Elements of the kernel-layout weights (O, k, k, ck).
  int64_t numel() const { return int64_t(s_.O) * s_.k * s_.k * ck_; }
  bool direct() const { return direct_; }
  bool same_layout() const { return same_layout_; }
  /// The kernel-layout weights of w; the copy is remade unless it was made from this same
  /// pointer and reuse_ok (backward after forward: the weights are only updated after
  /// backward; forward always remakes it, the values may have changed in place).
  const void* get(const float* w, bool reuse_ok) {
    if (direct_) return w;
    const int64_t total = numel();
    if (copy_.size() != size_t(total)) {
      copy_.resize(size_t(total));
      src_ = nullptr;
    }
    if (!(reuse_ok && src_ == w)) {
      if (same_layout_) {
        cuda::copy(total, w, copy_.view());  // (rounds to dt)
      } else {
        with_dtype(copy_.dtype(), [&](auto t) {
          using T = decltype(t);
          oihw_to_ohwi_kernel<float, T><<<cuda::grid_for(total), 256, 0, cuda::stream()>>>(
              total, s_.Ct(), s_.k, ck_, w, typed<T>(copy_.view()));
        });
        FT_CUDA_LAUNCH();
      }
      src_ = w;
    }
    return copy_.view().raw();
  }
  /// The next get() remakes the copy (the weights may have changed since it was made).
  void invalidate() { src_ = nullptr; }

 private:
  ConvShape s_;
  int ck_;  // channels of the kernel layout (>= C)
  bool same_layout_, direct_;
  ActBuffer copy_;
  const float* src_ = nullptr;  // the weights the copy was made from
};

// ---------------------------------------------------------------------------------------------

/// A 16-bit convolution for which cuDNN has no algorithm (CudaConvHalf then runs the layer in
/// fp32).
struct NoAlgorithm : Error {
  explicit NoAlgorithm(const std::string& what) : Error(what) {}
};

/// Test hook: FT_TEST_CONV_NO_HALF_ALGO=1 makes every 16-bit algorithm search report "no
/// algorithm", so the GPU tests run the fp32 fallback on purpose.
bool test_no_half_algo() {
  const char* e = std::getenv("FT_TEST_CONV_NO_HALF_ALGO");
  return e && std::strcmp(e, "1") == 0;
}

/// cuDNN 9 reports "not supported" with detailed codes (NOT_SUPPORTED_SHAPE, _DATA_TYPE,
/// _LAYOUT, ... 3001-3099) in the category CUDNN_STATUS_NOT_SUPPORTED (3000). Not those that
/// say the installation is broken (3005 incompatible driver, 3006 incompatible runtime, 3007
/// architecture mismatch, 3008 runtime prerequisite missing, 3009 sub-library unavailable):
/// a fallback to fp32 would hide them, so they throw as any other failure.
bool not_supported(cudnnStatus_t st) {
#ifdef CUDNN_STATUS_CATEGORY
  const int c = int(st);
  return CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_NOT_SUPPORTED && !(c >= 3005 && c <= 3009);
#else
  return st == CUDNN_STATUS_NOT_SUPPORTED;  // cuDNN 8: one code
#endif
}

// An algorithm search (FT_CONV_SEARCH), or a workspace query or execution (FT_CONV_RUN; with
// FT_CUDNN_FIND=0 the heuristics run nothing, so "not supported" can first show there): a
// "not supported" status of a 16-bit convolution (or, for searches, the test hook) is
// NoAlgorithm, which happens before the call writes anything; any other failure throws as
// FT_CUDNN does.
#define FT_CONV_SEARCH(stmt) check_status((stmt), #stmt, __FILE__, __LINE__, true)
#define FT_CONV_RUN(stmt) check_status((stmt), #stmt, __FILE__, __LINE__, false)

/// Descriptors and algorithms for one batch size.
struct Plan {
  TensorDesc x, y;  // NHWC (N, C, H, W) and (N, O, OH, OW)
  bool have_fwd = false, have_bwd_data = false, have_bwd_filter = false;
  cudnnConvolutionFwdAlgo_t fwd_algo{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo{};
  size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
  // The math type each chosen algorithm was timed (or ranked) with, set on the convolution
  // descriptor before its call (as PyTorch does): 16-bit only; fp32 stays CUDNN_FMA_MATH.
  cudnnMathType_t fwd_math = CUDNN_FMA_MATH, bwd_data_math = CUDNN_FMA_MATH,
                  bwd_filter_math = CUDNN_FMA_MATH;
};

struct CudaConv final : Conv2d::Impl {
  explicit CudaConv(const ConvShape& s);
  void forward(int N, ConstAct x, const float* w, const float* b, Act y) override;
  void backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx, float* dw,
                float* db) override;
  /// The next backward remakes its kernel-layout weights (CudaConvHalf: its fp32 fallback's
  /// backward without the fallback's forward in the same step).
  void forget_weights() { w_k_.invalidate(); }

 private:
  Plan& plan_for(int N);
  /// x as the kernels read it: x itself, or in scratch its rounding to dt_ (an fp32 x of a
  /// 16-bit convolution) or its channel padding to ck_.
  const void* input_k(int N, ConstAct x) {
    const int64_t P = int64_t(N) * s_.H * s_.W;
    if (ck_ != s_.C) return input_padded(dt_, P, s_.C, ck_, x);
    return input_as(dt_, P * s_.C, x);
  }
  /// The shape for FT_CONV_DEBUG lines, with the padded channel count when there is one.
  std::string shape_k(int N) const {
    return shape_str(s_, N) + (ck_ != s_.C ? " ck=" + std::to_string(ck_) : std::string());
  }
  void choose_fwd(Plan& p, int N, const void* x, const void* wk, void* y);
  void choose_bwd_data(Plan& p, int N, const void* wk, const void* dy, void* dx);
  void choose_bwd_filter(Plan& p, int N, const void* x, const void* dy, void* dwk);
  /// Puts `m` on the convolution descriptor (16-bit: the math type of the algorithm about to
  /// run; fp32 keeps CUDNN_FMA_MATH).
  void set_math(cudnnMathType_t m) {
    if (dt_ != DType::F32) FT_CUDNN(cudnnSetConvolutionMathType(conv_.d, m));
  }
  /// The math type of a 16-bit search's searches (tensor cores allowed; the results say which
  /// one each algorithm used).
  static constexpr cudnnMathType_t kSearchMath = CUDNN_TENSOR_OP_MATH;
  void check_status(cudnnStatus_t st, const char* stmt, const char* file, int line,
                    bool search) const {
    const bool hook = search && test_no_half_algo();
    if (dt_ != DType::F32 && (not_supported(st) || hook))
      throw NoAlgorithm(std::string(stmt) + ": " + cudnnGetErrorString(st) + " for " +
                        shape_str(s_, 0) + (hook ? " (test hook)" : ""));
    if (st != CUDNN_STATUS_SUCCESS)
      detail::throw_call_failed("cuDNN", stmt, cudnnGetErrorString(st), file, line);
  }
  /// No usable algorithm: NoAlgorithm for 16-bit (the caller falls back to fp32), else an error.
  [[noreturn]] void no_algorithm(const std::string& why) const {
    if (dt_ != DType::F32) throw NoAlgorithm(why);
    detail::throw_call_failed("check", "cuDNN algorithm choice", why, __FILE__, __LINE__);
  }

  ConvShape s_;
  DType dt_;                  // F32, BF16 or F16
  cudnnDataType_t cdt_;       // its cuDNN type
  int ck_;                    // input channels the kernels see (kernel_channels: C, or padded)
  FilterDesc wdesc_;          // NHWC (KRSC = OHWI) cdt_, dims (O, ck, k, k)
  ConvDesc conv_;
  std::map<int, std::unique_ptr<Plan>> plans_;
  KernelWeights w_k_;         // the weights in the filter descriptor's layout and type
  ActBuffer dw_k_;            // backward-filter output before the OIHW transpose / widening
  Buffer bias_partial_{Device::CUDA};
};

cudnnDataType_t cudnn_type(DType t) {
  return t == DType::BF16 ? CUDNN_DATA_BFLOAT16 : t == DType::F16 ? CUDNN_DATA_HALF
                                                                  : CUDNN_DATA_FLOAT;
}

CudaConv::CudaConv(const ConvShape& s)
    : s_(s),
      dt_(conv_dtype(s)),
      cdt_(cudnn_type(dt_)),
      ck_(kernel_channels(s, dt_)),
      w_k_(dt_, s, ck_),
      dw_k_(Device::CUDA, dt_) {
  FT_REQUIRE(s.C2 == 0, "CudaConv takes a dense input (a two-part one goes to CudaConvTwoPart*)");
  FT_CUDNN(cudnnSetFilter4dDescriptor(wdesc_.d, cdt_, CUDNN_TENSOR_NHWC, s.O, ck_, s.k, s.k));
  // Accumulation in fp32 for every dtype (PSEUDO_HALF / PSEUDO_BFLOAT16 for 16-bit).
  FT_CUDNN(cudnnSetConvolution2dDescriptor(conv_.d, s.pad, s.pad, s.stride, s.stride, 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  FT_CUDNN(cudnnSetConvolutionMathType(
      conv_.d, dt_ == DType::F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
}

Plan& CudaConv::plan_for(int N) {
  auto it = plans_.find(N);
  if (it != plans_.end()) return *it->second;
  FT_REQUIRE(N > 0, "convolution batch size must be positive");
  auto p = std::make_unique<Plan>();
  const int OH = s_.OH(), OW = s_.OW();
  FT_CUDNN(cudnnSetTensor4dDescriptor(p->x.d, CUDNN_TENSOR_NHWC, cdt_, N, ck_, s_.H, s_.W));
  FT_CUDNN(cudnnSetTensor4dDescriptor(p->y.d, CUDNN_TENSOR_NHWC, cdt_, N, s_.O, OH, OW));
  int n = 0, c = 0, h = 0, w = 0;
  FT_CUDNN(cudnnGetConvolution2dForwardOutputDim(conv_.d, p->x.d, wdesc_.d, &n, &c, &h, &w));
  FT_REQUIRE(n == N && c == s_.O && h == OH && w == OW,
             "cuDNN's convolution output shape differs from ConvShape's (" + shape_str(s_, N) +
                 ")");
  return *plans_.emplace(N, std::move(p)).first->second;
}

void CudaConv::choose_fwd(Plan& p, int N, const void* x, const void* wk, void* y) {
  cudnnHandle_t h = cuda::cudnn();
  set_math(kSearchMath);
  int max_count = 0;
  FT_CUDNN(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(size_t(std::max(1, max_count)));
  int returned = 0;
  if (use_find()) {
    void* ws = cuda::workspace(workspace_cap());
    FT_CONV_SEARCH(cudnnFindConvolutionForwardAlgorithmEx(h, p.x.d, x, wdesc_.d, wk, conv_.d, p.y.d, y,
                                                    int(perf.size()), &returned, perf.data(), ws,
                                                    workspace_cap()));
  } else {
    FT_CONV_SEARCH(cudnnGetConvolutionForwardAlgorithm_v7(h, p.x.d, wdesc_.d, conv_.d, p.y.d,
                                                    int(perf.size()), &returned, perf.data()));
  }
  const int i = pick(perf, returned, dt_ != DType::F32);
  if (i < 0)
    no_algorithm(std::string("cuDNN has no ") + dtype_name(dt_) +
                 " NHWC forward convolution algorithm for " + shape_str(s_, N) +
                 " within the workspace cap (" + perf_list(perf, returned) + ")");
  if (conv_debug())
    std::fprintf(stderr, "firetrain: conv %s %s: chose #%d of [%s]\n", dtype_name(dt_),
                 ("forward " + shape_k(N)).c_str(), i, perf_list(perf, returned).c_str());
  p.fwd_algo = perf[size_t(i)].algo;
  if (dt_ != DType::F32) p.fwd_math = perf[size_t(i)].mathType;
  set_math(p.fwd_math);
  size_t ws = 0;
  FT_CONV_RUN(cudnnGetConvolutionForwardWorkspaceSize(h, p.x.d, wdesc_.d, conv_.d, p.y.d, p.fwd_algo,
                                                   &ws));
  p.fwd_ws = std::max(ws, perf[size_t(i)].memory);
  p.have_fwd = true;
}

void CudaConv::choose_bwd_data(Plan& p, int N, const void* wk, const void* dy, void* dx) {
  cudnnHandle_t h = cuda::cudnn();
  set_math(kSearchMath);
  int max_count = 0;
  FT_CUDNN(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_count));
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(size_t(std::max(1, max_count)));
  int returned = 0;
  if (use_find()) {
    void* ws = cuda::workspace(workspace_cap());
    FT_CONV_SEARCH(cudnnFindConvolutionBackwardDataAlgorithmEx(h, wdesc_.d, wk, p.y.d, dy, conv_.d,
                                                         p.x.d, dx, int(perf.size()), &returned,
                                                         perf.data(), ws, workspace_cap()));
  } else {
    FT_CONV_SEARCH(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, wdesc_.d, p.y.d, conv_.d, p.x.d,
                                                         int(perf.size()), &returned,
                                                         perf.data()));
  }
  const int i = pick(perf, returned, dt_ != DType::F32);
  if (i < 0)
    no_algorithm(std::string("cuDNN has no ") + dtype_name(dt_) +
                 " NHWC backward-data algorithm for " + shape_str(s_, N) +
                 " within the workspace cap (" + perf_list(perf, returned) + ")");
  if (conv_debug())
    std::fprintf(stderr, "firetrain: conv %s %s: chose #%d of [%s]\n", dtype_name(dt_),
                 ("backward-data " + shape_k(N)).c_str(), i, perf_list(perf, returned).c_str());
  p.bwd_data_algo = perf[size_t(i)].algo;
  if (dt_ != DType::F32) p.bwd_data_math = perf[size_t(i)].mathType;
  set_math(p.bwd_data_math);
  size_t ws = 0;
  FT_CONV_RUN(cudnnGetConvolutionBackwardDataWorkspaceSize(h, wdesc_.d, p.y.d, conv_.d, p.x.d,
                                                        p.bwd_data_algo, &ws));
  p.bwd_data_ws = std::max(ws, perf[size_t(i)].memory);
  p.have_bwd_data = true;
}

void CudaConv::choose_bwd_filter(Plan& p, int N, const void* x, const void* dy, void* dwk) {
  cudnnHandle_t h = cuda::cudnn();
  set_math(kSearchMath);
  int max_count = 0;
  FT_CUDNN(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max_count));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(size_t(std::max(1, max_count)));
  int returned = 0;
  if (use_find()) {
    void* ws = cuda::workspace(workspace_cap());
    FT_CONV_SEARCH(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, p.x.d, x, p.y.d, dy, conv_.d,
                                                           wdesc_.d, dwk, int(perf.size()),
                                                           &returned, perf.data(), ws,
                                                           workspace_cap()));
  } else {
    FT_CONV_SEARCH(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x.d, p.y.d, conv_.d, wdesc_.d,
                                                           int(perf.size()), &returned,
                                                           perf.data()));
  }
  const int i = pick(perf, returned, dt_ != DType::F32);
  if (i < 0)
    no_algorithm(std::string("cuDNN has no ") + dtype_name(dt_) +
                 " NHWC backward-filter algorithm for " + shape_str(s_, N) +
                 " within the workspace cap (" + perf_list(perf, returned) + ")");
  if (conv_debug())
    std::fprintf(stderr, "firetrain: conv %s %s: chose #%d of [%s]\n", dtype_name(dt_),
                 ("backward-filter " + shape_k(N)).c_str(), i, perf_list(perf, returned).c_str());
  p.bwd_filter_algo = perf[size_t(i)].algo;
  if (dt_ != DType::F32) p.bwd_filter_math = perf[size_t(i)].mathType;
  set_math(p.bwd_filter_math);
  size_t ws = 0;
  FT_CONV_RUN(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p.x.d, p.y.d, conv_.d, wdesc_.d,
                                                          p.bwd_filter_algo, &ws));
  p.bwd_filter_ws = std::max(ws, perf[size_t(i)].memory);
  p.have_bwd_filter = true;
}

void CudaConv::forward(int N, ConstAct x, const float* w, const float* b, Act y) {
  require_y_dtype(dt_, y, /*forward=*/true);
  Plan& p = plan_for(N);
  const void* xk = input_k(N, x);
  // Forward always remakes the copy: the weights may have been updated in place since the
  // last step (same pointer, new values).
  const void* wk = w_k_.get(w, /*reuse_ok=*/false);
  if (!p.have_fwd) choose_fwd(p, N, xk, wk, y.raw());
  const float one = 1.f, zero = 0.f;
  void* ws = p.fwd_ws ? cuda::workspace(p.fwd_ws) : nullptr;
  set_math(p.fwd_math);
  FT_CONV_RUN(cudnnConvolutionForward(cuda::cudnn(), &one, p.x.d, xk, wdesc_.d, wk, conv_.d,
                                   p.fwd_algo, ws, p.fwd_ws, &zero, p.y.d, y.raw()));
  const int64_t n = int64_t(N) * s_.OH() * s_.OW() * s_.O;
  with_dtype(dt_, [&](auto t) {
    using T = decltype(t);
    bias_act(n, s_.O, b, s_.relu, typed<T>(y), typed<T>(y));
  });
}

void CudaConv::backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx,
                        float* dw, float* db) {
  if (y) require_y_dtype(dt_, y, /*forward=*/false);
  Plan& p = plan_for(N);
  cudaStream_t st = cuda::stream();
  const int64_t P = int64_t(N) * s_.OH() * s_.OW();
  const bool half = dt_ != DType::F32;

  // 1. Mask dy by (y > 0) in place (fused ReLU), reduce it over rows into db and (16-bit) round
  //    it into scratch: the dy the backward convolutions read.
  void* dyk = dy;
  if (half) dyk = scratch(kSlotDy16, size_t(P) * s_.O * dtype_size(dt_));
  bias_backward(P, s_.O, dt_, s_.relu ? y : ConstAct(), dy, half ? dyk : nullptr, bias_partial_,
                db);

  const float one = 1.f, zero = 0.f;
  // 2. dx: backward data with the kernel-layout weights (the forward's copy when w is the
  //    same); 16-bit: into scratch, then widened into dx.
  if (dx) {
    const void* wk = w_k_.get(w, /*reuse_ok=*/true);
    const int64_t nx = int64_t(N) * s_.H * s_.W * s_.C;
    const int64_t nxk = int64_t(N) * s_.H * s_.W * ck_;  // (padded channels included)
    void* dxk = half ? scratch(kSlotDx16, size_t(nxk) * dtype_size(dt_)) : dx;
    if (!p.have_bwd_data) choose_bwd_data(p, N, wk, dyk, dxk);
    void* ws = p.bwd_data_ws ? cuda::workspace(p.bwd_data_ws) : nullptr;
    set_math(p.bwd_data_math);
    FT_CONV_RUN(cudnnConvolutionBackwardData(cuda::cudnn(), &one, wdesc_.d, wk, p.y.d, dyk, conv_.d,
                                          p.bwd_data_algo, ws, p.bwd_data_ws, &zero, p.x.d, dxk));
    if (half)
      with_dtype(dt_, [&](auto t) {
        using T = decltype(t);
        if (ck_ == s_.C) {
          cuda::copy(nx, ConstAct(static_cast<const T*>(dxk)), dx);  // widens
        } else {  // widens and drops the padding channels
          cuda::with_index(nxk, [&](auto it) {
            using I = decltype(it);
            unpad_channels_kernel<I, T><<<cuda::grid_for(nx), 256, 0, st>>>(
                I(nx), s_.C, ck_, static_cast<const T*>(dxk), dx);
          });
          FT_CUDA_LAUNCH();
        }
      });
  }

  // 3. dw: backward filter into the kernel layout (dw itself when that is the same bytes and
  //    type), then to fp32 OIHW.
  const void* xk = input_k(N, x);  // (an fp32 x of a 16-bit conv is rounded again: scratch)
  const int64_t nw = s_.weight_numel();
  void* dwk = dw;
  if (!w_k_.direct()) {
    if (dw_k_.size() != size_t(w_k_.numel())) dw_k_.resize(size_t(w_k_.numel()));
    dwk = dw_k_.view().raw();
  }
  if (!p.have_bwd_filter) choose_bwd_filter(p, N, xk, dyk, dwk);
  void* ws = p.bwd_filter_ws ? cuda::workspace(p.bwd_filter_ws) : nullptr;
  set_math(p.bwd_filter_math);
  FT_CONV_RUN(cudnnConvolutionBackwardFilter(cuda::cudnn(), &one, p.x.d, xk, p.y.d, dyk, conv_.d,
                                          p.bwd_filter_algo, ws, p.bwd_filter_ws, &zero, wdesc_.d,
                                          dwk));
  if (w_k_.same_layout() && !w_k_.direct()) {
    cuda::copy(nw, dw_k_.view(), dw);  // widens
  } else if (!w_k_.direct()) {
    with_dtype(dt_, [&](auto t) {
      using T = decltype(t);
      ohwi_to_oihw_kernel<T, float><<<cuda::grid_for(nw), 256, 0, st>>>(
          nw, s_.C, s_.k, ck_, static_cast<const T*>(dwk), dw);
    });
    FT_CUDA_LAUNCH();
  }
}

/// A 16-bit convolution (dense input) that runs in fp32 when cuDNN has no 16-bit algorithm for
/// its shape (the algorithm searches throw NoAlgorithm; possible for layers whose O is not a
/// multiple of 8, or C without the channel padding, FT_CONV_PAD_CHANNELS=0): the layer then
/// widens its input (and, in backward, y for the ReLU mask) into fp32 scratch, runs the fp32
/// convolution (FMA math, the tested fp32 path) and rounds y to the 16-bit type; weights and
/// gradients are fp32 anyway. The switch is per batch size (plans are), reported on stderr. Backward
/// may switch after a 16-bit forward: it only reads x, y and w, and a 16-bit backward
/// interrupted by NoAlgorithm has left dy untouched (it only writes the 16-bit masked copy).
struct CudaConvHalf final : Conv2d::Impl {
  explicit CudaConvHalf(const ConvShape& s) : s_(s), half_(s) {}
  void forward(int N, ConstAct x, const float* w, const float* b, Act y) override {
    if (!fp32_batches_.count(N)) try {
        half_.forward(N, x, w, b, y);
        return;
      } catch (const NoAlgorithm& e) {
        fall_back(N, e);
      }
    const int64_t ny = int64_t(N) * s_.OH() * s_.OW() * s_.O;
    if (yf_.size() < size_t(ny)) yf_.resize(size_t(ny));
    f32_->forward(N, widen(N, x, xf_, int64_t(s_.H) * s_.W * s_.C), w, b, yf_.data());
    cuda::copy(ny, yf_.data(), y);
  }
  void backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx, float* dw,
                float* db) override {
    if (!fp32_batches_.count(N)) try {
        half_.backward(N, x, w, y, dy, dx, dw, db);
        return;
      } catch (const NoAlgorithm& e) {
        fall_back(N, e);
        // This step's forward ran in 16 bits, so the fallback's weight copy (if it has one,
        // from another batch size) predates SGD updates since.
        f32_->forget_weights();
      }
    const float* yf = y ? widen(N, y, ymask_, int64_t(s_.OH()) * s_.OW() * s_.O) : nullptr;
    f32_->backward(N, widen(N, x, xf_, int64_t(s_.H) * s_.W * s_.C), w, yf, dy, dx, dw, db);
  }

 private:
  static ConvShape f32_shape(ConvShape s) {
    s.bf16 = s.fp16 = false;
    return s;
  }
  void fall_back(int N, const NoAlgorithm& e) {
    (void)cudaGetLastError();  // (a failed search may leave a launch error behind)
    std::fprintf(stderr, "firetrain: %s; this layer runs in fp32 instead at batch size %d\n",
                 e.what(), N);
    fp32_batches_.insert(N);
    if (!f32_) f32_ = std::make_unique<CudaConv>(f32_shape(s_));
  }
  // a (per_image elements per image) as fp32: itself, or widened into buf.
  static const float* widen(int N, ConstAct a, Buffer& buf, int64_t per_image) {
    if (a.dtype() == DType::F32) return a.f32();
    const int64_t n = int64_t(N) * per_image;
    if (buf.size() < size_t(n)) buf.resize(size_t(n));
    cuda::copy(n, a, buf.data());
    return buf.data();
  }
  ConvShape s_;
  CudaConv half_;
  std::set<int> fp32_batches_;     // batch sizes cuDNN has no 16-bit algorithm for
  std::unique_ptr<CudaConv> f32_;  // their fp32 convolution (made at the first such size)
  Buffer xf_{Device::CUDA}, yf_{Device::CUDA}, ymask_{Device::CUDA};
};

/// The dense convolution of a shape: CudaConv, or CudaConvHalf for 16-bit shapes.
std::unique_ptr<Conv2d::Impl> make_dense(const ConvShape& s) {
  if (s.bf16 || s.fp16) return std::make_unique<CudaConvHalf>(s);
  return std::make_unique<CudaConv>(s);
}

// (P, Ca) of element type T into channels [off, off + Ca) of y (P, Ctot), or the reverse.
template <class T>
__global__ void channel_copy_kernel(int64_t P, int Ca, int off, int Ctot, bool in, const T* src,
                                    T* dst) {
  const int64_t total = P * Ca;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = i / Ca;
    const int64_t j = p * Ctot + off + (i - p * Ca);
    if (in)
      dst[j] = src[i];
    else
      dst[i] = src[j];
  }
}

/// Two-part input (ConvShape::C2 > 0: x = [x1 (N, H, W, C) | x2 (N, H, W, C2)], a Fire
/// module's planar output), copying: the parts are copied into one dense (N, H, W, C + C2)
/// scratch tensor (of x's dtype) and the dense convolution (C + C2 input channels, the same
/// OIHW weights) runs on it; backward recopies x, lets the dense convolution write the dense
/// fp32 input gradient to scratch and splits it into dx's two parts. Simple and obviously equal
/// to the dense convolution, but not zero-copy: used for two-part shapes that are not 1×1
/// (none in SqueezeNet), or for every two-part shape with FT_CONV_TWO_PART=copy (to compare
/// with the zero-copy CudaConvTwoPartGemm below).
struct CudaConvTwoPart final : Conv2d::Impl {
  explicit CudaConvTwoPart(const ConvShape& s) : s_(s), dense_(make_dense(dense_shape(s))) {}
  void forward(int N, ConstAct x, const float* w, const float* b, Act y) override {
    dense_->forward(N, concat(N, x), w, b, y);
  }
  void backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx, float* dw,
                float* db) override {
    const ConstAct xc = concat(N, x);
    const int64_t P = int64_t(N) * s_.H * s_.W;
    float* dxc = nullptr;
    if (dx) {
      if (dxcat_.size() < size_t(P * s_.Ct())) dxcat_.resize(size_t(P * s_.Ct()));
      dxc = dxcat_.data();
    }
    dense_->backward(N, xc, w, y, dy, dxc, dw, db);
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
  // [x1 | x2] -> the dense concat in xcat_ (N, H, W, C + C2), of x's dtype.
  ConstAct concat(int N, ConstAct x) {
    const int64_t P = int64_t(N) * s_.H * s_.W;
    if (!xcat_ || xcat_->dtype() != x.dtype())
      xcat_ = std::make_unique<ActBuffer>(Device::CUDA, x.dtype());
    if (xcat_->size() < size_t(P * s_.Ct())) xcat_->resize(size_t(P * s_.Ct()));
    const Act xc = xcat_->view();
    with_dtype(x.dtype(), [&](auto t) {
      using T = decltype(t);
      const T* src = typed<T>(x);
      T* dst = typed<T>(xc);
      channel_copy_kernel<T><<<cuda::grid_for(P * s_.C), 256, 0, cuda::stream()>>>(
          P, s_.C, 0, s_.Ct(), true, src, dst);
      channel_copy_kernel<T><<<cuda::grid_for(P * s_.C2), 256, 0, cuda::stream()>>>(
          P, s_.C2, s_.C, s_.Ct(), true, src + P * s_.C, dst);
    });
    FT_CUDA_LAUNCH();
    return xc;
  }
  ConvShape s_;
  std::unique_ptr<Conv2d::Impl> dense_;
  std::unique_ptr<ActBuffer> xcat_;
  Buffer dxcat_{Device::CUDA};
};

cudaDataType_t cuda_data_type(DType t) {
  return t == DType::BF16 ? CUDA_R_16BF : t == DType::F16 ? CUDA_R_16F : CUDA_R_32F;
}

/// Two-part input, zero-copy, for 1×1 stride-1 unpadded shapes (every two-part convolution of
/// SqueezeNet: the squeeze after a Fire module, conv10, the complex bypass): cuBLAS GEMMs
/// straight on the two parts, with w's column blocks read in place (the plan, its derivation
/// and its CPU test: src/ops/cuda/two_part_gemm.hpp). No concat is ever materialized, in
/// forward or backward (CudaConvTwoPart copies x twice and dx once per step).
///  * fp32: cublasGemmEx on fp32 with CUBLAS_COMPUTE_32F in CUBLAS_DEFAULT_MATH (true fp32,
///    never TF32: the 1e-4 parity of cuDNN's FMA path); y is accumulated in place (β = 1 for
///    part 2), then the bias + ReLU kernel runs on it.
///  * 16-bit: x (rounded into scratch if fp32), the weights (rounded once per forward) and the
///    masked dy (rounded by the bias-gradient kernel) are 16-bit, accumulation is fp32 on
///    tensor cores. y is accumulated in fp32 scratch (shared; conv10 at batch 256, 224×224:
///    43264 × 1000 floats, 173 MB) and rounded ONCE by the bias + ReLU kernel
///    (as the CPU's oneDNN does; the cuDNN path rounds twice); dx and dw are written in fp32
///    directly (the cuDNN path rounds them to 16 bits first).
/// cuBLAS always has a kernel for these types, so no fp32 fallback is needed. Deterministic:
/// cuBLAS GEMMs give bitwise-identical results run to run on one stream and one GPU model.
struct CudaConvTwoPartGemm final : Conv2d::Impl {
  explicit CudaConvTwoPartGemm(const ConvShape& s)
      : s_(s), dt_(conv_dtype(s)), w_k_(dt_, s, s.Ct()) {
    FT_REQUIRE(s.C2 > 0 && s.k == 1 && s.stride == 1 && s.pad == 0,
               "the GEMM form of a two-part convolution needs a 1x1, stride-1, unpadded shape");
  }
  void forward(int N, ConstAct x, const float* w, const float* b, Act y) override {
    require_y_dtype(dt_, y, /*forward=*/true);
    const int P = pixels(N);
    const void* xk = input_as(dt_, int64_t(P) * s_.Ct(), x);
    const void* wk = w_k_.get(w, /*reuse_ok=*/false);
    const int64_t ny = int64_t(P) * s_.O;
    float* yf = dt_ == DType::F32 ? y.f32()
                                  : static_cast<float*>(scratch(kSlotY32, size_t(ny) * 4));
    for (const cuda::two_part::Gemm& g : cuda::two_part::forward(P, s_.C, s_.C2, s_.O))
      gemm(g, xk, wk, nullptr, cuda::two_part::Operand::Y, yf);
    with_dtype(dt_, [&](auto t) {
      using T = decltype(t);
      bias_act(ny, s_.O, b, s_.relu, static_cast<const float*>(yf), typed<T>(y));
    });
  }
  void backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx, float* dw,
                float* db) override {
    if (y) require_y_dtype(dt_, y, /*forward=*/false);
    const int P = pixels(N);
    const bool half = dt_ != DType::F32;
    void* dyk = half ? scratch(kSlotDy16, size_t(P) * s_.O * dtype_size(dt_)) : dy;
    bias_backward(P, s_.O, dt_, s_.relu ? y : ConstAct(), dy, half ? dyk : nullptr,
                  bias_partial_, db);
    if (dx) {
      const void* wk = w_k_.get(w, /*reuse_ok=*/true);
      for (const cuda::two_part::Gemm& g : cuda::two_part::backward_data(P, s_.C, s_.C2, s_.O))
        gemm(g, nullptr, wk, dyk, cuda::two_part::Operand::DX, dx);
    }
    const void* xk = input_as(dt_, int64_t(P) * s_.Ct(), x);
    for (const cuda::two_part::Gemm& g : cuda::two_part::backward_filter(P, s_.C, s_.C2, s_.O))
      gemm(g, xk, nullptr, dyk, cuda::two_part::Operand::DW, dw);
  }

 private:
  int pixels(int N) const {
    const int64_t P = int64_t(N) * s_.H * s_.W;
    FT_REQUIRE(N > 0 && P <= int64_t(INT32_MAX) / std::max(1, std::max(s_.Ct(), s_.O)),
               "convolution batch too large for 32-bit cuBLAS sizes: " + shape_str(s_, N));
    return int(P);
  }
  /// One GEMM of the plan: A and B are x, w or dy (all of dt_), C is the fp32 operand `c_of`
  /// (y, dx or dw) at `c`; the plan must name that same operand.
  void gemm(const cuda::two_part::Gemm& g, const void* x, const void* w, const void* dy,
            cuda::two_part::Operand c_of, float* c) {
    using cuda::two_part::Operand;
    FT_REQUIRE(g.c.of == c_of, "two-part GEMM plan writes another operand than the pass's");
    const auto in = [&](const cuda::two_part::Mat& m) {
      const void* base = m.of == Operand::X ? x : m.of == Operand::W ? w : m.of == Operand::DY ? dy
                                                                                            : nullptr;
      FT_REQUIRE(base, "two-part GEMM plan reads an operand it was not given");
      return static_cast<const void*>(static_cast<const char*>(base) +
                                      m.offset * int64_t(dtype_size(dt_)));
    };
    const float one = 1.f;
    const cudaDataType_t t = cuda_data_type(dt_);
    FT_CUBLAS(cublasGemmEx(cuda::blas(), g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                           g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &one, in(g.a), t,
                           g.a.ld, in(g.b), t, g.b.ld, &g.beta, c + g.c.offset, CUDA_R_32F, g.c.ld,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  ConvShape s_;
  DType dt_;
  KernelWeights w_k_;  // fp32: w itself; 16-bit: its rounding (k == 1: OIHW == OHWI)
  Buffer bias_partial_{Device::CUDA};
};

/// FT_CONV_TWO_PART=copy selects the copying two-part convolution for every two-part shape
/// (read when a layer is made); default or "gemm": the zero-copy GEMM form where it applies.
bool two_part_copy_forced() {
  const char* e = std::getenv("FT_CONV_TWO_PART");
  if (!e || !*e || std::strcmp(e, "gemm") == 0) return false;
  if (std::strcmp(e, "copy") == 0) return true;
  throw InputError(std::string("FT_CONV_TWO_PART=") + e + ": expected gemm or copy");
}

}  // namespace

namespace cuda {
std::unique_ptr<Conv2d::Impl> make_conv2d(const ConvShape& s) {
  if (s.C2 > 0) {
    if (s.k == 1 && s.stride == 1 && s.pad == 0 && !two_part_copy_forced())
      return std::make_unique<CudaConvTwoPartGemm>(s);
    return std::make_unique<CudaConvTwoPart>(s);
  }
  return make_dense(s);
}
}  // namespace cuda

}  // namespace ft
