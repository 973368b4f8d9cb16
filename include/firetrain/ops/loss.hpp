/// @brief Softmax cross-entropy over a (local slice of a) global batch.
#pragma once

#include <cstdint>

namespace ft {

struct LossStats {
  double loss_sum = 0;   // sum over the local samples of -log softmax(logit)[label]
  int64_t correct1 = 0;  // top-1 hits (ties go to the lower class index, as torch.argmax)
  int64_t correct5 = 0;  // top-5 hits
};

/// logits (n, K), labels (n). dlogits (n, K) = (softmax - onehot) / denom, where denom is
/// the GLOBAL batch size, so that summing gradients across ranks gives the gradient of the
/// mean loss over the global batch. dlogits may be null (evaluation).
/// The CUDA version takes device pointers and blocks until the statistics are on the host.
namespace cpu {
LossStats softmax_xent(int n, int K, const float* logits, const int32_t* labels, double denom,
                       float* dlogits);
}
namespace cuda {
LossStats softmax_xent(int n, int K, const float* logits, const int32_t* labels, double denom,
                       float* dlogits);
}

}  // namespace ft
