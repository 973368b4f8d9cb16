/// @brief The CUDA kernels' per-element bodies (src/ops/cuda/kernel_math.cuh: max pooling
/// forward and its gather-form backward, dropout, the OIHW <-> OHWI weight reorders, the
/// bias-gradient pass's per-thread loop; and the
/// 16-bit loads/stores of act.cuh) run on the CPU against the cpu:: ops, EXACTLY, in every
/// build: the GPU kernels apply these functions once per output element, so their index math
/// and first-maximum rule are checked here even where no GPU exists (the CudaOps tests then
/// check the launches on a GPU). Also the GEMM plan of the zero-copy two-part 1×1 convolution
/// (src/ops/cuda/two_part_gemm.hpp), run through a reference column-major GEMM against the CPU
/// convolution.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "firetrain/core/half.hpp"
#include "firetrain/ops/conv2d.hpp"
#include "firetrain/ops/elementwise.hpp"
#include "firetrain/ops/pool.hpp"
#include "ops/cuda/kernel_math.cuh"
#include "ops/cuda/two_part_gemm.hpp"

namespace ft {
namespace {

using fvec = std::vector<float>;

template <class T>
T from_f32(float v);
template <>
float from_f32<float>(float v) { return v; }
template <>
Bf16 from_f32<Bf16>(float v) { return Bf16{cvt::fp32_to_bf16(v)}; }
template <>
Half from_f32<Half>(float v) { return Half{cvt::fp32_to_fp16(v)}; }

/// v stored as T (rounded), and the widened values the CPU reference sees.
template <class T>
std::vector<T> as(const fvec& v, fvec* widened) {
  std::vector<T> out(v.size());
  widened->resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out[i] = from_f32<T>(v[i]);
    (*widened)[i] = cuda::load(out.data(), int64_t(i));
  }
  return out;
}

/// Values with many ties (multiples of 1/4 in [-2, 2]) so that windows have several maxima.
fvec tied(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(-8, 8);
  fvec v(n);
  for (auto& x : v) x = float(d(g)) / 4.f;
  return v;
}

template <class T>
void maxpool_case(PoolShape s, int N, uint32_t seed) {
  SCOPED_TRACE("C=" + std::to_string(s.C) + " " + std::to_string(s.H) + "x" + std::to_string(s.W) +
               " k=" + std::to_string(s.k) + " s=" + std::to_string(s.stride) +
               " p=" + std::to_string(s.pad) + (s.ceil_mode ? " ceil" : " floor") +
               " bytes=" + std::to_string(sizeof(T)));
  const size_t nx = size_t(N) * s.H * s.W * s.C, ny = size_t(N) * s.OH() * s.OW() * s.C;
  fvec xw;
  const std::vector<T> x = as<T>(tied(nx, seed), &xw);
  const fvec dy = test::random_floats(ny, seed + 1);
  MaxPool2d cpu(s, Device::CPU);
  fvec y_ref(ny), dx_ref(nx);
  cpu.forward(N, xw.data(), y_ref.data());
  cpu.backward(N, xw.data(), y_ref.data(), dy.data(), dx_ref.data());

  const cuda::PoolDims d{N, s.H, s.W, s.C, s.OH(), s.OW(), s.k, s.stride, s.pad};
  // Both index types the kernels instantiate (int below 2^30 elements, int64_t above).
  std::vector<T> y(ny);
  size_t bad = 0;
  for (size_t i = 0; i < ny; ++i) {
    cuda::store(y.data(), int64_t(i), cuda::maxpool_forward_at(d, x.data(), int64_t(i)));
    bad += !(cuda::load(y.data(), int64_t(i)) == y_ref[i]);
    bad += !(cuda::maxpool_forward_at(d, x.data(), int(i)) == y_ref[i]);
  }
  EXPECT_EQ(bad, 0u) << "forward";
  bad = 0;
  size_t first = 0;
  for (size_t i = 0; i < nx; ++i) {
    const float g = cuda::maxpool_backward_at(d, x.data(), y.data(), dy.data(), int64_t(i));
    const float g32 = cuda::maxpool_backward_at(d, x.data(), y.data(), dy.data(), int(i));
    if (!(g == dx_ref[i] && g32 == dx_ref[i]) && bad++ == 0) first = i;
  }
  EXPECT_EQ(bad, 0u) << "backward (gather form, first maximum), first difference at " << first;

  // The kernels' form: per pixel (index math and window range once), then its channels.
  bad = 0;
  for (int p = 0; p < N * s.OH() * s.OW(); ++p) {
    const cuda::Pixel<int> o = cuda::pixel_of(p, s.OH(), s.OW());
    for (int c = 0; c < s.C; ++c)
      bad += !(cuda::maxpool_forward_px(d, x.data(), o, c) == y_ref[size_t(p) * s.C + c]);
  }
  EXPECT_EQ(bad, 0u) << "forward, per pixel";
  bad = 0;
  for (int64_t p = 0; p < int64_t(N) * s.H * s.W; ++p) {
    const cuda::Pixel<int64_t> q = cuda::pixel_of(p, s.H, s.W);
    const cuda::PoolWindows win = cuda::windows_of(d, q.h, q.w);
    for (int c = 0; c < s.C; ++c)
      bad += !(cuda::maxpool_backward_px(d, x.data(), y.data(), dy.data(), q, win, c) ==
               dx_ref[size_t(p) * s.C + c]);
  }
  EXPECT_EQ(bad, 0u) << "backward, per pixel";
}

TEST(CudaKernelMath, MaxPoolForwardAndGatherBackwardEqualTheCpu) {
  const PoolShape shapes[] = {
      {5, 13, 13, 3, 2, 0, true},   // SqueezeNet's ceil-mode pools (odd)
      {4, 12, 10, 3, 2, 0, true},   // even sizes: the last window starts in the padding
      {3, 11, 9, 3, 2, 0, false},   // AlexNet's floor mode
      {3, 9, 8, 3, 2, 1, true},     // padding (never wins)
      {2, 8, 8, 2, 2, 0, true},     // non-overlapping
      {2, 7, 6, 3, 1, 1, false},    // stride 1: up to 9 windows per input
  };
  uint32_t seed = 10;
  for (const PoolShape& s : shapes) {
    maxpool_case<float>(s, 2, seed++);
    maxpool_case<Bf16>(s, 2, seed++);
    maxpool_case<Half>(s, 2, seed++);
  }
}

TEST(CudaKernelMath, DropoutEqualsTheCpu) {
  const int N = 3, H = 5, W = 4, C = 6, c_off = 7;
  const size_t n = size_t(N) * H * W * C;
  const std::vector<int64_t> samples = {42, 7, 1000003};
  for (float p : {0.f, 0.3f, 0.5f, 0.9f}) {
    fvec xw;
    const std::vector<Bf16> xb = as<Bf16>(test::random_floats(n, 3), &xw);
    fvec ref(n);
    cpu::dropout_forward(N, H, W, C, c_off, p, 11, 5, samples.data(), xw.data(), ref.data());
    const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;  // as the CUDA op computes it
    size_t bad = 0, kept = 0;
    for (size_t i = 0; i < n; ++i) {
      const float g = cuda::dropout_at(H, W, C, c_off, p, scale, 11, 5, samples.data(), xw.data(), int64_t(i));
      const float gb = cuda::dropout_at(H, W, C, c_off, p, scale, 11, 5, samples.data(), xb.data(), int64_t(i));
      const float g32 =
          cuda::dropout_at(H, W, C, c_off, p, scale, 11, 5, samples.data(), xb.data(), int(i));
      bad += !(g == ref[i]) + !(gb == ref[i]) + !(g32 == ref[i]);
      kept += g != 0.f;
    }
    EXPECT_EQ(bad, 0u) << "p=" << p;
    if (p == 0.f) {
      EXPECT_EQ(kept, n);
    }
    if (p == 0.5f) {
      EXPECT_GT(kept, n / 4);
    }
  }
}

// The bias + ReLU loop of every thread of a grid (start = thread, stride = grid size) covers
// each element once with the right channel's bias, for strides below, equal to and above O
// and not multiples of it; in place on bf16 too.
TEST(CudaKernelMath, BiasActStridedMatchesTheModuloForm) {
  for (int64_t n : {int64_t(1), int64_t(37), int64_t(960)})
    for (int O : {1, 3, 16, 96})
      for (int64_t stride : {int64_t(1), int64_t(5), int64_t(64), int64_t(96), int64_t(999)}) {
        if (n % O) continue;  // n = rows * O
        SCOPED_TRACE("n=" + std::to_string(n) + " O=" + std::to_string(O) +
                     " stride=" + std::to_string(stride));
        const fvec in = test::random_floats(size_t(n), uint32_t(n + O));
        const fvec b = test::random_floats(size_t(O), uint32_t(O + 5));
        for (bool relu : {false, true}) {
          fvec y(size_t(n), 7.f);
          fvec ref(static_cast<size_t>(n));
          for (int64_t i = 0; i < n; ++i) {
            const float v = in[size_t(i)] + b[size_t(i % O)];
            ref[size_t(i)] = relu ? relu_fwd(v) : v;
          }
          for (int64_t t = 0; t < stride; ++t)
            cuda::bias_act_strided(int(t), int(stride), int(n), O, b.data(), relu, in.data(),
                                   y.data());
          EXPECT_EQ(y, ref) << "relu=" << relu;
          // In place, 16-bit.
          fvec yw;
          std::vector<Bf16> yb = as<Bf16>(in, &yw);
          for (int64_t t = 0; t < stride; ++t)
            cuda::bias_act_strided(t, stride, n, O, b.data(), relu, yb.data(), yb.data());
          size_t bad = 0;
          for (int64_t i = 0; i < n; ++i) {
            const float v = yw[size_t(i)] + b[size_t(i % O)];
            bad += yb[size_t(i)].bits != cvt::fp32_to_bf16(relu ? relu_fwd(v) : v);
          }
          EXPECT_EQ(bad, 0u) << "bf16 in place, relu=" << relu;
        }
      }
}

/// The bias-gradient pass as conv2d.cu launches it: chunks of rows_per_chunk rows, 8 row
/// lanes per chunk (kBiasTy), one thread per (chunk, lane, channel) running bias_grad_rows;
/// returns the per-channel sums of the per-thread sums (double).
template <int UNROLL, class TY, class TH>
std::vector<double> bias_pass(int64_t P, int O, int64_t rows_per_chunk, const TY* y, float* dy,
                              TH* dyh, std::vector<float>* thread_sums) {
  std::vector<double> db(size_t(O), 0.0);
  for (int64_t r0 = 0; r0 < P; r0 += rows_per_chunk)
    for (int lane = 0; lane < 8; ++lane)
      for (int c = 0; c < O; ++c) {
        const float s = cuda::bias_grad_rows<8, UNROLL>(r0 + lane, std::min(P, r0 + rows_per_chunk),
                                                        O, c, y, dy, dyh);
        db[size_t(c)] += s;
        thread_sums->push_back(s);
      }
  return db;
}

// Every element of dy is visited exactly once (the masked values and the sums prove it), fp32
// masks dy in place, 16-bit leaves dy untouched and writes the masked dy rounded, and the
// unrolled loop sums in the same order as a one-row loop (bit-identical per-thread sums).
TEST(CudaKernelMath, BiasGradRowsVisitEveryRowOnceAndMask) {
  for (int64_t P : {int64_t(1), int64_t(9), int64_t(64), int64_t(1001)})
    for (int O : {3, 16})
      for (int64_t rows : {int64_t(64), int64_t(100)}) {
        SCOPED_TRACE("P=" + std::to_string(P) + " O=" + std::to_string(O) +
                     " rows=" + std::to_string(rows));
        const size_t n = size_t(P) * size_t(O);
        const fvec dy0 = test::random_floats(n, uint32_t(P * 7 + O));
        fvec yw;
        const std::vector<Bf16> yb = as<Bf16>(test::random_floats(n, uint32_t(P * 3 + O)), &yw);
        fvec masked(n);
        std::vector<double> ref(size_t(O), 0.0);
        for (size_t i = 0; i < n; ++i) {
          masked[i] = relu_bwd(yw[i], dy0[i]);
          ref[i % size_t(O)] += masked[i];
        }
        // fp32: dy masked in place.
        fvec dy = dy0;
        std::vector<float> sums4, sums1;
        const std::vector<double> db =
            bias_pass<4>(P, O, rows, yw.data(), dy.data(), static_cast<float*>(nullptr), &sums4);
        EXPECT_EQ(dy, masked);
        for (int c = 0; c < O; ++c) EXPECT_NEAR(db[size_t(c)], ref[size_t(c)], 1e-4);
        // No y: dy is already masked, nothing is written.
        fvec dyn = masked;
        bias_pass<4>(P, O, rows, static_cast<const float*>(nullptr), dyn.data(),
                     static_cast<float*>(nullptr), &sums1);
        EXPECT_EQ(dyn, masked);
        // 16-bit: dy untouched, dyh = the masked dy rounded; the same per-thread sums as the
        // one-row loop.
        fvec dyh_src = dy0;
        std::vector<Bf16> dyh(n, Bf16{0x7fc0});
        sums4.clear();
        sums1.clear();
        bias_pass<4>(P, O, rows, yb.data(), dyh_src.data(), dyh.data(), &sums4);
        EXPECT_EQ(dyh_src, dy0);
        size_t bad = 0;
        for (size_t i = 0; i < n; ++i) bad += dyh[i].bits != cvt::fp32_to_bf16(masked[i]);
        EXPECT_EQ(bad, 0u);
        fvec dy1 = dy0;
        std::vector<Bf16> dyh1(n);
        bias_pass<1>(P, O, rows, yb.data(), dy1.data(), dyh1.data(), &sums1);
        ASSERT_EQ(sums4.size(), sums1.size());
        EXPECT_EQ(0, std::memcmp(sums4.data(), sums1.data(), sums4.size() * sizeof(float)));
      }
}

TEST(CudaKernelMath, WeightReordersAreInverseAndMatchTheLayouts) {
  // ck > C: the zero-padded channels of a 16-bit convolution with C % 8 != 0.
  for (auto [O, C, k, ck] : {std::tuple{5, 3, 7, 3}, {4, 6, 3, 6}, {8, 1, 5, 1}, {3, 4, 1, 4},
                             {5, 3, 7, 8}, {2, 1, 3, 8}, {3, 5, 1, 8}}) {
    SCOPED_TRACE("O=" + std::to_string(O) + " C=" + std::to_string(C) + " k=" +
                 std::to_string(k) + " ck=" + std::to_string(ck));
    const int64_t n = int64_t(O) * C * k * k, nk = int64_t(O) * k * k * ck;
    for (int o = 0; o < O; ++o)
      for (int c = 0; c < C; ++c)
        for (int y = 0; y < k; ++y)
          for (int x = 0; x < k; ++x) {
            const int64_t oihw = ((int64_t(o) * C + c) * k + y) * k + x;
            const int64_t ohwi = ((int64_t(o) * k + y) * k + x) * ck + c;
            ASSERT_EQ(cuda::ohwi_index_of_oihw(oihw, C, k, ck), ohwi);
            ASSERT_EQ(cuda::oihw_index_of_ohwi(ohwi, C, k, ck), oihw);
          }
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(cuda::oihw_index_of_ohwi(cuda::ohwi_index_of_oihw(i, C, k, ck), C, k, ck), i);
    int64_t padding = 0;  // OHWI elements that are padding: exactly the channels c >= C
    for (int64_t i = 0; i < nk; ++i) {
      const int64_t j = cuda::oihw_index_of_ohwi(i, C, k, ck);
      ASSERT_EQ(j < 0, i % ck >= C);
      padding += j < 0;
    }
    EXPECT_EQ(padding, nk - n);
  }
}

// The padded input and the cut-back gradient: pad then unpad is the identity, the extra
// channels are zero, for fp32 and bf16 and both index types.
TEST(CudaKernelMath, ChannelPaddingRoundTrips) {
  for (auto [P, C, ck] : {std::tuple{7, 3, 8}, {5, 1, 8}, {4, 8, 8}, {3, 5, 16}}) {
    const fvec x = test::random_floats(size_t(P) * C, uint32_t(P + C));
    fvec xw;
    const std::vector<Bf16> xb = as<Bf16>(x, &xw);
    fvec padded(size_t(P) * ck), padded_b(size_t(P) * ck);
    for (int i = 0; i < P * ck; ++i) {
      padded[size_t(i)] = cuda::pad_channels_at(i, C, ck, x.data());
      padded_b[size_t(i)] = cuda::pad_channels_at(int64_t(i), C, ck, xb.data());
      if (i % ck >= C) {
        EXPECT_EQ(padded[size_t(i)], 0.f);
        EXPECT_EQ(padded_b[size_t(i)], 0.f);
      }
    }
    fvec back(size_t(P) * C), back_b(size_t(P) * C);
    for (int i = 0; i < P * C; ++i) {
      back[size_t(i)] = cuda::unpad_channels_at(i, C, ck, padded.data());
      back_b[size_t(i)] = cuda::unpad_channels_at(int64_t(i), C, ck, padded_b.data());
    }
    EXPECT_EQ(back, x);
    EXPECT_EQ(back_b, xw);
  }
}

TEST(CudaKernelMath, SixteenBitLoadsAndStoresAreTheCpuConversions) {
  const fvec v = {0.f, -0.f, 1.f, 1.00390625f, 1.005859375f, 65504.f, 65520.f, 1e-8f, -3.14159f,
                  3.0e38f, 1e-40f};
  for (float f : v) {
    Bf16 b;
    Half h;
    cuda::store(&b, 0, f);
    cuda::store(&h, 0, f);
    EXPECT_EQ(b.bits, cvt::fp32_to_bf16(f)) << f;
    EXPECT_EQ(h.bits, cvt::fp32_to_fp16(f)) << f;
    EXPECT_EQ(cuda::load(&b, 0), cvt::bf16_to_fp32(b.bits));
    const float back = cuda::load(&h, 0), expect = cvt::fp16_to_fp32(h.bits);
    EXPECT_EQ(std::memcmp(&back, &expect, 4), 0) << f;
  }
}

// ---------------------------------------------------------------------------------------------
// The two-part 1×1 convolution as GEMMs (two_part_gemm.hpp).

struct GemmOperands {
  fvec x, w, y, dy, dx, dw;
  fvec& of(cuda::two_part::Operand o) {
    using cuda::two_part::Operand;
    switch (o) {
      case Operand::X: return x;
      case Operand::W: return w;
      case Operand::Y: return y;
      case Operand::DY: return dy;
      case Operand::DX: return dx;
      case Operand::DW: return dw;
    }
    return x;
  }
};

/// A column-major (rows × cols) matrix m must lie inside v, with ld >= rows (what cuBLAS
/// requires and what keeps the columns from overlapping).
void expect_inside(const fvec& v, cuda::two_part::Mat m, int rows, int cols, const char* what) {
  EXPECT_GE(m.ld, std::max(1, rows)) << what;
  EXPECT_GE(m.offset, 0) << what;
  EXPECT_LE(m.offset + int64_t(cols - 1) * m.ld + rows, int64_t(v.size())) << what;
}

/// cublasGemmEx's semantics, column-major, fp32 with a double accumulator; C is not read when
/// beta == 0 (as in BLAS).
void reference_gemm(const cuda::two_part::Gemm& g, GemmOperands& t) {
  const fvec& A = t.of(g.a.of);
  const fvec& B = t.of(g.b.of);
  fvec& Cm = t.of(g.c.of);
  expect_inside(A, g.a, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, "A");
  expect_inside(B, g.b, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, "B");
  expect_inside(Cm, g.c, g.m, g.n, "C");
  if (::testing::Test::HasFailure()) return;
  for (int i = 0; i < g.m; ++i)
    for (int j = 0; j < g.n; ++j) {
      double s = 0.0;
      for (int p = 0; p < g.k; ++p) {
        const float a = g.trans_a ? A[size_t(g.a.offset + p + int64_t(i) * g.a.ld)]
                                  : A[size_t(g.a.offset + i + int64_t(p) * g.a.ld)];
        const float b = g.trans_b ? B[size_t(g.b.offset + j + int64_t(p) * g.b.ld)]
                                  : B[size_t(g.b.offset + p + int64_t(j) * g.b.ld)];
        s += double(a) * double(b);
      }
      float& c = Cm[size_t(g.c.offset + i + int64_t(j) * g.c.ld)];
      c = g.beta == 0.f ? float(s) : float(s + double(g.beta) * double(c));
    }
}

// The plan's GEMMs compute the CPU convolution's y, dx and dw (no bias, no ReLU: those are
// the same kernels as the dense path's). Uneven parts (C != C2) catch a part offset taken from
// the wrong part; NaN-filled outputs catch an element left unwritten; the extent checks catch
// a leading dimension that would read across parts.
TEST(CudaKernelMath, TwoPartGemmPlanIsTheConvolution) {
  struct Case {
    int N, C, C2, O, H, W;
  };
  for (const Case& k : {Case{2, 5, 11, 7, 3, 4}, Case{1, 16, 16, 8, 5, 5}, Case{3, 12, 4, 9, 2, 3}}) {
    SCOPED_TRACE("N=" + std::to_string(k.N) + " C=" + std::to_string(k.C) + "+" +
                 std::to_string(k.C2) + " O=" + std::to_string(k.O));
    ConvShape s;
    s.C = k.C, s.C2 = k.C2, s.O = k.O, s.H = k.H, s.W = k.W, s.k = 1, s.relu = false;
    const int P = k.N * k.H * k.W;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    GemmOperands t;
    t.x = test::random_floats(size_t(P) * s.Ct(), 11);
    t.w = test::random_floats(size_t(s.weight_numel()), 12);
    t.dy = test::random_floats(size_t(P) * k.O, 13);
    t.y.assign(size_t(P) * k.O, nan);
    t.dx.assign(t.x.size(), nan);
    t.dw.assign(t.w.size(), nan);

    Conv2d cpu(s, Device::CPU);
    const fvec zero_b(size_t(k.O), 0.f);
    fvec y(t.y.size()), dx(t.dx.size()), dw(t.dw.size()), db(size_t(k.O)), dy = t.dy;
    cpu.forward(k.N, t.x.data(), t.w.data(), zero_b.data(), y.data());
    cpu.backward(k.N, t.x.data(), t.w.data(), nullptr, dy.data(), dx.data(), dw.data(), db.data());

    for (const auto& g : cuda::two_part::forward(P, k.C, k.C2, k.O)) reference_gemm(g, t);
    for (const auto& g : cuda::two_part::backward_data(P, k.C, k.C2, k.O)) reference_gemm(g, t);
    for (const auto& g : cuda::two_part::backward_filter(P, k.C, k.C2, k.O)) reference_gemm(g, t);
    EXPECT_TRUE(test::expect_close(t.y, y, 1e-5, 1e-6, "forward y"));
    EXPECT_TRUE(test::expect_close(t.dx, dx, 1e-5, 1e-6, "backward dx"));
    EXPECT_TRUE(test::expect_close(t.dw, dw, 1e-5, 1e-6, "backward dw"));
  }
}

}  // namespace
}  // namespace ft
