/// @brief Max pooling (ceil mode, as Caffe and torchvision's SqueezeNet) and global average
/// pooling, NHWC. Activations (x, y) are fp32, bf16 or (CUDA) fp16 (act.hpp); gradients fp32.
#pragma once

#include <memory>

#include "firetrain/core/device.hpp"
#include "firetrain/ops/act.hpp"

namespace ft {

struct PoolShape {
  int C = 0, H = 0, W = 0;
  int k = 3, stride = 2, pad = 0;
  bool ceil_mode = true;
  /// torch's rule: ceil((H + 2p - k) / s) + 1, minus one if the last window starts in the
  /// right padding.
  static int out_size(int in, int k, int s, int p, bool ceil_mode);
  int OH() const { return out_size(H, k, stride, pad, ceil_mode); }
  int OW() const { return out_size(W, k, stride, pad, ceil_mode); }
};

class MaxPool2d {
 public:
  explicit MaxPool2d(PoolShape s, Device d = Device::CPU);
  ~MaxPool2d();
  MaxPool2d(MaxPool2d&&) noexcept;
  const PoolShape& shape() const { return s_; }
  /// x (N, H, W, C) -> y (N, OH, OW, C), both of one dtype (CPU: fp32 or bf16; CUDA: also
  /// fp16; the max of 16-bit values is exact, so 16 bits give the fp32 result on
  /// representable inputs).
  void forward(int N, ConstAct x, Act y);
  /// dy (N, OH, OW, C) -> dx (N, H, W, C) (fp32), overwritten, given the forward's x and y.
  /// Each window's gradient goes to its first maximum in row-major order, as in torch. (The
  /// CPU op reuses the positions its last forward found when x, y and N are that forward's.)
  void backward(int N, ConstAct x, ConstAct y, const float* dy, float* dx);
  /// Bytes the op keeps between forward and backward beyond x and y (the CPU's window
  /// positions of the maxima: one byte per output element).
  size_t kept_bytes() const { return impl_->kept_bytes(); }

  struct Impl {
    virtual ~Impl() = default;
    virtual void forward(int N, ConstAct x, Act y) = 0;
    virtual void backward(int N, ConstAct x, ConstAct y, const float* dy, float* dx) = 0;
    virtual size_t kept_bytes() const { return 0; }
  };

 private:
  PoolShape s_;
  std::unique_ptr<Impl> impl_;
};

namespace cpu {
std::unique_ptr<MaxPool2d::Impl> make_maxpool2d(const PoolShape& s);
/// x (N, H, W, C) (fp32 or bf16) -> y (N, C) (fp32): mean over H, W, summed in fp32.
void global_avgpool_forward(int N, int H, int W, int C, ConstAct x, float* y);
/// dy (N, C) -> dx (N, H, W, C) = dy / (H W).
void global_avgpool_backward(int N, int H, int W, int C, const float* dy, float* dx);

}  // namespace cpu

namespace cuda {
std::unique_ptr<MaxPool2d::Impl> make_maxpool2d(const PoolShape& s);
void global_avgpool_forward(int N, int H, int W, int C, ConstAct x, float* y);
void global_avgpool_backward(int N, int H, int W, int C, const float* dy, float* dx);
}  // namespace cuda

}  // namespace ft
