/// @brief 2-D convolution (NHWC activations, torch OIHW weights), optional fused ReLU.
///
/// Forward:  y = relu?(conv(x, w) + b)          x (N, H, W, C), w (O, C, kh, kw), y (N, OH, OW, O)
/// Backward: dy is masked by (y > 0) in place when ReLU is fused, then dx, dw, db.
/// Two-part input (C2 > 0): the input is the channel concat [x1 ‖ x2] of two dense NHWC tensors
/// stored back to back, x1 = x (N, H, W, C) then x2 = x + N*H*W*C (N, H, W, C2) (a Fire
/// module's planar output); dx has the same two-part layout. The weights are still the torch
/// OIHW tensor (O, C + C2, k, k) of the concat, so parameters are the same as for a dense input.
/// The CPU implementation (src/ops/cpu/conv2d.cpp) runs oneDNN primitives built once per batch
/// size and reorders the OIHW weights (the layout of the parameter arena, the all-reduce and
/// torch-h5) to the layout the kernel prefers. The CUDA one (src/ops/cuda/conv2d.cu) runs
/// cuDNN with the algorithms chosen once per (shape, batch) and a shared workspace.
#pragma once

#include <cstdint>
#include <memory>

#include "firetrain/core/device.hpp"

namespace ft {

struct ConvShape {
  int C = 0, O = 0;    // input / output channels
  int H = 0, W = 0;    // input spatial size
  int k = 1;           // square kernel
  int stride = 1, pad = 0;
  bool relu = true;    // ReLU fused after bias
  /// bf16 math (CPU: oneDNN's AVX512-BF16 kernels) with fp32 storage: inputs, output
  /// gradients and weights are rounded to bf16 inside the op, outputs, input gradients and
  /// weight gradients are fp32 (accumulated in fp32). The arenas and activations stay fp32.
  bool bf16 = false;
  /// Channels of the second input part (0: one dense input part of C channels).
  int C2 = 0;
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

  /// x (N, H, W, C) (two parts: see C2), w (O, C + C2, k, k), b (O), y (N, OH, OW, O)
  void forward(int N, const float* x, const float* w, const float* b, float* y);
  /// backward must see the same weights as the preceding forward (the reordered copy made by
  /// forward is reused when `w` is the same pointer): update weights only after backward.
  /// dy (N, OH, OW, O) is modified in place by the ReLU mask (y > 0) when ReLU is fused and
  /// y is given; pass y = nullptr when the caller has already masked dy. dx may be null (first
  /// layer). dw, db are overwritten (not accumulated).
  void backward(int N, const float* x, const float* w, const float* y, float* dy, float* dx,
                float* dw, float* db);

  /// A backend's implementation, with the same contract as forward/backward above.
  struct Impl {
    virtual ~Impl() = default;
    virtual void forward(int N, const float* x, const float* w, const float* b, float* y) = 0;
    virtual void backward(int N, const float* x, const float* w, const float* y, float* dy,
                          float* dx, float* dw, float* db) = 0;
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
