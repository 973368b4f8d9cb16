/// @brief CPU softmax cross-entropy with top-1/top-5 counts.
#include "firetrain/ops/loss.hpp"

#include <cmath>
#include <vector>

namespace ft::cpu {

LossStats softmax_xent(int n, int K, const float* logits, const int32_t* labels, double denom,
                       float* dlogits) {
  LossStats st;
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * K;
    const int y = labels[i];
    float zmax = z[0];
    for (int k = 1; k < K; ++k) zmax = std::max(zmax, z[k]);
    double sum = 0;
    for (int k = 0; k < K; ++k) sum += std::exp(double(z[k] - zmax));
    const double lse = std::log(sum) + zmax;
    st.loss_sum += lse - z[y];
    // Rank of the label as torch.argmax/topk order it: higher scores first, ties broken
    // towards the lower class index (so all-equal logits are not "correct" for every class).
    int above = 0;
    for (int k = 0; k < K; ++k) above += z[k] > z[y] || (z[k] == z[y] && k < y);
    st.correct1 += above == 0;
    st.correct5 += above < 5;
    if (dlogits) {
      float* d = dlogits + int64_t(i) * K;
      for (int k = 0; k < K; ++k)
        d[k] = float((std::exp(double(z[k]) - lse) - (k == y ? 1.0 : 0.0)) / denom);
    }
  }
  return st;
}

}  // namespace ft::cpu
