/// @brief CPU SGD update fused over the whole parameter arena.
#include "firetrain/ops/sgd.hpp"

namespace ft::cpu {

void sgd_update(size_t n, float lr, float momentum, float weight_decay, bool first_step, float* w,
                const float* grad, float* buf) {
  if (momentum == 0.f) {
#pragma omp parallel for simd
    for (size_t i = 0; i < n; ++i) w[i] -= lr * (grad[i] + weight_decay * w[i]);
    return;
  }
  if (first_step) {
#pragma omp parallel for simd
    for (size_t i = 0; i < n; ++i) {
      float g = grad[i] + weight_decay * w[i];
      buf[i] = g;
      w[i] -= lr * g;
    }
    return;
  }
#pragma omp parallel for simd
  for (size_t i = 0; i < n; ++i) {
    float g = grad[i] + weight_decay * w[i];
    buf[i] = momentum * buf[i] + g;
    w[i] -= lr * buf[i];
  }
}

}  // namespace ft::cpu
