/// @brief Fully connected layer (AlexNet's classifier), torch layout, optional fused ReLU, and
/// the NHWC <-> NCHW transposes that let a flatten match torch's (C, H, W) order.
///
/// Forward:  y (N, O) = relu?(x (N, I) · wᵀ + b),  w (O, I) as torch.nn.Linear stores it.
/// Backward: dy is masked by (y > 0) in place when relu and y is given; then dx (N, I) (may be
///           null), dw (O, I) and db (O), overwritten.
/// CPU: oneDNN's sgemm (src/ops/cpu/linear.cpp). CUDA: cuBLAS (src/ops/cuda/linear.cu).
#pragma once

#include <cstdint>

#include "firetrain/ops/act.hpp"

namespace ft {

namespace cpu {
void linear_forward(int N, int I, int O, bool relu, const float* x, const float* w,
                    const float* b, float* y);
void linear_backward(int N, int I, int O, bool relu, const float* x, const float* w,
                     const float* y, float* dy, float* dx, float* dw, float* db);
/// x (N, H, W, C) -> y (N, C, H, W), and back. nhwc_to_nchw reads an activation of any dtype
/// (AlexNet's 16-bit features) and writes fp32 (its classifier is fp32).
void nhwc_to_nchw(int N, int H, int W, int C, ConstAct x, float* y);
void nchw_to_nhwc(int N, int H, int W, int C, const float* x, float* y);
}  // namespace cpu

namespace cuda {
void linear_forward(int N, int I, int O, bool relu, const float* x, const float* w,
                    const float* b, float* y);
void linear_backward(int N, int I, int O, bool relu, const float* x, const float* w,
                     const float* y, float* dy, float* dx, float* dw, float* db);
void nhwc_to_nchw(int N, int H, int W, int C, ConstAct x, float* y);
void nchw_to_nhwc(int N, int H, int W, int C, const float* x, float* y);
}  // namespace cuda

}  // namespace ft
