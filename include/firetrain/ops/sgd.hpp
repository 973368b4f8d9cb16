/// @brief SGD with momentum and weight decay, torch.optim.SGD semantics, fused over the arena.
///
///   g = grad + wd * w;  buf = first ? g : momentum * buf + g;  w -= lr * buf
#pragma once

#include <cstddef>

namespace ft {

namespace cpu {
void sgd_update(size_t n, float lr, float momentum, float weight_decay, bool first_step,
                float* w, const float* grad, float* buf);
}
namespace cuda {
void sgd_update(size_t n, float lr, float momentum, float weight_decay, bool first_step,
                float* w, const float* grad, float* buf);
}

}  // namespace ft
