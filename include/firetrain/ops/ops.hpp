/// @brief The op table of a device: the one place where firetrain dispatches on device.
///
/// Each op has a CPU implementation (ft::cpu::, src/ops/cpu/*.cpp) and a CUDA one (ft::cuda::,
/// src/ops/cuda/*.cu) with the same names and contracts. Layers and the trainer hold a
/// `const Ops&` from ops_for(device) and call through it; Conv2d and MaxPool2d pick their
/// implementation from it in their constructors.
#pragma once

#include "firetrain/core/device.hpp"
#include "firetrain/ops/conv2d.hpp"
#include "firetrain/ops/elementwise.hpp"
#include "firetrain/ops/linear.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/pool.hpp"
#include "firetrain/ops/scale.hpp"
#include "firetrain/ops/sgd.hpp"

namespace ft {

struct Ops {
  Device device;
  decltype(&cpu::relu_forward) relu_forward;
  decltype(&cpu::relu_backward) relu_backward;
  decltype(&cpu::channel_copy_in) channel_copy_in;
  decltype(&cpu::channel_copy_out) channel_copy_out;
  decltype(&cpu::concat_relu_backward) concat_relu_backward;
  decltype(&cpu::add_inplace) add_inplace;
  decltype(&cpu::strided_add) strided_add;
  decltype(&cpu::copy) copy;
  decltype(&cpu::dropout_forward) dropout_forward;
  decltype(&cpu::dropout_backward) dropout_backward;
  decltype(&cpu::global_avgpool_forward) global_avgpool_forward;
  decltype(&cpu::global_avgpool_backward) global_avgpool_backward;
  decltype(&cpu::softmax_xent) softmax_xent;
  decltype(&cpu::sgd_update) sgd_update;
  decltype(&cpu::scale_inplace) scale_inplace;
  decltype(&cpu::make_conv2d) make_conv2d;
  decltype(&cpu::make_maxpool2d) make_maxpool2d;
  decltype(&cpu::linear_forward) linear_forward;
  decltype(&cpu::linear_backward) linear_backward;
  decltype(&cpu::nhwc_to_nchw) nhwc_to_nchw;
  decltype(&cpu::nchw_to_nhwc) nchw_to_nhwc;
};

/// The table of `d`. For Device::CUDA in a CPU-only build: InputError (exit 2).
const Ops& ops_for(Device d);

}  // namespace ft
