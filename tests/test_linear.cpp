/// @brief Fully connected layer, flatten transposes and AlexNet: a double-precision reference
/// checked by central differences, the CPU op against it, and AlexNet's torchvision layout.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/linear.hpp"
#include "firetrain/core/error.hpp"
#include "firetrain/ops/loss.hpp"
#include "firetrain/ops/sgd.hpp"

using namespace ft;
using namespace ft::test;

namespace {

/// y = relu?(x wᵀ + b) in double.
std::vector<double> naive_linear(int N, int I, int O, bool relu, const std::vector<double>& x,
                                 const std::vector<double>& w, const std::vector<double>& b) {
  std::vector<double> y(size_t(N) * O);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) {
      double s = b[o];
      for (int i = 0; i < I; ++i) s += x[size_t(n) * I + i] * w[size_t(o) * I + i];
      y[size_t(n) * O + o] = relu && s < 0 ? 0 : s;
    }
  return y;
}

}  // namespace

TEST(LinearTest, ReferenceGradientsMatchFiniteDifferences) {
  const int N = 3, I = 7, O = 5;
  for (bool relu : {false, true}) {
    auto x = random_doubles(size_t(N) * I, 1), w = random_doubles(size_t(O) * I, 2),
         b = random_doubles(O, 3), r = random_doubles(size_t(N) * O, 4);
    auto f = [&] {  // L = sum(y * r)
      auto y = naive_linear(N, I, O, relu, x, w, b);
      double L = 0;
      for (size_t i = 0; i < y.size(); ++i) L += y[i] * r[i];
      return L;
    };
    // Analytic gradients of the reference, written independently of the op's code.
    auto y = naive_linear(N, I, O, relu, x, w, b);
    std::vector<double> dx(x.size()), dw(w.size()), db(b.size());
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < O; ++o) {
        const double g = relu && y[size_t(n) * O + o] <= 0 ? 0 : r[size_t(n) * O + o];
        db[o] += g;
        for (int i = 0; i < I; ++i) {
          dx[size_t(n) * I + i] += g * w[size_t(o) * I + i];
          dw[size_t(o) * I + i] += g * x[size_t(n) * I + i];
        }
      }
    GradCheckOptions opt;
    opt.max_skipped_percent = 40;
    check_gradient(f, x.data(), x.size(), dx.data(), "linear dx", opt);
    check_gradient(f, w.data(), w.size(), dw.data(), "linear dw", opt);
    check_gradient(f, b.data(), b.size(), db.data(), "linear db", opt);
  }
}

TEST(LinearTest, CpuMatchesReference) {
  const int N = 4, I = 37, O = 13;
  for (bool relu : {false, true}) {
    auto xf = random_floats(size_t(N) * I, 5), wf = random_floats(size_t(O) * I, 6),
         bf = random_floats(O, 7), rf = random_floats(size_t(N) * O, 8);
    std::vector<float> y(size_t(N) * O), dx(xf.size()), dw(wf.size()), db(O);
    cpu::linear_forward(N, I, O, relu, xf.data(), wf.data(), bf.data(), y.data());
    auto x = to_double(xf), w = to_double(wf), b = to_double(bf);
    auto yr = naive_linear(N, I, O, relu, x, w, b);
    expect_close(y.data(), yr.data(), y.size(), 1e-5, 1e-5, "linear y");
    std::vector<float> dy = rf;
    cpu::linear_backward(N, I, O, relu, xf.data(), wf.data(), y.data(), dy.data(), dx.data(),
                         dw.data(), db.data());
    std::vector<double> dxr(x.size()), dwr(w.size()), dbr(O);
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < O; ++o) {
        const double g = relu && yr[size_t(n) * O + o] <= 0 ? 0 : rf[size_t(n) * O + o];
        dbr[o] += g;
        for (int i = 0; i < I; ++i) {
          dxr[size_t(n) * I + i] += g * w[size_t(o) * I + i];
          dwr[size_t(o) * I + i] += g * x[size_t(n) * I + i];
        }
      }
    expect_close(dx.data(), dxr.data(), dx.size(), 1e-5, 1e-5, "linear dx");
    expect_close(dw.data(), dwr.data(), dw.size(), 1e-5, 1e-5, "linear dw");
    expect_close(db.data(), dbr.data(), db.size(), 1e-5, 1e-5, "linear db");
  }
}

