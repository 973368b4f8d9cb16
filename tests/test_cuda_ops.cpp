/// @brief CUDA ops against the CPU ones (CudaOps): convolution (forward y, backward dx/dw/db,
/// the in-place ReLU mask of dy), max and global average pooling, the element-wise ops, dropout,
/// softmax cross-entropy, SGD, and the fully connected layer, on random inputs; and the 16-bit
/// (bf16, fp16) versions of the ops that handle activations (tolerances in their section).
///
/// Tolerances: exact equality where both devices do the same float operations per element
/// (ReLU, copies, masks, dropout, max pooling with ties built on purpose and dyadic gradients so
/// that any summation order is exact); norm-wise relative error ||a - b|| / ||b|| <= 1e-4 for
/// convolutions and the linear layer (different summation orders, fp32 without TF32); tighter
/// bounds for the short reductions.
///
/// Every test skips when the backend is not built or no GPU is visible. This file is plain C++
/// (public headers only) and compiles in a CPU-only build, where it registers one skipped test.
#include <gtest/gtest.h>

#include "firetrain/core/device.hpp"

#ifdef FT_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "firetrain/core/half.hpp"
#include "firetrain/ops/act.hpp"
#include "firetrain/ops/conv2d.hpp"
#include "firetrain/ops/elementwise.hpp"
#include "firetrain/ops/linear.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/ops.hpp"
#include "firetrain/ops/pool.hpp"
#include "firetrain/ops/scale.hpp"
#include "firetrain/ops/sgd.hpp"

namespace {

using ft::ConvShape;
using ft::Device;
using ft::PoolShape;
using ft::test::random_floats;
using fvec = std::vector<float>;

#define FT_REQUIRE_GPU()                                                    \
  do {                                                                      \
    if (!ft::cuda_built()) GTEST_SKIP() << "CUDA backend not built";        \
    if (ft::cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible";     \
    ft::cuda::set_device(0);                                                \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Helpers.

template <class T>
ft::Array<T> to_dev(const std::vector<T>& v) {
  ft::Array<T> a(Device::CUDA, v.size());
  if (!v.empty()) a.upload(v.data(), v.size());
  return a;
}

template <class T>
std::vector<T> to_host(const ft::Array<T>& a) {
  std::vector<T> v(a.size());
  if (!v.empty()) a.download(v.data(), v.size());
  return v;
}

fvec filled(size_t n, float v) { return fvec(n, v); }

fvec scaled(fvec v, float s) {
  for (auto& x : v) x *= s;
  return v;
}

/// Random multiples of 1/8 in [-lo/8, hi/8]: sums of a few of them are exact in float.
fvec dyadic(size_t n, uint32_t seed, int lo = -4, int hi = 4) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  fvec v(n);
  for (auto& x : v) x = float(d(g)) / 8.f;
  return v;
}

/// ||a - b||_2 / ||b||_2 (0 when both are zero).
double norm_rel_err(const fvec& a, const fvec& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  if (num == 0) return 0;
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

/// Norm-wise relative closeness of `got` (GPU) to `ref` (CPU); names the worst element.
void expect_rel(const fvec& got, const fvec& ref, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what << ": sizes differ";
  const double e = norm_rel_err(got, ref);
  size_t worst = 0;
  double wd = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(ref[i]));
    if (!(d <= wd)) wd = d, worst = i;  // also catches NaN
  }
  std::printf("[ measured ] %s: norm-wise relative error %.3g (bound %.3g)\n", what.c_str(), e,
              tol);
  EXPECT_LE(e, tol) << what << ": norm-wise relative error " << e << " (worst element " << worst
                    << ": cuda " << (got.empty() ? 0.f : got[worst]) << " vs cpu "
                    << (ref.empty() ? 0.f : ref[worst]) << ")";
  for (float x : got)
    if (!std::isfinite(x)) {
      ADD_FAILURE() << what << ": non-finite value in the CUDA result";
      break;
    }
}

/// Bit-for-bit equality (as float values).
template <class T>
void expect_same(const std::vector<T>& got, const std::vector<T>& ref, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what << ": sizes differ";
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(got[i] == ref[i])) {
      if (bad == 0) first = i;
      ++bad;
    }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size()
                     << " elements differ, first at " << first << ": cuda "
                     << (bad ? got[first] : T()) << " vs cpu " << (bad ? ref[first] : T());
}

// ---------------------------------------------------------------------------------------------
// Convolution.

ConvShape conv_shape(int C, int O, int H, int W, int k, int stride, int pad, bool relu) {
  ConvShape s;
  s.C = C, s.O = O, s.H = H, s.W = W, s.k = k, s.stride = stride, s.pad = pad, s.relu = relu;
  return s;
}

std::string conv_str(const ConvShape& s, int N) {
  std::ostringstream os;
  os << "conv N=" << N << " C=" << s.C << "+" << s.C2 << " O=" << s.O << " " << s.H << "x" << s.W
     << " k=" << s.k << " s=" << s.stride << " p=" << s.pad << (s.relu ? " relu" : "");
  return os.str();
}

struct ConvData {
  fvec x, w, b, dy;
};

ConvData conv_data(const ConvShape& s, int N, uint32_t seed) {
  ConvData d;
  const float ws = 1.f / std::sqrt(float(s.Ct() * s.k * s.k));
  d.x = random_floats(size_t(N) * s.H * s.W * s.Ct(), seed);  // two parts back to back if C2 > 0
  d.w = scaled(random_floats(size_t(s.weight_numel()), seed + 1), ws);
  d.b = random_floats(size_t(s.O), seed + 2, -0.2f, 0.2f);
  d.dy = random_floats(size_t(N) * s.OH() * s.OW() * s.O, seed + 3);
  return d;
}

/// Forward and backward on both devices, with the same Conv2d objects for every batch size in
/// `batches` (so the per-batch plans and the reordered-weight cache are exercised). The CUDA
/// backward gets the CPU's y, so that both apply the same ReLU mask (a y within rounding of 0
/// could otherwise flip it); the CUDA forward is checked separately against the CPU's y.
/// with_dx = false checks the first-layer case (dx null); mask_y = false passes y = nullptr.
void conv_parity(const ConvShape& s, const std::vector<int>& batches, uint32_t seed,
                 bool with_dx = true, bool mask_y = true) {
  ft::Conv2d cpu(s, Device::CPU), gpu(s, Device::CUDA);
  for (int N : batches) {
    SCOPED_TRACE(conv_str(s, N));
    ConvData d = conv_data(s, N, seed + uint32_t(N) * 16);
    const size_t ny = size_t(N) * s.OH() * s.OW() * s.O, nx = d.x.size();

    // Forward.
    fvec y_cpu(ny);
    cpu.forward(N, d.x.data(), d.w.data(), d.b.data(), y_cpu.data());
    auto x_d = to_dev(d.x), w_d = to_dev(d.w), b_d = to_dev(d.b);
    auto y_d = to_dev(filled(ny, 7.f));
    gpu.forward(N, x_d.data(), w_d.data(), b_d.data(), y_d.data());
    expect_rel(to_host(y_d), y_cpu, 1e-4, "forward y");

    // Backward.
    fvec dy_cpu = d.dy, dx_cpu(with_dx ? nx : 0), dw_cpu(d.w.size()), db_cpu(size_t(s.O));
    cpu.backward(N, d.x.data(), d.w.data(), mask_y ? y_cpu.data() : nullptr, dy_cpu.data(),
                 with_dx ? dx_cpu.data() : nullptr, dw_cpu.data(), db_cpu.data());
    auto yref_d = to_dev(y_cpu), dy_d = to_dev(d.dy);
    auto dx_d = to_dev(filled(with_dx ? nx : 0, 7.f));
    auto dw_d = to_dev(filled(d.w.size(), 7.f)), db_d = to_dev(filled(size_t(s.O), 7.f));
    gpu.backward(N, x_d.data(), w_d.data(), mask_y ? yref_d.data() : nullptr, dy_d.data(),
                 with_dx ? dx_d.data() : nullptr, dw_d.data(), db_d.data());
    expect_same(to_host(dy_d), dy_cpu, "dy after the in-place ReLU mask");
    if (with_dx) expect_rel(to_host(dx_d), dx_cpu, 1e-4, "backward dx");
    expect_rel(to_host(dw_d), dw_cpu, 1e-4, "backward dw (OIHW)");
    expect_rel(to_host(db_d), db_cpu, 1e-4, "backward db");
  }
}

