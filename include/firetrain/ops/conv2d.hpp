/// @brief 2-D convolution (NHWC activations, torch OIHW weights), optional fused ReLU.
///
/// Forward:  y = relu?(conv(x, w) + b)          x (N, H, W, C), w (O, C, kh, kw), y (N, OH, OW, O)
/// Backward: dy is masked by (y > 0) in place when ReLU is fused, then dx, dw, db.
/// Two-part input (C2 > 0): the input is the channel concat [x1 ‖ x2] of two dense NHWC tensors
/// stored back to back, x1 = x (N, H, W, C) then x2 = x + N*H*W*C (N, H, W, C2) (a Fire
/// module's planar output); dx has the same two-part layout. The weights are still the torch
/// OIHW tensor (O, C + C2, k, k) of the concat, so parameters are the same as for a dense input.
/// Activations x and y are ConstAct / Act (act.hpp): fp32, or bf16 with ConvShape::bf16 (CPU).
/// The CPU implementation (src/ops/cpu/conv2d.cpp) runs oneDNN primitives built once per batch
/// size (and output dtype) and reorders the OIHW weights (the layout of the parameter arena,
/// the all-reduce and torch-h5) to the layout the kernel prefers. The CUDA one
/// (src/ops/cuda/conv2d.cu) runs cuDNN (fp32 FMA math, or bf16 / fp16 on tensor cores with
/// fp32 accumulation) with the algorithms chosen once per (shape, batch) and a shared
/// workspace; its two-part 1×1 convolutions are cuBLAS GEMMs on the two parts in place
/// (zero-copy; src/ops/cuda/two_part_gemm.hpp).
#pragma once

#include <cstdint>
#include <memory>

#include "firetrain/core/device.hpp"
#include "firetrain/ops/act.hpp"

namespace ft {

struct ConvShape {
  int C = 0, O = 0;    // input / output channels
  int H = 0, W = 0;    // input spatial size
  int k = 1;           // square kernel
  int stride = 1, pad = 0;
  bool relu = true;    // ReLU fused after bias
  /// bf16 math (CPU: oneDNN's AVX512-BF16 kernels, fp32 accumulation). x may be bf16 (read as
  /// it is) or fp32 (rounded to bf16 inside the op); y may be bf16 (oneDNN rounds the fp32
  /// result, after bias and ReLU, once: RNE) or fp32. The weights (fp32 arena) and the output
  /// gradient dy (fp32) are rounded to bf16 inside the op (dy in place); dx, dw and db are
  /// fp32.
  /// A two-part input with a bf16 y rounds twice: part 1 (+ bias) is stored as bf16, and part
  /// 2's `sum` post-op adds to that rounded value (see src/ops/cpu/conv2d.cpp).
  bool bf16 = false;
  /// Channels of the second input part (0: one dense input part of C channels).
  int C2 = 0;
  /// fp16 math (CUDA only: cuDNN tensor cores, fp32 accumulation): x fp32 or fp16, y fp16,
  /// weights and the masked dy rounded to fp16 inside the op (into scratch; dy is left unmasked),
  /// dx, dw, db fp32. The CUDA bf16 path works the same way with bf16.
  bool fp16 = false;
  int Ct() const { return C + C2; }  // all input channels
  int OH() const { return (H + 2 * pad - k) / stride + 1; }
  int OW() const { return (W + 2 * pad - k) / stride + 1; }
  int64_t weight_numel() const { return int64_t(O) * Ct() * k * k; }
};

class Conv2d {
 public:
  /// The device's implementation is made here (the one place conv dispatches on device).
  explicit Conv2d(ConvShape s, Device d = Device::CPU);
  ~Conv2d();
  Conv2d(Conv2d&&) noexcept;
  const ConvShape& shape() const { return s_; }

  /// x (N, H, W, C) (two parts: see C2), w (O, C + C2, k, k), b (O), y (N, OH, OW, O).
  /// x and y are fp32, or (bf16 / fp16 shapes only) of the shape's 16-bit type.
  void forward(int N, ConstAct x, const float* w, const float* b, Act y);
  /// backward must see the same weights as the preceding forward (the reordered copy made by
  /// forward is reused when `w` is the same pointer): update weights only after backward.
  /// x is the forward's input (same dtype). dy (N, OH, OW, O) (fp32) is modified in place by
  /// the ReLU mask (y > 0) when ReLU is fused and y is given; pass y = nullptr when the caller
  /// has already masked dy. 16-bit shapes leave no usable values in dy: the CPU's bf16
  /// overwrites it with its bf16 rounding (packed into its first half); CUDA's bf16 / fp16
  /// leave it unmasked (the masked 16-bit copy goes to scratch), or masked where a layer fell
  /// back to fp32. dx may be null (first
  /// layer). dx, dw, db are fp32 and overwritten (not accumulated).
  void backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx, float* dw,
                float* db);

  /// A backend's implementation, with the same contract as forward/backward above.
  struct Impl {
    virtual ~Impl() = default;
    virtual void forward(int N, ConstAct x, const float* w, const float* b, Act y) = 0;
    virtual void backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx,
                          float* dw, float* db) = 0;
  };

 private:
  ConvShape s_;
  std::unique_ptr<Impl> impl_;
};

namespace cpu {
std::unique_ptr<Conv2d::Impl> make_conv2d(const ConvShape& s);
}
namespace cuda {
std::unique_ptr<Conv2d::Impl> make_conv2d(const ConvShape& s);
}

}  // namespace ft
