/// @brief CPU element-wise ops: ReLU, channel concat/split copies, dropout.
#include "firetrain/ops/elementwise.hpp"

#include <cstring>

#include "act_cpu.hpp"

namespace ft::cpu {

void relu_forward(int64_t n, const float* x, float* y) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) y[i] = relu_fwd(x[i]);
}

void relu_backward(int64_t n, ConstAct y, const float* dy, float* dx) {
  visit(y, [&](auto* yp) {
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; ++i) dx[i] = relu_bwd(ld(yp, i), dy[i]);
  });
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

void add_inplace(int64_t n, ConstAct x, Act y) {
  visit(x, [&](auto* xp) {
    visit(y, [&](auto* yp) {
#pragma omp parallel for simd
      for (int64_t i = 0; i < n; ++i) st(yp, i, ld(yp, i) + ld(xp, i));
    });
  });
}

void strided_add(int64_t P, int n, ConstAct x, int ldx, Act y, int ldy) {
  visit(x, [&](auto* x0) {
    visit(y, [&](auto* y0) {
#pragma omp parallel for
      for (int64_t p = 0; p < P; ++p) {
        const auto* xp = x0 + p * ldx;
        auto* yp = y0 + p * ldy;
#pragma omp simd
        for (int c = 0; c < n; ++c) st(yp, c, ld(yp, c) + ld(xp, c));
      }
    });
  });
}

void copy(int64_t n, ConstAct x, Act y) {
  if (x.dtype() == y.dtype())
    return void(std::memcpy(y.raw(), x.raw(), size_t(n) * dtype_size(x.dtype())));
  visit(x, [&](auto* xp) {
    visit(y, [&](auto* yp) {
#pragma omp parallel for simd
      for (int64_t i = 0; i < n; ++i) st(yp, i, ld(xp, i));
    });
  });
}

// Shared by forward and backward: out = in * keep / (1 - p) (bf16 out: rounded once).
template <class In, class Out>
static void dropout_apply(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                          const int64_t* samples, const In* in, Out* out) {
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
          st(out, i, dropout_keep(seed, step, s, elem, p) ? ld(in, i) * scale : 0.f);
        }
  }
}

void dropout_forward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                     const int64_t* samples, ConstAct x, Act y) {
  visit(x, [&](auto* xp) {
    visit(y, [&](auto* yp) { dropout_apply(N, H, W, C, c_off, p, seed, step, samples, xp, yp); });
  });
}

void dropout_backward(int N, int H, int W, int C, int c_off, float p, uint64_t seed, uint64_t step,
                      const int64_t* samples, const float* dy, float* dx) {
  dropout_apply(N, H, W, C, c_off, p, seed, step, samples, dy, dx);
}

}  // namespace ft::cpu
