/// @brief Internal helpers of the CPU activation ops: element load/store for both dtypes and a
/// dispatch from ConstAct / Act to a typed pointer, so that each kernel is written once as a
/// template and instantiated for fp32 and bf16 (the fp32 instance is the plain float loop).
#pragma once

#include "firetrain/ops/act.hpp"

namespace ft::cpu {

inline float ld(const float* p, int64_t i) { return p[i]; }
inline float ld(const Bf16* p, int64_t i) { return to_f32(p[i]); }
inline void st(float* p, int64_t i, float v) { p[i] = v; }
inline void st(Bf16* p, int64_t i, float v) { p[i] = to_bf16(v); }
/// Stores a value known to be representable in the destination type (e.g. a max of bf16
/// values): no rounding needed, bf16 keeps the upper half of the bits.
inline void st_exact(float* p, int64_t i, float v) { p[i] = v; }
inline void st_exact(Bf16* p, int64_t i, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  p[i] = Bf16{uint16_t(u >> 16)};
}

/// f(const float*) or f(const Bf16*), by x's dtype.
template <class F>
decltype(auto) visit(ConstAct x, F&& f) {
  if (x.is_bf16()) return f(x.bf16());
  return f(x.f32());
}
/// f(float*) or f(Bf16*), by y's dtype.
template <class F>
decltype(auto) visit(Act y, F&& f) {
  if (y.is_bf16()) return f(y.bf16());
  return f(y.f32());
}

}  // namespace ft::cpu
