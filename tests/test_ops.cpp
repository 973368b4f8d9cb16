/// @brief Every op against a naive double-precision loop reference (OpsTest), and every naive
/// reference's gradients against central differences (GradCheck).
///
/// The references below are written from the definitions (torch semantics), not from the fast
/// code: conv2d NHWC × OIHW with stride/pad and fused ReLU, max pooling in ceil mode with torch's
/// first-maximum argmax, global average pooling, ReLU, channel concat/split, dropout keyed by
/// (seed, step, sample, NCHW element), softmax cross-entropy with top-1/top-5, torch SGD.
/// Fast ops run in fp32 and are compared with "rtol 1e-4 relative to the output scale": an
/// element may differ by 1e-4 of itself or 1e-5 of the largest reference magnitude.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/naive.hpp"
#include "firetrain/ops/conv2d.hpp"
#include "firetrain/ops/elementwise.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/pool.hpp"
#include "firetrain/ops/sgd.hpp"

namespace {

using namespace ft::test;
using ft::ConvShape;
using ft::PoolShape;
using fvec = std::vector<float>;
using dvec = std::vector<double>;

/// fp32 result vs double reference, "rtol relative to the output scale".
bool near(const fvec& a, const dvec& b, const std::string& what, double rtol = 1e-4) {
  return expect_close(a, b, rtol, 0.1 * rtol * abs_max(b.data(), b.size()), what);
}

// =============================================================================================
// Naive references (double).

std::string conv_str(const ConvShape& s, int N) {
  return "conv N=" + std::to_string(N) + " C=" + std::to_string(s.C) + " O=" + std::to_string(s.O) +
         " " + std::to_string(s.H) + "x" + std::to_string(s.W) + " k=" + std::to_string(s.k) +
         " s=" + std::to_string(s.stride) + " p=" + std::to_string(s.pad) + (s.relu ? " relu" : "");
}

// =============================================================================================
// The harness itself: expect_close names the worst element; the gradient checker catches a
// wrong gradient and skips kinks.

TEST(OpsTest, ExpectCloseReportsWorstElement) {
  fvec ref = {1.f, -2.f, 3.f, 1000.f, 0.f};
  fvec a = ref;
  EXPECT_TRUE(expect_close(a, ref, 0, 0, "identical"));
  a[1] = -2.001f;  // rel 5e-4
  a[4] = 0.5f;     // near zero: judged against the floor 1e-3 * 1000 = 1 -> rel 0.5
  CloseReport r = compare(a.data(), ref.data(), a.size(), 1e-3, 0);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.worst, 4u);
  EXPECT_NEAR(r.max_rel, 0.5, 1e-6);
  EXPECT_DOUBLE_EQ(r.floor, 1.0);
  EXPECT_NONFATAL_FAILURE(expect_close(a, ref, 1e-3, 0, "demo"), "worst at [4]");
  a[4] = 0.f;
  EXPECT_TRUE(expect_close(a, ref, 1e-3, 0, "within rtol"));
  a[0] = NAN;
  EXPECT_NONFATAL_FAILURE(expect_close(a, ref, 1e-3, 0, "nan"), "worst at [0]");
  EXPECT_NONFATAL_FAILURE(expect_close(fvec(3), fvec(4), 1, 1, "sizes"), "sizes differ");
}

TEST(GradCheck, CheckerCatchesWrongGradientsAndSkipsKinks) {
  // f = sum relu(x_i) * c_i with one x exactly at the kink.
  dvec x = {0.5, -0.7, 0.0, 1.2}, c = {1, 2, 3, 4};
  auto f = [&] {
    double s = 0;
    for (size_t i = 0; i < x.size(); ++i) s += std::max(x[i], 0.0) * c[i];
    return s;
  };
  dvec good = {1, 0, 0, 4};  // any value at the kink is skipped
  GradCheckOptions o;
  o.max_skipped_percent = 30;
  auto rep = check_gradient(f, x.data(), x.size(), good.data(), "good", o);
  EXPECT_EQ(rep.checked, 3u);
  EXPECT_EQ(rep.skipped, 1u);
  EXPECT_EQ(rep.failed, 0u);
  dvec bad = {1, 0, 0, 4.01};
  EXPECT_NONFATAL_FAILURE(check_gradient(f, x.data(), x.size(), bad.data(), "bad", o),
                          "gradient mismatch at [3]");
  EXPECT_EQ(x, (dvec{0.5, -0.7, 0.0, 1.2})) << "x restored";
}

// =============================================================================================
// Convolution.

struct ConvCase {
  ConvShape s;
  int N;
};

/// Small shapes of every kind the nets use, for the finite-difference check of the reference.
std::vector<ConvCase> small_conv_cases() {
  return {
      {{3, 4, 5, 5, 1, 1, 0, true}, 2},    // 1×1
      {{3, 4, 5, 6, 3, 1, 1, true}, 2},    // 3×3 pad 1, non-square
      {{2, 3, 11, 11, 7, 2, 0, true}, 2},  // 7×7 stride 2, no pad
      {{2, 3, 7, 7, 3, 2, 0, true}, 1},    // 3×3 stride 2 (squeezenet1_1 stem)
      {{3, 5, 5, 5, 3, 1, 1, false}, 2},   // no ReLU
  };
}

