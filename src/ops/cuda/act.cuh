/// @brief Internal header of the CUDA backend: reading and writing activations of any dtype
/// (fp32, bf16, fp16; include/firetrain/ops/act.hpp) in kernels, and the host-side dispatch
/// from a ConstAct / Act's runtime dtype to a kernel template's element type.
///
/// Kernels are templated on the storage type T (float, Bf16 or Half), load elements as fp32,
/// compute in fp32 and store with one round to nearest even. The conversions are the cvt::
/// functions of core/half.hpp, the very functions the CPU's bf16 path and the 16-bit
/// all-reduce use (CPU unit tests cover them), so a bf16 element-wise result on the GPU is the
/// CPU's bit for bit.
#pragma once

#include <cstdint>

#include "firetrain/core/half.hpp"
#include "firetrain/ops/act.hpp"

#ifdef __CUDACC__
#define FT_HD_INLINE __host__ __device__ __forceinline__
#else
#define FT_HD_INLINE inline  // (host-only tests include this header with a C++ compiler)
#endif

namespace ft::cuda {

FT_HD_INLINE float load(const float* p, int64_t i) { return p[i]; }
FT_HD_INLINE float load(const Bf16* p, int64_t i) {
  return cvt::bf16_to_fp32(p[i].bits);
}
FT_HD_INLINE float load(const Half* p, int64_t i) {
  return cvt::fp16_to_fp32(p[i].bits);
}
FT_HD_INLINE void store(float* p, int64_t i, float v) { p[i] = v; }
FT_HD_INLINE void store(Bf16* p, int64_t i, float v) {
  p[i] = Bf16{cvt::fp32_to_bf16(v)};
}
FT_HD_INLINE void store(Half* p, int64_t i, float v) {
  p[i] = Half{cvt::fp32_to_fp16(v)};
}

/// Calls f(T{}) with T the element type of dtype t (float, Bf16 or Half): the one place a
/// runtime dtype becomes a template argument.
template <class F>
void with_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::BF16: f(Bf16{}); return;
    case DType::F16: f(Half{}); return;
  }
}

/// The typed pointer of a view whose dtype was dispatched with with_dtype.
template <class T>
const T* typed(ConstAct a) {
  return static_cast<const T*>(a.raw());
}
template <class T>
T* typed(Act a) {
  return static_cast<T*>(a.raw());
}

}  // namespace ft::cuda
