/// @brief Whole training steps on CUDA against the CPU (CudaNet): the same net, weights,
/// batch and dropout keys on both devices; after 3 SGD steps the weights agree within 1e-4
/// (norm-wise relative error), and the first step's logits and loss within 1e-4.
///
/// Skips when the CUDA backend is not built or no GPU is visible. Plain C++ (public headers).
#include <gtest/gtest.h>

#include "firetrain/core/device.hpp"

#ifdef FT_HAVE_CUDA

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/ops/ops.hpp"

namespace {

using namespace ft;

double rel_norm_err(const float* a, const float* b, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    r += double(b[i]) * b[i];
  }
  return std::sqrt(d) / std::max(std::sqrt(r), 1e-30);
}

struct StepCase {
  std::string arch, bypass;
  int size, channels, classes, N;
  float dropout;
};

void PrintTo(const StepCase& k, std::ostream* os) {
  *os << k.arch << " " << k.size << "x" << k.size << "x" << k.channels << " N=" << k.N;
}

/// Runs `steps` SGD steps of `spec` on `dev`; returns the weights, the first logits and losses.
struct RunResult {
  std::vector<float> weights, logits0;
  std::vector<double> losses;
};

RunResult run_steps(const StepCase& k, Device dev, int steps) {
  NetSpec s;
  s.arch = k.arch;
  s.bypass = k.bypass;
  s.height = s.width = k.size;
  s.in_channels = k.channels;
  s.num_classes = k.classes;
  s.dropout = k.dropout;
  Net net(s, dev);
  net.init_weights(7, InitScheme::Kaiming);
  const Ops& ops = net.ops();
  const size_t per = size_t(k.size) * k.size * k.channels;
  auto x = test::random_floats(per * k.N, 21);
  std::vector<int32_t> labels(k.N);
  std::vector<int64_t> samples(k.N);
  for (int i = 0; i < k.N; ++i) labels[i] = (i * 7 + 3) % k.classes, samples[i] = 100 + i;
  Buffer dx(dev, x.size()), dl(dev, size_t(k.N) * k.classes), mom(dev, net.num_params());
  Array<int32_t> dlab(dev, labels.size());
  Array<int64_t> dsamp(dev, samples.size());
  dx.upload(x.data(), x.size());
  dlab.upload(labels.data(), labels.size());
  dsamp.upload(samples.data(), samples.size());
  RunResult r;
  for (int step = 0; step < steps; ++step) {
    PassContext c;
    c.N = k.N;
    c.train = true;
    c.seed = 5;
    c.step = uint64_t(step);
    c.samples = dsamp.data();
    const float* logits = net.forward(c, dx.data());
    if (step == 0) {
      r.logits0.resize(size_t(k.N) * k.classes);
      if (dev == Device::CPU)
        r.logits0.assign(logits, logits + r.logits0.size());
      else
        detail::array_download(dev, r.logits0.data(), logits, r.logits0.size() * 4);
    }
    LossStats st = ops.softmax_xent(k.N, k.classes, logits, dlab.data(), k.N, dl.data());
    r.losses.push_back(st.loss_sum / k.N);
    net.backward(c, dl.data());
    ops.sgd_update(net.num_params(), 0.01f, 0.9f, 5e-4f, step == 0, net.params(), net.grads(),
                   mom.data());
  }
  net.params_to_host();
  const float* w = net.param_views().front().data;
  r.weights.assign(w, w + net.num_params());
  return r;
}

class CudaNet : public ::testing::TestWithParam<StepCase> {};

TEST_P(CudaNet, ThreeStepsMatchTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible";
  cuda::set_device(0);
  const StepCase& k = GetParam();
  RunResult cpu = run_steps(k, Device::CPU, 3), gpu = run_steps(k, Device::CUDA, 3);
  EXPECT_LE(rel_norm_err(gpu.logits0.data(), cpu.logits0.data(), cpu.logits0.size()), 1e-4)
      << "first-step logits";
  for (size_t i = 0; i < cpu.losses.size(); ++i)
    EXPECT_NEAR(gpu.losses[i], cpu.losses[i], 1e-4 * std::max(1.0, std::abs(cpu.losses[i])))
        << "loss of step " << i;
  EXPECT_LE(rel_norm_err(gpu.weights.data(), cpu.weights.data(), cpu.weights.size()), 1e-4)
      << "weights after 3 steps";
}

INSTANTIATE_TEST_SUITE_P(
    Archs, CudaNet,
    ::testing::Values(StepCase{"squeezenet_small", "none", 28, 1, 10, 4, 0.5f},
                      StepCase{"squeezenet1_1", "none", 64, 3, 20, 2, 0.5f},
                      StepCase{"squeezenet1_0", "simple", 96, 3, 20, 2, 0.5f},
                      StepCase{"alexnet", "none", 224, 3, 10, 2, 0.5f}),
    [](const auto& info) { return info.param.arch + (info.param.bypass == "simple" ? "_bypass" : ""); });

}  // namespace

#else

TEST(CudaNet, NotBuilt) { GTEST_SKIP() << "CUDA backend not built (CPU-only build)"; }

#endif