/// Shapes for fast-vs-reference: the SqueezeNet kinds at odd sizes, batch 1 and 3.
std::vector<ConvCase> conv_cases() {
  return {
      {{16, 17, 13, 13, 1, 1, 0, true}, 3},  // 1×1 squeeze/expand
      {{3, 16, 27, 27, 1, 1, 0, true}, 1},
      {{17, 16, 13, 13, 3, 1, 1, true}, 3},  // 3×3 pad 1 expand
      {{16, 16, 27, 27, 3, 1, 1, true}, 1},
      {{3, 16, 55, 55, 7, 2, 0, true}, 1},  // 7×7 stride 2 (conv1 of 1.0)
      {{3, 17, 27, 27, 7, 2, 0, true}, 3},
      {{3, 16, 27, 27, 3, 2, 0, true}, 3},    // 3×3 stride 2 (conv1 of 1.1)
      {{16, 17, 13, 13, 1, 1, 0, false}, 3},  // no ReLU
      {{17, 3, 13, 13, 3, 1, 1, false}, 1},
      // squeezenet_small at 12×12 with one input channel: tiny spatial sizes.
      {{1, 64, 12, 12, 3, 1, 1, true}, 2},
      {{64, 16, 6, 6, 1, 1, 0, true}, 2},
      {{16, 64, 6, 6, 3, 1, 1, true}, 2},
      {{32, 128, 3, 3, 3, 1, 1, true}, 2},
      {{64, 256, 1, 1, 3, 1, 1, true}, 2},
      {{512, 5, 1, 1, 1, 1, 0, true}, 2},
  };
}

TEST(GradCheck, ConvReference) {
  uint32_t seed = 100;
  for (const auto& cc : small_conv_cases()) {
    const ConvShape& s = cc.s;
    SCOPED_TRACE(conv_str(s, cc.N));
    const int OH = conv_out(s.H, s.k, s.stride, s.pad), OW = conv_out(s.W, s.k, s.stride, s.pad);
    dvec x = random_doubles(size_t(cc.N) * s.H * s.W * s.C, ++seed);
    dvec w = random_doubles(size_t(s.weight_numel()), ++seed, -0.5, 0.5);
    dvec b = random_doubles(size_t(s.O), ++seed, -0.2, 0.2);
    dvec r = random_doubles(size_t(cc.N) * OH * OW * s.O, ++seed);  // f = sum r * y
    dvec y, dx, dw, db;
    conv_ref_forward(s, cc.N, x, w, b, y);
    conv_ref_backward(s, cc.N, x, w, y, r, dx, dw, db);
    auto f = [&] {
      dvec yy;
      conv_ref_forward(s, cc.N, x, w, b, yy);
      double acc = 0;
      for (size_t i = 0; i < yy.size(); ++i) acc += r[i] * yy[i];
      return acc;
    };
    GradCheckOptions o;
    o.h = 1e-6;
    o.kink_tol = 1e-6;
    o.max_points = 150;
    check_gradient(f, x.data(), x.size(), dx.data(), "conv dx", o);
    check_gradient(f, w.data(), w.size(), dw.data(), "conv dw", o);
    check_gradient(f, b.data(), b.size(), db.data(), "conv db", o);
  }
}

TEST(OpsTest, ConvShapeOutputSize) {
  for (int in : {5, 12, 13, 27, 55, 224, 227})
    for (int k : {1, 3, 7})
      for (int s : {1, 2})
        for (int p : {0, 1, 3}) {
          if (in + 2 * p < k) continue;
          ConvShape cs{1, 1, in, in + 1, k, s, p, true};
          EXPECT_EQ(cs.OH(), conv_out(in, k, s, p)) << in << " " << k << " " << s << " " << p;
          EXPECT_EQ(cs.OW(), conv_out(in + 1, k, s, p));
        }
  EXPECT_EQ((ConvShape{3, 96, 224, 224, 7, 2, 0, true}).OH(), 109);  // squeezenet1_0 conv1
  EXPECT_EQ((ConvShape{3, 64, 224, 224, 3, 2, 0, true}).OH(), 111);  // squeezenet1_1 conv1
}

void run_conv_case(const ConvCase& cc, uint32_t seed) {
  const ConvShape& s = cc.s;
  const int N = cc.N;
  SCOPED_TRACE(conv_str(s, N));
  const int OH = s.OH(), OW = s.OW();
  // The same fp32 values feed both sides.
  fvec xf = random_floats(size_t(N) * s.H * s.W * s.C, seed + 1);
  fvec wf = random_floats(size_t(s.weight_numel()), seed + 2, -0.3f, 0.3f);
  fvec bf = random_floats(size_t(s.O), seed + 3, -0.1f, 0.1f);
  fvec dyf = random_floats(size_t(N) * OH * OW * s.O, seed + 4);
  dvec x = to_double(xf), w = to_double(wf), b = to_double(bf), dyd = to_double(dyf);

  dvec y, dx, dw, db;
  conv_ref_forward(s, N, x, w, b, y);
  conv_ref_backward(s, N, x, w, y, dyd, dx, dw, db);

  ft::Conv2d op(s);
  fvec yf(y.size(), -7.f);
  op.forward(N, xf.data(), wf.data(), bf.data(), yf.data());
  near(yf, y, "forward y");
  if (s.relu) {  // ReLU fused: exactly non-negative
    EXPECT_GE(*std::min_element(yf.begin(), yf.end()), 0.f);
  }

  // Backward with y: dy masked in place.
  fvec g1 = dyf, dx1(x.size(), 9.f), dw1(w.size(), 9.f), db1(b.size(), 9.f);
  op.backward(N, xf.data(), wf.data(), yf.data(), g1.data(), dx1.data(), dw1.data(), db1.data());
  near(dx1, dx, "backward dx");
  near(dw1, dw, "backward dw");
  near(db1, db, "backward db");
  if (s.relu) {
    size_t bad = 0;
    for (size_t i = 0; i < g1.size(); ++i) bad += g1[i] != (yf[i] > 0 ? dyf[i] : 0.f);
    EXPECT_EQ(bad, 0u) << "dy was not masked in place by (y > 0)";
  }

  // Backward with y == nullptr and an already-masked dy: the same gradients; and dx == nullptr
  // (first layer) leaves dw, db as they were.
  fvec g2 = g1, dx2(x.size(), 5.f), dw2(w.size(), 5.f), db2(b.size(), 5.f);
  op.backward(N, xf.data(), wf.data(), nullptr, g2.data(), dx2.data(), dw2.data(), db2.data());
  EXPECT_EQ(g2, g1) << "dy modified although y == nullptr";
  expect_close(dx2, dx1, 1e-6, 0, "dx (y == nullptr)");
  expect_close(dw2, dw1, 1e-6, 0, "dw (y == nullptr)");
  expect_close(db2, db1, 1e-6, 0, "db (y == nullptr)");
  fvec g3 = g1, dw3(w.size(), 5.f), db3(b.size(), 5.f);
  op.backward(N, xf.data(), wf.data(), nullptr, g3.data(), nullptr, dw3.data(), db3.data());
  expect_close(dw3, dw1, 1e-6, 0, "dw (dx == nullptr)");
  expect_close(db3, db1, 1e-6, 0, "db (dx == nullptr)");
}

