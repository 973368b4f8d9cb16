/// @brief Reading what an HDF5 file holds (for `info`, `eval`, `export`) and writing the
/// `/logits` file of `predict`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ft {

/// A root attribute of a weights file or checkpoint ("arch", "bypass"), as a string; "" if
/// absent.
std::string read_root_attr(const std::string& path, const std::string& name);
/// key -> shape of every float dataset of a torch-h5 file (or of a checkpoint's /model).
std::map<std::string, std::vector<int64_t>> read_weight_shapes(const std::string& path);
/// A human-readable summary of a dataset, weights file or checkpoint.
std::string describe_h5(const std::string& path);
/// Writes /logits float32 (n, k), atomically.
void write_logits_h5(const std::string& path, const float* logits, int64_t n, int k);

}  // namespace ft