// SqueezeNet's Fire expand 3x3 (pad 1), at two batch sizes and back.
TEST(CudaOps, ConvFireExpand3x3) {
  FT_REQUIRE_GPU();
  conv_parity(conv_shape(16, 64, 13, 13, 3, 1, 1, true), {2, 3, 2}, 100);
}

// The 7x7 stride-2 stem (SqueezeNet 1.0), C = 3, non-square input; also without dx.
TEST(CudaOps, ConvStem7x7Stride2) {
  FT_REQUIRE_GPU();
  const ConvShape s = conv_shape(3, 96, 39, 33, 7, 2, 0, true);
  conv_parity(s, {2}, 200);
  conv_parity(s, {3}, 210, /*with_dx=*/false);
}

// The 3x3 stride-2 stem (SqueezeNet 1.1) with padding.
TEST(CudaOps, ConvStem3x3Stride2Pad) {
  FT_REQUIRE_GPU();
  conv_parity(conv_shape(3, 64, 31, 29, 3, 2, 1, true), {2}, 250);
}

// 1x1 squeeze and expand (weights used in place: OIHW == OHWI), with and without ReLU.
TEST(CudaOps, Conv1x1) {
  FT_REQUIRE_GPU();
  conv_parity(conv_shape(96, 16, 9, 11, 1, 1, 0, true), {2, 4}, 300);
  conv_parity(conv_shape(16, 64, 7, 7, 1, 1, 0, false), {3}, 310);
  conv_parity(conv_shape(64, 100, 5, 5, 1, 1, 0, true), {2}, 320);  // conv10-like
}

/// Selects the CUDA two-part convolution (FT_CONV_TWO_PART, read when a Conv2d is made) for
/// the lifetime of this object.
struct TwoPartPath {
  explicit TwoPartPath(const char* v) { setenv("FT_CONV_TWO_PART", v, 1); }
  ~TwoPartPath() { unsetenv("FT_CONV_TWO_PART"); }
};
const char* const kTwoPartPaths[] = {"gemm", "copy"};

// Two-part input (C2 > 0, a Fire module's planar output: [x1 | x2] back to back). 1x1 shapes
// run as cuBLAS GEMMs on the parts in place (zero-copy, the default) or, with
// FT_CONV_TWO_PART=copy, as the dense convolution on a concat in scratch (dx split back);
// other shapes always copy. Both paths, uneven parts included.
TEST(CudaOps, ConvTwoPartInput) {
  FT_REQUIRE_GPU();
  for (const char* path : kTwoPartPaths) {
    SCOPED_TRACE(std::string("FT_CONV_TWO_PART=") + path);
    TwoPartPath use(path);
    ConvShape sq = conv_shape(64, 16, 9, 11, 1, 1, 0, true);  // a squeeze after a Fire module
    sq.C2 = 64;
    conv_parity(sq, {2, 3, 2}, 600);
    conv_parity(sq, {2}, 610, /*with_dx=*/false);
    ConvShape k3 = conv_shape(5, 7, 10, 9, 3, 2, 1, false);  // uneven parts, 3x3 stride 2
    k3.C2 = 11;
    conv_parity(k3, {3}, 620);
    ConvShape c10 = conv_shape(48, 10, 4, 4, 1, 1, 0, true);  // conv10-like
    c10.C2 = 80;
    conv_parity(c10, {2}, 630, true, /*mask_y=*/false);
    ConvShape odd = conv_shape(5, 9, 6, 7, 1, 1, 0, true);  // uneven, unaligned parts
    odd.C2 = 11;
    conv_parity(odd, {3, 1}, 640);
  }
  TwoPartPath bad("fast");
  try {
    ConvShape s2 = conv_shape(8, 4, 3, 3, 1, 1, 0, true);
    s2.C2 = 8;
    ft::Conv2d c2(s2, Device::CUDA);
    ADD_FAILURE() << "FT_CONV_TWO_PART=fast was accepted";
  } catch (const ft::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("FT_CONV_TWO_PART=fast"), std::string::npos) << e.what();
  }
}

// Odd sizes, stride 2 with padding, no ReLU; and ReLU with y = nullptr (dy already masked).
TEST(CudaOps, ConvOddShapes) {
  FT_REQUIRE_GPU();
  conv_parity(conv_shape(5, 7, 11, 8, 3, 2, 1, false), {1, 3}, 400);
  conv_parity(conv_shape(6, 9, 10, 12, 5, 1, 2, true), {2}, 410, true, /*mask_y=*/false);
}

// Enough rows (N*OH*OW) for many chunks in the bias-gradient reduction (the second: 73728
// rows in 1024 chunks, so each of the final sum's 128 threads per channel adds 8 of them).
TEST(CudaOps, ConvLargeBiasReduction) {
  FT_REQUIRE_GPU();
  conv_parity(conv_shape(8, 40, 32, 32, 3, 1, 1, true), {16}, 500);
  conv_parity(conv_shape(4, 8, 96, 96, 1, 1, 0, true), {8}, 510);
}

