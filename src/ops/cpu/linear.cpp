/// @brief CPU fully connected layer on oneDNN's sgemm (row-major), and NHWC <-> NCHW.
#include "firetrain/ops/linear.hpp"

#include <dnnl.h>

#include "act_cpu.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/ops/elementwise.hpp"

namespace ft::cpu {

static void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  dnnl_status_t st = dnnl_sgemm(ta, tb, M, N, K, 1.f, A, lda, B, ldb, beta, C, ldc);
  FT_REQUIRE(st == dnnl_success, "dnnl_sgemm failed");
}

void linear_forward(int N, int I, int O, bool relu, const float* x, const float* w,
                    const float* b, float* y) {
#pragma omp parallel for
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) y[int64_t(n) * O + o] = b[o];
  sgemm('N', 'T', N, O, I, x, I, w, I, 1.f, y, O);  // y += x · wᵀ
  if (relu) relu_forward(int64_t(N) * O, y, y);
}

void linear_backward(int N, int I, int O, bool relu, const float* x, const float* w,
                     const float* y, float* dy, float* dx, float* dw, float* db) {
  if (relu && y) relu_backward(int64_t(N) * O, y, dy, dy);
  if (dx) sgemm('N', 'N', N, I, O, dy, O, w, I, 0.f, dx, I);  // dx = dy · w
  sgemm('T', 'N', O, I, N, dy, O, x, I, 0.f, dw, I);           // dw = dyᵀ · x
#pragma omp parallel for
  for (int o = 0; o < O; ++o) {
    float s = 0.f;
    for (int n = 0; n < N; ++n) s += dy[int64_t(n) * O + o];
    db[o] = s;
  }
}

void nhwc_to_nchw(int N, int H, int W, int C, ConstAct x, float* y) {
  const int64_t P = int64_t(H) * W;
  visit(x, [&](auto* x0) {
#pragma omp parallel for
    for (int n = 0; n < N; ++n)
      for (int64_t p = 0; p < P; ++p)
        for (int c = 0; c < C; ++c) y[(int64_t(n) * C + c) * P + p] = ld(x0, (n * P + p) * C + c);
  });
}

void nchw_to_nhwc(int N, int H, int W, int C, const float* x, float* y) {
  const int64_t P = int64_t(H) * W;
#pragma omp parallel for
  for (int n = 0; n < N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) y[(n * P + p) * C + c] = x[(int64_t(n) * C + c) * P + p];
}

}  // namespace ft::cpu
