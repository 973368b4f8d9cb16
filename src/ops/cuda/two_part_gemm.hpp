/// @brief The GEMMs of a two-part 1×1 convolution (src/ops/cuda/conv2d.cu, CudaConvTwoPartGemm),
/// in plain C++ so that the CPU tests check them in every build: tests/test_cuda_kernel_math.cpp
/// runs these exact calls through a reference column-major GEMM and compares with the CPU's
/// convolution (the GPU tests then check the cuBLAS calls themselves).
///
/// A 1×1, stride-1, unpadded convolution over NHWC tensors is a matrix product over the
/// P = N·H·W pixels: y (P, O) = x (P, Ct) · wᵀ, with w the OIHW weights seen as (O, Ct). A
/// two-part input (x1 (P, C) then x2 (P, C2), back to back: a Fire module's planar output)
/// splits the product over the input channels, y = x1·w1ᵀ + x2·w2ᵀ, where w1 = w[:, 0:C] and
/// w2 = w[:, C:Ct] are column blocks of the row-major w: matrices with leading dimension Ct,
/// which BLAS reads where they are. So each pass is two GEMMs on the tensors as they lie, and
/// the Fire concat is never copied (the issue's "Fire concat by writing straight into channel
/// slices"; PyTorch's torch.cat copies it):
///   forward:          y = x1·w1ᵀ  (β = 0),  then  y += x2·w2ᵀ  (β = 1)
///   backward data:    dx1 = dy·w1,  dx2 = dy·w2          (dx's two parts, written in place)
///   backward filter:  dw[:, 0:C] = dyᵀ·x1,  dw[:, C:Ct] = dyᵀ·x2   (column blocks, ld Ct)
/// cuBLAS is column-major: a row-major (R, K) matrix with row stride ld is the column-major
/// (K, R) matrix with leading dimension ld, so every product above is computed transposed
/// (for example yᵀ (O×P) = w1 (O×C) · x1ᵀ (C×P)), as in src/ops/cuda/linear.cu.
#pragma once

#include <array>
#include <cstdint>

namespace ft::cuda::two_part {

/// The tensors of a pass. Element offsets and leading dimensions below are in elements.
enum class Operand { X, W, Y, DY, DX, DW };

/// A column-major matrix inside an operand: its first element at `offset`, columns `ld`
/// elements apart.
struct Mat {
  Operand of;
  int64_t offset;
  int ld;
};

/// C = op(A)·op(B) + beta·C, with op(A) m×k, op(B) k×n, C m×n (cublasGemmEx's arguments).
struct Gemm {
  bool trans_a, trans_b;
  int m, n, k;
  Mat a, b, c;
  float beta;
};

/// The plan of both parts: make(off, Cj, j) builds part j's GEMM, part j being the input
/// channels [off, off + Cj) (part 0: [0, C), part 1: [C, C + C2)).
template <class Make>
std::array<Gemm, 2> per_part(int C, int C2, Make make) {
  return {make(0, C, 0), make(C, C2, 1)};
}

/// y (P, O) = Σ_j xj · wjᵀ: column-major yᵀ (O×P, ld O) = wj (O×Cj: the Cj×O block of w's
/// column-major (Ct×O, ld Ct) view, transposed) · xjᵀ (Cj×P, ld Cj). Part 0 overwrites y,
/// part 1 accumulates into it.
inline std::array<Gemm, 2> forward(int P, int C, int C2, int O) {
  return per_part(C, C2, [&](int off, int Cj, int j) {
    return Gemm{true, false, O, P, Cj, {Operand::W, off, C + C2},
                {Operand::X, int64_t(P) * off, Cj}, {Operand::Y, 0, O}, j == 0 ? 0.f : 1.f};
  });
}

/// dxj (P, Cj) = dy (P, O) · wj (O, Cj): column-major dxjᵀ (Cj×P, ld Cj) = wjᵀ (Cj×O, ld Ct)
/// · dyᵀ (O×P, ld O). Each part of dx is overwritten.
inline std::array<Gemm, 2> backward_data(int P, int C, int C2, int O) {
  return per_part(C, C2, [&](int off, int Cj, int) {
    return Gemm{false, false, Cj, P, O, {Operand::W, off, C + C2}, {Operand::DY, 0, O},
                {Operand::DX, int64_t(P) * off, Cj}, 0.f};
  });
}

/// dw[:, part j] (O, Cj) = dyᵀ (O×P) · xj (P, Cj): column-major dwjᵀ (Cj×O, ld Ct) =
/// xjᵀ (Cj×P, ld Cj) · dy (P×O: dyᵀ's column-major (O×P, ld O) view, transposed). Each column
/// block of dw is overwritten.
inline std::array<Gemm, 2> backward_filter(int P, int C, int C2, int O) {
  return per_part(C, C2, [&](int off, int Cj, int) {
    return Gemm{false, true, Cj, O, P, {Operand::X, int64_t(P) * off, Cj}, {Operand::DY, 0, O},
                {Operand::DW, off, C + C2}, 0.f};
  });
}

}  // namespace ft::cuda::two_part