TEST(OpsTest, Conv2dMatchesReference) {
  uint32_t seed = 1000;
  for (const auto& cc : conv_cases()) run_conv_case(cc, seed += 10);
}

TEST(OpsTest, Conv2dSmallShapesMatchReference) {
  uint32_t seed = 2000;
  for (const auto& cc : small_conv_cases()) run_conv_case(cc, seed += 10);
}

// The weights change between steps at the same address (SGD updates the arena in place) and
// the op is used at more than one batch size (training, then evaluation): every call must use
// the current weights.
TEST(OpsTest, Conv2dSeesWeightUpdatesAndBatchSizes) {
  ConvShape s{16, 32, 9, 9, 3, 1, 1, true};
  ft::Conv2d op(s);
  fvec wf = random_floats(size_t(s.weight_numel()), 7, -0.3f, 0.3f);
  fvec bf = random_floats(size_t(s.O), 8, -0.1f, 0.1f);
  for (int step = 0; step < 3; ++step) {
    for (int N : {3, 1, 3}) {
      SCOPED_TRACE("step " + std::to_string(step) + " N=" + std::to_string(N));
      fvec xf = random_floats(size_t(N) * s.H * s.W * s.C, 100 + step * 10 + N);
      fvec dyf = random_floats(size_t(N) * s.OH() * s.OW() * s.O, 200 + step * 10 + N);
      dvec y, dx, dw, db;
      conv_ref_forward(s, N, to_double(xf), to_double(wf), to_double(bf), y);
      conv_ref_backward(s, N, to_double(xf), to_double(wf), y, to_double(dyf), dx, dw, db);
      fvec yf(y.size()), dxf(dx.size()), dwf(dw.size()), dbf(db.size());
      op.forward(N, xf.data(), wf.data(), bf.data(), yf.data());
      near(yf, y, "y");
      op.backward(N, xf.data(), wf.data(), yf.data(), dyf.data(), dxf.data(), dwf.data(),
                  dbf.data());
      near(dxf, dx, "dx");
      near(dwf, dw, "dw");
      near(dbf, db, "db");
    }
    for (auto& v : wf) v = -0.9f * v + 0.01f;  // in-place update, same pointer
  }
}

// backward takes x, w and y explicitly: it must not depend on which forward ran last (here an
// evaluation forward at another batch size, then other weights, between a forward and its
// backward).
TEST(OpsTest, Conv2dBackwardIndependentOfLastForward) {
  for (const ConvShape& s :
       {ConvShape{16, 32, 9, 9, 3, 1, 1, true}, ConvShape{3, 16, 27, 27, 7, 2, 0, true},
        ConvShape{64, 16, 6, 6, 1, 1, 0, true}}) {
    SCOPED_TRACE(conv_str(s, 3));
    ft::Conv2d op(s);
    const int N = 3;
    fvec w = random_floats(size_t(s.weight_numel()), 1, -0.3f, 0.3f);
    fvec w2 = random_floats(size_t(s.weight_numel()), 2, -0.3f, 0.3f);
    fvec b = random_floats(size_t(s.O), 3, -0.1f, 0.1f);
    fvec x = random_floats(size_t(N) * s.H * s.W * s.C, 4);
    fvec dyf = random_floats(size_t(N) * s.OH() * s.OW() * s.O, 5);
    dvec y, dx, dw, db;
    conv_ref_forward(s, N, to_double(x), to_double(w), to_double(b), y);
    conv_ref_backward(s, N, to_double(x), to_double(w), y, to_double(dyf), dx, dw, db);
    fvec yf(y.size()), y1(y.size() / N), dxf(dx.size()), dwf(dw.size()), dbf(db.size());
    op.forward(N, x.data(), w.data(), b.data(), yf.data());
    op.forward(1, x.data(), w2.data(), b.data(), y1.data());  // evaluation, other weights
    op.backward(N, x.data(), w.data(), yf.data(), dyf.data(), dxf.data(), dwf.data(), dbf.data());
    near(dxf, dx, "dx");
    near(dwf, dw, "dw");
    near(dbf, db, "db");
  }
}

// =============================================================================================
// Pooling.

TEST(OpsTest, PoolOutSizeMatchesTorch) {
  for (int in = 1; in <= 120; ++in)
    for (int k = 1; k <= 7; ++k)
      for (int s = 1; s <= 4; ++s)
        for (int p = 0; p <= k / 2; ++p)  // torch requires pad <= k / 2
          for (bool ceil_mode : {false, true}) {
            if (in + 2 * p < k) continue;
            ASSERT_EQ(PoolShape::out_size(in, k, s, p, ceil_mode),
                      torch_pool_out(in, k, s, p, ceil_mode))
                << "in " << in << " k " << k << " s " << s << " p " << p << " ceil " << ceil_mode;
          }
  // SqueezeNet's 3×3/2 ceil-mode pools.
  EXPECT_EQ(PoolShape::out_size(109, 3, 2, 0, true), 54);
  EXPECT_EQ(PoolShape::out_size(55, 3, 2, 0, true), 27);
  EXPECT_EQ(PoolShape::out_size(27, 3, 2, 0, true), 13);
  EXPECT_EQ(PoolShape::out_size(13, 3, 2, 0, true), 6);
  EXPECT_EQ(PoolShape::out_size(111, 3, 2, 0, true), 55);
  EXPECT_EQ(PoolShape::out_size(14, 3, 2, 0, true), 7);  // a partial last window
  EXPECT_EQ(PoolShape::out_size(14, 3, 2, 0, false), 6);
  EXPECT_EQ(PoolShape::out_size(112, 3, 2, 0, true), 56);
  EXPECT_EQ(PoolShape::out_size(112, 3, 2, 0, false), 55);
  // The last window may not start in the right padding: 5, k2, s2, p1 -> 3 (not 4).
  EXPECT_EQ(PoolShape::out_size(5, 2, 2, 1, true), 3);
}

