/// @brief Activations of any of three dtypes: fp32, bf16 (--precision bf16: the CPU and CUDA
/// store layer outputs as bf16 to halve their memory) or fp16 (--precision fp16, CUDA only).
/// ConstAct / Act are pointer-sized tagged views that the layers and the activation ops pass
/// around instead of float*; their checked accessors (f32(), bf16(), f16()) throw when the
/// dtype is not the one asked for, so an fp32-only op (the linear layer) cannot silently read
/// 16-bit values as floats. Gradients stay float*.
///
/// Both views convert implicitly from a typed pointer (float*, Bf16* or Half*), so fp32
/// callers pass plain float pointers as before; arithmetic (`v + n`) moves by n ELEMENTS of the
/// view's dtype.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "firetrain/core/device.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/core/half.hpp"

namespace ft {

enum class DType : uint8_t { F32, BF16, F16 };
inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType t) {
  return t == DType::F32 ? "fp32" : t == DType::BF16 ? "bf16" : "fp16";
}

/// One bfloat16 value: the upper 16 bits of an fp32 (oneDNN's dnnl::memory::data_type::bf16).
/// A distinct type, so a Bf16* is never mistaken for a float* or another 16-bit format.
struct Bf16 {
  uint16_t bits;
};
static_assert(sizeof(Bf16) == 2, "Bf16 must be 2 bytes (oneDNN's bf16)");
/// One IEEE binary16 value (cuDNN's CUDNN_DATA_HALF), as bits.
struct Half {
  uint16_t bits;
};
static_assert(sizeof(Half) == 2, "Half must be 2 bytes");

/// fp32 -> bf16, round to nearest, ties to even (as oneDNN's reorders and AVX512-BF16's
/// vcvtneps2bf16, which also flushes fp32 denormal inputs to zero; this keeps them); NaN stays
/// a quiet NaN. Written branch-free so that loops over it can vectorize. (The CUDA kernels
/// call the same cvt:: functions, src/ops/cuda/act.cuh.)
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
  ConstAct(const Half* p) : p_(p), dt_(DType::F16) {}
  DType dtype() const { return dt_; }
  bool is_bf16() const { return dt_ == DType::BF16; }
  explicit operator bool() const { return p_ != nullptr; }
  const void* raw() const { return p_; }
  const float* f32() const {
    FT_REQUIRE(dt_ == DType::F32, std::string("an fp32 tensor was expected, got ") + dtype_name(dt_));
    return static_cast<const float*>(p_);
  }
  const Bf16* bf16() const {
    FT_REQUIRE(dt_ == DType::BF16, std::string("a bf16 tensor was expected, got ") + dtype_name(dt_));
    return static_cast<const Bf16*>(p_);
  }
  const Half* f16() const {
    FT_REQUIRE(dt_ == DType::F16, std::string("an fp16 tensor was expected, got ") + dtype_name(dt_));
    return static_cast<const Half*>(p_);
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
  Act(Half* p) : p_(p), dt_(DType::F16) {}
  DType dtype() const { return dt_; }
  bool is_bf16() const { return dt_ == DType::BF16; }
  explicit operator bool() const { return p_ != nullptr; }
  void* raw() const { return p_; }
  float* f32() const {
    FT_REQUIRE(dt_ == DType::F32, std::string("an fp32 tensor was expected, got ") + dtype_name(dt_));
    return static_cast<float*>(p_);
  }
  Bf16* bf16() const {
    FT_REQUIRE(dt_ == DType::BF16, std::string("a bf16 tensor was expected, got ") + dtype_name(dt_));
    return static_cast<Bf16*>(p_);
  }
  Half* f16() const {
    FT_REQUIRE(dt_ == DType::F16, std::string("an fp16 tensor was expected, got ") + dtype_name(dt_));
    return static_cast<Half*>(p_);
  }
  Act operator+(int64_t n) const {
    if (!p_) return *this;
    Act r = *this;
    r.p_ = static_cast<char*>(p_) + n * int64_t(dtype_size(dt_));
    return r;
  }
  operator ConstAct() const {
    if (!p_) return ConstAct();
    if (dt_ == DType::BF16) return ConstAct(static_cast<const Bf16*>(p_));
    if (dt_ == DType::F16) return ConstAct(static_cast<const Half*>(p_));
    return ConstAct(static_cast<const float*>(p_));
  }

 private:
  void* p_ = nullptr;
  DType dt_ = DType::F32;
};

/// An owning activation buffer of one dtype on a device (zeroed on resize, like Array).
class ActBuffer {
 public:
  explicit ActBuffer(Device d = Device::CPU, DType t = DType::F32)
      : dt_(t), f_(d), h_(d), e_(d) {}
  DType dtype() const { return dt_; }
  /// Elements (of the buffer's dtype).
  size_t size() const {
    return dt_ == DType::BF16 ? h_.size() : dt_ == DType::F16 ? e_.size() : f_.size();
  }
  size_t bytes() const { return size() * dtype_size(dt_); }
  /// Reallocates when n differs; the contents are zero afterwards.
  void resize(size_t n) {
    if (dt_ == DType::BF16)
      h_.resize(n);
    else if (dt_ == DType::F16)
      e_.resize(n);
    else
      f_.resize(n);
  }
  Act view() {
    return dt_ == DType::BF16 ? Act(h_.data()) : dt_ == DType::F16 ? Act(e_.data()) : Act(f_.data());
  }
  ConstAct view() const {
    return dt_ == DType::BF16  ? ConstAct(h_.data())
           : dt_ == DType::F16 ? ConstAct(e_.data())
                               : ConstAct(f_.data());
  }

 private:
  DType dt_;
  Array<float> f_;  // (only the one of dt_ is ever allocated)
  Array<Bf16> h_;
  Array<Half> e_;
};

}  // namespace ft
