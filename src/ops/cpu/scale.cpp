/// @brief CPU in-place scaling x *= a (the gradient arena's unscale).
#include "firetrain/ops/scale.hpp"

namespace ft::cpu {

void scale_inplace(int64_t n, float a, float* x) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

}  // namespace ft::cpu
