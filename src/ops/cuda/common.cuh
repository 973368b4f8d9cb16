/// @brief Internal header of the CUDA backend: the check macros for CUDA, cuDNN, cuBLAS and
/// NCCL calls, the process's compute stream and its cuDNN and cuBLAS handles, and launch
/// helpers.
///
/// Every CUDA/cuDNN/cuBLAS/NCCL call goes through FT_CUDA / FT_CUDNN / FT_CUBLAS / FT_NCCL,
/// which throw ft::Error
/// with the statement, file:line, MPI rank and host (ft::detail::throw_call_failed), like
/// FT_MPI and FT_H5. Kernel launches are followed by FT_CUDA_LAUNCH().
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <nccl.h>

#include <cstdint>

#include "firetrain/core/device.hpp"
#include "firetrain/core/error.hpp"

#define FT_CUDA(stmt)                                                                        \
  do {                                                                                       \
    cudaError_t ft_e_ = (stmt);                                                              \
    if (ft_e_ != cudaSuccess)                                                                \
      ::ft::detail::throw_call_failed("CUDA", #stmt, cudaGetErrorString(ft_e_), __FILE__,    \
                                      __LINE__);                                             \
  } while (0)

#define FT_CUDNN(stmt)                                                                       \
  do {                                                                                       \
    cudnnStatus_t ft_s_ = (stmt);                                                            \
    if (ft_s_ != CUDNN_STATUS_SUCCESS)                                                       \
      ::ft::detail::throw_call_failed("cuDNN", #stmt, cudnnGetErrorString(ft_s_), __FILE__,  \
                                      __LINE__);                                             \
  } while (0)

#define FT_CUBLAS(stmt)                                                                      \
  do {                                                                                       \
    cublasStatus_t ft_b_ = (stmt);                                                           \
    if (ft_b_ != CUBLAS_STATUS_SUCCESS)                                                      \
      ::ft::detail::throw_call_failed("cuBLAS", #stmt, cublasGetStatusString(ft_b_),         \
                                      __FILE__, __LINE__);                                   \
  } while (0)

#define FT_NCCL(stmt)                                                                        \
  do {                                                                                       \
    ncclResult_t ft_r_ = (stmt);                                                             \
    if (ft_r_ != ncclSuccess)                                                                \
      ::ft::detail::throw_call_failed("NCCL", #stmt, ncclGetErrorString(ft_r_), __FILE__,    \
                                      __LINE__);                                             \
  } while (0)

/// After a <<<...>>> launch: reports launch-configuration errors at the launch site.
#define FT_CUDA_LAUNCH() FT_CUDA(cudaGetLastError())

namespace ft::cuda {

/// The compute stream of the selected GPU (set_device must have run).
cudaStream_t stream();
/// The cuDNN handle bound to stream().
cudnnHandle_t cudnn();
/// The cuBLAS handle bound to stream(), in CUBLAS_DEFAULT_MATH: fp32 GEMMs (CUBLAS_COMPUTE_32F)
/// run in true fp32, never TF32, so CPU parity holds; 16-bit inputs use tensor cores.
cublasHandle_t blas();
/// A device workspace of at least `bytes`, shared by all cuDNN calls of this process (they
/// are serialized on one stream). Grows, never shrinks; the pointer may change on growth.
void* workspace(size_t bytes);

/// A grid-stride loop's first index and step over x, in the index type I (int64_t, or int
/// where the tensors fit: fits_int32 / with_index in kernel_math.cuh).
template <class I = int64_t>
__device__ __forceinline__ I thread_index() {
  return I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x);
}
template <class I = int64_t>
__device__ __forceinline__ I grid_stride() {
  return I(gridDim.x) * I(blockDim.x);
}

/// Grid size for n elements at `threads` per block, capped (grid-stride loops cover the rest).
inline unsigned grid_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535LL * 16) b = 65535LL * 16;
  return static_cast<unsigned>(b);
}

}  // namespace ft::cuda
