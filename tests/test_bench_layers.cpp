/// @brief `bench layers`: per-layer profile and the FMA peak (issue 7's roofline tools).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "firetrain/core/error.hpp"
#include "firetrain/data/dataset.hpp"
#include "firetrain/model/net.hpp"
#include "firetrain/train/bench.hpp"

namespace ft {
namespace {

/// The net `bench_layers("squeezenet_small", N, 28, 1, 10, ...)` builds.
NetSpec small_spec() {
  NetSpec spec;
  spec.arch = "squeezenet_small";
  spec.in_channels = 1;
  spec.height = spec.width = 28;
  spec.num_classes = 10;
  return spec;
}

TEST(BenchLayers, OneRowPerLayerWithFlopsFromTheLayerTable) {
  const int batch = 4;
  LayerBenchResult r = bench_layers("squeezenet_small", batch, 28, 1, 10, 1, 2, 0);
  const auto table = Net(small_spec()).layer_table();
  ASSERT_EQ(r.rows.size(), table.size());
  double fwd_gflop = 0, total_ms = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    SCOPED_TRACE(table[i].name);
    EXPECT_EQ(r.rows[i].name, table[i].name);
    EXPECT_EQ(r.rows[i].params, table[i].params);
    EXPECT_DOUBLE_EQ(r.rows[i].fwd_gflop, 2.0 * double(table[i].macs) * batch / 1e9);
    // Backward: weight and input gradients (2x forward), only the weight gradient for layer 0.
    if (table[i].params > 0)
      EXPECT_DOUBLE_EQ(r.rows[i].bwd_gflop, r.rows[i].fwd_gflop * (i == 0 ? 1.0 : 2.0));
    else
      EXPECT_EQ(r.rows[i].bwd_gflop, 0.0);
    EXPECT_GE(r.rows[i].fwd_ms, 0.0);
    EXPECT_GE(r.rows[i].bwd_ms, 0.0);
    fwd_gflop += r.rows[i].fwd_gflop;
    total_ms += r.rows[i].fwd_ms + r.rows[i].bwd_ms;
  }
  // 15.1 M multiply-adds per 28x28 image (README, `info --arch squeezenet_small`).
  EXPECT_NEAR(fwd_gflop / batch, 2 * 15.1e6 / 1e9, 0.1 * 2 * 15.1e6 / 1e9);
  EXPECT_GT(total_ms, 0.0);
  EXPECT_GT(r.step_ms, 0.0);
}

TEST(BenchLayers, ProfileIsOffByDefaultAndAccumulatesWhenSet) {
  Net net(small_spec());
  net.init_weights(1);
  std::vector<float> x(2 * 28 * 28, 0.5f);
  std::vector<int64_t> samples{0, 1};
  PassContext c;
  c.N = 2;
  c.samples = samples.data();
  std::vector<Net::LayerTime> prof;
  net.set_profile(&prof);
  net.forward(c, x.data());
  ASSERT_EQ(prof.size(), net.layer_table().size());
  double fwd = 0;
  for (auto& t : prof) fwd += t.fwd_s;
  EXPECT_GT(fwd, 0.0);
  net.set_profile(nullptr);
  net.forward(c, x.data());
  double fwd2 = 0;
  for (auto& t : prof) fwd2 += t.fwd_s;
  EXPECT_EQ(fwd2, fwd);  // not touched any more
}

// The GPU profile: the same rows as the layer table, every layer timed (a sync after each),
// the whole step timed after waiting for the device. Skips without a GPU.
TEST(CudaBenchLayers, OneRowPerLayerTimedOnTheGpu) {
  if (!cuda_built()) GTEST_SKIP() << "CUDA backend not built (CPU-only build)";
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible";
  const int batch = 4;
  LayerBenchResult r =
      bench_layers("squeezenet_small", batch, 28, 1, 10, 1, 2, 1, "fp32", Device::CUDA);
  EXPECT_EQ(r.device, "cuda");
  const auto table = Net(small_spec()).layer_table();
  ASSERT_EQ(r.rows.size(), table.size());
  double sum = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    EXPECT_EQ(r.rows[i].name, table[i].name);
    EXPECT_GT(r.rows[i].fwd_ms, 0.0) << table[i].name;  // each includes a device sync
    EXPECT_GT(r.rows[i].bwd_ms, 0.0) << table[i].name;
    sum += r.rows[i].fwd_ms + r.rows[i].bwd_ms;
  }
  EXPECT_GT(r.step_ms, 0.0);
  EXPECT_GT(sum, 0.0);
}

TEST(BenchLayers, MeasuredPeakIsPositiveAndFinite) {
  const double p = measure_fp32_peak_gflops(1);
  EXPECT_GT(p, 0.5);     // any CPU of the last 20 years
  EXPECT_LT(p, 1.0e4);   // one core cannot do 10 TFLOP/s: the loop was optimized away
}

/// `bench loader` counts the images this rank's shard really received, across epoch ends.
TEST(BenchLoader, CountsTheRanksShardAcrossEpochs) {
  const std::string p =
      ::testing::TempDir() + "/ft_bench_loader_" + std::to_string(getpid()) + ".h5";
  const int64_t n = 50;
  std::vector<uint8_t> img(size_t(n) * 4 * 4);
  std::vector<int32_t> lab(static_cast<size_t>(n));
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i % 251);
  for (int64_t i = 0; i < n; ++i) lab[size_t(i)] = int32_t(i % 3);
  write_dataset(p, img.data(), lab.data(), n, 4, 4, 1, 3, {}, {}, {});
  // 50 samples, global batch 8: 6 steps per epoch; 20 steps cross 3 epoch ends.
  LoaderBenchResult r = bench_loader(p, 8, 1, 2, 20, true, 1 << 20);
  EXPECT_EQ(r.images, 20 * 4);
  EXPECT_GT(r.images_per_s, 0.0);
  EXPECT_THROW(bench_loader(p, 64, 0, 1, 1, true, 0), InputError);  // less than one batch
  std::filesystem::remove(p);
}

}  // namespace
}  // namespace ft
