/// @brief `firetrain bench step`: training-step throughput on synthetic data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "firetrain/core/device.hpp"

namespace ft {

struct StepBenchResult {
  std::string arch, device, precision;
  int batch = 0, size = 0, threads = 0, steps = 0;
  double median_ms = 0, p90_ms = 0, images_per_s = 0;
  double fwd_ms = 0, bwd_ms = 0, sgd_ms = 0;  // medians of the parts
  double peak_rss_mb = 0;
};

/// Times `steps` training steps (forward, loss, backward, SGD) after `warmup` steps on
/// random NHWC inputs, one process, `threads` threads, on `dev`.
StepBenchResult bench_step(const std::string& arch, int batch, int size, int channels,
                           int classes, int threads, int steps, int warmup,
                           Device dev = Device::CPU, const std::string& precision = "fp32");

/// One row of `bench layers`: medians over the timed steps.
struct LayerBenchRow {
  std::string name;
  int H = 0, W = 0, C = 0;
  int64_t params = 0;
  double fwd_gflop = 0, bwd_gflop = 0;  // per step (whole batch); 0 for layers without MACs
  double fwd_ms = 0, bwd_ms = 0;
};
struct LayerBenchResult {
  std::string arch, device;
  int batch = 0, size = 0, threads = 0, steps = 0;
  std::vector<LayerBenchRow> rows;
  double step_ms = 0;  // median whole step without profiling (forward+loss+backward+SGD)
};

/// Per-layer forward and backward times of `steps` training steps (after `warmup`), with the
/// FLOPs each layer does (2 per multiply-add; backward = weight gradient + input gradient, the
/// first layer has no input gradient), on synthetic data, on `dev`. The profile synchronizes
/// (CUDA: waits for the device) after every layer, so a layer's time includes launching its
/// kernels; step_ms is measured separately without it.
LayerBenchResult bench_layers(const std::string& arch, int batch, int size, int channels,
                              int classes, int threads, int steps, int warmup,
                              const std::string& precision = "fp32", Device dev = Device::CPU);

/// This machine's measured fp32 multiply-add peak with `threads` OpenMP threads, in GFLOP/s:
/// independent vector FMA chains held in registers (what the compiler's -march allows), the
/// best of a few runs. The roofline's ceiling for `bench layers`' "% of peak".
double measure_fp32_peak_gflops(int threads);

/// `bench loader`: the input pipeline alone (HDF5 dataset in memory or by hyperslab, random
/// crop and flip, normalization, prefetch thread), one rank's shard of each global batch.
struct LoaderBenchResult {
  int64_t images = 0;
  double seconds = 0, images_per_s = 0;
};
LoaderBenchResult bench_loader(const std::string& data, int64_t global_batch, int rank, int world,
                               int64_t steps, bool augment, int64_t cache_bytes);

/// Peak resident set size of this process so far, in MiB (getrusage).
double peak_rss_mb();

}  // namespace ft
