/// @brief Whole training steps on CUDA against the CPU (CudaNet): the same net, weights,
/// batch and dropout keys on both devices; after 3 SGD steps the weights agree within 1e-4
/// (norm-wise relative error), the update w3 - w0 within 1e-3, and the first step's logits and
/// loss within 1e-4 (measured on an H200, 2026-11-29: updates within 6e-7 .. 3.4e-6).
///
/// 16-bit (CudaHalfNet, --precision bf16 | fp16 on CUDA): two 16-bit implementations round in
/// different places (cuDNN rounds y after its fp32 accumulation and again after the bias +
/// ReLU kernel; oneDNN once), and over three steps those roundings move the result as much as
/// the 16-bit format itself does. Measured on the H200: the GPU's bf16 update w3 - w0 differed
/// from the CPU's bf16 update by 4-31%, while the CPU's bf16 update differs from its own fp32
/// update by 6-38% (lr 0.01, where SqueezeNet 1.0 at N=2 reaches a loss of 59 in step 2 and
/// amplifies any difference). A fixed bound on GPU-vs-CPU-bf16 therefore tests the chaos, not
/// the code. What the test asserts instead: the GPU's 16-bit run is about as close to the fp32
/// truth (the CPU's fp32 run) as the CPU's own bf16 run is: for the first logits, each step's
/// loss and the update w3 - w0, error(GPU 16-bit vs CPU fp32) <= 3 x error(CPU bf16 vs CPU
/// fp32) + a small floor; for each parameter tensor's update, 3 x the CPU's error on that
/// tensor + half the CPU's whole-net update error + 1%. A wrong gradient in any one layer (a dropped
/// or mis-scaled term, a wrong mask, a missing conversion) makes that layer's update wrong by
/// O(1), far past the bound. lr 1e-3 (not 0.01) keeps the three steps out of the blow-up.
/// fp16 (no CPU fp16) runs with a static loss scale of 1024 (dlogits scaled, lr / 1024 and
/// weight decay * 1024 keep the update the same in exact arithmetic), as fp16 training needs,
/// and is held to the same bound as bf16 (its 3 more mantissa bits should do better: the test
/// prints the measured ratios).
///
/// Skips when the CUDA backend is not built or no GPU is visible. Plain C++ (public headers).
#include <gtest/gtest.h>

#include "firetrain/core/device.hpp"

#ifdef FT_HAVE_CUDA

#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <utility>
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
  std::string precision = "fp32";
};

void PrintTo(const StepCase& k, std::ostream* os) {
  *os << k.arch << " " << k.precision << " " << k.size << "x" << k.size << "x" << k.channels
      << " N=" << k.N;
}

/// Runs `steps` SGD steps of `spec` on `dev`; returns the weights before and after, the first
/// logits and the losses.
struct RunResult {
  std::vector<float> weights0, weights, logits0;
  std::vector<double> losses;
  std::vector<std::pair<std::string, std::pair<size_t, size_t>>> tensors;  // name, offset, numel
};

/// precision: the net's (defaults to the case's); scale: dlogits are multiplied by it, the lr
/// divided and the weight decay multiplied (the same update in exact arithmetic); lr: SGD's.
RunResult run_steps(const StepCase& k, Device dev, int steps, std::string precision = "",
                    float scale = 1.f, float lr = 0.01f) {
  NetSpec s;
  s.arch = k.arch;
  s.bypass = k.bypass;
  s.height = s.width = k.size;
  s.in_channels = k.channels;
  s.num_classes = k.classes;
  s.dropout = k.dropout;
  s.precision = precision.empty() ? k.precision : precision;
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
  auto weights = [&] {
    net.params_to_host();
    const float* w = net.param_views().front().data;
    return std::vector<float>(w, w + net.num_params());
  };
  r.weights0 = weights();
  for (const ParamView& v : net.param_views()) r.tensors.push_back({v.name, {v.offset, v.numel()}});
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
    LossStats st = ops.softmax_xent(k.N, k.classes, logits, dlab.data(), double(k.N) / scale,
                                    dl.data());
    r.losses.push_back(st.loss_sum / k.N);
    net.backward(c, dl.data());
    ops.sgd_update(net.num_params(), lr / scale, 0.9f, 5e-4f * scale, step == 0, net.params(),
                   net.grads(), mom.data());
  }
  r.weights = weights();
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
  // The weights barely move in 3 steps (the update is ~1e-3..1e-2 of their norm), so the
  // bound above would pass a gradient wrong by several percent: compare the update too.
  const size_t n = cpu.weights.size();
  ASSERT_EQ(gpu.weights0, cpu.weights0) << "initial weights";
  std::vector<float> du(n), du_ref(n);
  for (size_t i = 0; i < n; ++i)
    du[i] = gpu.weights[i] - gpu.weights0[i], du_ref[i] = cpu.weights[i] - cpu.weights0[i];
  const double e_update = rel_norm_err(du.data(), du_ref.data(), n);
  std::printf("[ measured ] %s fp32: update w3 - w0 %.3g (norm-wise relative)\n", k.arch.c_str(),
              e_update);
  EXPECT_LE(e_update, 1e-3) << "update w3 - w0";
}