// Weights updated in place between steps (same pointer, new values) must be reordered again
// by forward; backward with another pointer than forward must use the weights it is given.
TEST(CudaOps, ConvWeightsReorderedPerStep) {
  FT_REQUIRE_GPU();
  const ConvShape s = conv_shape(8, 12, 9, 9, 3, 1, 1, true);
  const int N = 2;
  ft::Conv2d cpu(s, Device::CPU), gpu(s, Device::CUDA);
  ConvData d1 = conv_data(s, N, 600), d2 = conv_data(s, N, 700);
  const size_t ny = size_t(N) * s.OH() * s.OW() * s.O;
  auto x_d = to_dev(d1.x), w_d = to_dev(d1.w), b_d = to_dev(d1.b);
  auto y_d = to_dev(filled(ny, 0.f));
  gpu.forward(N, x_d.data(), w_d.data(), b_d.data(), y_d.data());
  // Step 2: new values at the same address.
  w_d.upload(d2.w.data(), d2.w.size());
  gpu.forward(N, x_d.data(), w_d.data(), b_d.data(), y_d.data());
  fvec y_cpu(ny);
  cpu.forward(N, d1.x.data(), d2.w.data(), d1.b.data(), y_cpu.data());
  expect_rel(to_host(y_d), y_cpu, 1e-4, "forward after an in-place weight update");

  // Backward with other weights (another buffer) than the forward's.
  auto w3_d = to_dev(d1.w);
  fvec dy_cpu = d1.dy, dx_cpu(d1.x.size()), dw_cpu(d1.w.size()), db_cpu(size_t(s.O));
  cpu.forward(N, d1.x.data(), d1.w.data(), d1.b.data(), y_cpu.data());
  cpu.backward(N, d1.x.data(), d1.w.data(), y_cpu.data(), dy_cpu.data(), dx_cpu.data(),
               dw_cpu.data(), db_cpu.data());
  auto yref_d = to_dev(y_cpu), dy_d = to_dev(d1.dy), dx_d = to_dev(filled(d1.x.size(), 7.f));
  auto dw_d = to_dev(filled(d1.w.size(), 7.f)), db_d = to_dev(filled(size_t(s.O), 7.f));
  gpu.backward(N, x_d.data(), w3_d.data(), yref_d.data(), dy_d.data(), dx_d.data(), dw_d.data(),
               db_d.data());
  expect_rel(to_host(dx_d), dx_cpu, 1e-4, "dx with the weights given to backward");
  expect_rel(to_host(dw_d), dw_cpu, 1e-4, "dw");
  expect_rel(to_host(db_d), db_cpu, 1e-4, "db");
}

// ---------------------------------------------------------------------------------------------
// Element-wise ops.

TEST(CudaOps, Relu) {
  FT_REQUIRE_GPU();
  const int64_t n = 10007;
  fvec x = random_floats(size_t(n), 1);
  for (size_t i = 0; i < x.size(); i += 7) x[i] = 0.f;  // exact zeros: relu'(0) = 0
  fvec y(x.size()), dy = random_floats(x.size(), 2), dx(x.size());
  ft::cpu::relu_forward(n, x.data(), y.data());
  ft::cpu::relu_backward(n, y.data(), dy.data(), dx.data());
  auto x_d = to_dev(x), y_d = to_dev(filled(x.size(), 7.f)), dy_d = to_dev(dy);
  auto dx_d = to_dev(filled(x.size(), 7.f));
  ft::cuda::relu_forward(n, x_d.data(), y_d.data());
  ft::cuda::relu_backward(n, y_d.data(), dy_d.data(), dx_d.data());
  expect_same(to_host(y_d), y, "relu_forward");
  expect_same(to_host(dx_d), dx, "relu_backward");
  // In place.
  ft::cuda::relu_forward(n, x_d.data(), x_d.data());
  expect_same(to_host(x_d), y, "relu_forward in place");
  ft::cuda::relu_backward(n, y_d.data(), dy_d.data(), dy_d.data());
  expect_same(to_host(dy_d), dx, "relu_backward in place");
}

TEST(CudaOps, ChannelCopyAndConcatReluBackward) {
  FT_REQUIRE_GPU();
  const int64_t P = 37;
  const int Ca = 5, Cb = 7, Ctot = Ca + Cb + 3, off = 3;
  fvec a = random_floats(size_t(P) * Ca, 3), y = random_floats(size_t(P) * Ctot, 4);
  fvec y_cpu = y;
  ft::cpu::channel_copy_in(P, Ca, off, Ctot, a.data(), y_cpu.data());
  auto a_d = to_dev(a), y_d = to_dev(y);
  ft::cuda::channel_copy_in(P, Ca, off, Ctot, a_d.data(), y_d.data());
  expect_same(to_host(y_d), y_cpu, "channel_copy_in");

  fvec out_cpu(size_t(P) * Cb);
  ft::cpu::channel_copy_out(P, Cb, off + Ca, Ctot, y_cpu.data(), out_cpu.data());
  auto out_d = to_dev(filled(out_cpu.size(), 7.f));
  ft::cuda::channel_copy_out(P, Cb, off + Ca, Ctot, y_d.data(), out_d.data());
  expect_same(to_host(out_d), out_cpu, "channel_copy_out");

  // concat + ReLU backward over (P, Ca + Cb).
  fvec yc = random_floats(size_t(P) * (Ca + Cb), 5), dyc = random_floats(yc.size(), 6);
  for (size_t i = 0; i < yc.size(); ++i) yc[i] = yc[i] > 0 ? yc[i] : (i % 3 ? 0.f : yc[i]);
  fvec da(size_t(P) * Ca), db(size_t(P) * Cb);
  ft::cpu::concat_relu_backward(P, Ca, Cb, yc.data(), dyc.data(), da.data(), db.data());
  auto yc_d = to_dev(yc), dyc_d = to_dev(dyc);
  auto da_d = to_dev(filled(da.size(), 7.f)), db_d = to_dev(filled(db.size(), 7.f));
  ft::cuda::concat_relu_backward(P, Ca, Cb, yc_d.data(), dyc_d.data(), da_d.data(), db_d.data());
  expect_same(to_host(da_d), da, "concat_relu_backward da");
  expect_same(to_host(db_d), db, "concat_relu_backward db");
}

TEST(CudaOps, AddInplaceAndCopy) {
  FT_REQUIRE_GPU();
  const int64_t n = 4099;
  fvec x = random_floats(size_t(n), 7), y = random_floats(size_t(n), 8);
  fvec y_cpu = y;
  ft::cpu::add_inplace(n, x.data(), y_cpu.data());
  auto x_d = to_dev(x), y_d = to_dev(y);
  ft::cuda::add_inplace(n, x_d.data(), y_d.data());
  expect_same(to_host(y_d), y_cpu, "add_inplace");
  auto c_d = to_dev(filled(size_t(n), 7.f));
  ft::cuda::copy(n, x_d.data(), c_d.data());
  expect_same(to_host(c_d), x, "copy");
}

TEST(CudaOps, ScaleInplace) {
  FT_REQUIRE_GPU();
  const int64_t n = 10007;
  const fvec x = random_floats(size_t(n), 13);
  for (float a : {1.f / 1024.f, 65536.f, 0.3f}) {  // loss-scale un-scaling, and any factor
    fvec y_cpu = x;
    ft::cpu::scale_inplace(n, a, y_cpu.data());
    auto y_d = to_dev(x);
    ft::cuda::scale_inplace(n, a, y_d.data());
    expect_same(to_host(y_d), y_cpu, "scale_inplace");
  }
}

