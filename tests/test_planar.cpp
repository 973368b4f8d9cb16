/// @brief The planar concat of Fire modules (issue 2: zero-copy concat): a Fire module's output
/// is stored as its expand1x1 part (N, H, W, e1) followed by its expand3x3 part (N, H, W, e3).
/// Checked here: the two-part convolution (ConvShape::C2) against the naive dense reference and
/// central differences (fp32 and bf16, ReLU on and off), max pooling and dropout per part against
/// the dense ops (bitwise), the strided add, and whole nets whose modules have uneven and
/// changing splits (identity bypass between different splits, bypass conv on a two-part input)
/// against the naive dense NaiveNet.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/naive.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/conv2d.hpp"
#include "firetrain/ops/elementwise.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/pool.hpp"

namespace ft {
namespace {
using namespace ft::test;
using fvec = std::vector<float>;

/// Dense (P, C1 + C2) -> planar [(P, C1) | (P, C2)].
template <class T>
std::vector<T> to_planar(const std::vector<T>& d, int64_t P, int C1, int C2) {
  const int C = C1 + C2;
  std::vector<T> r(d.size());
  for (int64_t p = 0; p < P; ++p)
    for (int c = 0; c < C; ++c)
      r[size_t(c < C1 ? p * C1 + c : P * C1 + p * C2 + (c - C1))] = d[size_t(p * C + c)];
  return r;
}
/// Planar [(P, C1) | (P, C2)] -> dense (P, C1 + C2).
template <class T>
std::vector<T> to_dense(const std::vector<T>& v, int64_t P, int C1, int C2) {
  const int C = C1 + C2;
  std::vector<T> r(v.size());
  for (int64_t p = 0; p < P; ++p)
    for (int c = 0; c < C; ++c)
      r[size_t(p * C + c)] = v[size_t(c < C1 ? p * C1 + c : P * C1 + p * C2 + (c - C1))];
  return r;
}

/// fp32 -> bf16 -> fp32, round to nearest even (oneDNN's f32 -> bf16 reorder).
float round_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}
dvec as_ref(const fvec& v, bool bf16) {
  dvec d(v.size());
  for (size_t i = 0; i < v.size(); ++i) d[i] = bf16 ? round_bf16(v[i]) : v[i];
  return d;
}

bool bitwise_equal(const fvec& a, const fvec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string conv_name(const ConvShape& s, int N) {
  return "N" + std::to_string(N) + " C" + std::to_string(s.C) + "+" + std::to_string(s.C2) +
         " O" + std::to_string(s.O) + " " + std::to_string(s.H) + "x" + std::to_string(s.W) +
         " k" + std::to_string(s.k) + " s" + std::to_string(s.stride) + " p" +
         std::to_string(s.pad) + (s.relu ? " relu" : "") + (s.bf16 ? " bf16" : " fp32");
}

struct C2Case {
  ConvShape s;  // with C2 > 0
  int N;
};
std::vector<C2Case> c2_cases() {
  auto sh = [](int C, int C2, int O, int H, int W, int k, int st, int p) {
    ConvShape s{C, O, H, W, k, st, p, true};
    s.C2 = C2;
    return s;
  };
  return {
      {sh(5, 3, 7, 6, 5, 1, 1, 0), 2},      // 1×1 (a squeeze)
      {sh(4, 6, 6, 7, 7, 3, 1, 1), 2},      // 3×3 pad 1
      {sh(3, 2, 4, 9, 8, 3, 2, 1), 3},      // stride 2, odd sizes
      {sh(32, 32, 16, 13, 13, 1, 1, 0), 2}, // SqueezeNet-like squeeze (blocked kernels)
      {sh(16, 48, 24, 7, 7, 3, 1, 1), 2},   // uneven parts
      {sh(64, 64, 10, 3, 3, 1, 1, 0), 3},   // conv10-like
  };
}

/// The two-part op on the planar input against the naive dense convolution on the dense input
/// (bf16: fed with the bf16-rounded x, w and masked dy, as tests/test_bf16.cpp argues: only
/// fp32 summation order separates them).
void c2_against_naive(ConvShape s, int N, uint32_t seed) {
  SCOPED_TRACE(conv_name(s, N));
  const int64_t P = int64_t(N) * s.H * s.W;
  const fvec xd = random_floats(size_t(P * s.Ct()), seed);
  const fvec w = random_floats(size_t(s.weight_numel()), seed + 1, -0.3f, 0.3f);
  const fvec b = random_floats(size_t(s.O), seed + 2, -0.1f, 0.1f);
  const fvec dy = random_floats(size_t(N) * s.OH() * s.OW() * s.O, seed + 3);
  const fvec xp = to_planar(xd, P, s.C, s.C2);

  Conv2d op(s);
  fvec y(dy.size(), 7.f);
  op.forward(N, xp.data(), w.data(), b.data(), y.data());
  ConvShape dense = s;
  dense.C = s.Ct();
  dense.C2 = 0;
  const dvec xr = as_ref(xd, s.bf16), wr = as_ref(w, s.bf16);
  dvec yr;
  conv_ref_forward(dense, N, xr, wr, to_double(b), yr);
  expect_close(y, yr, 1e-4, 0, "y");

  fvec g = dy, dxp(xp.size(), 7.f), dw(w.size(), 7.f), db(b.size(), 7.f);
  op.backward(N, xp.data(), w.data(), y.data(), g.data(), dxp.data(), dw.data(), db.data());
  fvec masked = dy;
  if (s.relu)
    for (size_t i = 0; i < masked.size(); ++i) masked[i] = y[i] > 0 ? dy[i] : 0.f;
  dvec dxr, dwr, dbr, none;
  ConvShape plain = dense;
  plain.relu = false;
  conv_ref_backward(plain, N, xr, wr, none, as_ref(masked, s.bf16), dxr, dwr, dbr);
  expect_close(to_dense(dxp, P, s.C, s.C2), dxr, 1e-4, 0, "dx (both parts)");
  expect_close(dw, dwr, 1e-4, 0, "dw");
  expect_close(db, dbr, 1e-4, 0, "db");

  // The dense op on the dense input computes the same (a different summation split only).
  Conv2d dop(dense);
  fvec yd(y.size()), gd = dy, dxd(xd.size()), dwd(w.size()), dbd(b.size());
  dop.forward(N, xd.data(), w.data(), b.data(), yd.data());
  dop.backward(N, xd.data(), w.data(), y.data(), gd.data(), dxd.data(), dwd.data(), dbd.data());
  expect_close(dxd, dxr, 1e-4, 0, "dense op: dx");
  expect_close(y, yd, 1e-4, 1e-5 * abs_max(yd.data(), yd.size()), "y vs the dense op");
  expect_close(to_dense(dxp, P, s.C, s.C2), dxd, 1e-4, 0, "dx vs the dense op");
  expect_close(dw, dwd, 1e-4, 0, "dw vs the dense op");

  // First layer: no dx; the weight gradients are the same.
  fvec g2 = dy, dw2(w.size(), 7.f), db2(b.size(), 7.f);
  op.backward(N, xp.data(), w.data(), y.data(), g2.data(), nullptr, dw2.data(), db2.data());
  EXPECT_TRUE(bitwise_equal(dw2, dw)) << "dw with dx = nullptr";
  EXPECT_TRUE(bitwise_equal(db2, db)) << "db with dx = nullptr";
}

TEST(Planar, TwoPartConvMatchesNaive) {
  uint32_t seed = 300;
  for (const auto& c : c2_cases())
    for (bool relu : {true, false})
      for (bool bf16 : {false, true}) {
        ConvShape s = c.s;
        s.relu = relu;
        s.bf16 = bf16;
        c2_against_naive(s, c.N, seed += 10);
      }
}

// The same op object at two batch sizes and back, with the weights changed in place between
// steps (the per-part reordered weights must follow).
TEST(Planar, TwoPartConvBatchSizesAndWeightUpdates) {
  ConvShape s{24, 16, 9, 9, 3, 1, 1, true};
  s.C2 = 8;
  Conv2d op(s);
  fvec w = random_floats(size_t(s.weight_numel()), 1, -0.3f, 0.3f);
  const fvec b = random_floats(size_t(s.O), 2, -0.1f, 0.1f);
  for (int N : {2, 3, 2}) {
    SCOPED_TRACE("N = " + std::to_string(N));
    for (auto& v : w) v *= 0.9f;
    const int64_t P = int64_t(N) * s.H * s.W;
    const fvec xd = random_floats(size_t(P * s.Ct()), uint32_t(10 + N));
    const fvec xp = to_planar(xd, P, s.C, s.C2);
    fvec y(size_t(N) * s.OH() * s.OW() * s.O);
    op.forward(N, xp.data(), w.data(), b.data(), y.data());
    ConvShape dense = s;
    dense.C = s.Ct();
    dense.C2 = 0;
    dvec yr;
    conv_ref_forward(dense, N, to_double(xd), to_double(w), to_double(b), yr);
    expect_close(y, yr, 1e-4, 0, "y");
    fvec dy = random_floats(y.size(), uint32_t(20 + N)), dxp(xp.size()), dw(w.size()), db(b.size());
    op.backward(N, xp.data(), w.data(), y.data(), dy.data(), dxp.data(), dw.data(), db.data());
    dvec dxr, dwr, dbr;
    conv_ref_backward(dense, N, to_double(xd), to_double(w), yr,
                      to_double(random_floats(y.size(), uint32_t(20 + N))), dxr, dwr, dbr);
    expect_close(to_dense(dxp, P, s.C, s.C2), dxr, 1e-4, 0, "dx");
    expect_close(dw, dwr, 1e-4, 0, "dw");
    expect_close(db, dbr, 1e-4, 0, "db");
  }
}

// The fp32 two-part op's gradients against central differences of f = sum(r * y) computed by
// the op itself (in float; f is piecewise linear, so central differences are exact between kinks).
TEST(Planar, TwoPartConvFiniteDifferences) {
  uint32_t seed = 900;
  for (bool relu : {false, true})
    for (auto [shape, N] : {std::pair{ConvShape{3, 4, 5, 6, 3, 1, 1, true}, 2},
                            std::pair{ConvShape{2, 3, 7, 7, 1, 1, 0, true}, 1},
                            std::pair{ConvShape{4, 5, 8, 7, 3, 2, 1, true}, 2}}) {
      ConvShape s = shape;
      s.C2 = s.C + 1;
      s.relu = relu;
      SCOPED_TRACE(conv_name(s, N));
      Conv2d op(s);
      const int64_t P = int64_t(N) * s.H * s.W;
      dvec x = random_doubles(size_t(P * s.Ct()), ++seed);  // planar
      dvec w = random_doubles(size_t(s.weight_numel()), ++seed, -0.5, 0.5);
      dvec b = random_doubles(size_t(s.O), ++seed, -0.2, 0.2);
      const fvec r = random_floats(size_t(N) * s.OH() * s.OW() * s.O, ++seed);
      auto f = [&] {
        const fvec xf = to_float(x), wf = to_float(w), bf = to_float(b);
        fvec y(r.size());
        op.forward(N, xf.data(), wf.data(), bf.data(), y.data());
        double acc = 0;
        for (size_t i = 0; i < y.size(); ++i) acc += double(r[i]) * y[i];
        return acc;
      };
      const fvec xf = to_float(x), wf = to_float(w), bf = to_float(b);
      fvec y(r.size()), g = r, dx(xf.size()), dw(wf.size()), db(bf.size());
      op.forward(N, xf.data(), wf.data(), bf.data(), y.data());
      op.backward(N, xf.data(), wf.data(), y.data(), g.data(), dx.data(), dw.data(), db.data());
      // Linear without ReLU: a large step (float rounding of f matters less). With ReLU: a
      // small one, so that few outputs cross 0 (those points are skipped as kinks).
      GradCheckOptions o;
      o.h = relu ? 2e-3 : 3e-2;
      o.threshold = relu ? 5e-3 : 2e-3;
      o.kink_tol = relu ? 5e-3 : -1;
      o.max_points = 120;
      o.max_skipped_percent = 40;  // (db of O = 3: one kink is 33%)
      const dvec dxd = to_double(dx), dwd = to_double(dw), dbd = to_double(db);
      auto rx = check_gradient(f, x.data(), x.size(), dxd.data(), "dx (planar)", o);
      check_gradient(f, w.data(), w.size(), dwd.data(), "dw", o);
      check_gradient(f, b.data(), b.size(), dbd.data(), "db", o);
      EXPECT_GT(rx.checked, 20u);
    }
}

// Max pooling a planar tensor part by part equals pooling the dense tensor (values with many
// ties: the first maximum wins in both), forward and backward, bit for bit.
TEST(Planar, MaxPoolPerPartEqualsDense) {
  const int N = 2, H = 13, W = 11, C1 = 5, C2 = 7, C = C1 + C2;
  PoolShape ps{C, H, W, 3, 2, 0, true};
  const int OH = ps.OH(), OW = ps.OW();
  const int64_t P = int64_t(N) * H * W, PO = int64_t(N) * OH * OW;
  fvec x = random_floats(size_t(P * C), 5, -2.f, 2.f);
  for (auto& v : x) v = float(int(v * 2)) / 2;  // ties
  const fvec dy = random_floats(size_t(PO * C), 6);
  MaxPool2d dense(ps);
  fvec y(size_t(PO * C)), dx(x.size());
  dense.forward(N, x.data(), y.data());
  dense.backward(N, x.data(), y.data(), dy.data(), dx.data());

  PoolShape p1 = ps, p2 = ps;
  p1.C = C1;
  p2.C = C2;
  MaxPool2d a(p1), b(p2);
  const fvec xp = to_planar(x, P, C1, C2), dyp = to_planar(dy, PO, C1, C2);
  fvec yp(y.size(), 7.f), dxp(x.size(), 7.f);
  a.forward(N, xp.data(), yp.data());
  b.forward(N, xp.data() + P * C1, yp.data() + PO * C1);
  a.backward(N, xp.data(), yp.data(), dyp.data(), dxp.data());
  b.backward(N, xp.data() + P * C1, yp.data() + PO * C1, dyp.data() + PO * C1,
             dxp.data() + P * C1);
  EXPECT_TRUE(bitwise_equal(to_dense(yp, PO, C1, C2), y)) << "forward";
  EXPECT_TRUE(bitwise_equal(to_dense(dxp, P, C1, C2), dx)) << "backward";
}

// Dropout per part with the global channel offset gives the dense tensor's mask, bit for bit;
// without the offset the second part's mask differs (so the offset matters).
TEST(Planar, DropoutPerPartEqualsDense) {
  const int N = 3, H = 4, W = 5, C1 = 6, C2 = 10, C = C1 + C2;
  const int64_t P = int64_t(N) * H * W;
  const std::vector<int64_t> samples = {11, 3, 123456789};
  const fvec x = random_floats(size_t(P * C), 7), dy = random_floats(size_t(P * C), 8);
  for (float p : {0.3f, 0.5f}) {
    SCOPED_TRACE("p = " + std::to_string(p));
    fvec y(x.size()), dx(x.size());
    cpu::dropout_forward(N, H, W, C, 0, p, 42, 9, samples.data(), x.data(), y.data());
    cpu::dropout_backward(N, H, W, C, 0, p, 42, 9, samples.data(), dy.data(), dx.data());
    const fvec xp = to_planar(x, P, C1, C2), dyp = to_planar(dy, P, C1, C2);
    fvec yp(x.size(), 7.f), dxp(x.size(), 7.f);
    cpu::dropout_forward(N, H, W, C1, 0, p, 42, 9, samples.data(), xp.data(), yp.data());
    cpu::dropout_forward(N, H, W, C2, C1, p, 42, 9, samples.data(), xp.data() + P * C1,
                         yp.data() + P * C1);
    cpu::dropout_backward(N, H, W, C1, 0, p, 42, 9, samples.data(), dyp.data(), dxp.data());
    cpu::dropout_backward(N, H, W, C2, C1, p, 42, 9, samples.data(), dyp.data() + P * C1,
                          dxp.data() + P * C1);
    EXPECT_TRUE(bitwise_equal(to_dense(yp, P, C1, C2), y)) << "forward";
    EXPECT_TRUE(bitwise_equal(to_dense(dxp, P, C1, C2), dx)) << "backward";
    fvec wrong(size_t(P * C2));
    cpu::dropout_forward(N, H, W, C2, 0, p, 42, 9, samples.data(), xp.data() + P * C1,
                         wrong.data());
    EXPECT_FALSE(bitwise_equal(wrong, fvec(yp.begin() + P * C1, yp.end())))
        << "the offset does not change the mask";
  }
}

TEST(Planar, StridedAdd) {
  const int64_t P = 37;
  const int ldx = 9, ldy = 13, n = 6;
  const fvec x = random_floats(size_t(P * ldx), 1), y0 = random_floats(size_t(P * ldy), 2);
  fvec y = y0;
  cpu::strided_add(P, n, x.data() + 2, ldx, y.data() + 5, ldy);
  for (int64_t p = 0; p < P; ++p)
    for (int c = 0; c < ldy; ++c) {
      const float want = c >= 5 && c < 5 + n ? y0[size_t(p * ldy + c)] + x[size_t(p * ldx + 2 + c - 5)]
                                             : y0[size_t(p * ldy + c)];
      ASSERT_EQ(y[size_t(p * ldy + c)], want) << p << " " << c;
    }
}

/// ft::Net (planar Fire outputs) against the naive dense NaiveNet: every logit and every
/// parameter gradient (as tests/test_design.cpp's comparison, bypass convs made non-zero).
void net_against_naive(const NetSpec& spec, int N, uint32_t seed) {
  SCOPED_TRACE(spec.arch + " bypass " + spec.bypass + " " + spec.fire.label());
  Net net(spec);
  net.init_weights(seed);
  for (auto& v : net.param_views()) {
    if (v.name == "classifier.1.weight")
      for (size_t j = 0; j < v.numel(); ++j) v.data[j] *= 30.f;
    if (v.name.find(".bypass.") != std::string::npos) {
      const fvec r = random_floats(v.numel(), uint32_t(seed + v.offset), -0.2f, 0.2f);
      std::copy(r.begin(), r.end(), v.data);
    }
  }
  std::vector<std::array<int, 3>> fires;
  for (auto& f : fire_configs(spec.fire)) fires.push_back({f.s1, f.e1, f.e3});
  NaiveNet ref(spec.arch, spec.in_channels, spec.height, spec.width, spec.num_classes,
               spec.bypass, fires);
  ASSERT_EQ(ref.num_params(), net.num_params());
  for (size_t i = 0; i < net.num_params(); ++i) ref.params[i] = net.params()[i];
  const int K = spec.num_classes;
  const fvec x = random_floats(size_t(N) * spec.height * spec.width * spec.in_channels, seed + 1);
  std::vector<int32_t> labels;
  for (int n = 0; n < N; ++n) labels.push_back(int32_t((n * 3 + 1) % K));
  PassContext ctx;
  ctx.N = N;
  const dvec& zr = ref.forward(N, to_double(x));
  const float* zp = net.forward(ctx, x.data());
  const fvec z(zp, zp + size_t(N) * K);
  expect_close(z, zr, 1e-4, 1e-5 * abs_max(zr.data(), zr.size()), "logits");
  XentRef xr = xent_ref(N, K, zr, labels, N);
  ref.backward(xr.dlogits);
  fvec dl(z.size());
  cpu::softmax_xent(N, K, z.data(), labels.data(), N, dl.data());
  net.backward(ctx, dl.data());
  size_t nonzero = 0;
  for (auto& v : net.param_views()) {
    const double* g = ref.grads.data() + v.offset;
    const double scale = abs_max(g, v.numel());
    CloseReport r = compare(v.grad, g, v.numel(), 0, 1e-4 * scale);
    if (!r.ok) ADD_FAILURE() << r.str(v.name);
    nonzero += scale > 0;
  }
  EXPECT_GT(nonzero, net.param_views().size() * 3 / 4) << "most gradients are zero";
}

// Splits that change from module to module: the simple bypass adds between different splits
// (5 -> 9 at fire3, 10 -> 6 at fire5, 8 -> 3 at fire7, 10 -> 15 at fire9).
TEST(Planar, NetWithChangingSplitsMatchesNaive) {
  NetSpec spec{"squeezenet_small", 1, 12, 12, 5, 0.5f};
  spec.fire.list = "4:5:11,4:9:7,4:10:6,4:6:10,5:8:8,5:3:13,6:10:10,6:15:5";
  for (const char* b : {"none", "simple"}) {
    spec.bypass = b;
    net_against_naive(spec, 2, 11);
  }
}

// The complex bypass: fire2's identity adds the dense stem output (64 channels) into a 20/44
// planar output; fire3's bypass conv reads a two-part input and writes a 9/7 split.
TEST(Planar, NetComplexBypassDenseAndPlanarInputsMatchesNaive) {
  NetSpec spec{"squeezenet_small", 2, 12, 12, 4, 0.5f};
  spec.fire.list = "4:20:44,4:9:7,4:10:6,4:6:10,5:8:8,5:3:13,6:10:10,6:15:5";
  spec.bypass = "complex";
  net_against_naive(spec, 2, 12);
  NetSpec v10{"squeezenet1_0", 3, 48, 48, 6, 0.5f};
  v10.bypass = "complex";
  v10.fire.list = "4:30:66,4:9:7,4:10:6,4:6:10,5:8:8,5:3:13,6:10:10,6:15:5";  // 96 = conv1
  net_against_naive(v10, 2, 13);
}

}  // namespace
}  // namespace ft