TEST(LinearTest, FlattenIsTorchOrderAndRoundTrips) {
  const int N = 2, H = 3, W = 4, C = 5;
  auto x = random_floats(size_t(N) * H * W * C, 9);
  std::vector<float> y(x.size()), back(x.size());
  cpu::nhwc_to_nchw(N, H, W, C, x.data(), y.data());
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int w = 0; w < W; ++w)
        for (int c = 0; c < C; ++c)
          ASSERT_EQ(y[nchw(n, c, h, w, C, H, W)], x[nhwc(n, h, w, c, H, W, C)]);
  cpu::nchw_to_nhwc(N, H, W, C, y.data(), back.data());
  EXPECT_EQ(back, x);
}

TEST(AlexNetTest, TorchvisionParameterCountNamesAndMacs) {
  NetSpec s;
  s.arch = "alexnet";
  Net net(s);
  EXPECT_EQ(net.num_params(), 61100840u);  // torchvision.models.alexnet()
  EXPECT_EQ(net.num_params() * 4, 244403360u);
  std::vector<std::string> names;
  for (auto& v : net.param_views()) names.push_back(v.name + shape_str(v.shape));
  const std::vector<std::string> want = {
      "features.0.weight(64, 3, 11, 11)", "features.0.bias(64,)",
      "features.3.weight(192, 64, 5, 5)", "features.3.bias(192,)",
      "features.6.weight(384, 192, 3, 3)", "features.6.bias(384,)",
      "features.8.weight(256, 384, 3, 3)", "features.8.bias(256,)",
      "features.10.weight(256, 256, 3, 3)", "features.10.bias(256,)",
      "classifier.1.weight(4096, 9216)", "classifier.1.bias(4096,)",
      "classifier.4.weight(4096, 4096)", "classifier.4.bias(4096,)",
      "classifier.6.weight(1000, 4096)", "classifier.6.bias(1000,)"};
  EXPECT_EQ(names, want);
  int64_t macs = 0;
  for (auto& l : net.layer_table()) macs += l.macs;
  EXPECT_EQ(macs, 714188480);  // 0.71 GMAC, the same class as squeezenet1_0's 0.82
  s.height = s.width = 100;
  EXPECT_THROW(Net{s}, InputError);
}

TEST(AlexNetTest, TrainingStepLowersTheLossOnAFixedBatch) {
  NetSpec s;
  s.arch = "alexnet";
  s.num_classes = 10;
  s.dropout = 0.f;
  Net net(s);
  net.init_weights(3);
  const int N = 2;
  auto x = random_floats(size_t(N) * 224 * 224 * 3, 11);
  std::vector<int32_t> labels = {3, 7};
  std::vector<int64_t> samples = {0, 1};
  std::vector<float> dl(size_t(N) * 10), mom(net.num_params());
  double first = 0, last = 0;
  for (int step = 0; step < 4; ++step) {
    PassContext c;
    c.N = N;
    c.train = true;
    c.samples = samples.data();
    const float* logits = net.forward(c, x.data());
    LossStats st = cpu::softmax_xent(N, 10, logits, labels.data(), N, dl.data());
    (step == 0 ? first : last) = st.loss_sum / N;
    net.backward(c, dl.data());
    cpu::sgd_update(net.num_params(), 0.01f, 0.9f, 0.f, step == 0, net.params(), net.grads(),
                    mom.data());
  }
  EXPECT_TRUE(std::isfinite(last));
  EXPECT_LT(last, first) << "4 SGD steps on one batch must lower its loss";
}