TEST(CudaOps, ElementwiseOpsCoverMoreThanOneGridPass) {
  FT_REQUIRE_GPU();
  // The kernels' grids are capped at 1,048,560 blocks of 256 threads (268,431,360 threads;
  // common.cuh's grid_for) and loop over the rest: SqueezeNet 1.0's conv1 output at batch 256
  // is 2.92e8 elements, so the loops' later passes run in training. 2.4 GB of GPU memory.
  const int64_t n = 300000013;
  fvec x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(int(i % 2003) - 1001) * 0.5f;
  auto x_d = to_dev(x);
  ft::Array<float> y_d(Device::CUDA, size_t(n));
  ft::cuda::relu_forward(n, x_d.data(), y_d.data());
  ft::cuda::add_inplace(n, x_d.data(), y_d.data());  // y = relu(x) + x: exact (halves)
  ft::cuda::scale_inplace(n, 0.25f, y_d.data());
  const fvec y = to_host(y_d);
  int64_t wrong = 0, first = -1;
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[size_t(i)];
    if (y[size_t(i)] != ((xi > 0.f ? xi : 0.f) + xi) * 0.25f) {
      if (first < 0) first = i;
      ++wrong;
    }
  }
  EXPECT_EQ(wrong, 0) << "first wrong element " << first << " of " << n;
}

TEST(CudaOps, StridedAdd) {
  FT_REQUIRE_GPU();
  const int64_t P = 1031;
  const int ldx = 19, ldy = 40, n = 13;
  fvec x = random_floats(size_t(P * ldx), 11), y = random_floats(size_t(P * ldy), 12);
  fvec y_cpu = y;
  ft::cpu::strided_add(P, n, x.data() + 3, ldx, y_cpu.data() + 20, ldy);
  auto x_d = to_dev(x), y_d = to_dev(y);
  ft::cuda::strided_add(P, n, x_d.data() + 3, ldx, y_d.data() + 20, ldy);
  expect_same(to_host(y_d), y_cpu, "strided_add");
}

TEST(CudaOps, DropoutMasksIdentical) {
  FT_REQUIRE_GPU();
  const int N = 3, H = 5, W = 4, C = 7;
  const uint64_t seed = 1234, step = 17;
  const std::vector<int64_t> samples = {17, 4, 1000000007LL};
  const size_t n = size_t(N) * H * W * C;
  fvec x = random_floats(n, 9), dy = random_floats(n, 10);
  auto s_d = to_dev(samples);
  for (auto [p, c_off] : {std::pair{0.f, 0}, {0.3f, 0}, {0.5f, 0}, {0.5f, 9}}) {
    SCOPED_TRACE("p = " + std::to_string(p) + " c_off = " + std::to_string(c_off));
    fvec y(n), dx(n);
    ft::cpu::dropout_forward(N, H, W, C, c_off, p, seed, step, samples.data(), x.data(), y.data());
    ft::cpu::dropout_backward(N, H, W, C, c_off, p, seed, step, samples.data(), dy.data(), dx.data());
    auto x_d = to_dev(x), y_d = to_dev(filled(n, 7.f)), dy_d = to_dev(dy);
    auto dx_d = to_dev(filled(n, 7.f));
    ft::cuda::dropout_forward(N, H, W, C, c_off, p, seed, step, s_d.data(), x_d.data(), y_d.data());
    ft::cuda::dropout_backward(N, H, W, C, c_off, p, seed, step, s_d.data(), dy_d.data(), dx_d.data());
    expect_same(to_host(y_d), y, "dropout_forward");
    expect_same(to_host(dx_d), dx, "dropout_backward");
    // In place.
    ft::cuda::dropout_forward(N, H, W, C, c_off, p, seed, step, s_d.data(), x_d.data(), x_d.data());
    expect_same(to_host(x_d), y, "dropout_forward in place");
  }
}

// ---------------------------------------------------------------------------------------------
// Pooling.

PoolShape pool_shape(int C, int H, int W, int k, int stride, int pad, bool ceil_mode) {
  PoolShape s;
  s.C = C, s.H = H, s.W = W, s.k = k, s.stride = stride, s.pad = pad, s.ceil_mode = ceil_mode;
  return s;
}

/// Inputs from a handful of values (many ties within windows), dyadic gradients (every sum of
/// overlapping windows is exact): y and dx must be identical, ties going to the first maximum.
void maxpool_parity(const PoolShape& s, int N, uint32_t seed, bool all_equal = false) {
  SCOPED_TRACE("maxpool N=" + std::to_string(N) + " C=" + std::to_string(s.C) + " " +
               std::to_string(s.H) + "x" + std::to_string(s.W) + " k=" + std::to_string(s.k) +
               " s=" + std::to_string(s.stride) + " p=" + std::to_string(s.pad) +
               (s.ceil_mode ? " ceil" : " floor"));
  const size_t nx = size_t(N) * s.H * s.W * s.C, ny = size_t(N) * s.OH() * s.OW() * s.C;
  fvec x = all_equal ? filled(nx, 0.25f) : dyadic(nx, seed, -3, 2);
  fvec dy = dyadic(ny, seed + 1, -8, 8);
  ft::MaxPool2d cpu(s, Device::CPU), gpu(s, Device::CUDA);
  fvec y(ny), dx(nx);
  cpu.forward(N, x.data(), y.data());
  cpu.backward(N, x.data(), y.data(), dy.data(), dx.data());
  auto x_d = to_dev(x), y_d = to_dev(filled(ny, 7.f)), dy_d = to_dev(dy);
  auto dx_d = to_dev(filled(nx, 7.f));
  gpu.forward(N, x_d.data(), y_d.data());
  gpu.backward(N, x_d.data(), y_d.data(), dy_d.data(), dx_d.data());
  expect_same(to_host(y_d), y, "maxpool forward");
  expect_same(to_host(dx_d), dx, "maxpool backward");
}

TEST(CudaOps, MaxPoolWithTies) {
  FT_REQUIRE_GPU();
  maxpool_parity(pool_shape(8, 13, 11, 3, 2, 0, true), 2, 11);   // ceil mode, overlapping
  maxpool_parity(pool_shape(5, 8, 9, 3, 2, 1, true), 3, 12);     // padding
  maxpool_parity(pool_shape(3, 6, 7, 2, 2, 0, false), 2, 13);    // floor, disjoint windows
  maxpool_parity(pool_shape(96, 55, 55, 3, 2, 0, true), 2, 14);  // SqueezeNet's first pool
  maxpool_parity(pool_shape(40, 9, 9, 3, 2, 0, true), 3, 16);     // a warp and a partial one
  maxpool_parity(pool_shape(4, 7, 7, 3, 2, 0, true), 2, 15, /*all_equal=*/true);
}

TEST(CudaOps, GlobalAvgPool) {
  FT_REQUIRE_GPU();
  const int N = 3, H = 13, W = 13, C = 20;
  fvec x = random_floats(size_t(N) * H * W * C, 16), dy = random_floats(size_t(N) * C, 17);
  fvec y(size_t(N) * C), dx(x.size());
  ft::cpu::global_avgpool_forward(N, H, W, C, x.data(), y.data());
  ft::cpu::global_avgpool_backward(N, H, W, C, dy.data(), dx.data());
  auto x_d = to_dev(x), y_d = to_dev(filled(y.size(), 7.f)), dy_d = to_dev(dy);
  auto dx_d = to_dev(filled(dx.size(), 7.f));
  ft::cuda::global_avgpool_forward(N, H, W, C, x_d.data(), y_d.data());
  ft::cuda::global_avgpool_backward(N, H, W, C, dy_d.data(), dx_d.data());
  expect_rel(to_host(y_d), y, 1e-5, "global_avgpool_forward");
  expect_rel(to_host(dx_d), dx, 1e-6, "global_avgpool_backward");
}

