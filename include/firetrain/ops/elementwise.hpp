/// @brief Element-wise ops: ReLU, channel concat/split, dropout. The per-element math lives in
/// FT_HD inline functions so the CPU and CUDA kernels share it.
///
/// The ops that touch activations take them as ConstAct / Act (act.hpp): fp32 or bf16 on the
/// CPU, fp32, bf16 or fp16 on CUDA; 16-bit values are widened to fp32, combined in fp32 and
/// rounded back (RNE) once per result, with the same cvt:: conversions on both devices; mixed
/// dtypes convert. Gradients are fp32 everywhere.
#pragma once

#include <cstdint>

#include "firetrain/ops/act.hpp"

#ifdef __CUDACC__
#define FT_HD __host__ __device__
#else
#define FT_HD
#endif

namespace ft {

FT_HD inline float relu_fwd(float x) { return x > 0.f ? x : 0.f; }
FT_HD inline float relu_bwd(float y, float dy) { return y > 0.f ? dy : 0.f; }

/// splitmix64 finaliser: a counter-based hash; good enough for dropout masks and augmentation.
FT_HD inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
/// Dropout keep decision for one element, keyed by (seed, step, dataset sample index, element
/// index in NCHW-logical order within the sample) so that the mask does not depend on the
/// number of ranks, the layout or the device.
FT_HD inline bool dropout_keep(uint64_t seed, uint64_t step, uint64_t sample, uint64_t elem,
                               float p) {
  uint64_t h = mix64(seed ^ mix64(step ^ mix64(sample ^ mix64(elem + 0x51ed27ULL))));
  float u = float(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
  return u >= p;
}

namespace cpu {
/// All pointers are on the backend's device (host for cpu::, GPU for cuda::; the CUDA versions
/// are asynchronous on the compute stream). y = relu(x), in place allowed.
void relu_forward(int64_t n, const float* x, float* y);
/// dx = dy * (y > 0), in place allowed (dy, dx fp32; y an activation of either dtype).
void relu_backward(int64_t n, ConstAct y, const float* dy, float* dx);

/// Writes a (P, Ca) into channels [off, off + Ca) of y (P, Ctot); P = N*H*W pixels.
void channel_copy_in(int64_t P, int Ca, int off, int Ctot, const float* a, float* y);
/// Reads channels [off, off + Ca) of y (P, Ctot) into a (P, Ca).
void channel_copy_out(int64_t P, int Ca, int off, int Ctot, const float* y, float* a);

/// Backward of ReLU + channel concat: for y (P, Ca + Cb) = relu([a ‖ b]) and its gradient dy,
/// da (P, Ca) = dy[:, :Ca] * (y[:, :Ca] > 0) and db likewise for the other channels.
void concat_relu_backward(int64_t P, int Ca, int Cb, const float* y, const float* dy, float* da,
                          float* db);

/// y += x (activations, e.g. the identity bypass, or gradients).
void add_inplace(int64_t n, ConstAct x, Act y);
/// y[p * ldy + c] += x[p * ldx + c] for P rows and c < n: adds a channel range of one NHWC
/// tensor into one of another (the simple bypass between two different planar splits).
void strided_add(int64_t P, int n, ConstAct x, int ldx, Act y, int ldy);
/// y = x (non-overlapping; converts when the dtypes differ).
void copy(int64_t n, ConstAct x, Act y);

/// Inverted dropout on x (N, H, W, C): y = x * keep / (1 - p). samples[n] (on the device) is
/// the dataset index of row n. In place allowed. backward applies the same mask to dy.
/// c_off: the global channel index of x's channel 0, when x is one part of a planar concat
/// (the mask is keyed by the global channel, so it does not depend on the layout); else 0.
void dropout_forward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                     const int64_t* samples, ConstAct x, Act y);
void dropout_backward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                      const int64_t* samples, const float* dy, float* dx);

}  // namespace cpu

/// Same functions on the GPU (src/ops/cuda/elementwise.cu).
namespace cuda {
void relu_forward(int64_t n, const float* x, float* y);
void relu_backward(int64_t n, ConstAct y, const float* dy, float* dx);

void channel_copy_in(int64_t P, int Ca, int off, int Ctot, const float* a, float* y);
void channel_copy_out(int64_t P, int Ca, int off, int Ctot, const float* y, float* a);

void concat_relu_backward(int64_t P, int Ca, int Cb, const float* y, const float* dy, float* da,
                          float* db);

void add_inplace(int64_t n, ConstAct x, Act y);
void strided_add(int64_t P, int n, ConstAct x, int ldx, Act y, int ldy);
void copy(int64_t n, ConstAct x, Act y);

void dropout_forward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                     const int64_t* samples, ConstAct x, Act y);
void dropout_backward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                      const int64_t* samples, const float* dy, float* dx);

}  // namespace cuda

}  // namespace ft
