/// @brief `firetrain bench comm`: all-reduce of real gradient arenas (SqueezeNet 1.0/1.1,
/// AlexNet) and size-only presets (ResNet-50, VGG-16) across the launched ranks, through the
/// trainer's own bucketed reducer and, as a floor, one plain all-reduce of the same bytes.
///
/// Inputs are exactly predictable: rank r holds g[i] = (r + 1) · ((i mod 13) − 6), so the sum
/// is ((i mod 13) − 6) · n(n+1)/2, exact in fp32 for any realistic n; every element is checked
/// after every repeat and mismatches are counted (#wrong, as nccl-tests). With a 16-bit
/// --grad-comm-dtype the values stay exact as long as every partial sum is a small integer:
/// |sum| <= 6 n(n+1)/2 <= 256 (bf16's 8-bit significand: n <= 8 ranks; fp16, pre-scaled by a
/// power of two: n <= 22); beyond that #wrong counts rounding, not bugs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/core/device.hpp"

namespace ft {

struct CommBenchModel {
  std::string name;
  int64_t params = 0;
  bool real = false;  // the arena of a built Net (layer boundaries drive the reducer)
};

/// The models `bench comm` knows: squeezenet1_0, squeezenet1_1, alexnet (real arenas, 1000
/// classes), resnet50 (25,557,032), vgg16 (138,357,544) (sizes only).
const std::vector<CommBenchModel>& comm_bench_models();

struct CommBenchRow {
  /// variant: "reducer" (bucketed, as in training), "1-bucket" (the reducer with one bucket),
  /// "allreduce" (the floor: one plain MPI_Allreduce; NCCL fp32: nccl-tests' measure, 20
  /// in-place ncclAllReduce calls back to back timed with CUDA events, per call).
  std::string model, variant;
  std::string backend;         // mpi | nccl
  std::string dtype = "fp32";  // what travels: fp32 | bf16 | fp16 (--grad-comm-dtype)
  int64_t params = 0, bytes = 0;  // bytes: on the wire per rank (params x 4 or 2)
  int ranks = 0, buckets = 0, repeats = 0;
  double median_s = 0, p95_s = 0;  // max over ranks of each repeat, then median / p95
  double algbw_gbs = 0, busbw_gbs = 0;  // GB/s (1e9), from the median
  int64_t wrong = 0;                    // summed over ranks and repeats
  double convert_s = 0;  // 16-bit: median host seconds converting (rank 0; in median_s too)
};

struct CommBenchOptions {
  std::vector<std::string> models;  // empty: all
  int repeats = 20, warmup = 3;
  size_t bucket_bytes = 1 << 20;
  Device device = Device::CPU;
  /// Each model and variant runs once per dtype, dtypes adjacent (fp32 then bf16 ...).
  std::vector<CommDtype> dtypes = {CommDtype::FP32};
};

/// Runs on every rank of `comm` (collective); every rank gets the same rows.
std::vector<CommBenchRow> bench_comm(Communicator& comm, const CommBenchOptions& o);

/// nccl-tests-style table with a footer (bus bandwidth average, #wrong total, the AlexNet /
/// SqueezeNet 1.0 time ratio when both ran, and each 16-bit dtype's time / fp32's).
std::string format_comm_table(const std::vector<CommBenchRow>& rows);
/// Writes rows as JSON lines (.json/.jsonl) or CSV (.csv), chosen by the extension.
void write_comm_rows(const std::string& path, const std::vector<CommBenchRow>& rows);

}  // namespace ft