TEST(GradCheck, MaxPoolReference) {
  struct C {
    int N, C, H, W, p;
  };
  uint32_t seed = 300;
  for (auto c : {C{2, 3, 7, 7, 0}, C{1, 2, 8, 6, 0}, C{2, 2, 6, 7, 1}}) {
    PoolRef P{c.C,
              c.H,
              c.W,
              3,
              2,
              c.p,
              torch_pool_out(c.H, 3, 2, c.p, true),
              torch_pool_out(c.W, 3, 2, c.p, true)};
    SCOPED_TRACE("pool " + std::to_string(c.H) + "x" + std::to_string(c.W) + " p" +
                 std::to_string(c.p));
    // Distinct values 0.01 apart: a step of 1e-4 moves no argmax, so there are no kinks.
    dvec x = to_double(random_distinct(size_t(c.N) * c.H * c.W * c.C, ++seed));
    dvec r = random_doubles(size_t(c.N) * P.OH * P.OW * c.C, ++seed);
    dvec y, dx;
    std::vector<size_t> am;
    maxpool_ref_forward(P, c.N, x, y, am);
    maxpool_ref_backward(am, x.size(), r, dx);
    auto f = [&] {
      dvec yy;
      std::vector<size_t> a2;
      maxpool_ref_forward(P, c.N, x, yy, a2);
      double acc = 0;
      for (size_t i = 0; i < yy.size(); ++i) acc += r[i] * yy[i];
      return acc;
    };
    GradCheckOptions o;
    o.h = 1e-4;
    auto rep = check_gradient(f, x.data(), x.size(), dx.data(), "maxpool dx", o);
    EXPECT_EQ(rep.skipped, 0u);
  }
}

// Torch's tie rule, checked on the reference itself: the first maximum in row-major order wins.
TEST(OpsTest, MaxPoolReferenceTieRule) {
  PoolRef P{1, 3, 3, 3, 2, 0, 1, 1};
  dvec x = {0, 5, 1, 5, 2, 5, 0, 0, 0};  // three equal maxima
  dvec y;
  std::vector<size_t> am;
  maxpool_ref_forward(P, 1, x, y, am);
  EXPECT_EQ(y[0], 5.0);
  EXPECT_EQ(am[0], 1u);
}

struct PoolCase {
  int N, C, H, W, pad;
};

TEST(OpsTest, MaxPoolMatchesReference) {
  uint32_t seed = 400;
  for (auto c :
       {PoolCase{3, 16, 13, 13, 0}, PoolCase{1, 17, 14, 14, 0}, PoolCase{3, 3, 27, 27, 0},
        PoolCase{1, 16, 28, 28, 0}, PoolCase{1, 16, 55, 55, 0}, PoolCase{1, 3, 109, 109, 0},
        PoolCase{3, 17, 13, 14, 0}, PoolCase{2, 16, 14, 13, 1}, PoolCase{1, 16, 3, 3, 0},
        PoolCase{2, 64, 12, 12, 0}, PoolCase{2, 128, 6, 6, 0}, PoolCase{2, 256, 3, 3, 0}}) {
    PoolShape ps{c.C, c.H, c.W, 3, 2, c.pad, true};
    PoolRef P{c.C,
              c.H,
              c.W,
              3,
              2,
              c.pad,
              torch_pool_out(c.H, 3, 2, c.pad, true),
              torch_pool_out(c.W, 3, 2, c.pad, true)};
    SCOPED_TRACE("maxpool N=" + std::to_string(c.N) + " C=" + std::to_string(c.C) + " " +
                 std::to_string(c.H) + "x" + std::to_string(c.W) + " p" + std::to_string(c.pad));
    ASSERT_EQ(ps.OH(), P.OH);
    ASSERT_EQ(ps.OW(), P.OW);
    // Distinct values: oneDNN may break ties differently from torch.
    fvec xf = random_distinct(size_t(c.N) * c.H * c.W * c.C, ++seed, 1e-3f);
    fvec dyf = random_floats(size_t(c.N) * P.OH * P.OW * c.C, ++seed);
    dvec y, dx;
    std::vector<size_t> am;
    maxpool_ref_forward(P, c.N, to_double(xf), y, am);
    maxpool_ref_backward(am, xf.size(), to_double(dyf), dx);

    ft::MaxPool2d op(ps);
    fvec yf(y.size(), -9.f), dxf(dx.size(), 9.f);
    op.forward(c.N, xf.data(), yf.data());
    expect_close(yf, y, 0, 0, "maxpool y (exact)");
    op.backward(c.N, xf.data(), yf.data(), dyf.data(), dxf.data());
    // Up to four windows overlap on one input: sums of dy may round differently.
    expect_close(dxf, dx, 1e-6, 1e-7, "maxpool dx");
  }
}

// Ties: the CPU max pool documents torch's rule (the first maximum of the window in row-major
// order receives the gradient). Inputs with many exact ties, as after a ReLU (zeros) or from
// quantized data.
TEST(OpsTest, MaxPoolTiesFollowTorch) {
  const int N = 2, C = 17, H = 13, W = 14;
  PoolShape ps{C, H, W, 3, 2, 0, true};
  PoolRef P{C, H, W, 3, 2, 0, torch_pool_out(H, 3, 2, 0, true), torch_pool_out(W, 3, 2, 0, true)};
  fvec xf = random_floats(size_t(N) * H * W * C, 88, -1.f, 1.f);
  for (auto& v : xf) v = std::max(0.f, std::round(v * 3.f));  // values in {0, 1, 2, 3}
  fvec dyf = random_floats(size_t(N) * P.OH * P.OW * C, 89);
  dvec y, dx;
  std::vector<size_t> am;
  maxpool_ref_forward(P, N, to_double(xf), y, am);
  maxpool_ref_backward(am, xf.size(), to_double(dyf), dx);
  ft::MaxPool2d op(ps);
  fvec yf(y.size()), dxf(dx.size());
  op.forward(N, xf.data(), yf.data());
  op.backward(N, xf.data(), yf.data(), dyf.data(), dxf.data());
  expect_close(yf, y, 0, 0, "y");
  expect_close(dxf, dx, 1e-6, 1e-7, "dx (torch's first-maximum rule)");
}