INSTANTIATE_TEST_SUITE_P(
    Archs, CudaNet,
    ::testing::Values(StepCase{"squeezenet_small", "none", 28, 1, 10, 4, 0.5f},
                      StepCase{"squeezenet1_1", "none", 64, 3, 20, 2, 0.5f},
                      StepCase{"squeezenet1_0", "simple", 96, 3, 20, 2, 0.5f},
                      StepCase{"alexnet", "none", 224, 3, 10, 2, 0.5f}),
    [](const auto& info) { return info.param.arch + (info.param.bypass == "simple" ? "_bypass" : ""); });

class CudaHalfNet : public ::testing::TestWithParam<StepCase> {};

TEST_P(CudaHalfNet, ThreeStepsAsCloseToFp32AsTheCpuBf16) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible";
  cuda::set_device(0);
  const StepCase& k = GetParam();
  // fp16 needs a loss scale (small gradients are fp16 subnormals otherwise); bf16 does not.
  const float scale = k.precision == "bf16" ? 1.f : 1024.f, lr = 1e-3f;
  const double factor = 3.0;
  RunResult ref = run_steps(k, Device::CPU, 3, "fp32", 1.f, lr);
  RunResult cpu16 = run_steps(k, Device::CPU, 3, "bf16", 1.f, lr);
  RunResult got = run_steps(k, Device::CUDA, 3, k.precision, scale, lr);
  const size_t n = ref.weights.size();
  ASSERT_EQ(got.weights0, ref.weights0) << "initial weights";
  ASSERT_EQ(cpu16.weights0, ref.weights0) << "initial weights";
  ASSERT_EQ(got.tensors, ref.tensors);
  const size_t nl = ref.logits0.size();
  const double el_got = rel_norm_err(got.logits0.data(), ref.logits0.data(), nl),
               el_cpu = rel_norm_err(cpu16.logits0.data(), ref.logits0.data(), nl);
  EXPECT_LE(el_got, factor * el_cpu + 1e-3) << "first-step logits (CPU bf16: " << el_cpu << ")";
  for (size_t i = 0; i < ref.losses.size(); ++i)
    EXPECT_LE(std::abs(got.losses[i] - ref.losses[i]),
              factor * std::abs(cpu16.losses[i] - ref.losses[i]) + 1e-3 * std::max(1.0, ref.losses[i]))
        << "loss of step " << i << ": fp32 " << ref.losses[i] << ", CPU bf16 " << cpu16.losses[i]
        << ", GPU " << k.precision << " " << got.losses[i];
  auto update = [n](const RunResult& r) {
    std::vector<float> d(n);
    for (size_t i = 0; i < n; ++i) d[i] = r.weights[i] - r.weights0[i];
    return d;
  };
  const std::vector<float> u_ref = update(ref), u_cpu = update(cpu16), u_got = update(got);
  const double eu_got = rel_norm_err(u_got.data(), u_ref.data(), n),
               eu_cpu = rel_norm_err(u_cpu.data(), u_ref.data(), n);
  EXPECT_LE(eu_got, factor * eu_cpu + 1e-3) << "update w3 - w0 (CPU bf16: " << eu_cpu << ")";
  // Per tensor: a wrong gradient in one small layer would hide in the whole-net norm. The
  // bound adds half the CPU's whole-net error to each tensor's: a tensor of a few values (the
  // last convolution's bias at a 3x3 output, N=2) can be hit by one ReLU mask flip that the
  // CPU's bf16 run happened not to have (measured: squeezenet1_1's classifier bias 4.3% on
  // the GPU, 0.4% on the CPU, 14% for the whole net on the CPU).
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, span] : ref.tensors) {
    const auto [off, len] = span;
    const double eg = rel_norm_err(u_got.data() + off, u_ref.data() + off, len),
                 ec = rel_norm_err(u_cpu.data() + off, u_ref.data() + off, len);
    const double bound = factor * ec + 0.5 * eu_cpu + 1e-2;
    EXPECT_LE(eg, bound) << "update of " << name << " (CPU bf16: " << ec << ")";
    if (eg / bound > worst) worst = eg / bound, worst_name = name;
  }
  std::printf("[ measured ] %s %s vs fp32 (CPU bf16 vs fp32): first logits %.3g (%.3g), update "
              "w3 - w0 %.3g (%.3g); worst tensor %s at %.2f of its bound\n",
              k.arch.c_str(), k.precision.c_str(), el_got, el_cpu, eu_got, eu_cpu,
              worst_name.c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(
    Archs, CudaHalfNet,
    ::testing::Values(StepCase{"squeezenet_small", "none", 28, 1, 10, 4, 0.5f, "bf16"},
                      StepCase{"squeezenet1_1", "none", 64, 3, 20, 2, 0.5f, "bf16"},
                      StepCase{"squeezenet1_0", "simple", 96, 3, 20, 2, 0.5f, "bf16"},
                      StepCase{"squeezenet1_0", "complex", 96, 3, 20, 2, 0.5f, "bf16"},
                      StepCase{"alexnet", "none", 224, 3, 10, 2, 0.5f, "bf16"},
                      StepCase{"squeezenet_small", "none", 28, 1, 10, 4, 0.5f, "fp16"},
                      StepCase{"squeezenet1_0", "simple", 96, 3, 20, 2, 0.5f, "fp16"}),
    [](const auto& info) {
      return info.param.arch + (info.param.bypass != "none" ? "_" + info.param.bypass : "") +
             "_" + info.param.precision;
    });

}  // namespace

#else

TEST(CudaNet, NotBuilt) { GTEST_SKIP() << "CUDA backend not built (CPU-only build)"; }

#endif
