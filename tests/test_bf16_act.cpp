/// @brief bf16 activation storage (issue 7, --precision bf16 on the CPU): max pooling on bf16,
/// convolutions writing bf16, whole nets with bf16 activations against fp32, the halved
/// activation memory, and the per-parity gradient buffers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/act.hpp"
#include "firetrain/ops/conv2d.hpp"
#include "firetrain/ops/elementwise.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/pool.hpp"

namespace ft {
namespace {
using namespace ft::test;

std::vector<Bf16> to_bf16v(const std::vector<float>& v) {
  std::vector<Bf16> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = to_bf16(v[i]);
  return r;
}
std::vector<float> to_f32v(const std::vector<Bf16>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = to_f32(v[i]);
  return r;
}
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
/// ||a - b|| / ||b||.
double norm_rel(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i)
    num += std::pow(double(a[i]) - b[i], 2), den += std::pow(double(b[i]), 2);
  return std::sqrt(num / std::max(den, 1e-300));
}

TEST(Bf16Act, RoundingIsNearestEven) {
  EXPECT_EQ(to_bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(to_f32(to_bf16(1.0f)), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1); just above rounds up.
  EXPECT_EQ(to_f32(to_bf16(1.0f + 0x1p-8f)), 1.0f);
  EXPECT_EQ(to_f32(to_bf16(1.0f + 0x1p-8f + 0x1p-20f)), 1.0f + 0x1p-7f);
  EXPECT_EQ(to_f32(to_bf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);  // tie, up to even
  EXPECT_TRUE(std::isnan(to_f32(to_bf16(NAN))));
  EXPECT_EQ(to_f32(to_bf16(-INFINITY)), -INFINITY);
  // The checked accessors refuse the other dtype.
  std::vector<Bf16> h(4);
  const ConstAct v(h.data());
  EXPECT_THROW(v.f32(), Error);
  EXPECT_EQ((v + 3).raw(), static_cast<const void*>(h.data() + 3));
}

/// bf16 max pooling equals the fp32 one bit for bit on bf16-representable inputs (forward and
/// backward: the max and the argmax-by-equality are exact), including ties, ceil-mode edge
/// windows and a channel count that is no multiple of the vector width.
TEST(Bf16Act, MaxPoolEqualsFp32OnRepresentableInputs) {
  for (const PoolShape s : {PoolShape{19, 9, 9, 3, 2, 0, true}, PoolShape{16, 10, 7, 3, 2, 0, true},
                            PoolShape{5, 8, 8, 3, 2, 0, false}}) {
    const int N = 3;
    SCOPED_TRACE("C" + std::to_string(s.C) + " " + std::to_string(s.H) + "x" +
                 std::to_string(s.W));
    auto xf = random_floats(size_t(N) * s.H * s.W * s.C, 900 + uint32_t(s.C));
    // Few distinct values (many ties, negative zero included), all bf16-representable.
    for (auto& v : xf) v = std::round(v * 4.f) / 4.f * 1.5f;
    xf[0] = -0.f;
    const auto xb = to_bf16v(xf);
    ASSERT_EQ(to_f32v(xb), xf);
    const size_t ny = size_t(N) * s.OH() * s.OW() * s.C;
    MaxPool2d pool(s);
    std::vector<float> y32(ny), dy = random_floats(ny, 77), dx32(xf.size()), dxb(xf.size(), 5.f);
    std::vector<Bf16> yb(ny);
    pool.forward(N, xf.data(), y32.data());
    pool.forward(N, xb.data(), yb.data());
    const auto ybf = to_f32v(yb);
    for (size_t i = 0; i < ny; ++i) ASSERT_EQ(bits(ybf[i]), bits(y32[i])) << "y[" << i << "]";
    pool.backward(N, xf.data(), y32.data(), dy.data(), dx32.data());
    pool.backward(N, xb.data(), yb.data(), dy.data(), dxb.data());
    for (size_t i = 0; i < xf.size(); ++i) ASSERT_EQ(bits(dxb[i]), bits(dx32[i])) << "dx[" << i << "]";
    // Mixed dtypes are refused.
    EXPECT_THROW(pool.forward(N, xb.data(), y32.data()), Error);
  }
}

struct ConvCase {
  ConvShape s;
  int N;
};
std::string conv_name(const ConvShape& s) {
  return "C" + std::to_string(s.C) + "+" + std::to_string(s.C2) + " O" + std::to_string(s.O) +
         " " + std::to_string(s.H) + "x" + std::to_string(s.W) + " k" + std::to_string(s.k) +
         " s" + std::to_string(s.stride) + (s.relu ? " relu" : "");
}

/// A bf16 convolution writing bf16 gives its fp32 output rounded to nearest-even (oneDNN
/// converts the fp32 accumulator, after bias and ReLU, once): within 1 ulp (0 ulp expected,
/// 1 allowed should the kernels for the two output types sum in different orders), and a bf16
/// input gives exactly what the fp32 input gives (the op rounds fp32 inputs itself). Backward
/// from the bf16 x and bf16 y (the stored activations) equals backward from the fp32 ones.
TEST(Bf16Act, ConvBf16OutputIsTheRoundedFp32Output) {
  const std::vector<ConvCase> cases = {
      {{16, 24, 9, 9, 3, 1, 1, true, true}, 2},   // Fire expand3x3
      {{32, 16, 7, 7, 1, 1, 0, true, true}, 3},   // Fire squeeze
      {{3, 16, 23, 23, 7, 2, 0, true, true}, 2},  // squeezenet1_0 conv1
      {{24, 10, 5, 5, 1, 1, 0, false, true}, 2},  // conv10 without ReLU
      {{16, 7, 6, 5, 1, 1, 0, true, true}, 2},    // odd O (reference kernel for backward-data)
  };
  uint32_t seed = 8100;
  for (const auto& c : cases) {
    const ConvShape& s = c.s;
    const int N = c.N;
    SCOPED_TRACE(conv_name(s));
    seed += 10;
    // A bf16-representable x, so that the fp32 and bf16 inputs hold the same values.
    auto xf = to_f32v(to_bf16v(random_floats(size_t(N) * s.H * s.W * s.C, seed + 1)));
    auto wf = random_floats(size_t(s.weight_numel()), seed + 2, -0.3f, 0.3f);
    auto bf = random_floats(size_t(s.O), seed + 3, -0.1f, 0.1f);
    const auto xb = to_bf16v(xf);
    const size_t ny = size_t(N) * s.OH() * s.OW() * s.O;
    Conv2d op(s);
    std::vector<float> y32(ny), y32b(ny);
    std::vector<Bf16> yb(ny);
    op.forward(N, xf.data(), wf.data(), bf.data(), y32.data());
    op.forward(N, xb.data(), wf.data(), bf.data(), y32b.data());
    for (size_t i = 0; i < ny; ++i) ASSERT_EQ(bits(y32b[i]), bits(y32[i])) << "bf16 x, y[" << i << "]";
    op.forward(N, xb.data(), wf.data(), bf.data(), yb.data());
    int off = 0;
    for (size_t i = 0; i < ny; ++i) {
      const int d = std::abs(int(yb[i].bits) - int(to_bf16(y32[i]).bits));
      ASSERT_LE(d, 1) << "y[" << i << "] = " << to_f32(yb[i]) << ", fp32 " << y32[i];
      off += d;
    }
    EXPECT_LE(off, int(ny / 100)) << "more than 1% of the outputs off by one ulp";

    const auto dyf = random_floats(ny, seed + 4);
    std::vector<float> dy1 = dyf, dy2 = dyf, dx1(xf.size()), dx2(xf.size());
    std::vector<float> dw1(wf.size()), dw2(wf.size()), db1(bf.size()), db2(bf.size());
    // The ReLU mask from a bf16 y is the one from the fp32 y (rounding keeps the sign of
    // positive values; zeros stay zero); dy ends as its masked bf16 rounding in both.
    op.backward(N, xf.data(), wf.data(), y32.data(), dy1.data(), dx1.data(), dw1.data(),
                db1.data());
    op.backward(N, xb.data(), wf.data(), yb.data(), dy2.data(), dx2.data(), dw2.data(),
                db2.data());
    EXPECT_EQ(dy1, dy2);
    EXPECT_EQ(dx1, dx2);
    EXPECT_EQ(dw1, dw2);
    EXPECT_EQ(db1, db2);
  }
  // An fp32 convolution cannot write bf16.
  Conv2d f32({4, 4, 5, 5, 3, 1, 1, true});
  std::vector<float> x(2 * 5 * 5 * 4), w(4 * 4 * 9), b(4);
  std::vector<Bf16> y(2 * 5 * 5 * 4);
  EXPECT_THROW(f32.forward(2, x.data(), w.data(), b.data(), y.data()), Error);
}

/// Two-part input (a Fire module's planar output) into a bf16 y: part 1 (+ bias) is stored
/// rounded and part 2's `sum` post-op adds to that, so the result rounds twice: per element
/// |y_bf16 - y_fp32| <= 2^-8 (|p1| + |y_fp32|) (half an ulp of each rounding; a bf16 ulp is at
/// most 2^-7 of the value), p1 being part 1's fp32 output.
TEST(Bf16Act, TwoPartConvIntoBf16RoundsTwiceAtMost) {
  for (const ConvCase& c : std::vector<ConvCase>{{{24, 16, 6, 7, 1, 1, 0, true, true, 40}, 2},
                                                 {{8, 12, 5, 5, 3, 1, 1, false, true, 8}, 2}}) {
    const ConvShape& s = c.s;
    const int N = c.N;
    SCOPED_TRACE(conv_name(s));
    auto x = to_bf16v(random_floats(size_t(N) * s.H * s.W * s.Ct(), 31));
    auto wf = random_floats(size_t(s.weight_numel()), 32, -0.3f, 0.3f);
    auto bf = random_floats(size_t(s.O), 33, -0.1f, 0.1f);
    const size_t ny = size_t(N) * s.OH() * s.OW() * s.O;
    Conv2d op(s);
    std::vector<float> y32(ny), p1(ny);
    std::vector<Bf16> yb(ny);
    op.forward(N, x.data(), wf.data(), bf.data(), y32.data());
    op.forward(N, x.data(), wf.data(), bf.data(), yb.data());
    // Part 1 alone: its channels' weight slice, no ReLU.
    ConvShape s1 = s;
    s1.C2 = 0;
    s1.relu = false;
    std::vector<float> w1(size_t(s1.weight_numel()));
    const int kk = s.k * s.k;
    for (int o = 0; o < s.O; ++o)
      std::copy_n(wf.begin() + int64_t(o) * s.Ct() * kk, size_t(s.C) * kk,
                  w1.begin() + int64_t(o) * s.C * kk);
    Conv2d part1(s1);
    part1.forward(N, x.data(), w1.data(), bf.data(), p1.data());
    for (size_t i = 0; i < ny; ++i)
      ASSERT_LE(std::abs(to_f32(yb[i]) - y32[i]),
                0x1p-8 * (std::abs(p1[i]) + std::abs(y32[i])) * (1 + 0x1p-7) + 1e-7)
          << "y[" << i << "]";
  }
}

NetSpec spec_of(const std::string& arch, const std::string& precision, int size, int classes,
                const std::string& bypass = "none") {
  NetSpec s;
  s.arch = arch;
  s.height = s.width = size;
  s.in_channels = 3;
  s.num_classes = classes;
  s.dropout = 0.5f;
  s.bypass = bypass;
  s.precision = precision;
  return s;
}

struct PassResult {
  std::vector<float> logits, grads;
  size_t act_bytes = 0;
  size_t pool_positions = 0;  // the max pools' window positions: one byte per output element
};
PassResult run_pass(const NetSpec& spec, int N, const std::vector<float>& x) {
  Net net(spec);
  net.init_weights(5, InitScheme::Kaiming);
  std::vector<int32_t> labels(static_cast<size_t>(N));
  std::vector<int64_t> idx(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i) labels[size_t(i)] = i % spec.num_classes, idx[size_t(i)] = 100 + i;
  PassContext c;
  c.N = N;
  c.train = true;
  c.seed = 9;
  c.step = 4;
  c.samples = idx.data();
  const int K = spec.num_classes;
  const float* l = net.forward(c, x.data());
  PassResult r;
  r.logits.assign(l, l + size_t(N) * K);
  r.act_bytes = net.activation_bytes();
  for (const auto& l : net.layer_table())
    if (l.name.rfind("maxpool", 0) == 0) r.pool_positions += size_t(N) * l.H * l.W * l.C;
  std::vector<float> dl(size_t(N) * K);
  cpu::softmax_xent(N, K, l, labels.data(), N, dl.data());
  net.backward(c, dl.data());
  r.grads.assign(net.grads(), net.grads() + net.num_params());
  return r;
}

/// Whole nets with bf16 activations against the same nets in fp32 (same weights, input and
/// dropout masks). The logits: within 2% (measured 0.4-0.6%). The gradients are far more
/// sensitive at these random weights: ReLU masks and max-pool argmaxes flip where values are
/// near zero or nearly tied, so the FP32 net itself moves its gradient by 1.3-5.5% overall (8-17%
/// on conv1) when only its input is rounded to bf16 (the "noise floor" computed here), and
/// bf16 convolutions with fp32 activations (before issue 7's storage change) were 4.5-14%
/// away overall (measured on these three cases: 14.0%, 14.2%, 4.5%); bf16 storage measured
/// 14.0%, 8.7%, 3.8%. So the gradient must stay within 5x the noise floor (measured ratios
/// 2.3-2.9) and below 25% overall: a wrong mask, a lost planar part or a misread dtype gives
/// errors of order 100%. Also: the bf16 net must differ from fp32 (it did compute in bf16).
TEST(Bf16Act, NetLogitsAndGradientsTrackFp32) {
  struct NetCase {
    std::string arch, bypass;
    int size;
  };
  for (const auto& nc : {NetCase{"squeezenet1_0", "none", 64}, NetCase{"squeezenet1_1", "simple", 48},
                         NetCase{"squeezenet_small", "complex", 32}}) {
    SCOPED_TRACE(nc.arch + " bypass " + nc.bypass);
    const int N = 2, K = 10;
    auto x = random_floats(size_t(N) * nc.size * nc.size * 3, 21);
    const auto a = run_pass(spec_of(nc.arch, "fp32", nc.size, K, nc.bypass), N, x);
    const auto b = run_pass(spec_of(nc.arch, "bf16", nc.size, K, nc.bypass), N, x);
    const auto f = run_pass(spec_of(nc.arch, "fp32", nc.size, K, nc.bypass), N,
                            to_f32v(to_bf16v(x)));  // the noise floor
    const double el = norm_rel(b.logits.data(), a.logits.data(), a.logits.size());
    const double eg = norm_rel(b.grads.data(), a.grads.data(), a.grads.size());
    const double floor = norm_rel(f.grads.data(), a.grads.data(), a.grads.size());
    EXPECT_LT(el, 2e-2) << "bf16 logits far from fp32";
    EXPECT_GT(el, 0.0) << "bf16 logits identical to fp32";
    EXPECT_LT(eg, 0.25) << "bf16 gradients far from fp32";
    EXPECT_LT(eg, 5 * floor) << "bf16 gradients far from fp32 (noise floor " << floor << ")";
    EXPECT_GT(eg, 0.0);
    for (float g : b.grads) ASSERT_TRUE(std::isfinite(g));
  }
}

/// The bf16 net keeps its activations in half the bytes: every layer output and Fire's kept
/// tensors are bf16 except the logits (fp32, N x K); the max pools' window positions (one byte
/// per output element) are the same in both.
TEST(Bf16Act, ActivationStorageIsHalved) {
  const int N = 2, K = 10, size = 64;
  auto x = random_floats(size_t(N) * size * size * 3, 22);
  for (const std::string bypass : {"none", "complex"}) {
    const auto a = run_pass(spec_of("squeezenet1_0", "fp32", size, K, bypass), N, x);
    const auto b = run_pass(spec_of("squeezenet1_0", "bf16", size, K, bypass), N, x);
    const size_t logits = size_t(N) * K * sizeof(float);
    ASSERT_GT(a.pool_positions, 0u);
    ASSERT_EQ(a.pool_positions, b.pool_positions);
    const size_t pos = a.pool_positions;
    EXPECT_EQ(b.act_bytes - pos, (a.act_bytes - pos - logits) / 2 + logits) << bypass;
    EXPECT_LT(double(b.act_bytes - pos), 0.51 * double(a.act_bytes - pos)) << bypass;
  }
}

/// AlexNet in bf16: the convolutions and pools store bf16, the flatten widens to fp32 for the
/// fp32 classifier; it runs and tracks fp32: logits within 2%, the last layer's weight
/// gradient within 5%, conv1's within 50% (measured 25.5%: the first layer's gradient is the
/// most sensitive one, see NetLogitsAndGradientsTrackFp32, where the fp32 net alone moves
/// conv1's gradient by 8-17% when its input is rounded to bf16).
TEST(Bf16Act, AlexNetRunsWithBf16Features) {
  const int N = 1, K = 10;
  auto x = random_floats(size_t(N) * 224 * 224 * 3, 23);
  std::vector<float> logits[2], g_conv1[2], g_fc[2];
  for (int p = 0; p < 2; ++p) {
    NetSpec s = spec_of("alexnet", p ? "bf16" : "fp32", 224, K);
    s.dropout = 0.f;
    Net net(s);
    net.init_weights(5);
    std::vector<int32_t> labels = {3};
    std::vector<int64_t> idx = {0};
    PassContext c;
    c.N = N;
    c.train = true;
    c.samples = idx.data();
    const float* l = net.forward(c, x.data());
    logits[p].assign(l, l + K);
    std::vector<float> dl(K);
    cpu::softmax_xent(N, K, l, labels.data(), N, dl.data());
    net.backward(c, dl.data());
    for (auto& v : net.param_views()) {
      if (v.name == "features.0.weight") g_conv1[p].assign(v.grad, v.grad + v.numel());
      if (v.name == "classifier.6.weight") g_fc[p].assign(v.grad, v.grad + v.numel());
    }
  }
  EXPECT_LT(norm_rel(logits[1].data(), logits[0].data(), size_t(K)), 2e-2);
  EXPECT_LT(norm_rel(g_conv1[1].data(), g_conv1[0].data(), g_conv1[0].size()), 0.5);
  EXPECT_LT(norm_rel(g_fc[1].data(), g_fc[0].data(), g_fc[0].size()), 5e-2);
  EXPECT_NE(logits[1], logits[0]);
}

/// The two ping-pong gradient buffers: not allocated by forward (evaluation), then each sized
/// to the largest tensor its parity holds: layer i's dx (its input's size) lives in parity
/// (L - i) % 2, the dlogits in parity 0. In squeezenet1_0 conv1's output (dx of the first
/// pool) is in one parity only, so the other is smaller than before (both were conv1-sized).
TEST(Bf16Act, GradBuffersPerParity) {
  for (const std::string precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    const int N = 2, K = 10, size = 64;
    NetSpec spec = spec_of("squeezenet1_0", precision, size, K);
    Net net(spec);
    net.init_weights(1);
    auto x = random_floats(size_t(N) * size * size * 3, 24);
    std::vector<int64_t> idx = {0, 1};
    std::vector<int32_t> labels = {0, 1};
    PassContext c;
    c.N = N;
    c.samples = idx.data();
    const float* l = net.forward(c, x.data());  // evaluation
    EXPECT_EQ(net.grad_buffer_floats(0), 0u);
    EXPECT_EQ(net.grad_buffer_floats(1), 0u);
    c.train = true;
    l = net.forward(c, x.data());
    EXPECT_EQ(net.grad_buffer_floats(0), 0u);
    std::vector<float> dl(size_t(N) * K);
    cpu::softmax_xent(N, K, l, labels.data(), N, dl.data());
    net.backward(c, dl.data());
    // Expected sizes from the layer table: layer i's input is layer i-1's output.
    const auto t = net.layer_table();
    const size_t L = t.size();
    int64_t want[2] = {K, 0}, max_act = 0;
    for (size_t i = 0; i < L; ++i) {
      const int64_t out = int64_t(t[i].H) * t[i].W * t[i].C;
      max_act = std::max(max_act, out);
      if (i + 1 < L) want[(L - i - 1) % 2] = std::max(want[(L - i - 1) % 2], out);
    }
    EXPECT_EQ(net.grad_buffer_floats(0), size_t(N * want[0]));
    EXPECT_EQ(net.grad_buffer_floats(1), size_t(N * want[1]));
    const int64_t conv1 = int64_t(t[0].H) * t[0].W * t[0].C;
    EXPECT_EQ(std::max(want[0], want[1]), conv1);
    EXPECT_LT(std::min(want[0], want[1]), conv1 / 2);
  }
}

// fp16 is CUDA-only: the CPU says so (InputError: exit 2) when the net is built, naming the way
// out; the fp16 view's accessors name the dtype they got.
TEST(Bf16Act, Fp16OnTheCpuIsAnInputError) {
  NetSpec s;
  s.arch = "squeezenet_small";
  s.height = s.width = 28;
  s.in_channels = 1;
  s.num_classes = 10;
  s.precision = "fp16";
  try {
    Net net(s, Device::CPU);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--device cuda"), std::string::npos) << e.what();
  }
  s.precision = "fp8";
  EXPECT_THROW(Net(s, Device::CPU), InputError);
  ConvShape cs{4, 4, 5, 5, 1, 1, 0, true};
  cs.fp16 = true;
  EXPECT_THROW(Conv2d(cs, Device::CPU), InputError);
  Half h[1] = {{0}};
  try {
    (void)ConstAct(h).f32();
    FAIL() << "an fp16 view read as fp32";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("got fp16"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ft
