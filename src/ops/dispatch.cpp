/// @brief The op tables (see ops.hpp): CPU always, CUDA when the backend is built.
#include "firetrain/core/error.hpp"
#include "firetrain/ops/ops.hpp"

namespace ft {

#define FT_OPS_TABLE(ns)                                                                    \
  Ops {                                                                                     \
    Device::CPU, ns::relu_forward, ns::relu_backward, ns::channel_copy_in,                  \
        ns::channel_copy_out, ns::concat_relu_backward, ns::add_inplace, ns::strided_add,   \
        ns::copy, ns::dropout_forward, ns::dropout_backward, ns::global_avgpool_forward,    \
        ns::global_avgpool_backward, ns::softmax_xent, ns::sgd_update, ns::scale_inplace,   \
        ns::make_conv2d, ns::make_maxpool2d, ns::linear_forward, ns::linear_backward,       \
        ns::nhwc_to_nchw, ns::nchw_to_nhwc                                                  \
  }

const Ops& ops_for(Device d) {
  static const Ops cpu_ops = FT_OPS_TABLE(cpu);
  if (d == Device::CPU) return cpu_ops;
#ifdef FT_HAVE_CUDA
  static const Ops cuda_ops = [] {
    Ops o = FT_OPS_TABLE(cuda);
    o.device = Device::CUDA;
    return o;
  }();
  return cuda_ops;
#else
  throw InputError("--device cuda: this firetrain was built without the CUDA backend "
                   "(no CUDA toolkit found at configure time); rebuild on a machine with "
                   "/usr/local/cuda, or use --device cpu");
#endif
}

Conv2d::Conv2d(ConvShape s, Device d) : s_(s) {
  FT_REQUIRE(s.C > 0 && s.C2 >= 0 && s.O > 0 && s.H > 0 && s.W > 0 && s.k > 0 && s.stride > 0,
             "bad convolution shape");
  FT_REQUIRE(s.OH() > 0 && s.OW() > 0, "convolution output would be empty");
  FT_REQUIRE(!(s.bf16 && s.fp16), "a convolution is bf16 or fp16, not both");
  if (s.fp16 && d != Device::CUDA)
    throw InputError("--precision fp16 is implemented on CUDA only (the CPU backend has no "
                     "fp16 kernels); use --precision bf16 or fp32 on the CPU");
  impl_ = ops_for(d).make_conv2d(s);
}
Conv2d::~Conv2d() = default;
Conv2d::Conv2d(Conv2d&&) noexcept = default;
void Conv2d::forward(int N, ConstAct x, const float* w, const float* b, Act y) {
  impl_->forward(N, x, w, b, y);
}
void Conv2d::backward(int N, ConstAct x, const float* w, ConstAct y, float* dy, float* dx,
                      float* dw, float* db) {
  impl_->backward(N, x, w, y, dy, dx, dw, db);
}

MaxPool2d::MaxPool2d(PoolShape s, Device d) : s_(s) {
  FT_REQUIRE(s.C > 0 && s.H >= s.k - 2 * s.pad && s.W >= s.k - 2 * s.pad,
             "max pool input smaller than its window");
  impl_ = ops_for(d).make_maxpool2d(s);
}
MaxPool2d::~MaxPool2d() = default;
MaxPool2d::MaxPool2d(MaxPool2d&&) noexcept = default;
void MaxPool2d::forward(int N, ConstAct x, Act y) { impl_->forward(N, x, y); }
void MaxPool2d::backward(int N, ConstAct x, ConstAct y, const float* dy, float* dx) {
  impl_->backward(N, x, y, dy, dx);
}

}  // namespace ft
