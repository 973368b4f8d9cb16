/// @brief Max pooling (ceil mode, as Caffe and torchvision's SqueezeNet) and global average
/// pooling, NHWC.
#pragma once

#include <memory>

#include "firetrain/core/device.hpp"

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
  /// x (N, H, W, C) -> y (N, OH, OW, C).
  void forward(int N, const float* x, float* y);
  /// dy (N, OH, OW, C) -> dx (N, H, W, C), overwritten, given the forward's x and y. Each
  /// window's gradient goes to its first maximum in row-major order, as in torch.
  void backward(int N, const float* x, const float* y, const float* dy, float* dx);

  struct Impl {
    virtual ~Impl() = default;
    virtual void forward(int N, const float* x, float* y) = 0;
    virtual void backward(int N, const float* x, const float* y, const float* dy, float* dx) = 0;
  };

 private:
  PoolShape s_;
  std::unique_ptr<Impl> impl_;
};

namespace cpu {
std::unique_ptr<MaxPool2d::Impl> make_maxpool2d(const PoolShape& s);
/// x (N, H, W, C) -> y (N, C): mean over H, W.
void global_avgpool_forward(int N, int H, int W, int C, const float* x, float* y);
/// dy (N, C) -> dx (N, H, W, C) = dy / (H W).
void global_avgpool_backward(int N, int H, int W, int C, const float* dy, float* dx);

}  // namespace cpu

namespace cuda {
std::unique_ptr<MaxPool2d::Impl> make_maxpool2d(const PoolShape& s);
void global_avgpool_forward(int N, int H, int W, int C, const float* x, float* y);
void global_avgpool_backward(int N, int H, int W, int C, const float* dy, float* dx);
}  // namespace cuda

}  // namespace ft