// Backward normally reuses the maxima its forward found; given other tensors than the last
// forward's (other buffers or batch size), it must find them again.
TEST(OpsTest, MaxPoolBackwardAfterAnotherForwardUsesItsOwnTensors) {
  const int N = 2, C = 9, H = 11, W = 12;
  PoolShape ps{C, H, W, 3, 2, 0, true};
  const size_t nx = size_t(N) * H * W * C, ny = size_t(N) * ps.OH() * ps.OW() * C;
  fvec xa = random_floats(nx, 91, -1.f, 1.f), xb = random_floats(nx, 92, -1.f, 1.f);
  for (auto& v : xa) v = std::max(0.f, std::round(v * 3.f));  // ties, as after a ReLU
  fvec dy = random_floats(ny, 93);
  // The reference: a fresh op, forward then backward on a.
  ft::MaxPool2d fresh(ps);
  fvec ya(ny), dx_ref(nx);
  fresh.forward(N, xa.data(), ya.data());
  fresh.backward(N, xa.data(), ya.data(), dy.data(), dx_ref.data());
  // Forward on b last, then backward on a's tensors (other buffers).
  ft::MaxPool2d op(ps);
  fvec ya2(ny), yb(ny), dx(nx, 7.f);
  op.forward(N, xa.data(), ya2.data());
  op.forward(N, xb.data(), yb.data());
  op.backward(N, xa.data(), ya2.data(), dy.data(), dx.data());
  expect_close(dx, dx_ref, 0, 0, "backward on a after forward on b");
  // And again after a forward on a itself (the positions stored by that forward).
  op.forward(N, xa.data(), ya2.data());
  std::fill(dx.begin(), dx.end(), 7.f);
  op.backward(N, xa.data(), ya2.data(), dy.data(), dx.data());
  expect_close(dx, dx_ref, 0, 0, "backward after its own forward");
}

// Floor mode through the same op (torchvision SqueezeNet uses ceil mode; floor mode is part of
// the PoolShape API).
TEST(OpsTest, MaxPoolFloorMode) {
  for (int H : {13, 14}) {
    SCOPED_TRACE("floor mode " + std::to_string(H));
    const int N = 2, C = 5;
    PoolShape ps{C, H, H, 3, 2, 0, false};
    PoolRef P{
        C, H, H, 3, 2, 0, torch_pool_out(H, 3, 2, 0, false), torch_pool_out(H, 3, 2, 0, false)};
    ASSERT_EQ(ps.OH(), P.OH);
    fvec xf = random_distinct(size_t(N) * H * H * C, 77 + H, 1e-3f);
    fvec dyf = random_floats(size_t(N) * P.OH * P.OW * C, 78 + H);
    dvec y, dx;
    std::vector<size_t> am;
    maxpool_ref_forward(P, N, to_double(xf), y, am);
    maxpool_ref_backward(am, xf.size(), to_double(dyf), dx);
    fvec yf(y.size()), dxf(dx.size());
    try {
      ft::MaxPool2d op(ps);
      op.forward(N, xf.data(), yf.data());
      op.backward(N, xf.data(), yf.data(), dyf.data(), dxf.data());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "MaxPool2d floor mode threw: " << e.what();
      continue;
    }
    expect_close(yf, y, 0, 0, "y");
    expect_close(dxf, dx, 1e-6, 1e-7, "dx");
  }
}

TEST(GradCheck, GlobalAvgPoolReference) {
  const int N = 2, H = 3, W = 5, C = 4;
  dvec x = random_doubles(size_t(N) * H * W * C, 11), r = random_doubles(size_t(N) * C, 12);
  dvec y, dx;
  avgpool_ref_forward(N, H, W, C, x, y);
  avgpool_ref_backward(N, H, W, C, r, dx);
  auto f = [&] {
    dvec yy;
    avgpool_ref_forward(N, H, W, C, x, yy);
    double acc = 0;
    for (size_t i = 0; i < yy.size(); ++i) acc += r[i] * yy[i];
    return acc;
  };
  check_gradient(f, x.data(), x.size(), dx.data(), "avgpool dx");
}

TEST(OpsTest, GlobalAvgPoolMatchesReference) {
  struct C {
    int N, H, W, C;
  };
  uint32_t seed = 500;
  for (auto c : {C{3, 13, 13, 17}, C{1, 13, 13, 1000}, C{3, 1, 1, 16}, C{2, 7, 5, 3}}) {
    SCOPED_TRACE("avgpool " + std::to_string(c.N) + "x" + std::to_string(c.H) + "x" +
                 std::to_string(c.W) + "x" + std::to_string(c.C));
    fvec xf = random_floats(size_t(c.N) * c.H * c.W * c.C, ++seed);
    fvec dyf = random_floats(size_t(c.N) * c.C, ++seed);
    dvec y, dx;
    avgpool_ref_forward(c.N, c.H, c.W, c.C, to_double(xf), y);
    avgpool_ref_backward(c.N, c.H, c.W, c.C, to_double(dyf), dx);
    fvec yf(y.size()), dxf(dx.size());
    ft::cpu::global_avgpool_forward(c.N, c.H, c.W, c.C, xf.data(), yf.data());
    ft::cpu::global_avgpool_backward(c.N, c.H, c.W, c.C, dyf.data(), dxf.data());
    near(yf, y, "avgpool y");
    near(dxf, dx, "avgpool dx", 1e-6);
  }
}