// ---------------------------------------------------------------------------------------------
// Loss.

void xent_parity(int n, int K, uint32_t seed, double denom) {
  SCOPED_TRACE("softmax_xent n=" + std::to_string(n) + " K=" + std::to_string(K));
  fvec z = random_floats(size_t(n) * K, seed, -3.f, 3.f);
  std::vector<int32_t> labels(static_cast<size_t>(n));
  std::mt19937 g(seed + 1);
  for (auto& l : labels) l = int32_t(g() % uint32_t(K));
  // Ties, built on purpose (torch.argmax/topk order: ties go to the lower class index).
  if (n >= 3 && K >= 6) {
    std::fill(z.begin(), z.begin() + K, 0.5f);  // row 0: all equal
    labels[0] = 4;                              // 4 classes rank above: top-5, not top-1
    float* r1 = z.data() + K;                   // row 1: label ties the max, lower index wins
    labels[1] = 2;
    r1[2] = 10.f, r1[5] = 10.f;                 // label 2 < 5: top-1
    float* r2 = z.data() + 2 * K;               // row 2: label ties the max at a higher index
    labels[2] = 5;
    r2[1] = 10.f, r2[5] = 10.f;                 // 1 < 5 ranks above: not top-1
  }
  fvec d(z.size());
  const ft::LossStats a = ft::cpu::softmax_xent(n, K, z.data(), labels.data(), denom, d.data());
  auto z_d = to_dev(z);
  auto l_d = to_dev(labels);
  auto d_d = to_dev(filled(z.size(), 7.f));
  const ft::LossStats b = ft::cuda::softmax_xent(n, K, z_d.data(), l_d.data(), denom, d_d.data());
  EXPECT_EQ(b.correct1, a.correct1);
  EXPECT_EQ(b.correct5, a.correct5);
  EXPECT_NEAR(b.loss_sum, a.loss_sum, 1e-6 * std::max(1.0, std::fabs(a.loss_sum)));
  const fvec dg = to_host(d_d);
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    const double e = std::fabs(double(dg[i]) - double(d[i]));
    if (!(e <= worst)) worst = e, wi = i;
  }
  EXPECT_LE(worst, 1e-6) << "dlogits differ most at " << wi << ": cuda " << dg[wi] << " vs cpu "
                         << d[wi];
  // Evaluation: no dlogits.
  const ft::LossStats c = ft::cuda::softmax_xent(n, K, z_d.data(), l_d.data(), denom, nullptr);
  EXPECT_EQ(c.correct1, a.correct1);
  EXPECT_EQ(c.correct5, a.correct5);
  EXPECT_NEAR(c.loss_sum, a.loss_sum, 1e-6 * std::max(1.0, std::fabs(a.loss_sum)));
}

TEST(CudaOps, SoftmaxXent) {
  FT_REQUIRE_GPU();
  xent_parity(37, 10, 20, 64.0);
  xent_parity(5, 1000, 21, 1.0);
  xent_parity(130, 7, 22, 256.0);
  xent_parity(1, 3, 23, 1.0);
}

// ---------------------------------------------------------------------------------------------
// SGD.

