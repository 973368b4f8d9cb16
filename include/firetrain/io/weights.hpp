/// @brief Weights in the torch-h5 layout (torchvision state_dict names and shapes, one float32
/// dataset per parameter) and checkpoints (weights + SGD momentum + training state).
///
/// torch-h5: the root holds one float32 dataset per parameter, named exactly as the torchvision
/// state_dict key ("features.3.squeeze.weight") with the torch shape, plus string attributes
/// (arch, num_classes, ...). In PyTorch:
///     model.load_state_dict({k: torch.from_numpy(f[k][()]) for k in f})
///
/// Checkpoint ("firetrain-checkpoint-1"): /model (torch-h5 datasets), /optimizer/momentum (the
/// same names and shapes), root attributes step, epoch, world_size, seed (int), arch, config
/// (JSON), format (strings) and complete = 1, written last. All writes are atomic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "firetrain/core/params.hpp"

namespace ft {

/// The value of the root "format" attribute of a checkpoint.
inline constexpr const char* kCheckpointFormat = "firetrain-checkpoint-1";

/// Writes every parameter as a float32 dataset at the root, plus `attrs` as string attributes.
void save_weights_h5(const std::string& path, const std::vector<ParamView>& params,
                     const std::map<std::string, std::string>& attrs = {});

/// Fills every params[i].data from a torch-h5 file, or from the /model group of a checkpoint.
/// Checks everything before writing anything: a missing key, extra keys, a wrong shape
/// ("PATH: key 'k': expected shape (96, 3, 7, 7), found (64, 3, 3, 3)") or a dtype other than
/// float32/float64 (float64 is converted) throw ft::InputError naming the file.
void load_weights_h5(const std::string& path, const std::vector<ParamView>& params);

/// Training state stored with a checkpoint.
struct CheckpointState {
  int64_t step = 0, epoch = 0;
  int world_size = 1;
  uint64_t seed = 0;
  std::string arch;
  std::string bypass = "none";  // Fire bypass variant (none | simple)
  std::string config_json;
};

/// Writes a checkpoint. `momentum` has the layout of the parameter arena (params[i].offset
/// indexes it) and `arena_size` elements.
void save_checkpoint(const std::string& path, const std::vector<ParamView>& params,
                     const float* momentum, size_t arena_size, const CheckpointState& st);

/// Loads the weights (validated like load_weights_h5) and, if `momentum` is not null, the
/// momentum into the arena layout; returns the stored state. ft::InputError when the file is not
/// a checkpoint or its `complete` attribute is missing.
CheckpointState load_checkpoint(const std::string& path, const std::vector<ParamView>& params,
                                float* momentum);

/// Whether `path` is a readable HDF5 file with a /model group (never throws).
bool is_checkpoint(const std::string& path);

/// The path of `dir/ckpt_<step>.h5` with the highest step; "" if there is none (or no dir).
std::string latest_checkpoint(const std::string& dir);

}  // namespace ft