// =============================================================================================
// ReLU, concat/split.

TEST(GradCheck, ReluReference) {
  // Values at least 0.05 away from the kink.
  dvec x = random_doubles(64, 21);
  for (auto& v : x) v += v >= 0 ? 0.05 : -0.05;
  dvec r = random_doubles(64, 22), dx(64);
  for (size_t i = 0; i < x.size(); ++i) dx[i] = x[i] > 0 ? r[i] : 0.0;
  auto f = [&] {
    double a = 0;
    for (size_t i = 0; i < x.size(); ++i) a += r[i] * std::max(x[i], 0.0);
    return a;
  };
  auto rep = check_gradient(f, x.data(), x.size(), dx.data(), "relu dx");
  EXPECT_EQ(rep.skipped, 0u);
}

TEST(OpsTest, ReluMatchesReference) {
  const int64_t n = 1000;
  fvec x = random_floats(size_t(n), 31), dy = random_floats(size_t(n), 32);
  x[0] = 0.f;
  x[1] = -0.f;
  fvec y(x.size()), dx(x.size());
  ft::cpu::relu_forward(n, x.data(), y.data());
  ft::cpu::relu_backward(n, y.data(), dy.data(), dx.data());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(y[i], x[i] > 0 ? x[i] : 0.f) << i;
    ASSERT_EQ(dx[i], x[i] > 0 ? dy[i] : 0.f) << i;  // the mask is y > 0: zero at the kink
  }
  fvec z = x;  // in place
  ft::cpu::relu_forward(n, z.data(), z.data());
  EXPECT_EQ(z, y);
  fvec g = dy;
  ft::cpu::relu_backward(n, y.data(), g.data(), g.data());
  EXPECT_EQ(g, dx);
}

TEST(GradCheck, ConcatSplitReference) {
  // concat(a, b) along channels is a permutation: its gradient is split(r).
  const int P = 6, Ca = 3, Cb = 2, Ct = Ca + Cb;
  dvec a = random_doubles(size_t(P) * Ca, 41), b = random_doubles(size_t(P) * Cb, 42);
  dvec r = random_doubles(size_t(P) * Ct, 43), da(a.size()), dbv(b.size());
  for (int p = 0; p < P; ++p) {
    for (int c = 0; c < Ca; ++c) da[size_t(p) * Ca + c] = r[size_t(p) * Ct + c];
    for (int c = 0; c < Cb; ++c) dbv[size_t(p) * Cb + c] = r[size_t(p) * Ct + Ca + c];
  }
  auto f = [&] {
    double s = 0;
    for (int p = 0; p < P; ++p) {
      for (int c = 0; c < Ca; ++c) s += r[size_t(p) * Ct + c] * a[size_t(p) * Ca + c];
      for (int c = 0; c < Cb; ++c) s += r[size_t(p) * Ct + Ca + c] * b[size_t(p) * Cb + c];
    }
    return s;
  };
  check_gradient(f, a.data(), a.size(), da.data(), "concat da");
  check_gradient(f, b.data(), b.size(), dbv.data(), "concat db");
}

TEST(OpsTest, ChannelConcatSplit) {
  const int64_t P = 3 * 13 * 13;  // N * H * W
  const int Ca = 17, Cb = 16, Ct = Ca + Cb;
  fvec a = random_floats(size_t(P * Ca), 51), b = random_floats(size_t(P * Cb), 52);
  fvec y(size_t(P * Ct), 123.f);
  ft::cpu::channel_copy_in(P, Ca, 0, Ct, a.data(), y.data());
  // Only channels [0, Ca) were written.
  for (int64_t p = 0; p < P; ++p)
    for (int c = Ca; c < Ct; ++c) ASSERT_EQ(y[size_t(p * Ct + c)], 123.f);
  ft::cpu::channel_copy_in(P, Cb, Ca, Ct, b.data(), y.data());
  for (int64_t p = 0; p < P; ++p) {
    for (int c = 0; c < Ca; ++c) ASSERT_EQ(y[size_t(p * Ct + c)], a[size_t(p * Ca + c)]);
    for (int c = 0; c < Cb; ++c) ASSERT_EQ(y[size_t(p * Ct + Ca + c)], b[size_t(p * Cb + c)]);
  }
  fvec a2(a.size()), b2(b.size());
  ft::cpu::channel_copy_out(P, Ca, 0, Ct, y.data(), a2.data());
  ft::cpu::channel_copy_out(P, Cb, Ca, Ct, y.data(), b2.data());
  EXPECT_EQ(a2, a);
  EXPECT_EQ(b2, b);
}

// =============================================================================================
// Dropout.

TEST(GradCheck, DropoutReference) {
  const int N = 2, H = 2, W = 3, C = 4;
  const float p = 0.5f;
  std::vector<int64_t> samples = {10, 3};
  auto mask = dropout_ref_mask(N, H, W, C, p, 1, 2, samples);
  dvec x = random_doubles(mask.size(), 61), r = random_doubles(mask.size(), 62), dx;
  dropout_ref(mask, p, r, dx);  // backward = the same mask and scale
  auto f = [&] {
    dvec y;
    dropout_ref(mask, p, x, y);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += r[i] * y[i];
    return s;
  };
  check_gradient(f, x.data(), x.size(), dx.data(), "dropout dx");
}