TEST(CudaOps, SgdUpdate) {
  FT_REQUIRE_GPU();
  const size_t n = 10243;
  for (float momentum : {0.f, 0.9f}) {
    SCOPED_TRACE("momentum " + std::to_string(momentum));
    fvec w = random_floats(n, 30), buf(n, 0.f);
    auto w_d = to_dev(w), buf_d = to_dev(buf);
    for (int step = 0; step < 3; ++step) {
      const fvec grad = random_floats(n, 31 + uint32_t(step));
      auto g_d = to_dev(grad);
      ft::cpu::sgd_update(n, 0.05f, momentum, 5e-4f, step == 0, w.data(), grad.data(), buf.data());
      ft::cuda::sgd_update(n, 0.05f, momentum, 5e-4f, step == 0, w_d.data(), g_d.data(),
                           buf_d.data());
      // A fused multiply-add on one side changes the last bit: not bitwise.
      expect_rel(to_host(w_d), w, 1e-6, "sgd w, step " + std::to_string(step));
      if (momentum != 0.f) expect_rel(to_host(buf_d), buf, 1e-6, "sgd buf, step " + std::to_string(step));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Fully connected layer and the flatten transposes (src/ops/cuda/linear.cu).

TEST(CudaOps, LinearAndTransposes) {
  FT_REQUIRE_GPU();
  const int N = 5, I = 37, O = 11;
  for (bool relu : {true, false}) {
    SCOPED_TRACE(relu ? "relu" : "no relu");
    fvec x = random_floats(size_t(N) * I, 40), w = scaled(random_floats(size_t(O) * I, 41), 0.2f);
    fvec b = random_floats(size_t(O), 42, -0.1f, 0.1f), dy = random_floats(size_t(N) * O, 43);
    fvec y(size_t(N) * O), dx(x.size()), dw(w.size()), db(static_cast<size_t>(O)), dy_cpu = dy;
    ft::cpu::linear_forward(N, I, O, relu, x.data(), w.data(), b.data(), y.data());
    ft::cpu::linear_backward(N, I, O, relu, x.data(), w.data(), y.data(), dy_cpu.data(),
                             dx.data(), dw.data(), db.data());
    auto x_d = to_dev(x), w_d = to_dev(w), b_d = to_dev(b), y_d = to_dev(filled(y.size(), 7.f));
    ft::cuda::linear_forward(N, I, O, relu, x_d.data(), w_d.data(), b_d.data(), y_d.data());
    expect_rel(to_host(y_d), y, 1e-4, "linear forward");
    auto yref_d = to_dev(y), dy_d = to_dev(dy), dx_d = to_dev(filled(dx.size(), 7.f));
    auto dw_d = to_dev(filled(dw.size(), 7.f)), db_d = to_dev(filled(db.size(), 7.f));
    ft::cuda::linear_backward(N, I, O, relu, x_d.data(), w_d.data(), yref_d.data(), dy_d.data(),
                              dx_d.data(), dw_d.data(), db_d.data());
    expect_same(to_host(dy_d), dy_cpu, "linear dy after the ReLU mask");
    expect_rel(to_host(dx_d), dx, 1e-4, "linear dx");
    expect_rel(to_host(dw_d), dw, 1e-4, "linear dw");
    expect_rel(to_host(db_d), db, 1e-4, "linear db");
  }

  const int TN = 2, H = 3, W = 5, C = 4;
  fvec t = random_floats(size_t(TN) * H * W * C, 44), t_cpu(t.size()), back(t.size());
  ft::cpu::nhwc_to_nchw(TN, H, W, C, t.data(), t_cpu.data());
  auto t_d = to_dev(t), u_d = to_dev(filled(t.size(), 7.f)), v_d = to_dev(filled(t.size(), 7.f));
  ft::cuda::nhwc_to_nchw(TN, H, W, C, t_d.data(), u_d.data());
  expect_same(to_host(u_d), t_cpu, "nhwc_to_nchw");
  ft::cuda::nchw_to_nhwc(TN, H, W, C, u_d.data(), v_d.data());
  expect_same(to_host(v_d), t, "nchw_to_nhwc");
}

// ---------------------------------------------------------------------------------------------
// 16-bit activations (--precision bf16 | fp16 on CUDA).
//
// Element-wise ops, max and global average pooling, dropout, copies: the CUDA kernels load
// 16-bit values as fp32, compute in fp32 and round once with the cvt:: functions the CPU uses,
// so the reference (the CPU's fp32 op on the widened inputs, rounded with cvt::) must be met
// EXACTLY.
// bf16 convolutions against the CPU's bf16 convolutions (oneDNN): both multiply the same bf16 x
// and bf16-rounded weights exactly and accumulate in fp32 (in different orders: ~1e-6). The CPU
// rounds y once (bias and ReLU fused); CUDA's cuDNN path rounds the convolution's output, then
// y + b: at most two bf16 half-ulps, 2^-8 relative per element. dx and dw: the same bf16
// products of the rounded dy, fp32 sums; the cuDNN path rounds dx and dw to bf16 once more
// (2^-9). Bound, norm-wise: 1e-2 (a wrong layout or a missed element gives O(1)). The GEMM
// path of two-part 1x1 convolutions rounds y once and writes dx and dw in fp32 (closer to the
// reference, whose two-part y is rounded twice: part 1 + bias, then + part 2).
// fp16 convolutions (no CPU fp16) against the CPU's fp32 convolution on the same
// fp16-representable x and weights: CUDA rounds y (twice on the cuDNN path), dy, dx and dw
// (cuDNN path) to fp16 (2^-11 relative each): bound 1e-3 norm-wise.
// Measured on an H200 (2026-11-29, cuDNN 9 of the CUDA 13 toolkit), the worst over every shape
// here: bf16 y 3.1e-3, dx 2.3e-3, dw 2.1e-3, db 2.0e-3 (the 1e-2 bound is ~3x that); fp16 y
// 3.4e-4, dx 2.8e-4, dw 3.4e-4, db 3.6e-7 (the bound was 4e-3 before the measurement).

using ft::Act;
using ft::ActBuffer;
using ft::Bf16;
using ft::ConstAct;
using ft::Conv2d;
using ft::DType;
using ft::MaxPool2d;
using ft::Ops;
using ft::dtype_name;
using ft::ops_for;
using ft::to_bf16;
using ft::to_f32;
namespace detail = ft::detail;

/// 16-bit bits of v in dtype t (BF16 or F16), round to nearest even (ft::cvt::).
std::vector<uint16_t> bits16(const fvec& v, DType t) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    h[i] = t == DType::BF16 ? ft::cvt::fp32_to_bf16(v[i]) : ft::cvt::fp32_to_fp16(v[i]);
  return h;
}
fvec widen(const std::vector<uint16_t>& h, DType t) {
  fvec v(h.size());
  for (size_t i = 0; i < h.size(); ++i)
    v[i] = t == DType::BF16 ? ft::cvt::bf16_to_fp32(h[i]) : ft::cvt::fp16_to_fp32(h[i]);
  return v;
}
/// v rounded to t and widened back.
fvec round16(const fvec& v, DType t) { return widen(bits16(v, t), t); }

/// A device activation tensor of dtype t (F32, BF16 or F16) holding v (rounded when 16-bit).
struct DevAct {
  DevAct(const fvec& v, DType t) : buf(Device::CUDA, t) {
    buf.resize(v.size());
    if (v.empty()) return;
    if (t == DType::F32) {
      detail::array_upload(Device::CUDA, buf.view().raw(), v.data(), v.size() * 4);
    } else {
      const auto h = bits16(v, t);
      detail::array_upload(Device::CUDA, buf.view().raw(), h.data(), h.size() * 2);
    }
  }
  /// The values, widened to fp32.
  fvec host() const {
    const size_t n = buf.size();
    if (buf.dtype() == DType::F32) {
      fvec v(n);
      detail::array_download(Device::CUDA, v.data(), buf.view().raw(), n * 4);
      return v;
    }
    std::vector<uint16_t> h(n);
    detail::array_download(Device::CUDA, h.data(), buf.view().raw(), n * 2);
    return widen(h, buf.dtype());
  }
  Act view() { return buf.view(); }
  ActBuffer buf;
};


const DType kHalves[] = {DType::BF16, DType::F16};

// ---------------------------------------------------------------------------------------------
// Convolutions.

ConvShape shape(int C, int O, int H, int W, int k, int stride, int pad, bool relu, int C2,
                DType t) {
  ConvShape s{C, O, H, W, k, stride, pad, relu, t == DType::BF16, C2};
  s.fp16 = t == DType::F16;
  return s;
}

/// One forward and backward of `s` (16-bit) on CUDA against the CPU (bf16: the CPU's bf16
/// convolution; fp16: the CPU's fp32 one on fp16-representable inputs). x_fp32: the input is
/// fp32 (a first layer); else it is of the 16-bit type.
void conv_case(ConvShape s, int N, bool x_fp32, uint32_t seed, bool with_dx = true) {
  const DType t = s.bf16 ? DType::BF16 : DType::F16;
  std::ostringstream name;
  name << dtype_name(t) << " conv C=" << s.C << "+" << s.C2 << " O=" << s.O << " " << s.H << "x"
       << s.W << " k=" << s.k << " s=" << s.stride << " N=" << N << (x_fp32 ? " x fp32" : "");
  SCOPED_TRACE(name.str());
  const size_t nx = size_t(N) * s.H * s.W * s.Ct(), ny = size_t(N) * s.OH() * s.OW() * s.O;
  const float ws = 1.f / std::sqrt(float(s.Ct() * s.k * s.k));
  fvec x = random_floats(nx, seed), w = random_floats(size_t(s.weight_numel()), seed + 1);
  for (auto& v : w) v *= ws;
  fvec b = random_floats(size_t(s.O), seed + 2, -0.2f, 0.2f);
  fvec dy = random_floats(ny, seed + 3);
  const DType xt = x_fp32 ? DType::F32 : t;
  if (!x_fp32) x = round16(x, t);
  if (t == DType::F16) w = round16(w, t);  // the fp32 reference then sees the same weights

  // CPU reference.
  ConvShape sc = s;
  sc.fp16 = false;  // fp16: the fp32 convolution
  Conv2d cpu(sc, Device::CPU);
  fvec y_ref(ny), dx_ref(with_dx ? nx : 0), dw_ref(w.size()), db_ref(size_t(s.O));
  fvec dy_ref = dy;
  if (t == DType::BF16) {
    std::vector<Bf16> xh(nx), yh(ny);
    for (size_t i = 0; i < nx; ++i) xh[i] = to_bf16(x[i]);
    const ConstAct xa = x_fp32 ? ConstAct(x.data()) : ConstAct(xh.data());
    cpu.forward(N, xa, w.data(), b.data(), yh.data());
    for (size_t i = 0; i < ny; ++i) y_ref[i] = to_f32(yh[i]);
    cpu.backward(N, xa, w.data(), yh.data(), dy_ref.data(), with_dx ? dx_ref.data() : nullptr,
                 dw_ref.data(), db_ref.data());
  } else {
    cpu.forward(N, x.data(), w.data(), b.data(), y_ref.data());
    // The mask both sides apply: the reference y rounded to fp16 (what CUDA's y holds).
    const fvec y16 = round16(y_ref, t);
    cpu.backward(N, x.data(), w.data(), y16.data(), dy_ref.data(),
                 with_dx ? dx_ref.data() : nullptr, dw_ref.data(), db_ref.data());
  }

  // CUDA.
  Conv2d gpu(s, Device::CUDA);
  DevAct xd(x, xt), yd(fvec(ny, 7.f), t);
  auto wd = to_dev(w), bd = to_dev(b);
  gpu.forward(N, xd.view(), wd.data(), bd.data(), yd.view());
  expect_rel(yd.host(), y_ref, t == DType::BF16 ? 1e-2 : 1e-3, name.str() + " forward y");

  // Backward with the reference's y as the mask (a y within rounding of 0 could flip it).
  DevAct ymask(t == DType::BF16 ? y_ref : round16(y_ref, t), t);
  auto dyd = to_dev(dy), dxd = to_dev(filled(with_dx ? nx : 0, 7.f));
  auto dwd = to_dev(filled(w.size(), 7.f)), dbd = to_dev(filled(size_t(s.O), 7.f));
  gpu.backward(N, xd.view(), wd.data(), ymask.view(), dyd.data(), with_dx ? dxd.data() : nullptr,
               dwd.data(), dbd.data());
  const double tol = t == DType::BF16 ? 1e-2 : 1e-3;
  if (with_dx) expect_rel(to_host(dxd), dx_ref, tol, name.str() + " dx");
  expect_rel(to_host(dwd), dw_ref, tol, name.str() + " dw");
  expect_rel(to_host(dbd), db_ref, tol, name.str() + " db");
}

TEST(CudaOps, HalfConvolutionsMatchTheCpu) {
  FT_REQUIRE_GPU();
  for (DType t : kHalves) {
    conv_case(shape(16, 64, 13, 13, 3, 1, 1, true, 0, t), 3, false, 100);   // Fire expand 3x3
    conv_case(shape(96, 16, 9, 11, 1, 1, 0, true, 0, t), 2, false, 200);    // squeeze 1x1
    // The stems (C = 3, and C = 1 as Fashion-MNIST's) with their input channels padded to 8
    // for tensor cores (the default) and without (FT_CONV_PAD_CHANNELS=0).
    for (const char* pad : {"1", "0"}) {
      SCOPED_TRACE(std::string("FT_CONV_PAD_CHANNELS=") + pad);
      struct PadEnv {  // set for these cases only, whatever happens in them
        explicit PadEnv(const char* v) { setenv("FT_CONV_PAD_CHANNELS", v, 1); }
        ~PadEnv() { unsetenv("FT_CONV_PAD_CHANNELS"); }
      } use(pad);
      conv_case(shape(3, 96, 39, 33, 7, 2, 0, true, 0, t), 2, true, 300, false);  // 1.0's stem
      conv_case(shape(3, 64, 31, 29, 3, 2, 1, true, 0, t), 2, true, 400);     // 1.1's stem
      conv_case(shape(1, 16, 14, 13, 3, 1, 1, true, 0, t), 2, false, 410);   // C = 1, with dx
    }
    conv_case(shape(5, 7, 10, 9, 3, 2, 1, false, 11, t), 3, false, 600);    // uneven parts
    for (const char* path : kTwoPartPaths) {
      SCOPED_TRACE(std::string("FT_CONV_TWO_PART=") + path);
      TwoPartPath use(path);
      conv_case(shape(64, 16, 9, 11, 1, 1, 0, true, 64, t), 2, false, 500);  // two-part squeeze
      conv_case(shape(48, 10, 4, 4, 1, 1, 0, true, 80, t), 2, false, 510);   // conv10-like
      conv_case(shape(64, 16, 9, 11, 1, 1, 0, true, 64, t), 2, true, 520);   // fp32 x
      // Odd, unaligned parts (cuBLAS's less-aligned kernels), two batch sizes, no dx.
      conv_case(shape(9, 7, 6, 7, 1, 1, 0, true, 11, t), 3, false, 530);
      conv_case(shape(9, 7, 6, 7, 1, 1, 0, true, 11, t), 1, false, 540, /*with_dx=*/false);
    }
  }
}

// Which two-part path ran, told apart by what each one writes: the cuDNN (copy) path computes
// a 16-bit dx and widens it, so every dx value is representable in 16 bits; the GEMM path
// writes dx in fp32 from fp32 accumulators, so (with random data) many are not. Guards the
// path selection: otherwise both loops above could silently test the same path.
TEST(CudaOps, TwoPartPathSelectionTakesEffect) {
  FT_REQUIRE_GPU();
  for (DType t : kHalves) {
    const ConvShape s = shape(32, 16, 5, 6, 1, 1, 0, false, 32, t);
    const int N = 2;
    const size_t nx = size_t(N) * s.H * s.W * s.Ct(), ny = size_t(N) * s.H * s.W * s.O;
    const fvec x = round16(random_floats(nx, 900), t);
    const fvec w = random_floats(size_t(s.weight_numel()), 901, -0.2f, 0.2f);
    const fvec b(size_t(s.O), 0.f), dy = random_floats(ny, 902);
    for (const char* path : kTwoPartPaths) {
      TwoPartPath use(path);
      Conv2d gpu(s, Device::CUDA);
      DevAct xd(x, t), yd(fvec(ny, 0.f), t);
      auto wd = to_dev(w), bd = to_dev(b), dyd = to_dev(dy), dxd = to_dev(filled(nx, 0.f));
      auto dwd = to_dev(filled(w.size(), 0.f)), dbd = to_dev(filled(size_t(s.O), 0.f));
      gpu.forward(N, xd.view(), wd.data(), bd.data(), yd.view());
      gpu.backward(N, xd.view(), wd.data(), nullptr, dyd.data(), dxd.data(), dwd.data(),
                   dbd.data());
      const fvec dx = to_host(dxd), dx16 = round16(dx, t);
      size_t not16 = 0;
      for (size_t i = 0; i < nx; ++i) not16 += dx[i] != dx16[i];
      if (std::string(path) == "copy")
        EXPECT_EQ(not16, 0u) << dtype_name(t) << ": the copy path's dx should be 16-bit values";
      else
        EXPECT_GT(not16, nx / 2) << dtype_name(t) << ": the GEMM path's dx should be fp32 values";
    }
  }
}

// The fp32 fallback of a 16-bit convolution for which cuDNN has no 16-bit algorithm (forced by
// the test hook FT_TEST_CONV_NO_HALF_ALGO=1): the same bounds hold (the fallback keeps more
// precision: fp32 products, y rounded once).
TEST(CudaOps, HalfConvolutionFallsBackToFp32WithoutAnAlgorithm) {
  FT_REQUIRE_GPU();
  struct Hook {  // set for this test only, whatever happens in it
    Hook() { setenv("FT_TEST_CONV_NO_HALF_ALGO", "1", 1); }
    ~Hook() { unsetenv("FT_TEST_CONV_NO_HALF_ALGO"); }
  } hook;
  for (DType t : kHalves) {
    ::testing::internal::CaptureStderr();
    conv_case(shape(3, 64, 31, 29, 3, 2, 1, true, 0, t), 2, true, 700);    // a stem, fp32 x
    conv_case(shape(16, 64, 13, 13, 3, 1, 1, true, 0, t), 2, false, 710);  // 16-bit x
    {
      TwoPartPath copy("copy");  // (the GEMM form of two-part 1x1 shapes does not use cuDNN)
      conv_case(shape(64, 16, 9, 11, 1, 1, 0, true, 64, t), 2, false, 720);  // two-part
    }
    const std::string err = ::testing::internal::GetCapturedStderr();
    // The fallback did run (the 16-bit path meets the same bounds): once per convolution.
    size_t n = 0;
    for (size_t at = err.find("runs in fp32 instead"); at != std::string::npos;
         at = err.find("runs in fp32 instead", at + 1))
      ++n;
    EXPECT_EQ(n, 3u) << dtype_name(t) << ": " << err;
  }
}

// ---------------------------------------------------------------------------------------------
// Element-wise ops and pooling: exact.

TEST(CudaOps, HalfElementwiseAndPoolingAreExact) {
  FT_REQUIRE_GPU();
  const Ops& g = ops_for(Device::CUDA);
  for (DType t : kHalves) {
    SCOPED_TRACE(dtype_name(t));
    const int N = 2, H = 9, W = 7, C = 12;
    const size_t n = size_t(N) * H * W * C;
    fvec x = round16(random_floats(n, 11, -4.f, 4.f), t);
    for (size_t i = 0; i < n; i += 5) x[i] = x[(i * 7) % n];  // repeated values: pooling ties
    for (size_t i = 0; i < n; i += 9) x[i] = 0.f;
    DevAct xd(x, t);

    // Max pooling (ceil mode) forward and backward.
    const PoolShape ps{C, H, W, 3, 2, 0, true};
    MaxPool2d pc(ps, Device::CPU), pg(ps, Device::CUDA);
    const size_t ny = size_t(N) * ps.OH() * ps.OW() * C;
    fvec y_ref(ny), dyp = random_floats(ny, 12), dx_ref(n);
    pc.forward(N, x.data(), y_ref.data());
    pc.backward(N, x.data(), y_ref.data(), dyp.data(), dx_ref.data());
    DevAct yd(fvec(ny, 7.f), t);
    pg.forward(N, xd.view(), yd.view());
    expect_same(yd.host(), y_ref, "max pool forward");
    auto dypd = to_dev(dyp), dxd = to_dev(filled(n, 7.f));
    pg.backward(N, xd.view(), yd.view(), dypd.data(), dxd.data());
    expect_same(to_host(dxd), dx_ref, "max pool backward");

    // ReLU backward with a 16-bit y.
    fvec dy = random_floats(n, 13), dx(n);
    ft::cpu::relu_backward(int64_t(n), x.data(), dy.data(), dx.data());
    auto dyd = to_dev(dy), dx2 = to_dev(filled(n, 7.f));
    g.relu_backward(int64_t(n), xd.view(), dyd.data(), dx2.data());
    expect_same(to_host(dx2), dx, "relu_backward");

    // add_inplace (16-bit += 16-bit, += fp32), strided_add, copy with conversions.
    fvec a = round16(random_floats(n, 14), t), sum(n), sumf(n);
    fvec f = random_floats(n, 15);
    for (size_t i = 0; i < n; ++i) sum[i] = a[i] + x[i], sumf[i] = a[i] + f[i];
    DevAct ad(a, t), ad2(a, t);
    g.add_inplace(int64_t(n), xd.view(), ad.view());
    expect_same(ad.host(), round16(sum, t), "add_inplace 16 += 16");
    auto fd = to_dev(f);
    g.add_inplace(int64_t(n), fd.data(), ad2.view());
    expect_same(ad2.host(), round16(sumf, t), "add_inplace 16 += fp32");
    const int64_t P = int64_t(N) * H * W;
    DevAct sd(a, t);
    g.strided_add(P, 5, xd.view() + 3, C, sd.view() + 2, C);
    fvec sref = a;
    for (int64_t p = 0; p < P; ++p)
      for (int c = 0; c < 5; ++c) sref[p * C + 2 + c] = a[p * C + 2 + c] + x[p * C + 3 + c];
    expect_same(sd.host(), round16(sref, t), "strided_add");
    DevAct cd(fvec(n, 7.f), t);
    g.copy(int64_t(n), fd.data(), cd.view());
    expect_same(cd.host(), round16(f, t), "copy fp32 -> 16-bit");
    auto back = to_dev(filled(n, 7.f));
    g.copy(int64_t(n), cd.view(), back.data());
    expect_same(to_host(back), round16(f, t), "copy 16-bit -> fp32");

    // Dropout forward on a 16-bit x (same keys as the CPU; one rounding of x * scale).
    const std::vector<int64_t> samples = {17, 4};
    auto sd_dev = to_dev(samples);
    fvec dref(n);
    ft::cpu::dropout_forward(N, H, W, C, 4, 0.5f, 9, 3, samples.data(), x.data(), dref.data());
    DevAct dd(fvec(n, 7.f), t);
    g.dropout_forward(N, H, W, C, 4, 0.5f, 9, 3, sd_dev.data(), xd.view(), dd.view());
    expect_same(dd.host(), round16(dref, t), "dropout_forward");

    // Global average pooling of a 16-bit x into fp32.
    fvec gref(size_t(N) * C);
    ft::cpu::global_avgpool_forward(N, H, W, C, x.data(), gref.data());
    auto gd = to_dev(filled(gref.size(), 7.f));
    g.global_avgpool_forward(N, H, W, C, xd.view(), gd.data());
    expect_same(to_host(gd), gref, "global_avgpool_forward");

    // Flatten (AlexNet): a 16-bit x widened into fp32 NCHW.
    fvec tref(n);
    ft::cpu::nhwc_to_nchw(N, H, W, C, x.data(), tref.data());
    auto td = to_dev(filled(n, 7.f));
    g.nhwc_to_nchw(N, H, W, C, xd.view(), td.data());
    expect_same(to_host(td), tref, "nhwc_to_nchw");
  }
}

}  // namespace

#else  // !FT_HAVE_CUDA

TEST(CudaOps, NotBuilt) { GTEST_SKIP() << "CUDA backend not built"; }

#endif  // FT_HAVE_CUDA
