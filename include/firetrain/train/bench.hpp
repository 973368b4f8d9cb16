/// @brief `firetrain bench step`: training-step throughput on synthetic data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "firetrain/core/device.hpp"

namespace ft {

struct StepBenchResult {
  std::string arch, device;
  int batch = 0, size = 0, threads = 0, steps = 0;
  double median_ms = 0, p90_ms = 0, images_per_s = 0;
  double fwd_ms = 0, bwd_ms = 0, sgd_ms = 0;  // medians of the parts
  double peak_rss_mb = 0;
};

/// Times `steps` training steps (forward, loss, backward, SGD) after `warmup` steps on
/// random NHWC inputs, one process, `threads` threads, on `dev`.
StepBenchResult bench_step(const std::string& arch, int batch, int size, int channels,
                           int classes, int threads, int steps, int warmup,
                           Device dev = Device::CPU);

/// Peak resident set size of this process so far, in MiB (getrusage).
double peak_rss_mb();

}  // namespace ft