TEST(OpsTest, DropoutMatchesReference) {
  struct C {
    int N, H, W, C;
    float p;
  };
  uint32_t seed = 700;
  for (auto c : {C{3, 13, 13, 17, 0.5f}, C{2, 1, 1, 512, 0.5f}, C{3, 5, 7, 3, 0.2f},
                 C{1, 13, 13, 16, 0.9f}}) {
    SCOPED_TRACE("dropout p=" + std::to_string(c.p));
    std::vector<int64_t> samples;
    for (int n = 0; n < c.N; ++n) samples.push_back(1000003LL * (n + 1) + 17);
    const uint64_t sd = 42, step = 9;
    auto mask = dropout_ref_mask(c.N, c.H, c.W, c.C, c.p, sd, step, samples);
    fvec xf = random_floats(mask.size(), ++seed), dyf = random_floats(mask.size(), ++seed);
    dvec y, dx;
    dropout_ref(mask, c.p, to_double(xf), y);
    dropout_ref(mask, c.p, to_double(dyf), dx);
    fvec yf(y.size()), dxf(dx.size());
    ft::cpu::dropout_forward(c.N, c.H, c.W, c.C, 0, c.p, sd, step, samples.data(), xf.data(), yf.data());
    ft::cpu::dropout_backward(c.N, c.H, c.W, c.C, 0, c.p, sd, step, samples.data(), dyf.data(), dxf.data());
    expect_close(yf, y, 1e-6, 0, "dropout y");
    expect_close(dxf, dx, 1e-6, 0, "dropout dx");
    size_t zero_mismatch = 0;  // dropped elements are exactly zero, kept ones non-zero
    for (size_t i = 0; i < mask.size(); ++i)
      zero_mismatch += (yf[i] == 0.f) == bool(mask[i]) && xf[i] != 0.f;
    EXPECT_EQ(zero_mismatch, 0u);
    fvec z = xf;  // in place
    ft::cpu::dropout_forward(c.N, c.H, c.W, c.C, 0, c.p, sd, step, samples.data(), z.data(), z.data());
    EXPECT_EQ(z, yf);
  }
}

TEST(OpsTest, DropoutMaskDependsOnSampleNotBatchPosition) {
  const int H = 3, W = 4, C = 16;
  const float p = 0.5f;
  const size_t per = size_t(H) * W * C;
  fvec ones(3 * per, 1.f), ya(3 * per), yb(per);
  std::vector<int64_t> batch = {7, 123456789, 42};
  ft::cpu::dropout_forward(3, H, W, C, 0, p, 5, 11, batch.data(), ones.data(), ya.data());
  for (int n = 0; n < 3; ++n) {
    // Sample batch[n] alone in a batch of one (another rank, another position).
    ft::cpu::dropout_forward(1, H, W, C, 0, p, 5, 11, &batch[size_t(n)], ones.data(), yb.data());
    EXPECT_TRUE(std::equal(yb.begin(), yb.end(), ya.begin() + n * per)) << "sample " << batch[n];
  }
  // Different samples get different masks.
  EXPECT_FALSE(std::equal(ya.begin(), ya.begin() + per, ya.begin() + per));
}

TEST(OpsTest, DropoutKeepRateAndKeying) {
  const int N = 4, H = 13, W = 13, C = 512;  // 346k elements
  const size_t n = size_t(N) * H * W * C;
  std::vector<int64_t> samples = {0, 1, 2, 3};
  fvec ones(n, 1.f), y1(n), y2(n), y3(n);
  for (float p : {0.1f, 0.5f, 0.8f}) {
    SCOPED_TRACE("p=" + std::to_string(p));
    ft::cpu::dropout_forward(N, H, W, C, 0, p, 3, 0, samples.data(), ones.data(), y1.data());
    size_t kept = 0;
    for (float v : y1) {
      kept += v != 0.f;
      if (v != 0.f) {
        ASSERT_NEAR(v, 1.0 / (1.0 - p), 1e-6);
      }
    }
    const double rate = double(kept) / double(n);
    const double sigma = std::sqrt(p * (1 - p) / double(n));
    EXPECT_NEAR(rate, 1.0 - p, 6 * sigma) << "keep rate";
    // Another step: a different mask, agreeing on about p^2 + (1-p)^2 of the elements.
    ft::cpu::dropout_forward(N, H, W, C, 0, p, 3, 1, samples.data(), ones.data(), y2.data());
    // Another seed: different too.
    ft::cpu::dropout_forward(N, H, W, C, 0, p, 4, 0, samples.data(), ones.data(), y3.data());
    size_t same_step = 0, same_seed = 0;
    for (size_t i = 0; i < n; ++i) {
      same_step += (y1[i] != 0.f) == (y2[i] != 0.f);
      same_seed += (y1[i] != 0.f) == (y3[i] != 0.f);
    }
    const double agree = double(p) * p + double(1 - p) * (1 - p);
    EXPECT_NEAR(double(same_step) / double(n), agree, 0.01) << "steps 0 and 1";
    EXPECT_NEAR(double(same_seed) / double(n), agree, 0.01) << "seeds 3 and 4";
    // Same key: the same mask again.
    ft::cpu::dropout_forward(N, H, W, C, 0, p, 3, 0, samples.data(), ones.data(), y2.data());
    EXPECT_EQ(y1, y2);
  }
  // p = 0: the identity.
  fvec x = random_floats(n, 5), y(n);
  ft::cpu::dropout_forward(N, H, W, C, 0, 0.f, 3, 0, samples.data(), x.data(), y.data());
  EXPECT_EQ(x, y);
}

// =============================================================================================
// Softmax cross-entropy.

TEST(GradCheck, SoftmaxXentReference) {
  const int n = 3, K = 7;
  const double denom = 5;  // the global batch, larger than the local n
  dvec z = random_doubles(size_t(n) * K, 81, -3, 3);
  std::vector<int32_t> labels = {0, 6, 3};
  XentRef r = xent_ref(n, K, z, labels, denom);
  auto f = [&] { return xent_ref(n, K, z, labels, denom).loss_sum / denom; };
  GradCheckOptions o;  // smooth: no kinks to detect (h·f'' would look like one)
  o.h = 1e-5;
  o.threshold = 1e-8;
  o.kink_tol = -1;
  auto rep = check_gradient(f, z.data(), z.size(), r.dlogits.data(), "xent dlogits", o);
  EXPECT_EQ(rep.checked, z.size());
}

