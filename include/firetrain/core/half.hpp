/// @brief fp32 <-> bf16 / fp16 bit conversions (cvt::), the same functions on host and device:
/// used by the 16-bit gradient all-reduce (comm/communicator.hpp, the NCCL reducer's kernels)
/// and by bf16 activation storage (ops/act.hpp).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FT_HD __host__ __device__
#else
#define FT_HD
#endif

namespace ft {

/// 16-bit conversions shared by the MPI reducer (CPU), its user MPI_Op and the NCCL reducer's
/// kernels (same functions on host and device, so the CPU unit tests check the math the GPU
/// runs). Branch-free bit manipulation: the loops over them vectorize. Round to nearest, ties
/// to even; NaN stays NaN (quiet), +-Inf stays +-Inf; fp16 overflow gives +-Inf, fp16
/// subnormals are produced and read exactly.
namespace cvt {
FT_HD inline uint32_t bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
FT_HD inline float from_bits(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
FT_HD inline uint16_t fp32_to_bf16(float f) {
  const uint32_t u = bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}
FT_HD inline float bf16_to_fp32(uint16_t h) { return from_bits(uint32_t(h) << 16); }
/// fp32 -> IEEE binary16 with the rounding done by the FPU: |f| scaled so that the bits
/// below fp16's last place fall off in one fp32 addition (the method of Maratyszcza's FP16
/// library), then the exponent and mantissa are picked from the sum.
FT_HD inline uint16_t fp32_to_fp16(float f) {
  const uint32_t w = bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  // 2^112 then 2^-110: values that overflow fp16 become Inf here (in fp32), others are exact.
  float base = (from_bits(w & 0x7fffffffu) * 0x1.0p+112f) * 0x1.0p-110f;
  uint32_t bias = shl1_w & 0xff000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t b = bits(base);
  const uint32_t nonsign = ((b >> 13) & 0x00007c00u) + (b & 0x00000fffu);
  return uint16_t((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
}
FT_HD inline float fp16_to_fp32(uint16_t h) {
  const uint32_t w = uint32_t(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = from_bits((two_w >> 4) + (0xe0u << 23)) * 0x1.0p-112f;
  const float denormalized = from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  return from_bits(sign | (two_w < (1u << 27) ? bits(denormalized) : bits(normalized)));
}
}  // namespace cvt

}  // namespace ft
