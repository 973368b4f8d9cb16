/// @brief `firetrain bench scaling`: measured weak scaling of SqueezeNet 1.0 vs AlexNet training
/// steps at 1, 2, 4, ... ranks (sub-communicators of the launched job), an α–β fit of this
/// machine's all-reduce, and the projection to 8..1024 workers on named links.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "firetrain/comm/communicator.hpp"
#include "firetrain/core/device.hpp"
#include "firetrain/train/scaling_model.hpp"

namespace ft {

/// One measured configuration: `ranks` ranks each training `batch` synthetic images per step.
struct MeasuredScaling {
  std::string model;
  int ranks = 0, batch = 0;  // batch per rank (weak scaling)
  int64_t params = 0, bytes = 0;      // gradient bytes all-reduced per step
  double wire_bytes_per_rank = 0;     // ring: 2(n-1)/n · bytes sent by each rank
  double step_s = 0;                  // median over steps of the slowest rank's step
  double compute_s = 0;               // forward + loss + backward + SGD, not waiting
  double exposed_comm_s = 0;          // waiting for the all-reduce after backward
  double images_per_s = 0;            // global
  double efficiency = 0;              // images_per_s / (ranks · images_per_s at 1 rank)
};

struct ScalingBenchOptions {
  std::vector<std::string> models = {"squeezenet1_0", "alexnet"};
  int batch = 8, size = 224, steps = 5, warmup = 1, threads = 1;
  size_t bucket_bytes = 1 << 20;
  Device device = Device::CPU;
};

/// Measures every model at 1, 2, 4, ... up to comm.size() ranks (collective over comm; the
/// ranks outside a sub-communicator wait without spinning). Rows on rank 0 only.
std::vector<MeasuredScaling> measure_scaling(Communicator& comm, const ScalingBenchOptions& o);

/// Times the trainer's reducer at sizes from 64 KiB to `max_bytes` on all ranks of comm and fits
/// α and β (ring model) to them. Needs comm.size() >= 2. Same result on every rank.
AlphaBeta fit_this_machine(Communicator& comm, double max_bytes, int repeats,
                           std::vector<std::pair<double, double>>* points = nullptr);

std::string format_measured_table(const std::vector<MeasuredScaling>& rows);

}  // namespace ft