TEST(OpsTest, SoftmaxXentMatchesReference) {
  const int n = 5, K = 10;
  fvec zf = random_floats(size_t(n) * K, 91, -4.f, 4.f);
  // Place each label at a chosen rank: 0, 2, 4 (top-5), 5 (not top-5), 9.
  const int ranks[n] = {0, 2, 4, 5, 9};
  std::vector<int32_t> labels(n);
  for (int i = 0; i < n; ++i) {
    std::vector<int> order(K);
    for (int k = 0; k < K; ++k) order[size_t(k)] = k;
    std::sort(order.begin(), order.end(),
              [&](int a, int b) { return zf[size_t(i) * K + a] > zf[size_t(i) * K + b]; });
    labels[size_t(i)] = order[size_t(ranks[i])];
  }
  for (double denom : {5.0, 12.0}) {
    XentRef r = xent_ref(n, K, to_double(zf), labels, denom);
    fvec d(size_t(n) * K, 3.f);
    auto st = ft::cpu::softmax_xent(n, K, zf.data(), labels.data(), denom, d.data());
    EXPECT_NEAR(st.loss_sum, r.loss_sum, 1e-5 * r.loss_sum);
    EXPECT_EQ(st.correct1, 1);
    EXPECT_EQ(st.correct5, 3);
    EXPECT_EQ(st.correct1, r.top1);
    EXPECT_EQ(st.correct5, r.top5);
    near(d, r.dlogits, "dlogits denom " + std::to_string(denom));
    // Evaluation: no dlogits.
    auto st2 = ft::cpu::softmax_xent(n, K, zf.data(), labels.data(), denom, nullptr);
    EXPECT_EQ(st2.loss_sum, st.loss_sum);
    EXPECT_EQ(st2.correct5, st.correct5);
  }
}

TEST(OpsTest, SoftmaxXentLargeLogitsAndManyClasses) {
  const int n = 3, K = 1000;
  fvec zf = random_floats(size_t(n) * K, 95, -5.f, 5.f);
  for (int k = 0; k < K; ++k) zf[size_t(k)] += 1000.f;      // row 0: huge positive
  for (int k = 0; k < K; ++k) zf[size_t(K + k)] -= 1000.f;  // row 1: huge negative
  std::vector<int32_t> labels = {3, 999, 500};
  XentRef r = xent_ref(n, K, to_double(zf), labels, n);
  fvec d(size_t(n) * K);
  auto st = ft::cpu::softmax_xent(n, K, zf.data(), labels.data(), n, d.data());
  ASSERT_TRUE(std::isfinite(st.loss_sum));
  EXPECT_NEAR(st.loss_sum, r.loss_sum, 1e-4 * r.loss_sum);
  EXPECT_EQ(st.correct1, r.top1);
  EXPECT_EQ(st.correct5, r.top5);
  near(d, r.dlogits, "dlogits");
  for (int i = 0; i < n; ++i) {  // each row of dlogits sums to 0
    double s = 0;
    for (int k = 0; k < K; ++k) s += d[size_t(i) * K + k];
    EXPECT_NEAR(s, 0.0, 1e-6);
  }
}

// =============================================================================================
// SGD.

/// torch.optim.SGD (dampening 0, no Nesterov): g = grad + wd w; buf = g on the first step,
/// else momentum buf + g; w -= lr buf. Without momentum there is no buffer.
void sgd_ref(double lr, double mom, double wd, bool first, dvec& w, const dvec& grad, dvec& buf) {
  for (size_t i = 0; i < w.size(); ++i) {
    const double g = grad[i] + wd * w[i];
    if (mom == 0) {
      w[i] -= lr * g;
      continue;
    }
    buf[i] = first ? g : mom * buf[i] + g;
    w[i] -= lr * buf[i];
  }
}

TEST(OpsTest, SgdMatchesTorchSemantics) {
  const size_t n = 4099;
  struct C {
    float lr, mom, wd;
  };
  for (auto c :
       {C{0.01f, 0.9f, 2e-4f}, C{0.04f, 0.9f, 0.f}, C{0.1f, 0.f, 5e-4f}, C{0.5f, 0.5f, 0.1f}}) {
    SCOPED_TRACE("lr " + std::to_string(c.lr) + " momentum " + std::to_string(c.mom) + " wd " +
                 std::to_string(c.wd));
    fvec wf = random_floats(n, 1), buf(n, 1e30f);  // garbage: the first step must overwrite it
    dvec w = to_double(wf), bd(n, 0.0);
    for (int step = 0; step < 5; ++step) {
      fvec gf = random_floats(n, 10 + step);
      ft::cpu::sgd_update(n, c.lr, c.mom, c.wd, step == 0, wf.data(), gf.data(), buf.data());
      sgd_ref(c.lr, c.mom, c.wd, step == 0, w, to_double(gf), bd);
      ASSERT_TRUE(expect_close(wf, w, 1e-5, 1e-6, "w after step " + std::to_string(step)));
      if (c.mom != 0.f) {
        ASSERT_TRUE(expect_close(buf, bd, 1e-5, 1e-6, "buf after step " + std::to_string(step)));
      }
    }
  }
}

// One hand-computed step: w = 1, grad = 0.5, wd = 0.1, lr = 0.1, momentum 0.9.
// step 1: g = 0.6, buf = 0.6, w = 0.94. step 2: g = 0.5 + 0.094 = 0.594, buf = 0.54 + 0.594 =
// 1.134, w = 0.94 - 0.1134 = 0.8266.
TEST(OpsTest, SgdByHand) {
  float w = 1.f, g = 0.5f, buf = -3.f;
  ft::cpu::sgd_update(1, 0.1f, 0.9f, 0.1f, true, &w, &g, &buf);
  EXPECT_NEAR(buf, 0.6f, 1e-6);
  EXPECT_NEAR(w, 0.94f, 1e-6);
  ft::cpu::sgd_update(1, 0.1f, 0.9f, 0.1f, false, &w, &g, &buf);
  EXPECT_NEAR(buf, 1.134f, 1e-6);
  EXPECT_NEAR(w, 0.8266f, 1e-6);
}

}  // namespace
