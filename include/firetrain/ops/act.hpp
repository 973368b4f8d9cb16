/// @brief Activations of either dtype: fp32, or bf16 (--precision bf16 on the CPU stores layer
/// outputs as bf16 to halve their memory). ConstAct / Act are pointer-sized tagged views that
/// the layers and the activation ops pass around instead of float*; their checked accessors
/// (f32(), bf16()) throw when the dtype is not the one asked for, so an fp32-only op (CUDA, the
/// linear layer) cannot silently read bf16 bits as floats. Gradients stay float*.
///
/// Both views convert implicitly from a typed pointer (float* or Bf16*), so fp32 callers pass
/// plain float pointers as before; arithmetic (`v + n`) moves by n ELEMENTS of the view's dtype.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "firetrain/core/device.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/core/half.hpp"

namespace ft {

enum class DType : uint8_t { F32, BF16 };
inline size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : 4; }

/// One bfloat16 value: the upper 16 bits of an fp32 (oneDNN's dnnl::memory::data_type::bf16).
/// A distinct type, so a Bf16* is never mistaken for a float* or another 16-bit format.
struct Bf16 {
  uint16_t bits;
};
static_assert(sizeof(Bf16) == 2, "Bf16 must be 2 bytes (oneDNN's bf16)");

/// fp32 -> bf16, round to nearest, ties to even (as oneDNN's reorders and AVX512-BF16's
/// vcvtneps2bf16, which also flushes fp32 denormal inputs to zero; this keeps them); NaN stays
/// a quiet NaN. Written branch-free so that loops over it can vectorize. Host code only (bf16
/// activations are CPU-only).
inline Bf16 to_bf16(float f) { return Bf16{cvt::fp32_to_bf16(f)}; }
/// bf16 -> fp32 (exact).
inline float to_f32(Bf16 h) { return cvt::bf16_to_fp32(h.bits); }

/// A read-only activation pointer and its dtype (null: no tensor, e.g. "y not given").
class ConstAct {
 public:
  ConstAct() = default;
  ConstAct(std::nullptr_t) {}
  ConstAct(const float* p) : p_(p), dt_(DType::F32) {}
  ConstAct(const Bf16* p) : p_(p), dt_(DType::BF16) {}
  DType dtype() const { return dt_; }
  bool is_bf16() const { return dt_ == DType::BF16; }
  explicit operator bool() const { return p_ != nullptr; }
  const void* raw() const { return p_; }
  const float* f32() const {
    FT_REQUIRE(dt_ == DType::F32, "an fp32 tensor was expected, got bf16");
    return static_cast<const float*>(p_);
  }
  const Bf16* bf16() const {
    FT_REQUIRE(dt_ == DType::BF16, "a bf16 tensor was expected, got fp32");
    return static_cast<const Bf16*>(p_);
  }
  /// n elements further (null stays null).
  ConstAct operator+(int64_t n) const {
    if (!p_) return *this;
    ConstAct r = *this;
    r.p_ = static_cast<const char*>(p_) + n * int64_t(dtype_size(dt_));
    return r;
  }

 private:
  const void* p_ = nullptr;
  DType dt_ = DType::F32;
};

/// A writable activation pointer and its dtype.
class Act {
 public:
  Act() = default;
  Act(std::nullptr_t) {}
  Act(float* p) : p_(p), dt_(DType::F32) {}
  Act(Bf16* p) : p_(p), dt_(DType::BF16) {}
  DType dtype() const { return dt_; }
  bool is_bf16() const { return dt_ == DType::BF16; }
  explicit operator bool() const { return p_ != nullptr; }
  void* raw() const { return p_; }
  float* f32() const {
    FT_REQUIRE(dt_ == DType::F32, "an fp32 tensor was expected, got bf16");
    return static_cast<float*>(p_);
  }
  Bf16* bf16() const {
    FT_REQUIRE(dt_ == DType::BF16, "a bf16 tensor was expected, got fp32");
    return static_cast<Bf16*>(p_);
  }
  Act operator+(int64_t n) const {
    if (!p_) return *this;
    Act r = *this;
    r.p_ = static_cast<char*>(p_) + n * int64_t(dtype_size(dt_));
    return r;
  }
  operator ConstAct() const {
    if (!p_) return ConstAct();
    return dt_ == DType::BF16 ? ConstAct(static_cast<const Bf16*>(p_))
                              : ConstAct(static_cast<const float*>(p_));
  }

 private:
  void* p_ = nullptr;
  DType dt_ = DType::F32;
};

/// An owning activation buffer of one dtype on a device (zeroed on resize, like Array).
class ActBuffer {
 public:
  explicit ActBuffer(Device d = Device::CPU, DType t = DType::F32) : dt_(t), f_(d), h_(d) {}
  DType dtype() const { return dt_; }
  /// Elements (of the buffer's dtype).
  size_t size() const { return dt_ == DType::BF16 ? h_.size() : f_.size(); }
  size_t bytes() const { return size() * dtype_size(dt_); }
  /// Reallocates when n differs; the contents are zero afterwards.
  void resize(size_t n) {
    if (dt_ == DType::BF16)
      h_.resize(n);
    else
      f_.resize(n);
  }
  Act view() { return dt_ == DType::BF16 ? Act(h_.data()) : Act(f_.data()); }
  ConstAct view() const {
    return dt_ == DType::BF16 ? ConstAct(h_.data()) : ConstAct(f_.data());
  }

 private:
  DType dt_;
  Array<float> f_;  // (only the one of dt_ is ever allocated)
  Array<Bf16> h_;
};

}  // namespace ft
