/// @brief CPU element-wise ops: ReLU, channel concat/split copies, dropout.
#include "firetrain/ops/elementwise.hpp"

#include <cstring>

namespace ft::cpu {

void relu_forward(int64_t n, const float* x, float* y) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) y[i] = relu_fwd(x[i]);
}

void relu_backward(int64_t n, const float* y, const float* dy, float* dx) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) dx[i] = relu_bwd(y[i], dy[i]);
}

// Inline vector loops: the rows are short (16..256 floats), where a memcpy call per pixel costs
// more than the copy.
void channel_copy_in(int64_t P, int Ca, int off, int Ctot, const float* a, float* y) {
#pragma omp parallel for
  for (int64_t p = 0; p < P; ++p) {
    float* yp = y + p * Ctot + off;
    const float* ap = a + p * Ca;
#pragma omp simd
    for (int c = 0; c < Ca; ++c) yp[c] = ap[c];
  }
}

void channel_copy_out(int64_t P, int Ca, int off, int Ctot, const float* y, float* a) {
#pragma omp parallel for
  for (int64_t p = 0; p < P; ++p) {
    const float* yp = y + p * Ctot + off;
    float* ap = a + p * Ca;
#pragma omp simd
    for (int c = 0; c < Ca; ++c) ap[c] = yp[c];
  }
}

void concat_relu_backward(int64_t P, int Ca, int Cb, const float* y, const float* dy, float* da,
                          float* db) {
  const int C = Ca + Cb;
#pragma omp parallel for
  for (int64_t p = 0; p < P; ++p) {
    const float* yp = y + p * C;
    const float* dyp = dy + p * C;
    float* dap = da + p * Ca;
    float* dbp = db + p * Cb;
#pragma omp simd
    for (int c = 0; c < Ca; ++c) dap[c] = relu_bwd(yp[c], dyp[c]);
#pragma omp simd
    for (int c = 0; c < Cb; ++c) dbp[c] = relu_bwd(yp[Ca + c], dyp[Ca + c]);
  }
}

void add_inplace(int64_t n, const float* x, float* y) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void strided_add(int64_t P, int n, const float* x, int ldx, float* y, int ldy) {
#pragma omp parallel for
  for (int64_t p = 0; p < P; ++p) {
    const float* xp = x + p * ldx;
    float* yp = y + p * ldy;
#pragma omp simd
    for (int c = 0; c < n; ++c) yp[c] += xp[c];
  }
}

void copy(int64_t n, const float* x, float* y) { std::memcpy(y, x, size_t(n) * sizeof(float)); }

// Shared by forward and backward: out = in * keep / (1 - p).
static void dropout_apply(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                          const int64_t* samples, const float* in, float* out) {
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  const int64_t per = int64_t(H) * W * C;
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    const uint64_t s = uint64_t(samples[n]);
    for (int h = 0; h < H; ++h)
      for (int w = 0; w < W; ++w)
        for (int c = 0; c < C; ++c) {
          const int64_t i = n * per + (int64_t(h) * W + w) * C + c;
          const uint64_t elem = (uint64_t(c + c_off) * H + h) * W + w;  // NCHW-logical
          out[i] = dropout_keep(seed, step, s, elem, p) ? in[i] * scale : 0.f;
        }
  }
}

void dropout_forward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                     const int64_t* samples, const float* x, float* y) {
  dropout_apply(N, H, W, C, c_off, p, seed, step, samples, x, y);
}

void dropout_backward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                      const int64_t* samples, const float* dy, float* dx) {
  dropout_apply(N, H, W, C, c_off, p, seed, step, samples, dy, dx);
}

}  // namespace ft::cpu
